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
        let bin = t.build_example(b, "sims-proto", "footprint")?;
        let n = BINDINGS.to_string();
        println!(
            "==> footprint of the agent core on {} ({n} bindings)",
            b.rust_target
        );
        let out = t.run_target(b, &bin, &[&n])?;
        print!("{out}");
        rows.push(Row {
            board: b.clone(),
            simsd: size("simsd"),
            node: size("sims-node"),
            native: b.runs_natively(),
            idle: parse(&out, "idle")?,
            loaded: parse(&out, "loaded")?,
        });
    }
    println!();
    println!(
        "| target | package arch | simsd (B, stripped) | sims-node (B) | core RSS idle (KiB) | \
         core RSS, {BINDINGS} bindings (KiB) | heap, {BINDINGS} bindings (KiB) | measured |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.board.rust_target,
            r.board.openwrt_arch,
            r.simsd,
            r.node,
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
