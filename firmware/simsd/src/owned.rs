//! The kernel state simsd owns, by name and number (docs/ARCHITECTURE.md,
//! "Kernel state owned by simsd"). Every formula is written here once:
//! the data plane installs by it, the nft ruleset names by it, status
//! reports by it, and the testbed checks by it.

/// Tunnel devices are `sims-<peer id>` (ids are at most 10 characters, so
/// a name fits the kernel's 15).
pub const TUNNEL_PREFIX: &str = "sims-";
/// The nftables table, family `inet`, owned whole.
pub const NFT_TABLE: &str = "sims";

/// Defaults of the numbers an operator may change in `/etc/config/sims`.
pub mod defaults {
    /// The table of bound /32 host routes; peer slots' tables follow it
    /// (up to `TABLE + 250`), clear of the kernel's own (253-255).
    pub const TABLE: u32 = 1144;
    /// The catch-all rule's priority; per-peer rules use the next one.
    /// Clear of what OpenWrt's routing daemons own, and before them all:
    /// mwan3 1000-3999 (deleted whole when it stops), netifd 10000, 20000
    /// and 90000+, pbr 30000. A relayed packet must find its tunnel or its
    /// visitor before any of their policies sends it to a WAN.
    pub const RULE_PRIORITY: u32 = 900;
    /// The routing protocol of every route and rule simsd installs.
    pub const ROUTE_PROTOCOL: u8 = 153;
    /// Peer n's packets carry mark `MARK_BASE + 1 + n`.
    pub const MARK_BASE: u32 = 0x5153_0000;
    pub const TUNNEL_MTU: u32 = 1480;
    /// Seconds between writes of the accounting file (it may be on flash).
    pub const ACCOUNTING_INTERVAL_S: u64 = 3600;
}

/// The numbers that identify simsd's routes, rules and marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelIds {
    pub table: u32,
    pub rule_priority: u32,
    pub route_protocol: u8,
    pub mark_base: u32,
}

impl Default for KernelIds {
    fn default() -> Self {
        KernelIds::DEFAULT
    }
}

impl KernelIds {
    /// The numbers of an unconfigured simsd.
    pub const DEFAULT: KernelIds = KernelIds {
        table: defaults::TABLE,
        rule_priority: defaults::RULE_PRIORITY,
        route_protocol: defaults::ROUTE_PROTOCOL,
        mark_base: defaults::MARK_BASE,
    };

    /// Peer `p`'s table: one default route into its tunnel.
    pub const fn peer_table(&self, p: usize) -> u32 {
        self.table + 1 + p as u32
    }

    /// The mark of packets for peer `p`'s tunnel.
    pub const fn peer_mark(&self, p: usize) -> u32 {
        self.mark_base + 1 + p as u32
    }

    /// The priority of the per-peer `fwmark` rules.
    pub const fn peer_rule_priority(&self) -> u32 {
        self.rule_priority + 1
    }

    /// The tables that may hold simsd's routes with `peers` peers.
    pub fn tables(&self, peers: usize) -> core::ops::RangeInclusive<u32> {
        self.table..=self.table + peers as u32
    }
}

/// The tunnel device to the peer with id `peer_id`.
pub fn tunnel_name(peer_id: &str) -> String {
    format!("{TUNNEL_PREFIX}{peer_id}")
}

/// Is `name` (of kind `kind`) a tunnel device of ours?
pub fn is_our_tunnel(name: &str, kind: Option<&str>) -> bool {
    name.starts_with(TUNNEL_PREFIX) && matches!(kind, Some("ipip") | Some("tun"))
}

/// The nft set of our addresses redirected to peer `p`.
pub fn set_in(p: usize) -> String {
    format!("in_{p}")
}

/// The nft set of visiting addresses relayed through peer `p`.
pub fn set_out(p: usize) -> String {
    format!("out_{p}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas() {
        let ids = KernelIds::default();
        assert_eq!((ids.peer_table(0), ids.peer_table(2)), (1145, 1147));
        assert_eq!(ids.peer_mark(1), 0x5153_0002);
        assert_eq!(ids.peer_rule_priority(), 901);
        // Clear of mwan3 (1000-3999), netifd (10000, 20000, 90000+), pbr
        // (30000), and before them.
        for p in [ids.rule_priority, ids.peer_rule_priority()] {
            assert!(p < 1000, "{p}");
        }
        assert_eq!(ids.tables(2), 1144..=1146);
        assert_eq!(tunnel_name("ma-b"), "sims-ma-b");
        assert!(is_our_tunnel("sims-ma-b", Some("tun")));
        assert!(!is_our_tunnel("sims-ma-b", Some("veth")));
        assert!(!is_our_tunnel("wg0", Some("ipip")));
        assert_eq!((set_in(3), set_out(3)), ("in_3".into(), "out_3".into()));
    }
}
