//! UDP control sockets: options that std::net can't set (SO_BINDTODEVICE,
//! SO_REUSEADDR before bind), applied before binding.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, SockaddrIn,
};

use crate::sys;

/// A nonblocking IPv4 UDP socket bound to `addr`. `device` pins it to an
/// interface (SO_BINDTODEVICE); `broadcast` allows sending to broadcast
/// addresses; `reuse` sets SO_REUSEADDR so per-interface sockets can
/// share a port (SO_REUSEPORT is deliberately not used: it load-balances).
pub fn bind_udp(
    addr: SocketAddrV4,
    device: Option<&str>,
    broadcast: bool,
    reuse: bool,
) -> io::Result<UdpSocket> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if reuse {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if broadcast {
        socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
    }
    if let Some(dev) = device {
        // The kernel silently truncates a long name: refuse it here.
        sys::ifname_buf(dev)?;
        socket::setsockopt(&fd, sockopt::BindToDevice, &OsString::from(dev))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(addr))?;
    Ok(UdpSocket::from(fd))
}

/// Send `data` to `dst` with source address `src` (IP_PKTINFO), whatever
/// address the kernel would pick. A node holding old /32s must solicit from
/// its current address: the new router's reverse-path filter drops
/// anything from an old one.
pub fn send_from(
    sock: &UdpSocket,
    data: &[u8],
    dst: SocketAddrV4,
    src: std::net::Ipv4Addr,
) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    Ok(socket::sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        &[ControlMessage::Ipv4PacketInfo(&info)],
        MsgFlags::empty(),
        Some(&SockaddrIn::from(dst)),
    )?)
}

/// Ask the kernel to report each datagram's destination address (for
/// [`recv_with_dst`]).
pub fn want_dst(sock: &UdpSocket) -> io::Result<()> {
    Ok(socket::setsockopt(sock, sockopt::Ipv4PacketInfo, &true)?)
}

/// Receive one datagram: its length, source, and the destination address
/// of its IP header (`None` if the kernel gave none: [`want_dst`] not set).
/// A node tells by it a datagram to its current address from one that
/// reached it through a held old address.
pub fn recv_with_dst(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddrV4, Option<std::net::Ipv4Addr>)> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<SockaddrIn>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    let src = msg
        .address
        .map(SocketAddrV4::from)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no source address"))?;
    let mut dst = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
            dst = Some(std::net::Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
        }
    }
    Ok((msg.bytes, src, dst))
}
