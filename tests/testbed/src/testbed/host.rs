//! What the host must provide (root, the tools, the binaries) and where
//! the binaries are.

use std::path::{Path, PathBuf};

use crate::sys::{busybox_bin, dnsmasq_bin, ip_bin, nft_bin};

/// The workspace root (this crate lives in `<workspace>/tests/testbed`).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace")
        .to_path_buf()
}

/// `SIMS_BIN_DIR`, else `<target>/debug`.
pub fn default_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SIMS_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"));
    target.join("debug")
}

pub(super) fn default_traffic_bin(bin_dir: &Path) -> PathBuf {
    std::env::var_os("SIMS_TRAFFIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir.join("sims-traffic"))
}

/// Why the testbed cannot run here (not root, tools or binaries missing),
/// or None. `daemons`: also require simsd and sims-node.
pub fn skip_reason(daemons: bool, traffic_bin: Option<&Path>) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    if !Path::new("/run").is_dir() {
        return Some("/run missing".into());
    }
    for (tool, p) in [
        ("ip (iproute2)", ip_bin()),
        ("nft (nftables)", nft_bin()),
        ("dnsmasq (dnsmasq-base)", dnsmasq_bin()),
        ("busybox (busybox-static)", busybox_bin()),
    ] {
        if !p.is_absolute() || !p.is_file() {
            return Some(format!("tool missing: {tool}"));
        }
    }
    let bin_dir = default_bin_dir();
    let traffic = traffic_bin
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_traffic_bin(&bin_dir));
    if !traffic.is_file() {
        return Some(format!("{traffic:?} missing (cargo build -p sims-testbed)"));
    }
    if daemons {
        for b in ["simsd", "sims-node"] {
            if !bin_dir.join(b).is_file() {
                return Some(format!(
                    "{:?} missing: build the daemons (cargo build -p simsd -p sims-node) or set SIMS_BIN_DIR; `cargo xtask test` does both",
                    bin_dir.join(b)
                ));
            }
        }
    }
    None
}
