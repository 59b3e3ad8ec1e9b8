//! Host packages the testbed needs, installed on first use so that the
//! README's commands work on a fresh Debian machine.

use std::path::Path;
use std::process::Command;

use sims_vm::host::{apt_install, is_root};

/// (a program that must exist, the Debian package that brings it)
const TESTBED: &[(&str, &str)] = &[
    ("/usr/sbin/ip", "iproute2"),
    ("/usr/sbin/nft", "nftables"),
    ("/usr/sbin/dnsmasq", "dnsmasq-base"),
    ("/bin/busybox", "busybox-static"),
    // Scenario s17 runs an agent with its clock days off.
    (FAKETIME_LIB, "libfaketime"),
];

/// What the test suite needs besides: Chromium for luci-app-sims's
/// browser tests; the DHCP clients laptops run, for sims-node's scenarios
/// with each (s25).
const TEST_ONLY: &[(&str, &str)] = &[
    ("/usr/bin/chromium", "chromium"),
    ("/usr/sbin/dhcpcd", "dhcpcd-base"),
    ("/usr/sbin/dhclient", "isc-dhcp-client"),
    ("/usr/sbin/NetworkManager", "network-manager"),
    ("/usr/bin/dbus-daemon", "dbus-daemon"),
];

/// Where Debian's maintainer scripts ask whether they may start a service
/// (invoke-rc.d, deb-systemd-invoke): while we install, the answer is no.
/// network-manager's would start NetworkManager on the host, which would
/// then manage the machine's own interfaces; the tests run their own, in a
/// namespace.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// libfaketime's preload library (Debian's path on x86_64).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn present(path: &str) -> bool {
    Path::new(path).exists() || Path::new(&path.replace("/usr/sbin/", "/sbin/")).exists()
}

/// Install the missing testbed packages with apt-get (root only; without
/// root, say what is missing and let the tests skip).
pub fn ensure_testbed_packages() -> Result<(), String> {
    ensure(TESTBED)
}

/// The testbed's packages and the test suite's own (`cargo xtask test`).
pub fn ensure_test_packages() -> Result<(), String> {
    ensure(TESTBED)?;
    ensure(TEST_ONLY)
}

fn ensure(wanted: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(p, _)| !present(p))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "warning: missing {} and not root: namespace tests will skip",
            missing.join(", ")
        );
        return Ok(());
    }
    eprintln!("==> installing {}", missing.join(" "));
    // Only a policy of our own is removed afterwards.
    let ours = !Path::new(POLICY_RC_D).exists()
        && std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# sims xtask: no service starts while it installs\nexit 101\n",
        )
        .is_ok();
    if ours {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755));
    }
    let r = apt_install(&missing);
    if ours {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    r
}

/// rustfmt and clippy, which the lint step of `cargo xtask test` runs.
pub fn ensure_rust_components() -> Result<(), String> {
    let listed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output();
    let Ok(out) = listed else {
        return Ok(()); // no rustup: the toolchain is managed elsewhere
    };
    let have = String::from_utf8_lossy(&out.stdout);
    for comp in ["rustfmt", "clippy"] {
        if !have.lines().any(|l| l.starts_with(comp)) {
            let st = Command::new("rustup")
                .args(["component", "add", comp])
                .status()
                .map_err(|e| format!("rustup: {e}"))?;
            if !st.success() {
                return Err(format!("rustup component add {comp} failed"));
            }
        }
    }
    Ok(())
}
