//! The host side: which tools are there, installing what is missing (apt,
//! as root or through sudo), and running them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Result, VmError};

/// Whether `p` exists.
pub fn have(p: &str) -> bool {
    Path::new(p).exists()
}

/// `name` in PATH, as an absolute path (a name with a `/` as it is, if it
/// is a file).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `name` is in PATH.
pub fn on_path(name: &str) -> bool {
    which(name).is_some()
}

/// Whether we run as root (namespaces, apt-get, ...).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs (as root, with apt-get) what the harness needs and is missing.
pub fn ensure_host_tools() -> Result<()> {
    let checks: &[(&str, bool)] = &[
        ("qemu-system-x86", on_path("qemu-system-x86_64")),
        ("kmod", have("/usr/sbin/depmod") || have("/sbin/depmod")),
        (
            "busybox-static",
            have("/usr/bin/busybox") || have("/bin/busybox"),
        ),
        ("iproute2", have("/usr/sbin/ip") && have("/usr/sbin/tc")),
        ("nftables", have("/usr/sbin/nft")),
        ("dnsmasq-base", have("/usr/sbin/dnsmasq")),
        ("xz-utils", on_path("xz")),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(VmError::Setup(format!(
            "missing packages {}: run `apt-get install {}` as root",
            missing.join(" "),
            missing.join(" ")
        )));
    }
    println!("==> vm: installing {}", missing.join(" "));
    apt_install(&missing).map_err(VmError::Setup)
}

/// `apt-get install` the packages (through sudo when not root),
/// refreshing the lists first if the install fails on stale ones.
pub fn apt_install(pkgs: &[&str]) -> std::result::Result<(), String> {
    let run = |args: &[&str]| -> std::result::Result<(), String> {
        let mut c = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        let st = c
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
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(pkgs.iter().copied());
    if run(&install).is_err() {
        run(&["update", "-qq"])?;
        run(&install)?;
    }
    Ok(())
}

/// Runs `c` (no stdin) and returns its stdout; Err names the command, its
/// status and its stderr.
pub fn output(mut c: Command) -> std::result::Result<String, String> {
    let desc = format!("{c:?}");
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{desc}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{desc}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The host's depmod (Debian has it in /usr/sbin or, older, /sbin).
pub fn depmod_bin() -> &'static str {
    if have("/usr/sbin/depmod") {
        "/usr/sbin/depmod"
    } else {
        "/sbin/depmod"
    }
}

/// The host's modprobe.
pub fn modprobe_bin() -> &'static str {
    if have("/usr/sbin/modprobe") {
        "/usr/sbin/modprobe"
    } else {
        "/sbin/modprobe"
    }
}
