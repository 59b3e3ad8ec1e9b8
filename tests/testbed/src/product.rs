//! The product's names and numbers the testbed relies on, imported from
//! the product (never copied): the control port from sims-proto, and the
//! names and default numbers of the kernel state simsd owns from
//! `simsd::owned`, the one place simsd itself takes them from.

use simsd::owned::{defaults, KernelIds};

/// The SIMS control port (UDP).
pub const SIMS_PORT: u16 = sims_proto::DEFAULT_PORT;

/// The routing table simsd owns (UCI `option table`, default).
pub const SIMS_TABLE: u32 = defaults::TABLE;

/// The `ip route`/`ip rule` protocol simsd marks its state with.
pub const SIMS_PROTO: u32 = defaults::ROUTE_PROTOCOL as u32;

/// Priority of simsd's catch-all rule (`lookup <table>`).
pub const SIMS_RULE_PRIORITY: u32 = defaults::RULE_PRIORITY;

/// The nftables table simsd owns (`inet sims`).
pub const SIMS_NFT_TABLE: &str = simsd::owned::NFT_TABLE;

/// Every tunnel device simsd makes is named `<TUNNEL_PREFIX><peer id>`.
pub use simsd::owned::TUNNEL_PREFIX;

/// The tunnel device simsd makes towards peer `peer_id` (`sims-ma-b`).
pub use simsd::owned::tunnel_name;

/// The nft set of visiting nodes' addresses that go into peer `p`'s tunnel.
pub use simsd::owned::set_out as nft_set_out;

/// Priority of simsd's per-peer fwmark rules, with the default numbers.
pub const SIMS_MARK_RULE_PRIORITY: u32 = KernelIds::DEFAULT.peer_rule_priority();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_simsd_uses() {
        assert_eq!(SIMS_PORT, 4434);
        assert_eq!(tunnel_name("ma-b"), "sims-ma-b");
        assert_eq!(nft_set_out(0), "out_0");
        assert_eq!(SIMS_MARK_RULE_PRIORITY, 901);
    }
}
