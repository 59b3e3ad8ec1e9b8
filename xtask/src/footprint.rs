//! `cargo xtask bench footprint`: per router target, the stripped size of
//! `simsd` and `sims-node` (the release build of `cargo xtask build`), and
//! the memory of the agent core idle and with 1,000 bindings, measured by
//! `firmware/sims-proto/examples/footprint.rs` built for the target and run
//! under QEMU user mode (natively for the host's architecture). What each
//! figure means is in that file and in docs/BENCHMARKS.md, "Footprint".
//!
//! The last line is `footprint mipsel_bytes=<n> mipsel_rss_1k_kib=<n>`
//! (simsd's stripped size and the core's peak RSS with 1,000 bindings on
//! mipsel_24kc).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::boards::Board;
use crate::targets::Targets;

pub const BINDINGS: usize = 1000;
/// simsd on mipsel, stripped.
pub const BUDGET_SIZE_BYTES: u64 = 400 * 1000;
/// Peak RSS with 1,000 bindings.
pub const BUDGET_RSS_KIB: u64 = 1536;
/// The package architecture the budget line is about.
const BUDGET_ARCH: &str = "mipsel_24kc";

struct Row {
    board: Board,
    simsd: u64,
    node: u64,
    native: bool,
    /// simsd itself, idle, natively in a network namespace: (VmHWM KiB).
    simsd_idle: Option<u64>,
    idle: BTreeMap<String, u64>,
    loaded: BTreeMap<String, u64>,
}

impl Row {
    /// Peak RSS: VmHWM natively; under QEMU (whose own process VmHWM
    /// would measure) the guest's resident pages, the largest value seen.
    fn rss(&self, m: &BTreeMap<String, u64>) -> u64 {
        let key = if self.native {
            "vmhwm_kib"
        } else {
            "resident_kib"
        };
        m.get(key).copied().unwrap_or(0)
    }
}

/// `footprint-core <what> k=v k=v ...` lines of the example.
fn parse(out: &str, what: &str) -> Result<BTreeMap<String, u64>, String> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("footprint-core {what} ")))
        .ok_or_else(|| format!("no `{what}` line in the footprint output:\n{out}"))?;
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect())
}

pub fn run(t: &mut Targets, boards: &[Board]) -> Result<(), String> {
    let mut rows = Vec::new();
    for b in boards {
        let built = t.build(b)?;
        let size = |n: &str| {
            built
                .sizes
                .iter()
                .find(|(x, _)| x == n)
                .map_or(0, |(_, s)| *s)
        };
        let simsd_idle = if b.runs_natively() {
            match simsd_idle_kib(&built.dir.join("simsd")) {
                Ok(k) => Some(k),
                Err(e) => {
                    println!("    simsd idle not measured: {e}");
                    None
                }
            }
        } else {
            None
        };
        let bin = t.build_example(b, "sims-proto", "footprint")?;
        let n = BINDINGS.to_string();
        println!(
            "==> footprint of the agent core on {} ({n} bindings)",
            b.rust_target
        );
        // Twice, keeping the second: right after the binary is written,
        // the first run's file-backed pages count differently (natively
        // ~90 KiB more VmHWM on x86_64).
        t.run_target(b, &bin, &[&n])?;
        let out = t.run_target(b, &bin, &[&n])?;
        print!("{out}");
        rows.push(Row {
            board: b.clone(),
            simsd: size("simsd"),
            node: size("sims-node"),
            native: b.runs_natively(),
            simsd_idle,
            idle: parse(&out, "idle")?,
            loaded: parse(&out, "loaded")?,
        });
    }
    println!();
    println!(
        "| target | package arch | simsd (B, stripped) | sims-node (B) | simsd idle RSS (KiB) | \
         core RSS idle (KiB) | core RSS, {BINDINGS} bindings (KiB) | heap, {BINDINGS} bindings \
         (KiB) | measured |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.board.rust_target,
            r.board.openwrt_arch,
            r.simsd,
            r.node,
            r.simsd_idle.map_or("-".to_string(), |k| k.to_string()),
            r.rss(&r.idle),
            r.rss(&r.loaded),
            r.loaded
                .get("heap_peak")
                .copied()
                .unwrap_or(0)
                .div_ceil(1024),
            if r.native {
                "native, VmHWM".to_string()
            } else {
                format!("{}, resident pages", r.board.qemu_user)
            }
        );
    }
    if let Some(r) = rows.iter().find(|r| r.board.openwrt_arch == BUDGET_ARCH) {
        let rss = r.rss(&r.loaded);
        let verdict = |ok: bool| if ok { "within budget" } else { "OVER BUDGET" };
        println!();
        println!(
            "budget on {BUDGET_ARCH}: simsd {} B stripped (limit {BUDGET_SIZE_BYTES}): {}; \
             peak RSS with {BINDINGS} bindings {rss} KiB (limit {BUDGET_RSS_KIB}): {}",
            r.simsd,
            verdict(r.simsd <= BUDGET_SIZE_BYTES),
            verdict(rss <= BUDGET_RSS_KIB)
        );
        println!("footprint mipsel_bytes={} mipsel_rss_1k_kib={rss}", r.simsd);
    }
    Ok(())
}

/// Runs the real simsd natively, idle, in a throw-away network namespace
/// (a LAN bridge, a WAN veth, one peer) and returns its VmHWM in KiB.
/// Needs root and iproute2; under QEMU user mode simsd cannot start (no
/// NETLINK_NETFILTER), so only the host's architecture gets this figure.
fn simsd_idle_kib(simsd: &Path) -> Result<u64, String> {
    if !crate::is_root() {
        return Err("needs root (network namespace)".into());
    }
    let ns = format!("sims-fp-{}", std::process::id());
    let ip = |args: &[&str]| -> Result<(), String> {
        let st = Command::new("ip")
            .args(args)
            .status()
            .map_err(|e| format!("ip: {e}"))?;
        st.success()
            .then_some(())
            .ok_or_else(|| format!("ip {} failed", args.join(" ")))
    };
    struct Cleanup(String, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let dir = std::env::temp_dir().join(&ns);
    ip(&["netns", "add", &ns])?;
    let _cleanup = Cleanup(ns.clone(), dir.clone());
    for cmd in [
        "link add br-lan type bridge",
        "link add wan type veth peer name wan-peer",
        "addr add 10.1.0.1/24 dev br-lan",
        "addr add 100.64.1.2/24 dev wan",
        "link set lo up",
        "link set br-lan up",
        "link set wan up",
        "link set wan-peer up",
    ] {
        let mut a = vec!["-n", &ns];
        a.extend(cmd.split(' '));
        ip(&a)?;
    }
    std::fs::create_dir_all(dir.join("state")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let conf = dir.join("sims");
    std::fs::write(
        &conf,
        "config agent 'agent'\n\toption id 'ma-a'\n\toption endpoint '100.64.1.2'\n\
         \tlist lan_prefix '10.1.0.0/24'\n\toption lan_ifname 'br-lan'\n\toption wan_ifname 'wan'\n\n\
         config peer 'beta'\n\toption id 'ma-b'\n\toption endpoint '100.64.2.2'\n\
         \tlist lan_prefix '10.2.0.0/24'\n\toption key '{}'\n"
            .replace("{}", &"5a".repeat(32)),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    // `ip netns exec` execs simsd: the child's pid is simsd's.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(simsd)
        .arg("-c")
        .arg(&conf)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("simsd: {e}"))?;
    let sock = dir.join("state/simsd.sock");
    let t0 = Instant::now();
    while !sock.exists() && t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("simsd exited at start ({st})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past start-up (nft table loaded, tunnels set up), a few idle polls.
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .map_err(|e| format!("simsd status: {e}"));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    status?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc/<simsd>/status".into())
}
