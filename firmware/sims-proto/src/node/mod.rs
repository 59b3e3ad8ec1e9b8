//! The Mobile Node state machine.
//!
//! The node, not the network, remembers where it has been: a list of
//! bindings (address, credential from the agent that issued it). On a new
//! address it finds the agent of the new LAN (solicits at once), registers
//! with every binding that still has live sockets, and keeps each old
//! address on its interface as a /32 so those sockets stay valid. A binding
//! whose last socket closed a grace time ago is released.
//!
//! Inputs: the interface's current DHCP address, datagrams (with the
//! address they were sent to), a periodic socket census, timeouts.
//! Outputs: [`Action`]s.
//!
//! What it believes, and from whom: only datagrams sent to its current
//! address or broadcast on its link (never one that reached it through a
//! held old address, i.e. over a tunnel from another LAN); a unicast
//! advertisement only if it answers the node's own solicitation (its
//! random nonce); replies only from the agent the request went to, under
//! the request's random id.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use log::{debug, info, warn};

pub use crate::driver::{Now, Sink};
use crate::msg::{
    self, AgentId, Cookie, Credential, Datagram, Message, NodeKey, OldBinding, ProofDomain,
    ProofInput, Registration, Release, Solicitation, Status, MAX_OLD_BINDINGS,
};
use crate::prf::Prf;
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
    /// Register old addresses before DHCP gives an address (§5.6).
    pub early_registration: bool,
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
            early_registration: true,
        }
    }
}

/// While the node has no current address (its DHCP is still running), the
/// platform sends `Send` and `Broadcast` alike as a broadcast from 0.0.0.0
/// (the only source the new LAN's agent and its reverse-path filter
/// accept before DHCP); the agent answers by broadcast.
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
    req_id: u64,
    data: Datagram,
    backoff: Backoff,
}

#[derive(Clone, Debug)]
pub struct NodeBinding {
    pub cred: Credential,
    /// The credential's key, from the issuer's reply: what proves a move
    /// of the address (an HMAC under it).
    key: [u8; 32],
    pub state: BindingState,
    pub sockets: usize,
    /// When the current agent began relaying it (for the user's report).
    pub relayed_since_ms: Option<u64>,
    idle_since_ms: Option<u64>,
    releasing: Option<Retry>,
    /// The session (agent run) in which the address became relayed: only
    /// that session's authenticated refusal makes the node drop it.
    relayed_in: Option<[u8; 8]>,
    /// Since when refusals from another session went unanswered by an Ok.
    unconfirmed_since_ms: Option<u64>,
}

impl NodeBinding {
    pub fn addr(&self) -> Ipv4Addr {
        self.cred.addr()
    }

    /// A release of it is under way (sent, not yet answered).
    pub fn is_releasing(&self) -> bool {
        self.releasing.is_some()
    }

    /// A binding as restored from a state file: pending until the current
    /// agent answers.
    pub(crate) fn restored(cred: Credential, key: [u8; 32]) -> Self {
        NodeBinding {
            cred,
            key,
            state: BindingState::Pending,
            sockets: 0,
            relayed_since_ms: None,
            idle_since_ms: None,
            releasing: None,
            relayed_in: None,
            unconfirmed_since_ms: None,
        }
    }

    /// The credential's key: the node's secret (its proofs), never shown.
    pub fn cred_key(&self) -> &[u8; 32] {
        &self.key
    }
}

#[derive(Clone, Debug)]
pub struct AgentSeen {
    pub id: AgentId,
    pub src: SocketAddrV4,
    pub instance: u64,
    /// Its X25519 key of this run.
    pub dh: [u8; 32],
    pub expires_ms: u64,
}

/// What the node drops without acting on it, and its public-key work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub rx_malformed: u64,
    /// Not for the current address (e.g. through a held old one), not
    /// from the agent asked, or not answering anything we asked.
    pub rx_ignored: u64,
    /// Public-key operations made: X25519 agreements of sessions with
    /// agents (once per agent run: kept in a small cache). Proofs are
    /// HMACs: there is no other.
    pub key_agreements: u64,
}

/// Solicitations whose answers are still accepted (the last few sent).
const SOLICIT_NONCES: usize = 3;
/// Retry after an agent said it had no room.
const BUSY_RETRY_MS: u64 = 2_000;
/// A relayed address refused by another session than the one that relays
/// it (an agent restarted, or a forged advertisement) is dropped only
/// after this long without an Ok.
const UNCONFIRMED_DROP_MS: u64 = 60_000;
/// After a move, an idle old address that cannot be released yet (its
/// registration with the new agent is not answered: the agent may hold it
/// from an early registration) waits this long for a way to release it
/// before it is just forgotten.
const PENDING_RELEASE_WAIT_MS: u64 = 10_000;
/// The cookie field of an early registration (there is no address to
/// hold a cookie for).
const NO_COOKIE: Cookie = [0; 16];
/// Sessions with agents kept (by the agent run's `dh` key): moving back
/// and forth between hotspots costs no X25519 after the first visit.
const SESSION_CACHE: usize = 4;

pub struct Node {
    cfg: NodeConfig,
    sk: ed25519_compact::SecretKey,
    pk: NodeKey,
    mac: [u8; 6],
    seq: u64,
    prf: Prf,
    solicit_nonces: [u64; SOLICIT_NONCES],
    current: Option<Ipv4Addr>,
    agent: Option<AgentSeen>,
    /// The current agent's cookie for us at `current`.
    cookie: Option<Cookie>,
    /// The session key with the current agent (§5.4), and its id.
    session: Option<([u8; 32], [u8; 8])>,
    /// Recent agents' sessions: (their `dh`, the session key), newest first.
    sessions: heapless::Vec<([u8; 32], [u8; 32]), SESSION_CACHE>,
    /// Addresses whose credentials a restore could not keep (a state file
    /// of protocol version 2): the daemon drops their held /32s.
    dropped: Vec<Ipv4Addr>,
    /// Agent (id, instance) we are registered with for `current`.
    registered: Option<(AgentId, u64)>,
    bindings: Vec<NodeBinding>,
    reg: Option<Retry>,
    next_refresh_ms: Option<u64>,
    next_solicit_ms: Option<u64>,
    /// Solicitations sent since the search began (a move, or an agent
    /// lost): the first ones are retried sooner (see `solicit`).
    solicit_streak: u8,
    /// When the current address last changed.
    address_since_ms: u64,
    pub counters: NodeCounters,
}

impl Node {
    /// `seed` is the node's Ed25519 key seed (its identity, kept across
    /// restarts); `random` is 32 fresh random bytes for this run's ids and
    /// nonces.
    pub fn new(cfg: NodeConfig, seed: [u8; 32], mac: [u8; 6], random: [u8; 32]) -> Self {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        Node {
            cfg,
            pk: *kp.pk,
            sk: kp.sk,
            mac,
            seq: 0,
            prf: Prf::new(random),
            solicit_nonces: [0; SOLICIT_NONCES],
            current: None,
            agent: None,
            cookie: None,
            session: None,
            sessions: heapless::Vec::new(),
            dropped: Vec::new(),
            registered: None,
            bindings: Vec::new(),
            reg: None,
            next_refresh_ms: None,
            next_solicit_ms: None,
            solicit_streak: 0,
            address_since_ms: 0,
            counters: NodeCounters::default(),
        }
    }

    /// The interface in use changed (Wi-Fi and a dock): registrations carry
    /// its MAC, which the agent checks against its LAN's neighbour table.
    pub fn set_mac(&mut self, mac: [u8; 6]) {
        self.mac = mac;
    }

    /// The addresses of the credentials the restore dropped (once).
    pub fn take_dropped(&mut self) -> Vec<Ipv4Addr> {
        core::mem::take(&mut self.dropped)
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

    /// Unpredictable: nobody who did not see the request can answer it.
    fn new_req_id(&mut self) -> u64 {
        self.prf.u64()
    }

    fn solicit(&mut self, now: u64, out: &mut impl Sink<Action>) {
        let nonce = self.prf.u64();
        self.solicit_nonces.rotate_right(1);
        self.solicit_nonces[0] = nonce;
        let m = Message::Solicitation(Solicitation {
            nonce,
            node: self.pk,
        });
        if let Some(data) = msg::encode(&m, None) {
            out.push(Action::Broadcast { data });
        }
        // Right after a move the first broadcast is the one most often
        // lost (the new link is still coming up), and the agent's next
        // periodic advertisement may be a second away: retry after the
        // registration's initial retransmission time, doubling up to the
        // interval (100, 200, 400, 800 ms, then 1 s). A few broadcasts more
        // per move, bounded by the streak; the answer to any of the last
        // SOLICIT_NONCES is still taken.
        let wait =
            crate::retry::backoff_ms(self.cfg.retransmit_initial_ms.max(1), self.solicit_streak);
        self.solicit_streak = self.solicit_streak.saturating_add(1);
        self.next_solicit_ms = Some(now + wait.min(self.cfg.solicit_interval_ms));
    }

    /// The interface's DHCP address changed (`None`: it was removed).
    pub fn set_address(&mut self, now: Now, addr: Option<Ipv4Addr>, out: &mut impl Sink<Action>) {
        let now = now.ms;
        if addr == self.current {
            return;
        }
        info!("current address {:?} -> {:?}", self.current, addr);
        self.current = addr;
        self.solicit_streak = 0;
        self.address_since_ms = now;
        self.registered = None;
        self.cookie = None;
        self.reg = None;
        self.next_refresh_ms = None;
        // A new LAN has a new agent, found by soliciting.
        self.agent = None;
        for b in self.bindings.iter_mut() {
            if Some(b.cred.addr()) == addr {
                // Home again: nothing is held for it elsewhere any more
                // (its agent ends the redirect and tells the peer), so a
                // release still under way is moot, and its idle time
                // starts again when it is old again.
                b.state = BindingState::Native;
                b.releasing = None;
                b.idle_since_ms = None;
                out.push(Action::DropAddress(b.cred.addr()));
            } else {
                b.state = BindingState::Pending;
                out.push(Action::HoldAddress(b.cred.addr()));
            }
        }
        if addr.is_some() || self.has_old() {
            // Without an address, old sessions need not wait for DHCP:
            // the agent heard now takes an early registration (§5.6).
            self.solicit(now, out);
        } else {
            self.next_solicit_ms = None;
        }
    }

    /// The link came up (or back): perhaps on another LAN. Without an
    /// address, look for its agent at once rather than at the next
    /// solicitation interval.
    pub fn link_up(&mut self, now: Now, out: &mut impl Sink<Action>) {
        if self.current.is_none() && self.has_old() && self.agent.is_none() {
            self.solicit_streak = 0;
            self.solicit(now.ms, out);
        }
    }

    /// The interface's routes changed (a DHCP client that adds them after
    /// the address): if the node still knows no agent or cookie for its
    /// address, it asks again at once, since an answer to a solicitation
    /// sent before the routes were there may have been dropped by the
    /// reverse-path filter.
    pub fn routes_changed(&mut self, now: Now, out: &mut impl Sink<Action>) {
        if self.current.is_some() && (self.agent.is_none() || self.cookie.is_none()) {
            self.solicit(now.ms, out);
        }
    }

    /// Old addresses that an early registration would carry.
    fn has_old(&self) -> bool {
        self.cfg.early_registration
            && (self.bindings.iter())
                .any(|b| b.releasing.is_none() && Some(b.addr()) != self.current)
    }

    /// A datagram from `src`, sent to `dst` (the destination address of
    /// its IP header).
    pub fn handle_datagram(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        dst: Ipv4Addr,
        data: &[u8],
        out: &mut impl Sink<Action>,
    ) {
        let now = now.ms;
        let m = match msg::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.counters.rx_malformed += 1;
                debug!("malformed datagram from {src}: {e:?}");
                return;
            }
        };
        let unicast = self.current == Some(dst);
        if !unicast && !dst.is_broadcast() {
            // Sent to a held old address: it came through a tunnel from
            // another LAN, not from the agent of this one.
            self.counters.rx_ignored += 1;
            return;
        }
        let from_agent = self.agent.as_ref().is_some_and(|a| a.src.ip() == src.ip());
        match m {
            Message::Advertisement(a) => {
                // A unicast advertisement must answer one of our
                // solicitations; a broadcast one is from our link.
                let answer = a
                    .solicited
                    .filter(|s| s.nonce != 0 && self.solicit_nonces.contains(&s.nonce));
                if unicast && answer.is_none() {
                    self.counters.rx_ignored += 1;
                    return;
                }
                let same = self
                    .agent
                    .as_ref()
                    .is_some_and(|s| s.id == a.agent && s.instance == a.instance && s.dh == a.dh);
                let src = SocketAddrV4::new(*src.ip(), self.cfg.port);
                if same && self.agent.as_ref().is_some_and(|s| s.src != src) {
                    // The same run of our agent, from another address:
                    // someone replaying its advertisement to draw our
                    // registrations. Its real runs come from one address.
                    self.counters.rx_ignored += 1;
                    return;
                }
                let expires_ms = now + u64::from(a.lifetime_s) * 1000;
                if !same {
                    // A new agent, or its new run: our cookie is void, and
                    // its replies come under a new session.
                    self.cookie = None;
                    self.registered = None;
                    self.reg = None;
                    self.session = self.session_with(&a.dh).map(|k| {
                        let id = crate::prf::hmac(&k, &[b"session id"]);
                        (k, [id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]])
                    });
                }
                self.agent = Some(AgentSeen {
                    id: a.agent.clone(),
                    src,
                    instance: a.instance,
                    dh: a.dh,
                    expires_ms,
                });
                // A fresh cookie while a registration is in flight (we
                // asked, on a hint that ours is stale): register with it.
                let mut renew = false;
                if let (Some(s), true) = (answer, unicast) {
                    renew = self.reg.is_some() && self.cookie != Some(s.cookie);
                    self.cookie = Some(s.cookie);
                }
                if self.cookie.is_none() && self.current.is_some() {
                    // Ask for a cookie: the answer comes to our address.
                    if !same || self.next_solicit_ms.is_none() {
                        self.solicit(now, out);
                    }
                    return;
                }
                self.next_solicit_ms = None;
                if !same || renew || (self.registered.is_none() && self.reg.is_none()) {
                    match self.current {
                        Some(cur) => {
                            info!("agent {} (instance {:x}) on {cur}", a.agent, a.instance)
                        }
                        None if self.has_old() => info!(
                            "agent {} (instance {:x}) heard before DHCP: registering early",
                            a.agent, a.instance
                        ),
                        None => {}
                    }
                    self.register(now, out);
                }
            }
            // Early registrations are answered by broadcast.
            Message::RegistrationReply(r)
                if (unicast || (self.current.is_none() && dst.is_broadcast())) && from_agent =>
            {
                let authentic = self
                    .session
                    .is_some_and(|(k, _)| msg::reply_authentic(data, &k));
                self.on_reply(now, r, authentic, out)
            }
            Message::ReleaseReply(r)
                if unicast
                    && from_agent
                    && self
                        .session
                        .is_some_and(|(k, _)| msg::reply_authentic(data, &k)) =>
            {
                if let Some(i) = self
                    .bindings
                    .iter()
                    .position(|b| b.releasing.as_ref().is_some_and(|x| x.req_id == r.req_id))
                {
                    info!("released {}", self.bindings[i].addr());
                    self.bindings.remove(i);
                }
            }
            _ => self.counters.rx_ignored += 1,
        }
    }

    /// The session with the agent run whose X25519 key is `dh`: cached,
    /// or one X25519 agreement.
    fn session_with(&mut self, dh: &[u8; 32]) -> Option<[u8; 32]> {
        if let Some(i) = self.sessions.iter().position(|(d, _)| d == dh) {
            let hit = self.sessions[i];
            self.sessions.remove(i);
            let _ = self.sessions.insert(0, hit);
            return Some(hit.1);
        }
        self.counters.key_agreements += 1;
        let k = msg::node_session(&self.sk, &self.pk, dh)?;
        if self.sessions.is_full() {
            self.sessions.pop();
        }
        let _ = self.sessions.insert(0, (*dh, k));
        Some(k)
    }

    /// `m` encoded and sealed under the current session.
    fn sealed(&self, m: &Message) -> Option<Datagram> {
        let (key, _) = self.session?;
        let mut data = msg::encode(m, None)?;
        msg::seal_reply(&mut data, &key);
        Some(data)
    }

    fn register(&mut self, now: u64, out: &mut impl Sink<Action>) {
        let Some(agent) = self.agent.clone() else {
            return;
        };
        // Without an address: an early registration of the old addresses
        // (from 0.0.0.0, no cookie), if there are any.
        let (cur, cookie) = match (self.current, self.cookie) {
            (Some(cur), Some(cookie)) => (cur, cookie),
            (None, _) if self.has_old() => (Ipv4Addr::UNSPECIFIED, NO_COOKIE),
            _ => return,
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
            if let Some(proof) = msg::prove(&b.key, &input) {
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
            cookie,
            bindings: list,
            tag: [0; 16],
        });
        let Some(data) = self.sealed(&m) else {
            warn!("registration does not fit in a datagram, or no session");
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

    fn on_reply(
        &mut self,
        now: u64,
        r: msg::RegistrationReply,
        authentic: bool,
        out: &mut impl Sink<Action>,
    ) {
        if self.reg.as_ref().map(|x| x.req_id) != Some(r.req_id) {
            self.counters.rx_ignored += 1;
            return;
        }
        if !authentic {
            // Unsealed: anyone on the LAN who saw the req_id can send it.
            // An agent sends refusals unsealed before it checked our seal;
            // they are only a hint. The registration stays in flight (its
            // retransmissions are the retry), and no cookie is taken.
            self.counters.rx_ignored += 1;
            let early = r.cred.is_none() && r.results.is_empty();
            if early && r.status == Status::BadCookie {
                // Our cookie may be stale: ask for a fresh one; its answer
                // starts a new registration (see the advertisement).
                self.solicit(now, out);
            }
            return;
        }
        self.reg = None;
        let sid = self.session.map(|(_, id)| id);
        let Some(agent) = self.agent.clone() else {
            return;
        };
        if r.cookie.is_some() {
            self.cookie = r.cookie;
        }
        match r.status {
            Status::BadCookie => {
                // Our cookie is stale: get a fresh one, then register.
                info!("agent {} wants a fresh cookie", agent.id);
                self.cookie = None;
                self.solicit(now, out);
                return;
            }
            Status::NoCapacity if r.cred.is_none() && r.results.is_empty() => {
                // No room for us now: keep everything and try again.
                warn!("agent {} is full; retrying", agent.id);
                self.next_refresh_ms = Some(now + BUSY_RETRY_MS);
                return;
            }
            _ => {}
        }
        let lifetime_ms = u64::from(r.lifetime_s.max(3)) * 1000;
        self.next_refresh_ms = Some(now + lifetime_ms / 3);
        let mut seen: heapless::Vec<Ipv4Addr, MAX_OLD_BINDINGS> = heapless::Vec::new();
        for res in r.results.iter() {
            let addr = Ipv4Addr::from(res.addr);
            // One result per address: a second one (only a forger sends
            // it) would override the first.
            if seen.contains(&addr) || seen.push(addr).is_err() {
                continue;
            }
            let Some(i) = self.bindings.iter().position(|b| b.addr() == addr) else {
                continue;
            };
            if Some(addr) == self.current && res.status != Status::Ok {
                // The back-home check of our current address failed (the
                // agent forgot its old redirect): the address is native
                // here, and its new credential follows.
                info!("agent {}: {addr} is native ({:?})", agent.id, res.status);
                continue;
            }
            match res.status {
                Status::Ok if Some(addr) == self.current => {
                    self.bindings[i].state = BindingState::Native
                }
                Status::Ok => {
                    let b = &mut self.bindings[i];
                    // The session that relays it is the one that first
                    // said so; another session's Ok does not take it over
                    // (so that its refusals cannot drop the address).
                    if b.state != BindingState::Relayed {
                        b.state = BindingState::Relayed;
                        b.relayed_in = sid;
                        b.relayed_since_ms = Some(now);
                    }
                    if b.relayed_in == sid {
                        b.unconfirmed_since_ms = None;
                    }
                }
                // A peer that did not answer: try again soon.
                Status::Timeout => self.next_refresh_ms = Some(now + 1000),
                // No room or no verification budget now: keep what we
                // have and try again.
                Status::NoCapacity | Status::Failed => {
                    self.next_refresh_ms = Some(now + BUSY_RETRY_MS)
                }
                st if self.bindings[i].state == BindingState::Relayed
                    && (self.bindings[i].relayed_in != sid || st == Status::Replay) =>
                {
                    // Another session than the one relaying it, or a
                    // Replay (our next registration has a higher seq): not
                    // proof enough to drop a working address; ask again,
                    // and give up only after a while without an Ok.
                    let since = *self.bindings[i].unconfirmed_since_ms.get_or_insert(now);
                    if now.saturating_sub(since) < UNCONFIRMED_DROP_MS {
                        info!(
                            "agent {} refused relayed {addr} ({st:?}); asking again",
                            agent.id
                        );
                        self.next_refresh_ms = Some(now + BUSY_RETRY_MS);
                        continue;
                    }
                    warn!("{addr} unconfirmed for {UNCONFIRMED_DROP_MS} ms; dropping it");
                    self.bindings[i].state = BindingState::Pending;
                    self.bindings[i].releasing = Some(Retry {
                        req_id: 0,
                        data: Datagram::new(),
                        backoff: Backoff::given_up(now),
                    });
                }
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
        // A credential is for the address we have here, from the agent we
        // registered with: anything else (only a forger sends it) would
        // replace the credential of an address relayed from elsewhere.
        let cred = r
            .cred
            .filter(|c| Some(c.addr()) == self.current && c.issuer == agent.id);
        if let (Some(cred), Some((session, _))) = (cred, self.session) {
            let addr = cred.addr();
            let key = msg::box_cred_key(&session, &cred, &r.cred_key);
            match self.bindings.iter_mut().find(|b| b.addr() == addr) {
                Some(b) => {
                    b.cred = cred;
                    b.key = key;
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
                            key,
                            state: BindingState::Native,
                            sockets: 0,
                            relayed_since_ms: None,
                            idle_since_ms: None,
                            releasing: None,
                            relayed_in: None,
                            unconfirmed_since_ms: None,
                        });
                    }
                }
            }
        }
        self.registered = Some((agent.id.clone(), agent.instance));
        match self.current {
            Some(_) => info!("registered with {}", agent.id),
            None => info!("registered early with {}", agent.id),
        }
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
        // A release goes through the agent the node is registered with;
        // until it can, an idle address that an agent may hold (relayed, or
        // pending after a move: perhaps registered early) waits a while.
        let reachable = self.agent.is_some() && cur.is_some() && self.cookie.is_some();
        let settling = now < self.address_since_ms + PENDING_RELEASE_WAIT_MS;
        let mut release = Vec::new();
        for b in self.bindings.iter_mut() {
            let a = b.addr();
            if Some(a) == cur || b.releasing.is_some() {
                continue;
            }
            b.sockets = counts.iter().find(|(x, _)| *x == a).map_or(0, |(_, n)| *n);
            if b.sockets > 0 {
                b.idle_since_ms = None;
                continue;
            }
            let since = *b.idle_since_ms.get_or_insert(now);
            let releasable = reachable && b.state == BindingState::Relayed;
            let wait = !releasable && b.state != BindingState::Native && settling;
            if now.saturating_sub(since) >= self.cfg.grace_ms && !wait {
                release.push(a);
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
        let (Some(agent), Some(cur), Some(cookie), true) =
            (self.agent.clone(), self.current, self.cookie, relayed)
        else {
            // Nothing is held for it anywhere we can reach: just forget it.
            self.bindings.remove(i);
            return;
        };
        self.seq += 1;
        let req_id = self.new_req_id();
        let cred = self.bindings[i].cred.clone();
        let m = Message::Release(Release {
            req_id,
            node: self.pk,
            cred,
            node_addr: cur.octets(),
            seq: self.seq,
            cookie,
            tag: [0; 16],
        });
        let Some(data) = self.sealed(&m) else {
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
            self.solicit_streak = 0;
            self.agent = None;
            self.cookie = None;
            self.registered = None;
            self.reg = None;
            self.next_refresh_ms = None;
            if self.current.is_some() || self.has_old() {
                self.solicit(now, out);
            }
        }
        let unknown = match self.current {
            Some(_) => self.agent.is_none() || self.cookie.is_none(),
            None => self.agent.is_none() && self.has_old(),
        };
        if self.next_solicit_ms.is_some_and(|t| t <= now) {
            if unknown {
                self.solicit(now, out);
            } else {
                // Nothing to look for any more (the old addresses went
                // while there was no address): a timer left in the past
                // would have the platform's loop spin.
                self.next_solicit_ms = None;
            }
        }
        if self.next_refresh_ms.is_some_and(|t| t <= now) {
            self.next_refresh_ms = None;
            if self.cookie.is_some() || (self.current.is_none() && self.agent.is_some()) {
                self.register(now, out);
            } else {
                self.solicit(now, out);
            }
        }
        let dst = self.agent.as_ref().map(|a| a.src);
        let (tries, initial) = (self.cfg.retransmit_tries, self.cfg.retransmit_initial_ms);
        if let Some(r) = self.reg.as_mut().filter(|r| r.backoff.is_due(now)) {
            if r.backoff.exhausted(tries) {
                warn!("agent does not answer the registration; soliciting again");
                self.reg = None;
                self.agent = None;
                self.cookie = None;
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
        let mut n = Node::new(NodeConfig::default(), [1; 32], [2; 6], [0; 32]);
        n.seq = 7;
        for (i, issuer) in ["ma-a", "ma-b"].into_iter().enumerate() {
            n.bindings.push(NodeBinding {
                cred: Credential {
                    addr: [10, i as u8 + 1, 0, 50],
                    issuer: AgentId::from(issuer),
                    serial: 3,
                },
                key: [i as u8 + 5; 32],
                state: BindingState::Relayed,
                sockets: 2,
                relayed_since_ms: None,
                idle_since_ms: None,
                releasing: None,
                relayed_in: None,
                unconfirmed_since_ms: None,
            });
        }
        let saved = n.save();
        let r = Node::restore(NodeConfig::default(), &saved, [2; 6], [9; 32]).unwrap();
        assert_eq!(r.key(), n.key());
        assert!(r.seq > n.seq, "sequence numbers never go back");
        let creds: Vec<_> = (r.bindings().iter())
            .map(|b| (b.cred.clone(), b.key))
            .collect();
        let want: Vec<_> = (n.bindings().iter())
            .map(|b| (b.cred.clone(), b.key))
            .collect();
        assert_eq!(creds, want, "credentials and their keys");
        assert!(r
            .bindings()
            .iter()
            .all(|b| b.state == BindingState::Pending));
        assert_eq!(&saved[..6], b"SIMSN\x03");
        // Version 1 (32-bit serials, no checksum) and the header-less
        // version 0 keep the identity and sequence number; their
        // credentials have no key (protocol version 2) and are dropped.
        let mut v1 = b"SIMSN\x01".to_vec();
        v1.extend(postcard::to_allocvec(&([1u8; 32], 7u64, 2usize)).unwrap());
        for (i, issuer) in ["ma-a", "ma-b"].into_iter().enumerate() {
            let cred1 = ([10, i as u8 + 1, 0, 50], AgentId::from(issuer), 3u32);
            v1.extend(postcard::to_allocvec(&cred1).unwrap());
        }
        for data in [&v1[..], &v1[6..]] {
            let mut legacy = Node::restore(NodeConfig::default(), data, [2; 6], [9; 32]).unwrap();
            assert_eq!(legacy.key(), n.key());
            assert!(legacy.seq > 7);
            assert!(legacy.bindings().is_empty());
            // Their addresses, for the daemon to drop the /32s it held.
            let dropped = [Ipv4Addr::new(10, 1, 0, 50), Ipv4Addr::new(10, 2, 0, 50)];
            assert_eq!(legacy.take_dropped(), dropped);
            assert!(legacy.take_dropped().is_empty());
        }
        // Damaged: nothing.
        assert!(Node::restore(
            NodeConfig::default(),
            &saved[..saved.len() - 1],
            [2; 6],
            [9; 32]
        )
        .is_none());
        assert!(Node::restore(NodeConfig::default(), &[], [2; 6], [9; 32]).is_none());
    }

    /// Found by the simulator (tests/scale): a node soliciting for its old
    /// addresses before DHCP whose last old address went (its sessions
    /// ended) kept its solicitation timer in the past, so poll_timeout
    /// stayed due and sims-node's poll loop spun until an address came.
    #[test]
    fn no_timer_stays_due_when_nothing_is_left_to_solicit_for() {
        let mut n = Node::new(NodeConfig::default(), [1; 32], [2; 6], [0; 32]);
        n.bindings.push(NodeBinding {
            cred: Credential {
                addr: [10, 1, 0, 50],
                issuer: AgentId::from("ma-a"),
                serial: 3,
            },
            key: [5; 32],
            state: BindingState::Relayed,
            sockets: 1,
            relayed_since_ms: None,
            idle_since_ms: None,
            releasing: None,
            relayed_in: None,
            unconfirmed_since_ms: None,
        });
        let mut out = Vec::new();
        n.link_up(Now { ms: 1_000 }, &mut out);
        assert!(matches!(out[..], [Action::Broadcast { .. }]), "{out:?}");
        // No sockets left on it: released (nothing to tell) once settled.
        let idle = [(Ipv4Addr::new(10, 1, 0, 50), 0)];
        for ms in [1_000, 30_000] {
            n.socket_census(Now { ms }, &idle, &mut out);
        }
        assert!(n.bindings().is_empty());
        let mut now = 30_000;
        for _ in 0..3 {
            n.handle_timeout(Now { ms: now }, &mut out);
            match n.poll_timeout() {
                Some(t) => {
                    assert!(t > now, "timer due at {t} still due at {now}");
                    now = t;
                }
                None => break,
            }
        }
    }

    /// Found by the fuzz target `restore`: a state file whose seed is all
    /// zeros (a zeroed header-less file, or a version 2 one with its
    /// checksum) made Node::restore panic in Ed25519's key derivation, and
    /// sims-node with it at every start.
    #[test]
    fn restore_refuses_an_all_zero_key() {
        let cfg = NodeConfig::default;
        assert!(Node::restore(cfg(), &[0; 34], [2; 6], [9; 32]).is_none());
        let mut n = Node::new(cfg(), [1; 32], [2; 6], [0; 32]);
        n.seq = 3;
        let mut saved = n.save();
        saved[6..38].fill(0);
        let body = saved.len() - crate::persist::CHECKSUM_LEN;
        use sha2::{Digest, Sha256};
        let sum = Sha256::digest(&saved[..body]);
        saved[body..].copy_from_slice(&sum[..crate::persist::CHECKSUM_LEN]);
        assert!(Node::restore(cfg(), &saved, [2; 6], [9; 32]).is_none());
    }

    #[test]
    fn solicits_on_new_address_and_holds_old_ones() {
        let mut n = Node::new(NodeConfig::default(), [1; 32], [2; 6], [0; 32]);
        let mut out = Vec::new();
        n.set_address(Now::ms(0), Some(Ipv4Addr::new(10, 1, 0, 50)), &mut out);
        assert!(matches!(out[0], Action::Broadcast { .. }));
        // The first retry is soon (see the next test).
        assert_eq!(n.poll_timeout(), Some(100));
    }

    /// A lost first solicitation after a move costs 100 ms, not the 1 s
    /// interval: retries double from the initial retransmission time up
    /// to the interval, and the next move starts over.
    #[test]
    fn unanswered_solicitations_back_off_to_the_interval() {
        let mut n = Node::new(NodeConfig::default(), [1; 32], [2; 6], [0; 32]);
        let mut out = Vec::new();
        n.set_address(Now::ms(0), Some(Ipv4Addr::new(10, 1, 0, 50)), &mut out);
        let mut sent_at = alloc::vec![0];
        while let Some(t) = n.poll_timeout().filter(|&t| t <= 5_000) {
            out.clear();
            n.handle_timeout(Now::ms(t), &mut out);
            if out.iter().any(|a| matches!(a, Action::Broadcast { .. })) {
                sent_at.push(t);
            }
        }
        assert_eq!(sent_at, [0, 100, 300, 700, 1500, 2500, 3500, 4500]);
        out.clear();
        n.set_address(Now::ms(4_600), Some(Ipv4Addr::new(10, 2, 0, 50)), &mut out);
        assert_eq!(n.poll_timeout(), Some(4_700));
    }
}
