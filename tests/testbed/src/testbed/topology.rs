//! The testbed's topology: who is where (the agents and their addresses),
//! the namespaces, links, bridges and sysctls, the agents' fw4-like
//! firewall, and the WAN delay.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::dhcp::UDHCPC_SCRIPT;
use super::Testbed;
use crate::sys::{ip_bin, nft_bin, Netns, Result};

/// The correspondent node (runs `sims-traffic serve`).
pub const CN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CN_PORT: u16 = 5001;
pub const MN_MAC: &str = "02:00:00:00:00:50";
pub const MN_IFACE: &str = "mn0";

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

impl Testbed {
    fn add_ns(&mut self, role: &str) -> Result<Netns> {
        let ns = self.ns(role);
        self.namespaces.push(ns.clone());
        let mut c = Command::new(ip_bin());
        c.args(["netns", "add", &ns.name]);
        crate::sys::run_ok(c, None, Duration::from_secs(10))?;
        Ok(ns)
    }

    pub(super) fn build(&mut self) -> Result<()> {
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

    /// Names of the namespaces this testbed created.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.iter().map(|n| n.name.clone()).collect()
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}
