//! The kernel state a moving node keeps right on its interface: the old
//! addresses held as /32s (put back at once when a DHCP client flushes
//! them), the default route's source (new connections use the current
//! address), and ARP settings for an interface whose address changes.

use std::net::Ipv4Addr;

use log::{info, warn};
use sims_linux::netlink::{Route, RT_TABLE_MAIN};

use crate::client::Client;

pub const MAIN_TABLE: u32 = RT_TABLE_MAIN;

impl Client {
    /// The DHCP address: the interface's address with a real prefix.
    pub fn dhcp_address(&mut self) -> Option<Ipv4Addr> {
        let addrs = self.nl.addrs(Some(self.index)).ok()?;
        addrs.iter().find(|a| a.prefix_len < 32).map(|a| a.addr)
    }

    /// Put a held /32 back (the DHCP client flushed it, or it was never
    /// there): every missing moment stretches the old sessions' stall.
    pub fn hold(&mut self, addr: Ipv4Addr) {
        match self.nl.addr_add(self.index, addr, 32, true) {
            Ok(()) => info!("holding old address {addr}/32 on {}", self.iface),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => warn!("cannot hold {addr}: {e}"),
        }
    }

    /// New connections must use the current address: give the default
    /// route through this interface `src <current>`.
    pub fn fix_default_route(&mut self) {
        let Some(cur) = self.node.current() else {
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
