//! The kernel state a moving node keeps right on its interface: the old
//! addresses held as /32s (put back at once when a DHCP client flushes
//! them), the default route's source (new connections use the current
//! address), and ARP settings for an interface whose address changes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use log::{info, warn};
use sims_linux::netlink::{Netlink, Route, RT_TABLE_MAIN};

pub const MAIN_TABLE: u32 = RT_TABLE_MAIN;

/// The moving interface and the old addresses held on it.
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub nl: Netlink,
    /// Old addresses kept as /32 on the interface.
    held: BTreeSet<Ipv4Addr>,
    /// Netlink changes made (addresses, the default route's source): with
    /// [`crate::oldroutes::OldRoutes::changes`], what the node did to the
    /// kernel; a DHCP client and the node fighting would show here.
    pub changes: u64,
}

impl Iface {
    pub fn new(name: &str, index: u32, nl: Netlink) -> Self {
        Iface {
            name: name.to_string(),
            index,
            nl,
            held: BTreeSet::new(),
            changes: 0,
        }
    }

    /// The DHCP address: the interface's address with a real prefix.
    pub fn dhcp_address(&mut self) -> Option<Ipv4Addr> {
        let addrs = self.nl.addrs(Some(self.index)).ok()?;
        addrs.iter().find(|a| a.prefix_len < 32).map(|a| a.addr)
    }

    /// The interface in use is another now: the held /32s move onto it.
    pub fn move_to(&mut self, name: &str, index: u32) {
        let held: Vec<Ipv4Addr> = self.held.iter().copied().collect();
        for &a in &held {
            self.changes += 1;
            let _ = self.nl.addr_del(self.index, a, 32);
        }
        self.name = name.to_string();
        self.index = index;
        for a in held {
            self.put_back(a);
        }
    }

    /// Keep `addr` as a /32 from now on.
    pub fn hold(&mut self, addr: Ipv4Addr) {
        self.held.insert(addr);
        self.put_back(addr);
    }

    /// Removes `addr`'s /32 if the interface has one and we do not hold
    /// it: an earlier run's hold whose credential was not kept (a state
    /// file of protocol version 2), which no agent will relay any more.
    pub fn remove_stale_hold(&mut self, addr: Ipv4Addr) {
        let on_iface = self
            .nl
            .addrs(Some(self.index))
            .is_ok_and(|v| v.iter().any(|a| a.addr == addr && a.prefix_len == 32));
        if on_iface && !self.held.contains(&addr) {
            info!("dropping old address {addr}: its credential was not kept across the upgrade");
            self.changes += 1;
            let _ = self.nl.addr_del(self.index, addr, 32);
        }
    }

    /// Stop holding `addr` and remove its /32.
    pub fn drop_held(&mut self, addr: Ipv4Addr) {
        if self.held.remove(&addr) {
            info!("dropping old address {addr}");
            self.changes += 1;
            let _ = self.nl.addr_del(self.index, addr, 32);
        }
    }

    pub fn is_held(&self, addr: Ipv4Addr) -> bool {
        self.held.contains(&addr)
    }

    /// Put a held /32 back (the DHCP client flushed it, or it was never
    /// there): every missing moment stretches the old sessions' stall.
    pub fn put_back(&mut self, addr: Ipv4Addr) {
        self.changes += 1;
        match self.nl.addr_add(self.index, addr, 32, true) {
            Ok(()) => info!("holding old address {addr}/32 on {}", self.name),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => warn!("cannot hold {addr}: {e}"),
        }
    }

    /// After a change of addresses (a flush removes several at once):
    /// every held /32 that is missing is put back.
    pub fn restore_missing(&mut self) {
        let present: Vec<Ipv4Addr> = self
            .nl
            .addrs(Some(self.index))
            .unwrap_or_default()
            .iter()
            .filter(|a| a.prefix_len == 32)
            .map(|a| a.addr)
            .collect();
        let missing: Vec<Ipv4Addr> = self
            .held
            .iter()
            .filter(|a| !present.contains(a))
            .copied()
            .collect();
        for a in missing {
            self.put_back(a);
        }
    }

    /// New connections must use the current address `cur`: give the
    /// default route through this interface `src <cur>`.
    pub fn fix_default_route(&mut self, cur: Option<Ipv4Addr>) {
        let Some(cur) = cur else {
            return;
        };
        let Ok(routes) = self.nl.routes(MAIN_TABLE) else {
            return;
        };
        for r in routes {
            if r.dst_len == 0 && r.oif == Some(self.index) && r.prefsrc != Some(cur) {
                let fixed = Route {
                    prefsrc: Some(cur),
                    ..r
                };
                self.changes += 1;
                match self.nl.route_replace(&fixed) {
                    Ok(()) => info!("default route via {:?} now has src {cur}", r.gateway),
                    Err(e) => warn!("default route src: {e}"),
                }
            }
        }
    }
}

/// ARP on a moving interface: requests must carry the current address
/// (arp_announce 2), since the new router's reverse-path filter drops ARP
/// from an old address it has not bound yet; and the node must answer ARP
/// for its held /32s (arp_ignore 0 or 1; 2 would ignore them).
pub fn tune_arp(iface: &str) {
    use sims_linux::sysctl;
    if let Err(e) = sysctl::set_ipv4_conf(iface, "arp_announce", "2") {
        warn!("{iface}: arp_announce: {e}");
    }
    let ignore = sysctl::get(&format!("net/ipv4/conf/{iface}/arp_ignore"));
    if ignore.is_ok_and(|v| v.trim().parse::<u32>().unwrap_or(0) >= 2) {
        if let Err(e) = sysctl::set_ipv4_conf(iface, "arp_ignore", "1") {
            warn!("{iface}: arp_ignore: {e}");
        }
    }
}
