//! Peers that moved (their WAN address changed, and they answered a
//! challenge from the new one): the tunnel goes there, and so does the
//! firewall's ipip opening. fw4's per-peer rules come from the init
//! script's config (the configured endpoints); a moved peer's address is
//! an element of the set `sims_moved`, which the init script declares in
//! fw4 (procd service data) with our `fw4-moved` file as its loadfile: we
//! add the element live, and a fw4 reload reads it back from the file.
//! Off OpenWrt (no such set) the element is skipped and the file is just
//! a record.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use log::{debug, info, warn};
use sims_daemon::state;

use super::{ignore, Dataplane, Kind, ENOENT};

/// fw4's table, and the set in it that the init script declares for us.
pub const FW4_TABLE: &str = "fw4";
pub const FW4_MOVED_SET: &str = "sims_moved";
/// In the state directory: the set's loadfile, one address per line.
pub const MOVED_FILE: &str = "fw4-moved";

impl Dataplane {
    /// Where to keep the moved peers' addresses for fw4; the set and the
    /// file start empty (the agent's restore moves the peers again).
    pub fn keep_moves_in(&mut self, file: PathBuf) {
        self.moved_file = Some(file);
        if let Err(e) = ignore(self.nf.flush(FW4_TABLE, FW4_MOVED_SET), &[ENOENT]) {
            debug!("fw4 set {FW4_MOVED_SET}: {e}");
        }
        self.write_moves();
    }

    /// The agent's peer in slot `s` is now at `addr`.
    pub(super) fn peer_moved(&mut self, s: usize, addr: Ipv4Addr) -> io::Result<()> {
        let Some(slot) = self.peer_slot_mut(s) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such peer"));
        };
        let (configured, old) = (slot.endpoint, std::mem::replace(&mut slot.remote, addr));
        if old == addr {
            return Ok(());
        }
        if old != configured {
            let _ = self.nf.del(FW4_TABLE, FW4_MOVED_SET, old);
        }
        if addr != configured {
            if let Err(e) = ignore(self.nf.add(FW4_TABLE, FW4_MOVED_SET, addr), &[libc::EEXIST]) {
                debug!("fw4 set {FW4_MOVED_SET}: {e} (no fw4 here)");
            }
        }
        self.write_moves();
        // A kernel ipip device is re-pointed in place (the same device,
        // its routes and rule stay); a TUN has no remote (the forwarder
        // sends to the slot's `remote`).
        if let (Kind::Kernel, Some(index)) = (self.kind, self.tunnel(s).map(|t| t.index)) {
            let local = self.cfg.agent.endpoint;
            // The kernel recomputes the MTU on a change: ours again.
            let mtu = self.cfg.tunnel_mtu;
            let changed = self.nl.ipip_change(index, local, addr, 64);
            if let Err(e) = changed.and_then(|()| self.nl.link_set_mtu(index, mtu)) {
                // Then a new device to the new end, as at start.
                let name = self.slot_tunnel_name(s);
                warn!("re-pointing {name} in place: {e}; recreating it");
                self.tunnel_down(s)?;
                self.tunnel_up(s)?;
            }
        }
        info!(
            "tunnel {} now to {addr} (was {old})",
            self.slot_tunnel_name(s)
        );
        Ok(())
    }

    fn write_moves(&self) {
        let Some(file) = &self.moved_file else {
            return;
        };
        let text: String = (self.slots.iter().flatten())
            .filter(|x| x.remote != x.endpoint)
            .map(|x| format!("{}\n", x.remote))
            .collect();
        if let Err(e) = state::write_atomic(file, text.as_bytes(), state::PUBLIC) {
            warn!("{}: {e}", file.display());
        }
    }
}
