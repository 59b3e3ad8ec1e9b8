//! Unpredictable values inside a core that has no randomness of its own:
//! the platform gives each state machine one 32-byte random seed at start,
//! and everything an attacker must not guess (request ids, serials,
//! solicitation nonces, peer challenges, the cookie key) is drawn from
//! HMAC-SHA256 keyed by it, in counter mode: a pseudorandom function, so
//! seeing any number of outputs tells nothing about the next one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // A 32-byte key is always a valid HMAC key.
    let Ok(mut m) = HmacSha256::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Whether two byte strings of the same length are equal, in time that
/// does not depend on where they differ (for tags, cookies).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A stream of unpredictable values from one secret seed.
#[derive(Clone)]
pub struct Prf {
    key: [u8; 32],
    counter: u64,
}

impl Prf {
    pub fn new(seed: [u8; 32]) -> Self {
        Prf {
            key: hmac(&seed, &[b"SIMS prf"]),
            counter: 0,
        }
    }

    pub fn bytes32(&mut self) -> [u8; 32] {
        self.counter += 1;
        hmac(&self.key, &[&self.counter.to_le_bytes()])
    }

    /// Never 0 (0 means "none" in several fields).
    pub fn u64(&mut self) -> u64 {
        loop {
            let b = self.bytes32();
            let v = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            if v != 0 {
                return v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_give_different_streams_and_values_do_not_repeat() {
        let mut a = Prf::new([1; 32]);
        let mut b = Prf::new([2; 32]);
        let xs: alloc::vec::Vec<u64> = (0..100).map(|_| a.u64()).collect();
        assert_ne!(xs[0], b.u64());
        for (i, x) in xs.iter().enumerate() {
            assert!(*x != 0 && !xs[i + 1..].contains(x));
        }
        // Not a counter: consecutive values are far apart.
        assert!(xs.windows(2).all(|w| w[0].abs_diff(w[1]) > 1 << 20));
    }
}
