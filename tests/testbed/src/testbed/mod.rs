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
//! ```
//!
//! Everything is named `<prefix><role>` with `prefix = s<pid>-<n>-`; Drop
//! kills every process the testbed started (by PID) and deletes its
//! namespaces, also when a test fails.

mod cleanup;
mod daemons;
mod dhcp;
mod diagnostics;
mod host;
mod kernel;
mod moves;
mod options;
mod process;
mod streams;
mod topology;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys::{Netns, Result, TestbedLock};

pub use crate::product::{SIMS_PORT, SIMS_PROTO, SIMS_TABLE};
pub use cleanup::cleanup_stale;
pub use dhcp::{parse_addrs, UDHCPC_SCRIPT};
pub use host::{default_bin_dir, skip_reason, workspace_dir};
pub use kernel::{parse_link_kinds, KernelState};
pub use moves::MoveInfo;
pub use options::Options;
pub use topology::{Ma, CN_IP, CN_PORT, MN_IFACE, MN_MAC};

use cleanup::run_dir_for;
use host::default_traffic_bin;
use process::Proc;

static COUNTER: AtomicU32 = AtomicU32::new(0);

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
    /// Builds the whole testbed (namespaces, links, firewall, dnsmasq, the
    /// CN server). Daemons are started separately (`start_agents`,
    /// `start_node`).
    pub fn new(opts: Options) -> Result<Testbed> {
        let lock = TestbedLock::acquire(Duration::from_secs(1800))?;
        cleanup_stale();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("s{}-{}-", std::process::id(), n);
        let dir = run_dir_for(&prefix);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("create {dir:?}: {e}"))?;
        let bin_dir = opts.bin_dir.clone().unwrap_or_else(default_bin_dir);
        let traffic_bin = opts
            .traffic_bin
            .clone()
            .unwrap_or_else(|| default_traffic_bin(&bin_dir));
        let mut keys = HashMap::new();
        for (i, &x) in Ma::ALL.iter().enumerate() {
            for &y in &Ma::ALL[i + 1..] {
                let k = crate::config::random_key_hex();
                keys.insert((x, y), k.clone());
                keys.insert((y, x), k);
            }
        }
        let mut tb = Testbed {
            prefix,
            dir,
            opts,
            bin_dir,
            traffic_bin,
            namespaces: Vec::new(),
            procs: Vec::new(),
            agent_proc: HashMap::new(),
            node_proc: None,
            cn_proc: None,
            location: Ma::A,
            attached: false,
            keys,
            seq: Cell::new(0),
            reported: Default::default(),
            failed: false,
            _lock: lock,
        };
        let t0 = Instant::now();
        if let Err(e) = tb.build() {
            tb.failed = true;
            return Err(format!("testbed setup failed: {e}"));
        }
        eprintln!(
            "[testbed] {} ready in {:.0} ms ({})",
            tb.prefix,
            t0.elapsed().as_secs_f64() * 1e3,
            tb.dir.display()
        );
        Ok(tb)
    }

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
        crate::config::peers_of(x, &self.opts)
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
