//! Message bodies (postcard over serde) and their encoding behind the wire
//! header. Peer messages are wrapped in an [`Authed`] envelope and tagged
//! with HMAC-SHA256 under the roaming agreement's key.

use core::net::Ipv4Addr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::wire::{self, MsgType, Packet, WireError, HEADER_LEN, MAX_DATAGRAM, TAG_LEN};

/// Agent identifiers are short (they name tunnel devices `sims-<id>`).
pub type AgentId = heapless::String<16>;
/// A provider name, for display.
pub type Provider = heapless::String<32>;
/// A node's identity: its Ed25519 public key.
pub type NodeKey = [u8; 32];
/// A return-routability cookie: the agent sends it to an address, and only
/// a host that receives that address's packets can present it back.
pub type Cookie = [u8; 16];
/// The tag that ends an agent's reply to a node (RegistrationReply,
/// ReleaseReply): the first 16 bytes of HMAC-SHA256 under the session key
/// over the datagram before it.
pub type ReplyMac = [u8; 16];
/// Most old bindings one registration carries.
pub const MAX_OLD_BINDINGS: usize = 8;

/// An encoded datagram, ready to send.
pub type Datagram = heapless::Vec<u8, MAX_DATAGRAM>;

/// A node's proof that it holds a credential: HMAC-SHA256 under the
/// credential's key (which only the node and the issuer know) over a
/// [`ProofInput`]; see [`prove`].
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Proof(pub [u8; 32]);

/// Result codes carried in replies.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    /// The issuing agent is not a roaming peer of this agent.
    NotPeer = 1,
    /// The proof does not verify under the credential's key.
    BadProof = 2,
    /// The proof's sequence number was already used.
    Replay = 3,
    /// Another host holds the address on the old LAN now.
    AddressInUse = 4,
    /// A table or a per-peer / per-node limit is full.
    NoCapacity = 5,
    /// The issuer knows no such credential (expired, or never issued).
    UnknownCredential = 6,
    /// The peer did not answer.
    Timeout = 7,
    /// Malformed or inconsistent request.
    BadRequest = 8,
    /// The cookie is missing, stale or for another address or key: the
    /// node solicits again for a fresh one.
    BadCookie = 9,
    /// The agent could not install the binding (a kernel change failed):
    /// the node keeps its address and tries again.
    Failed = 10,
}

/// A credential: agent `issuer` gave address `addr` to the node whose key
/// it recorded under `serial`. It is a name for the issuer's record, not
/// a secret; the secret is the credential's key, which the issuer draws at
/// random and sends the node boxed under their session (§5.2), and which
/// proves the node's moves.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Credential {
    pub addr: [u8; 4],
    pub issuer: AgentId,
    /// Random, so nobody can predict the credential an agent will issue.
    pub serial: u64,
}

impl Credential {
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
}

/// What a proof covers: which credential, for which use, towards which
/// agent and current address, with a sequence number that never repeats.
/// Binding the target agent and address means a captured proof cannot be
/// replayed to redirect the address elsewhere; the sequence number means it
/// cannot be replayed at all.
#[derive(Serialize, Clone, PartialEq, Eq, Debug)]
pub struct ProofInput<'a> {
    pub context: [u8; 8],
    pub domain: ProofDomain,
    pub cred: &'a Credential,
    pub agent: &'a str,
    pub node_addr: [u8; 4],
    pub seq: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProofDomain {
    Redirect,
}

pub const PROOF_CONTEXT: [u8; 8] = *b"SIMSprf3";

impl<'a> ProofInput<'a> {
    /// What a node proves (and its issuer checks) for `cred`, towards `agent`,
    /// from the node's current address, with sequence number `seq`.
    pub fn new(
        domain: ProofDomain,
        cred: &'a Credential,
        agent: &'a str,
        node_addr: [u8; 4],
        seq: u64,
    ) -> Self {
        ProofInput {
            context: PROOF_CONTEXT,
            domain,
            cred,
            agent,
            node_addr,
            seq,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Advertisement {
    pub agent: AgentId,
    pub provider: Provider,
    pub endpoint: [u8; 4],
    /// The agent's X25519 public key of this run: with the node's key it
    /// gives the secret that authenticates the agent's replies (§5.4).
    pub dh: [u8; 32],
    /// Random per run of the agent: a node that sees a new one registers
    /// again.
    pub instance: u64,
    pub seq: u32,
    pub lifetime_s: u16,
    /// Only in the unicast answer to a solicitation.
    pub solicited: Option<Solicited>,
}

/// What the answer to a solicitation adds: the solicitation's nonce (so
/// the node knows the answer is to it) and a cookie for the solicitor's
/// address and key.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Solicited {
    pub nonce: u64,
    pub cookie: Cookie,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Solicitation {
    /// Random per solicitation.
    pub nonce: u64,
    /// The key the cookie in the answer is for.
    pub node: NodeKey,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct OldBinding {
    pub cred: Credential,
    pub proof: Proof,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Registration {
    pub req_id: u64,
    pub node: NodeKey,
    pub addr: [u8; 4],
    pub mac: [u8; 6],
    pub seq: u64,
    /// From the agent's last answer to this node at `addr`.
    pub cookie: Cookie,
    pub bindings: heapless::Vec<OldBinding, MAX_OLD_BINDINGS>,
    /// [`seal_reply`]'s tag under the node's session with the agent: the
    /// registration is the key's holder's (§5.4).
    pub tag: ReplyMac,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct BindingResult {
    pub addr: [u8; 4],
    pub status: Status,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct RegistrationReply {
    pub req_id: u64,
    pub status: Status,
    pub cred: Option<Credential>,
    pub lifetime_s: u16,
    pub results: heapless::Vec<BindingResult, MAX_OLD_BINDINGS>,
    /// A fresh cookie for the next registration or release.
    pub cookie: Option<Cookie>,
    /// With `cred`: the credential's key, boxed under the session
    /// ([`box_cred_key`]); zeros without.
    pub cred_key: [u8; 32],
    /// [`seal_reply`]'s tag under the node's session with the agent (zero
    /// in the refusals sent before the source was checked).
    pub mac: ReplyMac,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Release {
    pub req_id: u64,
    pub node: NodeKey,
    pub cred: Credential,
    pub node_addr: [u8; 4],
    pub seq: u64,
    pub cookie: Cookie,
    /// Sealed like a registration: the release is the node's.
    pub tag: ReplyMac,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReleaseReply {
    pub req_id: u64,
    pub addr: [u8; 4],
    pub status: Status,
    pub mac: ReplyMac,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct TunnelRequest {
    pub req_id: u64,
    pub node: NodeKey,
    pub cred: Credential,
    pub node_addr: [u8; 4],
    pub seq: u64,
    pub proof: Proof,
    pub lifetime_s: u16,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct TunnelReply {
    pub req_id: u64,
    pub addr: [u8; 4],
    pub status: Status,
    pub lifetime_s: u16,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct TunnelRelease {
    pub req_id: u64,
    pub addr: [u8; 4],
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct TunnelReleaseReply {
    pub req_id: u64,
    pub addr: [u8; 4],
    pub status: Status,
}

/// A peer's answer to a request it could not yet tell from a replay (it
/// came from a run of the sender it has not heard from): send it again
/// with `echo` = `nonce`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerChallenge {
    pub req_id: u64,
    pub nonce: u64,
}

/// "This is my run, from my address": sent to every peer when an agent
/// starts and when its WAN address changes, so that peers learn both
/// before a handover needs them (a new address is challenged there).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerHello {
    pub req_id: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerHelloReply {
    pub req_id: u64,
}

/// A peer's answer to a request that came from an address it does not
/// know us at: sent to that address, naming it. The receiver answers
/// (its request again, `echo` = `nonce`) only if `addr` is its own.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerMoveChallenge {
    pub req_id: u64,
    pub nonce: u64,
    pub addr: [u8; 4],
}

/// The envelope of every agent-to-agent message: who sent it, in which run
/// of its daemon (`instance`, random per start), a per-run sequence
/// number, and the receiver's latest challenge nonce (`echo`, 0 if none).
/// No wall clock: freshness comes from the receiver's own nonce (§6).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Authed<T> {
    pub sender: AgentId,
    pub instance: u64,
    pub seq: u64,
    pub echo: u64,
    pub msg: T,
}

/// A decoded message. Short-lived, so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    Advertisement(Advertisement),
    Solicitation(Solicitation),
    Registration(Registration),
    RegistrationReply(RegistrationReply),
    Release(Release),
    ReleaseReply(ReleaseReply),
    TunnelRequest(Authed<TunnelRequest>),
    TunnelReply(Authed<TunnelReply>),
    TunnelRelease(Authed<TunnelRelease>),
    TunnelReleaseReply(Authed<TunnelReleaseReply>),
    PeerChallenge(Authed<PeerChallenge>),
    PeerHello(Authed<PeerHello>),
    PeerHelloReply(Authed<PeerHelloReply>),
    PeerMoveChallenge(Authed<PeerMoveChallenge>),
}

impl Message {
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Advertisement(_) => MsgType::Advertisement,
            Message::Solicitation(_) => MsgType::Solicitation,
            Message::Registration(_) => MsgType::Registration,
            Message::RegistrationReply(_) => MsgType::RegistrationReply,
            Message::Release(_) => MsgType::Release,
            Message::ReleaseReply(_) => MsgType::ReleaseReply,
            Message::TunnelRequest(_) => MsgType::TunnelRequest,
            Message::TunnelReply(_) => MsgType::TunnelReply,
            Message::TunnelRelease(_) => MsgType::TunnelRelease,
            Message::TunnelReleaseReply(_) => MsgType::TunnelReleaseReply,
            Message::PeerChallenge(_) => MsgType::PeerChallenge,
            Message::PeerHello(_) => MsgType::PeerHello,
            Message::PeerHelloReply(_) => MsgType::PeerHelloReply,
            Message::PeerMoveChallenge(_) => MsgType::PeerMoveChallenge,
        }
    }

    /// The sender named in a peer envelope.
    pub fn peer_sender(&self) -> Option<&AgentId> {
        match self {
            Message::TunnelRequest(a) => Some(&a.sender),
            Message::TunnelReply(a) => Some(&a.sender),
            Message::TunnelRelease(a) => Some(&a.sender),
            Message::TunnelReleaseReply(a) => Some(&a.sender),
            Message::PeerChallenge(a) => Some(&a.sender),
            Message::PeerHello(a) => Some(&a.sender),
            Message::PeerHelloReply(a) => Some(&a.sender),
            Message::PeerMoveChallenge(a) => Some(&a.sender),
            _ => None,
        }
    }
}

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Wire(WireError),
    /// The body is not a valid postcard encoding of the type's message.
    Body,
}

/// Decode header and body. The tag of a peer message is NOT checked here:
/// the caller looks up the key for the named sender and calls
/// [`verify_tag`].
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let p = Packet::new_checked(buf).map_err(DecodeError::Wire)?;
    let body = p.body();
    let ty = p
        .msg_type()
        .ok_or(DecodeError::Wire(WireError::UnknownType(0)))?;
    fn de<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, DecodeError> {
        match postcard::take_from_bytes::<T>(b) {
            // Trailing bytes inside the body are malformed too.
            Ok((v, [])) => Ok(v),
            _ => Err(DecodeError::Body),
        }
    }
    Ok(match ty {
        MsgType::Advertisement => Message::Advertisement(de(body)?),
        MsgType::Solicitation => Message::Solicitation(de(body)?),
        MsgType::Registration => Message::Registration(de(body)?),
        MsgType::RegistrationReply => Message::RegistrationReply(de(body)?),
        MsgType::Release => Message::Release(de(body)?),
        MsgType::ReleaseReply => Message::ReleaseReply(de(body)?),
        MsgType::TunnelRequest => Message::TunnelRequest(de(body)?),
        MsgType::TunnelReply => Message::TunnelReply(de(body)?),
        MsgType::TunnelRelease => Message::TunnelRelease(de(body)?),
        MsgType::TunnelReleaseReply => Message::TunnelReleaseReply(de(body)?),
        MsgType::PeerChallenge => Message::PeerChallenge(de(body)?),
        MsgType::PeerHello => Message::PeerHello(de(body)?),
        MsgType::PeerHelloReply => Message::PeerHelloReply(de(body)?),
        MsgType::PeerMoveChallenge => Message::PeerMoveChallenge(de(body)?),
    })
}

type HmacSha256 = Hmac<Sha256>;

fn tag_of(key: &[u8; 32], data: &[u8]) -> [u8; TAG_LEN] {
    crate::prf::hmac(key, &[data])
}

/// Check a peer datagram's tag under `key` (constant time).
pub fn verify_tag(buf: &[u8], key: &[u8; 32]) -> bool {
    let p = Packet::new_unchecked(buf);
    let tag = p.tag();
    if tag.len() != TAG_LEN {
        return false;
    }
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return false,
    };
    mac.update(p.authenticated_part());
    mac.verify_slice(tag).is_ok()
}

/// Encode a message. Peer messages need `key` (their tag); node messages
/// ignore it. Returns `None` if it does not fit in a datagram.
pub fn encode(msg: &Message, key: Option<&[u8; 32]>) -> Option<Datagram> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let body = &mut buf[HEADER_LEN..MAX_DATAGRAM - TAG_LEN];
    let used = match msg {
        Message::Advertisement(m) => postcard::to_slice(m, body),
        Message::Solicitation(m) => postcard::to_slice(m, body),
        Message::Registration(m) => postcard::to_slice(m, body),
        Message::RegistrationReply(m) => postcard::to_slice(m, body),
        Message::Release(m) => postcard::to_slice(m, body),
        Message::ReleaseReply(m) => postcard::to_slice(m, body),
        Message::TunnelRequest(m) => postcard::to_slice(m, body),
        Message::TunnelReply(m) => postcard::to_slice(m, body),
        Message::TunnelRelease(m) => postcard::to_slice(m, body),
        Message::TunnelReleaseReply(m) => postcard::to_slice(m, body),
        Message::PeerChallenge(m) => postcard::to_slice(m, body),
        Message::PeerHello(m) => postcard::to_slice(m, body),
        Message::PeerHelloReply(m) => postcard::to_slice(m, body),
        Message::PeerMoveChallenge(m) => postcard::to_slice(m, body),
    }
    .ok()?
    .len();
    let ty = msg.msg_type();
    wire::emit_header(&mut buf, ty, used)?;
    let mut len = HEADER_LEN + used;
    if ty.is_peer() {
        let tag = tag_of(key?, &buf[..len]);
        buf[len..len + TAG_LEN].copy_from_slice(&tag);
        len += TAG_LEN;
    }
    heapless::Vec::from_slice(&buf[..len]).ok()
}

/// The secret a node and an agent share for this run of the agent, from
/// X25519 between the agent's run key and the node's identity key (its
/// Ed25519 key, converted): HMAC-SHA256(shared, "SIMS session" ‖ agent dh
/// public key ‖ node key). Nobody who only sees the exchange knows it.
pub fn session_key(shared: &[u8; 32], agent_dh: &[u8; 32], node: &NodeKey) -> [u8; 32] {
    crate::prf::hmac(shared, &[b"SIMS session", agent_dh, node])
}

/// The agent's side: the session key with `node`, from its run's X25519
/// secret. None if the node key is not a valid point.
pub fn agent_session(dh_sk: &[u8; 32], dh_pk: &[u8; 32], node: &NodeKey) -> Option<[u8; 32]> {
    use ed25519_compact::x25519;
    let ed = ed25519_compact::PublicKey::new(*node);
    let node_x = x25519::PublicKey::from_ed25519(&ed).ok()?;
    let shared = node_x.dh(&x25519::SecretKey::new(*dh_sk)).ok()?;
    Some(session_key(&shared, dh_pk, node))
}

/// The node's side, from its Ed25519 secret key and the agent's
/// advertised `dh` key.
pub fn node_session(
    sk: &ed25519_compact::SecretKey,
    node: &NodeKey,
    agent_dh: &[u8; 32],
) -> Option<[u8; 32]> {
    use ed25519_compact::x25519;
    let x_sk = x25519::SecretKey::from_ed25519(sk).ok()?;
    let shared = x25519::PublicKey::new(*agent_dh).dh(&x_sk).ok()?;
    Some(session_key(&shared, agent_dh, node))
}

/// An agent's X25519 key pair for one run, from 32 random bytes.
pub fn agent_dh_keys(random: [u8; 32]) -> Option<([u8; 32], [u8; 32])> {
    use ed25519_compact::x25519;
    let sk = x25519::SecretKey::new(random).clamped();
    let pk = sk.recover_public_key().ok()?;
    Some((*sk, *pk))
}

fn reply_mac(key: &[u8; 32], covered: &[u8]) -> ReplyMac {
    let h = crate::prf::hmac(key, &[covered]);
    let mut m = [0u8; 16];
    m.copy_from_slice(&h[..16]);
    m
}

/// Writes the tag of a sealed datagram (a node's registration or release,
/// an agent's reply to it): its last 16 bytes, encoded as zeros.
pub fn seal_reply(d: &mut Datagram, key: &[u8; 32]) {
    let Some(split) = d.len().checked_sub(16) else {
        return;
    };
    let m = reply_mac(key, &d[..split]);
    d[split..].copy_from_slice(&m);
}

/// Whether a reply datagram's last 16 bytes are its tag under `key`
/// (constant time).
pub fn reply_authentic(d: &[u8], key: &[u8; 32]) -> bool {
    let Some(split) = d.len().checked_sub(16) else {
        return false;
    };
    crate::prf::ct_eq(&reply_mac(key, &d[..split]), &d[split..])
}

/// Encode a proof input canonically (postcard).
pub fn proof_bytes(input: &ProofInput) -> Option<heapless::Vec<u8, 128>> {
    let mut buf = [0u8; 128];
    let used = postcard::to_slice(input, &mut buf).ok()?.len();
    heapless::Vec::from_slice(&buf[..used]).ok()
}

/// A node's proof for `input` under its credential's key.
pub fn prove(cred_key: &[u8; 32], input: &ProofInput) -> Option<Proof> {
    let bytes = proof_bytes(input)?;
    Some(Proof(crate::prf::hmac(
        cred_key,
        &[b"SIMS proof", &bytes[..]],
    )))
}

/// The credential key as a reply carries it: XOR with a pad from the
/// session (so only the node it is for can read it) bound to the
/// credential. The same call unboxes it.
pub fn box_cred_key(session: &[u8; 32], cred: &Credential, key: &[u8; 32]) -> [u8; 32] {
    let pad = crate::prf::hmac(
        session,
        &[
            b"SIMS credential key",
            &cred.addr,
            &cred.serial.to_le_bytes(),
        ],
    );
    let mut out = [0u8; 32];
    for (o, (k, p)) in out.iter_mut().zip(key.iter().zip(pad.iter())) {
        *o = k ^ p;
    }
    out
}

/// A node's proof as a message carries it: the node's key, what the node
/// says it proved, and the proof. Every proof check in the agent goes
/// through [`NodeProof::verify`]; the issuer's further checks (its record
/// of the credential, sequence numbers) are `Agent::check_issued`.
#[derive(Clone, Debug)]
pub struct NodeProof<'a> {
    pub node: &'a NodeKey,
    pub input: ProofInput<'a>,
    pub proof: &'a Proof,
}

impl<'a> NodeProof<'a> {
    /// The proof of `ob` in registration `r`, towards agent `agent`.
    pub fn of_registration(r: &'a Registration, ob: &'a OldBinding, agent: &'a str) -> Self {
        NodeProof {
            node: &r.node,
            input: ProofInput::new(ProofDomain::Redirect, &ob.cred, agent, r.addr, r.seq),
            proof: &ob.proof,
        }
    }

    /// The node's proof a peer forwards in a tunnel request; the peer
    /// (`peer_id`) is the agent the node proved it for.
    pub fn of_tunnel_request(m: &'a TunnelRequest, peer_id: &'a str) -> Self {
        NodeProof {
            node: &m.node,
            input: ProofInput::new(ProofDomain::Redirect, &m.cred, peer_id, m.node_addr, m.seq),
            proof: &m.proof,
        }
    }

    /// Whether the proof is the input's under the credential's key
    /// (constant time).
    pub fn verify(&self, cred_key: &[u8; 32]) -> bool {
        prove(cred_key, &self.input).is_some_and(|p| crate::prf::ct_eq(&p.0, &self.proof.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AgentId {
        AgentId::from(s)
    }

    #[test]
    fn node_message_roundtrip() {
        let m = Message::Advertisement(Advertisement {
            agent: id("ma-a"),
            provider: Provider::from("alpha"),
            endpoint: [100, 64, 1, 2],
            dh: [4; 32],
            instance: 7,
            seq: 1,
            lifetime_s: 15,
            solicited: Some(Solicited {
                nonce: 9,
                cookie: [3; 16],
            }),
        });
        let d = encode(&m, None).unwrap();
        assert_eq!(&d[0..6], b"SIMS\x03\x01");
        assert_eq!(decode(&d).unwrap(), m);
    }

    #[test]
    fn peer_message_tagged() {
        let key = [7u8; 32];
        let m = Message::TunnelRelease(Authed {
            sender: id("ma-b"),
            instance: 1,
            seq: 2,
            echo: 3,
            msg: TunnelRelease {
                req_id: 4,
                addr: [10, 1, 0, 50],
            },
        });
        let mut d = encode(&m, Some(&key)).unwrap();
        assert!(verify_tag(&d, &key));
        assert!(!verify_tag(&d, &[8u8; 32]));
        assert_eq!(decode(&d).unwrap(), m);
        let n = d.len();
        d[n - 40] ^= 1;
        assert!(!verify_tag(&d, &key));
        assert!(encode(&m, None).is_none(), "peer messages need a key");
    }

    #[test]
    fn proof_and_key_box() {
        let key = [3; 32];
        let cred = Credential {
            addr: [10, 1, 0, 50],
            issuer: id("ma-a"),
            serial: 9,
        };
        let input = ProofInput {
            context: PROOF_CONTEXT,
            domain: ProofDomain::Redirect,
            cred: &cred,
            agent: "ma-b",
            node_addr: [10, 2, 0, 50],
            seq: 5,
        };
        let proof = prove(&key, &input).unwrap();
        let node = [1; 32];
        let check = |input: &ProofInput, k: &[u8; 32]| {
            NodeProof {
                node: &node,
                input: input.clone(),
                proof: &proof,
            }
            .verify(k)
        };
        assert!(check(&input, &key));
        assert!(!check(&input, &[4; 32]), "another credential's key");
        let other = ProofInput {
            agent: "ma-c",
            ..input.clone()
        };
        assert!(!check(&other, &key), "towards another agent");
        let later = ProofInput { seq: 6, ..input };
        assert!(!check(&later, &key), "another sequence number");
        // The box opens only under its session, for its credential.
        let boxed = box_cred_key(&[7; 32], &cred, &key);
        assert_ne!(boxed, key);
        assert_eq!(box_cred_key(&[7; 32], &cred, &boxed), key);
        assert_ne!(box_cred_key(&[8; 32], &cred, &boxed), key);
        let renewed = Credential {
            serial: 10,
            ..cred.clone()
        };
        assert_ne!(box_cred_key(&[7; 32], &renewed, &boxed), key);
    }

    #[test]
    fn trailing_body_bytes_rejected() {
        let m = Message::Solicitation(Solicitation {
            nonce: 1,
            node: [0; 32],
        });
        let d = encode(&m, None).unwrap();
        let mut longer = [0u8; 64];
        longer[..d.len()].copy_from_slice(&d);
        let n = d.len() + 1;
        longer[6..8].copy_from_slice(&((n - HEADER_LEN) as u16).to_be_bytes());
        assert_eq!(decode(&longer[..n]), Err(DecodeError::Body));
    }
}
