//! The forging kit: what scenario s6b sends in place of the real node and
//! of a peer agent, to prove that simsd refuses what it must.
//!
//! It forges, with sims-proto's own encoders and Ed25519 keys of its own
//! choosing: node identities ([`keypair`]), Redirect proofs by any key for
//! any credential, agent, address and sequence ([`redirect_proof`]: valid
//! only for a credential that key was given, with its key, in a reply the
//! kit received),
//! registrations carrying such proofs with any MAC ([`registration`],
//! [`registration_as`]; sent and answered with [`register`] and
//! [`register_from`]), solicitations ([`solicitation`]) and the cookie a
//! host gets for its own address ([`cookie`], [`cookie_in`]), credentials
//! an issuer never issued ([`credential`]), agent-to-agent TunnelRequests
//! with any sender, instance, envelope sequence, echo and key
//! ([`tunnel_request`]), and a registration flood at the rate a socket
//! takes it ([`flood_claims`], [`flood_registrations`]). Registrations are
//! sealed, as a node seals them, under the session of the key's holder
//! with the agent they go to, when the kit holds that key's secret (it
//! made it: [`keypair`]); in another's name they go unsealed, which is
//! all a forger can do. Forged proofs, stolen
//! credentials, replayed bytes, replayed or unauthenticated envelopes,
//! spoofed sources (sent with `Netns::send_udp_spoofed`) are all built
//! from these.
//!
//! Why it exists: the daemons never produce such datagrams, so the only way
//! to test that an agent refuses them (and leaves no state behind) is to
//! craft them; keeping the kit here, apart from the scenarios, shows what
//! the tests can forge and keeps the scenario file about what must happen.
//! It only talks to the testbed's own namespaces.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ed25519_compact::{KeyPair, Seed};
use sims_proto::msg::{
    self, decode, encode, Authed, Cookie, Credential, Message, NodeKey, OldBinding, Proof,
    ProofDomain, ProofInput, Registration, RegistrationReply, Solicitation, Status, TunnelRequest,
};

use crate::garbage::Prng;
use crate::netns::Netns;
use crate::product::SIMS_PORT;
use crate::sys::Result;
use crate::testbed::{Ma, Testbed, MN_MAC};

/// What the kit knows, as the hosts it plays would: the secrets of the
/// keys it made, each agent's run key (from its advertisements), and the
/// credential keys its keys were given (from the agents' replies).
struct Known {
    seeds: BTreeMap<NodeKey, u8>,
    agent_dh: BTreeMap<Ipv4Addr, [u8; 32]>,
    cred_keys: BTreeMap<(NodeKey, [u8; 4], u64), [u8; 32]>,
    /// Sessions worked out, by (node key, agent run key): a flood seals
    /// every datagram, and X25519 in a debug build takes milliseconds.
    sessions: BTreeMap<(NodeKey, [u8; 32]), [u8; 32]>,
}

static KNOWN: Mutex<Known> = Mutex::new(Known {
    seeds: BTreeMap::new(),
    agent_dh: BTreeMap::new(),
    cred_keys: BTreeMap::new(),
    sessions: BTreeMap::new(),
});

fn known() -> std::sync::MutexGuard<'static, Known> {
    KNOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A node identity from a one-byte seed (`[seed; 32]`): the same key every run.
pub fn keypair(seed: u8) -> KeyPair {
    let k = KeyPair::from_seed(Seed::new([seed; 32]));
    known().seeds.insert(*k.pk, seed);
    k
}

/// The session of `node`'s holder with the agent whose LAN address is
/// `agent` (its run key as last advertised to the kit), if the kit holds
/// that key's secret.
fn session(node: &NodeKey, agent: Ipv4Addr) -> Option<[u8; 32]> {
    let (seed, dh) = {
        let k = known();
        (*k.seeds.get(node)?, *k.agent_dh.get(&agent)?)
    };
    if let Some(s) = known().sessions.get(&(*node, dh)) {
        return Some(*s);
    }
    let kp = KeyPair::from_seed(Seed::new([seed; 32]));
    let s = msg::node_session(&kp.sk, &kp.pk, &dh)?;
    known().sessions.insert((*node, dh), s);
    Some(s)
}

/// `datagram` (a registration) sealed as its node would seal it for the
/// agent at `agent`, when the kit can; as it is otherwise.
pub fn sealed_for(datagram: &[u8], agent: Ipv4Addr) -> Vec<u8> {
    let Ok(Message::Registration(r)) = decode(datagram) else {
        return datagram.to_vec();
    };
    let Some(k) = session(&r.node, agent) else {
        return datagram.to_vec();
    };
    let mut d = match msg::Datagram::from_slice(datagram) {
        Ok(d) => d,
        Err(()) => return datagram.to_vec(),
    };
    msg::seal_reply(&mut d, &k);
    d.to_vec()
}

/// Keeps the credential key of a reply to `node` from `agent`.
fn keep_cred_key(node: &NodeKey, agent: Ipv4Addr, r: &RegistrationReply) {
    let (Some(cred), Some(k)) = (&r.cred, session(node, agent)) else {
        return;
    };
    let key = msg::box_cred_key(&k, cred, &r.cred_key);
    known()
        .cred_keys
        .insert((*node, cred.addr, cred.serial), key);
}

/// How agents show a node key in their status: its first 8 bytes in hex.
pub fn key_in_status(k: &KeyPair) -> String {
    k.pk[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `02:00:00:00:00:50` as bytes.
pub fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut b = [0u8; 6];
    for (m, h) in b.iter_mut().zip(mac.split(':')) {
        *m = u8::from_str_radix(h, 16).expect("a MAC in hex");
    }
    b
}

pub fn mn_mac() -> [u8; 6] {
    mac_bytes(MN_MAC)
}

/// A credential as `issuer` would issue it for `addr`, with a serial of
/// the forger's choosing (a guess: real serials are random).
pub fn credential(addr: Ipv4Addr, issuer: &str, serial: u64) -> Credential {
    Credential {
        addr: addr.octets(),
        issuer: issuer.into(),
        serial,
    }
}

/// A Solicitation naming `node`.
pub fn solicitation(nonce: u64, node: &KeyPair) -> Vec<u8> {
    let m = Message::Solicitation(Solicitation {
        nonce,
        node: *node.pk,
    });
    encode(&m, None).expect("solicitation fits").to_vec()
}

/// A Redirect proof (§5) of `cred` for `agent`, node address and seq, by
/// `signer`: under the credential's key if `signer` was given it (in a
/// reply the kit received), else under a key of its own (what a thief of
/// the credential's name can make).
pub fn redirect_proof(
    signer: &KeyPair,
    cred: &Credential,
    agent: &str,
    node_addr: Ipv4Addr,
    seq: u64,
) -> Proof {
    let input = ProofInput::new(ProofDomain::Redirect, cred, agent, node_addr.octets(), seq);
    let given = known()
        .cred_keys
        .get(&(*signer.pk, cred.addr, cred.serial))
        .copied();
    let key = given.unwrap_or(*signer.pk);
    msg::prove(&key, &input).expect("proof input fits")
}

/// The cookie agent `x` gives key `node` at `addr`: what any host holding
/// `addr` gets by soliciting from it (the answer comes to `addr` only).
pub fn cookie(tb: &Testbed, x: Ma, addr: Ipv4Addr, node: &KeyPair) -> Result<Cookie> {
    cookie_in(&tb.mn(), x, addr, node)
}

/// [`cookie`], soliciting from namespace `ns` (which holds `addr`).
pub fn cookie_in(ns: &Netns, x: Ma, addr: Ipv4Addr, node: &KeyPair) -> Result<Cookie> {
    let nonce = 0x5eed_0000_0000_0000 | u64::from(u32::from(addr));
    let d = solicitation(nonce, node);
    ns.udp_request(
        SocketAddrV4::new(addr, SIMS_PORT),
        SocketAddrV4::new(x.lan_gw(), SIMS_PORT),
        &d,
        Duration::from_secs(1),
        Duration::from_secs(10),
        |d, _| match decode(d) {
            Ok(Message::Advertisement(a)) => a.solicited.filter(|s| s.nonce == nonce).map(|s| {
                known().agent_dh.insert(x.lan_gw(), a.dh);
                s.cookie
            }),
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
    registration_as(req_id, node, addr, mn_mac(), seq, cookie, bindings)
}

/// A Registration of node key `node` at `addr` claiming link-layer
/// address `mac`.
pub fn registration_as(
    req_id: u64,
    node: &KeyPair,
    addr: Ipv4Addr,
    mac: [u8; 6],
    seq: u64,
    cookie: Cookie,
    bindings: Vec<OldBinding>,
) -> Vec<u8> {
    let m = Message::Registration(Registration {
        req_id,
        node: *node.pk,
        addr: addr.octets(),
        mac,
        seq,
        cookie,
        bindings: bindings.into_iter().collect(),
        tag: [0; 16],
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
    register_from(&tb.mn(), x, addr, req_id, datagram, timeout)
}

/// [`register`], sending `datagram` as it is (not sealed by the kit).
pub fn register_unsealed(
    tb: &Testbed,
    x: Ma,
    addr: Ipv4Addr,
    req_id: u64,
    datagram: &[u8],
) -> Result<RegistrationReply> {
    exchange(&tb.mn(), x, addr, req_id, datagram, Duration::from_secs(10))
}

/// [`register`] from namespace `ns` (which holds `addr`).
pub fn register_from(
    ns: &Netns,
    x: Ma,
    addr: Ipv4Addr,
    req_id: u64,
    datagram: &[u8],
    timeout: Duration,
) -> Result<RegistrationReply> {
    let datagram = sealed_for(datagram, x.lan_gw());
    let r = exchange(ns, x, addr, req_id, &datagram, timeout)?;
    if let Ok(Message::Registration(reg)) = decode(&datagram) {
        keep_cred_key(&reg.node, x.lan_gw(), &r);
    }
    Ok(r)
}

/// Sends `datagram` (a registration) from `addr` in `ns` to agent `x` and
/// returns its answer.
fn exchange(
    ns: &Netns,
    x: Ma,
    addr: Ipv4Addr,
    req_id: u64,
    datagram: &[u8],
    timeout: Duration,
) -> Result<RegistrationReply> {
    ns.udp_request(
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

/// What a flood did: datagrams sent, sends that failed, and the agent's
/// answers that came back while it ran, by `<reply status>[/<claim's
/// status>]`.
#[derive(Clone, Debug, Default)]
pub struct Flood {
    pub sent: u64,
    pub send_errors: u64,
    pub replies: u64,
    pub by_status: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

/// The claims of a flood (see [`flood_registrations`]): for each address
/// of `addrs`, a credential of `issuer`'s that was never issued (random
/// serial) and a Redirect proof of it by `node` (under a key of its own:
/// nobody can make a valid one), for agent `agent` and the flooder's
/// address `from`, each with its own sequence number. Made once, before a
/// flood.
pub fn flood_claims(
    node: &KeyPair,
    agent: &str,
    issuer: &str,
    from: Ipv4Addr,
    addrs: &[Ipv4Addr],
) -> Vec<(u64, OldBinding)> {
    let mut rng = Prng::new(random_seed());
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let seq = i as u64 + 1;
            let cred = credential(*a, issuer, rng.next_u64());
            let proof = redirect_proof(node, &cred, agent, from, seq);
            (seq, OldBinding { cred, proof })
        })
        .collect()
}

/// Floods agent `to` with registrations from `from` (the flooder's own
/// address, holding `cookie` for `node` there) as fast as the socket takes
/// them (`rate` None) or at `rate` a second, until `limit` passes, `max`
/// are sent or `stop()` holds: each
/// with a fresh random request id and one of `claims` ([`flood_claims`]:
/// what makes the agent ask the issuer, which alone can check the proof),
/// in turn, sealed by the flooder's own key (the agent checks that). Runs
/// in the calling thread's namespace.
#[allow(clippy::too_many_arguments)]
pub fn flood_registrations(
    from: SocketAddrV4,
    to: SocketAddrV4,
    node: &KeyPair,
    mac: [u8; 6],
    cookie: Cookie,
    claims: &[(u64, OldBinding)],
    rate: Option<u64>,
    limit: Duration,
    max: u64,
    stop: impl Fn() -> bool,
) -> io::Result<Flood> {
    if claims.is_empty() {
        return Err(io::Error::other("nothing to claim"));
    }
    let mut rng = Prng::new(random_seed());
    let sock = UdpSocket::bind(from)?;
    let mut f = Flood::default();
    let mut buf = vec![0u8; 2048];
    let t0 = Instant::now();
    while f.sent + f.send_errors < max && t0.elapsed() < limit && !stop() {
        if let Some(r) = rate {
            // Ahead of the rate: wait for it (in short sleeps).
            let due = Duration::from_secs_f64((f.sent + f.send_errors) as f64 / r.max(1) as f64);
            if let Some(ahead) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(ahead.min(Duration::from_millis(10)));
                continue;
            }
        }
        let batch = if rate.is_some() { 8 } else { 64 };
        for _ in 0..batch {
            let (seq, ob) = &claims[((f.sent + f.send_errors) % claims.len() as u64) as usize];
            // xorshift64* never repeats within its period: distinct ids.
            let req_id = rng.next_u64();
            let d = sealed_for(
                &registration_as(
                    req_id,
                    node,
                    *from.ip(),
                    mac,
                    *seq,
                    cookie,
                    vec![ob.clone()],
                ),
                *to.ip(),
            );
            match sock.send_to(&d, to) {
                Ok(_) => f.sent += 1,
                Err(_) => f.send_errors += 1,
            }
        }
        // The answers, without waiting for any (at most a batch's worth:
        // the agent answers each datagram at most once).
        sock.set_nonblocking(true)?;
        for _ in 0..256 {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            f.replies += 1;
            if let Ok(Message::RegistrationReply(r)) = decode(&buf[..n]) {
                // The reply's status, and the claim's if it got that far.
                let claim = r.results.first().map(|b| format!("/{:?}", b.status));
                let key = format!("{:?}{}", r.status, claim.unwrap_or_default());
                *f.by_status.entry(key).or_default() += 1;
            }
        }
        sock.set_nonblocking(false)?;
    }
    f.elapsed = t0.elapsed();
    Ok(f)
}

/// 8 bytes of /dev/urandom.
fn random_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom readable");
    u64::from_le_bytes(b)
}
