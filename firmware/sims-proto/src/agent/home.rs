//! The home side: our own LAN's addresses. We issue each node a
//! credential for the address it has here, and when a roaming peer asks
//! (the node moved there and proved it holds the credential) we redirect
//! the address into the tunnel to that peer, straight to wherever the
//! node is now (never a chain), until the peer or the node releases it.

use core::net::Ipv4Addr;

use log::{info, warn};

use super::{Action, Agent, Binding, CredEntry, LanView, Now, PeerIdx, Role, Sink};
use crate::msg::{
    self, Credential, Message, NodeProof, Registration, Status, TunnelRelease, TunnelReleaseReply,
    TunnelReply, TunnelRequest,
};

impl Agent {
    /// Issue (or renew) the credential for the node's current address,
    /// with its key. The caller has checked that the node holds the
    /// address now (its cookie, the neighbour table, its sealed
    /// registration), so it may replace a record of another key.
    /// AddressInUse: redirected for another node; NoCapacity: the table is
    /// full.
    pub(super) fn issue(
        &mut self,
        now: Now,
        cur: Ipv4Addr,
        r: &Registration,
    ) -> Result<(Credential, [u8; 32]), Status> {
        let key = u32::from(cur);
        // The address is ours but redirected for another node: whoever
        // registers it here now cannot be its holder.
        if let Some(b) = self.bindings.get(&key) {
            if b.role == Role::Home && b.node != r.node {
                self.counters.rx_refused += 1;
                warn!("{cur} is redirected for another node; not issuing");
                return Err(Status::AddressInUse);
            }
        }
        let expires_ms = now.ms + u64::from(self.cfg.credential_lifetime_s) * 1000;
        let (serial, cred_key) = match self.creds.get_mut(&key) {
            Some(c) if c.node == r.node => {
                c.expires_ms = expires_ms;
                c.mac = r.mac;
                (c.serial, c.key)
            }
            existing => {
                if existing.is_none() && self.creds.len() >= self.cfg.max_credentials {
                    self.counters.table_full += 1;
                    return Err(Status::NoCapacity);
                }
                // Random: nobody can predict the credential of an address,
                // nor its key.
                let serial = self.prf.u64();
                let cred_key = self.prf.bytes32();
                self.creds.insert(
                    key,
                    CredEntry {
                        node: r.node,
                        mac: r.mac,
                        serial,
                        last_seq: 0,
                        last_use: None,
                        expires_ms,
                        key: cred_key,
                    },
                );
                (serial, cred_key)
            }
        };
        let cred = Credential {
            addr: cur.octets(),
            issuer: self.cfg.id.clone(),
            serial,
        };
        Ok((cred, cred_key))
    }

    /// The issuer's check of a node's proof for a credential we issued:
    /// ours, known, same node and serial, not older than the last
    /// accepted, then the proof under the credential's key (an HMAC); the
    /// sequence number and the use are recorded on success.
    /// The very proof accepted last is accepted again (a retransmission, or
    /// the request of an agent that restarted): it repeats what it did.
    fn check_issued(&mut self, proof: &NodeProof) -> Status {
        let cred = proof.input.cred;
        let seq = proof.input.seq;
        let addr = cred.addr();
        if cred.issuer != self.cfg.id || !self.cfg.is_lan(addr) {
            return Status::BadRequest;
        }
        let Some(c) = self.creds.get(&u32::from(addr)) else {
            return Status::UnknownCredential;
        };
        if &c.node != proof.node || c.serial != cred.serial {
            return Status::UnknownCredential;
        }
        let agent = proof.input.agent;
        let node_addr = proof.input.node_addr;
        let again = seq == c.last_seq
            && c.last_use
                .as_ref()
                .is_some_and(|(a, n)| a.as_str() == agent && *n == node_addr);
        if seq <= c.last_seq && !again {
            return Status::Replay;
        }
        if !proof.verify(&c.key) {
            return Status::BadProof;
        }
        if let Some(c) = self.creds.get_mut(&u32::from(addr)) {
            c.last_seq = seq;
            c.last_use = Some((agent.into(), node_addr));
        }
        Status::Ok
    }

    /// The node is back on the LAN that issued `ob`: the address is native
    /// again, so stop redirecting it.
    pub(super) fn back_home(
        &mut self,
        now: Now,
        r: &Registration,
        ob: &msg::OldBinding,
        out: &mut impl Sink<Action>,
    ) -> Status {
        let id = self.cfg.id.clone();
        let proof = NodeProof::of_registration(r, ob, &id);
        let st = self.check_issued(&proof);
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

    pub(super) fn on_tunnel_request(
        &mut self,
        now: Now,
        p: PeerIdx,
        m: TunnelRequest,
        lan: &impl LanView,
        out: &mut impl Sink<Action>,
    ) {
        let addr = m.cred.addr();
        let peer_id = self.cfg.peers[p].id.clone();
        let mut st = self.check_issued(&NodeProof::of_tunnel_request(&m, &peer_id));
        if st == Status::Ok {
            let mac = self.creds.get(&u32::from(addr)).map(|c| c.mac);
            if let (Some(holder), Some(mac)) = (lan.holder(addr), mac) {
                if holder != mac {
                    warn!("{addr} is held by another host on the LAN; refusing redirect");
                    st = Status::AddressInUse;
                    // A refused refresh must not leave the redirect: the
                    // address is another host's now.
                    self.end_redirect(now, addr, Some(p), out);
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
                            let moved = Binding {
                                peer: p,
                                expires_ms,
                                created_ms: now.ms,
                                ..old
                            };
                            if !self.add_binding(addr, moved, out) {
                                st = Status::Failed;
                            }
                        }
                    }
                }
                Some((Role::Visitor, _)) => st = Status::BadRequest,
                None => {
                    if self.has_room(p, &m.node) {
                        info!("redirecting {addr} to peer {peer_id}");
                        let added = self.add_binding(
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
                        if !added {
                            st = Status::Failed;
                        }
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
        self.reply_peer(p, reply, out);
    }

    /// A host appeared on our LAN with `addr` and link-layer address
    /// `mac` (a neighbour entry, from the platform). If we redirect `addr`
    /// for a node with another MAC, the address is that host's now (DHCP
    /// gave it out, or it was configured): stop redirecting it at once and
    /// tell the peer, so it is never both redirected and held here.
    pub fn lan_neighbour(
        &mut self,
        now: Now,
        addr: Ipv4Addr,
        mac: [u8; 6],
        out: &mut impl Sink<Action>,
    ) {
        let key = u32::from(addr);
        // The node's MAC as its redirect recorded it (the credential may
        // be gone: a state file of an older version keeps no credentials).
        let node_mac = match self.bindings.get(&key) {
            Some(b) if b.role == Role::Home && b.mac != [0; 6] => Some(b.mac),
            Some(b) if b.role == Role::Home => self.creds.get(&key).map(|c| c.mac),
            _ => None,
        };
        if node_mac.is_some_and(|m| m != mac) {
            warn!("{addr} appeared on the LAN at another host; ending its redirect");
            self.counters.redirects_ended += 1;
            self.end_redirect(now, addr, None, out);
        }
    }

    /// Removes the home binding of `addr`, if any, telling its peer unless
    /// that peer is `told` (it is being answered already).
    pub(super) fn end_redirect(
        &mut self,
        now: Now,
        addr: Ipv4Addr,
        told: Option<PeerIdx>,
        out: &mut impl Sink<Action>,
    ) {
        if !self
            .bindings
            .get(&u32::from(addr))
            .is_some_and(|b| b.role == Role::Home)
        {
            return;
        }
        if let Some(b) = self.remove_binding(addr, out) {
            if Some(b.peer) != told {
                self.send_tunnel_release(now, b.peer, addr, out);
            }
        }
    }

    pub(super) fn on_tunnel_release(
        &mut self,
        p: PeerIdx,
        m: TunnelRelease,
        out: &mut impl Sink<Action>,
    ) {
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
        self.reply_peer(p, reply, out);
    }
}
