//! The forging kit: what scenario s6b sends in place of the real node and
//! of a peer agent, to prove that simsd refuses what it must.
//!
//! It forges, with sims-proto's own encoders and Ed25519 keys of its own
//! choosing: node identities ([`keypair`]), Redirect proofs signed by any
//! key for any credential, agent, address and sequence ([`redirect_proof`]),
//! registrations carrying such proofs ([`registration`], sent and answered
//! with [`register`]), and agent-to-agent TunnelRequests with any sender,
//! boot, envelope sequence, time and key ([`tunnel_request`]). Forged
//! signatures, stolen credentials, replayed bytes, stale or unauthenticated
//! envelopes are all built from these.
//!
//! Why it exists: the daemons never produce such datagrams, so the only way
//! to test that an agent refuses them (and leaves no state behind) is to
//! craft them; keeping the kit here, apart from the scenarios, shows what
//! the tests can forge and keeps the scenario file about what must happen.
//! It only talks to the testbed's own namespaces.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ed25519_compact::{KeyPair, Seed};
use sims_proto::msg::{
    decode, encode, sign_proof, Authed, Credential, Message, OldBinding, ProofDomain, ProofInput,
    Registration, RegistrationReply, Sig, Status, TunnelRequest,
};

use crate::product::SIMS_PORT;
use crate::sys::Result;
use crate::testbed::{Ma, Testbed, MN_MAC};

/// A node identity from a one-byte seed (`[seed; 32]`): the same key every run.
pub fn keypair(seed: u8) -> KeyPair {
    KeyPair::from_seed(Seed::new([seed; 32]))
}

/// How agents show a node key in their status: its first 8 bytes in hex.
pub fn key_in_status(k: &KeyPair) -> String {
    k.pk[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn mn_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(MN_MAC.split(':')) {
        *m = u8::from_str_radix(h, 16).expect("MN_MAC is hex");
    }
    mac
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A Redirect proof (§5) of `cred` for `agent`, node address and seq,
/// signed by `signer`.
pub fn redirect_proof(
    signer: &KeyPair,
    cred: &Credential,
    agent: &str,
    node_addr: Ipv4Addr,
    seq: u64,
) -> Sig {
    let input = ProofInput::new(ProofDomain::Redirect, cred, agent, node_addr.octets(), seq);
    sign_proof(&signer.sk, &input).expect("proof input fits")
}

/// A Registration of node key `node` (with the node's real MAC) at `addr`.
pub fn registration(
    req_id: u32,
    node: &KeyPair,
    addr: Ipv4Addr,
    seq: u64,
    bindings: Vec<OldBinding>,
) -> Vec<u8> {
    let m = Message::Registration(Registration {
        req_id,
        node: *node.pk,
        addr: addr.octets(),
        mac: mn_mac(),
        seq,
        bindings: bindings.into_iter().collect(),
    });
    encode(&m, None).expect("registration fits").to_vec()
}

/// Sends a registration datagram from the node's namespace, from
/// `addr`:4434 as sims-node does, to agent `x`'s LAN address, and returns
/// the agent's answer (retransmitting every second like a node, for at
/// most `timeout`).
pub fn register(
    tb: &Testbed,
    x: Ma,
    addr: Ipv4Addr,
    req_id: u32,
    datagram: &[u8],
    timeout: Duration,
) -> Result<RegistrationReply> {
    tb.mn()
        .udp_request(
            SocketAddrV4::new(addr, SIMS_PORT),
            SocketAddrV4::new(x.lan_gw(), SIMS_PORT),
            datagram,
            Duration::from_secs(1),
            timeout,
            |d, _| match decode(d) {
                Ok(Message::RegistrationReply(r)) if r.req_id == req_id => Some(r),
                _ => None,
            },
        )
        .map_err(|e| format!("registration {req_id} to {}: {e}", x.id()))?
        .ok_or_else(|| format!("{} did not answer registration {req_id}", x.id()))
}

/// The status of `addr` in a reply's results.
pub fn result_for(r: &RegistrationReply, addr: Ipv4Addr) -> Option<Status> {
    r.results
        .iter()
        .find(|b| b.addr == addr.octets())
        .map(|b| b.status)
}

/// A TunnelRequest as `sender` would send it, tagged with `key`.
pub fn tunnel_request(
    key: &[u8; 32],
    sender: &str,
    boot: u32,
    seq: u64,
    unix_time: u64,
    msg: TunnelRequest,
) -> Vec<u8> {
    let m = Message::TunnelRequest(Authed {
        sender: sender.into(),
        boot,
        seq,
        unix_time,
        msg,
    });
    encode(&m, Some(key)).expect("tunnel request fits").to_vec()
}
