//! The product's names and numbers the testbed relies on, each written once
//! here and used everywhere else in this crate (and by the scenarios).
//!
//! [`SIMS_PORT`] is imported from sims-proto. The others are simsd's
//! defaults and formulas, which live in the simsd *binary* crate: no library
//! exports them today, so they are copied here, each with the place in
//! firmware/ that defines it. When simsd changes one, change it here too
//! (the scenarios notice: the kernel state they look for is not found).

/// The SIMS control port (UDP): `sims_proto::DEFAULT_PORT`.
pub const SIMS_PORT: u16 = sims_proto::DEFAULT_PORT;

/// The routing table simsd owns: firmware/simsd/src/config.rs, `Config`
/// default `table: 144` (UCI `option table`).
pub const SIMS_TABLE: u32 = 144;

/// The `ip route`/`ip rule` protocol simsd marks its state with:
/// firmware/simsd/src/config.rs, `Config` default `route_protocol: 153`.
pub const SIMS_PROTO: u32 = 153;

/// Priority of simsd's catch-all rule (`lookup <table>`):
/// firmware/simsd/src/config.rs, `Config` default `rule_priority: 1000`.
pub const SIMS_RULE_PRIORITY: u32 = 1000;

/// Priority of simsd's per-peer fwmark rules: `rule_priority + 1`
/// (firmware/simsd/src/dataplane.rs, the fwmark `Rule`).
pub const SIMS_MARK_RULE_PRIORITY: u32 = SIMS_RULE_PRIORITY + 1;

/// The nftables table simsd owns (`inet sims`):
/// firmware/simsd/src/dataplane.rs `NFT_TABLE`, firmware/simsd/src/nft.rs.
pub const SIMS_NFT_TABLE: &str = "sims";

/// Every tunnel device simsd makes is named `sims-<peer id>`:
/// firmware/simsd/src/dataplane.rs, `Dataplane::tunnel_name_of`.
pub const TUNNEL_PREFIX: &str = "sims-";

/// The tunnel device simsd makes towards peer `peer_id` (`sims-ma-b`).
pub fn tunnel_name(peer_id: &str) -> String {
    format!("{TUNNEL_PREFIX}{peer_id}")
}

/// The nft set of visiting nodes' addresses that go into peer `p`'s
/// tunnel: firmware/simsd/src/nft.rs, `set_out`.
pub fn nft_set_out(p: usize) -> String {
    format!("out_{p}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_simsd_uses() {
        assert_eq!(SIMS_PORT, 4434);
        assert_eq!(tunnel_name("ma-b"), "sims-ma-b");
        assert_eq!(nft_set_out(0), "out_0");
        assert_eq!(SIMS_MARK_RULE_PRIORITY, 1001);
    }
}
