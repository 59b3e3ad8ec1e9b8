//! Where the packets of the node's old addresses go: a policy rule
//! `from <addr> lookup NODE_TABLE` for each old address the node holds a
//! credential for (the current address is the main table's), and in that
//! table one default route via the LAN's agent, on-link, or a blackhole
//! while no agent is heard on the link ([`TableRoute::Blackhole`]).
//!
//! Why a table of our own: before DHCP finishes on a new LAN the main
//! table has no default route and no prefix route (the DHCP client
//! flushed them), yet the old addresses' sessions can already be relayed
//! (an early registration); the agent's LAN address and MAC come from
//! its advertisement. And the route can carry a TCP lever (issue 12,
//! item 4; `--rto-min-ms`, off by default): a locked `rto_min`, so that a
//! session stalled by a move would retransmit sooner than after the
//! kernel's 200 ms floor. New connections from other addresses (a network
//! without SIMS) never see it.
//!
//! Everything here is tagged with [`ROUTE_PROTOCOL`] in [`NODE_TABLE`]:
//! at start, what an earlier run left is removed, and nothing else is
//! touched.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use log::{debug, info, warn};
use sims_linux::netlink::{
    Netlink, Route, RouteType, Rule, NUD_INCOMPLETE, NUD_LIVE, NUD_REACHABLE, RT_SCOPE_UNIVERSE,
};

/// The node's table (simsd's are 1144 and up).
pub const NODE_TABLE: u32 = 1140;
/// Before the main table (32766) and netifd's and mwan3's policies on an
/// OpenWrt travel router (1000 and up).
pub const RULE_PRIORITY: u32 = 890;
/// The routing protocol of the node's rules and routes (simsd's is 153).
pub const ROUTE_PROTOCOL: u8 = 154;

/// What the table's default route is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TableRoute {
    /// Through the LAN's agent.
    Via(Ipv4Addr),
    /// No agent heard on this link (yet): the old addresses' packets are
    /// dropped at once. Through the last LAN's agent instead, they would
    /// wait in an unanswered ARP queue for its 3 s, and while a segment
    /// waits there TCP does not retransmit it (the kernel's
    /// skb_still_in_host_queue): a 3 s stall after a move that s25 found
    /// with dhcpcd, which removes the address at carrier loss. What was
    /// sent in the moment before the blackhole is dropped from that queue
    /// ([`OldRoutes::drop_waiting`]).
    Blackhole,
}

pub struct OldRoutes {
    index: u32,
    rto_min_ms: Option<u32>,
    /// Addresses whose rule is installed.
    rules: BTreeSet<Ipv4Addr>,
    /// The table's default route as installed (None: unknown, e.g. the
    /// kernel may have removed it).
    installed: Option<TableRoute>,
    /// The agent's neighbour entry as we made sure of it: (address, MAC).
    neigh: Option<(Ipv4Addr, [u8; 6])>,
    /// The interface and gateway the table's route last went through
    /// (kept when the route may be gone: its neighbour entry may not be).
    via: Option<(u32, Ipv4Addr)>,
    /// The route last logged (it is put back quietly).
    logged: Option<TableRoute>,
    /// Netlink changes made (rules, routes, neighbours): the node's share
    /// of a move's kernel work.
    pub changes: u64,
}

impl OldRoutes {
    /// `rto_min_ms`: the rto_min of the table's route (None: the kernel's).
    pub fn new(index: u32, rto_min_ms: Option<u32>) -> Self {
        OldRoutes {
            index,
            rto_min_ms,
            rules: BTreeSet::new(),
            installed: None,
            neigh: None,
            via: None,
            logged: None,
            changes: 0,
        }
    }

    fn rule(addr: Ipv4Addr) -> Rule {
        Rule {
            priority: RULE_PRIORITY,
            table: NODE_TABLE,
            fwmark: None,
            src: Some((addr, 32)),
            protocol: ROUTE_PROTOCOL,
        }
    }

    fn default_via(&self, gw: Ipv4Addr) -> Route {
        Route {
            table: NODE_TABLE,
            dst: Ipv4Addr::UNSPECIFIED,
            dst_len: 0,
            oif: Some(self.index),
            gateway: Some(gw),
            prefsrc: None,
            protocol: ROUTE_PROTOCOL,
            kind: RouteType::Unicast,
            scope: RT_SCOPE_UNIVERSE,
            onlink: true,
            rto_min_ms: self.rto_min_ms,
            metric: None,
        }
    }

    /// The route may be gone: when the interface's last address goes
    /// (a DHCP client's flush takes the held /32s too, for a moment), the
    /// kernel removes every route through it and its neighbours, without
    /// a notification per route. The next `sync` puts them back.
    pub fn route_maybe_gone(&mut self) {
        self.installed = None;
        self.neigh = None;
    }

    /// The interface in use is another now: the table's route follows at
    /// the next `sync` (a replace: the route's key has no interface).
    pub fn move_to(&mut self, index: u32) {
        self.index = index;
        self.installed = None;
        self.neigh = None;
    }

    /// Someone removed our rule for `addr`: the next `sync` puts it back.
    pub fn rule_gone(&mut self, addr: Ipv4Addr) {
        self.rules.remove(&addr);
    }

    /// Removes what an earlier run left: our rules, and our table's routes.
    pub fn flush(&mut self, nl: &mut Netlink) {
        for r in nl.rules().unwrap_or_default() {
            if r.protocol == ROUTE_PROTOCOL && r.table == NODE_TABLE {
                let _ = nl.rule_del(&r);
            }
        }
        for r in nl.routes(NODE_TABLE).unwrap_or_default() {
            if r.protocol == ROUTE_PROTOCOL {
                let _ = nl.route_del(&r);
            }
        }
        self.rules.clear();
        self.installed = None;
    }

    /// The agent's neighbour entry from its frame's MAC, unless the kernel
    /// has learned one (what it learned stands); an entry that learned
    /// nothing (incomplete or failed: its ARP went out from an old address
    /// the agent's reverse-path filter drops) is filled in.
    fn ensure_neigh(&mut self, nl: &mut Netlink, gw: Ipv4Addr, mac: [u8; 6]) {
        let learned = nl
            .neigh_get(self.index, gw)
            .ok()
            .flatten()
            .is_some_and(|n| n.mac.is_some() && n.state & NUD_LIVE != 0);
        // Once per agent and MAC, whatever the outcome: a failing kernel
        // must not cost a dump and a request at every sync.
        self.neigh = Some((gw, mac));
        if !learned {
            self.changes += 1;
            if let Err(e) = nl.neigh_replace(self.index, gw, mac, NUD_REACHABLE) {
                warn!("neighbour {gw}: {e}");
            }
        }
    }

    /// The route leaves `gw` on `index`: if its neighbour entry is still
    /// resolving (the link went away under it), the segments waiting in
    /// its ARP queue are dropped now rather than when the last probe fails
    /// 3 s later. TCP does not retransmit a segment the host still holds
    /// (skb_still_in_host_queue), so a session whose segment was caught
    /// there stalled 3 s after a move (s25 with dhcpcd, under load: the
    /// moment between carrier loss and the blackhole). An entry that
    /// resolved holds nothing and is left alone.
    fn drop_waiting(&mut self, nl: &mut Netlink, index: u32, gw: Ipv4Addr) {
        let resolving = nl
            .neigh_get(index, gw)
            .ok()
            .flatten()
            .is_some_and(|n| n.state == NUD_INCOMPLETE);
        if resolving {
            self.changes += 1;
            match nl.neigh_del(index, gw) {
                Ok(()) => debug!("dropped what waited for {gw}'s address"),
                Err(e) => debug!("neighbour {gw}: {e}"),
            }
        }
    }

    /// Makes the kernel match: a rule for each of `addrs`, and the default
    /// route via `agent` (its LAN address, and its MAC if known: added as
    /// a neighbour if the kernel has none, since before DHCP the node's
    /// ARP would come from an address the agent's reverse-path filter
    /// drops). With no agent heard on the link, a blackhole
    /// ([`TableRoute::Blackhole`]).
    pub fn sync(
        &mut self,
        nl: &mut Netlink,
        addrs: &BTreeSet<Ipv4Addr>,
        agent: Option<(Ipv4Addr, Option<[u8; 6]>)>,
    ) {
        for &a in addrs.difference(&self.rules.clone()) {
            self.changes += 1;
            match nl.rule_add(&Self::rule(a)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    warn!("rule from {a}: {e}");
                    continue;
                }
            }
            self.rules.insert(a);
        }
        for a in self.rules.difference(addrs).copied().collect::<Vec<_>>() {
            self.changes += 1;
            if let Err(e) = nl.rule_del(&Self::rule(a)) {
                debug!("rule from {a}: {e}");
            }
            self.rules.remove(&a);
        }
        let want = match agent {
            Some((gw, _)) => TableRoute::Via(gw),
            None => TableRoute::Blackhole,
        };
        let via = match want {
            TableRoute::Via(gw) => Some((self.index, gw)),
            TableRoute::Blackhole => None,
        };
        let left = self.via.filter(|&v| Some(v) != via);
        self.via = via;
        // The agent's MAC may come after its route (an advertisement heard
        // while the old address was still there has no frame): the
        // neighbour is made sure of apart from the route.
        if let Some((gw, Some(mac))) = agent {
            if self.neigh != Some((gw, mac)) {
                self.ensure_neigh(nl, gw, mac);
            }
        }
        if self.installed != Some(want) {
            self.install(nl, want);
        }
        // Once the route has left the gateway: nothing more can join the
        // queue that is dropped.
        if let Some((index, gw)) = left {
            self.drop_waiting(nl, index, gw);
        }
    }

    /// Replaces the table's default route with `want`.
    fn install(&mut self, nl: &mut Netlink, want: TableRoute) {
        self.changes += 1;
        let route = match want {
            TableRoute::Via(gw) => self.default_via(gw),
            TableRoute::Blackhole => Route {
                oif: None,
                gateway: None,
                kind: RouteType::Blackhole,
                onlink: false,
                rto_min_ms: None,
                metric: None,
                ..self.default_via(Ipv4Addr::UNSPECIFIED)
            },
        };
        match nl.route_replace(&route) {
            Ok(()) => {
                if self.logged.replace(want) != Some(want) {
                    match want {
                        TableRoute::Via(gw) => info!("old addresses' route: via agent {gw}"),
                        TableRoute::Blackhole => {
                            info!("old addresses' route: none (no agent heard)")
                        }
                    }
                }
                self.installed = Some(want);
            }
            Err(e) => warn!("{want:?} in table {NODE_TABLE}: {e}"),
        }
    }
}
