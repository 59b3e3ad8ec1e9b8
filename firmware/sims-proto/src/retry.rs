//! Retransmission with exponential backoff, written once for every request
//! a state machine keeps until it is answered (the agent's requests to
//! peers, the node's registrations and releases).

/// The wait stops doubling after this many retransmissions.
const MAX_DOUBLINGS: u8 = 6;

/// The wait after retransmission number `tries` (0: after the first send).
pub fn backoff_ms(initial_ms: u64, tries: u8) -> u64 {
    initial_ms << tries.min(MAX_DOUBLINGS)
}

/// When a kept request is due again, and how often it was retransmitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub tries: u8,
    pub next_ms: u64,
}

impl Backoff {
    /// The request was sent for the first time at `now_ms`.
    pub fn start(now_ms: u64, initial_ms: u64) -> Self {
        Backoff {
            tries: 0,
            next_ms: now_ms + backoff_ms(initial_ms, 0),
        }
    }

    /// Already given up: the next timer drops the request.
    pub fn given_up(now_ms: u64) -> Self {
        Backoff {
            tries: u8::MAX,
            next_ms: now_ms,
        }
    }

    pub fn is_due(&self, now_ms: u64) -> bool {
        self.next_ms <= now_ms
    }

    /// `max_tries` retransmissions were made: give up instead of sending.
    pub fn exhausted(&self, max_tries: u8) -> bool {
        self.tries >= max_tries
    }

    /// One retransmission was made at `now_ms`: schedule the next.
    pub fn retransmitted(&mut self, now_ms: u64, initial_ms: u64) {
        self.tries = self.tries.saturating_add(1);
        self.next_ms = now_ms + backoff_ms(initial_ms, self.tries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_stays() {
        let waits: [u64; 9] = core::array::from_fn(|i| backoff_ms(100, i as u8));
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 6400, 6400],
            "doubling stops at 2^6"
        );
        let mut b = Backoff::start(1000, 100);
        assert!(!b.is_due(1099) && b.is_due(1100));
        b.retransmitted(1100, 100);
        assert_eq!((b.tries, b.next_ms), (1, 1300));
        assert!(!b.exhausted(2));
        b.retransmitted(1300, 100);
        assert!(b.exhausted(2));
        let g = Backoff::given_up(5);
        assert!(g.is_due(5) && g.exhausted(u8::MAX));
    }
}
