//! The fixed SIMS datagram header, in the style of smoltcp's `wire`: a view
//! over bytes whose accessors never panic, and a validated representation.
//!
//! ```text
//!  0      4        5        6                8
//!  +------+--------+--------+----------------+----------------+-----------+
//!  | SIMS | version|  type  | body length BE | body (postcard) | [tag 32] |
//!  +------+--------+--------+----------------+----------------+-----------+
//! ```
//! Messages between agents (types 0x10 and up) carry a 32-byte
//! HMAC-SHA256 tag after the body; node messages carry none.

/// Datagram magic, ASCII "SIMS".
pub const MAGIC: [u8; 4] = *b"SIMS";
/// The protocol version this implementation speaks. Older versions are
/// refused and counted (`rx_old_version`): 1 (before the security
/// redesign: predictable ids, clock-based replay checks, no
/// return-routability cookie), 2 (Ed25519 proofs, unsealed registrations
/// and releases).
pub const VERSION: u8 = 3;
/// Header length in bytes.
pub const HEADER_LEN: usize = 8;
/// Length of the agent-to-agent authentication tag.
pub const TAG_LEN: usize = 32;
/// Largest datagram we send or accept: stays below any sane path MTU.
pub const MAX_DATAGRAM: usize = 1200;

/// Why a datagram was rejected before its body was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    Truncated,
    BadMagic,
    BadVersion(u8),
    UnknownType(u8),
    BadLength,
}

/// Message type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    Advertisement = 0x01,
    Solicitation = 0x02,
    Registration = 0x03,
    RegistrationReply = 0x04,
    Release = 0x05,
    ReleaseReply = 0x06,
    TunnelRequest = 0x11,
    TunnelReply = 0x12,
    TunnelRelease = 0x13,
    TunnelReleaseReply = 0x14,
    PeerChallenge = 0x15,
    PeerHello = 0x16,
    PeerHelloReply = 0x17,
    PeerMoveChallenge = 0x18,
}

impl MsgType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x01 => Self::Advertisement,
            0x02 => Self::Solicitation,
            0x03 => Self::Registration,
            0x04 => Self::RegistrationReply,
            0x05 => Self::Release,
            0x06 => Self::ReleaseReply,
            0x11 => Self::TunnelRequest,
            0x12 => Self::TunnelReply,
            0x13 => Self::TunnelRelease,
            0x14 => Self::TunnelReleaseReply,
            0x15 => Self::PeerChallenge,
            0x16 => Self::PeerHello,
            0x17 => Self::PeerHelloReply,
            0x18 => Self::PeerMoveChallenge,
            _ => return None,
        })
    }

    /// Agent-to-agent messages are authenticated with the roaming
    /// agreement's key and carry a tag.
    pub fn is_peer(self) -> bool {
        (self as u8) >= 0x10
    }
}

/// A read-only view of a datagram.
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checks; accessors on a short buffer return defaults.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap and validate magic, version, type and lengths.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn check(&self) -> Result<(), WireError> {
        let b = self.bytes();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0..4] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if b[4] != VERSION {
            return Err(WireError::BadVersion(b[4]));
        }
        let ty = MsgType::from_u8(b[5]).ok_or(WireError::UnknownType(b[5]))?;
        let want = HEADER_LEN + self.body_len() + if ty.is_peer() { TAG_LEN } else { 0 };
        if b.len() > MAX_DATAGRAM {
            return Err(WireError::BadLength);
        }
        if b.len() < want {
            return Err(WireError::Truncated);
        }
        if b.len() != want {
            return Err(WireError::BadLength);
        }
        Ok(())
    }

    pub fn version(&self) -> u8 {
        self.bytes().get(4).copied().unwrap_or(0)
    }

    pub fn msg_type(&self) -> Option<MsgType> {
        self.bytes().get(5).copied().and_then(MsgType::from_u8)
    }

    pub fn body_len(&self) -> usize {
        match self.bytes().get(6..8) {
            Some(l) => u16::from_be_bytes([l[0], l[1]]) as usize,
            None => 0,
        }
    }

    /// The postcard-encoded body (empty if the buffer is short).
    pub fn body(&self) -> &[u8] {
        self.bytes()
            .get(HEADER_LEN..HEADER_LEN + self.body_len())
            .unwrap_or(&[])
    }

    /// Header and body: what the tag covers.
    pub fn authenticated_part(&self) -> &[u8] {
        self.bytes()
            .get(..HEADER_LEN + self.body_len())
            .unwrap_or(&[])
    }

    /// The tag of a peer message (empty if absent).
    pub fn tag(&self) -> &[u8] {
        let start = HEADER_LEN + self.body_len();
        self.bytes().get(start..start + TAG_LEN).unwrap_or(&[])
    }
}

/// Write a header for `ty` with a body of `body_len` bytes into `buf`.
/// Returns `None` if the buffer is too small or the body too long.
pub fn emit_header(buf: &mut [u8], ty: MsgType, body_len: usize) -> Option<()> {
    if buf.len() < HEADER_LEN || body_len > MAX_DATAGRAM - HEADER_LEN {
        return None;
    }
    buf[0..4].copy_from_slice(&MAGIC);
    buf[4] = VERSION;
    buf[5] = ty as u8;
    buf[6..8].copy_from_slice(&(body_len as u16).to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(ty: MsgType, body: &[u8]) -> [u8; 64] {
        let mut b = [0u8; 64];
        emit_header(&mut b, ty, body.len()).unwrap();
        b[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
        b
    }

    #[test]
    fn roundtrip_header() {
        let b = datagram(MsgType::Solicitation, &[1, 2, 3]);
        let p = Packet::new_checked(&b[..HEADER_LEN + 3]).unwrap();
        assert_eq!(p.msg_type(), Some(MsgType::Solicitation));
        assert_eq!(p.body(), &[1, 2, 3]);
        assert!(p.tag().is_empty());
    }

    #[test]
    fn byte_layout_is_big_endian() {
        let mut b = [0u8; 8];
        emit_header(&mut b, MsgType::TunnelRequest, 0x102).unwrap();
        assert_eq!(&b[0..8], &[b'S', b'I', b'M', b'S', 3, 0x11, 0x01, 0x02]);
    }

    #[test]
    fn rejects() {
        let b = datagram(MsgType::Solicitation, &[1, 2, 3]);
        assert_eq!(
            Packet::new_checked(&b[..5]).err(),
            Some(WireError::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&b[..HEADER_LEN + 2]).err(),
            Some(WireError::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&b[..HEADER_LEN + 4]).err(),
            Some(WireError::BadLength)
        );
        let mut bad = b;
        bad[4] = 1;
        assert_eq!(
            Packet::new_checked(&bad[..11]).err(),
            Some(WireError::BadVersion(1))
        );
        bad = b;
        bad[0] = b'X';
        assert_eq!(
            Packet::new_checked(&bad[..11]).err(),
            Some(WireError::BadMagic)
        );
        bad = b;
        bad[5] = 0x7f;
        assert_eq!(
            Packet::new_checked(&bad[..11]).err(),
            Some(WireError::UnknownType(0x7f))
        );
        // A peer message without its tag is truncated.
        let t = datagram(MsgType::TunnelReply, &[9]);
        assert_eq!(
            Packet::new_checked(&t[..HEADER_LEN + 1]).err(),
            Some(WireError::Truncated)
        );
        assert!(Packet::new_checked(&t[..HEADER_LEN + 1 + TAG_LEN]).is_ok());
    }

    #[test]
    fn accessors_never_panic_on_short_buffers() {
        for n in 0..HEADER_LEN + 2 {
            let b = datagram(MsgType::TunnelReply, &[9, 9]);
            let p = Packet::new_unchecked(&b[..n]);
            let _ = (
                p.version(),
                p.msg_type(),
                p.body(),
                p.tag(),
                p.authenticated_part(),
            );
        }
    }
}
