//! What an operator configures of an agent: identity, addresses, roaming
//! agreements (peers), limits and timers.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::limit::Rate;
use crate::msg::{AgentId, Provider};
use crate::prefix::Prefix;

/// Index of a peer in [`AgentConfig::peers`].
pub type PeerIdx = usize;

/// One roaming agreement.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub id: AgentId,
    pub endpoint: Ipv4Addr,
    pub port: u16,
    pub prefixes: Vec<Prefix>,
    pub key: [u8; 32],
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub id: AgentId,
    pub provider: Provider,
    /// Our tunnel endpoint (WAN address).
    pub endpoint: Ipv4Addr,
    pub port: u16,
    pub lan_prefixes: Vec<Prefix>,
    pub peers: Vec<PeerConfig>,
    pub advert_interval_ms: u64,
    /// Lifetime of bindings; nodes refresh at a third of it.
    pub binding_lifetime_s: u16,
    /// How long an unused credential is remembered.
    pub credential_lifetime_s: u32,
    pub max_bindings: usize,
    pub max_per_peer: usize,
    pub max_per_node: usize,
    pub max_credentials: usize,
    /// Most node registrations waiting for peers at once.
    pub max_pending: usize,
    /// Most of them from one source address: one guest cannot take the
    /// others' share.
    pub max_pending_per_source: usize,
    /// The costly work a LAN source address, and the whole LAN, may have
    /// the agent do: the X25519 of a node's new session, and each request
    /// sent to a peer in a node's name (only the issuer can check its
    /// proof, so made-up claims must not reach it at line rate). Proofs
    /// are HMACs: checking them is not budgeted.
    pub verify_per_source: Rate,
    pub verify_total: Rate,
    pub retransmit_initial_ms: u64,
    pub retransmit_tries: u8,
}

impl AgentConfig {
    /// Defaults for everything but identity, addresses and peers.
    pub fn new(id: AgentId, endpoint: Ipv4Addr) -> Self {
        AgentConfig {
            id,
            provider: Provider::new(),
            endpoint,
            port: crate::DEFAULT_PORT,
            lan_prefixes: Vec::new(),
            peers: Vec::new(),
            advert_interval_ms: 5_000,
            binding_lifetime_s: 300,
            credential_lifetime_s: 86_400,
            max_bindings: 1024,
            max_per_peer: 512,
            max_per_node: 8,
            max_credentials: 1024,
            max_pending: 64,
            max_pending_per_source: 4,
            verify_per_source: Rate {
                per_s: 16,
                burst: 32,
            },
            verify_total: Rate {
                per_s: 400,
                burst: 400,
            },
            retransmit_initial_ms: 200,
            retransmit_tries: 4,
        }
    }

    pub(super) fn is_lan(&self, a: Ipv4Addr) -> bool {
        self.lan_prefixes.iter().any(|p| p.contains(a))
    }
}
