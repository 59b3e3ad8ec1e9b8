//! Inner packets the userspace backend receives from a kernel ipip peer can
//! still carry the marks of the kernel's offloads, which a real device would
//! have finished before the wire but a raw socket hands over as they are
//! (over veth, and after GRO on a receiving NIC):
//!
//! * checksum offload (CHECKSUM_PARTIAL): the TCP/UDP checksum field holds
//!   only the pseudo-header sum; the device was to fill in the rest;
//! * segmentation offload (GSO/TSO, or GRO on receive): one "super-packet"
//!   of several MSS, longer than the tunnel MTU, whose checksum is partial.
//!
//! Written into our TUN as they are, the first is dropped by the receiver's
//! TCP as corrupt and the second cannot leave by the LAN (DF, too big):
//! relayed sessions from a kernel ipip peer stall. So, before the write:
//! complete a partial checksum, and split a TCP super-packet into segments
//! that fit (what the kernel's GSO would have done). A packet whose
//! checksum is neither partial nor correct is left alone: the end host
//! drops it, as it should.

//! The IPv4, TCP and UDP views and their checksums are smoltcp's `wire`
//! module (the one IPv4 view, as in sims-linux's raw ipip socket); what is
//! ours is when to complete and how to split, and the partial sum we
//! recognise (smoltcp 0.12 does not export its pseudo-header sum).

use core::net::Ipv4Addr;

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket, TcpSeqNumber, UdpPacket};

/// What the kernel leaves in a CHECKSUM_PARTIAL field: the folded,
/// uncomplemented pseudo-header sum.
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, len: usize) -> u16 {
    let (s, d) = (src.octets(), dst.octets());
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(u8::from(proto)),
        len as u16,
    ];
    let mut acc: u32 = words.iter().map(|&w| u32::from(w)).sum();
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// An unfragmented IPv4 packet (version 4, IHL >= 5, sane total length),
/// trimmed to its total length (link-layer padding is not part of it).
fn ipv4(pkt: &[u8]) -> Option<Ipv4Packet<&[u8]>> {
    let ip = Ipv4Packet::new_checked(pkt).ok()?;
    if ip.version() != 4 || ip.header_len() < 20 {
        return None;
    }
    // Fragments (offset or MF set) carry no whole transport segment.
    if ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    Ipv4Packet::new_checked(&pkt[..usize::from(ip.total_len())]).ok()
}

/// Completes a TCP/UDP checksum that holds only the pseudo-header sum (as
/// the kernel leaves it for the device). Returns whether it did.
pub fn complete_partial_checksum(pkt: &mut [u8]) -> bool {
    let Some(ip) = ipv4(pkt) else {
        return false;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (ihl, total, proto) = (
        usize::from(ip.header_len()),
        usize::from(ip.total_len()),
        ip.next_header(),
    );
    // What the kernel leaves in the field: the folded pseudo-header sum.
    let partial = |len: usize| pseudo_header_sum(src, dst, proto, len);
    let (src, dst) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
    let l4 = &mut pkt[ihl..total];
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(l4) {
            Ok(mut t) if t.checksum() == partial(t.as_ref().len()) => {
                t.fill_checksum(&src, &dst);
                true
            }
            _ => false,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(l4) {
            // 0 means "no checksum" in UDP: nothing to complete.
            Ok(mut u) if u.checksum() != 0 && u.checksum() == partial(usize::from(u.len())) => {
                u.fill_checksum(&src, &dst);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Splits an IPv4/TCP packet longer than `max` bytes into segments of at
/// most `max` bytes, as GSO does: consecutive sequence numbers, IP ids
/// counting up, FIN and PSH on the last segment only, CWR on the first
/// only, full checksums. None if `pkt` is not such a packet (not TCP, no
/// payload to split, or headers that leave no room).
pub fn segment_tcp(pkt: &[u8], max: usize) -> Option<Vec<Vec<u8>>> {
    let ip = ipv4(pkt)?;
    let total = usize::from(ip.total_len());
    if ip.next_header() != IpProtocol::Tcp || total <= max {
        return None;
    }
    let ihl = usize::from(ip.header_len());
    // new_checked: 20 <= data offset <= the segment.
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let hdr = ihl + usize::from(tcp.header_len());
    let mss = max.checked_sub(hdr).filter(|&m| m > 0)?;
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    let (seq0, id0) = (tcp.seq_number(), ip.ident());
    let (fin, psh, cwr) = (tcp.fin(), tcp.psh(), tcp.cwr());
    let payload = tcp.payload();
    let n = payload.len().div_ceil(mss);
    let mut out = Vec::with_capacity(n);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut s = Vec::with_capacity(hdr + chunk.len());
        s.extend_from_slice(&pkt[..hdr]);
        s.extend_from_slice(chunk);
        let mut ip = Ipv4Packet::new_unchecked(&mut s[..]);
        ip.set_total_len((hdr + chunk.len()) as u16);
        ip.set_ident(id0.wrapping_add(i as u16));
        ip.fill_checksum();
        let mut t = TcpPacket::new_unchecked(&mut s[ihl..]);
        t.set_seq_number(TcpSeqNumber(seq0.0.wrapping_add((i * mss) as i32)));
        let last = i + 1 == n;
        t.set_fin(fin && last);
        t.set_psh(psh && last);
        t.set_cwr(cwr && i == 0);
        t.fill_checksum(&src, &dst);
        out.push(s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An independent RFC 1071 reference, so the tests do not check
    // smoltcp against itself.
    const TCP: u8 = 6;
    const UDP: u8 = 17;

    /// One's-complement sum of big-endian 16-bit words (odd length padded).
    fn sum16(data: &[u8], mut acc: u32) -> u32 {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        }
        if let [last] = chunks.remainder() {
            acc = acc.wrapping_add(u32::from(*last) << 8);
        }
        acc
    }

    fn fold(mut acc: u32) -> u16 {
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    fn pseudo_sum(pkt: &[u8], proto: u8, l4_len: usize) -> u32 {
        sum16(&pkt[12..20], 0)
            .wrapping_add(u32::from(proto))
            .wrapping_add(l4_len as u32)
    }

    fn set_ip_checksum(h: &mut [u8]) {
        h[10] = 0;
        h[11] = 0;
        let c = !fold(sum16(h, 0));
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }

    /// The full transport checksum of `pkt` (its checksum field counted as 0).
    fn transport_checksum(pkt: &[u8], ihl: usize, total: usize, proto: u8, off: usize) -> u16 {
        let l4 = &pkt[ihl..total];
        let mut acc = pseudo_sum(pkt, proto, l4.len());
        acc = sum16(&l4[..off], acc);
        acc = sum16(&l4[off + 2..], acc);
        !fold(acc)
    }

    /// An IPv4/TCP packet 10.0.0.1:1000 → 10.0.0.2:2000 with `payload`,
    /// full checksums.
    fn tcp_packet(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        // TCP: ports, seq 1000, ack 5, data offset 8 (12 bytes of options).
        p.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 0, 0x03, 0xe8, 0, 0, 0, 5]);
        p.extend_from_slice(&[0x80, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend_from_slice(payload);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        set_ip_checksum(&mut p[..20]);
        let c = transport_checksum(&p, 20, p.len(), TCP, 16);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn valid(p: &[u8]) -> bool {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let proto = p[9];
        let off = if proto == TCP { 16 } else { 6 };
        let l4 = &p[ihl..total];
        fold(sum16(l4, pseudo_sum(p, proto, l4.len()))) == 0xffff
            && fold(sum16(&p[..ihl], 0)) == 0xffff
            && u16::from_be_bytes([l4[off], l4[off + 1]]) != 0
    }

    #[test]
    fn partial_checksums_are_completed_and_others_left_alone() {
        let full = tcp_packet(b"hello, relayed world", 0x18);
        assert!(valid(&full));
        // What the kernel leaves for the device: the folded pseudo-header sum.
        let mut partial = full.clone();
        let ps = fold(pseudo_sum(&partial, TCP, partial.len() - 20));
        partial[36..38].copy_from_slice(&ps.to_be_bytes());
        assert!(!valid(&partial));
        assert!(complete_partial_checksum(&mut partial));
        assert_eq!(partial, full);
        // Complete or corrupt packets are not touched.
        let mut same = full.clone();
        assert!(!complete_partial_checksum(&mut same));
        assert_eq!(same, full);
        let mut corrupt = full.clone();
        corrupt[60] ^= 1;
        assert!(!complete_partial_checksum(&mut corrupt));
        assert!(!valid(&corrupt));
        // Not IPv4/TCP/UDP, fragments, truncated: nothing happens, no panic.
        let mut frag = partial.clone();
        frag[6] |= 0x20;
        assert!(!complete_partial_checksum(&mut frag));
        for cut in 0..full.len() {
            let mut t = partial[..cut].to_vec();
            complete_partial_checksum(&mut t);
        }
    }

    #[test]
    fn udp_partial_checksum() {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, UDP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[
            0x13, 0x88, 0x13, 0x89, 0, 13, 0, 0, b'p', b'i', b'n', b'g', b'!',
        ]);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        set_ip_checksum(&mut p[..20]);
        let ps = fold(pseudo_sum(&p, UDP, 13));
        p[26..28].copy_from_slice(&ps.to_be_bytes());
        assert!(complete_partial_checksum(&mut p));
        assert!(valid(&p));
    }

    #[test]
    fn super_packets_are_segmented_like_gso() {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
        let big = tcp_packet(&payload, 0x19); // FIN|PSH|ACK
        let segs = segment_tcp(&big, 1480).unwrap();
        let hdr = 20 + 32;
        assert_eq!(segs.len(), 4000usize.div_ceil(1480 - hdr));
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(s.len() <= 1480);
            assert!(valid(s), "segment {i} checksums");
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 1000 + joined.len() as u32);
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
            let last = i + 1 == segs.len();
            assert_eq!(s[33], if last { 0x19 } else { 0x10 });
            joined.extend_from_slice(&s[hdr..]);
        }
        assert_eq!(joined, payload);
        // Fits already, or not TCP: None.
        assert!(segment_tcp(&tcp_packet(b"x", 0x10), 1480).is_none());
        let mut udp = big.clone();
        udp[9] = UDP;
        assert!(segment_tcp(&udp, 1480).is_none());
        for cut in 0..100 {
            let _ = segment_tcp(&big[..cut], 60);
        }
    }
}
