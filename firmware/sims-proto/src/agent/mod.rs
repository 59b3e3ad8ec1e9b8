//! The Mobility Agent state machine.
//!
//! An agent plays two roles for each binding (one address of one node):
//! - **home** (`home.rs`): the address is native to our LAN and we issued
//!   its credential; the node is elsewhere, so we route the address into
//!   the tunnel to the peer where the node is now;
//! - **visitor** (`visitor.rs`): the node is on our LAN now and the address
//!   was issued by a peer; we send the node's packets from that address
//!   into the tunnel to the issuer and deliver the returning ones on our
//!   LAN.
//!
//! This file holds the agent's tables, the dispatch of datagrams and
//! timers, and the binding table's invariants (a tunnel exists while a
//! binding uses it). `peer.rs` is the authenticated envelope of peer
//! messages and their retransmission, `persist.rs` the saved state,
//! `action.rs` what the agent asks of its platform, `config.rs` its
//! configuration.
//!
//! Inputs: datagrams (with whether they came in on the LAN), timeouts.
//! Outputs: [`Action`]s, executed in order by the caller. Ordering is part
//! of the contract: a visitor side is installed before the request that
//! makes the home side redirect, and a tunnel is brought up before the
//! first binding that uses it.

mod action;
mod config;
mod cookie;
mod home;
mod peer;
mod persist;
mod reload;
mod visitor;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use log::{debug, info};
use serde::{Deserialize, Serialize};

use crate::limit::Buckets;
use crate::msg::{
    self, Advertisement, AgentId, Credential, DecodeError, Message, NodeKey, Solicited, Status,
};
use crate::prf::Prf;
use crate::wire::{WireError, VERSION};

pub use crate::driver::{Now, Sink};
pub use action::{Action, EmptyLan, LanView};
pub use config::{AgentConfig, PeerConfig, PeerIdx};
pub use peer::Reachability;
use peer::{OutKind, Outgoing, PeerState};
pub use reload::{PeerMap, MAX_PEERS};
use visitor::PendingReg;

/// Counters, for status and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_ok: u64,
    pub rx_malformed: u64,
    /// Datagrams of an older protocol version (refused).
    pub rx_old_version: u64,
    /// Node messages whose cookie was missing, stale or another's.
    pub rx_bad_cookie: u64,
    /// Peer requests answered with a challenge (a new run of the peer, or
    /// a replay of an old one).
    pub rx_challenged: u64,
    /// Public-key operations tried within budget (the X25519 agreement of
    /// a node's session, once per node and run), and the budgeted work
    /// (those, and requests to peers in a node's name) refused because
    /// the source or the whole LAN ran out of budget.
    pub verifications: u64,
    pub rate_limited: u64,
    /// Of the verifications, those that gave a session (the others had a
    /// node key no session can be made with).
    pub key_agreements: u64,
    /// Redirects ended because another host took the address on our LAN.
    pub redirects_ended: u64,
    /// Bindings undone because their kernel changes failed.
    pub kernel_failed: u64,
    pub rx_unauthenticated: u64,
    pub rx_replay: u64,
    pub rx_refused: u64,
    pub rx_unexpected: u64,
    pub tx: u64,
    pub tx_failed_encode: u64,
    pub table_full: u64,
    /// Peers whose WAN address changed (answered from their new address).
    pub peer_moved: u64,
    /// Move challenges naming an address that is not ours (ignored).
    pub rx_refused_move: u64,
    /// Registrations from nodes without an address here yet (from
    /// 0.0.0.0, before their DHCP finished) that passed the seal check.
    pub early_registrations: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Home,
    Visitor,
}

/// One binding as the agent holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub role: Role,
    pub peer: PeerIdx,
    pub node: NodeKey,
    /// Visitor: the credential to present to the issuer on refresh.
    pub cred: Credential,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Visitor: waiting for the issuer's answer.
    pub pending: bool,
    /// Visitor: last node sequence number seen (releases must exceed it).
    pub last_seq: u64,
    /// The node's link-layer address (as it registered).
    pub mac: [u8; 6],
}

/// A credential as its issuer remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredEntry {
    pub node: NodeKey,
    pub mac: [u8; 6],
    pub serial: u64,
    pub last_seq: u64,
    /// Where the proof with `last_seq` redirected the address (the agent
    /// it named, the node's address there): the same proof presented again
    /// (a retransmission, or a request repeated by a restarted agent) is
    /// answered again instead of being taken for a replay; it can only
    /// repeat what it already did.
    pub last_use: Option<(AgentId, [u8; 4])>,
    pub expires_ms: u64,
    /// The credential's key: drawn at random when the serial is, sent to
    /// the node boxed under its session, and what its proofs are made
    /// with (HMAC: checking one costs no public-key operation).
    pub key: [u8; 32],
}

pub struct Agent {
    cfg: AgentConfig,
    /// Random per run: peers and nodes see a restart by its change.
    instance: u64,
    tx_seq: u64,
    prf: Prf,
    /// Keys the return-routability cookies of this run.
    cookie_key: [u8; 32],
    /// This run's X25519 key pair (the public key is advertised).
    dh_sk: [u8; 32],
    dh_pk: [u8; 32],
    /// Session keys with the nodes we answered (bounded, least recently
    /// used first out): each cost one X25519 operation.
    sessions: BTreeMap<NodeKey, ([u8; 32], u64)>,
    advert_seq: u32,
    last_solicited_ms: u64,
    next_advert_ms: u64,
    bindings: BTreeMap<u32, Binding>,
    creds: BTreeMap<u32, CredEntry>,
    outgoing: BTreeMap<u64, Outgoing>,
    regs: BTreeMap<u32, PendingReg>,
    next_reg: u32,
    peers: Vec<PeerState>,
    /// Work budgets (see `AgentConfig::verify_per_source`): per LAN source
    /// address, in total.
    verify_source: Buckets,
    verify_total: Buckets,
    /// Challenges we may send, per peer.
    challenges: Buckets,
    /// Registrations whose pending request was dropped with its binding.
    orphans: Vec<(u32, Ipv4Addr)>,
    /// Peers removed by a reload, answered with refusals for a while.
    retired: Vec<reload::Retired>,
    pub counters: Counters,
}

/// The token buckets of `cfg`'s rates, full: work per LAN source and in
/// total, and challenges per peer.
fn budgets(cfg: &AgentConfig) -> [Buckets; 3] {
    let peers = cfg.peers.len().max(1);
    [
        Buckets::new(cfg.verify_per_source, cfg.max_pending.max(16)),
        Buckets::new(cfg.verify_total, 1),
        // Run challenges and move challenges, apart (peer.rs).
        Buckets::new(peer::CHALLENGES, 2 * peers),
    ]
}

/// At most one broadcast answer to solicitations per this many ms.
const SOLICITED_BROADCAST_MS: u64 = 20;

impl Agent {
    /// `seed`: 32 random bytes from the platform, new at every start; the
    /// run's instance, request ids, serials, nonces and cookie key are
    /// drawn from it.
    pub fn new(cfg: AgentConfig, seed: [u8; 32]) -> Self {
        let n = cfg.peers.len();
        let mut prf = Prf::new(seed);
        let [verify_source, verify_total, challenges] = budgets(&cfg);
        let instance = prf.u64();
        let cookie_key = prf.bytes32();
        let (dh_sk, dh_pk) = msg::agent_dh_keys(prf.bytes32()).unwrap_or(([0; 32], [0; 32]));
        Agent {
            cfg,
            instance,
            tx_seq: 0,
            cookie_key,
            dh_sk,
            dh_pk,
            sessions: BTreeMap::new(),
            prf,
            advert_seq: 0,
            last_solicited_ms: 0,
            next_advert_ms: 0,
            bindings: BTreeMap::new(),
            creds: BTreeMap::new(),
            outgoing: BTreeMap::new(),
            regs: BTreeMap::new(),
            next_reg: 0,
            peers: alloc::vec![PeerState::default(); n],
            verify_source,
            verify_total,
            challenges,
            orphans: Vec::new(),
            retired: Vec::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }
    /// This run's random instance (advertised; a change means a restart).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Bindings by address.
    pub fn bindings(&self) -> impl Iterator<Item = (Ipv4Addr, &Binding)> {
        self.bindings.iter().map(|(a, b)| (Ipv4Addr::from(*a), b))
    }

    pub fn binding_count(&self, peer: PeerIdx) -> usize {
        self.bindings.values().filter(|b| b.peer == peer).count()
    }

    pub fn credential_count(&self) -> usize {
        self.creds.len()
    }

    /// The earliest time `handle_timeout` wants to run (always some: the
    /// agent advertises itself periodically).
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.next_advert_ms;
        for o in self.outgoing.values() {
            t = t.min(o.retry.next_ms);
        }
        for b in self.bindings.values() {
            t = t.min(b.expires_ms);
        }
        for c in self.creds.values() {
            t = t.min(c.expires_ms);
        }
        for r in self.regs.values() {
            if let Some(d) = r.done_until_ms {
                t = t.min(d);
            }
        }
        Some(t)
    }

    // ---- timers ---------------------------------------------------------

    fn answer_orphans(&mut self, now: Now, out: &mut impl Sink<Action>) {
        while let Some((reg, addr)) = self.orphans.pop() {
            self.reg_result(now, Some(reg), addr, Status::BadRequest, out);
        }
    }

    pub fn handle_timeout(&mut self, now: Now, out: &mut impl Sink<Action>) {
        self.answer_orphans(now, out);
        if now.ms >= self.next_advert_ms {
            self.advertise(None, out);
            self.next_advert_ms = now.ms + self.cfg.advert_interval_ms.max(100);
        }
        self.retransmit(now, out);
        let expired: Vec<u32> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.expires_ms <= now.ms)
            .map(|(a, _)| *a)
            .collect();
        for a in expired {
            let addr = Ipv4Addr::from(a);
            info!("binding {addr} expired");
            if let Some(b) = self.remove_binding(addr, out) {
                // Tell the other side so it does not wait for its own expiry.
                self.send_tunnel_release(now, b.peer, addr, out);
            }
        }
        // Credentials in use by a home binding live as long as it does.
        let bindings = &self.bindings;
        self.creds
            .retain(|a, c| c.expires_ms > now.ms || bindings.contains_key(a));
        self.regs
            .retain(|_, r| r.done_until_ms.is_none_or(|d| d > now.ms));
        self.expire_retired(now);
    }

    // ---- datagrams --------------------------------------------------------

    /// A datagram arrived. `via_lan` says whether it came in on the LAN
    /// interface (node messages are accepted only there).
    pub fn handle_datagram(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        via_lan: bool,
        data: &[u8],
        lan: &impl LanView,
        out: &mut impl Sink<Action>,
    ) {
        let m = match msg::decode(data) {
            Ok(m) => m,
            Err(DecodeError::Wire(WireError::BadVersion(v))) if v < VERSION => {
                self.counters.rx_old_version += 1;
                debug!("protocol version {v} datagram from {src} refused");
                return;
            }
            Err(e) => {
                self.counters.rx_malformed += 1;
                debug!("malformed datagram from {src}: {e:?}");
                return;
            }
        };
        if let Some(sender) = m.peer_sender() {
            // Peers talk over the WAN; on the LAN such a datagram is a
            // guest's (who could forge its source there).
            if via_lan {
                self.counters.rx_unexpected += 1;
                return;
            }
            let Some(p) = self.authenticate(now, src, sender, data, &m, out) else {
                return;
            };
            // Heard: a request accepted as new (authenticate checked its
            // freshness), or an answer to one of our outstanding requests
            // (fresh ids: a replayed old answer matches none).
            let fresh = match peer::answered_request(&m) {
                None => true,
                Some(id) => self.outgoing.get(&id).is_some_and(|o| o.peer == p),
            };
            if fresh {
                self.peers[p].heard(now.ms);
            }
            self.counters.rx_ok += 1;
            match m {
                Message::TunnelRequest(a) => self.on_tunnel_request(now, p, a.msg, lan, out),
                Message::TunnelReply(a) => self.on_tunnel_reply(now, p, a.msg, out),
                Message::TunnelRelease(a) => self.on_tunnel_release(p, a.msg, out),
                Message::PeerChallenge(a) => self.on_challenge(p, a.msg, out),
                Message::PeerHello(a) => self.on_hello(p, a.msg, out),
                Message::PeerMoveChallenge(a) => self.on_move_challenge(p, a.msg, out),
                Message::TunnelReleaseReply(a) => self.answered(p, a.msg.req_id),
                Message::PeerHelloReply(a) => self.answered(p, a.msg.req_id),
                _ => {}
            }
            self.answer_orphans(now, out);
            return;
        }
        // Node messages: only from our LAN.
        let from_lan = via_lan && (self.cfg.is_lan(*src.ip()) || src.ip().is_unspecified());
        match m {
            Message::Solicitation(s) if from_lan && !src.ip().is_unspecified() => {
                self.counters.rx_ok += 1;
                // Unicast to the solicitor's address: the cookie reaches
                // only the host that receives that address's packets.
                let cookie = self.cookie_for(now, *src.ip(), &s.node);
                let answer = Solicited {
                    nonce: s.nonce,
                    cookie,
                };
                self.advertise(Some((src, answer)), out);
            }
            Message::Solicitation(_) if via_lan => {
                // From 0.0.0.0: no address to give a cookie for; the
                // periodic broadcast tells it we are here. Rate-limited.
                self.counters.rx_ok += 1;
                if now.ms >= self.last_solicited_ms + SOLICITED_BROADCAST_MS {
                    self.last_solicited_ms = now.ms;
                    self.advertise(None, out);
                }
            }
            Message::Registration(r) if from_lan => {
                self.counters.rx_ok += 1;
                self.on_registration(now, src, r, data, lan, out);
            }
            Message::Release(r) if from_lan => {
                self.counters.rx_ok += 1;
                self.on_release(now, src, r, data, out);
                self.answer_orphans(now, out);
            }
            // Another agent's advertisement on our LAN, or the echo of
            // our own broadcasts (advertisements, and the replies to early
            // registrations).
            Message::Advertisement(_) => {}
            Message::RegistrationReply(_) if via_lan => {}
            _ => {
                self.counters.rx_unexpected += 1;
                debug!("unexpected {:?} from {src}", m.msg_type());
            }
        }
    }

    fn advertise(&mut self, to: Option<(SocketAddrV4, Solicited)>, out: &mut impl Sink<Action>) {
        self.advert_seq = self.advert_seq.wrapping_add(1);
        let lifetime =
            ((self.cfg.advert_interval_ms * 3).div_ceil(1000)).clamp(1, u16::MAX as u64) as u16;
        let m = Message::Advertisement(Advertisement {
            agent: self.cfg.id.clone(),
            provider: self.cfg.provider.clone(),
            endpoint: self.cfg.endpoint.octets(),
            dh: self.dh_pk,
            instance: self.instance,
            seq: self.advert_seq,
            lifetime_s: lifetime,
            solicited: to.map(|(_, s)| s),
        });
        let Some(data) = msg::encode(&m, None) else {
            self.counters.tx_failed_encode += 1;
            return;
        };
        self.counters.tx += 1;
        match to {
            Some((dst, _)) => out.push(Action::Send { dst, data }),
            None => out.push(Action::BroadcastLan { data }),
        }
    }

    /// Sends a message to a node; a reply under `key` is sealed (§5.4).
    fn send_node(
        &mut self,
        dst: SocketAddrV4,
        m: &Message,
        key: Option<&[u8; 32]>,
        out: &mut impl Sink<Action>,
    ) {
        match msg::encode(m, None) {
            Some(mut data) => {
                if let Some(k) = key {
                    msg::seal_reply(&mut data, k);
                }
                self.counters.tx += 1;
                // A node without an address yet (an early registration)
                // hears only broadcasts.
                if dst.ip().is_unspecified() {
                    out.push(Action::BroadcastLan { data })
                } else {
                    out.push(Action::Send { dst, data })
                }
            }
            None => self.counters.tx_failed_encode += 1,
        }
    }

    /// The session key with `node` (whose address `src` passed its cookie
    /// check): cached, or one X25519 within the source's budget.
    /// NoCapacity: no budget now (try later); BadRequest: `node` is not a
    /// usable key (never will be).
    pub(super) fn session(
        &mut self,
        now: Now,
        src: Ipv4Addr,
        node: &NodeKey,
    ) -> Result<[u8; 32], Status> {
        if let Some((k, used)) = self.sessions.get_mut(node) {
            *used = now.ms;
            return Ok(*k);
        }
        if !self.may_verify(now, src) {
            return Err(Status::NoCapacity);
        }
        let k = msg::agent_session(&self.dh_sk, &self.dh_pk, node).ok_or(Status::BadRequest)?;
        self.counters.key_agreements += 1;
        self.trim_sessions(self.cfg.max_credentials.max(1) - 1);
        self.sessions.insert(*node, (k, now.ms));
        Ok(k)
    }

    /// Forgets the least recently used node sessions until `max` are left.
    fn trim_sessions(&mut self, max: usize) {
        while self.sessions.len() > max {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(n, _)| *n);
            match oldest {
                Some(n) => self.sessions.remove(&n),
                None => break,
            };
        }
    }

    /// The session with `node` if this run has worked it out already (no
    /// key agreement: for answers that must not cost one).
    fn known_session(&self, node: &NodeKey) -> Option<[u8; 32]> {
        self.sessions.get(node).map(|(k, _)| *k)
    }

    // ---- bindings ---------------------------------------------------------

    /// Installs a binding; false (and nothing installed) if the platform
    /// could not carry out its kernel changes.
    #[must_use]
    fn add_binding(&mut self, addr: Ipv4Addr, b: Binding, out: &mut impl Sink<Action>) -> bool {
        let peer = b.peer;
        let _ = out.failed(); // only this binding's changes count
        if self.binding_count(peer) == 0 {
            out.push(Action::TunnelUp { peer });
        }
        out.push(match b.role {
            Role::Home => Action::HomeAdd { addr, peer },
            Role::Visitor => Action::VisitorAdd {
                addr,
                peer,
                mac: b.mac,
            },
        });
        self.bindings.insert(u32::from(addr), b);
        if out.failed() {
            log::warn!("{addr}: the kernel refused the binding; undone");
            self.counters.kernel_failed += 1;
            self.remove_binding(addr, out);
            let _ = out.failed();
            return false;
        }
        true
    }

    fn remove_binding(&mut self, addr: Ipv4Addr, out: &mut impl Sink<Action>) -> Option<Binding> {
        let b = self.bindings.remove(&u32::from(addr))?;
        let peer = b.peer;
        if b.role == Role::Home {
            // The proof that redirected it is spent: "the very proof
            // accepted last" is accepted again only while its redirect
            // lasts (a replay must not bring back a released one).
            if let Some(c) = self.creds.get_mut(&u32::from(addr)) {
                c.last_use = None;
            }
        }
        out.push(match b.role {
            Role::Home => Action::HomeDel { addr, peer },
            Role::Visitor => Action::VisitorDel { addr, peer },
        });
        if self.binding_count(peer) == 0 {
            out.push(Action::TunnelDown { peer });
        }
        // Requests about a binding that is gone are moot; a registration
        // waiting for one is answered (see `answer_orphans`).
        let orphans = &mut self.orphans;
        self.outgoing.retain(|_, o| match o.kind {
            OutKind::Tunnel { addr: a, reg } if a == addr => {
                if let Some(r) = reg {
                    orphans.push((r, addr));
                }
                false
            }
            _ => true,
        });
        Some(b)
    }

    /// This run's X25519 public key (advertised as `dh`).
    pub fn dh_public(&self) -> [u8; 32] {
        self.dh_pk
    }

    /// Takes one public-key operation from the budgets of LAN address
    /// `source` and of the whole agent.
    fn may_verify(&mut self, now: Now, source: Ipv4Addr) -> bool {
        let ok = self.spend(now, source);
        if ok {
            self.counters.verifications += 1;
        }
        ok
    }

    /// Takes one unit of work from the budgets of LAN address `source` and
    /// of the whole agent: a public-key operation, or a request to a peer
    /// in a node's name (which only the issuer can check, so a guest's
    /// made-up claims must not reach it at line rate).
    pub(super) fn spend(&mut self, now: Now, source: Ipv4Addr) -> bool {
        let ok = self.verify_source.take(u32::from(source), 1, now.ms)
            && self.verify_total.take(0, 1, now.ms);
        if !ok {
            self.counters.rate_limited += 1;
        }
        ok
    }

    /// Room for one more binding with `peer` for `node`?
    fn has_room(&self, peer: PeerIdx, node: &NodeKey) -> bool {
        self.bindings.len() < self.cfg.max_bindings
            && self.binding_count(peer) < self.cfg.max_per_peer
            && self.bindings.values().filter(|b| &b.node == node).count() < self.cfg.max_per_node
    }
}

#[cfg(test)]
mod tests;
