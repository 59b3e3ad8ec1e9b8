//! The agent's saved state, for a restart of the daemon: bindings and
//! credentials with their remaining lifetimes. The file is
//! `crate::persist`'s header, this body and a checksum, version 4:
//!
//! ```text
//! n: usize, n × SavedBinding,
//! m: usize, m × SavedCred,
//! k: usize, k × SavedMove      (from version 3)
//! ```
//!
//! written and read element by element; the test
//! `state_file_layout_is_saved` pins it. Versions 0 and 1 (serials of 32
//! bits, a boot counter and a serial counter in front) are migrated, not
//! dropped: an upgrade keeps the bindings. Credentials before version 4
//! have no key (protocol version 2 proved moves with Ed25519): they are
//! read and dropped, so nodes get new ones at their next registration.
//!
//! Nothing restored is trusted more than a message: an entry whose address
//! is not ours (home, credential) or its peer's (visitor), or whose peer
//! is gone, is skipped; lifetimes are cut to what the configuration
//! allows. A visitor binding still waiting for its issuer is not restored:
//! it was never confirmed, and the node's retransmission asks again.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use log::warn;
use serde::Deserialize;

use super::{Action, Agent, Binding, CredEntry, Now, PeerIdx, Role, Sink};
use crate::msg::{AgentId, Credential, NodeKey};
use crate::persist::{Kind, Reader, Writer};

/// A binding: address, the binding, ms of lifetime left, the peer's id
/// (peers are matched by id on restore: a reload may reorder them).
pub(super) type SavedBinding = ([u8; 4], Binding, u64, AgentId);
/// A credential: address, the entry, ms of lifetime left.
pub(super) type SavedCred = ([u8; 4], CredEntry, u64);
/// A peer that moved: its id, its configured endpoint, where it is now
/// (restored only while the configuration still names that endpoint).
pub(super) type SavedMove = (AgentId, [u8; 4], [u8; 4]);

/// Version 0 and 1 layouts, read to migrate them.
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub struct Credential1 {
        pub addr: [u8; 4],
        pub issuer: AgentId,
        pub serial: u32,
    }

    impl From<Credential1> for Credential {
        fn from(c: Credential1) -> Self {
            Credential {
                addr: c.addr,
                issuer: c.issuer,
                serial: u64::from(c.serial),
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Binding1 {
        pub role: Role,
        pub peer: PeerIdx,
        pub node: NodeKey,
        pub cred: Credential1,
        pub created_ms: u64,
        pub expires_ms: u64,
        pub pending: bool,
        pub last_seq: u64,
        pub mac: [u8; 6],
    }

    /// Read to be dropped: no field is used.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    pub struct CredEntry1 {
        pub node: NodeKey,
        pub mac: [u8; 6],
        pub serial: u32,
        pub last_seq: u64,
        pub _last_req: Option<(PeerIdx, u32)>,
        pub expires_ms: u64,
    }

    pub fn binding(r: &mut Reader) -> Option<SavedBinding> {
        let (a, b, left, peer) = r.take::<([u8; 4], Binding1, u64, AgentId)>()?;
        let b = Binding {
            role: b.role,
            peer: b.peer,
            node: b.node,
            cred: b.cred.into(),
            created_ms: b.created_ms,
            expires_ms: b.expires_ms,
            pending: b.pending,
            last_seq: b.last_seq,
            mac: b.mac,
        };
        Some((a, b, left, peer))
    }

    /// A version 0 or 1 credential, read to be dropped (it has no key).
    pub fn cred(r: &mut Reader) -> Option<()> {
        r.take::<([u8; 4], CredEntry1, u64)>().map(drop)
    }

    /// A version 2 or 3 credential (no key), read to be dropped.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    pub struct CredEntry3 {
        pub node: NodeKey,
        pub mac: [u8; 6],
        pub serial: u64,
        pub last_seq: u64,
        pub last_use: Option<(AgentId, [u8; 4])>,
        pub expires_ms: u64,
    }

    pub fn cred3(r: &mut Reader) -> Option<()> {
        r.take::<([u8; 4], CredEntry3, u64)>().map(drop)
    }
}

/// Reads one element of each table in the layout of `version`.
#[derive(Clone, Copy)]
struct Layout {
    version: u8,
}

impl Layout {
    fn binding(self, r: &mut Reader) -> Option<SavedBinding> {
        match self.version {
            0 | 1 => v1::binding(r),
            _ => r.take::<SavedBinding>(),
        }
    }
    /// A credential; `Some(None)` for one of an older layout (dropped).
    fn cred(self, r: &mut Reader) -> Option<Option<SavedCred>> {
        match self.version {
            0 | 1 => v1::cred(r).map(|()| None),
            2 | 3 => v1::cred3(r).map(|()| None),
            _ => r.take::<SavedCred>().map(Some),
        }
    }
}

impl Agent {
    /// Serialise bindings and credentials (remaining lifetimes relative to
    /// `now`) for a restart of the daemon.
    pub fn save(&self, now: Now) -> Vec<u8> {
        let mut w = Writer::new(Kind::Agent);
        w.put(&self.bindings.len());
        for (a, b) in &self.bindings {
            let left = b.expires_ms.saturating_sub(now.ms);
            let peer = &self.cfg.peers[b.peer].id;
            // The tuple by reference: no copy of the binding.
            w.put(&(a.to_be_bytes(), b, left, peer));
        }
        w.put(&self.creds.len());
        for (a, c) in &self.creds {
            w.put(&(a.to_be_bytes(), c, c.expires_ms.saturating_sub(now.ms)));
        }
        let moved = || {
            (self.cfg.peers.iter().zip(&self.peers))
                .filter_map(|(c, s)| Some((&c.id, c.endpoint.octets(), s.moved_to()?.octets())))
        };
        w.put(&moved().count());
        for m in moved() {
            w.put(&m);
        }
        w.finish()
    }

    /// Restores what [`Agent::save`] wrote, installing each valid binding
    /// (actions into `out`). A file that does not decode whole changes
    /// nothing and returns false.
    pub fn restore(&mut self, now: Now, data: &[u8], out: &mut impl Sink<Action>) -> bool {
        let (version, mut r) = match Reader::open(data, Kind::Agent) {
            Ok(x) => x,
            Err(e) => {
                warn!("saved state not restored: {e:?}");
                return false;
            }
        };
        let layout = Layout { version };
        // First check that the whole file decodes (a damaged file changes
        // nothing), then apply it element by element.
        let Some((n_bindings, bindings_at, n_creds, creds_at, n_moves, moves_at)) = (|| {
            if version < 2 {
                r.take::<u32>()?; // boot
                r.take::<u32>()?; // next serial
            }
            let n = r.take::<usize>()?;
            let b_at = r;
            (0..n).try_for_each(|_| layout.binding(&mut r).map(|_| ()))?;
            let m = r.take::<usize>()?;
            let c_at = r;
            (0..m).try_for_each(|_| layout.cred(&mut r).map(|_| ()))?;
            let k = if version >= 3 { r.take::<usize>()? } else { 0 };
            let k_at = r;
            r.skip::<SavedMove>(k)?;
            r.is_empty().then_some((n, b_at, m, c_at, k, k_at))
        })() else {
            warn!("saved state damaged; not restored");
            return false;
        };
        // Peers' moves first: the tunnels the bindings bring up go there.
        let mut r = moves_at;
        for _ in 0..n_moves {
            let Some((id, configured, to)) = r.take::<SavedMove>() else {
                break;
            };
            let to = Ipv4Addr::from(to);
            let Some(p) = self.cfg.peers.iter().position(|x| x.id == id) else {
                continue;
            };
            if self.cfg.peers[p].endpoint.octets() != configured || !self.can_move_to(p, to) {
                continue;
            }
            self.peers[p].set_moved_to(Some(to));
            out.push(Action::PeerEndpoint { peer: p, addr: to });
        }
        let cred_max = u64::from(self.cfg.credential_lifetime_s) * 1000;
        let binding_max = u64::from(self.cfg.binding_lifetime_s) * 1000;
        let mut r = creds_at;
        for _ in 0..n_creds {
            let Some(saved) = layout.cred(&mut r) else {
                break;
            };
            let Some((a, mut c, left)) = saved else {
                continue;
            };
            let addr = Ipv4Addr::from(a);
            if !self.cfg.is_lan(addr) || self.creds.len() >= self.cfg.max_credentials {
                warn!("saved credential for {addr} is not for our LAN; skipped");
                continue;
            }
            c.expires_ms = now.ms.saturating_add(left.min(cred_max));
            self.creds.insert(u32::from(addr), c);
        }
        let mut r = bindings_at;
        for _ in 0..n_bindings {
            let Some((a, mut b, left, peer)) = layout.binding(&mut r) else {
                break;
            };
            let addr = Ipv4Addr::from(a);
            let Some(p) = self.cfg.peers.iter().position(|x| x.id == peer) else {
                continue;
            };
            let ours = match b.role {
                Role::Home => self.cfg.is_lan(addr),
                Role::Visitor => {
                    !b.pending && self.cfg.peers[p].prefixes.iter().any(|x| x.contains(addr))
                }
            };
            if !ours || self.bindings.contains_key(&u32::from(addr)) {
                continue;
            }
            b.peer = p;
            if !self.has_room(b.peer, &b.node) {
                continue;
            }
            b.expires_ms = now.ms.saturating_add(left.min(binding_max));
            b.created_ms = now.ms;
            // A binding the kernel refuses is not restored (logged).
            let _ = self.add_binding(addr, b, out);
        }
        true
    }
}
