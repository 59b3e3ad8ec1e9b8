//! Which of the node's interfaces is in use (`-i wlan0 -i eth0`: a laptop
//! on Wi-Fi that docks to Ethernet). The one the kernel sends new
//! connections through: of those with carrier and a DHCP address, the one
//! whose default route has the least metric (NetworkManager gives Ethernet
//! 100 and Wi-Fi 600; dhcpcd 1000 + index and 2000 + index). Docking or
//! undocking changes it, and that is a move like any other: the old
//! addresses are held on the interface in use and relayed through its
//! network's agent.

use std::net::Ipv4Addr;

use sims_linux::netlink::{Netlink, RT_TABLE_MAIN};

/// One interface as the choice sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub index: u32,
    pub carrier: bool,
    pub mac: [u8; 6],
    /// Its address with a prefix (the DHCP client's).
    pub addr: Option<Ipv4Addr>,
    /// The least metric of the main table's default routes through it.
    pub metric: Option<u32>,
}

/// The interfaces named `names` that exist now, in that order.
pub fn candidates(nl: &mut Netlink, names: &[String]) -> Vec<Candidate> {
    let links = nl.links().unwrap_or_default();
    let routes = nl.routes(RT_TABLE_MAIN).unwrap_or_default();
    let mut v = Vec::new();
    for name in names {
        let Some(l) = links.iter().find(|l| &l.name == name) else {
            continue;
        };
        let addr = (nl.addrs(Some(l.index)).unwrap_or_default().iter())
            .find(|a| a.prefix_len < 32)
            .map(|a| a.addr);
        let metric = (routes.iter())
            .filter(|r| r.dst_len == 0 && r.oif == Some(l.index))
            .map(|r| r.metric.unwrap_or(0))
            .min();
        v.push(Candidate {
            name: name.clone(),
            index: l.index,
            carrier: l.up && l.carrier,
            mac: l.mac.unwrap_or_default(),
            addr,
            metric,
        });
    }
    v
}

/// The interface to use, or None to keep the one in use (none has
/// carrier: the laptop is between networks). Ranked: an address and a
/// default route (least metric first), an address, carrier; ties go to
/// the one in use, then to the order given.
pub fn choose(c: &[Candidate], in_use: u32) -> Option<&Candidate> {
    let rank = |x: &Candidate| match (x.carrier, x.addr, x.metric) {
        (false, _, _) => 3,
        (true, Some(_), Some(_)) => 0,
        (true, Some(_), None) => 1,
        (true, None, _) => 2,
    };
    let best = (c.iter().enumerate())
        .min_by_key(|(i, x)| (rank(x), x.metric.unwrap_or(u32::MAX), x.index != in_use, *i))?;
    (rank(best.1) < 3).then_some(best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, index: u32, carrier: bool, addr: bool, metric: Option<u32>) -> Candidate {
        Candidate {
            name: name.into(),
            index,
            carrier,
            mac: [2, 0, 0, 0, 0, index as u8],
            addr: addr.then_some(Ipv4Addr::new(10, 0, 0, index as u8)),
            metric,
        }
    }

    #[test]
    fn the_dock_wins_while_it_is_there() {
        let wifi = c("wlan0", 2, true, true, Some(600));
        let dock = c("eth0", 3, true, true, Some(100));
        assert_eq!(
            choose(&[wifi.clone(), dock.clone()], 2).unwrap().name,
            "eth0"
        );
        // The dock's DHCP is not done yet: Wi-Fi stays in use.
        let docking = c("eth0", 3, true, false, None);
        assert_eq!(choose(&[wifi.clone(), docking], 2).unwrap().name, "wlan0");
        // Undocked: Wi-Fi again.
        let undocked = c("eth0", 3, false, true, Some(100));
        assert_eq!(
            choose(&[wifi.clone(), undocked.clone()], 3).unwrap().name,
            "wlan0"
        );
        // Wi-Fi lost its address (a move) while docked: the dock.
        let moving = c("wlan0", 2, true, false, None);
        assert_eq!(choose(&[moving, dock], 2).unwrap().name, "eth0");
        // Nothing has carrier: keep what is in use.
        let off = c("wlan0", 2, false, false, None);
        assert!(choose(&[off, undocked], 3).is_none());
        // Equal metrics: the one in use stays.
        let a = c("wlan0", 2, true, true, Some(100));
        let b = c("eth0", 3, true, true, Some(100));
        assert_eq!(choose(&[a.clone(), b.clone()], 3).unwrap().name, "eth0");
        assert_eq!(choose(&[a, b], 2).unwrap().name, "wlan0");
    }
}
