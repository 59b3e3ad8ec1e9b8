//! Keeping the kernel state ours and whole: what an earlier run left is
//! removed at start, and what someone else removed under us (netifd
//! flushes every rule when it restarts; a tunnel deleted by hand; lost
//! netlink events) is put back. Only state tagged with our protocol, in
//! our tables, or named like our tunnels is ever touched.

use std::io;
use std::net::Ipv4Addr;

use log::{debug, info, warn};
use sims_linux::monitor::Event;
use sims_proto::agent::MAX_PEERS;
use simsd::owned::{self, NFT_TABLE};

use super::{ignore, Dataplane, EEXIST, ENOENT, ESRCH};
use crate::nft;

impl Dataplane {
    /// Our tables, rules and tunnels left by an earlier run (crash, kill -9)
    /// are removed; the restored bindings are then installed afresh.
    /// Only state tagged with our protocol, in our tables, or named like
    /// our tunnels is touched.
    pub(super) fn remove_stale(&mut self) -> io::Result<()> {
        let proto = self.ids().route_protocol;
        for r in self.nl.rules()? {
            if r.protocol == proto {
                ignore(self.nl.rule_del(&r), &[ENOENT])?;
            }
        }
        // Every table a slot can have: a run that reloaded may have used
        // slots beyond this config's peers.
        let tables = self.ids().tables(MAX_PEERS);
        for r in self.nl.all_routes()? {
            if r.protocol == proto && tables.contains(&r.table) {
                ignore(self.nl.route_del(&r), &[ENOENT, ESRCH])?;
            }
        }
        let n = self.slots.len();
        for l in self.nl.links()? {
            if owned::is_our_tunnel(&l.name, l.kind.as_deref()) {
                info!("removing stale tunnel {}", l.name);
                ignore(self.nl.link_delete(l.index), &[ENOENT])?;
            }
        }
        for p in 0..n {
            ignore(self.nf.flush(NFT_TABLE, &nft::set_in(p)), &[ENOENT])?;
            ignore(self.nf.flush(NFT_TABLE, &nft::set_out(p)), &[ENOENT])?;
        }
        Ok(())
    }

    /// Put back whatever of our state is missing (after netifd flushed the
    /// rules, a tunnel was recreated, or events were lost).
    pub fn resync(&mut self) -> io::Result<()> {
        let rules = self.nl.rules()?;
        for s in 0..self.slots.len() {
            if self.peer_slot(s).is_none() {
                continue;
            }
            let Some(index) = self.tunnel(s).map(|t| t.index) else {
                // Never made (it failed before): try again; the other
                // peers' state is checked all the same.
                if let Err(e) = self.tunnel_up(s) {
                    warn!("{e}; trying again at the next check");
                }
                continue;
            };
            let name = self.slot_tunnel_name(s);
            let exists = self.nl.links()?.iter().any(|l| l.index == index);
            if !exists {
                warn!("tunnel {name} disappeared; recreating it");
                // Its traffic as last read joins the peer's total.
                self.fold_traffic(s);
                if let Some(x) = self.peer_slot_mut(s) {
                    x.tunnel = None;
                }
                self.tunnel_up(s)?;
                continue;
            }
            if !rules.contains(&self.peer_rule(s)) {
                ignore(self.nl.rule_add(&self.peer_rule(s)), &[EEXIST])?;
            }
            self.nl.route_replace(&self.default_route(s, index))?;
        }
        let home: Vec<_> = self.home.iter().copied().collect();
        for (a, p) in home {
            ignore(
                self.nf.add(NFT_TABLE, &nft::set_in(p), Ipv4Addr::from(a)),
                &[EEXIST],
            )?;
        }
        let visitor: Vec<_> = self.visitor.iter().copied().collect();
        for (a, p) in visitor {
            self.nl.route_replace(&self.host_route(a, self.lan_index))?;
            if let Some(mac) = self.visitor_mac.get(&a).copied() {
                self.put_neighbour(a, mac);
            }
            ignore(
                self.nf.add(NFT_TABLE, &nft::set_out(p), Ipv4Addr::from(a)),
                &[EEXIST],
            )?;
        }
        self.update_catch_all()
    }

    /// React to kernel events that concern our state.
    pub fn on_event(&mut self, ev: &Event) -> io::Result<()> {
        // Only losses of state we still want count: our own removals (and
        // the events of our own changes) must not cost a resync.
        if let Event::LinkNew(l) = ev {
            if l.name == self.cfg.lan_ifname && l.index != self.lan_index {
                // netifd recreated the bridge: our routes and neighbour
                // entries went with the old device.
                info!(
                    "LAN {} is a new device (index {} -> {}); moving our state to it",
                    l.name, self.lan_index, l.index
                );
                self.lan_index = l.index;
                self.lan_moved = true;
            }
            if l.index == self.lan_index && self.lan_moved {
                // A new bridge is created down: routes on it fail until it
                // is up, so try again at each of its changes.
                match self.resync() {
                    Ok(()) => {
                        info!("our state is on the new {}", l.name);
                        self.lan_moved = false;
                    }
                    Err(e) => debug!("new {} not ready yet: {e}", l.name),
                }
                return Ok(());
            }
        }
        let tunnel_up = |s: usize| self.tunnel(s).is_some();
        let peers = self.slots.len();
        let need = match ev {
            // netifd deletes every rule when it (re)starts.
            Event::RuleDel(r) => {
                (*r == self.catch_all_rule() && self.slots.iter().any(Option::is_some))
                    || (0..peers).any(|p| *r == self.peer_rule(p) && tunnel_up(p))
            }
            Event::RouteDel(r) => {
                r.protocol == self.ids().route_protocol
                    && ((r.table == self.ids().table
                        && r.dst_len == 32
                        && self.visitor.iter().any(|(a, _)| *a == u32::from(r.dst)))
                        || (0..peers).any(|p| r.table == self.ids().peer_table(p) && tunnel_up(p)))
            }
            // A tunnel we hold went away (routes through it went with it),
            // or a device that was in the way of one we could not make.
            Event::LinkDel(l) => (0..peers).any(|s| {
                self.tunnel(s).is_some_and(|t| t.index == l.index)
                    || (self.peer_slot(s).is_some()
                        && self.tunnel(s).is_none()
                        && l.name == self.slot_tunnel_name(s))
            }),
            _ => false,
        };
        if need {
            debug!("our kernel state changed under us ({ev:?}); resyncing");
            self.resync()?;
        }
        Ok(())
    }
}
