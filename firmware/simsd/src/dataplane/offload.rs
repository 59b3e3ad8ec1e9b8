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

use sims_proto::ipv4::{Ipv4Header, PROTO_TCP as TCP, PROTO_UDP as UDP};

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

/// Header facts of an unfragmented IPv4 packet: (ihl, total length,
/// protocol), from the one IPv4 header view.
fn ipv4(pkt: &[u8]) -> Option<(usize, usize, u8)> {
    let h = Ipv4Header::parse(pkt).ok()?;
    if h.is_fragment() {
        return None;
    }
    Some((h.header_len, h.total_len, h.protocol))
}

fn pseudo_sum(pkt: &[u8], proto: u8, l4_len: usize) -> u32 {
    let acc = sum16(&pkt[12..20], 0);
    acc.wrapping_add(u32::from(proto))
        .wrapping_add(l4_len as u32)
}

/// Offset of the checksum field in the transport header, if there is a
/// whole one.
fn csum_offset(proto: u8, l4: &[u8]) -> Option<usize> {
    match proto {
        TCP if l4.len() >= 20 => Some(16),
        UDP if l4.len() >= 8 => Some(6),
        _ => None,
    }
}

/// The full transport checksum of `pkt` (its checksum field counted as 0).
fn transport_checksum(pkt: &[u8], ihl: usize, total: usize, proto: u8, off: usize) -> u16 {
    let l4 = &pkt[ihl..total];
    let mut acc = pseudo_sum(pkt, proto, l4.len());
    acc = sum16(&l4[..off], acc);
    acc = sum16(&l4[off + 2..], acc);
    let c = !fold(acc);
    if proto == UDP && c == 0 {
        0xffff
    } else {
        c
    }
}

/// Completes a TCP/UDP checksum that holds only the pseudo-header sum (as
/// the kernel leaves it for the device). Returns whether it did.
pub fn complete_partial_checksum(pkt: &mut [u8]) -> bool {
    let Some((ihl, total, proto)) = ipv4(pkt) else {
        return false;
    };
    let Some(off) = csum_offset(proto, &pkt[ihl..total]) else {
        return false;
    };
    let at = ihl + off;
    let have = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    let partial = fold(pseudo_sum(pkt, proto, total - ihl));
    if have != partial || (proto == UDP && have == 0) {
        return false;
    }
    let c = transport_checksum(pkt, ihl, total, proto, off);
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

fn set_ip_checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let c = !fold(sum16(h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Splits an IPv4/TCP packet longer than `max` bytes into segments of at
/// most `max` bytes, as GSO does: consecutive sequence numbers, IP ids
/// counting up, FIN and PSH on the last segment only, CWR on the first
/// only, full checksums. None if `pkt` is not such a packet (not TCP, no
/// payload to split, or headers that leave no room).
pub fn segment_tcp(pkt: &[u8], max: usize) -> Option<Vec<Vec<u8>>> {
    let (ihl, total, proto) = ipv4(pkt)?;
    if proto != TCP || total <= max || total < ihl + 20 {
        return None;
    }
    let thl = usize::from(pkt[ihl + 12] >> 4) * 4;
    if thl < 20 || ihl + thl > total {
        return None;
    }
    let hdr = ihl + thl;
    let mss = max.checked_sub(hdr).filter(|&m| m > 0)?;
    let payload = &pkt[hdr..total];
    let seq0 = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let flags = pkt[ihl + 13];
    let n = payload.len().div_ceil(mss);
    let mut out = Vec::with_capacity(n);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut s = Vec::with_capacity(hdr + chunk.len());
        s.extend_from_slice(&pkt[..hdr]);
        s.extend_from_slice(chunk);
        let len = s.len() as u16;
        s[2..4].copy_from_slice(&len.to_be_bytes());
        s[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
        set_ip_checksum(&mut s[..ihl]);
        let seq = seq0.wrapping_add((i * mss) as u32);
        s[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
        let mut f = flags;
        if i + 1 < n {
            f &= !(0x01 | 0x08); // FIN, PSH
        }
        if i > 0 {
            f &= !0x80; // CWR
        }
        s[ihl + 13] = f;
        let c = transport_checksum(&s, ihl, s.len(), TCP, 16);
        s[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
        out.push(s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (ihl, total, proto) = ipv4(p).unwrap();
        let off = csum_offset(proto, &p[ihl..total]).unwrap();
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
