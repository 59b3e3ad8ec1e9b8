//! The agent's side of talking to roaming peers: the authenticated
//! envelope (sender, instance, sequence, echo, tag) on every peer message,
//! replay checks on the way in, and requests kept for retransmission
//! until the peer answers.
//!
//! Replay protection needs no clock and no counter kept across restarts.
//! A request is fresh if it continues the sender's run we know (same
//! instance, higher sequence), or if it echoes the challenge nonce we
//! sent it; anything else (a new run of the peer, our own restart, or a
//! replay of an old run) is answered with a [`PeerChallenge`] and not
//! acted on. Only the peer holding the key can answer a challenge, and a
//! nonce is used once. Replies need no such check: each is accepted only
//! for a request still outstanding, under an id nobody can guess.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use log::{debug, info, warn};

use super::{Action, Agent, Now, PeerIdx, Sink};
use crate::limit::Rate;
use crate::msg::{
    self, AgentId, Authed, Message, PeerChallenge, PeerHello, PeerHelloReply, PeerMoveChallenge,
    Status, TunnelRelease,
};
use crate::prf;
use crate::retry::Backoff;

/// What a request to a peer is about.
#[derive(Clone, Debug)]
pub(super) enum OutKind {
    Tunnel {
        addr: Ipv4Addr,
        reg: Option<u32>,
    },
    Release {
        addr: Ipv4Addr,
    },
    /// Telling the peer of our run and address (at start, after a move).
    Hello,
}

/// A request to a peer, kept until it is answered or given up.
#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    pub(super) peer: PeerIdx,
    pub(super) kind: OutKind,
    pub(super) msg: Message,
    pub(super) retry: Backoff,
}

/// What we know of a peer's runs and it of ours.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PeerState {
    /// The run of the peer whose requests we accept, and the newest
    /// sequence number accepted from it (0: none yet).
    rx_instance: u64,
    rx_seq: u64,
    /// The nonce of our outstanding challenge to the peer (0: none).
    challenge: u64,
    /// The peer's latest challenge to us, echoed in our requests.
    echo: u64,
    /// Where the peer is now if it moved away from its configured
    /// endpoint (its WAN address changed): learned from a request answered
    /// from there to a challenge we sent there.
    moved_to: Option<Ipv4Addr>,
    /// When an authenticated message of the peer last came (ms), and
    /// whether a request to it went unanswered since: what the operator
    /// sees as the partner's reachability.
    heard_ms: Option<u64>,
    unanswered: bool,
}

/// Is a roaming partner answering, as far as our exchanges tell?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// Nothing exchanged with it since we started.
    Unknown,
    /// It answered (or asked) last.
    Yes,
    /// Our last request to it was given up.
    No,
}

impl PeerState {
    pub(super) fn heard(&mut self, now_ms: u64) {
        self.heard_ms = Some(now_ms);
        self.unanswered = false;
    }

    pub(super) fn heard_ms(&self) -> Option<u64> {
        self.heard_ms
    }

    pub(super) fn reachability(&self) -> Reachability {
        match (self.unanswered, self.heard_ms) {
            (true, _) => Reachability::No,
            (false, Some(_)) => Reachability::Yes,
            (false, None) => Reachability::Unknown,
        }
    }

    /// Does a request of run `instance` with sequence `seq` continue the
    /// peer's run we know?
    pub(super) fn continues(&self, instance: u64, seq: u64) -> bool {
        instance == self.rx_instance && self.rx_seq != 0 && seq > self.rx_seq
    }

    pub(super) fn accepted(&mut self, seq: u64) {
        self.rx_seq = seq;
    }

    pub(super) fn echo(&self) -> u64 {
        self.echo
    }

    pub(super) fn moved_to(&self) -> Option<Ipv4Addr> {
        self.moved_to
    }

    pub(super) fn set_moved_to(&mut self, to: Option<Ipv4Addr>) {
        self.moved_to = to;
    }
}

/// A request's envelope: (instance, seq, echo, request id); None for
/// replies and challenges.
pub(super) fn request_envelope(m: &Message) -> Option<(u64, u64, u64, u64)> {
    match m {
        Message::TunnelRequest(a) => Some((a.instance, a.seq, a.echo, a.msg.req_id)),
        Message::TunnelRelease(a) => Some((a.instance, a.seq, a.echo, a.msg.req_id)),
        Message::PeerHello(a) => Some((a.instance, a.seq, a.echo, a.msg.req_id)),
        _ => None,
    }
}

/// The request a reply or challenge answers (None for requests).
pub(super) fn answered_request(m: &Message) -> Option<u64> {
    match m {
        Message::TunnelReply(a) => Some(a.msg.req_id),
        Message::TunnelReleaseReply(a) => Some(a.msg.req_id),
        Message::PeerHelloReply(a) => Some(a.msg.req_id),
        Message::PeerChallenge(a) => Some(a.msg.req_id),
        Message::PeerMoveChallenge(a) => Some(a.msg.req_id),
        _ => None,
    }
}

struct Envelope {
    sender: AgentId,
    instance: u64,
    seq: u64,
    echo: u64,
}

impl Envelope {
    fn wrap<T: Clone>(&self, a: &Authed<T>) -> Authed<T> {
        Authed {
            sender: self.sender.clone(),
            instance: self.instance,
            seq: self.seq,
            echo: self.echo,
            msg: a.msg.clone(),
        }
    }
}

/// Challenges per peer: a burst for the requests of a restart, then a
/// trickle (a flood of replays cannot make us flood the peer).
pub(super) const CHALLENGES: Rate = Rate {
    per_s: 20,
    burst: 16,
};

/// Move challenges' nonces are valid in the epoch they were made in and
/// the next: a peer has 30 to 60 s to answer.
const MOVE_EPOCH_MS: u64 = 30_000;

/// The challenge bucket of peer `p`'s moves: apart from its run
/// challenges, so replays from forged addresses cannot spend the budget
/// its restarts need.
fn move_bucket(p: PeerIdx) -> u32 {
    (p as u32) | 0x8000_0000
}

impl Agent {
    pub(super) fn retransmit(&mut self, now: Now, out: &mut impl Sink<Action>) {
        let due: Vec<u64> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.retry.is_due(now.ms))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(mut o) = self.outgoing.remove(&id) else {
                continue;
            };
            if o.retry.exhausted(self.cfg.retransmit_tries) {
                warn!(
                    "peer {} did not answer request {id}",
                    self.cfg.peers[o.peer].id
                );
                if let Some(ps) = self.peers.get_mut(o.peer) {
                    ps.unanswered = true;
                }
                match o.kind {
                    OutKind::Tunnel { addr, reg } => {
                        self.tunnel_failed(now, addr, reg, Status::Timeout, out)
                    }
                    // The peer's side expires on its own.
                    OutKind::Release { addr } => debug!("release of {addr} unanswered"),
                    // It learns of us from our next request.
                    OutKind::Hello => {}
                }
                continue;
            }
            o.retry
                .retransmitted(now.ms, self.cfg.retransmit_initial_ms);
            let msg = self.reseal(o.peer, &o.msg);
            self.send_peer(o.peer, &msg, out);
            o.msg = msg;
            self.outgoing.insert(id, o);
        }
    }

    /// Check sender, tag, source address and (for requests) freshness.
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        sender: &AgentId,
        data: &[u8],
        m: &Message,
        out: &mut impl Sink<Action>,
    ) -> Option<PeerIdx> {
        let Some(p) = self.cfg.peers.iter().position(|p| &p.id == sender) else {
            if self.answer_retired(now, src, sender, data, m, out) {
                return None;
            }
            self.counters.rx_unauthenticated += 1;
            info!("peer message from {src} claiming {sender}: not a roaming peer");
            return None;
        };
        if !msg::verify_tag(data, &self.cfg.peers[p].key) {
            self.counters.rx_unauthenticated += 1;
            info!("peer message from {src} failed authentication as {sender}");
            return None;
        }
        if *src.ip() != self.peer_endpoint(p) {
            return self.on_new_address(now, p, *src.ip(), m, out);
        }
        // Replies and challenges answer one of our outstanding requests;
        // their handlers match them by id.
        let Some((instance, seq, echo, req_id)) = request_envelope(m) else {
            return Some(p);
        };
        let ps = &mut self.peers[p];
        let continues = ps.continues(instance, seq);
        let answers = ps.challenge != 0 && echo == ps.challenge;
        if continues || answers {
            if answers {
                ps.challenge = 0;
            }
            ps.rx_instance = instance;
            ps.rx_seq = seq;
            return Some(p);
        }
        if instance == ps.rx_instance {
            // The run we know, but not newer: a replay or a reordering
            // (the retransmission, with a new sequence, recovers it).
            self.counters.rx_replay += 1;
            debug!("replayed or reordered request from peer {sender} (seq {seq})");
            return None;
        }
        // Another run of the peer, or a replay of one: ask.
        self.counters.rx_challenged += 1;
        if !self.challenges.take(p as u32, 1, now.ms) {
            return None;
        }
        let ps = &mut self.peers[p];
        if ps.challenge == 0 {
            ps.challenge = self.prf.u64();
        }
        let nonce = ps.challenge;
        debug!("challenging peer {sender} (new run {instance:x})");
        let m = Message::PeerChallenge(self.authed(PeerChallenge { req_id, nonce }));
        self.reply_peer(p, m, out);
        None
    }

    /// A correctly tagged message of peer `p` from `src`, which is not
    /// where we know it: its WAN address may have changed (DHCP, PPPoE),
    /// or someone replays its datagrams from a forged address. A tag does
    /// not tell them apart, so a request is answered with a
    /// [`PeerMoveChallenge`] *sent to the new address and naming it*: the
    /// peer answers only a challenge naming its own address, so only the
    /// key holder that is at that address can answer (a challenge carried
    /// elsewhere and handed to the real peer is ignored by it), and the
    /// answer, from there, moves the peer's endpoint (its tunnel, its
    /// firewall opening) there. The nonce is computed, not stored (like
    /// the cookies): replays from other addresses cannot replace it.
    /// Replies and challenges from elsewhere are dropped: the request they
    /// answer is retransmitted.
    fn on_new_address(
        &mut self,
        now: Now,
        p: PeerIdx,
        src: Ipv4Addr,
        m: &Message,
        out: &mut impl Sink<Action>,
    ) -> Option<PeerIdx> {
        let id = &self.cfg.peers[p].id;
        let Some((instance, seq, echo, req_id)) = request_envelope(m) else {
            self.counters.rx_unauthenticated += 1;
            info!("answer of peer {id} from {src}, not its address: dropped");
            return None;
        };
        if !self.can_move_to(p, src) {
            self.counters.rx_unauthenticated += 1;
            info!("peer {id} from {src}: not an address it can move to");
            return None;
        }
        let epoch = now.ms / MOVE_EPOCH_MS;
        let nonce_of = |e| {
            prf::ct_eq(
                &self.move_nonce(e, p, src).to_le_bytes(),
                &echo.to_le_bytes(),
            )
        };
        let answers = nonce_of(epoch) | (epoch > 0 && nonce_of(epoch - 1));
        if answers {
            let ps = &self.peers[p];
            if instance == ps.rx_instance && seq <= ps.rx_seq {
                // An answer seen before: a replay, not the peer.
                self.counters.rx_replay += 1;
                return None;
            }
            let from = self.peer_endpoint(p);
            let moved_to = (src != self.cfg.peers[p].endpoint).then_some(src);
            let ps = &mut self.peers[p];
            ps.moved_to = moved_to;
            ps.rx_instance = instance;
            ps.rx_seq = seq;
            // A run challenge sent to the old address is moot; its answer,
            // if replayed, must not be taken.
            ps.challenge = 0;
            self.counters.peer_moved += 1;
            info!("peer {} moved from {from} to {src}", self.cfg.peers[p].id);
            out.push(Action::PeerEndpoint { peer: p, addr: src });
            return Some(p);
        }
        self.counters.rx_challenged += 1;
        if !self.challenges.take(move_bucket(p), 1, now.ms) {
            return None;
        }
        let nonce = self.move_nonce(epoch, p, src);
        debug!(
            "challenging peer {} at its new address {src}",
            self.cfg.peers[p].id
        );
        let m = Message::PeerMoveChallenge(self.authed(PeerMoveChallenge {
            req_id,
            nonce,
            addr: src.octets(),
        }));
        let c = self.seal(self.peers[p].echo, &m);
        let (key, dst) = (
            self.cfg.peers[p].key,
            SocketAddrV4::new(src, self.cfg.peers[p].port),
        );
        self.send_tagged(&key, dst, &c, out);
        None
    }

    /// The nonce of a move challenge to peer `p` at `addr` in `epoch`:
    /// keyed by this run's secret, so only we can make it, and bound to
    /// the peer and the address.
    fn move_nonce(&self, epoch: u64, p: PeerIdx, addr: Ipv4Addr) -> u64 {
        let h = prf::hmac(
            &self.cookie_key,
            &[
                b"move",
                &epoch.to_le_bytes(),
                self.cfg.peers[p].id.as_bytes(),
                &addr.octets(),
            ],
        );
        let mut n = [0u8; 8];
        n.copy_from_slice(&h[..8]);
        // Never 0 (it means "no echo").
        u64::from_le_bytes(n).max(1)
    }

    /// Can peer `p` be at `a`? Not nowhere, nor another peer's endpoint,
    /// configured or current (two tunnels with one remote end cannot be
    /// told apart), nor inside our LAN's or any peer's prefixes
    /// (addresses that live behind an agent, not WANs).
    pub(super) fn can_move_to(&self, p: PeerIdx, a: Ipv4Addr) -> bool {
        let taken = (0..self.cfg.peers.len())
            .any(|q| q != p && (self.peer_endpoint(q) == a || self.cfg.peers[q].endpoint == a))
            || self.cfg.is_lan(a)
            || (self.cfg.peers.iter()).any(|x| x.prefixes.iter().any(|x| x.contains(a)));
        !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() || taken)
    }

    /// A move challenge from peer `p`: we answer it (our request again,
    /// echoing the nonce) only if it names our own address. One naming
    /// another was sent there by `p` to whoever replays our datagrams from
    /// there, and handed to us: answering it would move us there.
    pub(super) fn on_move_challenge(
        &mut self,
        p: PeerIdx,
        c: PeerMoveChallenge,
        out: &mut impl Sink<Action>,
    ) {
        if Ipv4Addr::from(c.addr) != self.cfg.endpoint {
            self.counters.rx_refused_move += 1;
            info!(
                "peer {} challenged us at {}, not our address: ignored",
                self.cfg.peers[p].id,
                Ipv4Addr::from(c.addr)
            );
            return;
        }
        self.on_challenge(
            p,
            PeerChallenge {
                req_id: c.req_id,
                nonce: c.nonce,
            },
            out,
        );
    }

    /// Where peer `p` is now: its configured endpoint, or where it moved.
    pub fn peer_endpoint(&self, p: PeerIdx) -> Ipv4Addr {
        self.peers[p].moved_to.unwrap_or(self.cfg.peers[p].endpoint)
    }

    /// Whether peer `p` answers, and when it was last heard (ms).
    pub fn peer_reachability(&self, p: PeerIdx) -> (Reachability, Option<u64>) {
        self.peers
            .get(p)
            .map_or((Reachability::Unknown, None), |ps| {
                (ps.reachability(), ps.heard_ms())
            })
    }

    /// Tells every peer of this run and of our address (at start, and
    /// after our WAN address changed): each learns our new run at once,
    /// and, if we moved, challenges us at the new address and re-points
    /// its tunnel there, before a handover needs it.
    pub fn hello_peers(&mut self, now: Now, out: &mut impl Sink<Action>) {
        for p in 0..self.cfg.peers.len() {
            let req_id = self.new_req_id();
            let m = Message::PeerHello(self.authed(PeerHello { req_id }));
            self.request(now, p, req_id, OutKind::Hello, m, out);
        }
    }

    /// An answer that only ends request `req_id` to peer `p`.
    pub(super) fn answered(&mut self, p: PeerIdx, req_id: u64) {
        if self.outgoing.get(&req_id).is_some_and(|o| o.peer == p) {
            self.outgoing.remove(&req_id);
        }
    }

    /// A peer's hello: it was authenticated (and, from a new address,
    /// challenged there) on the way in; the answer ends its retransmission.
    pub(super) fn on_hello(&mut self, p: PeerIdx, h: PeerHello, out: &mut impl Sink<Action>) {
        let m = Message::PeerHelloReply(self.authed(PeerHelloReply { req_id: h.req_id }));
        self.reply_peer(p, m, out);
    }

    /// A challenge to one of our requests: send it again at once, echoing
    /// the nonce (so do all our later requests to that peer).
    pub(super) fn on_challenge(
        &mut self,
        p: PeerIdx,
        c: PeerChallenge,
        out: &mut impl Sink<Action>,
    ) {
        let Some(mut o) = self.outgoing.remove(&c.req_id) else {
            return; // not ours, or answered already
        };
        if o.peer != p {
            self.outgoing.insert(c.req_id, o);
            return;
        }
        self.peers[p].echo = c.nonce;
        let msg = self.reseal(p, &o.msg);
        self.send_peer(p, &msg, out);
        o.msg = msg;
        self.outgoing.insert(c.req_id, o);
    }

    /// Give a message to peer `p` a fresh envelope (this run, a new
    /// sequence, the peer's latest challenge).
    fn reseal(&mut self, p: PeerIdx, m: &Message) -> Message {
        self.seal(self.peers[p].echo, m)
    }

    /// `m` in an envelope of this run, a new sequence and `echo`.
    pub(super) fn seal(&mut self, echo: u64, m: &Message) -> Message {
        self.tx_seq += 1;
        let e = Envelope {
            sender: self.cfg.id.clone(),
            instance: self.instance,
            seq: self.tx_seq,
            echo,
        };
        match m {
            Message::TunnelRequest(a) => Message::TunnelRequest(e.wrap(a)),
            Message::TunnelReply(a) => Message::TunnelReply(e.wrap(a)),
            Message::TunnelRelease(a) => Message::TunnelRelease(e.wrap(a)),
            Message::TunnelReleaseReply(a) => Message::TunnelReleaseReply(e.wrap(a)),
            Message::PeerChallenge(a) => Message::PeerChallenge(e.wrap(a)),
            Message::PeerHello(a) => Message::PeerHello(e.wrap(a)),
            Message::PeerHelloReply(a) => Message::PeerHelloReply(e.wrap(a)),
            Message::PeerMoveChallenge(a) => Message::PeerMoveChallenge(e.wrap(a)),
            other => other.clone(),
        }
    }

    pub(super) fn send_peer(&mut self, p: PeerIdx, m: &Message, out: &mut impl Sink<Action>) {
        let peer = &self.cfg.peers[p];
        let (key, dst) = (
            peer.key,
            SocketAddrV4::new(self.peer_endpoint(p), peer.port),
        );
        self.send_tagged(&key, dst, m, out);
    }

    /// Sends `m` to `dst`, tagged under `key`.
    pub(super) fn send_tagged(
        &mut self,
        key: &[u8; 32],
        dst: SocketAddrV4,
        m: &Message,
        out: &mut impl Sink<Action>,
    ) {
        match msg::encode(m, Some(key)) {
            Some(data) => {
                self.counters.tx += 1;
                out.push(Action::Send { dst, data })
            }
            None => self.counters.tx_failed_encode += 1,
        }
    }

    /// A message in an envelope to be filled in when it is sent.
    pub(super) fn authed<T>(&self, msg: T) -> Authed<T> {
        Authed {
            sender: self.cfg.id.clone(),
            instance: 0,
            seq: 0,
            echo: 0,
            msg,
        }
    }

    /// Unpredictable, so that nobody can answer a request it did not see.
    pub(super) fn new_req_id(&mut self) -> u64 {
        loop {
            let id = self.prf.u64();
            if !self.outgoing.contains_key(&id) {
                return id;
            }
        }
    }

    /// Send a request to a peer and keep it for retransmission.
    pub(super) fn request(
        &mut self,
        now: Now,
        p: PeerIdx,
        req_id: u64,
        kind: OutKind,
        m: Message,
        out: &mut impl Sink<Action>,
    ) {
        let m = self.reseal(p, &m);
        self.send_peer(p, &m, out);
        self.outgoing.insert(
            req_id,
            Outgoing {
                peer: p,
                kind,
                msg: m,
                retry: Backoff::start(now.ms, self.cfg.retransmit_initial_ms),
            },
        );
    }

    pub(super) fn reply_peer(&mut self, p: PeerIdx, m: Message, out: &mut impl Sink<Action>) {
        let m = self.reseal(p, &m);
        self.send_peer(p, &m, out);
    }

    pub(super) fn send_tunnel_release(
        &mut self,
        now: Now,
        p: PeerIdx,
        addr: Ipv4Addr,
        out: &mut impl Sink<Action>,
    ) {
        let req_id = self.new_req_id();
        let m = Message::TunnelRelease(self.authed(TunnelRelease {
            req_id,
            addr: addr.octets(),
        }));
        self.request(now, p, req_id, OutKind::Release { addr }, m, out);
    }
}
