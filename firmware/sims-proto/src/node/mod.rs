//! The Mobile Node state machine.
//!
//! The node, not the network, remembers where it has been: a list of
//! bindings (address, credential from the agent that issued it). On a new
//! address it finds the agent of the new LAN (solicits at once), registers
//! with every binding that still has live sockets, and keeps each old
//! address on its interface as a /32 so those sockets stay valid. A binding
//! whose last socket closed a grace time ago is released.
//!
//! Inputs: the interface's current DHCP address, datagrams, a periodic
//! socket census, timeouts. Outputs: [`Action`]s.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use log::{debug, info, warn};

pub use crate::driver::{Now, Sink};
use crate::msg::{
    self, AgentId, Credential, Datagram, Message, NodeKey, OldBinding, ProofDomain, ProofInput,
    Registration, Release, Solicitation, Status, MAX_OLD_BINDINGS,
};
use crate::retry::Backoff;

mod persist;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub port: u16,
    /// How long an old address may have no sockets before it is released.
    pub grace_ms: u64,
    pub max_bindings: usize,
    pub retransmit_initial_ms: u64,
    pub retransmit_tries: u8,
    /// Solicitation interval while no agent is known.
    pub solicit_interval_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            port: crate::DEFAULT_PORT,
            grace_ms: 2_000,
            max_bindings: MAX_OLD_BINDINGS,
            retransmit_initial_ms: 100,
            retransmit_tries: 6,
            solicit_interval_ms: 1_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Unicast to the agent.
    Send { dst: SocketAddrV4, data: Datagram },
    /// Broadcast on the interface (solicitations).
    Broadcast { data: Datagram },
    /// Keep `addr` on the interface as a /32 (no prefix route) even after
    /// the DHCP client removed it; restore it at once if it disappears.
    HoldAddress(Ipv4Addr),
    /// Stop holding `addr` and remove its /32.
    DropAddress(Ipv4Addr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingState {
    /// The address belongs to the LAN the node is on.
    Native,
    /// Waiting for the current agent's answer.
    Pending,
    /// Carried through a tunnel from its issuer.
    Relayed,
}

impl BindingState {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingState::Native => "native",
            BindingState::Pending => "pending",
            BindingState::Relayed => "relayed",
        }
    }
}

/// A registration or release kept for retransmission until answered.
#[derive(Clone, Debug)]
struct Retry {
    req_id: u32,
    data: Datagram,
    backoff: Backoff,
}

#[derive(Clone, Debug)]
pub struct NodeBinding {
    pub cred: Credential,
    pub state: BindingState,
    pub sockets: usize,
    idle_since_ms: Option<u64>,
    releasing: Option<Retry>,
}

impl NodeBinding {
    pub fn addr(&self) -> Ipv4Addr {
        self.cred.addr()
    }
}

#[derive(Clone, Debug)]
pub struct AgentSeen {
    pub id: AgentId,
    pub src: SocketAddrV4,
    pub boot: u32,
    pub expires_ms: u64,
}

pub struct Node {
    cfg: NodeConfig,
    sk: ed25519_compact::SecretKey,
    pk: NodeKey,
    mac: [u8; 6],
    seq: u64,
    next_req: u32,
    current: Option<Ipv4Addr>,
    agent: Option<AgentSeen>,
    /// Agent (id, boot) we are registered with for `current`.
    registered: Option<(AgentId, u32)>,
    bindings: Vec<NodeBinding>,
    reg: Option<Retry>,
    next_refresh_ms: Option<u64>,
    next_solicit_ms: Option<u64>,
}

impl Node {
    /// `seed` is the node's Ed25519 key seed; `req_seed` randomises ids.
    pub fn new(cfg: NodeConfig, seed: [u8; 32], mac: [u8; 6], req_seed: u32) -> Self {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        Node {
            cfg,
            pk: *kp.pk,
            sk: kp.sk,
            mac,
            seq: 0,
            next_req: req_seed,
            current: None,
            agent: None,
            registered: None,
            bindings: Vec::new(),
            reg: None,
            next_refresh_ms: None,
            next_solicit_ms: None,
        }
    }

    pub fn key(&self) -> &NodeKey {
        &self.pk
    }
    pub fn current(&self) -> Option<Ipv4Addr> {
        self.current
    }
    pub fn agent(&self) -> Option<&AgentSeen> {
        self.agent.as_ref()
    }
    pub fn is_registered(&self) -> bool {
        self.registered.is_some()
    }
    pub fn bindings(&self) -> &[NodeBinding] {
        &self.bindings
    }
    /// Old addresses (not the current one) whose sockets should be counted.
    pub fn old_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.bindings
            .iter()
            .map(|b| b.addr())
            .filter(move |a| Some(*a) != self.current)
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut min = |x: Option<u64>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self.reg.as_ref().map(|r| r.backoff.next_ms));
        min(self.next_refresh_ms);
        min(self.next_solicit_ms);
        min(self.agent.as_ref().map(|a| a.expires_ms));
        for b in &self.bindings {
            min(b.releasing.as_ref().map(|r| r.backoff.next_ms));
        }
        t
    }

    fn new_req_id(&mut self) -> u32 {
        self.next_req = self.next_req.wrapping_add(1);
        self.next_req
    }

    fn solicit(&mut self, now: u64, out: &mut impl Sink<Action>) {
        let m = Message::Solicitation(Solicitation {
            nonce: self.next_req,
        });
        if let Some(data) = msg::encode(&m, None) {
            out.push(Action::Broadcast { data });
        }
        self.next_solicit_ms = Some(now + self.cfg.solicit_interval_ms);
    }

    /// The interface's DHCP address changed (`None`: it was removed).
    pub fn set_address(&mut self, now: Now, addr: Option<Ipv4Addr>, out: &mut impl Sink<Action>) {
        let now = now.ms;
        if addr == self.current {
            return;
        }
        info!("current address {:?} -> {:?}", self.current, addr);
        self.current = addr;
        self.registered = None;
        self.reg = None;
        self.next_refresh_ms = None;
        // A new LAN has a new agent, found by soliciting.
        self.agent = None;
        for b in self.bindings.iter_mut() {
            if Some(b.cred.addr()) == addr {
                b.state = BindingState::Native;
                out.push(Action::DropAddress(b.cred.addr()));
            } else {
                b.state = BindingState::Pending;
                out.push(Action::HoldAddress(b.cred.addr()));
            }
        }
        if addr.is_some() {
            self.solicit(now, out);
        } else {
            self.next_solicit_ms = None;
        }
    }

    pub fn handle_datagram(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        data: &[u8],
        out: &mut impl Sink<Action>,
    ) {
        let now = now.ms;
        let m = match msg::decode(data) {
            Ok(m) => m,
            Err(e) => {
                debug!("malformed datagram from {src}: {e:?}");
                return;
            }
        };
        match m {
            Message::Advertisement(a) => {
                let Some(cur) = self.current else { return };
                let same = self
                    .agent
                    .as_ref()
                    .is_some_and(|s| s.id == a.agent && s.boot == a.boot);
                let src = SocketAddrV4::new(*src.ip(), self.cfg.port);
                let expires_ms = now + u64::from(a.lifetime_s) * 1000;
                self.agent = Some(AgentSeen {
                    id: a.agent.clone(),
                    src,
                    boot: a.boot,
                    expires_ms,
                });
                self.next_solicit_ms = None;
                if !same || (self.registered.is_none() && self.reg.is_none()) {
                    info!("agent {} (boot {}) on {cur}", a.agent, a.boot);
                    self.register(now, out);
                }
            }
            Message::RegistrationReply(r) => self.on_reply(now, r),
            Message::ReleaseReply(r) => {
                if let Some(i) = self
                    .bindings
                    .iter()
                    .position(|b| b.releasing.as_ref().is_some_and(|x| x.req_id == r.req_id))
                {
                    info!("released {}", self.bindings[i].addr());
                    self.bindings.remove(i);
                }
            }
            _ => {}
        }
    }

    fn register(&mut self, now: u64, out: &mut impl Sink<Action>) {
        let (Some(cur), Some(agent)) = (self.current, self.agent.clone()) else {
            return;
        };
        self.seq += 1;
        let req_id = self.new_req_id();
        let mut list: heapless::Vec<OldBinding, MAX_OLD_BINDINGS> = heapless::Vec::new();
        for b in self.bindings.iter().filter(|b| b.releasing.is_none()) {
            let input = ProofInput::new(
                ProofDomain::Redirect,
                &b.cred,
                &agent.id,
                cur.octets(),
                self.seq,
            );
            if let Some(proof) = msg::sign_proof(&self.sk, &input) {
                let _ = list.push(OldBinding {
                    cred: b.cred.clone(),
                    proof,
                });
            }
        }
        let m = Message::Registration(Registration {
            req_id,
            node: self.pk,
            addr: cur.octets(),
            mac: self.mac,
            seq: self.seq,
            bindings: list,
        });
        let Some(data) = msg::encode(&m, None) else {
            warn!("registration does not fit in a datagram");
            return;
        };
        out.push(Action::Send {
            dst: agent.src,
            data: data.clone(),
        });
        self.reg = Some(Retry {
            req_id,
            data,
            backoff: Backoff::start(now, self.cfg.retransmit_initial_ms),
        });
    }

    fn on_reply(&mut self, now: u64, r: msg::RegistrationReply) {
        if self.reg.as_ref().map(|x| x.req_id) != Some(r.req_id) {
            return;
        }
        self.reg = None;
        let Some(agent) = self.agent.clone() else {
            return;
        };
        let lifetime_ms = u64::from(r.lifetime_s.max(3)) * 1000;
        self.next_refresh_ms = Some(now + lifetime_ms / 3);
        for res in r.results.iter() {
            let addr = Ipv4Addr::from(res.addr);
            let Some(i) = self.bindings.iter().position(|b| b.addr() == addr) else {
                continue;
            };
            match res.status {
                Status::Ok if Some(addr) == self.current => {
                    self.bindings[i].state = BindingState::Native
                }
                Status::Ok => self.bindings[i].state = BindingState::Relayed,
                // A peer that did not answer: try again soon.
                Status::Timeout => self.next_refresh_ms = Some(now + 1000),
                st => {
                    warn!("agent {} refused {addr}: {st:?}", agent.id);
                    // Sessions on it cannot continue: stop claiming it, and
                    // drop the address at the next timer (a release with no
                    // tries left), so they fail at once instead of hanging.
                    self.bindings[i].state = BindingState::Pending;
                    self.bindings[i].releasing = Some(Retry {
                        req_id: 0,
                        data: Datagram::new(),
                        backoff: Backoff::given_up(now),
                    });
                }
            }
        }
        if let Some(cred) = r.cred {
            let addr = cred.addr();
            match self.bindings.iter_mut().find(|b| b.addr() == addr) {
                Some(b) => {
                    b.cred = cred;
                    b.state = BindingState::Native;
                }
                None => {
                    if self.bindings.len() >= self.cfg.max_bindings {
                        // Forget the oldest idle binding to make room.
                        if let Some(i) = self.bindings.iter().position(|b| b.sockets == 0) {
                            self.bindings.remove(i);
                        }
                    }
                    if self.bindings.len() < self.cfg.max_bindings {
                        self.bindings.push(NodeBinding {
                            cred,
                            state: BindingState::Native,
                            sockets: 0,
                            idle_since_ms: None,
                            releasing: None,
                        });
                    }
                }
            }
        }
        self.registered = Some((agent.id.clone(), agent.boot));
        info!("registered with {}", agent.id);
    }

    /// The number of live sockets per old address (from sock_diag).
    pub fn socket_census(
        &mut self,
        now: Now,
        counts: &[(Ipv4Addr, usize)],
        out: &mut impl Sink<Action>,
    ) {
        let now = now.ms;
        let cur = self.current;
        let mut release = Vec::new();
        for b in self.bindings.iter_mut() {
            let a = b.addr();
            if Some(a) == cur || b.releasing.is_some() {
                continue;
            }
            b.sockets = counts.iter().find(|(x, _)| *x == a).map_or(0, |(_, n)| *n);
            if b.sockets > 0 {
                b.idle_since_ms = None;
            } else {
                let since = *b.idle_since_ms.get_or_insert(now);
                if now.saturating_sub(since) >= self.cfg.grace_ms {
                    release.push(a);
                }
            }
        }
        for a in release {
            self.release(now, a, out);
        }
    }

    fn release(&mut self, now: u64, addr: Ipv4Addr, out: &mut impl Sink<Action>) {
        info!("no sockets on {addr} for the grace time: releasing it");
        out.push(Action::DropAddress(addr));
        let Some(i) = self.bindings.iter().position(|b| b.addr() == addr) else {
            return;
        };
        let relayed = self.bindings[i].state == BindingState::Relayed;
        let (Some(agent), Some(cur), true) = (self.agent.clone(), self.current, relayed) else {
            // Nothing is held for it anywhere we can reach: just forget it.
            self.bindings.remove(i);
            return;
        };
        self.seq += 1;
        let req_id = self.new_req_id();
        let cred = self.bindings[i].cred.clone();
        let input = ProofInput::new(
            ProofDomain::Release,
            &cred,
            &agent.id,
            cur.octets(),
            self.seq,
        );
        let Some(proof) = msg::sign_proof(&self.sk, &input) else {
            self.bindings.remove(i);
            return;
        };
        let m = Message::Release(Release {
            req_id,
            node: self.pk,
            cred,
            node_addr: cur.octets(),
            seq: self.seq,
            proof,
        });
        let Some(data) = msg::encode(&m, None) else {
            self.bindings.remove(i);
            return;
        };
        out.push(Action::Send {
            dst: agent.src,
            data: data.clone(),
        });
        self.bindings[i].releasing = Some(Retry {
            req_id,
            data,
            backoff: Backoff::start(now, self.cfg.retransmit_initial_ms),
        });
    }

    pub fn handle_timeout(&mut self, now: Now, out: &mut impl Sink<Action>) {
        let now = now.ms;
        if self.agent.as_ref().is_some_and(|a| a.expires_ms <= now) {
            info!("agent advertisement expired");
            self.agent = None;
            self.registered = None;
            self.reg = None;
            self.next_refresh_ms = None;
            if self.current.is_some() {
                self.solicit(now, out);
            }
        }
        if self.next_solicit_ms.is_some_and(|t| t <= now) && self.agent.is_none() {
            self.solicit(now, out);
        }
        if self.next_refresh_ms.is_some_and(|t| t <= now) {
            self.next_refresh_ms = None;
            self.register(now, out);
        }
        let dst = self.agent.as_ref().map(|a| a.src);
        let (tries, initial) = (self.cfg.retransmit_tries, self.cfg.retransmit_initial_ms);
        if let Some(r) = self.reg.as_mut().filter(|r| r.backoff.is_due(now)) {
            if r.backoff.exhausted(tries) {
                warn!("agent does not answer the registration; soliciting again");
                self.reg = None;
                self.agent = None;
                self.solicit(now, out);
            } else if let Some(dst) = dst {
                r.backoff.retransmitted(now, initial);
                out.push(Action::Send {
                    dst,
                    data: r.data.clone(),
                });
            }
        }
        let mut gone = Vec::new();
        for b in self.bindings.iter_mut() {
            let Some(r) = b.releasing.as_mut().filter(|r| r.backoff.is_due(now)) else {
                continue;
            };
            match dst {
                Some(dst) if !r.backoff.exhausted(tries) => {
                    r.backoff.retransmitted(now, initial);
                    out.push(Action::Send {
                        dst,
                        data: r.data.clone(),
                    });
                }
                _ => gone.push(b.addr()),
            }
        }
        for a in gone {
            debug!("giving up on releasing {a}");
            self.bindings.retain(|b| b.addr() != a);
            out.push(Action::DropAddress(a));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_keeps_identity_and_credentials() {
        let mut n = Node::new(NodeConfig::default(), [1; 32], [2; 6], 0);
        n.seq = 7;
        for (i, issuer) in ["ma-a", "ma-b"].into_iter().enumerate() {
            n.bindings.push(NodeBinding {
                cred: Credential {
                    addr: [10, i as u8 + 1, 0, 50],
                    issuer: AgentId::from(issuer),
                    serial: 3,
                },
                state: BindingState::Relayed,
                sockets: 2,
                idle_since_ms: None,
                releasing: None,
            });
        }
        let saved = n.save();
        let r = Node::restore(NodeConfig::default(), &saved, [2; 6], 9).unwrap();
        assert_eq!(r.key(), n.key());
        assert!(r.seq > n.seq, "sequence numbers never go back");
        let creds: Vec<_> = r.bindings().iter().map(|b| b.cred.clone()).collect();
        let want: Vec<_> = n.bindings().iter().map(|b| b.cred.clone()).collect();
        assert_eq!(creds, want);
        assert!(r
            .bindings()
            .iter()
            .all(|b| b.state == BindingState::Pending));
        // The header-less layout of version 0 restores the same.
        assert_eq!(&saved[..6], b"SIMSN\x01");
        let legacy = Node::restore(NodeConfig::default(), &saved[6..], [2; 6], 9).unwrap();
        assert_eq!(legacy.key(), n.key());
        assert_eq!(legacy.bindings().len(), 2);
        // Damaged: nothing.
        assert!(
            Node::restore(NodeConfig::default(), &saved[..saved.len() - 1], [2; 6], 9).is_none()
        );
        assert!(Node::restore(NodeConfig::default(), &[], [2; 6], 9).is_none());
    }

    #[test]
    fn solicits_on_new_address_and_holds_old_ones() {
        let mut n = Node::new(NodeConfig::default(), [1; 32], [2; 6], 0);
        let mut out = Vec::new();
        n.set_address(Now::ms(0), Some(Ipv4Addr::new(10, 1, 0, 50)), &mut out);
        assert!(matches!(out[0], Action::Broadcast { .. }));
        assert_eq!(n.poll_timeout(), Some(1000));
    }
}
