//! Host packages the testbed needs, installed on first use so that the
//! README's commands work on a fresh Debian machine.

use std::path::Path;
use std::process::Command;

/// (a program that must exist, the Debian package that brings it)
const TESTBED: &[(&str, &str)] = &[
    ("/usr/sbin/ip", "iproute2"),
    ("/usr/sbin/nft", "nftables"),
    ("/usr/sbin/dnsmasq", "dnsmasq-base"),
    ("/bin/busybox", "busybox-static"),
];

fn present(path: &str) -> bool {
    Path::new(path).exists() || Path::new(&path.replace("/usr/sbin/", "/sbin/")).exists()
}

/// Install the missing testbed packages with apt-get (root only; without
/// root, say what is missing and let the tests skip).
pub fn ensure_testbed_packages() -> Result<(), String> {
    ensure(TESTBED)
}

pub fn ensure(wanted: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(p, _)| !present(p))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "warning: missing {} and not root: namespace tests will skip",
            missing.join(", ")
        );
        return Ok(());
    }
    eprintln!("==> installing {}", missing.join(" "));
    let run = |args: &[&str]| -> Result<(), String> {
        let st = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("apt-get {} failed ({st})", args.join(" ")))
        }
    };
    run(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(missing.iter().copied());
    run(&args)
}
