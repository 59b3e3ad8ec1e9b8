//! The one layout of the state files both state machines save across a
//! restart of their daemon: a header — [`MAGIC`], a kind byte (agent or
//! node), a layout version — then a postcard body written and read one
//! element at a time (never a decoded copy of a whole table: a copy of
//! 1,000 bindings was most of simsd's peak RSS at start).
//!
//! Versions: 0 is the header-less body written before the header existed
//! (its body is that of version 1), so an upgraded daemon restores what
//! the old one saved. A later layout bumps its kind's version and reads the
//! older ones; a file from a newer version is refused, never misread.
//! From version 2 the file ends in a checksum (the first 8 bytes of the
//! SHA-256 of everything before it): a file damaged on flash is refused
//! whole instead of being half read.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 4] = *b"SIMS";

/// Whose state a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Agent = b'A' as isize,
    Node = b'N' as isize,
}

impl Kind {
    /// The layout this build writes.
    pub fn current_version(self) -> u8 {
        match self {
            Kind::Agent => 4,
            Kind::Node => 3,
        }
    }
}

pub const HEADER_LEN: usize = 6;
/// The checksum at the end of files of version 2 and later.
pub const CHECKSUM_LEN: usize = 8;

fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(data);
    let mut c = [0u8; CHECKSUM_LEN];
    c.copy_from_slice(&h[..CHECKSUM_LEN]);
    c
}

/// Builds a state file element by element.
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub fn new(kind: Kind) -> Self {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.push(kind as u8);
        out.push(kind.current_version());
        Writer { out }
    }

    pub fn put<T: Serialize + ?Sized>(&mut self, v: &T) {
        if let Ok(v) = postcard::to_extend(v, core::mem::take(&mut self.out)) {
            self.out = v;
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        let c = checksum(&self.out);
        self.out.extend_from_slice(&c);
        self.out
    }
}

/// Why a state file was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Another kind's file (a node's state given to an agent).
    OtherKind,
    /// Written by a newer version of the daemon.
    NewerVersion(u8),
    /// Truncated or damaged.
    Damaged,
    /// The checksum does not match: damaged.
    BadChecksum,
}

/// Reads a state file's body element by element. Copy: keep one to come
/// back to a position (check the whole file first, then apply it).
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The body of `data` and its layout version.
    pub fn open(data: &'a [u8], kind: Kind) -> Result<(u8, Reader<'a>), Refused> {
        let Some(body) = data.strip_prefix(&MAGIC) else {
            return Ok((0, Reader { rest: data }));
        };
        let [k, version, body @ ..] = body else {
            return Err(Refused::Damaged);
        };
        if *k != kind as u8 {
            return Err(Refused::OtherKind);
        }
        if *version > kind.current_version() {
            return Err(Refused::NewerVersion(*version));
        }
        if *version < 2 {
            return Ok((*version, Reader { rest: body }));
        }
        let Some(split) = data.len().checked_sub(CHECKSUM_LEN) else {
            return Err(Refused::Damaged);
        };
        let (covered, sum) = data.split_at(split);
        if split < HEADER_LEN || checksum(covered)[..] != *sum {
            return Err(Refused::BadChecksum);
        }
        Ok((
            *version,
            Reader {
                rest: &covered[HEADER_LEN..],
            },
        ))
    }

    pub fn take<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let (v, r) = postcard::take_from_bytes(self.rest).ok()?;
        self.rest = r;
        Some(v)
    }

    /// Skips `n` elements of type `T`; None if one does not decode.
    pub fn skip<T: Deserialize<'a>>(&mut self, n: usize) -> Option<()> {
        (0..n).try_for_each(|_| self.take::<T>().map(|_| ()))
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_kind_and_version() {
        let mut w = Writer::new(Kind::Node);
        w.put(&7u32);
        let data = w.finish();
        assert_eq!(&data[..HEADER_LEN], b"SIMSN\x03");
        assert_eq!(data.len(), HEADER_LEN + 1 + CHECKSUM_LEN);
        let (v, mut r) = Reader::open(&data, Kind::Node).unwrap();
        assert_eq!((v, r.take::<u32>()), (3, Some(7)));
        assert!(r.is_empty());
        // Any flipped bit or cut is refused by the checksum.
        for i in HEADER_LEN * 8..data.len() * 8 {
            let mut bad = data.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(Reader::open(&bad, Kind::Node).is_err(), "bit {i}");
        }
        for cut in HEADER_LEN..data.len() {
            assert!(Reader::open(&data[..cut], Kind::Node).is_err());
        }
        assert_eq!(
            Reader::open(&data, Kind::Agent).err(),
            Some(Refused::OtherKind)
        );
        let mut newer = data.clone();
        newer[5] = 4;
        assert_eq!(
            Reader::open(&newer, Kind::Node).err(),
            Some(Refused::NewerVersion(4))
        );
        assert_eq!(
            Reader::open(b"SIMSN", Kind::Node).err(),
            Some(Refused::Damaged)
        );
        // Version 1 (no checksum) and no header (version 0) still open.
        let mut v1 = data[..HEADER_LEN + 1].to_vec();
        v1[5] = 1;
        let (v, mut r) = Reader::open(&v1, Kind::Node).unwrap();
        assert_eq!((v, r.take::<u32>()), (1, Some(7)));
        let (v, mut r) = Reader::open(&v1[HEADER_LEN..], Kind::Node).unwrap();
        assert_eq!((v, r.take::<u32>()), (0, Some(7)));
    }
}
