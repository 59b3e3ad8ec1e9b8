//! Tunnel devices, one per peer with bindings, for either backend: a
//! kernel ipip device, or a TUN device whose packets the userspace
//! forwarder (forward.rs) carries over a raw ipip socket. Each is
//! configured (MTU, loose rp_filter, an address, the peer's default route
//! and rule) when its first binding comes, and lingers a moment after the
//! last one goes.

use std::io;
use std::net::Ipv4Addr;

use log::{info, warn};
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
    /// Unused since (monotonic ms): removed after `TUNNEL_LINGER_MS`, so a
    /// node moving back and forth does not pay for device churn (removing
    /// a device waits for RCU grace periods: ~20 ms).
    pub(super) idle_since: Option<u64>,
    /// The counters when the peer's account was last reset while this
    /// tunnel was up (a kernel device's counters cannot be reset).
    pub(super) counted_from: super::Traffic,
    /// The kernel device's counters when last read (its traffic, if the
    /// device vanishes before it is folded in).
    pub(super) last_read: std::cell::Cell<super::Traffic>,
}

const TUNNEL_LINGER_MS: u64 = 1000;

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

    pub(super) fn tunnel_up(&mut self, s: usize) -> io::Result<()> {
        let Some(slot) = self.peer_slot_mut(s) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such peer"));
        };
        if let Some(t) = slot.tunnel.as_mut() {
            t.idle_since = None;
            return Ok(());
        }
        let remote = slot.remote;
        let name = self.slot_tunnel_name(s);
        let (index, tun) = match self.kind {
            Kind::Kernel => {
                if let Some(l) = self.nl.link_by_name(&name)? {
                    self.nl.link_delete(l.index)?;
                }
                let i = self
                    .nl
                    .ipip_create(&name, self.cfg.agent.endpoint, remote, 64)?;
                (i, None)
            }
            Kind::Userspace => {
                let t = Tun::open(&name)?;
                let l = self.nl.link_by_name(&name)?.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "TUN device vanished")
                })?;
                (l.index, Some(t))
            }
        };
        self.configure_tunnel(s, &name, index)?;
        info!("tunnel {name} to {remote} up ({})", self.kind.as_str());
        if let Some(slot) = self.peer_slot_mut(s) {
            slot.tunnel = Some(Tunnel {
                index,
                tun,
                idle_since: None,
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

    /// The last binding with a peer is gone: the tunnel lingers a moment.
    pub(super) fn tunnel_idle(&mut self, s: usize) {
        if let Some(t) = self.peer_slot_mut(s).and_then(|x| x.tunnel.as_mut()) {
            t.idle_since.get_or_insert(sims_linux::event::now_ms());
        }
    }

    /// Remove tunnels idle for longer than the linger time.
    pub fn expire_idle(&mut self, now_ms: u64) {
        for s in 0..self.slots.len() {
            let expired = self
                .tunnel(s)
                .and_then(|t| t.idle_since)
                .is_some_and(|t| now_ms >= t + TUNNEL_LINGER_MS);
            if expired {
                if let Err(e) = self.tunnel_down(s) {
                    warn!("removing tunnel: {e}");
                }
            }
        }
    }

    /// When `expire_idle` next has work.
    pub fn next_deadline(&self) -> Option<u64> {
        (0..self.slots.len())
            .filter_map(|s| self.tunnel(s)?.idle_since)
            .map(|t| t + TUNNEL_LINGER_MS)
            .min()
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
