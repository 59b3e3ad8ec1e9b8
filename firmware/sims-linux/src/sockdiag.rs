//! TCP sockets by local address (NETLINK_SOCK_DIAG, inet_diag dump): how
//! many live sessions still use an old address. Listening, TIME_WAIT and
//! closed sockets don't count. IPv4-mapped sockets of AF_INET6 listeners
//! and clients are included: they are IPv4 sessions too.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::nlmsg::{
    get_u16, get_u8, invalid, Msg, NlSocket, SockProtocol, NLM_F_DUMP, NLM_F_REQUEST,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// inet_diag_msg: family, state, timer, retrans, sockid(48), 5 x u32.
const DIAG_MSG_LEN: usize = 72;

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LAST_ACK: u8 = 9;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_CLOSING: u8 = 11;

/// States 1..=11 minus LISTEN, TIME_WAIT and CLOSE.
const STATES: u32 = 0xffe & !(1 << TCP_LISTEN) & !(1 << TCP_TIME_WAIT) & !(1 << TCP_CLOSE);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSock {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// TCP_* state
    pub state: u8,
}

/// inet_diag_req_v2 for all TCP sockets of `family` in our states.
fn request(family: u8) -> Msg {
    let mut req = [0u8; 56];
    req[0] = family;
    req[1] = libc::IPPROTO_TCP as u8;
    req[4..8].copy_from_slice(&STATES.to_ne_bytes());
    let mut m = Msg::new(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP);
    m.push(&req);
    m
}

/// The IPv4 address at `off` of an inet_diag_sockid address field (16 bytes),
/// None for a v6 socket that isn't IPv4-mapped.
fn addr_at(p: &[u8], off: usize, family: u8) -> io::Result<Option<Ipv4Addr>> {
    let a = p
        .get(off..off + 16)
        .ok_or_else(|| invalid("inet_diag message too short"))?;
    Ok(if family == libc::AF_INET as u8 {
        Some(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else if a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        Some(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        None
    })
}

/// Parses one inet_diag_msg; None for sockets that aren't IPv4 sessions.
pub(crate) fn parse(p: &[u8]) -> io::Result<Option<TcpSock>> {
    if p.len() < DIAG_MSG_LEN {
        return Err(invalid("inet_diag message too short"));
    }
    let family = get_u8(p, 0)?;
    let state = get_u8(p, 1)?;
    // sockid at 4: sport, dport (big endian), src[16], dst[16], ...
    let sport = u16::from_be(get_u16(p, 4)?);
    let dport = u16::from_be(get_u16(p, 6)?);
    let (Some(src), Some(dst)) = (addr_at(p, 8, family)?, addr_at(p, 24, family)?) else {
        return Ok(None);
    };
    Ok(Some(TcpSock {
        local: SocketAddrV4::new(src, sport),
        remote: SocketAddrV4::new(dst, dport),
        state,
    }))
}

/// TCP sessions (not listening, TIME_WAIT or closed) whose local address is in `addrs`.
pub fn tcp_sockets(addrs: &[Ipv4Addr]) -> io::Result<Vec<TcpSock>> {
    let mut sock = NlSocket::open(SockProtocol::NetlinkSockDiag, 0, false)?;
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let found = sock.dump(
            || request(family),
            |m| {
                if m.ty != SOCK_DIAG_BY_FAMILY {
                    return Ok(None);
                }
                Ok(parse(m.payload)?.filter(|s| addrs.contains(s.local.ip())))
            },
        );
        match found {
            Ok(v) => out.extend(v),
            // A kernel without IPv6 has no AF_INET6 sockets to report.
            Err(e) if family == libc::AF_INET6 as u8 && e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// For each address in `addrs` (same order), the number of its TCP sessions.
pub fn tcp_socket_counts(addrs: &[Ipv4Addr]) -> io::Result<Vec<(Ipv4Addr, usize)>> {
    let socks = tcp_sockets(addrs)?;
    Ok(addrs
        .iter()
        .map(|a| (*a, socks.iter().filter(|s| s.local.ip() == a).count()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(family: u8, state: u8, src: &[u8], dst: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; DIAG_MSG_LEN];
        p[0] = family;
        p[1] = state;
        p[4..6].copy_from_slice(&1234u16.to_be_bytes());
        p[6..8].copy_from_slice(&80u16.to_be_bytes());
        p[8..8 + src.len()].copy_from_slice(src);
        p[24..24 + dst.len()].copy_from_slice(dst);
        p
    }

    #[test]
    fn parses_v4_and_mapped() {
        let p = diag(2, 1, &[10, 0, 0, 1], &[192, 0, 2, 9]);
        let s = parse(&p).unwrap().unwrap();
        assert_eq!(s.local, "10.0.0.1:1234".parse().unwrap());
        assert_eq!(s.remote, "192.0.2.9:80".parse().unwrap());
        assert_eq!(s.state, TCP_ESTABLISHED);
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2];
        let s = parse(&diag(10, 1, &mapped, &mapped)).unwrap().unwrap();
        assert_eq!(*s.local.ip(), Ipv4Addr::new(10, 0, 0, 2));
        let v6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse(&diag(10, 1, &v6, &v6)).unwrap(), None);
        for cut in 0..p.len() {
            assert!(parse(&p[..cut]).is_err());
        }
        assert_eq!(STATES & (1 << TCP_LISTEN), 0);
        assert_ne!(STATES & (1 << TCP_CLOSE_WAIT), 0);
    }
}
