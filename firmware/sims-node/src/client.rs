//! The node's daemon: the sans-IO node of `sims-proto` around one poll
//! loop; its actions carried out (datagrams from the current address, or
//! broadcast from 0.0.0.0 on a packet socket while it has none; held
//! addresses and their routes), the interface watched over rtnetlink,
//! sockets on old addresses counted through sock_diag, and its identity
//! saved.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use log::{debug, info, warn};
use sims_daemon::status::StatusSocket;
use sims_daemon::{now, state};
use sims_linux::event::{self, Signals};
use sims_linux::monitor::{Event, Monitor};
use sims_linux::netlink::Netlink;
use sims_linux::packet::PacketSocket;
use sims_linux::{conntrack, sockdiag, udp};
use sims_proto::node::{Action, Node, NodeConfig};

use crate::addrs::{tune_arp, Iface, MAIN_TABLE};
use crate::ifaces;
use crate::natlan::NatLan;
use crate::oldroutes::{OldRoutes, NODE_TABLE, ROUTE_PROTOCOL};
use crate::status::Sims;

/// In the state directory: where `sims-node status` asks.
pub const SOCKET_FILE: &str = "sims-node.sock";
/// How often sockets on old addresses are counted.
const CENSUS_MS: u64 = 250;
/// With an address and no agent heard for this long (three solicitations),
/// the network does not offer SIMS.
const NO_AGENT_MS: u64 = 3_000;

/// What `sims-node` runs with (its command line).
pub struct RunOptions {
    /// The interfaces it may move on (`-i`, repeated: Wi-Fi and a dock's
    /// Ethernet); the one in use is chosen as ifaces.rs says.
    pub ifaces: Vec<String>,
    /// The identity and credentials (kept across reboots).
    pub state_dir: PathBuf,
    /// The status socket.
    pub run_dir: PathBuf,
    pub grace_ms: u64,
    pub port: u16,
    /// The rto_min of the SIMS addresses' route (None: the kernel's).
    pub rto_min_ms: Option<u32>,
    /// Register old addresses before DHCP finishes.
    pub early: bool,
    /// A travel router: a LAN behind it, NATed (natlan.rs).
    pub router: bool,
}

pub struct Client {
    /// The interface in use.
    pub iface: Iface,
    /// Every interface named on the command line.
    names: Vec<String>,
    early: bool,
    /// A travel router's LAN NAT (`--router`).
    nat: Option<NatLan>,
    pub node: Node,
    sock: UdpSocket,
    /// For the time without an address: broadcasts from 0.0.0.0, and the
    /// agent's broadcast answers with its MAC.
    packet: Option<PacketSocket>,
    pub routes: OldRoutes,
    /// The last agent heard on the packet socket: (address, MAC).
    agent_mac: Option<(Ipv4Addr, [u8; 6])>,
    /// The interface had carrier at the last link event.
    carrier: bool,
    /// The agent heard on this link since the carrier last came up: until
    /// one is, the node's agent may be the last LAN's (see oldroutes.rs,
    /// the blackhole). It stays when the node forgets its agent at a new
    /// DHCP address on the same link, so the old addresses keep their path
    /// while the node solicits from the new address.
    link_agent: Option<Ipv4Addr>,
    /// When the current address last changed (CLOCK_MONOTONIC ms).
    address_since_ms: u64,
    /// The "this network does not offer SIMS" line was logged for the
    /// current address.
    said_no_sims: bool,
    /// Address and route events seen on the interface (the DHCP client's
    /// work and ours): with the changes counters, a fight would show.
    pub kernel_events: u64,
    port: u16,
    state_file: PathBuf,
    /// What the state file holds.
    saved: Vec<u8>,
}

impl Client {
    /// Writes the node's identity and credentials when they changed
    /// (owner-only: it holds the secret key).
    fn save(&mut self) {
        let data = self.node.save();
        if data == self.saved {
            return;
        }
        match state::write_atomic(&self.state_file, &data, state::PRIVATE) {
            Ok(()) => self.saved = data,
            Err(e) => warn!("saving {}: {e}", self.state_file.display()),
        }
    }

    /// Without an address, every datagram goes as a broadcast from
    /// 0.0.0.0 (`Action`'s contract). Whether it did.
    fn send_unaddressed(&self, data: &[u8]) -> bool {
        if self.node.current().is_some() {
            return false;
        }
        if let Some(p) = &self.packet {
            if let Err(e) = p.send_broadcast(self.port, data) {
                debug!("broadcast from 0.0.0.0: {e}");
            }
            return true;
        }
        false
    }

    fn execute(&mut self, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Send { data, .. } | Action::Broadcast { data }
                    if self.send_unaddressed(&data) => {}
                Action::Send { dst, data } => {
                    let sent = match self.node.current() {
                        Some(src) => udp::send_from(&self.sock, &data, dst, src),
                        None => self.sock.send_to(&data, dst),
                    };
                    if let Err(e) = sent {
                        debug!("send to {dst}: {e}");
                    }
                }
                Action::Broadcast { data } => {
                    let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.port);
                    let sent = match self.node.current() {
                        Some(src) => udp::send_from(&self.sock, &data, dst, src),
                        None => self.sock.send_to(&data, dst),
                    };
                    if let Err(e) = sent {
                        debug!("solicitation: {e}");
                    }
                }
                Action::HoldAddress(addr) => self.iface.hold(addr),
                Action::DropAddress(addr) => self.iface.drop_held(addr),
            }
        }
        self.sync_routes();
    }

    /// The SIMS addresses' rules and route follow the node's bindings and
    /// its agent.
    fn sync_routes(&mut self) {
        // The old addresses: the current one is the DHCP client's, routed
        // by the main table (a network without an agent must still work).
        let cur = self.node.current();
        let addrs: BTreeSet<Ipv4Addr> = (self.node.bindings().iter())
            .map(|b| b.addr())
            .filter(|a| Some(*a) != cur)
            .collect();
        let agent = match (self.carrier, self.link_agent) {
            (true, Some(heard)) => {
                let ip = self.node.agent().map_or(heard, |a| *a.src.ip());
                let mac = self.agent_mac.filter(|(x, _)| *x == ip).map(|(_, m)| m);
                Some((ip, mac))
            }
            _ => None,
        };
        self.routes.sync(&mut self.iface.nl, &addrs, agent);
    }

    /// A datagram from `src` was handled: if it is the node's agent now, the
    /// agent is on this link.
    fn heard_from(&mut self, src: SocketAddrV4) {
        if self.node.agent().is_some_and(|a| a.src == src) {
            self.link_agent = Some(*src.ip());
        }
    }

    /// Datagrams on the packet socket: only while the node has no address
    /// (afterwards the UDP socket has them).
    fn on_packets(&mut self, buf: &mut [u8]) {
        for _ in 0..64 {
            let Some(p) = &self.packet else { return };
            let frame = match p.recv(buf) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    debug!("packet socket: {e}");
                    return;
                }
            };
            if self.node.current().is_some() || !frame.dst.is_broadcast() {
                continue;
            }
            self.agent_mac = Some((*frame.src.ip(), frame.src_mac));
            let mut acts = Vec::new();
            let data = &buf[frame.payload];
            self.node
                .handle_datagram(now(), frame.src, frame.dst, data, &mut acts);
            self.heard_from(frame.src);
            self.execute(acts);
        }
    }

    fn address_changed(&mut self) {
        let cur = self.iface.dhcp_address();
        if cur != self.node.current() {
            let mut acts = Vec::new();
            self.node.set_address(now(), cur, &mut acts);
            self.address_since_ms = event::now_ms();
            self.said_no_sims = false;
            self.execute(acts);
            self.iface.fix_default_route(self.node.current());
        }
        self.sync_nat();
    }

    /// nft runs made for the LAN's NAT.
    pub fn nat_changes(&self) -> u64 {
        self.nat.as_ref().map_or(0, |n| n.changes)
    }

    /// The LAN's NAT follows the interface in use and its address.
    fn sync_nat(&mut self) {
        let cur = self.node.current();
        if let Some(n) = &mut self.nat {
            n.sync(&self.iface.name, cur);
        }
    }

    /// With several interfaces: after any link, address or route change,
    /// the one in use may be another now.
    fn reselect(&mut self) {
        let c = ifaces::candidates(&mut self.iface.nl, &self.names);
        let Some(best) = ifaces::choose(&c, self.iface.index) else {
            return;
        };
        if best.index != self.iface.index {
            let best = best.clone();
            self.switch_to(&best);
        }
    }

    /// The interface in use becomes `to`: the held /32s move onto it, the
    /// old addresses' route, the sockets and ARP settings follow, and its
    /// address is the node's current one (a move, as far as the protocol
    /// is concerned).
    fn switch_to(&mut self, to: &ifaces::Candidate) {
        info!(
            "interface in use: {} -> {} ({:?})",
            self.iface.name, to.name, to.addr
        );
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, self.port);
        let sock = match udp::bind_udp(any, Some(&to.name), true, true) {
            Ok(s) => s,
            Err(e) => {
                warn!("bind {any} on {}: {e}", to.name);
                return;
            }
        };
        if let Err(e) = udp::want_dst(&sock) {
            warn!("IP_PKTINFO on {}: {e}", to.name);
            return;
        }
        // For a moment both are bound to the port (SO_REUSEADDR, each to
        // its own device); the old one closes here.
        self.sock = sock;
        self.packet = match self.early {
            true => PacketSocket::open(to.index, self.port)
                .map_err(|e| warn!("packet socket on {}: {e}", to.name))
                .ok(),
            false => None,
        };
        self.iface.move_to(&to.name, to.index);
        self.node.set_mac(to.mac);
        self.routes.move_to(to.index);
        tune_arp(&to.name);
        self.carrier = to.carrier;
        self.link_agent = None;
        self.agent_mac = None;
        self.address_changed();
        if self.carrier {
            let mut acts = Vec::new();
            self.node.link_up(now(), &mut acts);
            self.execute(acts);
        }
    }

    fn on_events(&mut self, events: &[Event]) {
        if self.names.len() > 1
            && events.iter().any(|e| {
                matches!(
                    e,
                    Event::LinkNew(_)
                        | Event::LinkDel(_)
                        | Event::AddrNew(_)
                        | Event::AddrDel(_)
                        | Event::RouteNew(_)
                        | Event::RouteDel(_)
                )
            })
        {
            self.reselect();
        }
        let mut addr_change = false;
        let mut route_change = false;
        let index = self.iface.index;
        for ev in events {
            if matches!(ev, Event::AddrNew(a) | Event::AddrDel(a) if a.index == index)
                || matches!(ev, Event::RouteNew(r) | Event::RouteDel(r) if r.oif == Some(index))
            {
                self.kernel_events += 1;
            }
            match ev {
                Event::AddrDel(a) if a.index == index => {
                    if a.prefix_len == 32 && self.iface.is_held(a.addr) {
                        self.iface.put_back(a.addr);
                    }
                    addr_change = true;
                    self.routes.route_maybe_gone();
                }
                Event::RouteDel(r) if r.table == NODE_TABLE => self.routes.route_maybe_gone(),
                Event::RuleDel(r) if r.protocol == ROUTE_PROTOCOL && r.table == NODE_TABLE => {
                    if let Some((addr, 32)) = r.src {
                        self.routes.rule_gone(addr);
                    }
                }
                Event::AddrNew(a) if a.index == index => addr_change = true,
                Event::LinkNew(l) if l.index == index => {
                    addr_change = true;
                    let was = std::mem::replace(&mut self.carrier, l.up && l.carrier);
                    if self.carrier != was {
                        self.link_agent = None;
                    }
                    if self.carrier && !was {
                        // Perhaps another LAN: without an address, find
                        // its agent now.
                        let mut acts = Vec::new();
                        self.node.link_up(now(), &mut acts);
                        self.execute(acts);
                    }
                }
                Event::RouteNew(r) if r.table == MAIN_TABLE && r.dst_len == 0 => {
                    route_change = true
                }
                _ => {}
            }
        }
        if addr_change {
            self.iface.restore_missing();
            self.address_changed();
        }
        if route_change {
            self.iface.fix_default_route(self.node.current());
            // A DHCP client that adds its routes after the address
            // (NetworkManager): the agent's answer to a solicitation sent
            // before the route was there fell to the reverse-path filter.
            let mut acts = Vec::new();
            self.node.routes_changed(now(), &mut acts);
            self.execute(acts);
        }
        self.sync_routes();
    }

    /// Whether this network offers SIMS: an agent is heard; or the node has
    /// had its address for NO_AGENT_MS and none answered.
    pub fn sims_here(&self) -> Sims {
        match (self.node.agent(), self.node.current()) {
            (Some(_), _) => Sims::Offered,
            (None, None) => Sims::Looking,
            (None, Some(_)) if event::now_ms() < self.address_since_ms + NO_AGENT_MS => {
                Sims::Looking
            }
            (None, Some(_)) => Sims::NotOffered,
        }
    }

    /// Says once per address when the network turns out not to offer SIMS:
    /// what the user will see happen to the old sessions.
    fn tell_no_sims(&mut self) {
        if self.sims_here() != Sims::NotOffered {
            self.said_no_sims = false;
            return;
        }
        if self.said_no_sims {
            return;
        }
        self.said_no_sims = true;
        let cur = self
            .node
            .current()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let cur_addr = self.node.current();
        let old: Vec<String> = (self.node.bindings().iter())
            .filter(|b| Some(b.addr()) != cur_addr && b.sockets > 0)
            .map(|b| b.addr().to_string())
            .collect();
        match old.is_empty() {
            true => {
                info!("this network ({cur}) does not offer SIMS: new connections work as usual")
            }
            false => warn!(
                "this network ({cur}) does not offer SIMS: old sessions on {} will end",
                old.join(", ")
            ),
        }
    }

    /// TCP sessions on the old addresses (for the status report).
    fn old_connections(&self) -> Vec<sockdiag::TcpSock> {
        let old: Vec<Ipv4Addr> = self.node.old_addresses().collect();
        if old.is_empty() {
            return Vec::new();
        }
        sockdiag::tcp_sockets(&old).unwrap_or_default()
    }

    fn census(&mut self) {
        let old: Vec<Ipv4Addr> = self.node.old_addresses().collect();
        if old.is_empty() {
            return;
        }
        match sockdiag::tcp_socket_counts(&old) {
            Ok(mut counts) => {
                // A travel router's LAN clients' sessions, NATed to an old
                // address, keep it as its own sockets do.
                if self.nat.is_some() {
                    match conntrack::nat_session_counts(&old) {
                        Ok(nat) => {
                            for (c, (_, n)) in counts.iter_mut().zip(nat) {
                                c.1 += n;
                            }
                        }
                        Err(e) => debug!("conntrack: {e}"),
                    }
                }
                let mut acts = Vec::new();
                self.node.socket_census(now(), &counts, &mut acts);
                self.execute(acts);
            }
            Err(e) => debug!("sock_diag: {e}"),
        }
    }
}

/// Runs the node on `o.iface` until SIGTERM or SIGINT.
pub fn run(o: &RunOptions) -> Result<(), String> {
    let (dir, port) = (o.state_dir.as_path(), o.port);
    if o.router {
        // The names go into an nft script (natlan.rs).
        if let Some(bad) = (o.ifaces.iter()).find(|n| n.contains(['"', '\\'])) {
            return Err(format!(
                "--router: interface name {bad:?} cannot be used in nft"
            ));
        }
    }
    for d in [dir, o.run_dir.as_path()] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let signals = Signals::open().map_err(|e| format!("signals: {e}"))?;
    let mut mon = Monitor::open().map_err(|e| format!("netlink monitor: {e}"))?;
    let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    // The interface in use at start: the first that exists, unless several
    // do and another is the one in use (ifaces.rs).
    let present = ifaces::candidates(&mut nl, &o.ifaces);
    let first = present
        .first()
        .ok_or_else(|| format!("interface {} not found", o.ifaces.join(", ")))?;
    let start = ifaces::choose(&present, first.index).unwrap_or(first);
    let iface = start.name.as_str();
    let link = nl
        .link_by_name(iface)
        .map_err(|e| format!("netlink: {e}"))?
        .ok_or_else(|| format!("interface {iface} not found"))?;
    tune_arp(iface);
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    let sock =
        udp::bind_udp(any, Some(iface), true, true).map_err(|e| format!("bind {any}: {e}"))?;
    udp::want_dst(&sock).map_err(|e| format!("IP_PKTINFO: {e}"))?;
    let mut seed = [0u8; 32];
    sims_linux::random_bytes(&mut seed).map_err(|e| format!("random: {e}"))?;
    let cfg = NodeConfig {
        port,
        grace_ms: o.grace_ms,
        early_registration: o.early,
        ..NodeConfig::default()
    };
    let packet = match o.early {
        true => {
            Some(PacketSocket::open(link.index, port).map_err(|e| format!("packet socket: {e}"))?)
        }
        false => None,
    };
    let mac = link.mac.unwrap_or_default();
    let random = sims_daemon::random_seed()?;
    // The identity and credentials of a previous run: after a restart its
    // held addresses are still on the interface, and with them its relayed
    // sessions; after a reboot they are put back below.
    let state_file = dir.join("sims-node.state");
    let node = match std::fs::read(&state_file) {
        Ok(data) => match Node::restore(cfg.clone(), &data, mac, random) {
            Some(n) => {
                info!(
                    "restored the node's identity and {} addresses from {}",
                    n.bindings().len(),
                    state_file.display()
                );
                n
            }
            None => {
                warn!("{} unreadable; a new identity", state_file.display());
                Node::new(cfg, seed, mac, random)
            }
        },
        Err(_) => Node::new(cfg, seed, mac, random),
    };
    let mut routes = OldRoutes::new(link.index, o.rto_min_ms);
    routes.flush(&mut nl);
    let mut c = Client {
        names: o.ifaces.clone(),
        early: o.early,
        nat: o.router.then(NatLan::default),
        state_file,
        saved: Vec::new(),
        iface: Iface::new(iface, link.index, nl),
        node,
        sock,
        packet,
        routes,
        agent_mac: None,
        carrier: link.up && link.carrier,
        link_agent: None,
        address_since_ms: event::now_ms(),
        said_no_sims: false,
        kernel_events: 0,
        port,
    };
    for addr in c.node.take_dropped() {
        c.iface.remove_stale_hold(addr);
    }
    let status = StatusSocket::bind(&o.run_dir.join(SOCKET_FILE))?;
    info!("sims-node on {iface}");
    c.address_changed();
    if c.node.current().is_none() {
        // No DHCP address yet (a reboot, or the DHCP client is slower): the
        // restored addresses are old ones; hold them, and look for an agent
        // to register them with before DHCP.
        let old: Vec<Ipv4Addr> = c.node.bindings().iter().map(|b| b.addr()).collect();
        for a in old {
            c.iface.hold(a);
        }
        if c.carrier {
            let mut acts = Vec::new();
            c.node.link_up(now(), &mut acts);
            c.execute(acts);
        }
        c.sync_routes();
    }
    let mut next_census = event::now_ms();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = event::now_ms();
        let until = c.node.poll_timeout().unwrap_or(u64::MAX).min(next_census);
        let wait = until.saturating_sub(now).min(1000) as i32;
        let mut fds = vec![signals.fd(), mon.fd(), status.fd(), c.sock.as_raw_fd()];
        fds.extend(c.packet.as_ref().map(|p| p.fd()));
        for i in event::poll_readable(&fds, wait).map_err(|e| format!("poll: {e}"))? {
            match i {
                0 => {
                    if let Some(sig) = signals.next() {
                        if sig != libc::SIGHUP {
                            if let Some(n) = &mut c.nat {
                                n.remove();
                            }
                            info!(
                                "signal {sig}: exiting (old addresses stay on {})",
                                c.iface.name
                            );
                            return Ok(());
                        }
                    }
                }
                1 => {
                    let events = mon.recv().unwrap_or_default();
                    if mon.take_overrun() {
                        c.on_events(&[Event::LinkNew(link.clone())]);
                    }
                    c.on_events(&events);
                }
                2 => {
                    let conns = c.old_connections();
                    status.serve(|req| match req {
                        "report" => c.report(&conns),
                        _ => c.status_json(&conns),
                    })
                }
                4 => c.on_packets(&mut buf),
                _ => {
                    for _ in 0..64 {
                        let Ok((n, src, Some(dst))) = udp::recv_with_dst(&c.sock, &mut buf) else {
                            break;
                        };
                        if c.node.current().is_none() && c.packet.is_some() {
                            continue; // the packet socket has it too
                        }
                        let mut acts = Vec::new();
                        c.node
                            .handle_datagram(sims_daemon::now(), src, dst, &buf[..n], &mut acts);
                        c.heard_from(src);
                        c.execute(acts);
                    }
                }
            }
        }
        let now = event::now_ms();
        if now >= next_census {
            c.census();
            c.tell_no_sims();
            next_census = now + CENSUS_MS;
        }
        let mut acts = Vec::new();
        c.node.handle_timeout(sims_daemon::now(), &mut acts);
        c.execute(acts);
        c.save();
    }
}
