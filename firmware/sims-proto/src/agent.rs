//! The Mobility Agent state machine.
//!
//! An agent plays two roles for each binding (one address of one node):
//! - **home**: the address is native to our LAN and we issued its
//!   credential; the node is elsewhere, so we route the address into the
//!   tunnel to the peer where the node is now;
//! - **visitor**: the node is on our LAN now and the address was issued by a
//!   peer; we send the node's packets from that address into the tunnel to
//!   the issuer and deliver the returning ones on our LAN.
//!
//! Inputs: datagrams (with whether they came in on the LAN), timeouts.
//! Outputs: [`Action`]s, executed in order by the caller. Ordering is part
//! of the contract: a visitor side is installed before the request that
//! makes the home side redirect, and a tunnel is brought up before the
//! first binding that uses it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use crate::msg::{
    self, Advertisement, AgentId, Authed, BindingResult, Credential, Datagram, Message, NodeKey,
    ProofDomain, ProofInput, Provider, Registration, RegistrationReply, Release, ReleaseReply,
    Status, TunnelRelease, TunnelReleaseReply, TunnelReply, TunnelRequest,
};
use crate::prefix::Prefix;

/// Index of a peer in [`AgentConfig::peers`].
pub type PeerIdx = usize;

/// One roaming agreement.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub id: AgentId,
    pub endpoint: Ipv4Addr,
    pub port: u16,
    pub prefixes: Vec<Prefix>,
    pub key: [u8; 32],
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub id: AgentId,
    pub provider: Provider,
    /// Our tunnel endpoint (WAN address).
    pub endpoint: Ipv4Addr,
    pub port: u16,
    pub lan_prefixes: Vec<Prefix>,
    pub peers: Vec<PeerConfig>,
    pub advert_interval_ms: u64,
    /// Lifetime of bindings; nodes refresh at a third of it.
    pub binding_lifetime_s: u16,
    /// How long an unused credential is remembered.
    pub credential_lifetime_s: u32,
    pub max_bindings: usize,
    pub max_per_peer: usize,
    pub max_per_node: usize,
    pub max_credentials: usize,
    /// Most node registrations waiting for peers at once.
    pub max_pending: usize,
    /// Accepted clock difference for peer messages (replay window after a
    /// restart, when the per-peer sequence state is gone).
    pub auth_window_s: u64,
    pub retransmit_initial_ms: u64,
    pub retransmit_tries: u8,
}

impl AgentConfig {
    /// Defaults for everything but identity, addresses and peers.
    pub fn new(id: AgentId, endpoint: Ipv4Addr) -> Self {
        AgentConfig {
            id,
            provider: Provider::new(),
            endpoint,
            port: crate::DEFAULT_PORT,
            lan_prefixes: Vec::new(),
            peers: Vec::new(),
            advert_interval_ms: 5_000,
            binding_lifetime_s: 300,
            credential_lifetime_s: 86_400,
            max_bindings: 1024,
            max_per_peer: 512,
            max_per_node: 8,
            max_credentials: 1024,
            max_pending: 64,
            auth_window_s: 120,
            retransmit_initial_ms: 200,
            retransmit_tries: 4,
        }
    }

    fn is_lan(&self, a: Ipv4Addr) -> bool {
        self.lan_prefixes.iter().any(|p| p.contains(a))
    }
}

/// What the LAN looks like now, asked of the platform when a redirect is
/// requested: the link-layer address of a live neighbour holding `addr`.
pub trait LanView {
    fn holder(&self, addr: Ipv4Addr) -> Option<[u8; 6]>;
}

/// A LAN with nobody on it (tests, or platforms without a neighbour table).
pub struct EmptyLan;
impl LanView for EmptyLan {
    fn holder(&self, _: Ipv4Addr) -> Option<[u8; 6]> {
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a datagram (unicast, to a node on the LAN or to a peer).
    Send {
        dst: SocketAddrV4,
        data: Datagram,
    },
    /// Broadcast a datagram on the LAN (advertisements).
    BroadcastLan {
        data: Datagram,
    },
    /// The first binding with this peer appears: create its tunnel.
    TunnelUp {
        peer: PeerIdx,
    },
    /// The last binding with this peer is gone: remove its tunnel.
    TunnelDown {
        peer: PeerIdx,
    },
    /// Route our native `addr` into the tunnel to `peer`.
    HomeAdd {
        addr: Ipv4Addr,
        peer: PeerIdx,
    },
    HomeDel {
        addr: Ipv4Addr,
        peer: PeerIdx,
    },
    /// Carry the visiting `addr` (issued by `peer`) through the tunnel;
    /// the node is on our LAN at link-layer address `mac` (so the platform
    /// can skip ARP, whose retry timer could stall the first packets).
    VisitorAdd {
        addr: Ipv4Addr,
        peer: PeerIdx,
        mac: [u8; 6],
    },
    VisitorDel {
        addr: Ipv4Addr,
        peer: PeerIdx,
    },
}

/// Where actions go.
pub trait Sink {
    fn push(&mut self, a: Action);
}
impl Sink for Vec<Action> {
    fn push(&mut self, a: Action) {
        Vec::push(self, a)
    }
}

/// Counters, for status and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_ok: u64,
    pub rx_malformed: u64,
    pub rx_unauthenticated: u64,
    pub rx_replay: u64,
    pub rx_refused: u64,
    pub rx_unexpected: u64,
    pub tx: u64,
    pub tx_failed_encode: u64,
    pub table_full: u64,
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
    pub serial: u32,
    pub last_seq: u64,
    /// The request that used `last_seq`, so its retransmission is answered
    /// again instead of being taken for a replay.
    pub last_req: Option<(PeerIdx, u32)>,
    pub expires_ms: u64,
}

#[derive(Clone, Debug)]
enum OutKind {
    Tunnel { addr: Ipv4Addr, reg: Option<u32> },
    Release { addr: Ipv4Addr },
}

#[derive(Clone, Debug)]
struct Outgoing {
    peer: PeerIdx,
    kind: OutKind,
    msg: Message,
    tries: u8,
    next_ms: u64,
}

/// A node registration waiting for peers, then kept a little while so that
/// its retransmission gets the same answer.
#[derive(Clone, Debug)]
struct PendingReg {
    node: NodeKey,
    node_req: u32,
    from: SocketAddrV4,
    reply: RegistrationReply,
    waiting: usize,
    /// When the answered entry may be forgotten.
    done_until_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct PeerRx {
    boot: u32,
    seq: u64,
}

/// Persisted across a daemon restart (not across a router reboot): the
/// layout of the state file, postcard. `save` and `restore` write and read
/// it field by field and element by element, never holding a second copy
/// of the tables (a copy of 1,000 bindings was most of simsd's peak RSS
/// at start); the test `state_file_layout_is_saved` pins the layout.
#[cfg(test)]
#[derive(Serialize, Deserialize)]
struct Saved {
    boot: u32,
    next_serial: u32,
    bindings: Vec<([u8; 4], Binding, u64, AgentId)>,
    creds: Vec<([u8; 4], CredEntry, u64)>,
}

pub struct Agent {
    cfg: AgentConfig,
    boot: u32,
    tx_seq: u64,
    next_req: u32,
    next_serial: u32,
    advert_seq: u32,
    last_solicited_ms: u64,
    next_advert_ms: u64,
    bindings: BTreeMap<u32, Binding>,
    creds: BTreeMap<u32, CredEntry>,
    outgoing: BTreeMap<u32, Outgoing>,
    regs: BTreeMap<u32, PendingReg>,
    next_reg: u32,
    peer_rx: Vec<PeerRx>,
    /// Registrations whose pending request was dropped with its binding.
    orphans: Vec<(u32, Ipv4Addr)>,
    pub counters: Counters,
}

/// Time inputs: a monotonic clock for timers, the wall clock for the
/// freshness of peer messages.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub ms: u64,
    pub unix_s: u64,
}

const DONE_KEEP_MS: u64 = 10_000;
/// At most one broadcast answer to solicitations per this many ms.
const SOLICITED_BROADCAST_MS: u64 = 20;

impl Agent {
    /// `boot` must grow across restarts (the caller uses the wall clock);
    /// `req_seed` randomises request ids.
    pub fn new(cfg: AgentConfig, boot: u32, req_seed: u32) -> Self {
        let n = cfg.peers.len();
        Agent {
            cfg,
            boot,
            tx_seq: 0,
            next_req: req_seed,
            next_serial: req_seed.rotate_left(16) | 1,
            advert_seq: 0,
            last_solicited_ms: 0,
            next_advert_ms: 0,
            bindings: BTreeMap::new(),
            creds: BTreeMap::new(),
            outgoing: BTreeMap::new(),
            regs: BTreeMap::new(),
            next_reg: 0,
            peer_rx: alloc::vec![PeerRx::default(); n],
            orphans: Vec::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }
    pub fn boot(&self) -> u32 {
        self.boot
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

    /// The earliest time `handle_timeout` wants to run.
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self.next_advert_ms;
        for o in self.outgoing.values() {
            t = t.min(o.next_ms);
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
        t
    }

    // ---- timers ---------------------------------------------------------

    fn answer_orphans(&mut self, now: Now, out: &mut impl Sink) {
        while let Some((reg, addr)) = self.orphans.pop() {
            self.reg_result(now, Some(reg), addr, Status::BadRequest, out);
        }
    }

    pub fn handle_timeout(&mut self, now: Now, out: &mut impl Sink) {
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
    }

    fn retransmit(&mut self, now: Now, out: &mut impl Sink) {
        let due: Vec<u32> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.next_ms <= now.ms)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(mut o) = self.outgoing.remove(&id) else {
                continue;
            };
            if o.tries >= self.cfg.retransmit_tries {
                warn!(
                    "peer {} did not answer request {id}",
                    self.cfg.peers[o.peer].id
                );
                match o.kind {
                    OutKind::Tunnel { addr, reg } => {
                        self.tunnel_failed(now, addr, reg, Status::Timeout, out)
                    }
                    // The peer's side expires on its own.
                    OutKind::Release { addr } => debug!("release of {addr} unanswered"),
                }
                continue;
            }
            o.tries += 1;
            o.next_ms = now.ms + (self.cfg.retransmit_initial_ms << o.tries.min(6));
            let msg = self.reseal(&o.msg, now);
            self.send_peer(o.peer, &msg, out);
            o.msg = msg;
            self.outgoing.insert(id, o);
        }
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
        out: &mut impl Sink,
    ) {
        let m = match msg::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.counters.rx_malformed += 1;
                debug!("malformed datagram from {src}: {e:?}");
                return;
            }
        };
        if let Some(sender) = m.peer_sender() {
            let Some(p) = self.authenticate(now, src, sender, data, &m) else {
                return;
            };
            self.counters.rx_ok += 1;
            match m {
                Message::TunnelRequest(a) => self.on_tunnel_request(now, p, a.msg, lan, out),
                Message::TunnelReply(a) => self.on_tunnel_reply(now, p, a.msg, out),
                Message::TunnelRelease(a) => self.on_tunnel_release(now, p, a.msg, out),
                Message::TunnelReleaseReply(a)
                    if self
                        .outgoing
                        .get(&a.msg.req_id)
                        .is_some_and(|o| o.peer == p) =>
                {
                    self.outgoing.remove(&a.msg.req_id);
                }
                _ => {}
            }
            self.answer_orphans(now, out);
            return;
        }
        // Node messages: only from our LAN.
        let from_lan = via_lan && (self.cfg.is_lan(*src.ip()) || src.ip().is_unspecified());
        match m {
            Message::Solicitation(_) if via_lan => {
                self.counters.rx_ok += 1;
                // Answer by broadcast: a unicast answer would first wait for
                // ARP. Rate-limited, so a flood of solicitations cannot
                // become a broadcast storm (then unicast answers).
                if now.ms >= self.last_solicited_ms + SOLICITED_BROADCAST_MS {
                    self.last_solicited_ms = now.ms;
                    self.advertise(None, out);
                } else {
                    self.advertise(Some(src), out);
                }
            }
            Message::Registration(r) if from_lan => {
                self.counters.rx_ok += 1;
                self.on_registration(now, src, r, out);
            }
            Message::Release(r) if from_lan => {
                self.counters.rx_ok += 1;
                self.on_release(now, src, r, out);
                self.answer_orphans(now, out);
            }
            // Another agent's advertisement on our LAN, or our own echo.
            Message::Advertisement(_) => {}
            _ => {
                self.counters.rx_unexpected += 1;
                debug!("unexpected {:?} from {src}", m.msg_type());
            }
        }
    }

    /// Check sender, source address, tag, freshness and sequence.
    fn authenticate(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        sender: &AgentId,
        data: &[u8],
        m: &Message,
    ) -> Option<PeerIdx> {
        let Some(p) = self.cfg.peers.iter().position(|p| &p.id == sender) else {
            self.counters.rx_unauthenticated += 1;
            info!("peer message from {src} claiming {sender}: not a roaming peer");
            return None;
        };
        if *src.ip() != self.cfg.peers[p].endpoint || !msg::verify_tag(data, &self.cfg.peers[p].key)
        {
            self.counters.rx_unauthenticated += 1;
            info!("peer message from {src} failed authentication as {sender}");
            return None;
        }
        let (boot, seq, t) = match m {
            Message::TunnelRequest(a) => (a.boot, a.seq, a.unix_time),
            Message::TunnelReply(a) => (a.boot, a.seq, a.unix_time),
            Message::TunnelRelease(a) => (a.boot, a.seq, a.unix_time),
            Message::TunnelReleaseReply(a) => (a.boot, a.seq, a.unix_time),
            _ => return None,
        };
        let rx = self.peer_rx[p];
        let fresh = now.unix_s.abs_diff(t) <= self.cfg.auth_window_s;
        let newer = boot > rx.boot || (boot == rx.boot && seq > rx.seq);
        if !fresh || !newer {
            self.counters.rx_replay += 1;
            info!("replayed or stale message from peer {sender} (boot {boot} seq {seq})");
            return None;
        }
        self.peer_rx[p] = PeerRx { boot, seq };
        Some(p)
    }

    fn advertise(&mut self, to: Option<SocketAddrV4>, out: &mut impl Sink) {
        self.advert_seq = self.advert_seq.wrapping_add(1);
        let lifetime =
            ((self.cfg.advert_interval_ms * 3).div_ceil(1000)).clamp(1, u16::MAX as u64) as u16;
        let m = Message::Advertisement(Advertisement {
            agent: self.cfg.id.clone(),
            provider: self.cfg.provider.clone(),
            endpoint: self.cfg.endpoint.octets(),
            boot: self.boot,
            seq: self.advert_seq,
            lifetime_s: lifetime,
        });
        let Some(data) = msg::encode(&m, None) else {
            self.counters.tx_failed_encode += 1;
            return;
        };
        self.counters.tx += 1;
        match to {
            Some(dst) if !dst.ip().is_unspecified() => out.push(Action::Send { dst, data }),
            _ => out.push(Action::BroadcastLan { data }),
        }
    }

    fn send_node(&mut self, dst: SocketAddrV4, m: &Message, out: &mut impl Sink) {
        match msg::encode(m, None) {
            Some(data) => {
                self.counters.tx += 1;
                out.push(Action::Send { dst, data })
            }
            None => self.counters.tx_failed_encode += 1,
        }
    }

    /// Give a peer message a fresh envelope (new sequence, current time).
    fn reseal(&mut self, m: &Message, now: Now) -> Message {
        self.tx_seq += 1;
        let (boot, seq, t) = (self.boot, self.tx_seq, now.unix_s);
        let id = self.cfg.id.clone();
        fn env<T: Clone>(a: &Authed<T>, id: AgentId, boot: u32, seq: u64, t: u64) -> Authed<T> {
            Authed {
                sender: id,
                boot,
                seq,
                unix_time: t,
                msg: a.msg.clone(),
            }
        }
        match m {
            Message::TunnelRequest(a) => Message::TunnelRequest(env(a, id, boot, seq, t)),
            Message::TunnelReply(a) => Message::TunnelReply(env(a, id, boot, seq, t)),
            Message::TunnelRelease(a) => Message::TunnelRelease(env(a, id, boot, seq, t)),
            Message::TunnelReleaseReply(a) => Message::TunnelReleaseReply(env(a, id, boot, seq, t)),
            other => other.clone(),
        }
    }

    fn send_peer(&mut self, p: PeerIdx, m: &Message, out: &mut impl Sink) {
        let peer = &self.cfg.peers[p];
        match msg::encode(m, Some(&peer.key)) {
            Some(data) => {
                self.counters.tx += 1;
                out.push(Action::Send {
                    dst: SocketAddrV4::new(peer.endpoint, peer.port),
                    data,
                })
            }
            None => self.counters.tx_failed_encode += 1,
        }
    }

    fn authed<T>(&self, msg: T) -> Authed<T> {
        Authed {
            sender: self.cfg.id.clone(),
            boot: self.boot,
            seq: 0,
            unix_time: 0,
            msg,
        }
    }

    fn new_req_id(&mut self) -> u32 {
        self.next_req = self.next_req.wrapping_add(1);
        self.next_req
    }

    /// Send a request to a peer and keep it for retransmission.
    fn request(
        &mut self,
        now: Now,
        p: PeerIdx,
        req_id: u32,
        kind: OutKind,
        m: Message,
        out: &mut impl Sink,
    ) {
        let m = self.reseal(&m, now);
        self.send_peer(p, &m, out);
        self.outgoing.insert(
            req_id,
            Outgoing {
                peer: p,
                kind,
                msg: m,
                tries: 0,
                next_ms: now.ms + self.cfg.retransmit_initial_ms,
            },
        );
    }

    fn reply_peer(&mut self, now: Now, p: PeerIdx, m: Message, out: &mut impl Sink) {
        let m = self.reseal(&m, now);
        self.send_peer(p, &m, out);
    }

    fn send_tunnel_release(&mut self, now: Now, p: PeerIdx, addr: Ipv4Addr, out: &mut impl Sink) {
        let req_id = self.new_req_id();
        let m = Message::TunnelRelease(self.authed(TunnelRelease {
            req_id,
            addr: addr.octets(),
        }));
        self.request(now, p, req_id, OutKind::Release { addr }, m, out);
    }

    // ---- bindings ---------------------------------------------------------

    fn add_binding(&mut self, addr: Ipv4Addr, b: Binding, out: &mut impl Sink) {
        let peer = b.peer;
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
    }

    fn remove_binding(&mut self, addr: Ipv4Addr, out: &mut impl Sink) -> Option<Binding> {
        let b = self.bindings.remove(&u32::from(addr))?;
        let peer = b.peer;
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

    /// Room for one more binding with `peer` for `node`?
    fn has_room(&self, peer: PeerIdx, node: &NodeKey) -> bool {
        self.bindings.len() < self.cfg.max_bindings
            && self.binding_count(peer) < self.cfg.max_per_peer
            && self.bindings.values().filter(|b| &b.node == node).count() < self.cfg.max_per_node
    }

    // ---- node registration (new-agent side) -------------------------------

    fn on_registration(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        r: Registration,
        out: &mut impl Sink,
    ) {
        let cur = Ipv4Addr::from(r.addr);
        // A retransmission of a registration we are working on or answered.
        if let Some((_, reg)) = self
            .regs
            .iter()
            .find(|(_, g)| g.node == r.node && g.node_req == r.req_id)
        {
            if reg.waiting == 0 {
                let m = Message::RegistrationReply(reg.reply.clone());
                self.send_node(src, &m, out);
            }
            return;
        }
        let mut reply = RegistrationReply {
            req_id: r.req_id,
            status: Status::Ok,
            cred: None,
            lifetime_s: self.cfg.binding_lifetime_s,
            results: heapless::Vec::new(),
        };
        if *src.ip() != cur || !self.cfg.is_lan(cur) {
            self.counters.rx_refused += 1;
            reply.status = Status::BadRequest;
            self.send_node(src, &Message::RegistrationReply(reply), out);
            return;
        }
        if self.regs.len() >= self.cfg.max_pending {
            self.counters.table_full += 1;
            reply.status = Status::NoCapacity;
            self.send_node(src, &Message::RegistrationReply(reply), out);
            return;
        }
        let reg_id = self.next_reg;
        self.next_reg = self.next_reg.wrapping_add(1);
        let mut waiting = 0;
        for ob in r.bindings.iter() {
            let addr = ob.cred.addr();
            let st = if ob.cred.issuer == self.cfg.id {
                self.back_home(now, &r, ob, out)
            } else {
                match self.visit(now, &r, ob, reg_id, out) {
                    Some(st) => st,
                    None => {
                        waiting += 1;
                        continue;
                    }
                }
            };
            let _ = reply.results.push(BindingResult {
                addr: addr.octets(),
                status: st,
            });
        }
        // The credential for the current address comes last: a node back
        // home has just had its old redirect removed above.
        reply.cred = self.issue(now, cur, &r);
        if reply.cred.is_none() {
            reply.status = if self.creds.len() >= self.cfg.max_credentials {
                Status::NoCapacity
            } else {
                Status::AddressInUse
            };
        }
        let mut reg = PendingReg {
            node: r.node,
            node_req: r.req_id,
            from: src,
            reply,
            waiting,
            done_until_ms: None,
        };
        if waiting == 0 {
            let m = Message::RegistrationReply(reg.reply.clone());
            self.send_node(src, &m, out);
            reg.done_until_ms = Some(now.ms + DONE_KEEP_MS);
        }
        self.regs.insert(reg_id, reg);
    }

    /// Issue (or renew) the credential for the node's current address.
    fn issue(&mut self, now: Now, cur: Ipv4Addr, r: &Registration) -> Option<Credential> {
        let key = u32::from(cur);
        // The address is ours but redirected for another node: whoever
        // registers it here now cannot be its holder.
        if let Some(b) = self.bindings.get(&key) {
            if b.role == Role::Home && b.node != r.node {
                self.counters.rx_refused += 1;
                warn!("{cur} is redirected for another node; not issuing");
                return None;
            }
        }
        let expires_ms = now.ms + u64::from(self.cfg.credential_lifetime_s) * 1000;
        let serial = match self.creds.get_mut(&key) {
            Some(c) if c.node == r.node => {
                c.expires_ms = expires_ms;
                c.mac = r.mac;
                c.serial
            }
            existing => {
                if existing.is_none() && self.creds.len() >= self.cfg.max_credentials {
                    self.counters.table_full += 1;
                    return None;
                }
                self.next_serial = self.next_serial.wrapping_add(1);
                let serial = self.next_serial;
                self.creds.insert(
                    key,
                    CredEntry {
                        node: r.node,
                        mac: r.mac,
                        serial,
                        last_seq: 0,
                        last_req: None,
                        expires_ms,
                    },
                );
                serial
            }
        };
        Some(Credential {
            addr: cur.octets(),
            issuer: self.cfg.id.clone(),
            serial,
        })
    }

    /// Check a node's proof for a credential we issued; on success record
    /// its sequence number. `req` identifies the request for idempotency.
    #[allow(clippy::too_many_arguments)]
    fn check_proof(
        &mut self,
        domain: ProofDomain,
        node: &NodeKey,
        cred: &Credential,
        agent: &str,
        node_addr: [u8; 4],
        seq: u64,
        proof: &msg::Sig,
        req: Option<(PeerIdx, u32)>,
    ) -> Status {
        let addr = cred.addr();
        if cred.issuer != self.cfg.id || !self.cfg.is_lan(addr) {
            return Status::BadRequest;
        }
        let Some(c) = self.creds.get(&u32::from(addr)) else {
            return Status::UnknownCredential;
        };
        if &c.node != node || c.serial != cred.serial {
            return Status::UnknownCredential;
        }
        let input = ProofInput::new(domain, cred, agent, node_addr, seq);
        if !msg::verify_proof(node, &input, proof) {
            return Status::BadProof;
        }
        let retransmit = req.is_some() && c.last_req == req && seq == c.last_seq;
        if seq <= c.last_seq && !retransmit {
            return Status::Replay;
        }
        if let Some(c) = self.creds.get_mut(&u32::from(addr)) {
            c.last_seq = seq;
            c.last_req = req;
        }
        Status::Ok
    }

    /// The node is back on the LAN that issued `ob`: the address is native
    /// again, so stop redirecting it.
    fn back_home(
        &mut self,
        now: Now,
        r: &Registration,
        ob: &msg::OldBinding,
        out: &mut impl Sink,
    ) -> Status {
        let id = self.cfg.id.clone();
        let st = self.check_proof(
            ProofDomain::Redirect,
            &r.node,
            &ob.cred,
            &id,
            r.addr,
            r.seq,
            &ob.proof,
            None,
        );
        if st != Status::Ok {
            self.counters.rx_refused += 1;
            return st;
        }
        let addr = ob.cred.addr();
        if let Some(b) = self.bindings.get(&u32::from(addr)) {
            if b.role == Role::Home {
                info!("{addr} is native again; releasing its redirect");
                if let Some(b) = self.remove_binding(addr, out) {
                    self.send_tunnel_release(now, b.peer, addr, out);
                }
            }
        }
        Status::Ok
    }

    /// An address issued by a peer: install our side, then ask the issuer.
    /// `None` means a request is under way.
    fn visit(
        &mut self,
        now: Now,
        r: &Registration,
        ob: &msg::OldBinding,
        reg_id: u32,
        out: &mut impl Sink,
    ) -> Option<Status> {
        let addr = ob.cred.addr();
        let Some(p) = self.cfg.peers.iter().position(|p| p.id == ob.cred.issuer) else {
            self.counters.rx_refused += 1;
            info!("{addr}: issuer {} is not a roaming peer", ob.cred.issuer);
            return Some(Status::NotPeer);
        };
        if !self.cfg.peers[p].prefixes.iter().any(|x| x.contains(addr)) {
            self.counters.rx_refused += 1;
            return Some(Status::BadRequest);
        }
        // The node's key is in the registration: check its proof here too,
        // so that nobody on the LAN can make us ask the issuer in its name
        // (a refused refresh would tear down the node's working binding).
        let input = ProofInput::new(ProofDomain::Redirect, &ob.cred, &self.cfg.id, r.addr, r.seq);
        if !msg::verify_proof(&r.node, &input, &ob.proof) {
            self.counters.rx_refused += 1;
            return Some(Status::BadProof);
        }
        let key = u32::from(addr);
        let lifetime_ms = u64::from(self.cfg.binding_lifetime_s) * 1000;
        let same = |b: &Binding| b.role == Role::Visitor && b.peer == p && b.node == r.node;
        match self.bindings.get_mut(&key) {
            Some(b) if same(b) && r.seq <= b.last_seq => {
                self.counters.rx_replay += 1;
                return Some(Status::Replay);
            }
            Some(b) if same(b) => {
                // A refresh; the issuer extends its side too.
                b.cred = ob.cred.clone();
                b.last_seq = b.last_seq.max(r.seq);
            }
            Some(_) => {
                self.counters.rx_refused += 1;
                return Some(Status::AddressInUse);
            }
            None => {
                if !self.has_room(p, &r.node) {
                    self.counters.table_full += 1;
                    return Some(Status::NoCapacity);
                }
                let b = Binding {
                    role: Role::Visitor,
                    peer: p,
                    node: r.node,
                    cred: ob.cred.clone(),
                    created_ms: now.ms,
                    // Replaced by the issuer's lifetime when it answers.
                    expires_ms: now.ms + lifetime_ms,
                    pending: true,
                    last_seq: r.seq,
                    mac: r.mac,
                };
                self.add_binding(addr, b, out);
            }
        }
        let req_id = self.new_req_id();
        let m = Message::TunnelRequest(self.authed(TunnelRequest {
            req_id,
            node: r.node,
            cred: ob.cred.clone(),
            node_addr: r.addr,
            seq: r.seq,
            proof: ob.proof,
            lifetime_s: self.cfg.binding_lifetime_s,
        }));
        self.request(
            now,
            p,
            req_id,
            OutKind::Tunnel {
                addr,
                reg: Some(reg_id),
            },
            m,
            out,
        );
        None
    }

    fn on_tunnel_reply(&mut self, now: Now, p: PeerIdx, m: TunnelReply, out: &mut impl Sink) {
        let Some(o) = self.outgoing.get(&m.req_id) else {
            return; // a duplicate answer
        };
        if o.peer != p {
            self.counters.rx_unexpected += 1;
            return;
        }
        let OutKind::Tunnel { addr, reg } = o.kind else {
            return;
        };
        self.outgoing.remove(&m.req_id);
        if m.status != Status::Ok {
            info!(
                "peer {} refused {addr}: {:?}",
                self.cfg.peers[p].id, m.status
            );
            self.tunnel_failed(now, addr, reg, m.status, out);
            return;
        }
        if let Some(b) = self.bindings.get_mut(&u32::from(addr)) {
            b.pending = false;
            let life = u64::from(m.lifetime_s.min(self.cfg.binding_lifetime_s)) * 1000;
            b.expires_ms = now.ms + life;
            info!("{addr} relayed from peer {}", self.cfg.peers[p].id);
        }
        self.reg_result(now, reg, addr, Status::Ok, out);
    }

    fn tunnel_failed(
        &mut self,
        now: Now,
        addr: Ipv4Addr,
        reg: Option<u32>,
        st: Status,
        out: &mut impl Sink,
    ) {
        // Remove our side: it was installed for this request only, unless
        // the binding was already working (a refresh that timed out keeps it
        // until its lifetime ends).
        let keep = st == Status::Timeout
            && self
                .bindings
                .get(&u32::from(addr))
                .is_some_and(|b| !b.pending);
        if !keep {
            self.remove_binding(addr, out);
        }
        self.reg_result(now, reg, addr, st, out);
    }

    fn reg_result(
        &mut self,
        now: Now,
        reg: Option<u32>,
        addr: Ipv4Addr,
        st: Status,
        out: &mut impl Sink,
    ) {
        let Some(id) = reg else { return };
        let Some(g) = self.regs.get_mut(&id) else {
            return;
        };
        if g.done_until_ms.is_some() {
            return;
        }
        let _ = g.reply.results.push(BindingResult {
            addr: addr.octets(),
            status: st,
        });
        g.waiting = g.waiting.saturating_sub(1);
        if g.waiting == 0 {
            g.done_until_ms = Some(now.ms + DONE_KEEP_MS);
            let (dst, m) = (g.from, Message::RegistrationReply(g.reply.clone()));
            self.send_node(dst, &m, out);
        }
    }

    fn on_release(&mut self, now: Now, src: SocketAddrV4, r: Release, out: &mut impl Sink) {
        let addr = r.cred.addr();
        let mut st = Status::Ok;
        if let Some(b) = self.bindings.get(&u32::from(addr)) {
            if b.role != Role::Visitor || b.node != r.node {
                st = Status::BadRequest;
            } else if r.seq <= b.last_seq {
                st = Status::Replay;
            } else {
                let input = ProofInput::new(
                    ProofDomain::Release,
                    &r.cred,
                    &self.cfg.id,
                    r.node_addr,
                    r.seq,
                );
                if !msg::verify_proof(&r.node, &input, &r.proof) {
                    st = Status::BadProof;
                }
            }
            if st == Status::Ok {
                info!("node released {addr}");
                if let Some(b) = self.remove_binding(addr, out) {
                    self.send_tunnel_release(now, b.peer, addr, out);
                }
            } else {
                self.counters.rx_refused += 1;
            }
        }
        // Nothing held is success too: releases are idempotent.
        let m = Message::ReleaseReply(ReleaseReply {
            req_id: r.req_id,
            addr: addr.octets(),
            status: st,
        });
        self.send_node(src, &m, out);
    }

    // ---- peer requests (home side) ---------------------------------------

    fn on_tunnel_request(
        &mut self,
        now: Now,
        p: PeerIdx,
        m: TunnelRequest,
        lan: &impl LanView,
        out: &mut impl Sink,
    ) {
        let addr = m.cred.addr();
        let peer_id = self.cfg.peers[p].id.clone();
        let mut st = self.check_proof(
            ProofDomain::Redirect,
            &m.node,
            &m.cred,
            &peer_id,
            m.node_addr,
            m.seq,
            &m.proof,
            Some((p, m.req_id)),
        );
        if st == Status::Ok {
            let mac = self.creds.get(&u32::from(addr)).map(|c| c.mac);
            if let (Some(holder), Some(mac)) = (lan.holder(addr), mac) {
                if holder != mac {
                    warn!("{addr} is held by another host on the LAN; refusing redirect");
                    st = Status::AddressInUse;
                }
            }
        }
        let key = u32::from(addr);
        let life = m.lifetime_s.min(self.cfg.binding_lifetime_s);
        let expires_ms = now.ms + u64::from(life) * 1000;
        if st == Status::Ok {
            match self.bindings.get(&key).map(|b| (b.role, b.peer)) {
                Some((Role::Home, q)) if q == p => {
                    if let Some(b) = self.bindings.get_mut(&key) {
                        b.expires_ms = expires_ms;
                    }
                }
                Some((Role::Home, q)) => {
                    // The node moved on: redirect straight to its new agent
                    // (no chains) and tell the previous one.
                    if self.binding_count(p) >= self.cfg.max_per_peer {
                        st = Status::NoCapacity;
                    } else {
                        info!(
                            "{addr} moves from peer {} to {}",
                            self.cfg.peers[q].id, peer_id
                        );
                        if let Some(old) = self.remove_binding(addr, out) {
                            self.send_tunnel_release(now, q, addr, out);
                            self.add_binding(
                                addr,
                                Binding {
                                    peer: p,
                                    expires_ms,
                                    created_ms: now.ms,
                                    ..old
                                },
                                out,
                            );
                        }
                    }
                }
                Some((Role::Visitor, _)) => st = Status::BadRequest,
                None => {
                    if self.has_room(p, &m.node) {
                        info!("redirecting {addr} to peer {peer_id}");
                        self.add_binding(
                            addr,
                            Binding {
                                role: Role::Home,
                                peer: p,
                                node: m.node,
                                cred: m.cred.clone(),
                                created_ms: now.ms,
                                expires_ms,
                                mac: self.creds.get(&u32::from(addr)).map_or([0; 6], |c| c.mac),
                                pending: false,
                                last_seq: m.seq,
                            },
                            out,
                        );
                    } else {
                        self.counters.table_full += 1;
                        st = Status::NoCapacity;
                    }
                }
            }
            if let Some(c) = self.creds.get_mut(&key) {
                c.expires_ms = c
                    .expires_ms
                    .max(now.ms + u64::from(self.cfg.credential_lifetime_s) * 1000);
            }
        }
        if st != Status::Ok {
            self.counters.rx_refused += 1;
            info!("refusing redirect of {addr} to peer {peer_id}: {st:?}");
        }
        let reply = Message::TunnelReply(self.authed(TunnelReply {
            req_id: m.req_id,
            addr: addr.octets(),
            status: st,
            lifetime_s: life,
        }));
        self.reply_peer(now, p, reply, out);
    }

    fn on_tunnel_release(&mut self, now: Now, p: PeerIdx, m: TunnelRelease, out: &mut impl Sink) {
        let addr = Ipv4Addr::from(m.addr);
        // A peer can only release what relates to itself.
        if self
            .bindings
            .get(&u32::from(addr))
            .is_some_and(|b| b.peer == p)
        {
            info!("peer {} released {addr}", self.cfg.peers[p].id);
            self.remove_binding(addr, out);
        }
        let reply = Message::TunnelReleaseReply(self.authed(TunnelReleaseReply {
            req_id: m.req_id,
            addr: m.addr,
            status: Status::Ok,
        }));
        self.reply_peer(now, p, reply, out);
    }

    // ---- persistence ------------------------------------------------------

    /// Serialise bindings and credentials (remaining lifetimes relative to
    /// `now`) for a restart of the daemon.
    pub fn save(&self, now: Now) -> Vec<u8> {
        fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
            if let Ok(v) = postcard::to_extend(v, core::mem::take(out)) {
                *out = v;
            }
        }
        let mut out = Vec::new();
        put(&mut out, &self.boot);
        put(&mut out, &self.next_serial);
        put(&mut out, &self.bindings.len());
        for (a, b) in &self.bindings {
            let left = b.expires_ms.saturating_sub(now.ms);
            let peer = &self.cfg.peers[b.peer].id;
            put(&mut out, &(a.to_be_bytes(), b, left, peer));
        }
        put(&mut out, &self.creds.len());
        for (a, c) in &self.creds {
            put(
                &mut out,
                &(a.to_be_bytes(), c, c.expires_ms.saturating_sub(now.ms)),
            );
        }
        out
    }

    pub fn restore(&mut self, now: Now, data: &[u8], out: &mut impl Sink) -> bool {
        type SavedBinding = ([u8; 4], Binding, u64, AgentId);
        type SavedCred = ([u8; 4], CredEntry, u64);
        fn take<'a, T: Deserialize<'a>>(rest: &mut &'a [u8]) -> Option<T> {
            let (v, r) = postcard::take_from_bytes(rest).ok()?;
            *rest = r;
            Some(v)
        }
        /// Skips `n` elements; None if one does not decode.
        fn skip<'a, T: Deserialize<'a>>(rest: &mut &'a [u8], n: usize) -> Option<()> {
            (0..n).try_for_each(|_| take::<T>(rest).map(|_| ()))
        }
        // First check that the whole file decodes (a damaged file changes
        // nothing), then apply it element by element.
        let mut rest = data;
        let Some((next_serial, n_bindings, bindings_at)) = (|| {
            take::<u32>(&mut rest)?;
            let next_serial = take::<u32>(&mut rest)?;
            let n = take::<usize>(&mut rest)?;
            let at = rest;
            skip::<SavedBinding>(&mut rest, n)?;
            Some((next_serial, n, at))
        })() else {
            return false;
        };
        let Some(n_creds) = take::<usize>(&mut rest) else {
            return false;
        };
        let creds_at = rest;
        if skip::<SavedCred>(&mut rest, n_creds).is_none() {
            return false;
        }
        self.next_serial = self.next_serial.max(next_serial);
        let mut rest = creds_at;
        for _ in 0..n_creds {
            let Some((a, mut c, left)) = take::<SavedCred>(&mut rest) else {
                break;
            };
            if self.creds.len() < self.cfg.max_credentials {
                c.expires_ms = now.ms + left;
                c.last_req = None;
                self.creds.insert(u32::from_be_bytes(a), c);
            }
        }
        let mut rest = bindings_at;
        for _ in 0..n_bindings {
            let Some((a, mut b, left, peer)) = take::<SavedBinding>(&mut rest) else {
                break;
            };
            // Peers are matched by id: a reload may have reordered them.
            let Some(p) = self.cfg.peers.iter().position(|x| x.id == peer) else {
                continue;
            };
            b.peer = p;
            if !self.has_room(b.peer, &b.node) {
                continue;
            }
            b.expires_ms = now.ms + left;
            b.pending = false;
            self.add_binding(Ipv4Addr::from(a), b, out);
        }
        true
    }
}

#[cfg(test)]
mod tests;
