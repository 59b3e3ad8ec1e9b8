//! Tunnel devices, one per peer, for either backend: a kernel ipip
//! device, or a TUN device whose packets the userspace forwarder
//! (forward.rs) carries over a raw ipip socket. Each is made and
//! configured (MTU, loose rp_filter, an address, the peer's default route
//! and rule) when simsd starts or the peer is added, and stays while the
//! peer is configured: a handover creates no device, address, sysctl,
//! route or rule (creating them cost ~2 ms a side; removing a device
//! waits for RCU grace periods). An idle tunnel carries nothing: only
//! the bindings' set elements and /32 routes steer packets into it.

use std::io;
use std::net::Ipv4Addr;

use log::{error, info};
use sims_linux::netlink::Netlink;
use sims_linux::sysctl;
use sims_linux::tun::Tun;
use sims_proto::agent::PeerIdx;
use simsd::owned;

use super::{ignore, Dataplane, EEXIST, ENOENT, ESRCH};
use crate::config::Config;

/// Which backend is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kernel,
    Userspace,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::Userspace => "userspace",
        }
    }
}

pub(super) struct Tunnel {
    pub(super) index: u32,
    pub(super) tun: Option<Tun>,
    /// The counters when the peer's account was last reset while this
    /// tunnel was up (a kernel device's counters cannot be reset).
    pub(super) counted_from: super::Traffic,
    /// The kernel device's counters when last read (its traffic, if the
    /// device vanishes before it is folded in).
    pub(super) last_read: std::cell::Cell<super::Traffic>,
}

impl Dataplane {
    pub fn tunnel_name(&self, p: PeerIdx) -> String {
        owned::tunnel_name(&self.cfg.agent.peers[p].id)
    }

    /// Does the agent's peer `p` have its tunnel now?
    pub fn tunnel_is_up(&self, p: PeerIdx) -> bool {
        self.slot(p).ok().and_then(|s| self.tunnel(s)).is_some()
    }

    /// The tunnel device of slot `s`'s peer.
    pub(super) fn slot_tunnel_name(&self, s: usize) -> String {
        owned::tunnel_name(self.peer_slot(s).map_or("", |x| x.id.as_str()))
    }

    pub(super) fn tunnel(&self, s: usize) -> Option<&Tunnel> {
        self.peer_slot(s)?.tunnel.as_ref()
    }

    pub(super) fn tunnel_index(&self, s: usize) -> io::Result<u32> {
        self.tunnel(s)
            .map(|t| t.index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "tunnel not up"))
    }

    /// Each configured peer's tunnel, as at start: one that cannot be made
    /// now is logged and left to the resync (and to its first handover),
    /// and the others are made all the same.
    pub(super) fn tunnels_up(&mut self) {
        for s in 0..self.slots.len() {
            if self.peer_slot(s).is_none() {
                continue;
            }
            if let Err(e) = self.tunnel_up(s) {
                let id = self.peer_slot(s).map(|x| x.id.clone()).unwrap_or_default();
                error!(
                    "peer {id}: its tunnel cannot be made now ({e}); trying again at its \
                     first handover, or when a device in its way goes"
                );
            }
        }
    }

    /// Makes slot `s`'s tunnel (if it is not there) with everything on it;
    /// an error names the device and its peer's end.
    pub(super) fn tunnel_up(&mut self, s: usize) -> io::Result<()> {
        let (name, remote) = match self.peer_slot(s) {
            Some(slot) if slot.tunnel.is_some() => return Ok(()),
            Some(slot) => (self.slot_tunnel_name(s), slot.remote),
            None => return Err(io::Error::new(io::ErrorKind::NotFound, "no such peer")),
        };
        self.make_tunnel(s, &name, remote)
            .map_err(|e| io::Error::new(e.kind(), format!("tunnel {name} to {remote}: {e}")))
    }

    fn make_tunnel(&mut self, s: usize, name: &str, remote: Ipv4Addr) -> io::Result<()> {
        let existing = self.nl.link_by_name(name)?;
        if let Some(l) = &existing {
            // Anyone else's device of that name stays, and so no tunnel.
            if !owned::is_our_tunnel(&l.name, l.kind.as_deref()) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "a {} device of that name is in the way (not ours)",
                        l.kind.as_deref().unwrap_or("plain")
                    ),
                ));
            }
        }
        let (index, tun) = match self.kind {
            Kind::Kernel => {
                // Ours from an earlier run: replaced.
                if let Some(l) = existing {
                    self.nl.link_delete(l.index)?;
                }
                let i = self
                    .nl
                    .ipip_create(name, self.cfg.agent.endpoint, remote, 64)?;
                (i, None)
            }
            Kind::Userspace => {
                let t = Tun::open(name)?;
                let l = self.nl.link_by_name(name)?.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "TUN device vanished")
                })?;
                (l.index, Some(t))
            }
        };
        self.configure_tunnel(s, name, index)?;
        info!("tunnel {name} to {remote} up ({})", self.kind.as_str());
        if let Some(slot) = self.peer_slot_mut(s) {
            slot.tunnel = Some(Tunnel {
                index,
                tun,
                counted_from: Default::default(),
                last_read: Default::default(),
            });
        }
        Ok(())
    }

    fn configure_tunnel(&mut self, s: usize, name: &str, index: u32) -> io::Result<()> {
        self.nl.link_set_mtu(index, self.cfg.tunnel_mtu)?;
        // Loose reverse-path filtering and an address of its own: without
        // them the kernel drops tunnelled return traffic.
        sysctl::set_ipv4_conf(name, "rp_filter", "2")?;
        ignore(self.nl.addr_add(index, self.lan_addr, 32, true), &[EEXIST])?;
        self.nl.link_set_up(index, true)?;
        self.nl.route_replace(&self.default_route(s, index))?;
        ignore(self.nl.rule_add(&self.peer_rule(s)), &[EEXIST])?;
        Ok(())
    }

    pub(super) fn tunnel_down(&mut self, s: usize) -> io::Result<()> {
        if self.tunnel(s).is_some() {
            self.fold_traffic(s);
        }
        let Some(t) = self.peer_slot_mut(s).and_then(|x| x.tunnel.take()) else {
            return Ok(());
        };
        ignore(self.nl.rule_del(&self.peer_rule(s)), &[ENOENT])?;
        ignore(
            self.nl.route_del(&self.default_route(s, t.index)),
            &[ENOENT, ESRCH],
        )?;
        match t.tun {
            // Closing the TUN removes the device, off the event loop.
            Some(tun) => tun.close_detached(),
            None => ignore(self.nl.link_delete(t.index), &[ENOENT, libc::ENODEV])?,
        }
        info!("tunnel {} down", self.slot_tunnel_name(s));
        Ok(())
    }
}

/// Probe for kernel ipip: create and delete a throwaway device.
pub(super) fn kernel_has_ipip(nl: &mut Netlink, cfg: &Config) -> bool {
    let name = "sims-probe";
    match nl.ipip_create(name, cfg.agent.endpoint, Ipv4Addr::new(192, 0, 2, 1), 64) {
        Ok(i) => {
            let _ = nl.link_delete(i);
            true
        }
        Err(e) => {
            info!("kernel ipip unavailable ({e}); using the userspace backend");
            false
        }
    }
}
