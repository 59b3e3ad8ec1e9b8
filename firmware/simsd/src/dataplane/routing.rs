//! Policy routing: the rules and routes simsd installs, built from the
//! numbers in `simsd::owned::KernelIds`. One catch-all rule (while there
//! are peers) finds the SIMS table of /32s; one `fwmark` rule per
//! peer (numbered by its slot, slots.rs) routes marked packets into the
//! peer's table, whose one default route is the peer's tunnel. Never a rule per binding: each rule costs
//! every forwarded packet (docs/ARCHITECTURE.md).

use std::io;
use std::net::Ipv4Addr;

use sims_linux::netlink::{Route, RouteType, Rule, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE};
use simsd::owned::KernelIds;

use super::{ignore, Dataplane, EEXIST, ENOENT};

impl Dataplane {
    pub(super) fn ids(&self) -> &KernelIds {
        &self.cfg.ids
    }

    pub(super) fn catch_all_rule(&self) -> Rule {
        Rule {
            priority: self.ids().rule_priority,
            table: self.ids().table,
            fwmark: None,
            src: None,
            protocol: self.ids().route_protocol,
        }
    }

    pub(super) fn peer_rule(&self, s: usize) -> Rule {
        Rule {
            priority: self.ids().peer_rule_priority(),
            table: self.ids().peer_table(s),
            fwmark: Some((self.ids().peer_mark(s), u32::MAX)),
            src: None,
            protocol: self.ids().route_protocol,
        }
    }

    pub(super) fn host_route(&self, addr: u32, oif: u32) -> Route {
        Route {
            table: self.ids().table,
            dst: Ipv4Addr::from(addr),
            dst_len: 32,
            oif: Some(oif),
            gateway: None,
            prefsrc: None,
            protocol: self.ids().route_protocol,
            kind: RouteType::Unicast,
            scope: RT_SCOPE_LINK,
            onlink: false,
            rto_min_ms: None,
            metric: None,
        }
    }

    pub(super) fn default_route(&self, s: usize, oif: u32) -> Route {
        Route {
            table: self.ids().peer_table(s),
            dst: Ipv4Addr::UNSPECIFIED,
            dst_len: 0,
            oif: Some(oif),
            gateway: None,
            prefsrc: None,
            protocol: self.ids().route_protocol,
            kind: RouteType::Unicast,
            scope: RT_SCOPE_UNIVERSE,
            onlink: false,
            rto_min_ms: None,
            metric: None,
        }
    }

    /// The catch-all lookup rule exists while we have peers (there can be
    /// visitor bindings, /32s in our table): made with the tunnels, not by
    /// a handover. With no visitor its lookup finds an empty table.
    pub(super) fn update_catch_all(&mut self) -> io::Result<()> {
        let want = self.slots.iter().any(Option::is_some);
        let rule = self.catch_all_rule();
        let have = self.nl.rules()?.contains(&rule);
        if want && !have {
            ignore(self.nl.rule_add(&rule), &[EEXIST])?;
        } else if !want && have {
            ignore(self.nl.rule_del(&rule), &[ENOENT])?;
        }
        Ok(())
    }
}
