//! OpenWrt's firewall for an agent, compiled by OpenWrt's real fw4 (the
//! kit's): the default `/etc/config/firewall`, the package's uci-defaults
//! (the sims zone), and the rules the init script gives procd for the
//! enabled peers, into the nftables ruleset a router with the package
//! would load. netifd's answers (the interfaces' devices and addresses)
//! come from the kit's ow-ubus-stub, and so does procd's service data
//! here; tests/procd.rs checks that [`service_data`] is what the real
//! procd holds for the real init script.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::{repo, run};

/// An interface as netifd reports it: name, device, IPv4 address/len.
pub struct Interface<'a> {
    pub name: &'a str,
    pub device: &'a str,
    pub addr: &'a str,
    pub mask: u8,
}

/// The firewall rules `/etc/init.d/sims` registers for enabled peers
/// `(id, endpoint)`: the control port from the WAN zone, ipip from each
/// peer's endpoint, and ipip from the set of peers that moved.
pub fn service_rules(peers: &[(&str, &str)], port: u16) -> Value {
    let mut rules = vec![json!({
        "type": "rule", "name": "sims-control", "src": "wan",
        "proto": "udp", "dest_port": port.to_string(), "target": "ACCEPT"
    })];
    for (id, endpoint) in peers {
        rules.push(json!({
            "type": "rule", "name": format!("sims-ipip-{id}"), "src": "wan",
            "src_ip": endpoint, "proto": "4", "target": "ACCEPT"
        }));
    }
    rules.push(json!({
        "type": "ipset", "name": MOVED_SET, "family": "ipv4", "match": ["src_ip"],
        "loadfile": "/var/run/sims/fw4-moved"
    }));
    rules.push(json!({
        "type": "rule", "name": "sims-ipip-moved", "src": "wan",
        "proto": "4", "ipset": MOVED_SET, "target": "ACCEPT"
    }));
    Value::Array(rules)
}

/// The fw4 set of peers' new addresses (simsd fills it).
pub const MOVED_SET: &str = "sims_moved";

/// procd's `service get_data` answer with the sims instance's rules.
pub fn service_data(rules: &Value) -> Value {
    json!({ "sims": { "simsd": { "firewall": rules } } })
}

/// The ruleset fw4 compiles for a router with `interfaces`, OpenWrt's
/// default firewall config plus the package's uci-defaults, and the sims
/// instance's `rules` in procd's service data. `work` is a scratch dir.
pub fn compile(
    kit: &Path,
    work: &Path,
    interfaces: &[Interface],
    rules: &Value,
) -> Result<String, String> {
    let _ = fs::remove_dir_all(work);
    let config = work.join("config");
    let usr_bin = work.join("usr/bin");
    let runtime = work.join("run");
    for d in [&config, &usr_bin, &runtime] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // The kit's utpl is a 5-byte file naming its symlink target.
    std::os::unix::fs::symlink("ucode", usr_bin.join("utpl")).map_err(|e| e.to_string())?;
    fs::copy(
        kit.join("root/etc/config/firewall"),
        config.join("firewall"),
    )
    .map_err(|e| e.to_string())?;
    let ifaces: Vec<Value> = interfaces
        .iter()
        .map(|i| {
            json!({ "interface": i.name, "up": true, "device": i.device, "l3_device": i.device,
                    "ipv4-address": [ { "address": i.addr, "mask": i.mask } ], "data": {} })
        })
        .collect();
    let stub = json!({
        "network.interface": { "dump": { "interface": ifaces } },
        "network.device": { "status": {} },
        "service": { "get_data": service_data(rules) },
    });
    let stub_file = work.join("ubus.json");
    fs::write(&stub_file, stub.to_string()).map_err(|e| e.to_string())?;
    let out = work.join("ruleset.nft");
    let ow_ns = |script: &str, args: &[&Path]| -> Result<String, String> {
        run(Command::new(kit.join("bin/ow-ns"))
            .arg("-c")
            .arg(&config)
            .arg("-r")
            .arg(&runtime)
            .arg("-u")
            .arg(work.join("usr"))
            .args(["--", "sh", "-c", script, "sh"])
            .args(args))
    };
    // As at the package's installation, then as fw4 runs at boot.
    ow_ns(
        "cd \"$(dirname \"$1\")\" && . \"$1\"",
        &[&repo().join("openwrt-package/sims/files/sims.uci-defaults")],
    )?;
    ow_ns(
        "ubusd -s /var/run/ubus/ubus.sock & U=$!
         i=0; while [ ! -S /var/run/ubus/ubus.sock ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
         \"$3\" /var/run/ubus/ubus.sock \"$1\" & S=$!
         i=0; until ubus list network.interface >/dev/null 2>&1; do
           i=$((i+1)); [ $i -gt 50 ] && { echo 'no netifd stub on ubus' >&2; kill $S $U; exit 1; }; sleep 0.1
         done
         fw4 print > \"$2\"; rc=$?
         kill $S $U; exit $rc",
        &[&stub_file, &out, &kit.join("bin/ow-ubus-stub")],
    )?;
    fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))
}

/// A scratch directory for [`compile`].
pub fn work_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sims-fw4-{name}-{}", std::process::id()))
}
