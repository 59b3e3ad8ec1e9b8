//! A new configuration taken in place (simsd's SIGHUP): the run goes on
//! (instance, keys, sequence numbers, every peer's replay state), so
//! peers notice nothing; bindings follow their peer by id, whatever its
//! position in the new list; a removed peer's bindings end, and it is
//! told (once: we no longer hold its agreement to retry under).
//!
//! A removed peer stays known for one binding lifetime, only to refuse:
//! a request from it is answered `NotPeer` (and a release `Ok`), so a
//! node it serves learns at its next refresh that its old address is no
//! longer relayed, instead of waiting for timeouts. Only requests that
//! continue the run we knew are answered: no replay, no new run (which
//! would need a challenge) gets an answer.
//!
//! A peer is the same agreement if its id and endpoint are (its key,
//! port and prefixes may change: a key rotation keeps the bindings).
//! Our own id, endpoint and port cannot change in place: peers know us by
//! them (the daemon restarts for that, keeping what it saved).

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use log::info;

use super::peer::{request_envelope, OutKind};
use super::{Action, Agent, AgentConfig, Now, PeerConfig, PeerIdx, PeerState, Role, Sink};
use crate::msg::{self, AgentId, Message, Status, TunnelReleaseReply, TunnelReply};

/// A peer removed by a reload, still answered with refusals.
#[derive(Clone, Debug)]
pub(super) struct Retired {
    cfg: PeerConfig,
    state: PeerState,
    until_ms: u64,
    /// The TunnelReleases sent to it at the reload, by request id: sent
    /// again (once) if it challenges them.
    releases: Vec<(u64, Message)>,
}

/// For each peer of the running configuration, its index in the new one
/// (None: removed).
pub type PeerMap = Vec<Option<PeerIdx>>;

impl Agent {
    /// Takes `cfg` in place of the running configuration. Returns where
    /// each old peer is now, or None (and nothing changed) if `cfg`
    /// changes our own id, endpoint or port.
    ///
    /// Bindings whose peer is gone, or whose address is no longer ours
    /// (home) or their peer's (visitor), are removed (actions into `out`,
    /// under the old peer indices) and their peer sent a TunnelRelease;
    /// registrations waiting on them are answered. Limits apply to what
    /// comes next: a lower `max_bindings` ends no binding.
    pub fn reconfigure(
        &mut self,
        now: Now,
        cfg: AgentConfig,
        out: &mut impl Sink<Action>,
    ) -> Option<PeerMap> {
        if cfg.id != self.cfg.id || cfg.endpoint != self.cfg.endpoint || cfg.port != self.cfg.port {
            return None;
        }
        let map: PeerMap = self
            .cfg
            .peers
            .iter()
            .map(|old| {
                cfg.peers
                    .iter()
                    .position(|p| p.id == old.id && p.endpoint == old.endpoint)
            })
            .collect();
        let ending: Vec<(Ipv4Addr, PeerIdx)> = self
            .bindings
            .iter()
            .map(|(a, b)| (Ipv4Addr::from(*a), b))
            .filter(|(addr, b)| match map[b.peer] {
                None => true,
                Some(q) => match b.role {
                    Role::Home => !cfg.is_lan(*addr),
                    Role::Visitor => !cfg.peers[q].prefixes.iter().any(|p| p.contains(*addr)),
                },
            })
            .map(|(addr, b)| (addr, b.peer))
            .collect();
        for (addr, p) in ending {
            info!(
                "{addr}: no longer covered by the agreement with {}; ending its binding",
                self.cfg.peers[p].id
            );
            if self.remove_binding(addr, out).is_some() {
                self.send_tunnel_release(now, p, addr, out);
            }
        }
        self.answer_orphans(now, out);
        // Requests to a removed peer are not retried; its releases wait
        // for a challenge (it may not know our run yet).
        let mut releases: Vec<(PeerIdx, u64, Message)> = Vec::new();
        self.outgoing.retain(|id, o| match map[o.peer] {
            Some(q) => {
                o.peer = q;
                true
            }
            None => {
                if let OutKind::Release { .. } = o.kind {
                    releases.push((o.peer, *id, o.msg.clone()));
                }
                false
            }
        });
        for b in self.bindings.values_mut() {
            if let Some(q) = map[b.peer] {
                b.peer = q;
            }
        }
        let mut peers = alloc::vec![PeerState::default(); cfg.peers.len()];
        let until_ms = now.ms + u64::from(self.cfg.binding_lifetime_s) * 1000;
        for (p, q) in map.iter().enumerate() {
            match *q {
                Some(q) => peers[q] = self.peers[p],
                None => self.retired.push(Retired {
                    cfg: self.cfg.peers[p].clone(),
                    state: self.peers[p],
                    until_ms,
                    releases: releases
                        .iter()
                        .filter(|(q, _, _)| *q == p)
                        .map(|(_, id, m)| (*id, m.clone()))
                        .collect(),
                }),
            }
        }
        // A peer added back is a peer again; the list is bounded by the
        // number of peers a config can hold, twice.
        self.retired
            .retain(|r| r.until_ms > now.ms && !cfg.peers.iter().any(|p| p.id == r.cfg.id));
        let over = self.retired.len().saturating_sub(2 * MAX_PEERS);
        self.retired.drain(..over);
        self.peers = peers;
        // Credentials for addresses that are no longer ours are forgotten
        // (their home bindings ended above).
        self.creds.retain(|a, _| cfg.is_lan(Ipv4Addr::from(*a)));
        // Budgets at the new rates (full again: a reload is the operator's).
        [self.verify_source, self.verify_total, self.challenges] = super::budgets(&cfg);
        self.cfg = cfg;
        // Node sessions within the (maybe smaller) limit: the least
        // recently used go; their nodes' next datagrams work them out again.
        self.trim_sessions(self.cfg.max_credentials.max(1));
        // A kept peer's move that the new peers make impossible (a peer
        // added at that address, or with it in its prefixes) is undone;
        // like the removals, the action names the peer as it was before.
        for (old, new) in map.iter().enumerate() {
            let Some(p) = *new else {
                continue;
            };
            let Some(at) = self.peers[p].moved_to() else {
                continue;
            };
            self.peers[p].set_moved_to(None);
            if !self.can_move_to(p, at) {
                let addr = self.cfg.peers[p].endpoint;
                out.push(Action::PeerEndpoint { peer: old, addr });
            } else {
                self.peers[p].set_moved_to(Some(at));
            }
        }
        Some(map)
    }
}

/// At most this many peers in a configuration (simsd's config refuses
/// more).
pub const MAX_PEERS: usize = 250;

impl Agent {
    /// Retired peers whose time is up are forgotten (from the timer).
    pub(super) fn expire_retired(&mut self, now: Now) {
        self.retired.retain(|r| r.until_ms > now.ms);
    }

    /// A message from `sender`, which is no peer now: if it is a retired
    /// peer's (its endpoint, its key) and continues its run, a request is
    /// refused. True if it was a retired peer's.
    pub(super) fn answer_retired(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        sender: &AgentId,
        data: &[u8],
        m: &Message,
        out: &mut impl Sink<Action>,
    ) -> bool {
        let Some(i) = self.retired.iter().position(|r| {
            &r.cfg.id == sender
                && r.until_ms > now.ms
                && *src.ip() == r.state.moved_to().unwrap_or(r.cfg.endpoint)
                && msg::verify_tag(data, &r.cfg.key)
        }) else {
            return false;
        };
        let r = &mut self.retired[i];
        let Some((instance, seq, _, _)) = request_envelope(m) else {
            // An answer to a release we sent it at the reload.
            let (req_id, nonce) = match m {
                Message::PeerChallenge(c) => (c.msg.req_id, Some(c.msg.nonce)),
                Message::TunnelReleaseReply(a) => (a.msg.req_id, None),
                _ => return true,
            };
            let Some(j) = r.releases.iter().position(|(id, _)| *id == req_id) else {
                return true;
            };
            let (_, release) = r.releases.swap_remove(j);
            if let Some(nonce) = nonce {
                let at = r.state.moved_to().unwrap_or(r.cfg.endpoint);
                let (key, dst) = (r.cfg.key, SocketAddrV4::new(at, r.cfg.port));
                let sealed = self.seal(nonce, &release);
                self.send_tagged(&key, dst, &sealed, out);
            }
            return true;
        };
        if !r.state.continues(instance, seq) {
            return true;
        }
        r.state.accepted(seq);
        let (key, echo) = (r.cfg.key, r.state.echo());
        let at = r.state.moved_to().unwrap_or(r.cfg.endpoint);
        let dst = SocketAddrV4::new(at, r.cfg.port);
        let answer = match m {
            Message::TunnelRequest(a) => Message::TunnelReply(self.authed(TunnelReply {
                req_id: a.msg.req_id,
                addr: a.msg.cred.addr,
                status: Status::NotPeer,
                lifetime_s: 0,
            })),
            Message::TunnelRelease(a) => {
                Message::TunnelReleaseReply(self.authed(TunnelReleaseReply {
                    req_id: a.msg.req_id,
                    addr: a.msg.addr,
                    status: Status::Ok,
                }))
            }
            _ => return true,
        };
        info!("refusing a request of {sender}: no longer a roaming peer");
        self.counters.rx_refused += 1;
        let sealed = self.seal(echo, &answer);
        self.send_tagged(&key, dst, &sealed, out);
        true
    }
}
