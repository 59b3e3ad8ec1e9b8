//! The namespace testbed: CN, an Internet router, two or three agents (each
//! with a LAN bridge, dnsmasq and an fw4-like nftables ruleset) and a mobile
//! node with ONE interface whose link moves between the agents' bridges.
//!
//! ```text
//!  cn 203.0.113.10 ── to-cn ┐
//!                           inet ── to-a ── wan 100.64.1.2 [ma-a] br-lan 10.1.0.1/24
//!                                ── to-b ── wan 100.64.2.2 [ma-b] br-lan 10.2.0.1/24
//!                                ── to-c ── wan 100.64.3.2 [ma-c] br-lan 10.3.0.1/24
//!  mn: mn0 (02:00:00:00:00:50) ══ veth ══ mnport, enslaved to one agent's br-lan
//!  lanhost-a: eth0 ══ veth ══ lhport on ma-a's br-lan (optional)
//!  guest-X: eth0 (02:00:00:00:0X:66, 10.X.0.66/24) ══ veth ══ gport on ma-X's br-lan (optional)
//! ```
//!
//! Everything is named `<prefix><role>` with `prefix = s<pid>-<n>-`; Drop
//! kills every process the testbed started (by PID) and deletes its
//! namespaces, also when a test fails.
//!
//! This file holds the [`Testbed`]'s state and its naming; each concern
//! has its own file, an `impl Testbed` block where it needs the state:
//!
//! | file | concern |
//! | --- | --- |
//! | addresses.rs | the address plan: [`Ma`], the CN, the node's interface |
//! | options.rs | [`Options`]: what a testbed is built with |
//! | host.rs | what the host must provide ([`skip_reason`]), where the binaries are |
//! | config.rs | the texts written per agent: simsd's UCI config, the fw4 ruleset |
//! | topology.rs | [`Testbed::new`]: namespaces, links, bridges, sysctls, firewall; WAN delay |
//! | process.rs | started processes: spawn, stamped logs, PID records, reaping |
//! | daemons.rs | simsd and sims-node: start, signals, status, waiting for a status |
//! | dhcp.rs | dnsmasq, udhcpc and its script, the node's addresses |
//! | dhcp_clients.rs | the node's other DHCP clients: dhcpcd, dhclient, NetworkManager |
//! | moves.rs | the node's link moves ([`MoveInfo`]) |
//! | dock.rs | the node's second interface: docking and undocking, Wi-Fi lost |
//! | travel.rs | the node as a travel router: the LAN behind it and its NAT |
//! | streams.rs | the CN server, checked streams, `whoami`, the probe |
//! | kernel.rs | [`KernelState`]: SIMS's rules, routes, tunnels, set elements |
//! | report.rs | `$SIMS_TESTBED_REPORT` lines |
//! | diagnostics.rs | what is printed when a test fails |
//! | cleanup.rs | teardown (Drop) and [`cleanup_stale`] |
//!
//! Between the files, dependencies point one way: addresses < options <
//! config; dhcp < moves < daemons < diagnostics < cleanup; process and
//! report are used by several; topology, which builds the whole testbed,
//! comes last. All of them share only the state and naming in this file.

mod addresses;
mod cleanup;
pub mod config;
mod daemons;
mod dhcp;
mod dhcp_clients;
mod diagnostics;
mod dock;
mod host;
mod kernel;
mod moves;
mod options;
mod process;
mod report;
mod streams;
mod topology;
mod travel;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};

use crate::netns::Netns;
use crate::sys::TestbedLock;

pub use crate::product::{SIMS_PORT, SIMS_PROTO, SIMS_TABLE};
pub use addresses::{Ma, CN_IP, CN_PORT, DOCK_IFACE, DOCK_MAC, GUEST_IFACE, MN_IFACE, MN_MAC};
pub use cleanup::cleanup_stale;
pub use dhcp::{parse_addrs, UDHCPC_SCRIPT};
pub use host::{default_bin_dir, skip_reason, workspace_dir};
pub use kernel::{parse_link_kinds, KernelState};
pub use moves::MoveInfo;
pub use options::{DhcpClient, Options};

/// A process the testbed started (see process.rs).
struct Proc {
    label: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

pub struct Testbed {
    pub prefix: String,
    /// Run directory: configs, logs, state dirs.
    pub dir: PathBuf,
    pub opts: Options,
    pub bin_dir: PathBuf,
    pub traffic_bin: PathBuf,
    namespaces: Vec<Netns>,
    procs: Vec<Proc>,
    agent_proc: HashMap<Ma, usize>,
    node_proc: Option<usize>,
    /// The node's DHCP client daemon (dhcpcd, dhclient, NetworkManager).
    dhcp_daemon: Option<usize>,
    cn_proc: Option<usize>,
    location: Ma,
    attached: bool,
    keys: HashMap<(Ma, Ma), String>,
    seq: Cell<u32>,
    reported: RefCell<HashSet<String>>,
    failed: bool,
    _lock: TestbedLock,
}

impl Testbed {
    // ------------------------------------------------------------ naming

    pub fn ns(&self, role: &str) -> Netns {
        Netns::new(format!("{}{}", self.prefix, role))
    }
    pub fn cn(&self) -> Netns {
        self.ns("cn")
    }
    pub fn inet(&self) -> Netns {
        self.ns("inet")
    }
    pub fn mn(&self) -> Netns {
        self.ns("mn")
    }
    pub fn lanhost(&self) -> Netns {
        self.ns("lanhost-a")
    }
    /// The guest on `x`'s LAN (`Options::guest`).
    pub fn guest(&self, x: Ma) -> Netns {
        self.ns(&x.guest_role())
    }
    pub fn agent(&self, x: Ma) -> Netns {
        self.ns(&x.id())
    }
    pub fn agent_dir(&self, x: Ma) -> PathBuf {
        self.dir.join(x.id())
    }
    pub fn node_dir(&self) -> PathBuf {
        self.dir.join("mn")
    }
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
    pub fn cn_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(CN_IP, CN_PORT)
    }
    /// Where the node's link is (or was last).
    pub fn location(&self) -> Ma {
        self.location
    }
    pub fn attached(&self) -> bool {
        self.attached
    }
    fn next_seq(&self) -> u32 {
        let s = self.seq.get();
        self.seq.set(s + 1);
        s
    }
    fn has(&self, x: Ma) -> bool {
        self.opts.agents.contains(&x)
    }
    /// The agents a given agent lists as peers.
    pub fn peers_of(&self, x: Ma) -> Vec<Ma> {
        config::peers_of(x, &self.opts)
    }
    /// The shared key of the agreement between x and y.
    pub fn key(&self, x: Ma, y: Ma) -> &str {
        &self.keys[&(x, y)]
    }
    /// The same key as bytes (to tag crafted agent-to-agent messages).
    pub fn key_bytes(&self, x: Ma, y: Ma) -> [u8; 32] {
        let hex = self.key(x, y);
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("keys are 64 hex digits");
        }
        k
    }
}
