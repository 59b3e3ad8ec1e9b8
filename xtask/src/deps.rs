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
/// browser tests.
const TEST_ONLY: &[(&str, &str)] = &[("/usr/bin/chromium", "chromium")];

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
    apt_install(&missing)
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
