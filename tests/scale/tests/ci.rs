//! The CI-size run of the simulator (part of `cargo xtask test`): a few
//! seconds of the real agent and node cores over a simulated day, with
//! tables small enough to fill, and its invariants asserted.

use sims_scale::{run, Config};

#[test]
fn a_simulated_day_keeps_the_invariants() {
    let cfg = Config::ci();
    let st = run(&cfg).expect("runs");
    let report = st.report();
    println!("{report}");
    let v = &st.violations;
    assert_eq!(v.total(), 0, "invariants violated: {:#?}", v.examples);
    // The day really exercised the protocol: moves with sessions alive,
    // relayed through one tunnel each, and tables that filled up.
    assert!(st.moves > 500, "{} moves", st.moves);
    assert!(st.relayed_checked > 500, "{} relayed", st.relayed_checked);
    assert!(st.sims_survived > 100, "{} survived", st.sims_survived);
    let full: u64 = st.agents.iter().map(|a| a.table_full).sum();
    assert!(full > 0, "no table filled: the limits were not tested");
    for a in &st.agents {
        assert!(a.peak_bindings <= cfg.max_bindings, "{a:?}");
    }
    // Only old sessions are relayed: a small share of the bytes, while a
    // home agent carries everything a node sends away from home.
    let f = st.relayed_fraction();
    assert!(f > 0.0 && f < 0.25, "relayed fraction {f}");
    assert!(st.mip_ha_ratio() > 2.0, "MIPv4/SIMS {}", st.mip_ha_ratio());
    assert!(report
        .lines()
        .last()
        .is_some_and(|l| l.starts_with("scale agents=10 nodes=600 ")));
}

/// The checker can fail: told that bindings must go at once after their
/// last use, it finds the ones that (rightly) live through grace and
/// lifetime.
#[test]
fn the_stale_binding_check_reports() {
    let cfg = Config {
        cities: 1,
        nodes_per_city: 100,
        stale_bound_ms: Some(0),
        ..Config::ci()
    };
    let st = run(&cfg).expect("runs");
    assert!(st.violations.stale > 0, "{:?}", st.violations);
}
