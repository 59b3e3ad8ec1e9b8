//! SIMS protocol core: a pure state machine for the Mobility Agent and the
//! Mobile Node, in the sans-IO style of quinn-proto. Events go in (a
//! datagram, a timer, an address change, a socket census); actions come out
//! (send this datagram, install that binding). No sockets, clocks, netlink
//! or entropy inside: time and a random seed are inputs, so the whole
//! protocol is testable without root and fuzzable.
//!
//! `no_std` with `alloc`: tables are `BTreeMap`s whose size is checked
//! against configured limits before every insert, so they never grow past
//! what the operator configured.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod agent;
pub mod driver;
pub mod limit;
pub mod msg;
pub mod node;
pub mod persist;
pub mod prefix;
pub mod prf;
pub mod retry;
pub mod wire;

pub use driver::{Now, Sink};
pub use msg::{AgentId, Cookie, Credential, Message, NodeKey, Status};
pub use prefix::Prefix;

/// Default UDP port of the SIMS control protocol.
pub const DEFAULT_PORT: u16 = 4434;
