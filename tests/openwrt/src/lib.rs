//! What the tests of SIMS's OpenWrt files share: where the sources and
//! OpenWrt's own tools (the kit in `../shared/openwrt`) are, the
//! templates' key placeholders, and running a program with a clear error.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod browser;
pub mod fw4;
pub mod luci;
pub mod luci_package;
pub mod package;
pub mod procd;

/// The top of the SIMS sources.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// OpenWrt's userland built for this machine (`SIMS_OPENWRT_KIT`, or
/// `../shared/openwrt` beside the sources), if it is there.
pub fn kit() -> Option<PathBuf> {
    let dir = std::env::var_os("SIMS_OPENWRT_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/openwrt"));
    dir.join("root/usr/sbin/uci").exists().then_some(dir)
}

/// Running as root (the namespaces of the kit's `ow-ns` need it)?
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// 32 random bytes as 64 hex digits, like `simsd keygen`.
pub fn fresh_key() -> String {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The placeholders `<key a:b>` of a template, in order of appearance.
pub fn placeholders(text: &str) -> Vec<String> {
    text.match_indices("'<key ")
        .filter_map(|(i, _)| {
            let rest = &text[i + 1..];
            rest.find('>').map(|j| rest[..=j].to_string())
        })
        .collect()
}

/// `text` with each placeholder replaced by the key `keys` holds for it
/// (a fresh one the first time: both sides of a pair get the same).
pub fn keyed(text: &str, keys: &mut BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for p in placeholders(text) {
        let k = keys.entry(p.clone()).or_insert_with(fresh_key).clone();
        out = out.replace(&p, &k);
    }
    out
}

/// Runs `cmd`; its stdout, or an error with its status and stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `uci show sims` of the kit's libuci on the config file `file`.
pub fn uci_show(kit: &Path, file: &Path) -> Result<BTreeMap<String, String>, String> {
    uci_show_config(kit, file, "sims")
}

/// `uci show <name>` of the kit's libuci on `file` as config `name`:
/// `key=value` lines, values unquoted.
pub fn uci_show_config(
    kit: &Path,
    file: &Path,
    name: &str,
) -> Result<BTreeMap<String, String>, String> {
    Ok(uci_show_text(kit, file, name)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect())
}

/// What `uci show <name>` of the kit's libuci prints for `file` as config
/// `name`, or its error.
pub fn uci_show_text(kit: &Path, file: &Path, name: &str) -> Result<String, String> {
    // One directory per call: tests run in parallel threads.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let conf = std::env::temp_dir().join(format!("sims-uci-{name}-{}-{n}", std::process::id()));
    let delta = conf.join(".delta");
    fs::create_dir_all(&delta).map_err(|e| e.to_string())?;
    fs::copy(file, conf.join(name)).map_err(|e| e.to_string())?;
    let out = run(Command::new(kit.join("root/usr/sbin/uci"))
        .arg("-c")
        .arg(&conf)
        .arg("-t")
        .arg(&delta)
        .args(["show", name]));
    let _ = fs::remove_dir_all(&conf);
    out
}

/// What simsd reads from `text` (its UCI reader), printed as `uci show
/// <name>` prints it.
pub fn simsd_show(text: &str, name: &str) -> Result<String, (usize, String)> {
    let sections = simsd::uci::parse(text)?;
    let mut out = simsd::uci::show(&sections, name).join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}
