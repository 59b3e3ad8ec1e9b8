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
use std::time::Duration;

use sims_vm::host::is_root;
use sims_vm::{Share, Spec};

use super::{Board, Targets};
use crate::cargo::workspace;

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
    /// simsd itself (peak RSS, KiB: tests/vm/footprint.sh): idle, and with the bindings restored;
    /// natively in a network namespace or in the board's guest VM.
    simsd_rss: Option<(u64, u64)>,
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

/// The `<tag> <what> k=v k=v ...` line of `out` (`footprint-core` from the
/// example, `footprint-simsd` from tests/vm/footprint.sh).
fn parse(out: &str, tag: &str, what: &str) -> Result<BTreeMap<String, u64>, String> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{tag} {what} ")))
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
        let bin = t.build_example(b, "sims-proto", "footprint")?;
        let n = BINDINGS.to_string();
        println!(
            "==> footprint of the agent core on {} ({n} bindings)",
            b.rust_target
        );
        // Twice, keeping the second: right after the binary is written,
        // the first run's file-backed pages count differently (natively
        // ~90 KiB more VmHWM on x86_64).
        // The second run also saves the agent's state for simsd.
        let work = Work::new(b)?;
        let state = work.0.join("simsd.state");
        let state_arg = state.to_string_lossy().into_owned();
        t.run_target(b, &bin, &[&n])?;
        let out = t.run_target(b, &bin, &[&n, "--save", &state_arg])?;
        print!("{out}");
        let simsd_rss = match simsd_rss(b, &built.dir.join("simsd"), &work.0) {
            Ok(m) => Some(m),
            Err(e) => {
                println!("    simsd RSS not measured on {}: {e}", b.rust_target);
                None
            }
        };
        rows.push(Row {
            board: b.clone(),
            simsd: size("simsd"),
            node: size("sims-node"),
            native: b.runs_natively(),
            simsd_rss,
            idle: parse(&out, "footprint-core", "idle")?,
            loaded: parse(&out, "footprint-core", "loaded")?,
        });
    }
    println!();
    println!(
        "| target | package arch | simsd (B, stripped) | sims-node (B) | simsd RSS idle (KiB) | \
         simsd RSS, {BINDINGS} bindings (KiB) | simsd measured | core RSS idle (KiB) | core RSS, \
         {BINDINGS} bindings (KiB) | heap, {BINDINGS} bindings (KiB) | core measured |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |");
    for r in &rows {
        let (idle, loaded) = match r.simsd_rss {
            Some((i, l)) => (i.to_string(), l.to_string()),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {} | {} | {idle} | {loaded} | {} | {} | {} | {} | {} |",
            r.board.rust_target,
            r.board.openwrt_arch,
            r.simsd,
            r.node,
            match (&r.simsd_rss, r.native, &r.board.guest) {
                (None, _, _) => "-".to_string(),
                (Some(_), true, _) => "native, network namespace".to_string(),
                (Some(_), false, Some(g)) => format!(
                    "{} -M {} guest ({})",
                    r.board.qemu_system, r.board.qemu_machine, g.debian_arch
                ),
                (Some(_), false, None) => "?".to_string(),
            },
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
        // simsd's own figure where it was measured; else the core's.
        let rss = r.simsd_rss.map_or(r.rss(&r.loaded), |(_, l)| l);
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

/// A scratch directory for one board's footprint run, removed on drop.
struct Work(PathBuf);

impl Work {
    fn new(b: &Board) -> Result<Work, String> {
        let d = std::env::temp_dir().join(format!("sims-fp-{}-{}", std::process::id(), b.name));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(Work(d))
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// simsd's config for the footprint: the agent and the peer of
/// sims-proto's footprint example (ids, addresses, prefixes, key), with
/// room for its bindings.
fn footprint_config() -> String {
    format!(
        "config agent 'agent'\n\toption id 'ma-a'\n\toption endpoint '100.64.1.2'\n\
         \tlist lan_prefix '10.1.0.0/16'\n\toption lan_ifname 'br-lan'\n\toption wan_ifname 'wan'\n\
         \toption max_bindings '{n}'\n\toption max_per_peer '{n}'\n\toption max_credentials '{n}'\n\n\
         config peer 'beta'\n\toption id 'ma-b'\n\toption endpoint '100.64.2.2'\n\
         \tlist lan_prefix '10.2.0.0/16'\n\toption key '{key}'\n",
        n = BINDINGS.next_power_of_two(),
        key = "42".repeat(32)
    )
}

/// `footprint-simsd <what> peak_kib=<k> ... bindings=<n>` of
/// tests/vm/footprint.sh.
fn simsd_line(out: &str, what: &str) -> Result<u64, String> {
    let m = parse(out, "footprint-simsd", what)?;
    if what == "loaded" && m.get("bindings").copied() != Some(BINDINGS as u64) {
        return Err(format!(
            "simsd restored {:?} of {BINDINGS} bindings",
            m.get("bindings")
        ));
    }
    m.get("peak_kib")
        .copied()
        .ok_or_else(|| format!("no peak_kib in the {what} line"))
}

/// The real simsd's peak RSS, idle and with the example's saved bindings
/// (`work/simsd.state`) restored and installed in the kernel, by
/// tests/vm/footprint.sh: natively in a throw-away network namespace, or
/// in the board's guest VM. QEMU user mode cannot run simsd (no
/// NETLINK_NETFILTER), so a board without either has no such figure.
fn simsd_rss(b: &Board, simsd: &Path, work: &Path) -> Result<(u64, u64), String> {
    let ws = workspace();
    let script = sims_vm::script("footprint.sh");
    let conf = work.join("sims.conf");
    std::fs::write(&conf, footprint_config()).map_err(|e| format!("{}: {e}", conf.display()))?;
    let out = if b.runs_natively() {
        if !is_root() {
            return Err("needs root (network namespace)".into());
        }
        let ns = format!("sims-fp-{}", std::process::id());
        struct Netns(String);
        impl Drop for Netns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ok = Command::new("ip").args(["netns", "add", &ns]).status();
        if !ok.is_ok_and(|s| s.success()) {
            return Err(format!("ip netns add {ns} failed"));
        }
        let _ns = Netns(ns.clone());
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "sh"])
            .arg(&script)
            .arg(simsd)
            .arg(&conf)
            .arg(work.join("simsd.state"))
            .arg(work.join("run"))
            .arg(BINDINGS.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("footprint.sh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "footprint.sh failed ({}):\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        text
    } else {
        let f = b
            .vm_guest()
            .ok_or("no guest VM for this board (vm_* keys)")?;
        let mut spec = Spec::for_guest(&ws, PathBuf::new(), "run.sh", f);
        let share = Share::new(&spec.cache, "footprint")?;
        spec.share = share.dir.clone();
        spec.echo = std::env::var_os("SIMS_VM_VERBOSE").is_some();
        spec.timeout = Duration::from_secs(600);
        share.add_bin(simsd, "simsd")?;
        for (name, src) in [
            ("footprint.sh", script.as_path()),
            ("sims.conf", conf.as_path()),
            ("simsd.state", work.join("simsd.state").as_path()),
        ] {
            std::fs::copy(src, share.dir.join(name))
                .map_err(|e| format!("{}: {e}", src.display()))?;
        }
        share.write(
            "run.sh",
            &format!(
                "exec sh /mnt/host/footprint.sh /mnt/host/bin/simsd /mnt/host/sims.conf \
                 /mnt/host/simsd.state /tmp/fp {BINDINGS}\n"
            ),
        )?;
        let out = sims_vm::run(&spec).map_err(|e| e.to_string())?;
        out.console.join("\n")
    };
    for l in out.lines().filter(|l| l.starts_with("footprint-simsd")) {
        println!("    {l}");
    }
    Ok((simsd_line(&out, "idle")?, simsd_line(&out, "loaded")?))
}
