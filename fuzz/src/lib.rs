//! What the fuzz targets share: the agent's and the node's small
//! configurations (two roaming peers, tight limits so that the fuzzer
//! reaches them), the addresses and keys of that world, and the state-file
//! checksum (so that mutated saves get past it).

use std::net::Ipv4Addr;

use sims_proto::agent::{AgentConfig, PeerConfig};
use sims_proto::limit::Rate;
use sims_proto::node::NodeConfig;
use sims_proto::{AgentId, Now, Prefix, Status};

/// Every status an answer can carry.
pub const STATUSES: [Status; 11] = [
    Status::Ok,
    Status::NotPeer,
    Status::BadProof,
    Status::Replay,
    Status::AddressInUse,
    Status::NoCapacity,
    Status::UnknownCredential,
    Status::Timeout,
    Status::BadRequest,
    Status::BadCookie,
    Status::Failed,
];

pub const AGENT_ID: &str = "ma-a";
pub const PEER_IDS: [&str; 2] = ["ma-b", "ma-c"];
pub const PEER_KEYS: [[u8; 32]; 2] = [[0x21; 32], [0x31; 32]];
pub const ENDPOINT: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 2);
pub const PEER_ENDPOINTS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(100, 64, 2, 2), Ipv4Addr::new(100, 64, 3, 2)];
pub const PORT: u16 = sims_proto::DEFAULT_PORT;

/// The agent's LAN (index 0) and its peers' (1, 2): 10.<i+1>.0.0/24.
pub fn lan(i: usize) -> Prefix {
    Prefix::new(Ipv4Addr::new(10, i as u8 + 1, 0, 0), 24).expect("prefix")
}

/// Host `h` of LAN `i`.
pub fn host(i: usize, h: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, i as u8 + 1, 0, h)
}

pub fn id(s: &str) -> AgentId {
    let mut a = AgentId::new();
    a.push_str(s).expect("short id");
    a
}

/// Agent ma-a on 10.1.0.0/24 with peers ma-b and ma-c; small tables.
pub fn agent_config() -> AgentConfig {
    agent_config_with(&[0, 1])
}

/// The same with the harness's peers `peers` (indices into `PEER_IDS`),
/// in that order.
pub fn agent_config_with(peers: &[usize]) -> AgentConfig {
    let mut c = AgentConfig::new(id(AGENT_ID), ENDPOINT);
    c.lan_prefixes = vec![lan(0)];
    c.advert_interval_ms = 1000;
    c.binding_lifetime_s = 60;
    c.credential_lifetime_s = 120;
    c.max_bindings = 6;
    c.max_per_peer = 4;
    c.max_per_node = 3;
    c.max_credentials = 5;
    c.max_pending = 4;
    c.max_pending_per_source = 2;
    c.verify_per_source = Rate { per_s: 4, burst: 8 };
    c.verify_total = Rate {
        per_s: 16,
        burst: 24,
    };
    c.retransmit_initial_ms = 100;
    c.retransmit_tries = 3;
    for &i in peers {
        c.peers.push(PeerConfig {
            id: id(PEER_IDS[i]),
            endpoint: PEER_ENDPOINTS[i],
            port: PORT,
            prefixes: vec![lan(i + 1)],
            key: PEER_KEYS[i],
        });
    }
    c
}

pub fn node_config() -> NodeConfig {
    NodeConfig {
        port: PORT,
        grace_ms: 2_000,
        max_bindings: 3,
        retransmit_initial_ms: 100,
        retransmit_tries: 3,
        solicit_interval_ms: 1_000,
        early_registration: true,
    }
}

pub fn now(ms: u64) -> Now {
    Now { ms }
}

/// `body` (a state file without its checksum) with the checksum that
/// version 2 files end in: the first 8 bytes of the SHA-256 of the rest.
pub fn with_checksum(body: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut v = body.to_vec();
    v.extend_from_slice(&Sha256::digest(body)[..sims_proto::persist::CHECKSUM_LEN]);
    v
}

/// Time steps: mostly the protocol's own intervals, sometimes anything.
pub fn time_step(
    u: &mut libfuzzer_sys::arbitrary::Unstructured,
) -> libfuzzer_sys::arbitrary::Result<u64> {
    const STEPS: [u64; 10] = [0, 1, 20, 100, 350, 1_000, 5_000, 30_001, 60_000, 200_000];
    Ok(if u.ratio(7, 8)? {
        *u.choose(&STEPS)?
    } else {
        u64::from(u.arbitrary::<u32>()?)
    })
}

/// The session key of the node with Ed25519 key pair `node` and the
/// agent run whose X25519 key is `agent_dh` (what seals the node's
/// registrations and releases, and boxes its credential keys), from a
/// cache: the X25519 agreement is most of what a harness would spend, and
/// the same few nodes meet the same agent run step after step.
/// `None` if `agent_dh` is not a usable key.
pub fn node_session(node: &ed25519_compact::KeyPair, agent_dh: &[u8; 32]) -> Option<[u8; 32]> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    /// (node key, agent key) → session.
    type Sessions = HashMap<([u8; 32], [u8; 32]), Option<[u8; 32]>>;
    thread_local! {
        static CACHE: RefCell<Sessions> = RefCell::new(HashMap::new());
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 1 << 12 {
            c.clear();
        }
        *c.entry((*node.pk, *agent_dh))
            .or_insert_with(|| sims_proto::msg::node_session(&node.sk, &node.pk, agent_dh))
    })
}
