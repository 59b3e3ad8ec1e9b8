//! What reaches a host's interface: a packet socket (`AF_PACKET`) that
//! records every IPv4 UDP datagram to or from one port, with how the
//! kernel classed its frame (for this host, broadcast, or another host's
//! frame flooded by the bridge). An attacker's view of the LAN, for the
//! scenarios that check what a guest on it can learn.
//!
//! It runs in the calling thread's network namespace (start it on a
//! thread that has joined one: `Netns::spawn_in`), for a bounded time and
//! number of datagrams.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How the frame reached the interface (`sll_pkttype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Addressed to this host's MAC: the host's IP stack gets it.
    Host,
    /// Broadcast or multicast: the host's IP stack gets it.
    Broadcast,
    /// Another host's frame (the bridge flooded it): only a sniffer sees it.
    OtherHost,
}

impl Delivery {
    /// Would the host's own sockets receive it (not only a sniffer)?
    pub fn received(self) -> bool {
        self != Delivery::OtherHost
    }
}

/// One captured UDP datagram.
#[derive(Clone, Debug)]
pub struct Captured {
    pub at: Instant,
    pub delivery: Delivery,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

/// Records the UDP datagrams from or to `port` that arrive on `iface`
/// (not those the host sends) until `stop()` is true or `limit` passes,
/// at most `max` of them.
pub fn capture_udp(
    iface: &str,
    port: u16,
    limit: Duration,
    max: usize,
    stop: impl Fn() -> bool,
) -> io::Result<Vec<Captured>> {
    let name = std::ffi::CString::new(iface).map_err(|e| io::Error::other(e.to_string()))?;
    // SAFETY: a C string that lives across the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Closed when this returns, whatever happens.
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(self.0) };
        }
    }
    let fd = Fd(fd);
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: a valid sockaddr_ll of its size.
    let r = unsafe {
        libc::bind(
            fd.0,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: a timeval of its size.
    let r = unsafe {
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline && out.len() < max && !stop() {
        // SAFETY: as above.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                fd.0,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) || e.kind() == io::ErrorKind::Interrupted
            {
                continue;
            }
            return Err(e);
        }
        let delivery = match from.sll_pkttype {
            libc::PACKET_HOST => Delivery::Host,
            libc::PACKET_BROADCAST | libc::PACKET_MULTICAST => Delivery::Broadcast,
            libc::PACKET_OTHERHOST => Delivery::OtherHost,
            _ => continue, // what we send ourselves
        };
        if let Some(c) = parse_udp(&buf[..n as usize], delivery, port) {
            out.push(c);
        }
    }
    Ok(out)
}

/// An IPv4 packet's UDP datagram, if it is one from or to `port`.
fn parse_udp(p: &[u8], delivery: Delivery, port: u16) -> Option<Captured> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    // A fragment other than the first has no UDP header.
    if u16::from_be_bytes([p[6], p[7]]) & 0x1fff != 0 || total < ihl + 8 {
        return None;
    }
    let u = &p[ihl..total];
    let sport = u16::from_be_bytes([u[0], u[1]]);
    let dport = u16::from_be_bytes([u[2], u[3]]);
    if sport != port && dport != port {
        return None;
    }
    Some(Captured {
        at: Instant::now(),
        delivery,
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        sport,
        dport,
        payload: u[8..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_udp_datagram_and_skips_others() {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 1, 0, 1, 10, 1, 0, 50,
        ];
        p.extend([0x11, 0x52, 0x11, 0x52, 0, 11, 0, 0, 1, 2, 3]);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let c = parse_udp(&p, Delivery::Host, 4434).unwrap();
        assert_eq!(
            (c.src, c.dst),
            ("10.1.0.1".parse().unwrap(), "10.1.0.50".parse().unwrap())
        );
        assert_eq!(c.payload, vec![1, 2, 3]);
        assert!(parse_udp(&p, Delivery::Host, 53).is_none(), "another port");
        p[9] = 6;
        assert!(parse_udp(&p, Delivery::Host, 4434).is_none(), "not UDP");
    }
}
