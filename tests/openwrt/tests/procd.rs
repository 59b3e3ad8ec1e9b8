//! The package's init script (openwrt-package/sims/files/sims.init) under
//! OpenWrt's real procd, as PID 1 of a PID namespace that looks like an
//! OpenWrt root (the kit's `ow-ns -p`), inside a network namespace of its
//! own (a br-lan bridge and a wan veth) where the real simsd runs: what
//! the script registers (command, respawn, netdev, reload signal,
//! triggers, the firewall rules per enabled peer), `uci commit` + the
//! config.change event reloading simsd in place (same process), respawn
//! after kill -9, `enabled '0'`, stop; and OpenWrt's real fw4 compiling
//! the default firewall, the package's uci-defaults and the rules procd
//! holds for simsd into a ruleset nft accepts, whose openings follow the
//! peers (netifd's answers to fw4 come from the kit's ow-ubus-stub).
//!
//! Needs root, the kit and a built simsd (`SIMS_BIN_DIR`): `cargo xtask
//! test` runs it after building the daemons; without them it says
//! SKIPPED. The kit has no `/sbin/validate_data` (procd's validation
//! helper) and no `/lib/functions/network.sh`: the script's validation
//! rules and device check are not exercised here.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sims_openwrt::*;

const CONFIG: &str = "config agent 'agent'
\toption enabled '1'
\toption id 'ma-a'
\toption endpoint '100.64.1.2'
\tlist lan_prefix '10.1.0.0/24'
\toption lan_ifname 'br-lan'
\toption wan_ifname 'wan'
\toption backend 'userspace'

config peer 'ma_b'
\toption id 'ma-b'
\toption endpoint '100.64.2.2'
\tlist lan_prefix '10.2.0.0/24'
\toption key '1111111111111111111111111111111111111111111111111111111111111112'
";

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
struct OpenWrt {
    kit: PathBuf,
    dir: PathBuf,
    netns: String,
    ow_ns: Child,
    procd: u32,
}

impl Drop for OpenWrt {
    fn drop(&mut self) {
        // procd as PID 1: its end ends the PID namespace and all in it.
        let _ = Command::new("kill").arg(self.procd.to_string()).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) && matches!(self.ow_ns.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.ow_ns.kill();
        let _ = self.ow_ns.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &str) -> Result<String, String> {
    run(Command::new("sh").args(["-c", cmd]))
}

impl OpenWrt {
    fn start(kit: PathBuf, simsd: &Path) -> OpenWrt {
        let id = std::process::id();
        let dir = std::env::temp_dir().join(format!("sims-procd-{id}"));
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
        fs::write(dir.join("etc/config/sims"), CONFIG).unwrap();
        fs::write(
            dir.join("etc/inittab"),
            "::sysinit:/etc/init.d/rcS S boot\n::shutdown:/etc/init.d/rcS K shutdown\n",
        )
        .unwrap();
        let netns = format!("sims-procd-{id}");
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
        let ow_ns = Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(kit.join("bin/ow-ns"))
            .arg("-p")
            .arg("-r")
            .arg(dir.join("run"))
            .arg("-e")
            .arg(dir.join("etc"))
            .arg("-u")
            .arg(dir.join("usr"))
            .args(["--", "/sbin/procd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ow = OpenWrt {
            kit,
            dir,
            netns,
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

    fn ubus(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(self.kit.join("root/usr/bin/ubus"))
            .arg("-s")
            .arg(self.dir.join("run/ubus/ubus.sock"))
            .args(args))
    }

    /// `ubus call service list` for sims (verbose: with its triggers).
    fn service(&self) -> Value {
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
    fn router(&self, cmd: &str) -> Result<String, String> {
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

    /// The ruleset OpenWrt's fw4 compiles there: the default firewall, the
    /// package's uci-defaults, and the rules procd holds for simsd; nft
    /// must accept it.
    fn fw4_ruleset(&self) -> String {
        self.router(
            "fw4 print > /tmp/sims-fw4.nft && nft -c -f /tmp/sims-fw4.nft && cat /tmp/sims-fw4.nft",
        )
        .unwrap_or_else(|e| panic!("fw4: {e}"))
    }

    fn simsd_pid(&self) -> Option<u64> {
        let s = self.service();
        let i = &s["sims"]["instances"]["simsd"];
        (i["running"] == true).then(|| i["pid"].as_u64()).flatten()
    }

    /// simsd's own status, from its socket (the state dir is under run/).
    fn simsd_status(&self) -> Value {
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
    fn firewall_rules(&self) -> Vec<String> {
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
    fn config_changed(&self) {
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

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
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

#[test]
fn init_script_under_procd() {
    let (Some(kit), Some(bin), true) = (kit(), std::env::var_os("SIMS_BIN_DIR"), is_root()) else {
        eprintln!(
            "SKIPPED: needs root, the OpenWrt kit and SIMS_BIN_DIR (cargo xtask test runs it)"
        );
        return;
    };
    let ow = OpenWrt::start(kit, &PathBuf::from(bin).join("simsd"));

    ow.router("/etc/init.d/sims enable").unwrap();
    assert!(
        ow.router("test -L /etc/rc.d/S95sims").is_ok(),
        "enable links S95sims"
    );
    ow.router("/etc/init.d/sims start").unwrap();
    let pid = wait("simsd to run", || ow.simsd_pid());
    let s = ow.service();
    let inst = &s["sims"]["instances"]["simsd"];
    assert_eq!(
        inst["command"],
        serde_json::json!([
            "/usr/sbin/simsd",
            "-c",
            "/etc/config/sims",
            "--state-dir",
            "/var/run/sims"
        ])
    );
    assert!(inst["respawn"].is_object(), "{inst}");
    assert_eq!(inst["netdev"], serde_json::json!(["br-lan", "wan"]));
    assert_eq!(inst["reload_signal"], 1, "SIGHUP, not a restart");
    let triggers = s["sims"]["triggers"].to_string();
    for want in [
        r#"["eq","package","sims"]"#,
        r#"["eq","interface","lan"]"#,
        r#"["eq","interface","wan"]"#,
    ] {
        assert!(triggers.contains(want), "{want} in {triggers}");
    }
    assert_eq!(ow.firewall_rules(), ["sims-ipip-ma-b wan 100.64.2.2 4 -"]);
    // What the testbed's fw4 compiles from (sims_openwrt::fw4) is what the
    // real procd holds for the real init script.
    assert_eq!(
        inst["data"]["firewall"],
        sims_openwrt::fw4::service_rules(&[("ma-b", "100.64.2.2")], 4434)
    );
    assert_eq!(ow.simsd_status()["id"], "ma-a");

    // The real fw4 compiles the service data into openings for ma-b only,
    // and the uci-defaults' zone into forwarding for the tunnels.
    ow.router("cd /etc && sh ./90-sims").unwrap();
    ow.router(&format!(
        "{} /var/run/ubus/ubus.sock /etc/netifd.json >/dev/null 2>&1 & \
         i=0; until ubus list network.interface >/dev/null 2>&1; do \
           i=$((i+1)); [ $i -gt 50 ] && exit 1; sleep 0.1; done",
        ow.kit.join("bin/ow-ubus-stub").display()
    ))
    .expect("the netifd stub on ubus");
    let rules = ow.fw4_ruleset();
    for want in [
        "udp dport 4434 counter accept comment \"!fw4: ubus:sims[simsd] rule 0\"",
        "meta l4proto 4 ip saddr 100.64.2.2 counter accept",
        "set sims_moved {",
        "meta l4proto 4 ip saddr @sims_moved counter accept",
        "define sims_devices = { \"sims-*\" }",
        "define lan_devices = { \"br-lan\" }",
        "define wan_devices = { \"wan\" }",
        "jump accept_to_sims comment \"!fw4: Accept lan to sims forwarding\"",
        "jump accept_to_lan comment \"!fw4: Accept sims to lan forwarding\"",
        "jump accept_to_wan comment \"!fw4: Accept sims to wan forwarding\"",
    ] {
        assert!(
            rules.contains(want),
            "fw4's ruleset lacks {want:?}:\n{rules}"
        );
    }
    assert!(!rules.contains("100.64.3.2"));

    // A peer added with uci: simsd reloads in place, and its openings come.
    ow.router(
        "uci set sims.ma_c=peer && uci set sims.ma_c.id=ma-c \
         && uci set sims.ma_c.endpoint=100.64.3.2 \
         && uci add_list sims.ma_c.lan_prefix=10.3.0.0/24 \
         && uci set sims.ma_c.key=2222222222222222222222222222222222222222222222222222222222222223 \
         && uci commit sims",
    )
    .unwrap();
    ow.config_changed();
    wait("simsd to know ma-c", || {
        let st = ow.simsd_status();
        (st["peers"].as_array().map(Vec::len) == Some(2)).then_some(())
    });
    assert_eq!(
        ow.simsd_pid(),
        Some(pid),
        "reloaded in place, not restarted"
    );
    assert_eq!(ow.firewall_rules().len(), 2);
    assert!(ow
        .fw4_ruleset()
        .contains("meta l4proto 4 ip saddr 100.64.3.2 counter accept"));
    // A peer disabled: its openings go.
    ow.router("uci set sims.ma_b.enabled=0 && uci commit sims")
        .unwrap();
    ow.config_changed();
    wait("ma-b's openings to go", || {
        let r = ow.firewall_rules();
        (r.len() == 1 && r.iter().all(|x| x.contains("ma-c"))).then_some(())
    });
    assert!(!ow.fw4_ruleset().contains("100.64.2.2"), "ma-b closed");
    assert_eq!(ow.simsd_pid(), Some(pid));

    // kill -9 (procd's pids are the PID namespace's): procd starts it
    // again, after its respawn timeout (5 s).
    ow.router(&format!("kill -9 {pid}")).unwrap();
    let again = wait("procd to respawn simsd", || {
        ow.simsd_pid().filter(|p| *p != pid)
    });
    assert_ne!(again, pid);

    // Disabled: a reload stops it.
    ow.router("uci set sims.agent.enabled=0 && uci commit sims")
        .unwrap();
    ow.config_changed();
    wait("simsd to stop when disabled", || {
        ow.simsd_pid().is_none().then_some(())
    });
    ow.router("uci set sims.agent.enabled=1 && uci commit sims && /etc/init.d/sims start")
        .unwrap();
    wait("simsd to run again", || ow.simsd_pid());
    ow.router("/etc/init.d/sims stop").unwrap();
    wait("the service to go", || {
        ow.service()["sims"]
            .get("instances")
            .is_none()
            .then_some(())
    });
}
