//! What a testbed is built with: [`Options`].

use std::path::PathBuf;

use super::Ma;

/// Testbed construction options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Agents to create (default all three).
    pub agents: Vec<Ma>,
    /// Create `lanhost-a`, an ordinary host on LAN A (needs agent A).
    pub lanhost: bool,
    /// Agents on whose LAN a guest namespace `guest-<x>` is created: an
    /// ordinary host with its own veth on the bridge, MAC
    /// [`Ma::guest_mac`] and the static address [`Ma::guest_addr`]/24
    /// (default route via the agent); an attacker in the scenarios.
    pub guests: Vec<Ma>,
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
    /// Extra environment of one agent's simsd (e.g. libfaketime's).
    pub agent_env: Vec<(Ma, String, String)>,
    /// Free text shown in diagnostics (e.g. the test name).
    pub label: String,
    /// Extra sysctls for the node's namespace (`key=value`), applied after
    /// setup; also taken from `SIMS_TESTBED_NODE_SYSCTLS` (comma-separated)
    /// for experiments. The default is a stock Linux host.
    pub node_sysctls: Vec<String>,
    /// Extra `sims-node` arguments (e.g. `--no-early`, `--rto-min-ms 0`:
    /// the benchmark's levers).
    pub node_args: Vec<String>,
    /// dnsmasq's `--dhcp-reply-delay` (seconds): a slow DHCP server.
    pub dhcp_reply_delay_s: u32,
    /// The node's DHCP client (default: `SIMS_TESTBED_DHCP_CLIENT`, else
    /// busybox udhcpc).
    pub dhcp_client: DhcpClient,
    /// Run sims-node as its systemd unit would (`sims-node@mn0.service`:
    /// its command line, capabilities and file-system protection; see
    /// testbed/daemons.rs `node_unit_argv`).
    pub node_unit: bool,
    /// A second node interface, `mn1` (a dock's Ethernet), whose peer
    /// `dockport` waits unplugged in this agent's namespace
    /// (testbed/dock.rs). The node's Wi-Fi, mn0, then gets its default
    /// route with metric 600 and the dock's 100, as NetworkManager does.
    pub dock: Option<Ma>,
    /// The node is a travel router: a LAN behind it (namespace `tr-lan`,
    /// testbed/travel.rs) NATed to the node's address by its firewall.
    pub travel_lan: bool,
}

/// The DHCP clients a laptop or router runs, each the way it is run there
/// (testbed/dhcp_clients.rs says how).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpClient {
    /// busybox udhcpc, one shot per move with the shipped script (OpenWrt's
    /// netifd runs it so).
    Udhcpc,
    /// dhcpcd (Debian's dhcpcd-base), one daemon that follows the carrier.
    Dhcpcd,
    /// ISC dhclient as ifupdown runs it: released and started again per move.
    Dhclient,
    /// NetworkManager with its internal DHCP client, on a private D-Bus.
    NetworkManager,
}

impl DhcpClient {
    pub const ALL: [DhcpClient; 4] = [
        DhcpClient::Udhcpc,
        DhcpClient::Dhcpcd,
        DhcpClient::Dhclient,
        DhcpClient::NetworkManager,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DhcpClient::Udhcpc => "udhcpc",
            DhcpClient::Dhcpcd => "dhcpcd",
            DhcpClient::Dhclient => "dhclient",
            DhcpClient::NetworkManager => "networkmanager",
        }
    }

    pub fn from_name(s: &str) -> Option<DhcpClient> {
        DhcpClient::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agents: Ma::ALL.to_vec(),
            lanhost: false,
            guests: Vec::new(),
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
            agent_env: Vec::new(),
            label: String::new(),
            node_sysctls: std::env::var("SIMS_TESTBED_NODE_SYSCTLS")
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| s.trim().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            node_args: Vec::new(),
            dhcp_reply_delay_s: 0,
            dhcp_client: std::env::var("SIMS_TESTBED_DHCP_CLIENT")
                .ok()
                .and_then(|v| DhcpClient::from_name(v.trim()))
                .unwrap_or(DhcpClient::Udhcpc),
            node_unit: false,
            dock: None,
            travel_lan: false,
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
    /// A guest on `x`'s LAN (see [`Options::guests`]).
    pub fn guest(mut self, x: Ma) -> Self {
        if !self.guests.contains(&x) {
            self.guests.push(x);
        }
        self
    }
    /// The agents' `binding_lifetime` (nodes refresh at a third of it).
    pub fn binding_lifetime_s(mut self, s: u32) -> Self {
        self.binding_lifetime_s = s;
        self
    }
    /// Neither x nor y lists the other as a peer.
    pub fn no_agreement(mut self, x: Ma, y: Ma) -> Self {
        self.omit_peers.push((x, y));
        self.omit_peers.push((y, x));
        self
    }
    /// A DHCP server slower by `s` seconds (dnsmasq's reply delay).
    pub fn dhcp_reply_delay_s(mut self, s: u32) -> Self {
        self.dhcp_reply_delay_s = s;
        self
    }
    /// Extra `sims-node` arguments.
    pub fn node_args(mut self, args: &[&str]) -> Self {
        self.node_args.extend(args.iter().map(|s| s.to_string()));
        self
    }
    pub fn travel_lan(mut self) -> Self {
        self.travel_lan = true;
        self
    }
    pub fn dock(mut self, x: Ma) -> Self {
        self.dock = Some(x);
        self
    }
    pub fn node_unit(mut self) -> Self {
        self.node_unit = true;
        self
    }
    pub fn dhcp_client(mut self, c: DhcpClient) -> Self {
        self.dhcp_client = c;
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
