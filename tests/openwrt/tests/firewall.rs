//! The package's uci-defaults script (files/sims.uci-defaults) on
//! OpenWrt's default /etc/config/firewall, run as on a router (the kit's
//! `ow-ns`, its uci): the sims zone and its three forwardings are added
//! once; a second run changes nothing; what an operator already has is
//! left alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sims_openwrt::*;

/// Runs the uci-defaults script with `conf` as /etc/config. One at a
/// time: uci keeps its uncommitted changes in /tmp/.uci, which the kit's
/// namespaces share with the host, so two runs at once would mix them.
fn uci_defaults(kit: &Path, conf: &Path) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run(Command::new(kit.join("bin/ow-ns"))
        .arg("-c")
        .arg(conf)
        .args(["--", "sh"])
        .arg(repo().join("openwrt-package/sims/files/sims.uci-defaults")))
    .unwrap();
}

fn scratch(name: &str, firewall: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sims-fw-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("firewall"), firewall).unwrap();
    d
}

#[test]
fn uci_defaults_add_the_sims_zone_once() {
    let (Some(kit), true) = (kit(), is_root()) else {
        eprintln!("SKIPPED: needs root and the OpenWrt kit");
        return;
    };
    let default = fs::read_to_string(kit.join("root/etc/config/firewall")).unwrap();
    let conf = scratch("default", &default);
    uci_defaults(&kit, &conf);
    let uci = uci_show_config(&kit, &conf.join("firewall"), "firewall").unwrap();
    let get = |k: &str| uci.get(k).map(String::as_str).unwrap_or("");
    assert_eq!(get("firewall.sims"), "zone");
    assert_eq!(get("firewall.sims.name"), "sims");
    assert_eq!(get("firewall.sims.device"), "sims-+");
    assert_eq!(get("firewall.sims.masq"), "0");
    for (src, dest) in [("lan", "sims"), ("sims", "lan"), ("sims", "wan")] {
        let sec = format!("firewall.{src}_{dest}");
        assert_eq!(get(&sec), "forwarding", "{sec}");
        assert_eq!(
            (get(&format!("{sec}.src")), get(&format!("{sec}.dest"))),
            (src, dest)
        );
    }
    // The rest of OpenWrt's defaults is still there.
    assert_eq!(get("firewall.@zone[0].name"), "lan");
    assert_eq!(get("firewall.@zone[1].masq"), "1");
    // Once: a second run changes nothing.
    let once = fs::read_to_string(conf.join("firewall")).unwrap();
    uci_defaults(&kit, &conf);
    assert_eq!(fs::read_to_string(conf.join("firewall")).unwrap(), once);
    let _ = fs::remove_dir_all(&conf);
}

#[test]
fn uci_defaults_leave_an_operators_zone_alone() {
    let (Some(kit), true) = (kit(), is_root()) else {
        eprintln!("SKIPPED: needs root and the OpenWrt kit");
        return;
    };
    // The hand-made zone of docs/CONFIG.md §7 (before the package did it),
    // with the operator's own choice of input policy, and one forwarding.
    let mine =
        "config zone\n\toption name 'sims'\n\tlist device 'sims-+'\n\toption input 'ACCEPT'\n\n\
                config forwarding\n\toption src 'lan'\n\toption dest 'sims'\n";
    let conf = scratch("mine", mine);
    uci_defaults(&kit, &conf);
    let uci = uci_show_config(&kit, &conf.join("firewall"), "firewall").unwrap();
    let zones: Vec<_> = uci
        .iter()
        .filter(|(k, v)| k.ends_with(".name") && *v == "sims")
        .collect();
    assert_eq!(zones.len(), 1, "one sims zone: {uci:?}");
    assert_eq!(
        uci["firewall.@zone[0].input"], "ACCEPT",
        "the operator's policy"
    );
    // Named or anonymous (`@forwarding[i]`), as `uci show` prints them.
    let forwardings = |src: &str, dest: &str| {
        uci.iter()
            .filter(|(k, v)| *v == "forwarding" && k.matches('.').count() == 1)
            .filter(|(k, _)| {
                uci.get(&format!("{k}.src")).map(String::as_str) == Some(src)
                    && uci.get(&format!("{k}.dest")).map(String::as_str) == Some(dest)
            })
            .count()
    };
    assert_eq!(forwardings("lan", "sims"), 1, "not added twice");
    assert_eq!(forwardings("sims", "lan"), 1);
    assert_eq!(forwardings("sims", "wan"), 1);
    let _ = fs::remove_dir_all(&conf);
}
