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

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::session::{Dir, Session, StreamSpec, Whoami};
use crate::status::{AgentStatus, NodeStatus};
use crate::sys::{
    busybox_bin, die_with_parent, dnsmasq_bin, ip_bin, kill_pid, nft_bin, pid_alive, run_cmd,
    stop_child, tail, wait_for, Netns, Result, TestbedLock,
};
use crate::traffic::{mono_ns, Progress};

/// The correspondent node (runs `sims-traffic serve`).
pub const CN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CN_PORT: u16 = 5001;
/// The SIMS control port.
pub const SIMS_PORT: u16 = 4434;
pub const MN_MAC: &str = "02:00:00:00:00:50";
pub const MN_IFACE: &str = "mn0";
/// `ip route` protocol and table owned by simsd.
pub const SIMS_PROTO: u32 = 153;
pub const SIMS_TABLE: u32 = 144;

/// The udhcpc event script shipped in `tests/testbed/udhcpc.script`.
pub const UDHCPC_SCRIPT: &str = include_str!("../udhcpc.script");

const ROLES: [&str; 7] = ["cn", "inet", "ma-a", "ma-b", "ma-c", "mn", "lanhost-a"];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One of the three mobility agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ma {
    A,
    B,
    C,
}

impl Ma {
    pub const ALL: [Ma; 3] = [Ma::A, Ma::B, Ma::C];

    /// 1, 2, 3: the X in all its addresses.
    pub fn n(self) -> u8 {
        match self {
            Ma::A => 1,
            Ma::B => 2,
            Ma::C => 3,
        }
    }
    pub fn letter(self) -> char {
        (b'a' + self.n() - 1) as char
    }
    /// Agent id and namespace role: `ma-a`.
    pub fn id(self) -> String {
        format!("ma-{}", self.letter())
    }
    pub fn from_id(id: &str) -> Option<Ma> {
        Ma::ALL.into_iter().find(|m| m.id() == id)
    }
    pub fn wan_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, self.n(), 2)
    }
    pub fn inet_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, self.n(), 1)
    }
    pub fn lan_gw(self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n(), 0, 1)
    }
    pub fn lan_prefix(self) -> String {
        format!("10.{}.0.0/24", self.n())
    }
    /// The address dnsmasq gives the mobile node on this agent's LAN.
    pub fn node_addr(self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n(), 0, 50)
    }
    pub fn provider(self) -> String {
        format!("provider-{}", self.letter())
    }
}

impl std::fmt::Display for Ma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter().to_ascii_uppercase())
    }
}

/// Testbed construction options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Agents to create (default all three).
    pub agents: Vec<Ma>,
    /// Create `lanhost-a`, an ordinary host on LAN A (needs agent A).
    pub lanhost: bool,
    /// `(x, y)`: x's config has no `peer` section for y (and its firewall
    /// does not open the WAN to y).
    pub omit_peers: Vec<(Ma, Ma)>,
    /// `sims-node --grace-ms`.
    pub grace_ms: u64,
    pub advert_interval_s: u32,
    pub binding_lifetime_s: u32,
    /// simsd's tunnel backend: `userspace`, `kernel`, `auto`, or `mixed`
    /// (ma-a kernel ipip, the others userspace: Linux's ipip as the peer of
    /// ours). Default: `SIMS_TESTBED_BACKEND`, else `userspace` (the
    /// development hosts have no ipip; the VM suite runs kernel and mixed).
    pub backend: String,
    /// Start the CN's `sims-traffic serve`.
    pub cn_server: bool,
    /// Where simsd and sims-node live (default: `SIMS_BIN_DIR`, else
    /// `<workspace>/target/debug`).
    pub bin_dir: Option<PathBuf>,
    /// The sims-traffic binary (default: `SIMS_TRAFFIC_BIN`, else bin_dir).
    pub traffic_bin: Option<PathBuf>,
    /// `RUST_LOG` for the daemons.
    pub rust_log: String,
    /// Free text shown in diagnostics (e.g. the test name).
    pub label: String,
    /// Extra sysctls for the node's namespace (`key=value`), applied after
    /// setup; also taken from `SIMS_TESTBED_NODE_SYSCTLS` (comma-separated)
    /// for experiments. The default is a stock Linux host.
    pub node_sysctls: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agents: Ma::ALL.to_vec(),
            lanhost: false,
            omit_peers: Vec::new(),
            grace_ms: 1000,
            advert_interval_s: 1,
            binding_lifetime_s: 60,
            backend: std::env::var("SIMS_TESTBED_BACKEND")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "userspace".into()),
            cn_server: true,
            bin_dir: None,
            traffic_bin: None,
            rust_log: "debug".into(),
            label: String::new(),
            node_sysctls: std::env::var("SIMS_TESTBED_NODE_SYSCTLS")
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| s.trim().to_string())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl Options {
    pub fn label(mut self, l: &str) -> Self {
        self.label = l.into();
        self
    }
    pub fn agents(mut self, a: &[Ma]) -> Self {
        self.agents = a.to_vec();
        self
    }
    pub fn lanhost(mut self) -> Self {
        self.lanhost = true;
        self
    }
    /// Neither x nor y lists the other as a peer.
    pub fn no_agreement(mut self, x: Ma, y: Ma) -> Self {
        self.omit_peers.push((x, y));
        self.omit_peers.push((y, x));
        self
    }
    pub fn grace_ms(mut self, ms: u64) -> Self {
        self.grace_ms = ms;
        self
    }
    pub fn traffic_bin(mut self, p: impl Into<PathBuf>) -> Self {
        self.traffic_bin = Some(p.into());
        self
    }
    pub fn backend(mut self, b: &str) -> Self {
        self.backend = b.into();
        self
    }

    /// The `option backend` agent `x` gets: `mixed` is kernel ipip on
    /// ma-a and the userspace backend elsewhere.
    pub fn backend_of(&self, x: Ma) -> &str {
        match self.backend.as_str() {
            "mixed" if x == Ma::A => "kernel",
            "mixed" => "userspace",
            b => b,
        }
    }

    /// The tunnel device kind (`ip -d link`) simsd's backend makes for
    /// agent `x`, when the backend is fixed (not `auto`).
    pub fn tunnel_kind_of(&self, x: Ma) -> Option<&'static str> {
        match self.backend_of(x) {
            "kernel" => Some("ipip"),
            "userspace" => Some("tun"),
            _ => None,
        }
    }
}

/// The workspace root (this crate lives in `<workspace>/tests/testbed`).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace")
        .to_path_buf()
}

/// `SIMS_BIN_DIR`, else `<target>/debug`.
pub fn default_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SIMS_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"));
    target.join("debug")
}

fn default_traffic_bin(bin_dir: &Path) -> PathBuf {
    std::env::var_os("SIMS_TRAFFIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir.join("sims-traffic"))
}

/// Why the testbed cannot run here (not root, tools or binaries missing),
/// or None. `daemons`: also require simsd and sims-node.
pub fn skip_reason(daemons: bool, traffic_bin: Option<&Path>) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    if !Path::new("/run").is_dir() {
        return Some("/run missing".into());
    }
    for (tool, p) in [
        ("ip (iproute2)", ip_bin()),
        ("nft (nftables)", nft_bin()),
        ("dnsmasq (dnsmasq-base)", dnsmasq_bin()),
        ("busybox (busybox-static)", busybox_bin()),
    ] {
        if !p.is_absolute() || !p.is_file() {
            return Some(format!("tool missing: {tool}"));
        }
    }
    let bin_dir = default_bin_dir();
    let traffic = traffic_bin
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_traffic_bin(&bin_dir));
    if !traffic.is_file() {
        return Some(format!("{traffic:?} missing (cargo build -p sims-testbed)"));
    }
    if daemons {
        for b in ["simsd", "sims-node"] {
            if !bin_dir.join(b).is_file() {
                return Some(format!(
                    "{:?} missing: build the daemons (cargo build -p simsd -p sims-node) or set SIMS_BIN_DIR; `cargo xtask test` does both",
                    bin_dir.join(b)
                ));
            }
        }
    }
    None
}

/// Removes namespaces (and kills the processes in them that the old run
/// recorded having started) that earlier testbed runs left behind: only
/// names of this testbed's pattern `s<pid>-<n>-<role>` whose pid is gone.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir("/run/netns") else {
        return removed;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((pid, prefix)) = parse_ns_name(&name) else {
            continue;
        };
        if pid == me || pid_alive(pid) {
            continue;
        }
        let run_dir = run_dir_for(&prefix);
        let recorded: Vec<u32> = fs::read_to_string(run_dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let mut c = Command::new(ip_bin());
        c.args(["netns", "pids", &name]);
        if let Ok(out) = run_cmd(c, None, Duration::from_secs(5)) {
            for p in out
                .stdout
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
            {
                if recorded.contains(&p) {
                    kill_pid(p, libc::SIGKILL);
                }
            }
        }
        let mut c = Command::new(ip_bin());
        c.args(["netns", "del", &name]);
        let _ = run_cmd(c, None, Duration::from_secs(5));
        let _ = fs::remove_dir_all(&run_dir);
        removed.push(name);
    }
    if !removed.is_empty() {
        eprintln!("[testbed] removed stale namespaces: {}", removed.join(" "));
    }
    // Run dirs kept after failures: removed a day later, once their run is gone.
    if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(prefix) = name.strip_prefix("sims-tb-") else {
                continue;
            };
            let Some((pid, _)) = parse_ns_name(&format!("{prefix}-cn")) else {
                continue;
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map(|age| age > Duration::from_secs(24 * 3600))
                .unwrap_or(false);
            if old && pid != me && !pid_alive(pid) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    removed
}

/// `s<pid>-<n>-<role>` → (pid, `s<pid>-<n>-`).
fn parse_ns_name(name: &str) -> Option<(u32, String)> {
    let rest = name.strip_prefix('s')?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, role) = rest.split_once('-')?;
    if pid.is_empty() || n.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !n.bytes().all(|b| b.is_ascii_digit()) || !ROLES.contains(&role) {
        return None;
    }
    Some((pid.parse().ok()?, format!("s{pid}-{n}-")))
}

fn run_dir_for(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sims-tb-{}", prefix.trim_end_matches('-')))
}

struct Proc {
    label: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

/// What a move did and when (CLOCK_MONOTONIC ns).
#[derive(Clone, Debug)]
pub struct MoveInfo {
    pub from: Option<Ma>,
    pub to: Ma,
    pub link_down_ns: u64,
    pub link_up_ns: u64,
    /// When the udhcpc script configured the address (if it could tell).
    pub bound_ns: Option<u64>,
    /// When the one-shot udhcpc exited.
    pub dhcp_done_ns: u64,
    /// The address DHCP gave.
    pub addr: Ipv4Addr,
}

impl MoveInfo {
    pub fn dhcp_ms(&self) -> f64 {
        (self.dhcp_done_ns.saturating_sub(self.link_up_ns)) as f64 / 1e6
    }
}

/// What SIMS left in an agent's kernel: rules at priority 1000/1001 (or
/// with protocol 153), proto-153 routes in any table, `sims-*` links and
/// elements in the `inet sims` sets.
#[derive(Clone, Debug, Default)]
pub struct KernelState {
    pub rules: Vec<String>,
    pub routes: Vec<String>,
    pub tunnels: Vec<String>,
    /// (device, kind from `ip -d link`: `ipip`, `tun`, ...) of each tunnel.
    pub tunnel_kinds: Vec<(String, String)>,
    pub set_elements: Vec<String>,
    pub nft_table: bool,
}

impl KernelState {
    pub fn is_clean(&self) -> bool {
        self.rules.is_empty()
            && self.routes.is_empty()
            && self.tunnels.is_empty()
            && self.set_elements.is_empty()
    }
    pub fn routes_for(&self, addr: &str) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.split_whitespace().next() == Some(addr))
            .cloned()
            .collect()
    }
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
    cn_proc: Option<usize>,
    location: Ma,
    attached: bool,
    keys: HashMap<(Ma, Ma), String>,
    seq: Cell<u32>,
    reported: std::cell::RefCell<std::collections::HashSet<String>>,
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

    fn record_pid(&self, pid: u32) {
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pids"))
        {
            let _ = writeln!(f, "{pid}");
        }
    }

    // ------------------------------------------------------------ build

    fn add_ns(&mut self, role: &str) -> Result<Netns> {
        let ns = self.ns(role);
        self.namespaces.push(ns.clone());
        let mut c = Command::new(ip_bin());
        c.args(["netns", "add", &ns.name]);
        crate::sys::run_ok(c, None, Duration::from_secs(10))?;
        Ok(ns)
    }

    fn build(&mut self) -> Result<()> {
        if !["userspace", "kernel", "auto", "mixed"].contains(&self.opts.backend.as_str()) {
            return Err(format!(
                "backend {:?} (SIMS_TESTBED_BACKEND): expected userspace, kernel, auto or mixed",
                self.opts.backend
            ));
        }
        if self.opts.lanhost && !self.has(Ma::A) {
            return Err("lanhost-a needs agent A".into());
        }
        if self.opts.agents.is_empty() {
            return Err("no agents".into());
        }
        self.location = self.opts.agents[0];
        let mut roles = vec!["cn".to_string(), "inet".into(), "mn".into()];
        roles.extend(self.opts.agents.iter().map(|x| x.id()));
        if self.opts.lanhost {
            roles.push("lanhost-a".into());
        }
        for r in &roles {
            let ns = self.add_ns(r)?;
            let mut kv: Vec<(String, String)> = vec![
                ("net.ipv4.conf.all.rp_filter".into(), "1".into()),
                ("net.ipv4.conf.default.rp_filter".into(), "1".into()),
                ("net.ipv6.conf.all.disable_ipv6".into(), "1".into()),
                ("net.ipv6.conf.default.disable_ipv6".into(), "1".into()),
            ];
            if r == "inet" || r.starts_with("ma-") {
                kv.push(("net.ipv4.ip_forward".into(), "1".into()));
            }
            if r == "mn" {
                kv.push(("net.ipv4.conf.all.arp_ignore".into(), "0".into()));
                kv.push(("net.ipv4.conf.default.arp_ignore".into(), "0".into()));
            }
            let failed = ns.sysctls(&kv)?;
            if !failed.is_empty() {
                return Err(format!("sysctl in {}: {}", ns.name, failed.join("; ")));
            }
            if r.starts_with("ma-") {
                // Only present with br_netfilter; ignore failure.
                let _ = ns.sysctls(&[("net.bridge.bridge-nf-call-iptables".into(), "0".into())]);
            }
        }

        // The Internet router and the links hanging off it.
        let mut cmds = vec![
            "link set lo up".to_string(),
            format!(
                "link add to-cn type veth peer name eth0 netns {}",
                self.cn().name
            ),
            "addr add 203.0.113.1/24 dev to-cn".into(),
            "link set to-cn up".into(),
        ];
        for &x in &self.opts.agents {
            let l = x.letter();
            cmds.push(format!(
                "link add to-{l} type veth peer name wan netns {}",
                self.agent(x).name
            ));
            cmds.push(format!("addr add {}/24 dev to-{l}", x.inet_ip()));
            cmds.push(format!("link set to-{l} up"));
        }
        self.inet().ip_batch(&cmds)?;
        self.cn().ip_batch(&[
            "link set lo up".into(),
            format!("addr add {CN_IP}/24 dev eth0"),
            "link set eth0 up".into(),
            "route add default via 203.0.113.1".into(),
        ])?;
        for &x in &self.opts.agents.clone() {
            let n = x.n();
            self.agent(x).ip_batch(&[
                "link set lo up".into(),
                format!("addr add {}/24 dev wan", x.wan_ip()),
                "link set wan up".into(),
                format!("route add default via {}", x.inet_ip()),
                "link add br-lan type bridge".into(),
                format!("link set br-lan address 02:00:00:00:0{n}:01"),
                format!("addr add {}/24 dev br-lan", x.lan_gw()),
                "link set br-lan up".into(),
            ])?;
        }
        // The mobile node: one interface, its peer end on the first agent's
        // bridge port side, down until the first move_to.
        let first = self.location;
        self.agent(first).ip_batch(&[format!(
            "link add mnport type veth peer name {MN_IFACE} netns {}",
            self.mn().name
        )])?;
        self.mn().ip_batch(&[
            "link set lo up".into(),
            format!("link set {MN_IFACE} address {MN_MAC}"),
            format!("link set {MN_IFACE} up"),
        ])?;
        if self.opts.lanhost {
            self.agent(Ma::A).ip_batch(&[
                format!(
                    "link add lhport type veth peer name eth0 netns {}",
                    self.lanhost().name
                ),
                "link set lhport master br-lan".into(),
                "link set lhport up".into(),
            ])?;
            self.lanhost().ip_batch(&[
                "link set lo up".into(),
                "link set eth0 address 02:00:00:00:00:60".into(),
                "link set eth0 up".into(),
            ])?;
        }
        // Strict rp_filter on every interface; the node answers ARP for /32s.
        for r in &roles {
            let ns = self.ns(r);
            let mut kv = Vec::new();
            for i in ns.interfaces()? {
                kv.push((format!("net.ipv4.conf.{i}.rp_filter"), "1".to_string()));
                if r == "mn" {
                    kv.push((format!("net.ipv4.conf.{i}.arp_ignore"), "0".to_string()));
                }
            }
            let failed = ns.sysctls(&kv)?;
            if !failed.is_empty() {
                return Err(format!("sysctl in {}: {}", ns.name, failed.join("; ")));
            }
        }

        if !self.opts.node_sysctls.is_empty() {
            let kv: Vec<(String, String)> = self
                .opts
                .node_sysctls
                .iter()
                .map(|s| {
                    let (k, v) = s.split_once('=').unwrap_or((s, ""));
                    (k.trim().to_string(), v.trim().to_string())
                })
                .collect();
            let failed = self.mn().sysctls(&kv)?;
            if !failed.is_empty() {
                return Err(format!("node sysctls: {}", failed.join("; ")));
            }
        }

        fs::create_dir_all(self.node_dir()).map_err(|e| e.to_string())?;
        fs::create_dir_all(self.dir.join("sessions")).map_err(|e| e.to_string())?;
        let script = self.dir.join("udhcpc.script");
        fs::write(&script, UDHCPC_SCRIPT).map_err(|e| e.to_string())?;
        set_mode(&script, 0o755)?;

        for &x in &self.opts.agents.clone() {
            fs::create_dir_all(self.agent_dir(x)).map_err(|e| e.to_string())?;
            self.write_agent_config(x)?;
            self.load_firewall(x)?;
            self.start_dnsmasq(x)?;
        }
        if self.opts.cn_server {
            self.start_cn_server()?;
        }
        Ok(())
    }

    /// The UCI config simsd reads (`<dir>/ma-X/sims.conf`).
    pub fn agent_config(&self, x: Ma) -> String {
        crate::config::agent_config(x, &self.opts, |x, y| self.key(x, y).to_string())
    }

    pub fn agent_config_path(&self, x: Ma) -> PathBuf {
        self.agent_dir(x).join("sims.conf")
    }

    /// (Re)writes an agent's config from the options.
    pub fn write_agent_config(&self, x: Ma) -> Result<()> {
        fs::write(self.agent_config_path(x), self.agent_config(x))
            .map_err(|e| format!("write config of {}: {e}", x.id()))
    }

    /// One-way delay on every agent's WAN link (`tc qdisc replace dev wan
    /// root netem delay <ms>ms`, egress): between two agents each way
    /// crosses one such link. 0 removes it. Needs sch_netem (the VM has it;
    /// the development hosts do not).
    pub fn set_wan_delay(&self, ms: u64) -> Result<()> {
        for &x in &self.opts.agents {
            let ns = self.agent(x);
            if ms == 0 {
                // Nothing to remove is fine.
                let _ = ns.run(
                    crate::sys::tc_bin(),
                    &["qdisc", "del", "dev", "wan", "root"],
                    Duration::from_secs(10),
                );
                continue;
            }
            let delay = format!("{ms}ms");
            ns.run(
                crate::sys::tc_bin(),
                &[
                    "qdisc", "replace", "dev", "wan", "root", "netem", "delay", &delay,
                ],
                Duration::from_secs(10),
            )
            .map_err(|e| {
                format!(
                    "WAN delay on {}: {e}\n(netem needs the sch_netem module, which the \
                     development hosts lack: `cargo xtask bench vm-delay` runs this in the VM)",
                    x.id()
                )
            })?;
        }
        Ok(())
    }

    /// The fw4-like ruleset of an agent.
    pub fn firewall_ruleset(&self, x: Ma) -> String {
        crate::config::firewall_ruleset(&crate::config::peers_of(x, &self.opts))
    }

    fn load_firewall(&self, x: Ma) -> Result<()> {
        let path = self.agent_dir(x).join("fw4.nft");
        fs::write(&path, self.firewall_ruleset(x)).map_err(|e| e.to_string())?;
        let p = path.to_string_lossy().into_owned();
        self.agent(x)
            .run(nft_bin(), &["-f", &p], Duration::from_secs(15))
            .map(|_| ())
    }

    /// Spawns a long-running process in `ns`, output appended to `log`.
    fn spawn(
        &mut self,
        label: &str,
        ns: &Netns,
        argv: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<usize> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("open {log:?}: {e}"))?;
        let _ = writeln!(
            f,
            "=== [testbed] starting {label} at t_ns={}: {}",
            mono_ns(),
            argv.join(" ")
        );
        drop(f);
        let mut c = ns.command(&argv[0]);
        c.args(&argv[1..]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut c);
        let mut child = c.spawn().map_err(|e| format!("spawn {label}: {e}"))?;
        // Each line gets a CLOCK_MONOTONIC stamp (seconds), the clock of
        // the dhcp-events file and the traffic tool's progress lines.
        if let Some(o) = child.stdout.take() {
            stamp_lines(o, log.to_path_buf());
        }
        if let Some(e) = child.stderr.take() {
            stamp_lines(e, log.to_path_buf());
        }
        self.record_pid(child.id());
        self.procs.push(Proc {
            label: label.to_string(),
            child,
            log: log.to_path_buf(),
            exited: None,
        });
        Ok(self.procs.len() - 1)
    }

    /// Has the process exited? (reaps it)
    fn proc_exited(&mut self, i: usize) -> Option<ExitStatus> {
        let p = &mut self.procs[i];
        if p.exited.is_none() {
            if let Ok(Some(st)) = p.child.try_wait() {
                p.exited = Some(st);
            }
        }
        p.exited
    }

    fn start_dnsmasq(&mut self, x: Ma) -> Result<()> {
        let d = self.agent_dir(x);
        let n = x.n();
        let pidfile = d.join("dnsmasq.pid");
        let argv: Vec<String> = vec![
            dnsmasq_bin().to_string_lossy().into_owned(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--bind-interfaces".into(),
            "--interface=br-lan".into(),
            "--except-interface=lo".into(),
            format!("--dhcp-range=10.{n}.0.100,10.{n}.0.200,255.255.255.0,1h"),
            format!("--dhcp-option=option:router,10.{n}.0.1"),
            format!("--dhcp-host={MN_MAC},10.{n}.0.50"),
            format!("--dhcp-leasefile={}", d.join("dnsmasq.leases").display()),
            format!("--pid-file={}", pidfile.display()),
            "--dhcp-authoritative".into(),
            "--log-facility=-".into(),
            "--log-dhcp".into(),
            "--user=root".into(),
        ];
        let ns = self.agent(x);
        let i = self.spawn(
            &format!("dnsmasq@{}", x.id()),
            &ns,
            &argv,
            &[],
            &d.join("dnsmasq.log"),
        )?;
        wait_for(
            &format!("dnsmasq in {} to start", x.id()),
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                if let Some(st) = self.proc_exited(i) {
                    return Err(format!("dnsmasq exited: {st}"));
                }
                Ok(pidfile.exists().then_some(()))
            },
        )
        .map_err(|e| format!("{e}\n{}", tail(&d.join("dnsmasq.log"), 20)))
    }

    fn start_cn_server(&mut self) -> Result<()> {
        let log = self.dir.join("cn-server.log");
        let argv = vec![
            self.traffic_bin.to_string_lossy().into_owned(),
            "serve".into(),
            "--listen".into(),
            format!("0.0.0.0:{CN_PORT}"),
        ];
        let ns = self.cn();
        let i = self.spawn("sims-traffic serve@cn", &ns, &argv, &[], &log)?;
        self.cn_proc = Some(i);
        wait_for(
            "the CN server to listen",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                if let Some(st) = self.proc_exited(i) {
                    return Err(format!("server exited: {st}"));
                }
                Ok(fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("listening")
                    .then_some(()))
            },
        )
        .map_err(|e| format!("{e}\n{}", tail(&log, 20)))
    }

    /// The CN server's log (connections, upstream progress and verdicts).
    pub fn cn_log(&self) -> String {
        fs::read_to_string(self.dir.join("cn-server.log")).unwrap_or_default()
    }

    /// The server's progress lines for an upstream session id.
    pub fn server_progress(&self, id: &str) -> Vec<Progress> {
        self.cn_log()
            .lines()
            .filter_map(Progress::parse)
            .filter(|p| p.id.as_deref() == Some(id))
            .collect()
    }

    // ------------------------------------------------------------ daemons

    /// Starts simsd in an agent's namespace (same config and state dir on
    /// every start) and waits until its status answers.
    pub fn start_agent(&mut self, x: Ma) -> Result<()> {
        if let Some(&i) = self.agent_proc.get(&x) {
            if self.proc_exited(i).is_none() {
                return Err(format!("simsd in {} is already running", x.id()));
            }
        }
        let d = self.agent_dir(x);
        let argv = vec![
            self.bin("simsd").to_string_lossy().into_owned(),
            "-c".into(),
            self.agent_config_path(x).to_string_lossy().into_owned(),
            "--state-dir".into(),
            d.to_string_lossy().into_owned(),
        ];
        let ns = self.agent(x);
        let log = d.join("simsd.log");
        let rust_log = self.opts.rust_log.clone();
        let i = self.spawn(
            &format!("simsd@{}", x.id()),
            &ns,
            &argv,
            &[("RUST_LOG", &rust_log), ("RUST_BACKTRACE", "1")],
            &log,
        )?;
        self.agent_proc.insert(x, i);
        let r = wait_for(
            &format!("simsd in {} to answer status", x.id()),
            Duration::from_secs(15),
            Duration::from_millis(50),
            || {
                if let Some(st) = self.proc_exited(i) {
                    return Err(format!("simsd exited: {st}"));
                }
                self.agent_status(x).map(Some)
            },
        );
        let st = r.map_err(|e| format!("{e}\n--- simsd.log of {}:\n{}", x.id(), tail(&log, 30)))?;
        self.report(&format!("agent={} backend={}", x.id(), st.backend));
        let want = self.opts.backend_of(x);
        if want != "auto" && st.backend != want {
            return Err(format!(
                "simsd in {} runs the {:?} backend; the testbed configured {want:?}\n--- simsd.log:\n{}",
                x.id(),
                st.backend,
                tail(&log, 30)
            ));
        }
        Ok(())
    }

    /// Appends a line to `$SIMS_TESTBED_REPORT` (once per distinct line
    /// and testbed), for harnesses that check what the tests exercised
    /// (the VM suite: which backends ran, which tunnel kinds existed).
    fn report(&self, what: &str) {
        let Some(path) = std::env::var_os("SIMS_TESTBED_REPORT") else {
            return;
        };
        let line = format!("test={} {what}", self.opts.label);
        if !self.reported.borrow_mut().insert(line.clone()) {
            return;
        }
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Starts simsd on every agent.
    pub fn start_agents(&mut self) -> Result<()> {
        for x in self.opts.agents.clone() {
            self.start_agent(x)?;
        }
        Ok(())
    }

    /// PID of an agent's running simsd.
    pub fn agent_pid(&mut self, x: Ma) -> Option<u32> {
        let i = *self.agent_proc.get(&x)?;
        if self.proc_exited(i).is_some() {
            return None;
        }
        Some(self.procs[i].child.id())
    }

    pub fn agent_running(&mut self, x: Ma) -> bool {
        self.agent_pid(x).is_some()
    }

    /// Sends `sig` to an agent's simsd (by PID) and waits (bounded) for it
    /// to exit. SIGKILL simulates a crash.
    /// Sends `sig` to simsd in `x` without waiting (e.g. SIGHUP: reload).
    pub fn signal_agent(&mut self, x: Ma, sig: i32) -> Result<()> {
        let i = *self
            .agent_proc
            .get(&x)
            .ok_or_else(|| format!("simsd in {} was never started", x.id()))?;
        if self.proc_exited(i).is_some() {
            return Err(format!("simsd in {} is not running", x.id()));
        }
        kill_pid(self.procs[i].child.id(), sig);
        Ok(())
    }

    /// The daemon's log so far.
    pub fn agent_log(&self, x: Ma) -> String {
        fs::read_to_string(self.agent_dir(x).join("simsd.log")).unwrap_or_default()
    }

    pub fn kill_agent(&mut self, x: Ma, sig: i32) -> Result<Option<ExitStatus>> {
        let i = *self
            .agent_proc
            .get(&x)
            .ok_or_else(|| format!("simsd in {} was never started", x.id()))?;
        if let Some(st) = self.proc_exited(i) {
            return Ok(Some(st));
        }
        kill_pid(self.procs[i].child.id(), sig);
        let r = wait_for(
            &format!("simsd in {} to exit after signal {sig}", x.id()),
            Duration::from_secs(10),
            Duration::from_millis(10),
            || Ok(self.proc_exited(i).map(Some)),
        );
        match r {
            Ok(st) => Ok(st),
            Err(e) => {
                stop_child(&mut self.procs[i].child, Duration::from_millis(100));
                Err(e)
            }
        }
    }

    /// Starts sims-node in the node's namespace.
    pub fn start_node(&mut self) -> Result<()> {
        if let Some(i) = self.node_proc {
            if self.proc_exited(i).is_none() {
                return Err("sims-node is already running".into());
            }
        }
        let d = self.node_dir();
        let argv = vec![
            self.bin("sims-node").to_string_lossy().into_owned(),
            "-i".into(),
            MN_IFACE.into(),
            "--state-dir".into(),
            d.to_string_lossy().into_owned(),
            "--grace-ms".into(),
            self.opts.grace_ms.to_string(),
        ];
        let ns = self.mn();
        let log = d.join("sims-node.log");
        let rust_log = self.opts.rust_log.clone();
        let i = self.spawn(
            "sims-node@mn",
            &ns,
            &argv,
            &[("RUST_LOG", &rust_log), ("RUST_BACKTRACE", "1")],
            &log,
        )?;
        self.node_proc = Some(i);
        wait_for(
            "sims-node to answer status",
            Duration::from_secs(15),
            Duration::from_millis(50),
            || {
                if let Some(st) = self.proc_exited(i) {
                    return Err(format!("sims-node exited: {st}"));
                }
                self.node_status().map(Some)
            },
        )
        .map(|_| ())
        .map_err(|e| format!("{e}\n--- sims-node.log:\n{}", tail(&log, 30)))
    }

    /// PIDs of the processes this testbed started that are still running.
    pub fn running_pids(&mut self) -> Vec<u32> {
        let mut v = Vec::new();
        for i in 0..self.procs.len() {
            if self.proc_exited(i).is_none() {
                v.push(self.procs[i].child.id());
            }
        }
        v
    }

    /// Names of the namespaces this testbed created.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.iter().map(|n| n.name.clone()).collect()
    }

    pub fn node_running(&mut self) -> bool {
        match self.node_proc {
            Some(i) => self.proc_exited(i).is_none(),
            None => false,
        }
    }

    /// Stops sims-node (SIGTERM, then SIGKILL).
    pub fn stop_node(&mut self) {
        if let Some(i) = self.node_proc {
            let st = stop_child(&mut self.procs[i].child, Duration::from_secs(3));
            self.procs[i].exited = st;
        }
    }

    /// Starts all agents, the node, and attaches the node to `first`
    /// (DHCP), waiting until it is registered there.
    pub fn start_all_at(&mut self, first: Ma) -> Result<MoveInfo> {
        self.start_agents()?;
        self.start_node()?;
        let m = self.move_to(first)?;
        self.wait_node_at(first, Duration::from_secs(15))?;
        Ok(m)
    }

    /// `simsd --state-dir <dir> status --json` of an agent.
    pub fn agent_status(&self, x: Ma) -> Result<AgentStatus> {
        let d = self.agent_dir(x).to_string_lossy().into_owned();
        let out = self.agent(x).run(
            self.bin("simsd"),
            &["--state-dir", &d, "status", "--json"],
            Duration::from_secs(5),
        )?;
        AgentStatus::parse(&out)
    }

    /// `sims-node --state-dir <dir> status --json`.
    pub fn node_status(&self) -> Result<NodeStatus> {
        let d = self.node_dir().to_string_lossy().into_owned();
        let out = self.mn().run(
            self.bin("sims-node"),
            &["--state-dir", &d, "status", "--json"],
            Duration::from_secs(5),
        )?;
        NodeStatus::parse(&out)
    }

    /// Polls an agent's status until `pred` holds.
    pub fn wait_agent(
        &self,
        x: Ma,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&AgentStatus) -> bool,
    ) -> Result<AgentStatus> {
        wait_for(
            &format!("{}: {what}", x.id()),
            timeout,
            Duration::from_millis(50),
            || {
                let s = self.agent_status(x)?;
                if pred(&s) {
                    Ok(Some(s))
                } else {
                    Err(format!("status {}", s.raw))
                }
            },
        )
    }

    /// Polls the node's status until `pred` holds.
    pub fn wait_node(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&NodeStatus) -> bool,
    ) -> Result<NodeStatus> {
        wait_for(
            &format!("node: {what}"),
            timeout,
            Duration::from_millis(50),
            || {
                let s = self.node_status()?;
                if pred(&s) {
                    Ok(Some(s))
                } else {
                    Err(format!("status {}", s.raw))
                }
            },
        )
    }

    /// Waits until the node reports being attached at `x` with its address.
    pub fn wait_node_at(&self, x: Ma, timeout: Duration) -> Result<NodeStatus> {
        let addr = x.node_addr().to_string();
        let id = x.id();
        self.wait_node(&format!("current = {addr} at {id}"), timeout, |s| {
            s.is_at(&addr, &id)
        })
    }

    /// Waits until the node's binding for `addr` is in `state`.
    pub fn wait_node_binding(
        &self,
        addr: Ipv4Addr,
        state: &str,
        timeout: Duration,
    ) -> Result<NodeStatus> {
        let a = addr.to_string();
        self.wait_node(&format!("binding {a} {state}"), timeout, |s| {
            s.binding(&a).map(|b| b.state == state).unwrap_or(false)
        })
    }

    // ------------------------------------------------------------ moves

    /// Takes the node's link down (like leaving the Wi-Fi), without joining
    /// another network.
    pub fn detach(&mut self) -> Result<()> {
        self.agent(self.location)
            .ip(&["link", "set", "mnport", "down"])?;
        self.agent(self.location)
            .ip(&["link", "set", "mnport", "nomaster"])?;
        self.attached = false;
        Ok(())
    }

    /// Moves the node's link to `to`'s LAN (down, move the peer end,
    /// enslave, up — like wlan0 re-associating) and runs a one-shot DHCP
    /// client in the node, as a network manager would. Returns when the
    /// new address is configured.
    pub fn move_to(&mut self, to: Ma) -> Result<MoveInfo> {
        if !self.has(to) {
            return Err(format!("no agent {}", to.id()));
        }
        let from = self.attached.then_some(self.location);
        let cur = self.agent(self.location);
        cur.ip(&["link", "set", "mnport", "down"])?;
        let link_down_ns = mono_ns();
        if self.location != to {
            cur.ip(&["link", "set", "mnport", "netns", &self.agent(to).name])?;
            self.location = to;
        }
        self.attached = false;
        self.agent(to)
            .ip(&["link", "set", "mnport", "master", "br-lan", "up"])?;
        let link_up_ns = mono_ns();
        self.attached = true;
        let _ = fs::write(self.dir.join("link_up_ns"), link_up_ns.to_string());
        let (addr, bound_ns) = self.dhcp()?;
        let dhcp_done_ns = mono_ns();
        Ok(MoveInfo {
            from,
            to,
            link_down_ns,
            link_up_ns,
            bound_ns,
            dhcp_done_ns,
            addr,
        })
    }

    /// Path of the file holding the last link-up time (for `probe`).
    pub fn link_up_file(&self) -> PathBuf {
        self.dir.join("link_up_ns")
    }

    fn dhcp(&mut self) -> Result<(Ipv4Addr, Option<u64>)> {
        let events = self.dir.join("dhcp-events");
        let before = fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .count();
        let script = self.dir.join("udhcpc.script");
        let mut c = self.mn().command(busybox_bin());
        c.args([
            "udhcpc", "-f", "-n", "-q", "-t", "10", "-T", "1", "-i", MN_IFACE, "-s",
        ])
        .arg(&script)
        .env("SIMS_DHCP_EVENTS", &events)
        .env("SIMS_TRAFFIC", &self.traffic_bin);
        let out = run_cmd(c, None, Duration::from_secs(20))?;
        let log = format!("{}{}", out.stdout, out.stderr);
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("udhcpc.log"))
        {
            let _ = writeln!(f, "=== udhcpc at t_ns={}\n{log}", mono_ns());
        }
        if !out.ok() {
            return Err(format!(
                "DHCP in {} failed ({:?}, timed out: {}):\n{log}\n--- dnsmasq:\n{}",
                self.location.id(),
                out.status,
                out.timed_out,
                tail(&self.agent_dir(self.location).join("dnsmasq.log"), 10)
            ));
        }
        // `<stamp> bound <iface> <ip> <mask> <router>`
        let text = fs::read_to_string(&events).unwrap_or_default();
        let bound = text
            .lines()
            .skip(before)
            .filter(|l| l.split_whitespace().nth(1) == Some("bound"))
            .last()
            .ok_or_else(|| {
                format!("udhcpc succeeded but the script logged no bound event:\n{log}")
            })?;
        let w: Vec<&str> = bound.split_whitespace().collect();
        let addr: Ipv4Addr = w
            .get(3)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("bad event line {bound:?}"))?;
        let stamp = w[0].parse::<u64>().ok();
        Ok((addr, stamp))
    }

    /// IPv4 addresses (address, prefix length) on the node's interface.
    pub fn node_addrs(&self) -> Result<Vec<(Ipv4Addr, u8)>> {
        let out = self
            .mn()
            .ip(&["-4", "-o", "addr", "show", "dev", MN_IFACE])?;
        Ok(parse_addrs(&out))
    }

    /// Does the node hold `addr` (any prefix length)?
    pub fn node_has_addr(&self, addr: Ipv4Addr) -> Result<bool> {
        Ok(self.node_addrs()?.iter().any(|(a, _)| *a == addr))
    }

    // ------------------------------------------------------------ traffic

    /// Starts a checked stream from the node to the CN and waits until it
    /// is connected.
    pub fn stream(&self, spec: StreamSpec) -> Result<Session> {
        self.stream_from(&self.mn(), spec)
    }

    /// Same, from any namespace of the testbed.
    pub fn stream_from(&self, ns: &Netns, spec: StreamSpec) -> Result<Session> {
        let seq = self.next_seq();
        let id = format!("{}-{seq}", spec.label);
        let base = self.dir.join("sessions").join(&id);
        let out = base.with_extension("out");
        let err = base.with_extension("err");
        let until = base.with_extension("stop");
        let mut c = ns.command(&self.traffic_bin);
        c.args(["stream", "--connect", &self.cn_addr().to_string()])
            .args(["--dir", spec.dir.as_str()])
            .args(["--rate", &spec.rate.to_string()])
            .args(["--duration-ms", &spec.duration_ms.to_string()])
            .args(["--id", &id])
            .arg("--until-file")
            .arg(&until);
        if let Some(b) = spec.bind {
            c.args(["--bind", &b.to_string()]);
        }
        c.stdin(Stdio::null())
            .stdout(File::create(&out).map_err(|e| e.to_string())?)
            .stderr(File::create(&err).map_err(|e| e.to_string())?);
        die_with_parent(&mut c);
        let child = c.spawn().map_err(|e| format!("spawn stream: {e}"))?;
        self.record_pid(child.id());
        let mut s = Session {
            label: spec.label.clone(),
            id,
            dir: spec.dir,
            child,
            out,
            err,
            until,
            result: None,
        };
        wait_for(
            &format!("stream {} to connect", s.label),
            Duration::from_secs(15),
            Duration::from_millis(10),
            || {
                let text = fs::read_to_string(&s.out).unwrap_or_default();
                if text.contains("connected") {
                    return Ok(Some(()));
                }
                if !s.is_running() {
                    return Err(format!("stream exited: {}", s.output()));
                }
                Ok(None)
            },
        )?;
        Ok(s)
    }

    /// `sims-traffic whoami` from the node.
    pub fn whoami(&self, bind: Option<Ipv4Addr>) -> Result<Whoami> {
        self.whoami_from(&self.mn(), bind)
    }

    pub fn whoami_from(&self, ns: &Netns, bind: Option<Ipv4Addr>) -> Result<Whoami> {
        let to = self.cn_addr().to_string();
        let mut args = vec!["whoami", "--connect", &to];
        let b = bind.map(|b| b.to_string());
        if let Some(b) = &b {
            args.extend(["--bind", b]);
        }
        let out = ns.run(&self.traffic_bin, &args, Duration::from_secs(20))?;
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).map_err(|e| format!("whoami output {out:?}: {e}"))?;
        let p = |k: &str| -> Result<SocketAddrV4> {
            v[k].as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("whoami output {out:?}: no {k}"))
        };
        Ok(Whoami {
            local: p("local")?,
            seen: p("seen")?,
        })
    }

    /// Starts `sims-traffic probe` in the node (see the tool's docs); the
    /// caller waits for its "ready" line before moving.
    pub fn spawn_probe(&self, bind: Ipv4Addr, timeout_ms: u64) -> Result<Session> {
        let seq = self.next_seq();
        let id = format!("probe-{seq}");
        let base = self.dir.join("sessions").join(&id);
        let out = base.with_extension("out");
        let err = base.with_extension("err");
        let _ = fs::remove_file(self.link_up_file());
        let mut c = self.mn().command(&self.traffic_bin);
        c.args(["probe", "--to", &self.cn_addr().to_string()])
            .args(["--bind", &bind.to_string(), "--iface", MN_IFACE])
            .args([
                "--interval-us",
                "200",
                "--timeout-ms",
                &timeout_ms.to_string(),
            ])
            .arg("--link-up-file")
            .arg(self.link_up_file());
        c.stdin(Stdio::null())
            .stdout(File::create(&out).map_err(|e| e.to_string())?)
            .stderr(File::create(&err).map_err(|e| e.to_string())?);
        die_with_parent(&mut c);
        let child = c.spawn().map_err(|e| format!("spawn probe: {e}"))?;
        self.record_pid(child.id());
        let mut s = Session {
            label: id.clone(),
            id,
            dir: Dir::Up,
            child,
            out,
            err,
            until: base.with_extension("stop"),
            result: None,
        };
        wait_for(
            "probe ready",
            Duration::from_secs(10),
            Duration::from_millis(5),
            || {
                if fs::read_to_string(&s.out)
                    .unwrap_or_default()
                    .contains("ready")
                {
                    return Ok(Some(()));
                }
                if !s.is_running() {
                    return Err(format!("probe exited: {}", s.output()));
                }
                Ok(None)
            },
        )?;
        Ok(s)
    }

    // ------------------------------------------------------------ kernel

    /// SIMS's kernel state in a namespace.
    pub fn kernel_state(&self, ns: &Netns) -> Result<KernelState> {
        let rules = ns
            .ip(&["-4", "rule", "show"])?
            .lines()
            .filter(|l| {
                let prio = l.split(':').next().unwrap_or("").trim();
                prio == "1000" || prio == "1001" || l.contains(&format!("proto {SIMS_PROTO}"))
            })
            .map(str::to_string)
            .collect();
        let routes = ns
            .ip(&[
                "-4",
                "route",
                "show",
                "table",
                "all",
                "proto",
                &SIMS_PROTO.to_string(),
            ])?
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>();
        // Also anything in the SIMS table, whatever its protocol.
        let mut routes = routes;
        let table = format!("table {SIMS_TABLE}");
        for l in ns
            .ip(&["-4", "route", "show", "table", &SIMS_TABLE.to_string()])
            .unwrap_or_default()
            .lines()
        {
            let dest = l.split_whitespace().next().unwrap_or("");
            let known = routes
                .iter()
                .any(|r| r.split_whitespace().next() == Some(dest) && r.contains(&table));
            if !known {
                routes.push(format!("{l} {table}"));
            }
        }
        let tunnel_kinds = parse_link_kinds(&ns.ip(&["-d", "-o", "link", "show"])?)
            .into_iter()
            .filter(|(n, _)| n.starts_with("sims-"))
            .collect::<Vec<_>>();
        let tunnels = tunnel_kinds.iter().map(|(n, _)| n.clone()).collect();
        let nft = ns.run(
            nft_bin(),
            &["list", "table", "inet", "sims"],
            Duration::from_secs(10),
        );
        let (nft_table, set_elements) = match nft {
            Ok(text) => (
                true,
                text.lines()
                    .filter(|l| l.contains("elements = "))
                    .map(|l| l.trim().to_string())
                    .collect(),
            ),
            Err(_) => (false, Vec::new()),
        };
        Ok(KernelState {
            rules,
            routes,
            tunnels,
            tunnel_kinds,
            set_elements,
            nft_table,
        })
    }

    /// An agent's SIMS kernel state; an error if a tunnel device is not of
    /// the kind its configured backend makes (`ipip` for kernel, `tun` for
    /// userspace), so every scenario that looks also checks which data
    /// plane it is exercising.
    pub fn agent_kernel_state(&self, x: Ma) -> Result<KernelState> {
        let k = self.kernel_state(&self.agent(x))?;
        self.check_tunnel_kinds(x, &k)?;
        Ok(k)
    }

    fn check_tunnel_kinds(&self, x: Ma, k: &KernelState) -> Result<()> {
        for (name, kind) in &k.tunnel_kinds {
            self.report(&format!("agent={} tunnel={name} kind={kind}", x.id()));
            if let Some(want) = self.opts.tunnel_kind_of(x) {
                if kind != want {
                    return Err(format!(
                        "{}: tunnel {name} is a {kind:?} device; backend {:?} makes {want:?}",
                        x.id(),
                        self.opts.backend_of(x)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Waits until agent `x` has a `sims-*` tunnel device, and checks its
    /// kind against the backend (see [`Testbed::agent_kernel_state`]).
    /// Returns (device, kind) of its tunnels.
    pub fn wait_tunnel(&self, x: Ma, timeout: Duration) -> Result<Vec<(String, String)>> {
        wait_for(
            &format!("a sims-* tunnel device in {}", x.id()),
            timeout,
            Duration::from_millis(50),
            || {
                let k = self.agent_kernel_state(x)?;
                Ok((!k.tunnel_kinds.is_empty()).then_some(k.tunnel_kinds))
            },
        )
    }

    // ------------------------------------------------------------ diagnostics

    /// Marks the testbed failed: Drop prints logs and keeps the run dir.
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// Tails of all logs (daemons in full detail) and the agents' SIMS
    /// kernel state, as text.
    pub fn diagnostics(&mut self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "\n======== testbed {} {} diagnostics (run dir {}) ========",
            self.prefix,
            self.opts.label,
            self.dir.display()
        );
        for i in 0..self.procs.len() {
            let st = self.proc_exited(i);
            let p = &self.procs[i];
            let lines = if p.label.starts_with("sims") { 60 } else { 15 };
            let _ = writeln!(
                o,
                "---- {} (pid {}, {}) log {} — last {lines} lines:\n{}",
                p.label,
                p.child.id(),
                match st {
                    Some(s) => format!("exited: {s}"),
                    None => "running".into(),
                },
                p.log.display(),
                tail(&p.log, lines)
            );
        }
        let _ = writeln!(
            o,
            "---- udhcpc.log:\n{}",
            tail(&self.dir.join("udhcpc.log"), 10)
        );
        let _ = writeln!(
            o,
            "---- dhcp-events:\n{}",
            tail(&self.dir.join("dhcp-events"), 10)
        );
        if let Ok(rd) = fs::read_dir(self.dir.join("sessions")) {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            v.sort();
            for p in v
                .iter()
                .filter(|p| p.extension().map(|e| e == "out").unwrap_or(false))
            {
                let _ = writeln!(o, "---- session {}:\n{}", p.display(), tail(p, 5));
            }
        }
        for x in self.opts.agents.clone() {
            let ns = self.agent(x);
            let _ = writeln!(o, "---- kernel state of {}:", x.id());
            let _ = writeln!(
                o,
                "$ simsd status --json\n{}",
                self.agent_status(x)
                    .map(|st| st.raw.to_string())
                    .unwrap_or_else(|e| e)
            );
            for args in [
                vec!["-4", "rule", "show"],
                vec!["-4", "route", "show", "table", "all", "proto", "153"],
                vec!["-br", "link", "show"],
                vec!["-4", "-br", "addr", "show"],
                vec!["-s", "-d", "link", "show", "type", "ipip"],
                vec!["-s", "-d", "link", "show", "type", "tun"],
            ] {
                let _ = writeln!(
                    o,
                    "$ ip {}\n{}",
                    args.join(" "),
                    ns.ip(&args).unwrap_or_else(|e| e)
                );
            }
            let _ = writeln!(
                o,
                "$ nft list table inet sims\n{}",
                ns.run(
                    nft_bin(),
                    &["list", "table", "inet", "sims"],
                    Duration::from_secs(5)
                )
                .unwrap_or_else(|e| e)
            );
            // IP and ICMP counters of the namespace (drops, errors sent).
            let snmp = ns
                .in_ns(|| fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default())
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "$ grep -E '^(Ip|Icmp):' /proc/net/snmp\n{}",
                snmp.lines()
                    .filter(|l| l.starts_with("Ip:") || l.starts_with("Icmp:"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let mn = self.mn();
        for args in [
            vec!["-4", "addr", "show"],
            vec!["-4", "route", "show", "table", "all"],
        ] {
            let _ = writeln!(
                o,
                "---- mn: ip {}\n{}",
                args.join(" "),
                mn.ip(&args).unwrap_or_else(|e| e)
            );
        }
        let _ = writeln!(o, "======== end of diagnostics ========");
        o
    }

    /// Prints [`Testbed::diagnostics`] to stderr.
    pub fn print_diagnostics(&mut self) {
        eprintln!("{}", self.diagnostics());
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let failed = self.failed || std::thread::panicking();
        // Collected while everything still exists, printed after cleanup
        // (a broken stderr must not stop the cleanup).
        let diag = if failed || std::env::var_os("SIMS_TESTBED_VERBOSE").is_some() {
            Some(self.diagnostics())
        } else {
            None
        };
        // Kill every process we started (by PID), latest first.
        for i in (0..self.procs.len()).rev() {
            if self.procs[i].exited.is_none() {
                let st = stop_child(&mut self.procs[i].child, Duration::from_secs(2));
                self.procs[i].exited = st;
            }
        }
        for ns in self.namespaces.iter().rev() {
            let mut c = Command::new(ip_bin());
            c.args(["netns", "del", &ns.name]);
            let _ = run_cmd(c, None, Duration::from_secs(10));
        }
        if !failed && std::env::var_os("SIMS_TESTBED_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
        let mut err = std::io::stderr();
        if let Some(d) = diag {
            if std::thread::panicking() {
                // Goes to the test's captured output, shown on failure.
                eprintln!("{d}");
            } else {
                let _ = writeln!(err, "{d}");
            }
        }
        if failed {
            let _ = writeln!(err, "[testbed] logs kept in {}", self.dir.display());
        }
    }
}

/// Copies lines from `r` to the end of `log`, each prefixed with the
/// monotonic time in seconds; the thread ends at EOF (process exit).
fn stamp_lines(r: impl std::io::Read + Send + 'static, log: PathBuf) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&log) else {
            return;
        };
        let mut rd = std::io::BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match rd.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let t = mono_ns();
                    let mut out = format!("[{}.{:06}] ", t / 1_000_000_000, t / 1_000 % 1_000_000)
                        .into_bytes();
                    out.extend_from_slice(&line);
                    if !out.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                    let _ = f.write_all(&out);
                }
            }
        }
    });
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

/// (name, kind) of each device in `ip -d -o link show` output; the kind is
/// the first word of the linkinfo section (`ipip`, `tun`, `veth`, ...), or
/// "" for devices without one (lo).
pub fn parse_link_kinds(out: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for l in out.lines() {
        let Some(name) = l
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        // Sections are separated by a backslash: header, link/..., linkinfo.
        let kind = l
            .split('\\')
            .skip(2)
            .filter_map(|sec| sec.split_whitespace().next())
            .find(|w| !w.starts_with("link/") && !w.contains('='))
            .unwrap_or("")
            .to_string();
        v.push((name, kind));
    }
    v
}

/// Parses `ip -o -4 addr` output into (address, prefix length).
pub fn parse_addrs(out: &str) -> Vec<(Ipv4Addr, u8)> {
    let mut v = Vec::new();
    for l in out.lines() {
        let mut w = l.split_whitespace();
        while let Some(t) = w.next() {
            if t == "inet" {
                if let Some(a) = w.next() {
                    let (ip, plen) = a.split_once('/').unwrap_or((a, "32"));
                    if let (Ok(ip), Ok(plen)) = (ip.parse(), plen.parse()) {
                        v.push((ip, plen));
                    }
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_kinds_from_ip_d_o_link() {
        let out = "1: lo: <LOOPBACK> mtu 65536 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00 promiscuity 0  allmulti 0 minmtu 0 maxmtu 0 addrgenmode eui64 numtxqueues 1\n\
2: sims-ma-b: <POINTOPOINT,MULTICAST,NOARP> mtu 1480 qdisc noop state DOWN mode DEFAULT group default qlen 500\\    link/none  promiscuity 0  allmulti 0 minmtu 68 maxmtu 65535 \\    tun type tun pi off vnet_hdr off persist on addrgenmode eui64\n\
3: sims-ma-c@NONE: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1480 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/ipip 100.64.1.2 peer 100.64.3.2 promiscuity 0 minmtu 0 maxmtu 0 \\    ipip ipip remote 100.64.3.2 local 100.64.1.2 ttl 64 pmtudisc addrgenmode eui64\n";
        assert_eq!(
            parse_link_kinds(out),
            vec![
                ("lo".to_string(), String::new()),
                ("sims-ma-b".to_string(), "tun".to_string()),
                ("sims-ma-c".to_string(), "ipip".to_string()),
            ]
        );
    }

    #[test]
    fn ns_names_round_trip_and_foreign_names_are_ignored() {
        assert_eq!(
            parse_ns_name("s1234-0-ma-a"),
            Some((1234, "s1234-0-".to_string()))
        );
        assert_eq!(parse_ns_name("s1-22-lanhost-a").unwrap().0, 1);
        for n in [
            "s1234-0-other",
            "sx-0-cn",
            "s12-cn",
            "docker",
            "s-1-cn",
            "s1-1-",
        ] {
            assert_eq!(parse_ns_name(n), None, "{n}");
        }
    }

    #[test]
    fn addrs_parse() {
        let out = "2: mn0    inet 10.2.0.50/24 brd 10.2.0.255 scope global mn0\\       valid_lft forever\n2: mn0    inet 10.1.0.50/32 scope global mn0\n";
        assert_eq!(
            parse_addrs(out),
            vec![
                (Ipv4Addr::new(10, 2, 0, 50), 24),
                (Ipv4Addr::new(10, 1, 0, 50), 32)
            ]
        );
    }
}
