//! The router-target commands of xtask (docs/TARGETS.md):
//!
//! * `build --target <triple> | --all` — stripped release `simsd` and
//!   `sims-node` in `target/openwrt/<openwrt arch>/`, installing the
//!   toolchain pieces a target needs;
//! * `test --target <triple> [--target ...] | --all [-- <libtest args>]` —
//!   the firmware's unit and protocol tests under QEMU user mode (natively
//!   for x86_64), the release build, and its binaries' `--version` under
//!   QEMU; `cargo xtask test` runs this for every board unless
//!   `--no-targets`;
//! * `test vm --target <triple>... | --all [-- <libtest args>]` — the agent
//!   scenarios (all of them unless filtered) in the system guest of each
//!   board that has one (`vm_*` keys: Malta mipsel, virt aarch64), with
//!   the release daemons and the cross-built scenario tests, kernel ipip
//!   on every agent; `cargo xtask test` runs this for every such board
//!   after the x86_64 VM suite;
//! * `bench footprint [--target <triple>]...` — sizes and peak RSS.
//!
//! Targets are named by Rust triple, board name or OpenWrt package
//! architecture; everything about them comes from `board-configs/`.

use std::time::Instant;

use std::time::Duration;

use crate::boards::{self, Board};
use crate::targets::Targets;
use crate::{footprint, target_dir, vm, vmtest, workspace};

/// Splits `--target <t>` / `--target=<t>` / `--all` out of `opts`.
pub fn target_opts(opts: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut rest = Vec::new();
    let mut wanted = Vec::new();
    let mut it = opts.iter();
    while let Some(a) = it.next() {
        if a == "--target" {
            wanted.push(it.next().ok_or("--target needs a triple")?.clone());
        } else if let Some(t) = a.strip_prefix("--target=") {
            wanted.push(t.to_string());
        } else if a == "--all" {
            wanted.push(a.clone());
        } else {
            rest.push(a.clone());
        }
    }
    Ok((rest, wanted))
}

/// `cargo xtask test` arguments that name router targets (before any `--`).
pub fn names_targets(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--target" || a.starts_with("--target=") || a == "--all")
}

/// The boards named (`--all` for every one), in board-configs order.
fn chosen(wanted: &[String]) -> Result<Vec<Board>, String> {
    let all = boards::load(&workspace().join("board-configs"))?;
    if wanted.iter().any(|w| w == "--all") {
        return Ok(all);
    }
    let mut out: Vec<Board> = Vec::new();
    for w in wanted {
        let b = boards::select(&all, w)?;
        if !out.iter().any(|o| o.name == b.name) {
            out.push(b.clone());
        }
    }
    Ok(out)
}

/// `cargo xtask test --target ...`: only the router target tests.
pub fn cmd_test_targets(args: &[String]) -> Result<(), String> {
    let (opts, passthrough) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let (rest, wanted) = target_opts(opts)?;
    if let Some(bad) = rest.first() {
        return Err(format!("unknown option {bad} (with --target)"));
    }
    test_targets(&wanted, passthrough)
}

/// Every board's tests; what `cargo xtask test` runs.
pub fn test_all() -> Result<(), String> {
    test_targets(&["--all".to_string()], &[])
}

fn test_targets(wanted: &[String], passthrough: &[String]) -> Result<(), String> {
    let boards = chosen(wanted)?;
    let mut t = Targets::new(&workspace(), &target_dir());
    let mut times = Vec::new();
    let t_all = Instant::now();
    for b in &boards {
        let t0 = Instant::now();
        t.test(b, passthrough)?;
        times.push((b.rust_target.clone(), t0.elapsed().as_secs_f64()));
    }
    println!("==> router target tests passed:");
    for (triple, s) in times {
        println!("    {triple:34} {s:5.0} s");
    }
    println!("    {:34} {:5.0} s", "total", t_all.elapsed().as_secs_f64());
    Ok(())
}

/// The agent scenarios in the system guest of each chosen board that has
/// one; one boot per board, kernel ipip on every agent.
pub fn guest_suites(wanted: &[String], filters: &[String]) -> Result<(), String> {
    let boards: Vec<Board> = chosen(wanted)?
        .into_iter()
        .filter(|b| b.guest.is_some())
        .collect();
    if boards.is_empty() {
        return Err(
            "none of these targets has a system guest (vm_* keys in board-configs/)".into(),
        );
    }
    let mut t = Targets::new(&workspace(), &target_dir());
    let mut times = Vec::new();
    for b in &boards {
        let t0 = Instant::now();
        let built = t.build(b)?;
        let (tests, traffic) = t.guest_test_bins(b, &["scenarios"])?;
        let f = vm::Foreign::of(b).ok_or("no guest")?;
        println!(
            "==> guest suite {} ({} -M {}, Debian {}): {}",
            b.name,
            b.qemu_system,
            b.qemu_machine,
            f.guest.debian_arch,
            if filters.is_empty() {
                "all scenarios".to_string()
            } else {
                filters.join(" ")
            }
        );
        let guest = vmtest::run_suite(
            &workspace(),
            Some(f),
            &built.dir,
            &traffic,
            &tests,
            &vmtest::SuiteOptions {
                backends: vec!["kernel".into()],
                testbed_selftest: false,
                timeout: Duration::from_secs(30 * 60),
                args: filters.to_vec(),
            },
        )
        .map_err(|e| format!("{} guest: {e}", b.name))?;
        times.push((
            b.name.clone(),
            guest.as_secs_f64(),
            t0.elapsed().as_secs_f64(),
        ));
    }
    println!("==> guest suites passed:");
    for (name, guest, total) in times {
        println!("    {name:20} guest {guest:5.0} s, with builds {total:5.0} s");
    }
    Ok(())
}

pub fn cmd_build(args: &[String]) -> Result<(), String> {
    let (rest, wanted) = target_opts(args)?;
    if let Some(bad) = rest.first() {
        return Err(format!("unknown option {bad}"));
    }
    if wanted.is_empty() {
        return Err("usage: cargo xtask build --target <triple> | --all".into());
    }
    let boards = chosen(&wanted)?;
    let mut t = Targets::new(&workspace(), &target_dir());
    let mut rows = Vec::new();
    for b in &boards {
        let t0 = Instant::now();
        let built = t.build(b)?;
        rows.push((b, built, t0.elapsed().as_secs_f64()));
    }
    println!("==> built (stripped bytes):");
    println!(
        "    {:32} {:26} {:>9} {:>9} {:>6}",
        "target", "openwrt arch", "simsd", "sims-node", "time"
    );
    for (b, built, s) in rows {
        let size = |n: &str| {
            built
                .sizes
                .iter()
                .find(|(b, _)| b == n)
                .map_or(0, |(_, s)| *s)
        };
        println!(
            "    {:32} {:26} {:>9} {:>9} {:>5.0}s",
            b.rust_target,
            b.openwrt_arch,
            size("simsd"),
            size("sims-node"),
            s
        );
    }
    Ok(())
}

pub fn cmd_bench_footprint(args: &[String]) -> Result<(), String> {
    let (rest, mut wanted) = target_opts(args)?;
    if let Some(bad) = rest.first() {
        return Err(format!("unknown option {bad}"));
    }
    if wanted.is_empty() {
        wanted.push("--all".into());
    }
    let boards = chosen(&wanted)?;
    let mut t = Targets::new(&workspace(), &target_dir());
    footprint::run(&mut t, &boards)
}

/// `cargo xtask targets [--install]`: the boards of board-configs/, one
/// line each; `--install` first installs what every board needs (rustup
/// toolchains, std or rust-src, llvm-tools, zig, qemu-user-static).
pub fn cmd_targets(args: &[String]) -> Result<(), String> {
    let install = args.iter().any(|a| a == "--install");
    if let Some(bad) = args.iter().find(|a| *a != "--install") {
        return Err(format!("unknown option {bad}"));
    }
    let boards = boards::load(&workspace().join("board-configs"))?;
    if install {
        let mut t = Targets::new(&workspace(), &target_dir());
        for b in &boards {
            t.install(b)?;
        }
    }
    println!(
        "{:17} {:16} {:26} {:32} {:12} {:7} {:20} qemu-system",
        "board", "openwrt target", "package arch", "rust target", "rust", "endian", "qemu-user"
    );
    for b in &boards {
        println!(
            "{:17} {:16} {:26} {:32} {:12} {:7} {:20} {} -M {} -cpu {}",
            b.name,
            b.openwrt_target,
            b.openwrt_arch,
            b.rust_target,
            if b.build_std {
                format!("{}+std", b.toolchain)
            } else {
                b.toolchain.clone()
            },
            if b.big_endian { "big" } else { "little" },
            b.qemu_user,
            b.qemu_system,
            b.qemu_machine,
            b.qemu_cpu
        );
    }
    Ok(())
}
