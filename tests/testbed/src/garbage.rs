//! Deterministic garbage datagrams for robustness tests.

/// A small deterministic PRNG (xorshift64*), for reproducible garbage.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// `n` garbage datagrams: random bytes, very short ones, and truncated or
/// bit-flipped copies of `samples` (real datagrams, e.g. a captured
/// advertisement) when given.
pub fn garbage_datagrams(seed: u64, n: usize, samples: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut r = Prng::new(seed);
    (0..n)
        .map(|i| {
            let kind = if samples.is_empty() { i % 2 } else { i % 4 };
            match kind {
                0 => {
                    let len = r.below(1400) as usize;
                    r.bytes(len)
                }
                1 => {
                    let len = r.below(24) as usize;
                    r.bytes(len)
                }
                2 => {
                    let s = &samples[r.below(samples.len() as u64) as usize];
                    let len = r.below(s.len() as u64) as usize;
                    s[..len].to_vec()
                }
                _ => {
                    let mut s = samples[r.below(samples.len() as u64) as usize].clone();
                    for _ in 0..=r.below(4) {
                        if !s.is_empty() {
                            let at = r.below(s.len() as u64) as usize;
                            s[at] ^= 1 << r.below(8);
                        }
                    }
                    s
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_deterministic() {
        let s = vec![vec![1u8, 2, 3, 4, 5, 6, 7, 8]];
        assert_eq!(garbage_datagrams(7, 100, &s), garbage_datagrams(7, 100, &s));
        assert_eq!(garbage_datagrams(7, 100, &[]).len(), 100);
    }
}
