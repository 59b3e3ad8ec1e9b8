//! One IPv4 header view for every crate that parses packets: the userspace
//! ipip backend's outer headers (`sims_linux::rawipip`) and the inner
//! packets it finishes before they enter a TUN device (simsd's
//! `dataplane/offload.rs`). Checked once ([`Ipv4Header::parse`]); after
//! that every offset it gives is inside the packet, so callers index
//! without panicking.

use core::net::Ipv4Addr;
use core::ops::Range;

pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// The fixed part of the header (IHL 5).
pub const MIN_HEADER_LEN: usize = 20;

/// Why bytes are not an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Error {
    Empty,
    NotIpv4,
    /// IHL under 5, or longer than the bytes.
    BadHeaderLength,
    /// Total length shorter than the header or longer than the bytes.
    BadTotalLength,
}

impl Ipv4Error {
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv4Error::Empty => "empty packet",
            Ipv4Error::NotIpv4 => "not IPv4",
            Ipv4Error::BadHeaderLength => "bad header length",
            Ipv4Error::BadTotalLength => "bad total length",
        }
    }
}

/// The facts of a checked IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// IHL × 4: where the payload starts.
    pub header_len: usize,
    /// The total length field: where the packet ends (link-layer padding
    /// after it is not part of it).
    pub total_len: usize,
    pub ident: u16,
    /// Flags and fragment offset, as on the wire.
    pub flags_frag: u16,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

impl Ipv4Header {
    pub fn parse(pkt: &[u8]) -> Result<Self, Ipv4Error> {
        let first = *pkt.first().ok_or(Ipv4Error::Empty)?;
        if first >> 4 != 4 {
            return Err(Ipv4Error::NotIpv4);
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN || pkt.len() < header_len {
            return Err(Ipv4Error::BadHeaderLength);
        }
        // header_len >= 20 and pkt.len() >= header_len: the fixed fields
        // are in bounds.
        let total_len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        if total_len < header_len || total_len > pkt.len() {
            return Err(Ipv4Error::BadTotalLength);
        }
        Ok(Ipv4Header {
            header_len,
            total_len,
            ident: u16::from_be_bytes([pkt[4], pkt[5]]),
            flags_frag: u16::from_be_bytes([pkt[6], pkt[7]]),
            protocol: pkt[9],
            src: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
            dst: Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
        })
    }

    /// Where the payload is in the packet.
    pub fn payload(&self) -> Range<usize> {
        self.header_len..self.total_len
    }

    /// A fragment (offset or more-fragments set) carries no whole
    /// transport segment.
    pub fn is_fragment(&self) -> bool {
        self.flags_frag & 0x3fff != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8]) -> alloc::vec::Vec<u8> {
        let mut p = alloc::vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 4, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        let total = (20 + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_and_bounds() {
        let p = packet(&[1, 2, 3]);
        let h = Ipv4Header::parse(&p).unwrap();
        assert_eq!(
            (h.header_len, h.total_len, h.protocol),
            (20, 23, PROTO_IPIP)
        );
        assert_eq!(
            (h.src, h.dst),
            (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2))
        );
        assert_eq!((h.ident, h.is_fragment()), (0x1234, false));
        assert_eq!(&p[h.payload()], &[1, 2, 3]);
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(Ipv4Header::parse(&padded).unwrap().payload(), 20..23);
        let mut frag = p.clone();
        frag[6] = 0x20;
        assert!(Ipv4Header::parse(&frag).unwrap().is_fragment());
    }

    #[test]
    fn never_panics_on_garbage() {
        let p = packet(&[0x45; 40]);
        for cut in 0..p.len() {
            assert!(Ipv4Header::parse(&p[..cut]).is_err(), "cut at {cut}");
        }
        let mut x = 0x1234_5678u32;
        for len in 0..64 {
            let bytes: alloc::vec::Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Ok(h) = Ipv4Header::parse(&bytes) {
                let _ = &bytes[h.payload()];
            }
        }
        let mut bad = p.clone();
        bad[0] = 0x65;
        assert_eq!(Ipv4Header::parse(&bad), Err(Ipv4Error::NotIpv4));
        bad[0] = 0x44;
        assert_eq!(Ipv4Header::parse(&bad), Err(Ipv4Error::BadHeaderLength));
        bad = p.clone();
        bad[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(Ipv4Header::parse(&bad), Err(Ipv4Error::BadTotalLength));
    }
}
