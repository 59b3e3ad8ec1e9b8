//! Token buckets in a table of fixed capacity: what keeps one source (a
//! LAN address, a peer) from spending more than its share of the costly
//! work (a node session's X25519, a request to a peer in a node's name)
//! however fast it sends.
//!
//! The table never grows: a new key takes the slot of the key used least
//! recently. An attacker cycling through more keys than the table holds
//! only resets buckets to full, which the global bucket still caps.

use alloc::vec::Vec;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    key: u32,
    /// Tokens in thousandths, so a slow refill rate still accrues.
    milli: u64,
    last_ms: u64,
}

/// Rate and burst of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_s: u32,
    pub burst: u32,
}

#[derive(Clone, Debug)]
pub struct Buckets {
    rate: Rate,
    capacity: usize,
    table: Vec<Bucket>,
}

impl Buckets {
    pub fn new(rate: Rate, capacity: usize) -> Self {
        Buckets {
            rate,
            capacity: capacity.max(1),
            table: Vec::new(),
        }
    }

    fn refill(rate: Rate, b: &mut Bucket, now_ms: u64) {
        let dt = now_ms.saturating_sub(b.last_ms);
        let add = dt.saturating_mul(u64::from(rate.per_s));
        b.milli = b
            .milli
            .saturating_add(add)
            .min(u64::from(rate.burst) * 1000);
        b.last_ms = b.last_ms.max(now_ms);
    }

    /// Takes `n` tokens from `key`'s bucket if it has them.
    pub fn take(&mut self, key: u32, n: u32, now_ms: u64) -> bool {
        let rate = self.rate;
        let i = match self.table.iter().position(|b| b.key == key) {
            Some(i) => i,
            None => {
                let fresh = Bucket {
                    key,
                    milli: u64::from(rate.burst) * 1000,
                    last_ms: now_ms,
                };
                if self.table.len() < self.capacity {
                    self.table.push(fresh);
                    self.table.len() - 1
                } else {
                    let (i, _) = self
                        .table
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, b)| b.last_ms)
                        .unwrap_or((0, &fresh));
                    self.table[i] = fresh;
                    i
                }
            }
        };
        let b = &mut self.table[i];
        Self::refill(rate, b, now_ms);
        let need = u64::from(n) * 1000;
        if b.milli >= need {
            b.milli -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_and_bounded_table() {
        let mut b = Buckets::new(
            Rate {
                per_s: 10,
                burst: 5,
            },
            4,
        );
        assert!((0..5).all(|_| b.take(1, 1, 0)));
        assert!(!b.take(1, 1, 0), "burst spent");
        assert!(b.take(2, 1, 0), "another key has its own bucket");
        assert!(
            !b.take(1, 1, 99) && b.take(1, 1, 100),
            "10/s: one per 100 ms"
        );
        for k in 10..1000 {
            b.take(k, 1, 200);
        }
        assert_eq!(b.table.len(), 4, "never grows past its capacity");
        assert!(!b.take(1, 6, 10_000), "never more than the burst");
    }
}
