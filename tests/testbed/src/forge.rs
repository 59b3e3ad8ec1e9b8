//! The forging kit: what scenario s6b sends in place of the real node and
//! of a peer agent, to prove that simsd refuses what it must.
//!
//! It forges, with sims-proto's own encoders and Ed25519 keys of its own
//! choosing: node identities ([`keypair`]), Redirect proofs signed by any
//! key for any credential, agent, address and sequence ([`redirect_proof`]),
//! registrations carrying such proofs ([`registration`], sent and answered
//! with [`register`]) and the cookie a host gets for its own address
//! ([`cookie`]), and agent-to-agent TunnelRequests with any sender,
//! instance, envelope sequence, echo and key ([`tunnel_request`]). Forged
//! signatures, stolen credentials, replayed bytes, replayed or
//! unauthenticated envelopes are all built from these.
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
    decode, encode, sign_proof, Authed, Cookie, Credential, Message, OldBinding, ProofDomain,
    ProofInput, Registration, RegistrationReply, Sig, Solicitation, Status, TunnelRequest,
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

/// The cookie agent `x` gives key `node` at `addr`: what any host holding
/// `addr` gets by soliciting from it (the answer comes to `addr` only).
pub fn cookie(tb: &Testbed, x: Ma, addr: Ipv4Addr, node: &KeyPair) -> Result<Cookie> {
    let nonce = 0x5eed_0000_0000_0000 | u64::from(u32::from(addr));
    let m = Message::Solicitation(Solicitation {
        nonce,
        node: *node.pk,
    });
    let d = encode(&m, None).expect("solicitation fits").to_vec();
    tb.mn()
        .udp_request(
            SocketAddrV4::new(addr, SIMS_PORT),
            SocketAddrV4::new(x.lan_gw(), SIMS_PORT),
            &d,
            Duration::from_secs(1),
            Duration::from_secs(10),
            |d, _| match decode(d) {
                Ok(Message::Advertisement(a)) => {
                    a.solicited.filter(|s| s.nonce == nonce).map(|s| s.cookie)
                }
                _ => None,
            },
        )
        .map_err(|e| format!("solicitation to {}: {e}", x.id()))?
        .ok_or_else(|| format!("{} gave no cookie to {addr}", x.id()))
}

/// A Registration of node key `node` (with the node's real MAC) at `addr`.
pub fn registration(
    req_id: u64,
    node: &KeyPair,
    addr: Ipv4Addr,
    seq: u64,
    cookie: Cookie,
    bindings: Vec<OldBinding>,
) -> Vec<u8> {
    let m = Message::Registration(Registration {
        req_id,
        node: *node.pk,
        addr: addr.octets(),
        mac: mn_mac(),
        seq,
        cookie,
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
    req_id: u64,
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
    instance: u64,
    seq: u64,
    echo: u64,
    msg: TunnelRequest,
) -> Vec<u8> {
    let m = Message::TunnelRequest(Authed {
        sender: sender.into(),
        instance,
        seq,
        echo,
        msg,
    });
    encode(&m, Some(key)).expect("tunnel request fits").to_vec()
}
