//! UDP control sockets: options that std::net can't set (SO_BINDTODEVICE,
//! SO_REUSEADDR before bind), applied before binding.

use std::ffi::OsString;
use std::io::{self, IoSlice};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, SockaddrIn,
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
