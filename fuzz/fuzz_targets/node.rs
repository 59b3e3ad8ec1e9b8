//! The node's state machine under an arbitrary sequence of events: address
//! changes, the link coming up, datagrams (raw, or advertisements and replies built from the
//! input, answering the node's own solicitations and requests so that the
//! fuzzer gets past its nonce and request-id checks) sent to its current
//! address, the broadcast address or an old one, socket censuses,
//! timeouts, restarts through save and restore.
//!
//! After every step: at most `max_bindings` bindings, one per address,
//! every datagram the node sent decodes, its registrations are sealed
//! under its session with its agent and prove each old binding with that
//! binding's credential key, its releases are sealed under its session
//! with an agent run it heard, a credential key it takes from a reply is
//! the one boxed in it (unboxed under its session), and a restart keeps
//! its identity and its credentials with their keys.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use std::sync::OnceLock;

use ed25519_compact::{KeyPair, Seed};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use sims_fuzz::*;
use sims_proto::msg::{
    self, Advertisement, BindingResult, Credential, Message, NodeProof, RegistrationReply,
    ReleaseReply, Solicited, MAX_OLD_BINDINGS,
};
use sims_proto::node::{Action, Node};

const AGENTS: [&str; 3] = [AGENT_ID, PEER_IDS[0], PEER_IDS[1]];
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x50];
const SEED: [u8; 32] = [9; 32];
const KEEP: usize = 8;
const MAX_STEPS: usize = 200;

/// Each agent's X25519 key pair and its session key with the node (worked
/// out once: X25519 is slow next to a step), so that replies can be
/// sealed as the agents seal them.
fn agent_keys() -> &'static [([u8; 32], [u8; 32]); 3] {
    static KEYS: OnceLock<[([u8; 32], [u8; 32]); 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let node = Node::new(node_config(), SEED, MAC, [5; 32]);
        core::array::from_fn(|i| {
            let (sk, pk) = msg::agent_dh_keys([i as u8 + 1; 32]).expect("a key pair");
            let session = msg::agent_session(&sk, &pk, node.key()).expect("a session");
            (pk, session)
        })
    })
}

/// The node's identity (from `SEED`, as `Node::new` makes it): the
/// harness works out the node's sessions with any agent key it advertised.
fn node_keys() -> &'static KeyPair {
    static K: OnceLock<KeyPair> = OnceLock::new();
    K.get_or_init(|| KeyPair::from_seed(Seed::new(SEED)))
}

/// The node's session with the agent run whose X25519 key is `dh`.
fn session(dh: &[u8; 32]) -> Option<[u8; 32]> {
    node_session(node_keys(), dh)
}

struct World {
    node: Node,
    now: u64,
    /// Every agent key the harness advertised in this run.
    dhs: Vec<[u8; 32]>,
    /// Nonces of the node's solicitations, request ids of its
    /// registrations and releases (the latest last).
    nonces: Vec<u64>,
    regs: Vec<u64>,
    releases: Vec<(u64, [u8; 4])>,
    instances: [u64; 3],
}

fn push_keep<T>(v: &mut Vec<T>, x: T) {
    if v.len() >= KEEP {
        v.remove(0);
    }
    v.push(x);
}

impl World {
    fn apply(&mut self, out: Vec<Action>) {
        for a in out {
            match a {
                Action::Send { data, .. } | Action::Broadcast { data } => {
                    match msg::decode(&data).expect("the node sends what decodes") {
                        Message::Solicitation(s) => push_keep(&mut self.nonces, s.nonce),
                        Message::Registration(r) => {
                            self.check_registration(&data, &r);
                            push_keep(&mut self.regs, r.req_id)
                        }
                        Message::Release(r) => {
                            assert!(
                                self.dhs
                                    .iter()
                                    .filter_map(session)
                                    .any(|s| msg::reply_authentic(&data, &s)),
                                "a release sealed under no session of an agent heard"
                            );
                            push_keep(&mut self.releases, (r.req_id, r.cred.addr))
                        }
                        m => panic!("the node sent {:?}", m.msg_type()),
                    }
                }
                Action::HoldAddress(_) | Action::DropAddress(_) => {}
            }
        }
    }

    /// A registration (`data`, decoded as `r`) the node just sent: sealed
    /// under its session with its agent, each old binding proved towards
    /// that agent under the key of the node's binding for it.
    fn check_registration(&self, data: &[u8], r: &msg::Registration) {
        let agent = self.node.agent().expect("registers with an agent");
        let s = session(&agent.dh).expect("registers under a session");
        assert!(
            msg::reply_authentic(data, &s),
            "a registration not sealed under the session with its agent"
        );
        assert_eq!(&r.node, self.node.key());
        for ob in &r.bindings {
            let b = self.node.bindings().iter().find(|b| b.cred == ob.cred);
            let b = b.expect("proves only credentials it holds");
            assert!(
                NodeProof::of_registration(r, ob, &agent.id).verify(b.cred_key()),
                "{}: a proof not under its credential's key",
                b.addr()
            );
        }
    }

    fn check(&self) {
        let b = self.node.bindings();
        assert!(
            b.len() <= node_config().max_bindings,
            "{} bindings",
            b.len()
        );
        for (i, x) in b.iter().enumerate() {
            assert!(
                b[..i].iter().all(|y| y.addr() != x.addr()),
                "{} twice",
                x.addr()
            );
        }
        assert!(self
            .node
            .old_addresses()
            .all(|a| Some(a) != self.node.current()));
    }
}

/// The agent of LAN i (its LAN address), or someone else.
fn pick_src(u: &mut Unstructured) -> Result<SocketAddrV4> {
    Ok(match u.int_in_range(0..=7)? {
        0..=5 => SocketAddrV4::new(host(u.int_in_range(0..=2)?, 1), PORT),
        6 => SocketAddrV4::new(host(0, 66), PORT),
        _ => SocketAddrV4::new(Ipv4Addr::from(u.arbitrary::<u32>()?), u.arbitrary()?),
    })
}

fn pick_addr(u: &mut Unstructured) -> Result<Ipv4Addr> {
    Ok(match u.int_in_range(0..=4)? {
        0..=3 => host(u.int_in_range(0..=2)?, 50 + u.int_in_range(0..=1)?),
        _ => Ipv4Addr::from(u.arbitrary::<u32>()?),
    })
}

fn pick_dst(u: &mut Unstructured, w: &World) -> Result<Ipv4Addr> {
    let old: Vec<Ipv4Addr> = w.node.old_addresses().collect();
    Ok(match (u.int_in_range(0..=9)?, w.node.current()) {
        (0..=5, Some(c)) => c,
        (0..=7, _) => Ipv4Addr::BROADCAST,
        (8, _) if !old.is_empty() => *u.choose(&old)?,
        _ => pick_addr(u)?,
    })
}

fn latest_or_any<T: Copy>(u: &mut Unstructured, v: &[T], any: T) -> Result<T> {
    Ok(match v.last() {
        Some(x) if u.ratio(3, 4)? => *x,
        _ if !v.is_empty() && u.ratio(1, 2)? => *u.choose(v)?,
        _ => any,
    })
}

fn message(u: &mut Unstructured, w: &mut World) -> Result<Message> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => {
            let agent = u.int_in_range(0..=2)?;
            if u.ratio(1, 16)? {
                w.instances[agent] = u.arbitrary()?; // the agent restarted
            }
            let any = u.arbitrary()?;
            let solicited = match u.ratio(2, 3)? {
                true => Some(Solicited {
                    nonce: latest_or_any(u, &w.nonces, any)?,
                    cookie: u.arbitrary()?,
                }),
                false => None,
            };
            Message::Advertisement(Advertisement {
                agent: id(AGENTS[agent]),
                provider: Default::default(),
                endpoint: u.arbitrary()?,
                dh: {
                    let dh = match u.ratio(7, 8)? {
                        true => agent_keys()[agent].0,
                        false => u.arbitrary()?,
                    };
                    if !w.dhs.contains(&dh) {
                        w.dhs.push(dh);
                    }
                    dh
                },
                instance: w.instances[agent],
                seq: u.arbitrary()?,
                lifetime_s: *u.choose(&[0, 1, 3, 15, u16::MAX])?,
                solicited,
            })
        }
        2 => {
            let any = u.arbitrary()?;
            let req_id = latest_or_any(u, &w.regs, any)?;
            let mut results = heapless::Vec::<BindingResult, MAX_OLD_BINDINGS>::new();
            let addrs: Vec<Ipv4Addr> = w.node.bindings().iter().map(|b| b.addr()).collect();
            for _ in 0..u.int_in_range(0..=3)? {
                let addr = match addrs.is_empty() || u.ratio(1, 8)? {
                    true => pick_addr(u)?,
                    false => *u.choose(&addrs)?,
                };
                let _ = results.push(BindingResult {
                    addr: addr.octets(),
                    status: *u.choose(&STATUSES)?,
                });
            }
            let cred = match u.ratio(3, 4)? {
                true => Some(Credential {
                    addr: match (w.node.current(), u.ratio(7, 8)?) {
                        (Some(c), true) => c,
                        _ => pick_addr(u)?,
                    }
                    .octets(),
                    // Mostly the agent it registers with (the only
                    // issuer it takes a credential from).
                    issuer: match (w.node.agent(), u.ratio(7, 8)?) {
                        (Some(a), true) => a.id.clone(),
                        _ => id(AGENTS[u.int_in_range(0..=2)?]),
                    },
                    serial: u.arbitrary()?,
                }),
                false => None,
            };
            Message::RegistrationReply(RegistrationReply {
                req_id,
                status: *u.choose(&STATUSES)?,
                lifetime_s: u.arbitrary()?,
                results,
                cookie: u.arbitrary()?,
                // Boxed under the session of whichever agent seals the
                // reply: to the node, any 32 bytes.
                cred_key: if cred.is_some() || u.ratio(1, 16)? {
                    u.arbitrary()?
                } else {
                    [0; 32]
                },
                cred,
                mac: [0; 16],
            })
        }
        _ => {
            let any = (u.arbitrary()?, pick_addr(u)?.octets());
            let (req_id, addr) = latest_or_any(u, &w.releases, any)?;
            Message::ReleaseReply(ReleaseReply {
                req_id,
                addr,
                status: *u.choose(&STATUSES)?,
                mac: [0; 16],
            })
        }
    })
}

/// The node's credentials with their keys.
fn key_of(w: &World) -> Vec<(Credential, [u8; 32])> {
    w.node
        .bindings()
        .iter()
        .map(|b| (b.cred.clone(), *b.cred_key()))
        .collect()
}

fn step(u: &mut Unstructured, w: &mut World) -> Result<()> {
    let mut out = Vec::new();
    let t = now(w.now);
    match u.int_in_range(0..=9)? {
        0 if u.ratio(1, 8)? => w.node.link_up(t, &mut out),
        0 => {
            let a = if u.ratio(7, 8)? {
                Some(pick_addr(u)?)
            } else {
                None
            };
            w.node.set_address(t, a, &mut out);
        }
        1 | 2 => {
            w.now += time_step(u)?;
            w.node.handle_timeout(now(w.now), &mut out);
        }
        3..=6 => {
            let m = message(u, w)?;
            let mut data = msg::encode(&m, None).expect("fits");
            // Replies mostly sealed, by one of the agents (the node believes
            // only its current agent's seal).
            let reply = matches!(m, Message::RegistrationReply(_) | Message::ReleaseReply(_));
            if reply && u.ratio(7, 8)? {
                let i = u.int_in_range(0..=2)?;
                msg::seal_reply(&mut data, &agent_keys()[i].1);
            }
            let (src, dst) = (pick_src(u)?, pick_dst(u, w)?);
            let before = key_of(w);
            let s = w.node.agent().and_then(|a| session(&a.dh));
            w.node.handle_datagram(t, src, dst, &data, &mut out);
            // A credential the node took from the reply: with the key
            // boxed in it, as unboxed under the node's session.
            if let (Message::RegistrationReply(r), Some(s)) = (&m, s) {
                if let Some(c) = &r.cred {
                    let b = w.node.bindings().iter().find(|b| &b.cred == c);
                    if let Some(b) =
                        b.filter(|b| !before.contains(&(b.cred.clone(), *b.cred_key())))
                    {
                        assert_eq!(
                            *b.cred_key(),
                            msg::box_cred_key(&s, c, &r.cred_key),
                            "{}: the credential key is not the one in the reply",
                            b.addr()
                        );
                        // Only for the address it has, from its agent.
                        assert_eq!(Some(c.addr()), w.node.current(), "{c:?}");
                        assert_eq!(
                            Some(&c.issuer),
                            w.node.agent().map(|a| &a.id),
                            "{c:?}"
                        );
                    }
                }
            }
        }
        7 => {
            let len = u.int_in_range(0..=1300)?;
            let data = u.bytes(len.min(u.len()))?.to_vec();
            let (src, dst) = (pick_src(u)?, pick_dst(u, w)?);
            w.node.handle_datagram(t, src, dst, &data, &mut out);
        }
        8 => {
            let mut counts = Vec::new();
            for a in w.node.old_addresses().collect::<Vec<_>>() {
                if u.ratio(3, 4)? {
                    counts.push((a, *u.choose(&[0usize, 0, 1, 5])?));
                }
            }
            if u.ratio(1, 8)? {
                counts.push((pick_addr(u)?, u.int_in_range(0..=3)?));
            }
            w.node.socket_census(t, &counts, &mut out);
        }
        _ => {
            // A restart: identity and credentials survive, nothing else.
            let saved = w.node.save();
            let key = *w.node.key();
            let creds = key_of(w);
            let cur = w.node.current();
            w.node = Node::restore(node_config(), &saved, MAC, u.arbitrary()?).expect("own save");
            assert_eq!(*w.node.key(), key);
            assert_eq!(key_of(w), creds);
            w.nonces.clear();
            w.regs.clear();
            w.releases.clear();
            w.node.set_address(t, cur, &mut out);
        }
    }
    w.apply(out);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut w = World {
        node: Node::new(node_config(), SEED, MAC, [5; 32]),
        now: 1,
        dhs: Vec::new(),
        nonces: Vec::new(),
        regs: Vec::new(),
        releases: Vec::new(),
        instances: [1, 2, 3],
    };
    let mut out = Vec::new();
    w.node.set_address(now(w.now), Some(host(0, 50)), &mut out);
    w.apply(out);
    for _ in 0..MAX_STEPS {
        if u.is_empty() || step(&mut u, &mut w).is_err() {
            break;
        }
        w.check();
    }
});
