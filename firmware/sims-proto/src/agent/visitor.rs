//! The visitor side: nodes on our LAN now. A node registers with the
//! addresses it held elsewhere; for each we install our side (the address
//! goes into the tunnel to its issuer) and ask the issuer to redirect it
//! here, answering the node once every issuer has answered. Releases come
//! from the node when its last session on an old address ended.

use core::net::{Ipv4Addr, SocketAddrV4};

use log::info;

use super::peer::OutKind;
use super::{Action, Agent, Binding, LanView, Now, PeerIdx, Role, Sink};
use crate::msg::{
    self, BindingResult, Message, NodeKey, Registration, RegistrationReply, Release, ReleaseReply,
    Status, TunnelReply, TunnelRequest,
};

/// A node registration waiting for peers, then kept a little while so that
/// its retransmission gets the same answer.
#[derive(Clone, Debug)]
pub(super) struct PendingReg {
    node: NodeKey,
    node_req: u64,
    from: SocketAddrV4,
    /// The node's session key: the reply is sealed with it.
    key: [u8; 32],
    reply: RegistrationReply,
    waiting: usize,
    /// When the answered entry may be forgotten.
    pub(super) done_until_ms: Option<u64>,
}

/// How long an answered registration is kept for its retransmissions.
const DONE_KEEP_MS: u64 = 10_000;

impl Agent {
    /// A node's registration (`data`, decoded as `r`), checked cheapest
    /// first: its source, its cookie (it really receives this address's
    /// packets), the LAN's own view of who holds the address, its share of
    /// the pending table; then its seal under the node's session (an HMAC;
    /// the session's X25519 only the first time this run sees the node,
    /// within the source's budget). The old bindings' proofs are the
    /// issuers' to check (home.rs): we forward them.
    pub(super) fn on_registration(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        r: Registration,
        data: &[u8],
        lan: &impl LanView,
        out: &mut impl Sink<Action>,
    ) {
        let cur = Ipv4Addr::from(r.addr);
        // A retransmission of a registration we are working on or answered.
        if let Some((_, reg)) = self
            .regs
            .iter()
            .find(|(_, g)| g.node == r.node && g.node_req == r.req_id)
        {
            if reg.waiting == 0 && reg.from == src {
                let (m, key) = (Message::RegistrationReply(reg.reply.clone()), reg.key);
                self.send_node(src, &m, Some(&key), out);
            }
            return;
        }
        let mut reply = RegistrationReply {
            req_id: r.req_id,
            status: Status::Ok,
            cred: None,
            lifetime_s: self.cfg.binding_lifetime_s,
            results: heapless::Vec::new(),
            cookie: None,
            cred_key: [0; 32],
            mac: [0; 16],
        };
        // Refusals before the seal is checked are not sealed: no key is
        // worked out for a source that may be spoofed.
        let refuse = |a: &mut Self, reply: &mut RegistrationReply, st, out: &mut _| {
            a.counters.rx_refused += 1;
            reply.status = st;
            a.send_node(src, &Message::RegistrationReply(reply.clone()), None, out);
        };
        // An early registration (§5.6): from 0.0.0.0, before the node has
        // an address here (its DHCP is still running), with its old
        // addresses only. There is no address to prove with a cookie or
        // to check in the neighbour table; the seal still proves the
        // node's key, the issuers still check the proofs, and all early
        // registrations share the budgets of the one source 0.0.0.0 (a
        // flood of them delays only the early path: the node registers
        // again from its address once it has one).
        let early = cur.is_unspecified();
        if *src.ip() != cur || !(early || self.cfg.is_lan(cur)) {
            refuse(self, &mut reply, Status::BadRequest, out);
            return;
        }
        if !early && !self.cookie_ok(now, cur, &r.node, &r.cookie) {
            self.counters.rx_bad_cookie += 1;
            refuse(self, &mut reply, Status::BadCookie, out);
            return;
        }
        // The neighbour table knows the address under another link-layer
        // address: someone else holds it (or claims a MAC not its own).
        if !early && lan.holder(cur).is_some_and(|m| m != r.mac) {
            info!("{cur}: registration with a MAC the LAN does not know for it");
            refuse(self, &mut reply, Status::AddressInUse, out);
            return;
        }
        if !self.room_for_registration(src) {
            self.counters.table_full += 1;
            refuse(self, &mut reply, Status::NoCapacity, out);
            return;
        }
        let session = match self.session(now, cur, &r.node) {
            Ok(k) => k,
            // No budget for a new session now (retry later), or a node key
            // no session can be made with.
            Err(st) => {
                refuse(self, &mut reply, st, out);
                return;
            }
        };
        if !msg::reply_authentic(data, &session) {
            // Not sealed by the key's holder, or under an older session of
            // ours (the node missed our restart): it solicits again and
            // gets our advertisement.
            self.counters.rx_unauthenticated += 1;
            refuse(self, &mut reply, Status::BadCookie, out);
            return;
        }
        if early {
            self.counters.early_registrations += 1;
        } else {
            reply.cookie = Some(self.cookie_for(now, cur, &r.node));
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
        // A node back on its home address that no longer lists it (it let
        // it go while away: no sockets on it for the grace time) is home
        // all the same: the redirect would send its packets away.
        if !early
            && (self.bindings.get(&u32::from(cur)))
                .is_some_and(|b| b.role == Role::Home && b.node == r.node)
        {
            info!("{cur}: its node is back home; ending its redirect");
            self.end_redirect(now, cur, None, out);
        }
        // The credential for the current address comes last: a node back
        // home has just had its old redirect removed above. An early
        // registration has no address to give one for yet.
        if !early {
            match self.issue(now, cur, &r) {
                Ok((cred, cred_key)) => {
                    reply.cred_key = msg::box_cred_key(&session, &cred, &cred_key);
                    reply.cred = Some(cred);
                }
                Err(st) => reply.status = st,
            }
        }
        let mut reg = PendingReg {
            node: r.node,
            node_req: r.req_id,
            from: src,
            key: session,
            reply,
            waiting,
            done_until_ms: None,
        };
        if waiting == 0 {
            let m = Message::RegistrationReply(reg.reply.clone());
            self.send_node(src, &m, Some(&session), out);
            reg.done_until_ms = Some(now.ms + DONE_KEEP_MS);
        }
        self.regs.insert(reg_id, reg);
    }

    /// An address issued by a peer: install our side, then ask the issuer.
    /// `None` means a request is under way.
    fn visit(
        &mut self,
        now: Now,
        r: &Registration,
        ob: &msg::OldBinding,
        reg_id: u32,
        out: &mut impl Sink<Action>,
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
        let key = u32::from(addr);
        let lifetime_ms = u64::from(self.cfg.binding_lifetime_s) * 1000;
        let same = |b: &Binding| b.role == Role::Visitor && b.peer == p && b.node == r.node;
        let refresh = match self.bindings.get(&key) {
            // The registration that made or last refreshed this binding,
            // again (sealed: the node's retransmission, or a replay of
            // it): answered as before, nothing asked or changed. Its
            // answered entry may have been pushed out of `regs`.
            Some(b) if same(b) && r.seq == b.last_seq => {
                return Some(if b.pending {
                    Status::NoCapacity
                } else {
                    Status::Ok
                });
            }
            Some(b) if same(b) && r.seq < b.last_seq => {
                self.counters.rx_replay += 1;
                return Some(Status::Replay);
            }
            // Our request for it is still under way (asked for this
            // node's early registration, or its previous one): this
            // registration takes over its answer rather than asking again.
            // Two requests would share one fate: the first's timeout
            // removes the pending binding, and the second's registration
            // was answered BadRequest (found by the testbed's s15, the
            // issuer down during an early registration).
            Some(b) if same(b) && b.pending => {
                if let Some(prev) = self.take_over_request(addr, reg_id) {
                    if let Some(b) = self.bindings.get_mut(&key) {
                        b.last_seq = b.last_seq.max(r.seq);
                    }
                    // The superseded registration: the node no longer
                    // waits for it; "try again" if it does.
                    self.reg_result(now, prev, addr, Status::NoCapacity, out);
                    return None;
                }
                true
            }
            Some(b) if same(b) => true,
            // Another node's claim that its issuer has not confirmed yet
            // (a guest claiming the address first): not final, ask again.
            Some(b) if b.role == Role::Visitor && b.pending => {
                self.counters.rx_refused += 1;
                return Some(Status::NoCapacity);
            }
            Some(_) => {
                self.counters.rx_refused += 1;
                return Some(Status::AddressInUse);
            }
            None if !self.has_room(p, &r.node) => {
                self.counters.table_full += 1;
                return Some(Status::NoCapacity);
            }
            None => false,
        };
        // The registration is sealed by the node's key (checked above), so
        // nobody on the LAN can make us ask the issuer in its name (a
        // refused refresh would tear down the node's working binding). A
        // host asking in its own name spends its budget: only the issuer
        // can tell a made-up credential, and asking costs it and the WAN.
        if !self.spend(now, Ipv4Addr::from(r.addr)) {
            return Some(Status::NoCapacity);
        }
        match self.bindings.get_mut(&key) {
            Some(b) if refresh => {
                // A refresh; the issuer extends its side too.
                b.cred = ob.cred.clone();
                b.last_seq = b.last_seq.max(r.seq);
            }
            _ => {
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
                if !self.add_binding(addr, b, out) {
                    // Nothing installed: do not ask the issuer to redirect.
                    return Some(Status::Failed);
                }
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

    /// Points our outstanding request about `addr` at registration `reg`.
    /// `None`: there is no such request; else the registration it served.
    fn take_over_request(&mut self, addr: Ipv4Addr, reg: u32) -> Option<Option<u32>> {
        self.outgoing.values_mut().find_map(|o| match &mut o.kind {
            OutKind::Tunnel { addr: a, reg: r } if *a == addr => Some(r.replace(reg)),
            _ => None,
        })
    }

    pub(super) fn on_tunnel_reply(
        &mut self,
        now: Now,
        p: PeerIdx,
        m: TunnelReply,
        out: &mut impl Sink<Action>,
    ) {
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

    pub(super) fn tunnel_failed(
        &mut self,
        now: Now,
        addr: Ipv4Addr,
        reg: Option<u32>,
        st: Status,
        out: &mut impl Sink<Action>,
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

    /// Room in the table of registrations for one more from `src`:
    /// answered entries (kept only to answer retransmissions) make way,
    /// oldest first; those waiting for peers are limited per source.
    fn room_for_registration(&mut self, src: SocketAddrV4) -> bool {
        let waiting_from = self
            .regs
            .values()
            .filter(|g| g.done_until_ms.is_none() && g.from.ip() == src.ip())
            .count();
        if waiting_from >= self.cfg.max_pending_per_source {
            return false;
        }
        while self.regs.len() >= self.cfg.max_pending {
            let oldest = self
                .regs
                .iter()
                .filter_map(|(id, g)| g.done_until_ms.map(|t| (t, *id)))
                .min();
            match oldest {
                Some((_, id)) => {
                    self.regs.remove(&id);
                }
                None => return false,
            }
        }
        true
    }

    pub(super) fn reg_result(
        &mut self,
        now: Now,
        reg: Option<u32>,
        addr: Ipv4Addr,
        st: Status,
        out: &mut impl Sink<Action>,
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
            let (dst, m, key) = (g.from, Message::RegistrationReply(g.reply.clone()), g.key);
            self.send_node(dst, &m, Some(&key), out);
        }
    }

    /// A node's release (`data`, decoded as `r`) of a visitor binding:
    /// its cookie, our record, its sequence number, then its seal under
    /// the node's session.
    pub(super) fn on_release(
        &mut self,
        now: Now,
        src: SocketAddrV4,
        r: Release,
        data: &[u8],
        out: &mut impl Sink<Action>,
    ) {
        let addr = r.cred.addr();
        let from = Ipv4Addr::from(r.node_addr);
        let mut st = Status::Ok;
        if *src.ip() != from || !self.cookie_ok(now, from, &r.node, &r.cookie) {
            // Not from the node at its address: a guest spoofing it.
            self.counters.rx_bad_cookie += 1;
            st = Status::BadCookie;
        } else if let Some(b) = self.bindings.get(&u32::from(addr)) {
            if b.role != Role::Visitor || b.node != r.node {
                st = Status::BadRequest;
            } else if r.seq <= b.last_seq {
                st = Status::Replay;
            } else {
                st = match self.session(now, from, &r.node) {
                    Err(st) => st,
                    Ok(k) if !msg::reply_authentic(data, &k) => Status::BadProof,
                    Ok(_) => Status::Ok,
                };
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
            mac: [0; 16],
        });
        // Sealed if we have the node's session; a refusal costs no key
        // agreement.
        let key = match st {
            Status::BadCookie => None,
            _ => self.known_session(&r.node),
        };
        self.send_node(src, &m, key.as_ref(), out);
    }
}
