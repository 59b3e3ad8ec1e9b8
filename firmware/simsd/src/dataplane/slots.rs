//! Peers' kernel slots. Slot n is peer table `table + 1 + n`, mark
//! `mark_base + 1 + n` and the nft sets `in_n` / `out_n`; a peer keeps its
//! slot for as long as it stays configured, whatever its position in the
//! config, so a reload that adds, removes or reorders peers changes only
//! what belongs to the peers added or removed. At start, slot n is the
//! n-th peer; a reload gives a new peer the lowest free slot (so slots
//! stay below the number of peers a config can hold).

use std::io;
use std::net::Ipv4Addr;

use log::{info, warn};
use sims_proto::agent::{PeerConfig, PeerIdx};
use simsd::owned::NFT_TABLE;

use super::tunnels::Tunnel;
use super::{ignore, Dataplane, Traffic, ENOENT, ESRCH};
use crate::config::Config;
use crate::nft;

/// One peer's slot.
pub(super) struct PeerSlot {
    pub(super) id: String,
    /// The configured endpoint (with the id, what the agreement is).
    pub(super) endpoint: Ipv4Addr,
    /// Where the peer is now: its endpoint, or where it moved (its WAN
    /// address changed); the tunnel's remote end.
    pub(super) remote: Ipv4Addr,
    pub(super) tunnel: Option<Tunnel>,
    /// The userspace backend's counters (kernel ipip has its own).
    pub(super) traffic: Traffic,
}

impl PeerSlot {
    pub(super) fn new(p: &PeerConfig) -> Self {
        PeerSlot {
            id: p.id.to_string(),
            endpoint: p.endpoint,
            remote: p.endpoint,
            tunnel: None,
            traffic: Traffic::default(),
        }
    }

    /// Is this slot the agreement `p` (same id, same endpoint)? The same
    /// test as the agent's (`Agent::reconfigure`).
    fn is(&self, p: &PeerConfig) -> bool {
        self.id == p.id.as_str() && self.endpoint == p.endpoint
    }
}

impl Dataplane {
    /// The slot of the agent's peer `p`.
    pub(super) fn slot(&self, p: PeerIdx) -> io::Result<usize> {
        self.slot_of
            .get(p)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such peer"))
    }

    pub(super) fn peer_slot(&self, s: usize) -> Option<&PeerSlot> {
        self.slots.get(s)?.as_ref()
    }

    pub(super) fn peer_slot_mut(&mut self, s: usize) -> Option<&mut PeerSlot> {
        self.slots.get_mut(s)?.as_mut()
    }

    /// (slot, peer id) of every slot in use, for the nft table.
    pub(super) fn slot_ids(&self) -> Vec<(usize, String)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, x)| Some((s, x.as_ref()?.id.clone())))
            .collect()
    }

    /// Can `new` be taken in place (everything but the peers, the
    /// limits and the timers as they are)? If not, the daemon restarts
    /// the data plane.
    pub fn reloads_in_place(&self, new: &Config) -> bool {
        let (a, b) = (&self.cfg, new);
        a.lan_ifname == b.lan_ifname
            && a.wan_ifname == b.wan_ifname
            && a.backend == b.backend
            && a.ids == b.ids
            && a.tunnel_mtu == b.tunnel_mtu
            && a.agent.id == b.agent.id
            && a.agent.endpoint == b.agent.endpoint
            && a.agent.port == b.agent.port
            && a.agent.lan_prefixes == b.agent.lan_prefixes
    }

    /// Takes `cfg`'s peers in place (after the agent's `reconfigure` has
    /// removed the bindings of the peers that go): kept peers keep their
    /// slots and everything in them; removed peers' tunnels, rules and
    /// routes go now; new peers get free slots and their tunnels; the nft table's rules are
    /// replaced in one transaction, its sets of kept peers untouched.
    pub fn reconfigure(&mut self, cfg: &Config) -> io::Result<()> {
        let keep: Vec<bool> = self
            .slots
            .iter()
            .map(|x| {
                x.as_ref()
                    .is_some_and(|x| cfg.agent.peers.iter().any(|p| x.is(p)))
            })
            .collect();
        for (s, kept) in keep.iter().enumerate() {
            if !*kept {
                self.free_slot(s)?;
            }
        }
        let mut slot_of = Vec::with_capacity(cfg.agent.peers.len());
        for p in &cfg.agent.peers {
            let s = match self
                .slots
                .iter()
                .position(|x| x.as_ref().is_some_and(|x| x.is(p)))
            {
                Some(s) => s,
                None => {
                    let s = match self.slots.iter().position(|x| x.is_none()) {
                        Some(s) => s,
                        None => {
                            self.slots.push(None);
                            self.slots.len() - 1
                        }
                    };
                    self.slots[s] = Some(PeerSlot::new(p));
                    s
                }
            };
            slot_of.push(s);
        }
        self.cfg = cfg.clone();
        self.slot_of = slot_of;
        nft::reload(cfg, &self.slot_ids(), self.limiter)?;
        // New peers' tunnels now, as at start.
        self.tunnels_up();
        self.update_catch_all()
    }

    /// Everything of slot `s` goes: its tunnel, and anything of it the agent did not remove. Its nft sets
    /// stay declared, empty, until the table is next loaded whole.
    fn free_slot(&mut self, s: usize) -> io::Result<()> {
        let Some(id) = self.peer_slot(s).map(|x| x.id.clone()) else {
            return Ok(());
        };
        let home: Vec<u32> = self
            .home
            .iter()
            .filter(|(_, x)| *x == s)
            .map(|(a, _)| *a)
            .collect();
        let visitor: Vec<u32> = self
            .visitor
            .iter()
            .filter(|(_, x)| *x == s)
            .map(|(a, _)| *a)
            .collect();
        if !home.is_empty() || !visitor.is_empty() {
            warn!("peer {id} removed with bindings left; removing them");
        }
        for a in home {
            self.home.remove(&(a, s));
        }
        for a in visitor {
            self.visitor.remove(&(a, s));
            self.visitor_mac.remove(&a);
            ignore(
                self.nl.route_del(&self.host_route(a, self.lan_index)),
                &[ENOENT, ESRCH],
            )?;
        }
        ignore(self.nf.flush(NFT_TABLE, &nft::set_in(s)), &[ENOENT])?;
        ignore(self.nf.flush(NFT_TABLE, &nft::set_out(s)), &[ENOENT])?;
        self.tunnel_down(s)?;
        // Its moved address's ipip opening goes with it.
        self.peer_moved(
            s,
            self.peer_slot(s)
                .map_or(Ipv4Addr::UNSPECIFIED, |x| x.endpoint),
        )?;
        self.slots[s] = None;
        info!("peer {id} removed (slot {s} free)");
        Ok(())
    }
}
