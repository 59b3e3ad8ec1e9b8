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

use std::path::PathBuf;

use sims_openwrt::procd::{wait, Net, Router};
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

#[test]
fn init_script_under_procd() {
    let (Some(kit), Some(bin), true) = (kit(), std::env::var_os("SIMS_BIN_DIR"), is_root()) else {
        eprintln!(
            "SKIPPED: needs root, the OpenWrt kit and SIMS_BIN_DIR (cargo xtask test runs it)"
        );
        return;
    };
    let ow = Router::start(
        kit,
        &PathBuf::from(bin).join("simsd"),
        CONFIG,
        Net::Own,
        None,
        "init",
    );

    ow.router("/etc/init.d/sims enable").unwrap();
    assert!(
        ow.router("test -L /etc/rc.d/S95sims").is_ok(),
        "enable links S95sims"
    );
    // As a router with kmod-tun: /dev/net/tun, then the init script.
    let pid = ow.start_simsd();
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
    let st = ow.simsd_status();
    assert_eq!(st["id"], "ma-a");
    // The peer's tunnel is made at start, before any handover needs it.
    assert_eq!(st["peers"][0]["tunnel_up"], true, "{st}");

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

/// The travel router's node: openwrt-package/sims/files/sims-node.init
/// under the real procd with /etc/config/sims-node. Off by default (the
/// package's config: nothing runs); enabled on the router's wan device,
/// procd runs the real sims-node with the state on flash (/etc/sims-node,
/// 0700), `--router`, respawn and the interface trigger; sims-node answers
/// status there and has made its nft table; disabled again, a reload
/// stops it; stop removes the service.
#[test]
fn node_init_script_under_procd() {
    let (Some(kit), Some(bin), true) = (kit(), std::env::var_os("SIMS_BIN_DIR"), is_root()) else {
        eprintln!(
            "SKIPPED: needs root, the OpenWrt kit and SIMS_BIN_DIR (cargo xtask test runs it)"
        );
        return;
    };
    let bin = PathBuf::from(bin);
    let ow = Router::start(kit, &bin.join("simsd"), "", Net::Own, None, "node");
    let files = repo().join("openwrt-package/sims/files");
    let init = ow.dir.join("etc/init.d/sims-node");
    std::fs::copy(files.join("sims-node.init"), &init).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(bin.join("sims-node"), ow.dir.join("usr/sbin/sims-node")).unwrap();
    let conf = ow.dir.join("etc/config/sims-node");
    std::fs::copy(files.join("sims-node.config"), &conf).unwrap();
    let service = || -> serde_json::Value {
        let out = ow
            .ubus(&[
                "call",
                "service",
                "list",
                r#"{"name":"sims-node","verbose":true}"#,
            ])
            .unwrap();
        serde_json::from_str(&out).unwrap()
    };

    // As shipped: off.
    ow.router("/etc/init.d/sims-node start").unwrap();
    assert!(
        service()["sims-node"].get("instances").is_none(),
        "{}",
        service()
    );

    // Enabled, on the router's WAN device (the kit has no netifd to ask).
    ow.router(
        "uci set sims-node.node.enabled=1 && uci set sims-node.node.device=wan \
         && uci commit sims-node && /etc/init.d/sims-node start",
    )
    .unwrap();
    let s = service();
    let inst = &s["sims-node"]["instances"]["node"];
    assert_eq!(
        inst["command"],
        serde_json::json!([
            "/usr/sbin/sims-node",
            "-i",
            "wan",
            "--state-dir",
            "/etc/sims-node",
            "--run-dir",
            "/var/run/sims-node",
            "--grace-ms",
            "2000",
            "--router"
        ]),
        "{s}"
    );
    assert!(inst["respawn"].is_object(), "{inst}");
    let triggers = s["sims-node"]["triggers"].to_string();
    for want in [
        r#"["eq","package","sims-node"]"#,
        r#"["eq","interface","wwan"]"#,
    ] {
        assert!(triggers.contains(want), "{want} in {triggers}");
    }
    let status = wait("sims-node's status under procd", || {
        ow.router("/usr/sbin/sims-node --run-dir /var/run/sims-node status --json")
            .ok()
    });
    let st: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(st["iface"], "wan", "{st}");
    assert_eq!(st["current"]["addr"], "100.64.1.2", "{st}");
    assert_eq!(
        ow.router("stat -c %a /etc/sims-node").unwrap().trim(),
        "700",
        "the node's identity is owner-only"
    );
    let nat = wait("sims-node's nft table", || {
        ow.router_net("nft list table ip sims_node").ok()
    });
    assert!(nat.contains("snat to 100.64.1.2"), "{nat}");

    // Disabled: a reload stops it.
    ow.router(
        "uci set sims-node.node.enabled=0 && uci commit sims-node && /etc/init.d/sims-node reload",
    )
    .unwrap();
    wait("sims-node to stop when disabled", || {
        service()["sims-node"]
            .get("instances")
            .and_then(|i| i.get("node"))
            .is_none()
            .then_some(())
    });
    ow.router("/etc/init.d/sims-node stop").unwrap();
}
