//! sims-node's Debian package: `sims-node_<version>_<arch>.deb`, built
//! with `dpkg-deb` from the files in `firmware/sims-node/debian/` (the
//! systemd unit `sims-node@.service`, `/etc/default/sims-node`, the
//! maintainer scripts) and a sims-node binary; and the unit read as the
//! testbed needs it ([`Unit`]), to run sims-node under the unit's
//! restrictions where systemd cannot run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit, as shipped.
pub const UNIT: &str = include_str!("../../../firmware/sims-node/debian/sims-node@.service");
const DEFAULT: &str = include_str!("../../../firmware/sims-node/debian/sims-node.default");
const POSTINST: &str = include_str!("../../../firmware/sims-node/debian/postinst");
const PRERM: &str = include_str!("../../../firmware/sims-node/debian/prerm");
const POSTRM: &str = include_str!("../../../firmware/sims-node/debian/postrm");
const NODE_MD: &str = include_str!("../../../docs/NODE.md");
/// The unit's name: an instance per interface.
pub const UNIT_NAME: &str = "sims-node@.service";

/// What a package is made of.
pub struct Spec<'a> {
    /// The sims-node binary (a static musl build for `amd64`).
    pub binary: &'a Path,
    /// Debian's architecture name (`amd64`, `arm64`).
    pub arch: &'a str,
    pub version: &'a str,
    /// Where the .deb is written.
    pub out_dir: &'a Path,
}

fn write(p: &Path, text: &[u8], mode: u32) -> Result<(), String> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

/// Builds the package; returns its path.
pub fn write_deb(s: &Spec) -> Result<PathBuf, String> {
    let root = s.out_dir.join(format!("sims-node-deb-{}", s.arch));
    let _ = fs::remove_dir_all(&root);
    let bin = fs::read(s.binary).map_err(|e| format!("{}: {e}", s.binary.display()))?;
    write(&root.join("usr/bin/sims-node"), &bin, 0o755)?;
    write(
        &root.join("lib/systemd/system").join(UNIT_NAME),
        UNIT.as_bytes(),
        0o644,
    )?;
    write(
        &root.join("etc/default/sims-node"),
        DEFAULT.as_bytes(),
        0o644,
    )?;
    let doc = root.join("usr/share/doc/sims-node");
    write(&doc.join("NODE.md"), NODE_MD.as_bytes(), 0o644)?;
    write(
        &doc.join("copyright"),
        b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
          Upstream-Name: sims\nFiles: *\nLicense: GPL-2.0-only\n \
          On Debian systems the full text is in /usr/share/common-licenses/GPL-2.\n",
        0o644,
    )?;
    let installed_kib = (bin.len() + UNIT.len() + DEFAULT.len() + NODE_MD.len()) / 1024 + 1;
    let control = format!(
        "Package: sims-node\n\
         Version: {}\n\
         Architecture: {}\n\
         Maintainer: SIMS developers <sims@example.org>\n\
         Installed-Size: {installed_kib}\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://example.org/sims\n\
         Description: SIMS mobile node: keep connections alive across hotspots\n \
         sims-node keeps a laptop's open TCP connections alive when it moves\n \
         between Wi-Fi hotspots (or docks and undocks) of providers that run\n \
         SIMS agents: the few long-lived old connections are relayed by the\n \
         old network's router, new ones use the new address directly.\n \
         Enable it per interface: systemctl enable --now sims-node@wlan0\n",
        s.version, s.arch
    );
    let deb_dir = root.join("DEBIAN");
    write(&deb_dir.join("control"), control.as_bytes(), 0o644)?;
    write(
        &deb_dir.join("conffiles"),
        b"/etc/default/sims-node\n",
        0o644,
    )?;
    for (name, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        write(&deb_dir.join(name), text.as_bytes(), 0o755)?;
    }
    let out = s
        .out_dir
        .join(format!("sims-node_{}_{}.deb", s.version, s.arch));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&out)
        .output()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    if !st.status.success() {
        return Err(format!(
            "dpkg-deb --build: {}{}",
            String::from_utf8_lossy(&st.stdout),
            String::from_utf8_lossy(&st.stderr)
        ));
    }
    let _ = fs::remove_dir_all(&root);
    Ok(out)
}

/// The [Service] settings of the unit the testbed reproduces.
#[derive(Debug, Default)]
pub struct Unit {
    /// ExecStart's words, `%i` replaced by the instance.
    pub exec: Vec<String>,
    pub capabilities: Vec<String>,
    pub state_directory: Option<String>,
    pub runtime_directory: Option<String>,
    pub protect_system: Option<String>,
    pub private_tmp: bool,
    pub no_new_privileges: bool,
    pub umask: Option<String>,
}

impl Unit {
    /// The shipped unit's [Service] section for `instance`; an unknown key
    /// of those read is an error (so a change to the unit that the
    /// testbed would not reproduce is noticed).
    pub fn parse(text: &str, instance: &str) -> Result<Unit, String> {
        let mut u = Unit::default();
        let mut in_service = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{UNIT_NAME}:{}: not key=value: {line}", n + 1))?;
            let v = v.replace("%i", instance).replace("%I", instance);
            match k {
                "ExecStart" => u.exec = v.split_whitespace().map(String::from).collect(),
                "CapabilityBoundingSet" => {
                    u.capabilities = v.split_whitespace().map(String::from).collect()
                }
                "StateDirectory" => u.state_directory = Some(v),
                "RuntimeDirectory" => u.runtime_directory = Some(v),
                "ProtectSystem" => u.protect_system = Some(v),
                "PrivateTmp" => u.private_tmp = v == "yes",
                "NoNewPrivileges" => u.no_new_privileges = v == "yes",
                "UMask" => u.umask = Some(v),
                _ => {}
            }
        }
        if u.exec.is_empty() {
            return Err(format!("{UNIT_NAME}: no ExecStart"));
        }
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_unit_is_hardened_and_keeps_its_state() {
        let u = Unit::parse(UNIT, "wlan0").unwrap();
        assert_eq!(u.exec[0], "/usr/bin/sims-node");
        assert!(
            u.exec.windows(2).any(|w| w == ["-i", "wlan0"]),
            "{:?}",
            u.exec
        );
        assert!(
            u.exec
                .windows(2)
                .any(|w| w == ["--state-dir", "/var/lib/sims-node/wlan0"]),
            "{:?}",
            u.exec
        );
        assert!(u
            .exec
            .windows(2)
            .any(|w| w == ["--run-dir", "/run/sims-node/wlan0"]));
        assert_eq!(u.capabilities, ["CAP_NET_ADMIN", "CAP_NET_RAW"]);
        assert_eq!(u.state_directory.as_deref(), Some("sims-node/wlan0"));
        assert_eq!(u.runtime_directory.as_deref(), Some("sims-node/wlan0"));
        assert_eq!(u.protect_system.as_deref(), Some("strict"));
        assert!(u.private_tmp && u.no_new_privileges);
        assert!(
            !UNIT.contains("\nProtectKernelTunables=yes"),
            "sims-node writes arp sysctls"
        );
    }
}
