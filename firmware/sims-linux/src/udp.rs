//! UDP control sockets: options that std::net can't set (SO_BINDTODEVICE,
//! SO_REUSEADDR before bind), applied with libc before binding.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};

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
    let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0)?;
    if reuse {
        sys::setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    }
    if broadcast {
        sys::setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
    }
    if let Some(dev) = device {
        let name = sys::ifname_buf(dev)?;
        sys::setsockopt(&fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &name)?;
    }
    sys::bind_in(&fd, addr)?;
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
    use std::os::fd::AsRawFd;
    let mut to = sys::sockaddr_in(dst);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(src).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) };
    let mut cbuf = vec![0u8; space as usize];
    // SAFETY: msghdr is plain data; every pointer in it outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut to as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len() as _;
    // SAFETY: the control buffer has room for one in_pktinfo header.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return Err(io::Error::other("no room for IP_PKTINFO"));
        }
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
        let n = libc::sendmsg(sock.as_raw_fd(), &msg, 0);
        sys::cvt_size(n)
    }
}
