//! sims-node's .deb with the real dpkg, into an offline root (dpkg --root
//! with chrootless maintainer scripts: the host's own system is not
//! touched): the files and their modes, the conffile, the unit; `remove`
//! keeps the configuration and the node's state, `purge` removes both.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have(tool: &str) -> bool {
    ["/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"]
        .iter()
        .any(|d| Path::new(&format!("{d}{tool}")).exists())
}

/// The sims-node to pack: `SIMS_NODE_BIN`, else the workspace's debug
/// build, else a stand-in script (this test is about the package).
fn binary(tmp: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("SIMS_NODE_BIN") {
        return PathBuf::from(p);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/sims-node");
    if built.is_file() {
        return built;
    }
    let p = tmp.join("sims-node");
    fs::write(&p, "#!/bin/sh\necho sims-node stand-in\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn dpkg(root: &Path, args: &[&str]) -> String {
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-not-root"])
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("dpkg");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dpkg {args:?}: {text}");
    text
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_remove_purge_with_dpkg() {
    if !have("dpkg") || !have("dpkg-deb") {
        eprintln!("SKIPPED: dpkg missing");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("sims-deb-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap();
    let deb = sims_debian::write_deb(&sims_debian::Spec {
        binary: &binary(&tmp),
        arch: "amd64",
        version: env!("CARGO_PKG_VERSION"),
        out_dir: &tmp,
    })
    .unwrap();

    // What dpkg-deb says is inside: owners root, the modes a package has.
    let out = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/sims-node"),
        ("-rw-r--r--", "./lib/systemd/system/sims-node@.service"),
        ("-rw-r--r--", "./etc/default/sims-node"),
        ("-rw-r--r--", "./usr/share/doc/sims-node/NODE.md"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(mode) && l.contains("root/root") && l.ends_with(path)),
            "{path} {mode}:\n{listing}"
        );
    }

    // An empty system for dpkg.
    let root = tmp.join("root");
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(d)).unwrap();
    }
    fs::write(admin.join("status"), "").unwrap();
    fs::write(admin.join("available"), "").unwrap();
    dpkg(&root, &["-i", deb.to_str().unwrap()]);
    assert_eq!(mode(&root.join("usr/bin/sims-node")), 0o755);
    let unit = root.join("lib/systemd/system/sims-node@.service");
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(fs::read_to_string(&unit).unwrap(), sims_debian::UNIT);
    let status = fs::read_to_string(admin.join("status")).unwrap();
    assert!(
        status.contains("Package: sims-node\nStatus: install ok installed"),
        "{status}"
    );
    assert!(
        status.contains(" /etc/default/sims-node "),
        "a conffile: {status}"
    );

    // The service's run left its state (as systemd's StateDirectory would
    // have made it); the user edited the defaults.
    let state = root.join("var/lib/sims-node/wlan0");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("sims-node.state"), b"identity").unwrap();
    let default = root.join("etc/default/sims-node");
    fs::write(&default, "SIMS_NODE_ARGS=\"-i eth0\"\n").unwrap();

    dpkg(&root, &["-r", "sims-node"]);
    assert!(!root.join("usr/bin/sims-node").exists());
    assert!(!unit.exists());
    assert_eq!(
        fs::read_to_string(&default).unwrap(),
        "SIMS_NODE_ARGS=\"-i eth0\"\n",
        "remove keeps the configuration"
    );
    assert!(
        state.join("sims-node.state").exists(),
        "and the node's identity"
    );

    dpkg(&root, &["-P", "sims-node"]);
    assert!(!default.exists(), "purge removes the configuration");
    assert!(!root.join("var/lib/sims-node").exists(), "and the state");
    let status = fs::read_to_string(admin.join("status")).unwrap();
    assert!(!status.contains("Package: sims-node"), "{status}");
    let _ = fs::remove_dir_all(&tmp);
}

/// systemd's own reading of the unit, where systemd-analyze exists: no
/// unknown key, no bad value.
#[test]
fn systemd_analyze_accepts_the_unit() {
    if !have("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze missing");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("sims-unit-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    // verify wants an instance and an executable to exist.
    let unit = tmp.join("sims-node@wlan0.service");
    let text = sims_debian::UNIT.replace("/usr/bin/sims-node", "/bin/true");
    fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Offline, verify complains about what only a booted system has (the
    // device unit, the bus); the unit's own lines must not be named.
    for bad in [
        "Unknown key",
        "Failed to parse",
        "Invalid",
        "Unknown section",
    ] {
        assert!(!text.contains(bad), "{text}");
    }
    eprintln!("systemd-analyze verify: {}", text.trim());
    let _ = fs::remove_dir_all(&tmp);
}
