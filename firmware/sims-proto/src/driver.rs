//! The contract between a state machine ([`Agent`](crate::agent::Agent),
//! [`Node`](crate::node::Node)) and the event loop that drives it: time
//! goes in as [`Now`] with every event, actions come out through a
//! [`Sink`], and [`poll_timeout`](crate::agent::Agent::poll_timeout) says
//! when to call `handle_timeout` next. Both machines have this one shape.

/// The time input: a monotonic clock, for timers. There is no wall
/// clock: nothing in the protocol depends on one (docs/PROTOCOL.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub ms: u64,
}

impl Now {
    pub fn ms(ms: u64) -> Self {
        Now { ms }
    }
}

/// Where a state machine's actions go, in the order it emits them. The
/// daemons carry out each action as it is pushed, never collecting them:
/// a burst (a restore of 1,000 bindings, a round of retransmissions) then
/// costs the memory of one action (docs/BENCHMARKS.md, "Footprint").
/// Tests collect them in a `Vec`.
pub trait Sink<A> {
    fn push(&mut self, a: A);

    /// Whether an action pushed since the last call could not be carried
    /// out (a kernel change that failed); clears it. The agent asks after
    /// installing a binding and undoes it instead of reporting success to
    /// a node or a peer. Sinks that cannot fail keep the default.
    fn failed(&mut self) -> bool {
        false
    }
}

impl<A> Sink<A> for alloc::vec::Vec<A> {
    fn push(&mut self, a: A) {
        alloc::vec::Vec::push(self, a)
    }
}
