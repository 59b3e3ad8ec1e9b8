//! SIMS testbed: real network namespaces, a real DHCP server (dnsmasq) and
//! client (busybox udhcpc), an fw4-like nftables firewall with NAT, the
//! SIMS daemons, and checked TCP streams (`sims-traffic`) across moves.
//!
//! Shared by the scenario tests (`tests/testbed/tests/*.rs`), `cargo xtask demo`
//! and `cargo xtask bench handover`. See [`testbed::Testbed`].

pub mod bench_dataplane;
pub mod bench_handover;
pub mod capture;
pub mod forge;
pub mod garbage;
pub mod harness;
pub mod netns;
pub mod product;
mod run;
pub mod session;
pub mod status;
pub mod sys;
pub mod testbed;
pub mod traffic;

/// The old name of [`bench_dataplane`] (a benchmark, not simsd's data
/// plane), kept while xtask/src/vmbench.rs still imports it by that name.
pub use bench_dataplane as dataplane;
pub use garbage::{garbage_datagrams, Prng};
pub use netns::Netns;
pub use session::{Dir, Session, StreamSpec, Whoami};
pub use status::{AgentBinding, AgentStatus, NodeBinding, NodeStatus, PeerStats};
pub use sys::wait_for;
pub use testbed::config;
pub use testbed::{
    cleanup_stale, default_bin_dir, skip_reason, workspace_dir, DhcpClient, KernelState, Ma,
    MoveInfo, Options, Testbed, CN_IP, CN_PORT, DOCK_IFACE, GUEST_IFACE, MN_IFACE, MN_MAC,
    SIMS_PORT, SIMS_PROTO, SIMS_TABLE,
};
pub use traffic::{mono_ns, Progress, StreamResult};
