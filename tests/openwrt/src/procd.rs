//! OpenWrt's procd running the package's init script: procd as PID 1 of
//! a PID namespace that looks like an OpenWrt root (the kit's `ow-ns
//! -p`), in a network namespace of its own or a testbed agent's, with the
//! real simsd; and what a test asks of it (ubus, the router's shell,
//! fw4). Used by tests/procd.rs and by the testbed's live-apply scenario
//! (simsd under procd, reloaded through `/etc/init.d/sims reload`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{repo, run};

/// netifd's answers to fw4 (ow-ubus-stub): the LAN and WAN of the agent.
/// procd's service data, which fw4 also reads, comes from the real procd.
const NETIFD: &str = r#"{ "network.interface": { "dump": { "interface": [
    { "interface": "lan", "up": true, "device": "br-lan", "l3_device": "br-lan",
      "ipv4-address": [ { "address": "10.1.0.1", "mask": 24 } ], "data": {} },
    { "interface": "wan", "up": true, "device": "wan", "l3_device": "wan",
      "ipv4-address": [ { "address": "100.64.1.2", "mask": 24 } ], "data": {} } ] } },
  "network.device": { "status": { } } }"#;

/// procd in its namespaces, and everything the test made; all of it goes
/// when this is dropped, however the test ends.
pub struct Router {
    pub kit: PathBuf,
    pub dir: PathBuf,
    /// The network namespace, and whether we made it (and remove it).
    netns: String,
    own_netns: bool,
    ow_ns: Child,
    procd: u32,
}

/// Where the router's network is.
pub enum Net {
    /// A namespace of its own: a br-lan bridge (10.1.0.1/24) and a wan
    /// veth (100.64.1.2/24), as ma-a's.
    Own,
    /// An existing namespace (a testbed agent's), by name.
    Existing(String),
}

impl Drop for Router {
    fn drop(&mut self) {
        // procd as PID 1: its end ends the PID namespace and all in it.
        let _ = Command::new("kill").arg(self.procd.to_string()).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) && matches!(self.ow_ns.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.ow_ns.kill();
        let _ = self.ow_ns.wait();
        if self.own_netns {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &str) -> Result<String, String> {
    run(Command::new("sh").args(["-c", cmd]))
}

impl Router {
    /// procd as PID 1 with the package's init script and uci-defaults,
    /// `simsd` as /usr/sbin/simsd and `config` as /etc/config/sims, in
    /// `net`; `state_dir`: where /var/run/sims (simsd's state directory)
    /// really is (default: under the router's own run dir). `name` tells
    /// routers apart (several tests at once).
    pub fn start(
        kit: PathBuf,
        simsd: &Path,
        config: &str,
        net: Net,
        state_dir: Option<&Path>,
        name: &str,
    ) -> Router {
        Router::start_with(kit, simsd, config, net, state_dir, name, &[])
    }

    /// [`Router::start`] with more read-only `/usr` layers above the
    /// router's own (an app's files: `/usr` is not writable there).
    pub fn start_with(
        kit: PathBuf,
        simsd: &Path,
        config: &str,
        net: Net,
        state_dir: Option<&Path>,
        name: &str,
        usr_layers: &[PathBuf],
    ) -> Router {
        let id = std::process::id();
        let dir = std::env::temp_dir().join(format!("sims-procd-{name}-{id}"));
        let _ = fs::remove_dir_all(&dir);
        for d in [
            "etc/init.d",
            "etc/rc.d",
            "etc/config",
            "run",
            "usr/sbin",
            "usr/bin",
        ] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        // fw4 runs `utpl`, which the kit has as a 5-byte file naming its
        // symlink target (ucode) instead of the symlink: put it back.
        std::os::unix::fs::symlink("ucode", dir.join("usr/bin/utpl")).unwrap();
        // OpenWrt's default firewall, the package's uci-defaults (run
        // later, as at installation), what netifd would answer fw4.
        fs::copy(
            kit.join("root/etc/config/firewall"),
            dir.join("etc/config/firewall"),
        )
        .unwrap();
        fs::copy(
            repo().join("openwrt-package/sims/files/sims.uci-defaults"),
            dir.join("etc/90-sims"),
        )
        .unwrap();
        fs::write(dir.join("etc/netifd.json"), NETIFD).unwrap();
        let init = dir.join("etc/init.d/sims");
        fs::copy(repo().join("openwrt-package/sims/files/sims.init"), &init).unwrap();
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
        fs::copy(simsd, dir.join("usr/sbin/simsd")).unwrap();
        fs::write(dir.join("etc/config/sims"), config).unwrap();
        if let Some(state) = state_dir {
            std::os::unix::fs::symlink(state, dir.join("run/sims")).unwrap();
        }
        fs::write(
            dir.join("etc/inittab"),
            "::sysinit:/etc/init.d/rcS S boot\n::shutdown:/etc/init.d/rcS K shutdown\n",
        )
        .unwrap();
        let (netns, own_netns) = match net {
            Net::Existing(n) => (n, false),
            Net::Own => {
                let netns = format!("sims-procd-{name}-{id}");
                let _ = Command::new("ip")
                    .args(["netns", "del", &netns])
                    .stderr(Stdio::null())
                    .status();
                sh(&format!(
                    "ip netns add {netns} && ip -n {netns} link set lo up \
                     && ip -n {netns} link add br-lan type bridge \
                     && ip -n {netns} link add wan type veth peer name wanpeer \
                     && ip -n {netns} addr add 10.1.0.1/24 dev br-lan \
                     && ip -n {netns} addr add 100.64.1.2/24 dev wan \
                     && for d in br-lan wan wanpeer; do ip -n {netns} link set $d up; done"
                ))
                .unwrap();
                (netns, true)
            }
        };
        let ow_ns = Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(kit.join("bin/ow-ns"))
            .arg("-p")
            .arg("-r")
            .arg(dir.join("run"))
            .arg("-e")
            .arg(dir.join("etc"))
            .args(
                usr_layers
                    .iter()
                    .flat_map(|l| [Path::new("-u"), l.as_path()]),
            )
            .arg("-u")
            .arg(dir.join("usr"))
            .args(["--", "/sbin/procd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ow = Router {
            kit,
            dir,
            netns,
            own_netns,
            procd: 0,
            ow_ns,
        };
        // procd is the namespace's PID 1: a child of ow-ns (via unshare).
        ow.procd = wait("procd to start", || {
            let pid = find_procd(ow.ow_ns.id())?;
            ow.ubus(&["list", "service"]).ok().map(|_| pid)
        });
        ow
    }

    pub fn ubus(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(self.kit.join("root/usr/bin/ubus"))
            .arg("-s")
            .arg(self.dir.join("run/ubus/ubus.sock"))
            .args(args))
    }

    /// `ubus call service list` for sims (verbose: with its triggers).
    pub fn service(&self) -> Value {
        let out = self
            .ubus(&[
                "call",
                "service",
                "list",
                r#"{"name":"sims","verbose":true}"#,
            ])
            .unwrap();
        serde_json::from_str(&out).unwrap()
    }

    /// A command inside the namespaces (as on the router's shell).
    pub fn router(&self, cmd: &str) -> Result<String, String> {
        run(Command::new("nsenter").args([
            "-t",
            &self.procd.to_string(),
            "-m",
            "-p",
            "sh",
            "-c",
            cmd,
        ]))
    }

    /// A command inside the namespaces and the router's network namespace
    /// (what its daemons see of the kernel: addresses, nft tables).
    pub fn router_net(&self, cmd: &str) -> Result<String, String> {
        run(Command::new("nsenter").args([
            "-t",
            &self.procd.to_string(),
            "-m",
            "-p",
            "-n",
            "sh",
            "-c",
            cmd,
        ]))
    }

    /// The ruleset OpenWrt's fw4 compiles there: the default firewall, the
    /// package's uci-defaults, and the rules procd holds for simsd; nft
    /// must accept it.
    pub fn fw4_ruleset(&self) -> String {
        self.router(
            "fw4 print > /tmp/sims-fw4.nft && nft -c -f /tmp/sims-fw4.nft && cat /tmp/sims-fw4.nft",
        )
        .unwrap_or_else(|e| panic!("fw4: {e}"))
    }

    /// `/etc/init.d/sims start`, as on the router's shell; simsd's pid
    /// once procd runs it. ow-ns gives PID 1 a /dev of harmless nodes:
    /// the TUN device the userspace backend needs is made first.
    pub fn start_simsd(&self) -> u64 {
        self.router("mkdir -p /dev/net && [ -c /dev/net/tun ] || mknod /dev/net/tun c 10 200")
            .unwrap();
        self.router("/etc/init.d/sims start").unwrap();
        wait("simsd under procd", || self.simsd_pid())
    }

    pub fn simsd_pid(&self) -> Option<u64> {
        let s = self.service();
        let i = &s["sims"]["instances"]["simsd"];
        (i["running"] == true).then(|| i["pid"].as_u64()).flatten()
    }

    /// simsd's own status, from its socket (the state dir is under run/).
    pub fn simsd_status(&self) -> Value {
        // Its socket comes a moment after procd reports it running.
        let out = wait("simsd's status socket", || {
            run(Command::new(self.dir.join("usr/sbin/simsd"))
                .arg("--state-dir")
                .arg(self.dir.join("run/sims"))
                .args(["status", "--json"]))
            .ok()
        });
        serde_json::from_str(&out).unwrap()
    }

    /// The per-peer openings (rules with a source address) the instance
    /// registers; the control rule and the moved set are checked apart.
    pub fn firewall_rules(&self) -> Vec<String> {
        let s = self.service();
        s["sims"]["instances"]["simsd"]["data"]["firewall"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| r["src_ip"].is_string())
                    .map(|r| {
                        format!(
                            "{} {} {} {} {}",
                            r["name"].as_str().unwrap_or(""),
                            r["src"].as_str().unwrap_or(""),
                            r["src_ip"].as_str().unwrap_or(""),
                            r["proto"].as_str().unwrap_or(""),
                            r["dest_port"].as_str().unwrap_or("-")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What /sbin/reload_config does after a `uci commit`: procd's
    /// config.change event for the package.
    pub fn config_changed(&self) {
        self.ubus(&[
            "call",
            "service",
            "event",
            r#"{"type":"config.change","data":{"package":"sims"}}"#,
        ])
        .unwrap();
    }
}

fn find_procd(parent: u32) -> Option<u32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        if comm.ends_with("(procd") && ppid == Some(parent) {
            return Some(pid);
        }
        // ow-ns runs unshare, which forks procd: look one level down.
        if ppid == Some(parent) {
            if let Some(p) = find_procd(pid) {
                return Some(p);
            }
        }
    }
    None
}

/// Waits up to 15 s for `f` to give something; panics naming `what`.
pub fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
