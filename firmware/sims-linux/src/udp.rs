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
