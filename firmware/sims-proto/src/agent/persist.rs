//! The agent's saved state, for a restart of the daemon (not a router
//! reboot: the state directory is a tmpfs): bindings and credentials with
//! their remaining lifetimes. The file is `crate::persist`'s header and
//! this body, version 1 (version 0 is the same body without a header):
//!
//! ```text
//! boot: u32, next_serial: u32,
//! n: usize, n × SavedBinding,
//! m: usize, m × SavedCred
//! ```
//!
//! written and read element by element; the test
//! `state_file_layout_is_saved` pins it.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use log::warn;

use super::{Action, Agent, Binding, CredEntry, Now, Sink};
use crate::msg::AgentId;
use crate::persist::{Kind, Reader, Writer};

/// A binding: address, the binding, ms of lifetime left, the peer's id
/// (peers are matched by id on restore: a reload may reorder them).
pub(super) type SavedBinding = ([u8; 4], Binding, u64, AgentId);
/// A credential: address, the entry, ms of lifetime left.
pub(super) type SavedCred = ([u8; 4], CredEntry, u64);

impl Agent {
    /// Serialise bindings and credentials (remaining lifetimes relative to
    /// `now`) for a restart of the daemon.
    pub fn save(&self, now: Now) -> Vec<u8> {
        let mut w = Writer::new(Kind::Agent);
        w.put(&self.boot);
        w.put(&self.next_serial);
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
        w.finish()
    }

    /// Restores what [`Agent::save`] wrote, installing each binding
    /// (actions into `out`). A file that does not decode whole changes
    /// nothing and returns false.
    pub fn restore(&mut self, now: Now, data: &[u8], out: &mut impl Sink<Action>) -> bool {
        let mut r = match Reader::open(data, Kind::Agent) {
            // Versions 0 and 1 have the same body.
            Ok((_, r)) => r,
            Err(e) => {
                warn!("saved state not restored: {e:?}");
                return false;
            }
        };
        // First check that the whole file decodes (a damaged file changes
        // nothing), then apply it element by element.
        let Some((next_serial, n_bindings, bindings_at)) = (|| {
            r.take::<u32>()?;
            let next_serial = r.take::<u32>()?;
            let n = r.take::<usize>()?;
            let at = r;
            r.skip::<SavedBinding>(n)?;
            Some((next_serial, n, at))
        })() else {
            return false;
        };
        let Some(n_creds) = r.take::<usize>() else {
            return false;
        };
        let creds_at = r;
        if r.skip::<SavedCred>(n_creds).is_none() {
            return false;
        }
        self.next_serial = self.next_serial.max(next_serial);
        let mut r = creds_at;
        for _ in 0..n_creds {
            let Some((a, mut c, left)) = r.take::<SavedCred>() else {
                break;
            };
            if self.creds.len() < self.cfg.max_credentials {
                c.expires_ms = now.ms + left;
                c.last_req = None;
                self.creds.insert(u32::from_be_bytes(a), c);
            }
        }
        let mut r = bindings_at;
        for _ in 0..n_bindings {
            let Some((a, mut b, left, peer)) = r.take::<SavedBinding>() else {
                break;
            };
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
