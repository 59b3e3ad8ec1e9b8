//! The kernel state simsd owns (docs/ARCHITECTURE.md): one tunnel per
//! peer with its fwmark rule and default route, and one catch-all rule,
//! all made at start; a /32 per visitor binding in the SIMS table and
//! elements of the `inet sims` nft sets, made by handovers. Everything carries the route protocol of
//! `simsd::owned::KernelIds`, so that startup and netifd's rule flushes
//! can be reconciled without touching anyone else's state.
//!
//! This file carries out the agent's actions on that state; the jobs are
//! split by file: `routing.rs` (rules and routes), `tunnels.rs` (tunnel
//! devices, both backends), `forward.rs` + `offload.rs` (the userspace
//! backend's packets), `resync.rs` (stale state at start, repairs).
//!
//! Changes are made in-process over netlink; only the static nft table is
//! loaded with `nft -f` (once at start and on reload).

mod accounting;
mod forward;
mod moves;
mod resync;
mod routing;
mod slots;
mod tunnels;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;

use log::{debug, info};
use sims_linux::netlink::{Netlink, NUD_LIVE, NUD_STALE};
use sims_linux::nfset::NfSet;
use sims_proto::agent::Action;
use simsd::offload;
use simsd::owned::NFT_TABLE;

use crate::config::{Backend, Config};
use crate::nft;
pub use accounting::Accounts;
use forward::Forwarder;
pub use moves::MOVED_FILE;
use slots::PeerSlot;
use tunnels::kernel_has_ipip;
pub use tunnels::Kind;

const EEXIST: i32 = libc::EEXIST;
const ENOENT: i32 = libc::ENOENT;
const ESRCH: i32 = libc::ESRCH;

/// The kernel work done for the agent's actions (bindings made and
/// ended), for the handover benchmark: with the tunnels made at start, a
/// handover is a few set elements, a /32 route and a neighbour entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCost {
    /// Actions carried out.
    pub actions: u64,
    /// Round trips with the kernel (netlink requests, nftables batches).
    pub exchanges: u64,
    /// Time spent in them.
    pub micros: u64,
}

/// Per-peer traffic through its tunnel (the roaming agreement's bill).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
}

pub struct Dataplane {
    cfg: Config,
    nl: Netlink,
    nf: NfSet,
    pub kind: Kind,
    lan_index: u32,
    lan_addr: Ipv4Addr,
    /// The peers' kernel slots (table, mark, nft sets, tunnel), stable
    /// while a peer stays configured: a reload that reorders the peers
    /// moves nothing in the kernel (slots.rs).
    slots: Vec<Option<PeerSlot>>,
    /// The slot of each of the agent's peers (by its index).
    slot_of: Vec<usize>,
    /// The nft table has the flood limiter (the kernel has nft_limit).
    limiter: bool,
    /// The userspace backend's forwarder (None with kernel ipip).
    forward: Option<Forwarder>,
    /// Bound addresses and the slot of their peer.
    home: BTreeSet<(u32, usize)>,
    visitor: BTreeSet<(u32, usize)>,
    /// Visiting nodes' MACs, for their neighbour entries (put back when
    /// the LAN bridge is recreated).
    visitor_mac: BTreeMap<u32, [u8; 6]>,
    /// The LAN bridge was recreated and our state is not on it yet.
    lan_moved: bool,
    /// The moved peers' addresses, for fw4 (moves.rs).
    moved_file: Option<std::path::PathBuf>,
    /// Each peer's traffic since its last reset (accounting.rs).
    accounts: Accounts,
    cost: KernelCost,
}

/// `r`, with the errors in `codes` (an object already there, or already
/// gone) taken as success.
fn ignore(r: io::Result<()>, codes: &[i32]) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error().is_some_and(|c| codes.contains(&c)) => Ok(()),
        r => r,
    }
}

impl Dataplane {
    pub fn open(cfg: &Config) -> io::Result<Self> {
        let mut nl = Netlink::open()?;
        let lan = nl.link_by_name(&cfg.lan_ifname)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("LAN interface {} not found", cfg.lan_ifname),
            )
        })?;
        let lan_addr = nl
            .addrs(Some(lan.index))?
            .iter()
            .map(|a| a.addr)
            .find(|a| cfg.agent.lan_prefixes.iter().any(|p| p.contains(*a)))
            .unwrap_or(cfg.agent.endpoint);
        let kind = match cfg.backend {
            Backend::Userspace => Kind::Userspace,
            Backend::Kernel => Kind::Kernel,
            Backend::Auto => {
                if kernel_has_ipip(&mut nl, cfg) {
                    Kind::Kernel
                } else {
                    Kind::Userspace
                }
            }
        };
        info!("tunnel backend: {}", kind.as_str());
        let forward = match kind {
            Kind::Userspace => Some(Forwarder::open(cfg.agent.endpoint)?),
            Kind::Kernel => None,
        };
        let mut dp = Dataplane {
            cfg: cfg.clone(),
            nl,
            nf: NfSet::open()?,
            kind,
            lan_index: lan.index,
            lan_addr,
            slots: cfg
                .agent
                .peers
                .iter()
                .map(|p| Some(PeerSlot::new(p)))
                .collect(),
            slot_of: (0..cfg.agent.peers.len()).collect(),
            limiter: false,
            forward,
            home: BTreeSet::new(),
            visitor: BTreeSet::new(),
            visitor_mac: BTreeMap::new(),
            lan_moved: false,
            moved_file: None,
            accounts: Accounts::none(),
            cost: KernelCost::default(),
        };
        dp.limiter = nft::load(cfg, &dp.slot_ids())?;
        dp.remove_stale()?;
        // Everything per peer is made now, not on a handover's path.
        dp.tunnels_up();
        dp.update_catch_all()?;
        Ok(dp)
    }

    /// Execute one action of the agent, counting what it cost.
    pub fn apply(&mut self, a: &Action) -> io::Result<()> {
        let (t, before) = (std::time::Instant::now(), self.exchanges());
        let r = self.apply_uncounted(a);
        self.cost.actions += 1;
        self.cost.exchanges += self.exchanges() - before;
        self.cost.micros += t.elapsed().as_micros() as u64;
        r
    }

    /// Round trips with the kernel so far (netlink and nftables).
    fn exchanges(&self) -> u64 {
        self.nl.exchanges() + self.nf.exchanges()
    }

    /// What carrying out the agent's actions has cost so far.
    pub fn cost(&self) -> KernelCost {
        self.cost
    }

    fn apply_uncounted(&mut self, a: &Action) -> io::Result<()> {
        match *a {
            // Made at start and kept (tunnels.rs); put back if it is gone.
            Action::TunnelUp { peer } => self.tunnel_up(self.slot(peer)?),
            Action::TunnelDown { .. } => Ok(()),
            // The home side is one set element: traffic to `addr` (after
            // the NAT's reverse mapping) gets the peer's mark and so the
            // peer's table, whose default route is the tunnel. No /32
            // route: it would make the kernel's reverse-path check drop the
            // node's own packets on our LAN when it comes back, before it
            // could tell us it is back.
            Action::HomeAdd { addr, peer } => {
                let peer = self.slot(peer)?;
                self.tunnel_index(peer)?;
                ignore(self.nf.add(NFT_TABLE, &nft::set_in(peer), addr), &[EEXIST])?;
                self.home.insert((u32::from(addr), peer));
                Ok(())
            }
            Action::HomeDel { addr, peer } => {
                let peer = self.slot(peer)?;
                self.home.remove(&(u32::from(addr), peer));
                ignore(self.nf.del(NFT_TABLE, &nft::set_in(peer), addr), &[ENOENT])?;
                Ok(())
            }
            Action::VisitorAdd { addr, peer, mac } => {
                let peer = self.slot(peer)?;
                // Our side first: the leak guard already stops the node's old
                // address at our WAN; from now on it goes into the tunnel.
                ignore(self.nf.add(NFT_TABLE, &nft::set_out(peer), addr), &[EEXIST])?;
                self.nl
                    .route_replace(&self.host_route(u32::from(addr), self.lan_index))?;
                // The node is on our LAN and said where: no ARP round trip (and no
                // wait for the retry timer of an entry left from its last visit).
                if mac != [0; 6] {
                    self.visitor_mac.insert(u32::from(addr), mac);
                    self.put_neighbour(u32::from(addr), mac);
                }
                self.visitor.insert((u32::from(addr), peer));
                Ok(())
            }
            Action::VisitorDel { addr, peer } => {
                let peer = self.slot(peer)?;
                self.visitor.remove(&(u32::from(addr), peer));
                self.visitor_mac.remove(&u32::from(addr));
                ignore(
                    self.nl
                        .route_del(&self.host_route(u32::from(addr), self.lan_index)),
                    &[ENOENT, ESRCH],
                )?;
                ignore(self.nf.del(NFT_TABLE, &nft::set_out(peer), addr), &[ENOENT])?;
                Ok(())
            }
            Action::PeerEndpoint { peer, addr } => self.peer_moved(self.slot(peer)?, addr),
            Action::Send { .. } | Action::BroadcastLan { .. } => Ok(()),
        }
    }

    /// Remove everything we installed (clean shutdown).
    pub fn shutdown(&mut self) {
        for s in 0..self.slots.len() {
            let _ = self.tunnel_down(s);
        }
        self.save_accounts(true, sims_linux::event::now_ms());
        let _ = self.remove_stale();
        let _ = nft::unload();
    }

    /// The LAN bridge's interface index.
    pub fn lan_index(&self) -> u32 {
        self.lan_index
    }

    /// A visiting node's neighbour entry: no ARP round trip before its
    /// first packet (nor a wait for the retry timer of an entry left from
    /// its last visit).
    fn put_neighbour(&mut self, addr: u32, mac: [u8; 6]) {
        let a = Ipv4Addr::from(addr);
        if let Err(e) = self.nl.neigh_replace(self.lan_index, a, mac, NUD_STALE) {
            debug!("neighbour {a}: {e}");
        }
    }

    /// Who holds `addr` on the LAN now (for the "held by another host"
    /// check): a live neighbour entry's MAC.
    pub fn lan_holder(&mut self, addr: Ipv4Addr) -> Option<[u8; 6]> {
        match self.nl.neigh_get(self.lan_index, addr) {
            Ok(Some(n)) if n.state & NUD_LIVE != 0 => n.mac,
            _ => None,
        }
    }
}
