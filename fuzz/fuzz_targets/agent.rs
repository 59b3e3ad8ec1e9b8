//! The agent's state machine under an arbitrary sequence of events: raw
//! datagrams, and messages built from the input and encoded for real
//! (so that the fuzzer gets past decoding, tags, seals, cookies and
//! proofs: the harness plays the nodes and the two peers, and remembers
//! the cookies, credentials with their keys, request ids and challenges
//! the agent handed out; its nodes seal their registrations and releases
//! under their sessions with the agent's run, and prove moves with the
//! credential keys the agent boxed for them, or send the unsealed,
//! missealed and forged variants an attacker would), from
//! LAN hosts, peers and strangers, on the LAN or not; timeouts; changes of
//! who holds an address on the LAN; restarts through save and restore;
//! reloads in place that reorder, remove and add back the peers.
//!
//! After every step: the tables are within the configured limits, the
//! actions so far describe exactly the agent's bindings (a tunnel is up
//! while a binding uses it, no binding is added twice or removed without
//! having been added), and every datagram the agent sent decodes (peer
//! messages with a valid tag, a registration reply carrying a credential
//! sealed under the session of one of the nodes, the only holders of
//! keys that can seal a registration).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use ed25519_compact::{KeyPair, Seed};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use sims_fuzz::*;
use sims_proto::agent::{Action, Agent, LanView, Role};
use sims_proto::msg::{
    self, Authed, Cookie, Credential, Datagram, Message, OldBinding, PeerChallenge,
    PeerMoveChallenge, Proof, ProofDomain, ProofInput, Registration, Release, Solicitation,
    TunnelRelease, TunnelReleaseReply, TunnelReply, TunnelRequest, MAX_OLD_BINDINGS,
};

const MACS: [[u8; 6]; 3] = [
    [2, 0, 0, 0, 0, 0x50],
    [2, 0, 0, 0, 0, 0x51],
    [2, 0, 0, 0, 0, 0x52],
];
/// How much the harness remembers of each kind.
const KEEP: usize = 12;
const MAX_STEPS: usize = 100;

/// The nodes the harness plays: their identities (Ed25519 key pairs),
/// whose sessions with the agent seal what they send it.
fn nodes() -> &'static [KeyPair; 3] {
    static K: OnceLock<[KeyPair; 3]> = OnceLock::new();
    K.get_or_init(|| [1u8, 2, 3].map(|s| KeyPair::from_seed(Seed::new([s; 32]))))
}

struct Holder(Option<(Ipv4Addr, [u8; 6])>);
impl LanView for Holder {
    fn holder(&self, addr: Ipv4Addr) -> Option<[u8; 6]> {
        self.0.filter(|(a, _)| *a == addr).map(|(_, m)| m)
    }
}

fn push_keep<T>(v: &mut Vec<T>, x: T) {
    if v.len() >= KEEP {
        v.remove(0);
    }
    v.push(x);
}

struct World {
    agent: Agent,
    now: u64,
    lan: Holder,
    /// (address, node, cookie) the agent sent to that address.
    cookies: Vec<(Ipv4Addr, usize, Cookie)>,
    /// Credentials the agent issued, to which node, and their keys (as
    /// the node unboxes them from the reply).
    creds: Vec<(Credential, usize, [u8; 32])>,
    /// Requests the agent sent to a peer: (peer, req_id, address).
    peer_reqs: Vec<(usize, u64, Ipv4Addr)>,
    /// The agent's latest challenge nonce to each peer.
    challenges: [u64; 2],
    /// Where each peer is now as the agent's actions said (PeerEndpoint),
    /// and the address the agent last challenged it at when a datagram
    /// came from elsewhere (answering from there moves it).
    endpoints: [Ipv4Addr; 2],
    moving: [Option<Ipv4Addr>; 2],
    /// Applying a restore's actions (moves come from the saved state).
    restoring: bool,
    /// The X25519 key of the agent's previous run: a node that missed the
    /// restart seals under its session with it.
    old_dh: Option<[u8; 32]>,
    peer_instance: [u64; 2],
    peer_seq: [u64; 2],
    node_seq: [u64; 3],
    /// What the harness sent, for replays: (source, via_lan, datagram).
    sent: Vec<(SocketAddrV4, bool, Vec<u8>)>,
    /// The kernel state the actions so far describe.
    /// By the harness's peer numbers (0, 1), whatever the agent's order.
    installed: BTreeMap<Ipv4Addr, (Role, usize)>,
    tunnels: BTreeSet<usize>,
    /// The agent's peers: its index → the harness's peer number.
    order: Vec<usize>,
}

impl World {
    fn new() -> Self {
        World {
            agent: Agent::new(agent_config(), [7; 32]),
            now: 1,
            lan: Holder(None),
            cookies: Vec::new(),
            creds: Vec::new(),
            peer_reqs: Vec::new(),
            challenges: [0; 2],
            endpoints: PEER_ENDPOINTS,
            moving: [None; 2],
            restoring: false,
            old_dh: None,
            peer_instance: [11, 22],
            peer_seq: [0; 2],
            node_seq: [0; 3],
            sent: Vec::new(),
            installed: BTreeMap::new(),
            tunnels: BTreeSet::new(),
            order: vec![0, 1],
        }
    }

    /// Carries out the agent's actions as the platform would, checking them.
    /// `ctx`: the address and node a node message came from.
    fn apply(&mut self, out: Vec<Action>, ctx: Option<(Ipv4Addr, usize)>) {
        for a in out {
            let a = match a {
                Action::TunnelUp { peer } => Action::TunnelUp {
                    peer: self.order[peer],
                },
                Action::TunnelDown { peer } => Action::TunnelDown {
                    peer: self.order[peer],
                },
                Action::HomeAdd { addr, peer } => Action::HomeAdd {
                    addr,
                    peer: self.order[peer],
                },
                Action::HomeDel { addr, peer } => Action::HomeDel {
                    addr,
                    peer: self.order[peer],
                },
                Action::VisitorAdd { addr, peer, mac } => Action::VisitorAdd {
                    addr,
                    peer: self.order[peer],
                    mac,
                },
                Action::VisitorDel { addr, peer } => Action::VisitorDel {
                    addr,
                    peer: self.order[peer],
                },
                Action::PeerEndpoint { peer, addr } => Action::PeerEndpoint {
                    peer: self.order[peer],
                    addr,
                },
                other => other,
            };
            match a {
                Action::Send { dst, data } => self.sent_by_agent(dst, &data, ctx),
                Action::BroadcastLan { data } => {
                    match msg::decode(&data).expect("the agent broadcasts what decodes") {
                        Message::Advertisement(_) | Message::ReleaseReply(_) => {}
                        // Answers to a node without an address (an early
                        // registration, from 0.0.0.0): never a credential.
                        Message::RegistrationReply(r) => {
                            assert!(r.cred.is_none(), "a credential for 0.0.0.0: {r:?}");
                            self.registration_reply(Ipv4Addr::BROADCAST, &data, r);
                        }
                        m => panic!("the agent broadcast {:?}", m.msg_type()),
                    }
                }
                Action::TunnelUp { peer } => {
                    assert!(peer < 2);
                    assert!(self.tunnels.insert(peer), "tunnel {peer} up twice");
                }
                Action::TunnelDown { peer } => {
                    assert!(self.tunnels.remove(&peer), "tunnel {peer} down while down");
                    assert!(
                        self.installed.values().all(|(_, p)| *p != peer),
                        "tunnel {peer} down while a binding uses it"
                    );
                }
                Action::HomeAdd { addr, peer } => self.add(addr, Role::Home, peer),
                Action::VisitorAdd { addr, peer, .. } => self.add(addr, Role::Visitor, peer),
                Action::HomeDel { addr, peer } => self.del(addr, Role::Home, peer),
                Action::VisitorDel { addr, peer } => self.del(addr, Role::Visitor, peer),
                Action::PeerEndpoint { peer, addr } => {
                    assert!(
                        self.moving[peer] == Some(addr)
                            || self.restoring
                            || addr == PEER_ENDPOINTS[peer],
                        "peer {peer} moved to {addr}, where it was not challenged"
                    );
                    assert!(!addr.is_unspecified() && !addr.is_loopback());
                    self.endpoints[peer] = addr;
                    self.moving[peer] = None;
                }
            }
        }
    }

    fn add(&mut self, addr: Ipv4Addr, role: Role, peer: usize) {
        assert!(
            self.tunnels.contains(&peer),
            "{addr} added before tunnel {peer}"
        );
        let old = self.installed.insert(addr, (role, peer));
        assert!(old.is_none(), "{addr} added twice ({old:?}, then {role:?})");
    }

    fn del(&mut self, addr: Ipv4Addr, role: Role, peer: usize) {
        let old = self.installed.remove(&addr);
        assert_eq!(old, Some((role, peer)), "{addr} removed as {role:?} {peer}");
    }

    fn sent_by_agent(&mut self, dst: SocketAddrV4, data: &[u8], ctx: Option<(Ipv4Addr, usize)>) {
        let m = msg::decode(data).expect("the agent sends what decodes");
        if m.msg_type().is_peer() {
            let p = (0..2)
                .find(|&p| msg::verify_tag(data, &PEER_KEYS[p]))
                .expect("a peer message under one of the agreements' keys");
            // A move challenge goes to the address challenged; everything
            // else to where the peer is, or its configured endpoint (a
            // removed peer is answered there).
            if let Message::PeerMoveChallenge(a) = &m {
                assert_eq!(a.msg.addr, dst.ip().octets(), "names where it goes");
                self.moving[p] = Some(*dst.ip());
                self.challenges[p] = a.msg.nonce;
                return;
            }
            assert!(
                *dst.ip() == self.endpoints[p] || *dst.ip() == PEER_ENDPOINTS[p],
                "{:?} to {dst}, not where peer {p} is",
                m.msg_type()
            );
            match m {
                Message::TunnelRequest(a) => {
                    let addr = Ipv4Addr::from(a.msg.cred.addr);
                    push_keep(&mut self.peer_reqs, (p, a.msg.req_id, addr));
                }
                Message::TunnelRelease(a) => push_keep(
                    &mut self.peer_reqs,
                    (p, a.msg.req_id, Ipv4Addr::from(a.msg.addr)),
                ),
                Message::PeerChallenge(a) => self.challenges[p] = a.msg.nonce,
                _ => {}
            }
            return;
        }
        assert!(!self.endpoints.contains(dst.ip()), "node message to a peer");
        if let Message::RegistrationReply(r) = m {
            self.registration_reply(*dst.ip(), data, r);
            return;
        }
        let Some((from, node)) = ctx else { return };
        if *dst.ip() != from {
            return;
        }
        if let Message::Advertisement(a) = m {
            if let Some(s) = a.solicited {
                push_keep(&mut self.cookies, (from, node, s.cookie));
            }
        }
    }

    /// A registration reply (`data`, decoded as `r`) to `dst`, perhaps
    /// one that waited for peers: it is for the node whose session seals
    /// it, which takes its cookie and credential, unboxing the
    /// credential's key with that session.
    fn registration_reply(&mut self, dst: Ipv4Addr, data: &[u8], r: msg::RegistrationReply) {
        let dh = self.agent.dh_public();
        let sealed = (0..nodes().len()).find_map(|n| {
            let s = node_session(&nodes()[n], &dh)?;
            msg::reply_authentic(data, &s).then_some((n, s))
        });
        let Some((node, session)) = sealed else {
            assert!(
                r.cred.is_none(),
                "a credential in a reply sealed for no node: {r:?}"
            );
            return;
        };
        if let Some(c) = r.cookie {
            push_keep(&mut self.cookies, (dst, node, c));
        }
        if let Some(c) = r.cred {
            let key = msg::box_cred_key(&session, &c, &r.cred_key);
            push_keep(&mut self.creds, (c, node, key));
        }
    }

    fn check(&self) {
        let c = self.agent.config();
        let n = self.agent.bindings().count();
        assert!(n <= c.max_bindings, "{n} bindings");
        assert!(self.agent.credential_count() <= c.max_credentials);
        assert_eq!(c.peers.len(), self.order.len());
        for p in 0..c.peers.len() {
            assert!(self.agent.binding_count(p) <= c.max_per_peer);
        }
        let mut per_node: BTreeMap<[u8; 32], usize> = BTreeMap::new();
        for (_, b) in self.agent.bindings() {
            *per_node.entry(b.node).or_default() += 1;
        }
        assert!(per_node.values().all(|&k| k <= c.max_per_node));
        let held: BTreeMap<Ipv4Addr, (Role, usize)> = self
            .agent
            .bindings()
            .map(|(a, b)| (a, (b.role, self.order[b.peer])))
            .collect();
        assert_eq!(
            held, self.installed,
            "the actions do not describe the bindings"
        );
        let used: BTreeSet<usize> = held.values().map(|(_, p)| *p).collect();
        assert_eq!(
            used, self.tunnels,
            "tunnels up without bindings, or the reverse"
        );
        assert!(self.agent.poll_timeout().is_some());
        for p in 0..c.peers.len() {
            assert_eq!(
                self.agent.peer_endpoint(p),
                self.endpoints[self.order[p]],
                "where peer {p} is, and what the actions said"
            );
        }
    }

    fn deliver(
        &mut self,
        src: SocketAddrV4,
        via_lan: bool,
        data: &[u8],
        ctx: Option<(Ipv4Addr, usize)>,
    ) {
        let mut out = Vec::new();
        let now = now(self.now);
        self.agent
            .handle_datagram(now, src, via_lan, data, &self.lan, &mut out);
        push_keep(&mut self.sent, (src, via_lan, data.to_vec()));
        self.apply(out, ctx);
    }
}

fn pick_addr(u: &mut Unstructured) -> Result<Ipv4Addr> {
    Ok(match u.int_in_range(0..=7)? {
        0..=2 => host(0, 50 + u.int_in_range(0..=2)?),
        3 => Ipv4Addr::UNSPECIFIED,
        4 => host(1, 50),
        5 => host(2, 50),
        6 => PEER_ENDPOINTS[0],
        _ => Ipv4Addr::from(u.arbitrary::<u32>()?),
    })
}

fn pick_node(u: &mut Unstructured) -> Result<usize> {
    u.int_in_range(0..=2)
}

fn pick_cookie(u: &mut Unstructured, w: &World, addr: Ipv4Addr, node: usize) -> Result<Cookie> {
    let known = w
        .cookies
        .iter()
        .rev()
        .find(|(a, n, _)| *a == addr && *n == node);
    Ok(match known {
        Some((_, _, c)) if u.ratio(7, 8)? => *c,
        _ => match w.cookies.is_empty() || u.ratio(1, 2)? {
            true => u.arbitrary()?,
            false => u.choose(&w.cookies)?.2,
        },
    })
}

/// A credential: one the agent issued, or one made up (a peer's, ours, or
/// anybody's).
fn pick_cred(u: &mut Unstructured, w: &World, node: usize) -> Result<Credential> {
    let mine: Vec<&Credential> = w
        .creds
        .iter()
        .filter(|(_, n, _)| *n == node)
        .map(|(c, _, _)| c)
        .collect();
    if !mine.is_empty() && u.ratio(3, 4)? {
        return Ok((*u.choose(&mine)?).clone());
    }
    if !w.creds.is_empty() && u.ratio(1, 2)? {
        return Ok(u.choose(&w.creds)?.0.clone());
    }
    let i = u.int_in_range(0..=2)?;
    let issuer = match u.int_in_range(0..=3)? {
        0 => AGENT_ID,
        1 => PEER_IDS[0],
        2 => PEER_IDS[1],
        _ => "ma-x",
    };
    Ok(Credential {
        addr: if u.ratio(7, 8)? {
            host(i, 50 + u.int_in_range(0..=3)?).octets()
        } else {
            u.arbitrary()?
        },
        issuer: id(issuer),
        serial: u.arbitrary()?,
    })
}

fn pick_seq(u: &mut Unstructured, last: &mut u64) -> Result<u64> {
    Ok(match u.int_in_range(0..=7)? {
        0 => *last, // a replay
        1 => u.arbitrary()?,
        _ => {
            *last += 1;
            *last
        }
    })
}

/// Node `node`'s proof for `cred`: made as the node would, with the key
/// the agent boxed for it in the reply that gave it the credential; or
/// with another credential's key (another node's, or one the node holds
/// for another address); or garbage: what a node that does not hold the
/// credential can send.
fn proof(
    u: &mut Unstructured,
    w: &World,
    node: usize,
    cred: &Credential,
    agent: &str,
    addr: [u8; 4],
    seq: u64,
) -> Result<Proof> {
    let own = w
        .creds
        .iter()
        .rev()
        .find(|(c, n, _)| c == cred && *n == node)
        .map(|(_, _, k)| *k);
    let key = match own {
        Some(k) if u.ratio(7, 8)? => k,
        _ if !w.creds.is_empty() && u.ratio(1, 2)? => u.choose(&w.creds)?.2,
        _ => return Ok(Proof(u.arbitrary()?)),
    };
    let input = ProofInput::new(ProofDomain::Redirect, cred, agent, addr, seq);
    Ok(msg::prove(&key, &input).expect("a proof input fits"))
}

/// Seals a registration or release of node `node` (encoded with a zero
/// tag) as the node would, under its session with the agent's run; or
/// not, or wrongly: unsealed, a made-up tag, under the session with the
/// agent's previous run (a node that missed the restart), or under
/// another node's session (a registration in another's name).
fn seal(u: &mut Unstructured, w: &World, node: usize, data: &mut Datagram) -> Result<()> {
    let (dh, by) = match u.int_in_range(0..=31)? {
        0 => return Ok(()),
        1 => {
            let tag: [u8; 16] = u.arbitrary()?;
            let n = data.len();
            data[n - 16..].copy_from_slice(&tag);
            return Ok(());
        }
        2 => (w.old_dh.unwrap_or(w.agent.dh_public()), node),
        3 => (w.agent.dh_public(), pick_node(u)?),
        _ => (w.agent.dh_public(), node),
    };
    if let Some(s) = node_session(&nodes()[by], &dh) {
        msg::seal_reply(data, &s);
    }
    Ok(())
}

fn node_key(u: &mut Unstructured, node: usize) -> Result<[u8; 32]> {
    Ok(if u.ratio(15, 16)? {
        *nodes()[node].pk
    } else {
        u.arbitrary()?
    })
}

fn node_message(u: &mut Unstructured, w: &mut World) -> Result<()> {
    let node = pick_node(u)?;
    let src = if u.ratio(7, 8)? {
        host(0, 50 + node as u8)
    } else {
        pick_addr(u)?
    };
    let via_lan = u.ratio(15, 16)?;
    let sealed = |m: &Message| matches!(m, Message::Registration(_) | Message::Release(_));
    let m = match u.int_in_range(0..=2)? {
        0 => Message::Solicitation(Solicitation {
            nonce: u.arbitrary()?,
            node: node_key(u, node)?,
        }),
        1 => {
            let addr = if u.ratio(7, 8)? { src } else { pick_addr(u)? };
            let seq = pick_seq(u, &mut w.node_seq[node])?;
            let mut bindings = heapless::Vec::<OldBinding, MAX_OLD_BINDINGS>::new();
            for _ in 0..u.int_in_range(0..=3)? {
                let cred = pick_cred(u, w, node)?;
                let proof = proof(u, w, node, &cred, AGENT_ID, addr.octets(), seq)?;
                let _ = bindings.push(OldBinding { cred, proof });
            }
            Message::Registration(Registration {
                req_id: u.arbitrary()?,
                node: node_key(u, node)?,
                addr: addr.octets(),
                mac: if u.ratio(7, 8)? {
                    MACS[node]
                } else {
                    u.arbitrary()?
                },
                seq,
                cookie: pick_cookie(u, w, src, node)?,
                bindings,
                tag: [0; 16],
            })
        }
        _ => {
            let cred = pick_cred(u, w, node)?;
            let seq = pick_seq(u, &mut w.node_seq[node])?;
            Message::Release(Release {
                req_id: u.arbitrary()?,
                node: node_key(u, node)?,
                cred,
                node_addr: src.octets(),
                seq,
                cookie: pick_cookie(u, w, src, node)?,
                tag: [0; 16],
            })
        }
    };
    let mut data = msg::encode(&m, None).expect("fits");
    if sealed(&m) {
        seal(u, w, node, &mut data)?;
    }
    w.deliver(
        SocketAddrV4::new(src, PORT),
        via_lan,
        &data,
        Some((src, node)),
    );
    Ok(())
}

fn peer_message(u: &mut Unstructured, w: &mut World) -> Result<()> {
    let p = u.int_in_range(0..=1)?;
    let req = w
        .peer_reqs
        .iter()
        .filter(|r| r.0 == p)
        .copied()
        .collect::<Vec<_>>();
    let (req_id, req_addr) = match req.is_empty() || u.ratio(1, 8)? {
        true => (u.arbitrary()?, host(u.int_in_range(0..=2)?, 50)),
        false => {
            let r = u.choose(&req)?;
            (r.1, r.2)
        }
    };
    let m = match u.int_in_range(0..=5)? {
        0 => {
            // The node visits peer p and asks for one of our addresses.
            let node = pick_node(u)?;
            let cred = pick_cred(u, w, node)?;
            let node_addr = host(p + 1, 50 + u.int_in_range(0..=2)?).octets();
            let seq = pick_seq(u, &mut w.node_seq[node])?;
            let proof = proof(u, w, node, &cred, PEER_IDS[p], node_addr, seq)?;
            let m = TunnelRequest {
                req_id: u.arbitrary()?,
                node: node_key(u, node)?,
                cred,
                node_addr,
                seq,
                proof,
                lifetime_s: u.arbitrary()?,
            };
            Message::TunnelRequest(envelope(u, w, p, m)?)
        }
        1 => {
            let m = TunnelReply {
                req_id,
                addr: req_addr.octets(),
                status: *u.choose(&STATUSES)?,
                lifetime_s: u.arbitrary()?,
            };
            Message::TunnelReply(envelope(u, w, p, m)?)
        }
        2 => {
            let held: Vec<Ipv4Addr> = w.agent.bindings().map(|(a, _)| a).collect();
            let addr = match held.is_empty() || u.ratio(1, 8)? {
                true => req_addr,
                false => *u.choose(&held)?,
            };
            let m = TunnelRelease {
                req_id: u.arbitrary()?,
                addr: addr.octets(),
            };
            Message::TunnelRelease(envelope(u, w, p, m)?)
        }
        3 => {
            let m = TunnelReleaseReply {
                req_id,
                addr: req_addr.octets(),
                status: *u.choose(&STATUSES)?,
            };
            Message::TunnelReleaseReply(envelope(u, w, p, m)?)
        }
        4 => {
            let m = PeerChallenge {
                req_id,
                nonce: u.arbitrary()?,
            };
            Message::PeerChallenge(envelope(u, w, p, m)?)
        }
        _ => {
            let addr = match u.ratio(1, 2)? {
                true => w.agent.config().endpoint,
                false => pick_addr(u)?,
            };
            let m = PeerMoveChallenge {
                req_id,
                nonce: u.arbitrary()?,
                addr: addr.octets(),
            };
            Message::PeerMoveChallenge(envelope(u, w, p, m)?)
        }
    };
    let key = if u.ratio(15, 16)? {
        PEER_KEYS[p]
    } else {
        PEER_KEYS[1 - p]
    };
    let data = msg::encode(&m, Some(&key)).expect("fits");
    let src = if u.ratio(15, 16)? {
        SocketAddrV4::new(w.endpoints[p], PORT)
    } else if let (Some(to), true) = (w.moving[p], u.ratio(1, 2)?) {
        SocketAddrV4::new(to, PORT)
    } else {
        SocketAddrV4::new(pick_addr(u)?, u.arbitrary()?)
    };
    let via_lan = u.ratio(1, 16)?;
    w.deliver(src, via_lan, &data, None);
    Ok(())
}

/// Peer p's envelope: its id, run, next sequence number and the echo of
/// the agent's challenge, each sometimes wrong.
fn envelope<T>(u: &mut Unstructured, w: &mut World, p: usize, msg: T) -> Result<Authed<T>> {
    let sender = if u.ratio(15, 16)? {
        PEER_IDS[p]
    } else {
        PEER_IDS[1 - p]
    };
    if u.ratio(1, 32)? {
        w.peer_instance[p] = u.arbitrary()?; // the peer restarted
    }
    Ok(Authed {
        sender: id(sender),
        instance: w.peer_instance[p],
        seq: pick_seq(u, &mut w.peer_seq[p])?,
        echo: if u.ratio(3, 4)? {
            w.challenges[p]
        } else {
            u.arbitrary()?
        },
        msg,
    })
}

fn step(u: &mut Unstructured, w: &mut World) -> Result<()> {
    match u.int_in_range(0..=10)? {
        0 | 1 => {
            w.now += time_step(u)?;
            let mut out = Vec::new();
            w.agent.handle_timeout(now(w.now), &mut out);
            w.apply(out, None);
        }
        2..=4 => node_message(u, w)?,
        5 | 6 => peer_message(u, w)?,
        7 => {
            // Raw bytes, or a replay of something sent (perhaps altered).
            let src = SocketAddrV4::new(pick_addr(u)?, PORT);
            let via_lan = u.arbitrary()?;
            if w.sent.is_empty() || u.ratio(1, 4)? {
                let len = u.int_in_range(0..=1300)?;
                let data = u.bytes(len.min(u.len()))?.to_vec();
                w.deliver(src, via_lan, &data, None);
            } else {
                let (src0, lan0, mut data) = u.choose(&w.sent)?.clone();
                if u.ratio(1, 2)? && !data.is_empty() {
                    let i = u.choose_index(data.len())?;
                    data[i] ^= u.int_in_range(1..=255)?;
                }
                let (src, via_lan) = if u.ratio(3, 4)? {
                    (src0, lan0)
                } else {
                    (src, via_lan)
                };
                w.deliver(src, via_lan, &data, None);
            }
        }
        8 => {
            w.lan.0 = match u.ratio(1, 2)? {
                true => None,
                false => Some((pick_addr(u)?, *u.choose(&MACS)?)),
            };
        }
        9 => {
            // A reload in place: the peers reordered, one or both removed,
            // or added back. Removals happen under the old numbering.
            let order = u
                .choose(&[vec![0, 1], vec![1, 0], vec![0], vec![1], vec![]])?
                .clone();
            let mut out = Vec::new();
            let map = w
                .agent
                .reconfigure(now(w.now), agent_config_with(&order), &mut out);
            assert!(map.is_some(), "a reload of the peers is in place");
            w.apply(out, None);
            // A peer removed comes back as configured.
            for (p, &home) in PEER_ENDPOINTS.iter().enumerate() {
                if !order.contains(&p) {
                    w.endpoints[p] = home;
                    w.moving[p] = None;
                }
            }
            w.order = order;
        }
        _ => {
            // A restart: the new run restores what the old one saved.
            let saved = w.agent.save(now(w.now));
            w.old_dh = Some(w.agent.dh_public());
            let seed: [u8; 32] = u.arbitrary()?;
            w.now += time_step(u)?;
            let mut agent = Agent::new(agent_config_with(&w.order), seed);
            let mut out = Vec::new();
            assert!(
                agent.restore(now(w.now), &saved, &mut out),
                "own save refused"
            );
            w.agent = agent;
            w.installed.clear();
            w.tunnels.clear();
            w.challenges = [0; 2];
            w.moving = [None; 2];
            w.restoring = true;
            w.apply(out, None);
            w.restoring = false;
            // simsd following its WAN says hello at every start.
            if u.ratio(1, 2)? {
                let mut out = Vec::new();
                w.agent.hello_peers(now(w.now), &mut out);
                w.apply(out, None);
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut w = World::new();
    let mut out = Vec::new();
    w.agent.handle_timeout(now(w.now), &mut out);
    w.apply(out, None);
    for _ in 0..MAX_STEPS {
        if u.is_empty() || step(&mut u, &mut w).is_err() {
            break;
        }
        w.check();
    }
});
