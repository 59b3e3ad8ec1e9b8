//! The agent's side of talking to roaming peers: the authenticated
//! envelope (sender, boot, sequence, time, tag) on every peer message,
//! replay checks on the way in, and requests kept for retransmission
//! until the peer answers.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use log::{debug, info, warn};

use super::{Action, Agent, Now, PeerIdx, Sink};
use crate::msg::{self, AgentId, Authed, Message, Status, TunnelRelease};
use crate::retry::Backoff;

/// What a request to a peer is about.
#[derive(Clone, Debug)]
pub(super) enum OutKind {
    Tunnel { addr: Ipv4Addr, reg: Option<u32> },
    Release { addr: Ipv4Addr },
}

/// A request to a peer, kept until it is answered or given up.
#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    pub(super) peer: PeerIdx,
    pub(super) kind: OutKind,
    pub(super) msg: Message,
    pub(super) retry: Backoff,
}

/// The newest envelope accepted from a peer: anything not newer is a replay.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PeerRx {
    boot: u32,
    seq: u64,
}

impl Agent {
    pub(super) fn retransmit(&mut self, now: Now, out: &mut impl Sink<Action>) {
        let due: Vec<u32> = self
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
                match o.kind {
                    OutKind::Tunnel { addr, reg } => {
                        self.tunnel_failed(now, addr, reg, Status::Timeout, out)
                    }
                    // The peer's side expires on its own.
                    OutKind::Release { addr } => debug!("release of {addr} unanswered"),
                }
                continue;
            }
            o.retry
                .retransmitted(now.ms, self.cfg.retransmit_initial_ms);
            let msg = self.reseal(&o.msg, now);
            self.send_peer(o.peer, &msg, out);
            o.msg = msg;
            self.outgoing.insert(id, o);
        }
    }

    /// Check sender, source address, tag, freshness and sequence.
    pub(super) fn authenticate(
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

    pub(super) fn send_peer(&mut self, p: PeerIdx, m: &Message, out: &mut impl Sink<Action>) {
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

    pub(super) fn authed<T>(&self, msg: T) -> Authed<T> {
        Authed {
            sender: self.cfg.id.clone(),
            boot: self.boot,
            seq: 0,
            unix_time: 0,
            msg,
        }
    }

    pub(super) fn new_req_id(&mut self) -> u32 {
        self.next_req = self.next_req.wrapping_add(1);
        self.next_req
    }

    /// Send a request to a peer and keep it for retransmission.
    pub(super) fn request(
        &mut self,
        now: Now,
        p: PeerIdx,
        req_id: u32,
        kind: OutKind,
        m: Message,
        out: &mut impl Sink<Action>,
    ) {
        let m = self.reseal(&m, now);
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

    pub(super) fn reply_peer(
        &mut self,
        now: Now,
        p: PeerIdx,
        m: Message,
        out: &mut impl Sink<Action>,
    ) {
        let m = self.reseal(&m, now);
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
