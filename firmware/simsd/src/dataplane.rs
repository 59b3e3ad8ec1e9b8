//! The kernel state simsd owns (docs/ARCHITECTURE.md): one tunnel per peer
//! with a binding, a /32 per binding in the SIMS table, one catch-all rule,
//! one fwmark rule per peer, and elements of the `inet sims` nft sets.
//! Everything carries `route_protocol`, so that startup and netifd's rule
//! flushes can be reconciled without touching anyone else's state.
//!
//! Changes are made in-process over netlink; only the static nft table is
//! loaded with `nft -f` (once at start and on reload).

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;

use log::{debug, info, warn};
use sims_linux::monitor::Event;
use sims_linux::netlink::{Netlink, Route, RouteType, Rule, NUD_STALE};
use sims_linux::nfset::NfSet;
use sims_linux::rawipip::RawIpip;
use sims_linux::sysctl;
use sims_linux::tun::Tun;
use sims_proto::agent::{Action, PeerIdx};

use crate::config::{Backend, Config};
use crate::nft;
use crate::offload;

const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const NFT_TABLE: &str = "sims";
const EEXIST: i32 = libc::EEXIST;
const ENOENT: i32 = libc::ENOENT;
const ESRCH: i32 = libc::ESRCH;

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

/// Per-peer traffic through its tunnel (the roaming agreement's bill).
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
}

struct Tunnel {
    index: u32,
    tun: Option<Tun>,
    /// Unused since (monotonic ms): removed after `TUNNEL_LINGER_MS`, so a
    /// node moving back and forth does not pay for device churn (removing
    /// a device waits for RCU grace periods: ~20 ms).
    idle_since: Option<u64>,
}

const TUNNEL_LINGER_MS: u64 = 1000;

pub struct Dataplane {
    cfg: Config,
    nl: Netlink,
    nf: NfSet,
    pub kind: Kind,
    lan_index: u32,
    lan_addr: Ipv4Addr,
    tunnels: Vec<Option<Tunnel>>,
    raw: Option<RawIpip>,
    home: BTreeSet<(u32, PeerIdx)>,
    visitor: BTreeSet<(u32, PeerIdx)>,
    pub traffic: Vec<Traffic>,
    pub rx_unknown_endpoint: u64,
}

fn ignore(r: io::Result<()>, codes: &[i32]) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error().is_some_and(|c| codes.contains(&c)) => Ok(()),
        r => r,
    }
}

impl Dataplane {
    pub fn tunnel_name(cfg: &Config, p: PeerIdx) -> String {
        Self::tunnel_name_of(&cfg.agent.peers[p].id)
    }

    pub fn tunnel_name_of(peer_id: &str) -> String {
        format!("sims-{peer_id}")
    }

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
        let raw = match kind {
            Kind::Userspace => Some(RawIpip::open(Some(cfg.agent.endpoint))?),
            Kind::Kernel => None,
        };
        let n = cfg.agent.peers.len();
        let mut dp = Dataplane {
            cfg: cfg.clone(),
            nl,
            nf: NfSet::open()?,
            kind,
            lan_index: lan.index,
            lan_addr,
            tunnels: (0..n).map(|_| None).collect(),
            raw,
            home: BTreeSet::new(),
            visitor: BTreeSet::new(),
            traffic: vec![Traffic::default(); n],
            rx_unknown_endpoint: 0,
        };
        nft::load(cfg)?;
        dp.remove_stale()?;
        Ok(dp)
    }

    fn peer_table(&self, p: PeerIdx) -> u32 {
        self.cfg.table + 1 + p as u32
    }
    fn peer_mark(&self, p: PeerIdx) -> u32 {
        self.cfg.mark_base + 1 + p as u32
    }

    fn catch_all_rule(&self) -> Rule {
        Rule {
            priority: self.cfg.rule_priority,
            table: self.cfg.table,
            fwmark: None,
            src: None,
            protocol: self.cfg.route_protocol,
        }
    }

    fn peer_rule(&self, p: PeerIdx) -> Rule {
        Rule {
            priority: self.cfg.rule_priority + 1,
            table: self.peer_table(p),
            fwmark: Some((self.peer_mark(p), u32::MAX)),
            src: None,
            protocol: self.cfg.route_protocol,
        }
    }

    fn host_route(&self, addr: u32, oif: u32) -> Route {
        Route {
            table: self.cfg.table,
            dst: Ipv4Addr::from(addr),
            dst_len: 32,
            oif: Some(oif),
            gateway: None,
            prefsrc: None,
            protocol: self.cfg.route_protocol,
            kind: RouteType::Unicast,
            scope: RT_SCOPE_LINK,
        }
    }

    fn default_route(&self, p: PeerIdx, oif: u32) -> Route {
        Route {
            table: self.peer_table(p),
            dst: Ipv4Addr::UNSPECIFIED,
            dst_len: 0,
            oif: Some(oif),
            gateway: None,
            prefsrc: None,
            protocol: self.cfg.route_protocol,
            kind: RouteType::Unicast,
            scope: RT_SCOPE_UNIVERSE,
        }
    }

    /// Our tables, rules and tunnels left by an earlier run (crash, kill -9)
    /// are removed; the restored bindings are then installed afresh.
    /// Only state tagged with our protocol, in our tables, or named like
    /// our tunnels is touched.
    fn remove_stale(&mut self) -> io::Result<()> {
        let proto = self.cfg.route_protocol;
        for r in self.nl.rules()? {
            if r.protocol == proto {
                ignore(self.nl.rule_del(&r), &[ENOENT])?;
            }
        }
        let n = self.cfg.agent.peers.len() as u32;
        for t in self.cfg.table..=self.cfg.table + n {
            for r in self.nl.routes(t)? {
                if r.protocol == proto {
                    ignore(self.nl.route_del(&r), &[ENOENT, ESRCH])?;
                }
            }
        }
        for l in self.nl.links()? {
            let ours = l.name.starts_with("sims-")
                && matches!(l.kind.as_deref(), Some("ipip") | Some("tun"));
            if ours {
                info!("removing stale tunnel {}", l.name);
                ignore(self.nl.link_delete(l.index), &[ENOENT])?;
            }
        }
        for p in 0..n as usize {
            ignore(self.nf.flush(NFT_TABLE, &nft::set_in(p)), &[ENOENT])?;
            ignore(self.nf.flush(NFT_TABLE, &nft::set_out(p)), &[ENOENT])?;
        }
        Ok(())
    }

    /// Execute one action of the agent.
    pub fn apply(&mut self, a: &Action) -> io::Result<()> {
        match *a {
            Action::TunnelUp { peer } => self.tunnel_up(peer),
            Action::TunnelDown { peer } => {
                self.tunnel_idle(peer);
                Ok(())
            }
            // The home side is one set element: traffic to `addr` (after
            // the NAT's reverse mapping) gets the peer's mark and so the
            // peer's table, whose default route is the tunnel. No /32
            // route: it would make the kernel's reverse-path check drop the
            // node's own packets on our LAN when it comes back, before it
            // could tell us it is back.
            Action::HomeAdd { addr, peer } => {
                self.tunnel_index(peer)?;
                ignore(self.nf.add(NFT_TABLE, &nft::set_in(peer), addr), &[EEXIST])?;
                self.home.insert((u32::from(addr), peer));
                Ok(())
            }
            Action::HomeDel { addr, peer } => {
                self.home.remove(&(u32::from(addr), peer));
                ignore(self.nf.del(NFT_TABLE, &nft::set_in(peer), addr), &[ENOENT])?;
                Ok(())
            }
            Action::VisitorAdd { addr, peer, mac } => {
                // Our side first: the leak guard already stops the node's old
                // address at our WAN; from now on it goes into the tunnel.
                ignore(self.nf.add(NFT_TABLE, &nft::set_out(peer), addr), &[EEXIST])?;
                self.nl
                    .route_replace(&self.host_route(u32::from(addr), self.lan_index))?;
                // The node is on our LAN and said where: no ARP round trip (and no
                // wait for the retry timer of an entry left from its last visit).
                if mac != [0; 6] {
                    if let Err(e) = self.nl.neigh_replace(self.lan_index, addr, mac, NUD_STALE) {
                        debug!("neighbour {addr}: {e}");
                    }
                }
                self.visitor.insert((u32::from(addr), peer));
                self.update_catch_all()
            }
            Action::VisitorDel { addr, peer } => {
                self.visitor.remove(&(u32::from(addr), peer));
                ignore(
                    self.nl
                        .route_del(&self.host_route(u32::from(addr), self.lan_index)),
                    &[ENOENT, ESRCH],
                )?;
                ignore(self.nf.del(NFT_TABLE, &nft::set_out(peer), addr), &[ENOENT])?;
                self.update_catch_all()
            }
            Action::Send { .. } | Action::BroadcastLan { .. } => Ok(()),
        }
    }

    fn tunnel_index(&self, p: PeerIdx) -> io::Result<u32> {
        self.tunnels
            .get(p)
            .and_then(|t| t.as_ref())
            .map(|t| t.index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "tunnel not up"))
    }

    /// The catch-all lookup rule exists exactly while a visitor binding
    /// (a /32 in our table) does.
    fn update_catch_all(&mut self) -> io::Result<()> {
        let want = !self.visitor.is_empty();
        let rule = self.catch_all_rule();
        let have = self.nl.rules()?.contains(&rule);
        if want && !have {
            ignore(self.nl.rule_add(&rule), &[EEXIST])?;
        } else if !want && have {
            ignore(self.nl.rule_del(&rule), &[ENOENT])?;
        }
        Ok(())
    }

    fn tunnel_up(&mut self, p: PeerIdx) -> io::Result<()> {
        if let Some(Some(t)) = self.tunnels.get_mut(p) {
            t.idle_since = None;
            return Ok(());
        }
        let name = Self::tunnel_name(&self.cfg, p);
        let remote = self.cfg.agent.peers[p].endpoint;
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
        self.configure_tunnel(p, &name, index)?;
        info!("tunnel {name} to {remote} up ({})", self.kind.as_str());
        if let Some(slot) = self.tunnels.get_mut(p) {
            *slot = Some(Tunnel {
                index,
                tun,
                idle_since: None,
            });
        }
        Ok(())
    }

    fn configure_tunnel(&mut self, p: PeerIdx, name: &str, index: u32) -> io::Result<()> {
        self.nl.link_set_mtu(index, self.cfg.tunnel_mtu)?;
        // Loose reverse-path filtering and an address of its own: without
        // them the kernel drops tunnelled return traffic.
        sysctl::set_ipv4_conf(name, "rp_filter", "2")?;
        ignore(self.nl.addr_add(index, self.lan_addr, 32, true), &[EEXIST])?;
        self.nl.link_set_up(index, true)?;
        self.nl.route_replace(&self.default_route(p, index))?;
        ignore(self.nl.rule_add(&self.peer_rule(p)), &[EEXIST])?;
        Ok(())
    }

    /// The last binding with a peer is gone: the tunnel lingers a moment.
    fn tunnel_idle(&mut self, p: PeerIdx) {
        if let Some(Some(t)) = self.tunnels.get_mut(p) {
            t.idle_since.get_or_insert(sims_linux::event::now_ms());
        }
    }

    /// Remove tunnels idle for longer than the linger time.
    pub fn expire_idle(&mut self, now_ms: u64) {
        for p in 0..self.tunnels.len() {
            let expired = self.tunnels[p]
                .as_ref()
                .and_then(|t| t.idle_since)
                .is_some_and(|t| now_ms >= t + TUNNEL_LINGER_MS);
            if expired {
                if let Err(e) = self.tunnel_down(p) {
                    warn!("removing tunnel: {e}");
                }
            }
        }
    }

    /// When `expire_idle` next has work.
    pub fn next_deadline(&self) -> Option<u64> {
        self.tunnels
            .iter()
            .filter_map(|t| t.as_ref()?.idle_since)
            .map(|t| t + TUNNEL_LINGER_MS)
            .min()
    }

    fn tunnel_down(&mut self, p: PeerIdx) -> io::Result<()> {
        let Some(t) = self.tunnels.get_mut(p).and_then(|t| t.take()) else {
            return Ok(());
        };
        ignore(self.nl.rule_del(&self.peer_rule(p)), &[ENOENT])?;
        ignore(
            self.nl.route_del(&self.default_route(p, t.index)),
            &[ENOENT, ESRCH],
        )?;
        match t.tun {
            // Closing the TUN removes the device, off the event loop.
            Some(tun) => tun.close_detached(),
            None => ignore(self.nl.link_delete(t.index), &[ENOENT, libc::ENODEV])?,
        }
        info!("tunnel {} down", Self::tunnel_name(&self.cfg, p));
        Ok(())
    }

    /// Put back whatever of our state is missing (after netifd flushed the
    /// rules, a tunnel was recreated, or events were lost).
    pub fn resync(&mut self) -> io::Result<()> {
        let rules = self.nl.rules()?;
        for p in 0..self.tunnels.len() {
            let Some(index) = self.tunnels[p].as_ref().map(|t| t.index) else {
                continue;
            };
            let name = Self::tunnel_name(&self.cfg, p);
            let exists = self.nl.links()?.iter().any(|l| l.index == index);
            if !exists {
                warn!("tunnel {name} disappeared; recreating it");
                self.tunnels[p] = None;
                self.tunnel_up(p)?;
                continue;
            }
            if !rules.contains(&self.peer_rule(p)) {
                ignore(self.nl.rule_add(&self.peer_rule(p)), &[EEXIST])?;
            }
            self.nl.route_replace(&self.default_route(p, index))?;
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
        let tunnel_up = |p: usize| self.tunnels.get(p).is_some_and(|t| t.is_some());
        let peers = self.tunnels.len();
        let need = match ev {
            // netifd deletes every rule when it (re)starts.
            Event::RuleDel(r) => {
                (*r == self.catch_all_rule() && !self.visitor.is_empty())
                    || (0..peers).any(|p| *r == self.peer_rule(p) && tunnel_up(p))
            }
            Event::RouteDel(r) => {
                r.protocol == self.cfg.route_protocol
                    && ((r.table == self.cfg.table
                        && r.dst_len == 32
                        && self.visitor.iter().any(|(a, _)| *a == u32::from(r.dst)))
                        || (0..peers).any(|p| r.table == self.peer_table(p) && tunnel_up(p)))
            }
            // A tunnel we hold went away (routes through it went with it).
            Event::LinkDel(l) => self.tunnels.iter().flatten().any(|t| t.index == l.index),
            _ => false,
        };
        if need {
            debug!("our kernel state changed under us ({ev:?}); resyncing");
            self.resync()?;
        }
        Ok(())
    }

    /// Remove everything we installed (clean shutdown).
    pub fn shutdown(&mut self) {
        for p in 0..self.tunnels.len() {
            let _ = self.tunnel_down(p);
        }
        let _ = self.remove_stale();
        let _ = nft::unload();
    }

    // ---- userspace ipip ------------------------------------------------

    /// File descriptors the event loop polls for the userspace backend:
    /// the raw socket first, then (peer, TUN fd).
    pub fn raw_fd(&self) -> Option<i32> {
        self.raw.as_ref().map(|r| r.fd())
    }

    pub fn tun_fds(&self) -> Vec<(PeerIdx, i32)> {
        self.tunnels
            .iter()
            .enumerate()
            .filter_map(|(p, t)| Some((p, t.as_ref()?.tun.as_ref()?.fd())))
            .collect()
    }

    /// Packets the kernel routed into a peer's TUN: encapsulate and send.
    pub fn pump_tun(&mut self, p: PeerIdx, buf: &mut [u8]) {
        let remote = self.cfg.agent.peers[p].endpoint;
        for _ in 0..256 {
            let Some(tun) = self.tunnels[p].as_ref().and_then(|t| t.tun.as_ref()) else {
                return;
            };
            let n = match tun.read(buf) {
                Ok(n) => n,
                Err(_) => return,
            };
            let pkt = &buf[..n];
            if n < 20 || pkt[0] >> 4 != 4 {
                continue;
            }
            if let Some(raw) = self.raw.as_ref() {
                match raw.send(pkt, remote) {
                    Ok(()) => {
                        self.traffic[p].tx_packets += 1;
                        self.traffic[p].tx_bytes += n as u64;
                    }
                    Err(e) => debug!("ipip send to {remote}: {e}"),
                }
            }
        }
    }

    /// Protocol-4 packets from the WAN: accept only from peer endpoints,
    /// decapsulate into that peer's TUN (the nft guard then checks sources).
    pub fn pump_raw(&mut self, buf: &mut [u8]) {
        for _ in 0..256 {
            let Some(raw) = self.raw.as_ref() else { return };
            let base = buf.as_ptr() as usize;
            let (src, inner_len, off) = match raw.recv(buf) {
                Ok((src, inner)) => (src, inner.len(), inner.as_ptr() as usize - base),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.rx_unknown_endpoint += 1;
                    continue;
                }
            };
            let Some(p) = self.cfg.agent.peers.iter().position(|x| x.endpoint == src) else {
                self.rx_unknown_endpoint += 1;
                continue;
            };
            let inner = &mut buf[off..off + inner_len];
            let Some(tun) = self.tunnels[p].as_ref().and_then(|t| t.tun.as_ref()) else {
                self.traffic[p].rx_dropped += 1;
                continue;
            };
            if inner.len() < 20 || inner[0] >> 4 != 4 {
                self.traffic[p].rx_dropped += 1;
                continue;
            }
            // A kernel ipip peer's packets may still need what its device
            // offloads would have done (see offload.rs).
            let mtu = self.cfg.tunnel_mtu as usize;
            let segments = if inner.len() > mtu {
                offload::segment_tcp(inner, mtu)
            } else {
                None
            };
            let t = &mut self.traffic[p];
            let mut write = |pkt: &[u8]| match tun.write(pkt) {
                Ok(_) => {
                    t.rx_packets += 1;
                    t.rx_bytes += pkt.len() as u64;
                }
                Err(_) => t.rx_dropped += 1,
            };
            match segments {
                Some(segs) => segs.iter().for_each(|s| write(s)),
                None => {
                    offload::complete_partial_checksum(inner);
                    write(inner);
                }
            }
        }
    }

    /// Traffic counters: ours for userspace, the kernel's for ipip.
    pub fn peer_traffic(&mut self, p: PeerIdx) -> Traffic {
        let t = self.traffic[p];
        if self.kind == Kind::Kernel {
            let name = Self::tunnel_name(&self.cfg, p);
            let read = |k: &str| {
                std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/{k}"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            return Traffic {
                tx_packets: read("tx_packets"),
                tx_bytes: read("tx_bytes"),
                rx_packets: read("rx_packets"),
                rx_bytes: read("rx_bytes"),
                rx_dropped: read("rx_dropped"),
            };
        }
        t
    }

    /// Who holds `addr` on the LAN now (for the "held by another host"
    /// check): a live neighbour entry's MAC.
    pub fn lan_holder(&mut self, addr: Ipv4Addr) -> Option<[u8; 6]> {
        use sims_linux::netlink::{NUD_DELAY, NUD_PERMANENT, NUD_PROBE, NUD_REACHABLE, NUD_STALE};
        let live = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT;
        match self.nl.neigh_get(self.lan_index, addr) {
            Ok(Some(n)) if n.state & live != 0 => n.mac,
            _ => None,
        }
    }
}

/// Probe for kernel ipip: create and delete a throwaway device.
fn kernel_has_ipip(nl: &mut Netlink, cfg: &Config) -> bool {
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
