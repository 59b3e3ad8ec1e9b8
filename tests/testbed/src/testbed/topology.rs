//! Building the testbed ([`Testbed::new`]): the namespaces, links,
//! bridges and sysctls, each agent's config and fw4-like firewall, dnsmasq
//! and the CN server; and the WAN delay.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::cleanup::run_dir_for;
use super::dhcp::UDHCPC_SCRIPT;
use super::host::default_traffic_bin;
use super::{cleanup_stale, config, default_bin_dir, Ma, Options, Testbed};
use super::{CN_IP, DOCK_IFACE, DOCK_MAC, GUEST_IFACE, MN_IFACE, MN_MAC};
use crate::netns::Netns;
use crate::product::SIMS_PORT;
use crate::sys::{ip_bin, nft_bin, set_mode, Result, TestbedLock};

static COUNTER: AtomicU32 = AtomicU32::new(0);

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
                let k = config::random_key_hex();
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
            dhcp_daemon: None,
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
        if let Some(x) = self.opts.guests.iter().find(|x| !self.has(**x)) {
            return Err(format!("a guest on {}'s LAN needs agent {x}", x.id()));
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
        if self.opts.travel_lan {
            roles.push("tr-lan".into());
        }
        roles.extend(self.opts.guests.iter().map(|x| x.guest_role()));
        for r in &roles {
            let ns = self.add_ns(r)?;
            let mut kv: Vec<(String, String)> = vec![
                ("net.ipv4.conf.all.rp_filter".into(), "1".into()),
                ("net.ipv4.conf.default.rp_filter".into(), "1".into()),
                ("net.ipv6.conf.all.disable_ipv6".into(), "1".into()),
                ("net.ipv6.conf.default.disable_ipv6".into(), "1".into()),
            ];
            if r == "inet" || r.starts_with("ma-") || (r == "mn" && self.opts.travel_lan) {
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
        if self.opts.travel_lan {
            self.travel_lan_up()?;
        }
        if let Some(x) = self.opts.dock {
            self.agent(x).ip_batch(&[format!(
                "link add dockport type veth peer name {DOCK_IFACE} netns {}",
                self.mn().name
            )])?;
            self.mn().ip_batch(&[
                format!("link set {DOCK_IFACE} address {DOCK_MAC}"),
                format!("link set {DOCK_IFACE} up"),
            ])?;
        }
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
        for &x in &self.opts.guests.clone() {
            self.agent(x).ip_batch(&[
                format!(
                    "link add gport type veth peer name {GUEST_IFACE} netns {}",
                    self.guest(x).name
                ),
                "link set gport master br-lan".into(),
                "link set gport up".into(),
            ])?;
            self.guest(x).ip_batch(&[
                "link set lo up".into(),
                format!("link set {GUEST_IFACE} address {}", x.guest_mac()),
                format!("addr add {}/24 dev {GUEST_IFACE}", x.guest_addr()),
                format!("link set {GUEST_IFACE} up"),
                format!("route add default via {}", x.lan_gw()),
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

    /// The firewall of agent `x`: what OpenWrt's real fw4 compiles for it
    /// (the default firewall, the package's sims zone, the openings the
    /// init script registers for its peers) where the OpenWrt kit is here;
    /// elsewhere (the VM guests) the hand-written fw4-like ruleset.
    pub fn firewall_ruleset(&self, x: Ma) -> String {
        let peers = config::peers_of(x, &self.opts);
        if let Some(kit) = sims_openwrt::kit() {
            match self.fw4_ruleset(&kit, x, &peers) {
                Ok(r) => return r,
                Err(e) => eprintln!(
                    "[testbed] fw4 for {}: {e}; the fw4-like ruleset instead",
                    x.id()
                ),
            }
        }
        config::firewall_ruleset(&peers)
    }

    fn fw4_ruleset(&self, kit: &std::path::Path, x: Ma, peers: &[Ma]) -> Result<String> {
        use sims_openwrt::fw4;
        let (lan, wan) = (x.lan_gw().to_string(), x.wan_ip().to_string());
        let ids: Vec<(String, String)> = peers
            .iter()
            .map(|y| (y.id(), y.wan_ip().to_string()))
            .collect();
        let ids: Vec<(&str, &str)> = ids.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        fw4::compile(
            kit,
            &self.agent_dir(x).join("fw4-build"),
            &[
                fw4::Interface {
                    name: "lan",
                    device: "br-lan",
                    addr: &lan,
                    mask: 24,
                },
                fw4::Interface {
                    name: "wan",
                    device: "wan",
                    addr: &wan,
                    mask: 24,
                },
            ],
            &fw4::service_rules(&ids, SIMS_PORT),
        )
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
