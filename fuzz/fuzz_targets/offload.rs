//! simsd's userspace data path: completing partial checksums and
//! splitting TCP super-packets (dataplane/offload.rs), on arbitrary
//! packets and sizes. Nothing panics; a completed packet keeps its length
//! and IP header and gets a correct transport checksum; segments fit, are
//! valid IPv4/TCP with correct checksums, and carry the payload in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simsd::offload::{complete_partial_checksum, segment_tcp};

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Whether the TCP or UDP checksum of IPv4 packet `p` is right (over the
/// UDP length for UDP, the rest of the packet for TCP).
fn transport_ok(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let mut l4 = &p[ihl..total];
    if p[9] == 17 {
        l4 = &l4[..usize::from(u16::from_be_bytes([l4[4], l4[5]]))];
    }
    let pseudo = sum16(&p[12..20], 0) + u32::from(p[9]) + l4.len() as u32;
    fold(sum16(l4, pseudo)) == 0xffff
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let pkt = &data[2..];

    let mut p = pkt.to_vec();
    if complete_partial_checksum(&mut p) {
        assert_eq!(p.len(), pkt.len());
        let ihl = usize::from(p[0] & 0x0f) * 4;
        assert_eq!(p[..ihl], pkt[..ihl], "the IP header changed");
        assert!(transport_ok(&p), "completed checksum is wrong");
    }

    if let Some(segs) = segment_tcp(pkt, max) {
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        let hdr = ihl + usize::from(pkt[ihl + 12] >> 4) * 4;
        assert!(total > max && !segs.is_empty());
        let mut joined = Vec::new();
        for s in &segs {
            assert!(s.len() <= max, "segment of {} > {max}", s.len());
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
            assert_eq!(fold(sum16(&s[..ihl], 0)), 0xffff, "IP checksum");
            assert!(transport_ok(s), "TCP checksum");
            let seq = u32::from_be_bytes([s[ihl + 4], s[ihl + 5], s[ihl + 6], s[ihl + 7]]);
            let seq0 = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
            assert_eq!(seq, seq0.wrapping_add(joined.len() as u32));
            joined.extend_from_slice(&s[hdr..]);
        }
        assert_eq!(joined, pkt[hdr..total], "payload");
    }
});
