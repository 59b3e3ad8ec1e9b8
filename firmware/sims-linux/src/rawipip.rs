//! Raw IPPROTO_IPIP socket for the userspace ipip backend. Sending: the
//! kernel adds the outer IPv4 header (protocol 4, DF, TTL 64), exactly as
//! kernel ipip with pmtudisc would, so both backends interoperate.
//! Receiving: the kernel hands over the whole outer packet; we check it
//! and return the outer source and the inner packet.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{self, sockopt, MsgFlags, SockaddrIn};
use nix::{setsockopt_impl, sockopt_impl};
use smoltcp::wire::{IpProtocol, Ipv4Packet};

use crate::sys;

const TTL: libc::c_int = 64;
const PROTO_IPIP: u8 = 4;

// nix has no IP_MTU_DISCOVER setter.
sockopt_impl!(
    IpMtuDiscover,
    SetOnly,
    libc::IPPROTO_IP,
    libc::IP_MTU_DISCOVER,
    libc::c_int
);

pub struct RawIpip {
    fd: OwnedFd,
}

/// Validates an outer IPv4 header (smoltcp's `wire::Ipv4Packet`, the one
/// IPv4 view, as in simsd's offload completion); returns the outer source
/// and where the inner packet is in `pkt`.
pub fn parse_outer(pkt: &[u8]) -> io::Result<(Ipv4Addr, Range<usize>)> {
    let bad = |what| io::Error::new(io::ErrorKind::InvalidData, what);
    // new_checked: the fixed header is there, header length <= total
    // length <= bytes. Version and IHL >= 5 are ours to check.
    let ip = Ipv4Packet::new_checked(pkt).map_err(|_| bad("bad outer header or total length"))?;
    if ip.version() != 4 {
        return Err(bad("outer header is not IPv4"));
    }
    let (header_len, total_len) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
    if header_len < 20 {
        return Err(bad("bad outer header length"));
    }
    if ip.next_header() != IpProtocol::from(PROTO_IPIP) {
        return Err(bad("outer protocol is not ipip"));
    }
    Ok((ip.src_addr(), header_len..total_len))
}

impl RawIpip {
    /// Opens the socket, bound to `bind_local` if given (then only packets
    /// to that address arrive, and it is the outer source).
    pub fn open(bind_local: Option<Ipv4Addr>) -> io::Result<Self> {
        // nix's SockProtocol has no IPPROTO_IPIP: the socket itself is libc.
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = sys::cvt(unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(PROTO_IPIP),
            )
        })?;
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // DF on every packet, oversize sends fail with EMSGSIZE: like ipip pmtudisc.
        socket::setsockopt(&fd, IpMtuDiscover, &libc::IP_PMTUDISC_DO)?;
        socket::setsockopt(&fd, sockopt::Ipv4Ttl, &TTL)?;
        if let Some(local) = bind_local {
            socket::bind(
                fd.as_raw_fd(),
                &SockaddrIn::from(SocketAddrV4::new(local, 0)),
            )?;
        }
        Ok(RawIpip { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends `inner` (a whole IPv4 packet) to `remote`; WouldBlock if the socket buffer is full.
    pub fn send(&self, inner: &[u8], remote: Ipv4Addr) -> io::Result<()> {
        let sa = SockaddrIn::from(SocketAddrV4::new(remote, 0));
        let n = socket::sendto(self.fd.as_raw_fd(), inner, &sa, MsgFlags::empty())?;
        if n != inner.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short raw send"));
        }
        Ok(())
    }

    /// Receives one protocol-4 packet into `buf`: the outer source and
    /// where in `buf` the inner packet is (a range, so the caller keeps
    /// `buf` mutable to finish the packet in place). InvalidData for a
    /// malformed or truncated packet (drop it and go on).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(Ipv4Addr, Range<usize>)> {
        // MSG_TRUNC returns the real length, so a truncated packet is detected.
        let n = socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_TRUNC)?;
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ipip packet larger than buffer",
            ));
        }
        parse_outer(&buf[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outer(inner: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 4, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        let total = (20 + inner.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(inner);
        p
    }

    #[test]
    fn parses_outer_header() {
        let p = outer(&[0x45, 1, 2, 3]);
        let (src, inner) = parse_outer(&p).unwrap();
        assert_eq!(src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(&p[inner], &[0x45, 1, 2, 3]);
        // Link-layer padding after the total length is ignored.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(&padded[parse_outer(&padded).unwrap().1], &[0x45, 1, 2, 3]);
        // Options: IHL 6.
        let mut opt = p.clone();
        opt[0] = 0x46;
        opt.splice(20..20, [1, 1, 1, 0]);
        opt[2..4].copy_from_slice(&28u16.to_be_bytes());
        assert_eq!(&opt[parse_outer(&opt).unwrap().1], &[0x45, 1, 2, 3]);
    }

    #[test]
    fn rejects_malformed_without_panic() {
        let p = outer(&[0x45; 40]);
        for cut in 0..p.len() {
            assert!(parse_outer(&p[..cut]).is_err());
        }
        let mut bad = p.clone();
        bad[9] = 17;
        assert!(parse_outer(&bad).is_err());
        bad = p.clone();
        bad[0] = 0x65;
        assert!(parse_outer(&bad).is_err());
        bad = outer(&[0x45; 4]);
        bad[0] = 0x4f; // IHL 60 > packet
        assert!(parse_outer(&bad).is_err());
        bad = p.clone();
        bad[0] = 0x44;
        assert!(parse_outer(&bad).is_err());
        bad = p.clone();
        bad[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert!(parse_outer(&bad).is_err());
        assert_eq!(
            parse_outer(&bad).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Garbage: an error or a range inside the bytes, never a panic.
        let mut x = 0x1234_5678u32;
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Ok((_, inner)) = parse_outer(&bytes) {
                let _ = &bytes[inner];
            }
        }
    }
}
