//! `cargo xtask <command>`:
//!
//! * `test [--no-lint] [--no-unit] [-- <libtest args>]` — `cargo fmt --check`,
//!   `cargo clippy --workspace --all-targets -- -D warnings`, the workspace's
//!   unit tests, then builds the binaries and runs the testbed self-test and
//!   the scenario tests one at a time (root needed; they skip otherwise).
//! * `demo [--dwell-s N]` — testbed, a steady download at the node, moves
//!   A → B → A with progress printed each second, teardown.
//! * `testbed [--daemons] [--at a|b|c] [--for-s N]` — builds the testbed
//!   and keeps it up (Ctrl-C, at most N s, default 1800) for poking at by
//!   hand with `ip netns exec`.
//! * `test --target <triple>... | --all`, `build --target <triple>... | --all`,
//!   `bench footprint [--target <triple>]...` — the router targets of
//!   `board-configs/` (xtask/src/router.rs, docs/TARGETS.md). `cargo xtask
//!   test` runs every target's tests before the VM suite (skip with
//!   `--no-targets`).
//! * `test vm [--no-selftest] [--selftest-only] [--backends kernel,mixed]
//!   [--timeout-s N] [-- <libtest args>]` — the VM suite (xtask/src/vm.rs,
//!   tests/vm/): the harness's self-check, then one boot of a Debian kernel
//!   under QEMU running the testbed self-test and the scenario suite with
//!   kernel ipip on every agent, then mixed (ma-a kernel, others userspace).
//!   `cargo xtask test` runs it last (skip with `--no-vm`).
//! * `bench handover [--moves N]` — release build, N alternating moves
//!   measured with `sims-traffic probe`; the last line is
//!   `handover median_ms=<x> p99_ms=<y> moves=<n>`. `--debug` uses debug
//!   binaries (a quick check of the harness, not figures to quote).
//!   `--delay-ms N`: netem delay on each agent's WAN (needs sch_netem: the
//!   VM has it, see `vm-delay`).
//! * `bench vm-delay [--moves N] [--delays 0,10,40]` — in the VM (kernel
//!   ipip, netem): the handover benchmark per one-way WAN delay, then the
//!   table of handover time against delay and the fitted slope.
//! * `bench dataplane [--pairs N]` — in the VM: relayed vs direct TCP
//!   throughput, and new sessions' forwarding with 0 vs 10,000 bindings;
//!   last line `dataplane relayed_vs_direct=<r> new_10k_vs_0=<r>`.

mod boards;
mod deps;
mod footprint;
mod foreign;
mod router;
mod targets;
mod toml;
mod vm;
mod vmbench;
mod vmtest;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use sims_testbed::harness::{
    run_demo, run_handover_bench, run_shell, BenchOptions, DemoOptions, ShellOptions,
};
use sims_testbed::Ma;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The README's commands must work on a fresh machine.
    if matches!(
        args.first().map(String::as_str),
        Some("test" | "demo" | "testbed" | "bench")
    ) {
        if let Err(e) = deps::ensure_testbed_packages() {
            eprintln!("xtask: {e}");
            return ExitCode::FAILURE;
        }
    }
    let r = match args.first().map(String::as_str) {
        Some("test") if args.get(1).map(String::as_str) == Some("vm") => cmd_test_vm(&args[2..]),
        Some("test") if router::names_targets(&args[1..]) => router::cmd_test_targets(&args[1..]),
        Some("test") => cmd_test(&args[1..]),
        Some("build") => router::cmd_build(&args[1..]),
        Some("targets") => router::cmd_targets(&args[1..]),
        Some("demo") => cmd_demo(&args[1..]),
        Some("testbed") => cmd_testbed(&args[1..]),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("handover") => cmd_bench_handover(&args[2..]),
            Some("footprint") => router::cmd_bench_footprint(&args[2..]),
            Some("vm-delay") => vmbench::cmd_bench_vm_delay(&args[2..]),
            Some("dataplane") => vmbench::cmd_bench_dataplane(&args[2..]),
            _ => Err("usage: cargo xtask bench handover [--moves N] [--delay-ms N] [--debug]\n       \
                 cargo xtask bench footprint [--target <triple>]...\n       \
                 cargo xtask bench vm-delay [--moves N] [--delays 0,10,40] [--debug]\n       \
                 cargo xtask bench dataplane [--pairs N] [--debug]"
                .into()),
        },
        // Run by tests/vm/bench.sh inside the VM (no cargo there).
        Some("guest") => vmbench::cmd_guest(&args[1..]),
        _ => Err(
            "usage: cargo xtask test [--no-lint] [--no-unit] [--no-targets] [--no-vm] [-- <test args>]\n       \
             cargo xtask test vm [--no-selftest] [--selftest-only] [--backends kernel,mixed] [--timeout-s N] [-- <test args>]\n       \
             cargo xtask demo [--dwell-s N]\n       \
             cargo xtask testbed [--daemons] [--at a|b|c] [--for-s N]\n       \
             cargo xtask bench handover [--moves N] [--delay-ms N] [--debug]\n       \
             cargo xtask bench vm-delay [--moves N] [--delays 0,10,40] [--debug]\n       \
             cargo xtask bench dataplane [--pairs N] [--debug]\n       \
             cargo xtask test --target <triple>... | --all [-- <test args>]\n       \
             cargo xtask build --target <triple>... | --all\n       \
             cargo xtask targets [--install]\n       \
             cargo xtask bench footprint [--target <triple>]..."
                .into(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace().join(p)
            }
        })
        .unwrap_or_else(|| workspace().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn run(step: &str, mut c: Command) -> Result<(), String> {
    println!("==> {step}");
    targets::status(step, &mut c)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Builds the daemons and the traffic tool; returns the binary directory.
/// Two cargo runs, so the test crate's dependencies (serde_json pulls serde
/// with std) do not unify features into the firmware's build.
fn build_bins(release: bool) -> Result<PathBuf, String> {
    for (what, pkgs) in [
        ("daemons", &["-p", "simsd", "-p", "sims-node"][..]),
        ("sims-traffic", &["-p", "sims-testbed", "--bins"][..]),
    ] {
        let mut c = cargo();
        c.arg("build").args(pkgs);
        if release {
            c.arg("--release");
        }
        run(
            &format!("build {what}{}", if release { " (release)" } else { "" }),
            c,
        )?;
    }
    Ok(target_dir().join(if release { "release" } else { "debug" }))
}

fn cmd_test(args: &[String]) -> Result<(), String> {
    let (opts, passthrough) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let lint = !opts.iter().any(|a| a == "--no-lint");
    let unit = !opts.iter().any(|a| a == "--no-unit");
    let with_vm = !opts.iter().any(|a| a == "--no-vm");
    let with_targets = !opts.iter().any(|a| a == "--no-targets");
    if let Some(bad) = opts
        .iter()
        .find(|a| !["--no-lint", "--no-unit", "--no-vm", "--no-targets"].contains(&a.as_str()))
    {
        return Err(format!("unknown option {bad}"));
    }
    if lint {
        deps::ensure_rust_components()?;
        let mut c = cargo();
        c.args(["fmt", "--all", "--check"]);
        run("cargo fmt --check", c)?;
        let mut c = cargo();
        c.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run("cargo clippy --workspace --all-targets -- -D warnings", c)?;
    }
    if unit {
        let mut c = cargo();
        c.args(["test", "--workspace", "--exclude", "sims-testbed"]);
        run("unit tests (workspace)", c)?;
        let mut c = cargo();
        c.args(["test", "-p", "sims-testbed", "--lib", "--bins"]);
        run("unit tests (sims-testbed)", c)?;
    }
    let bin_dir = build_bins(false)?;
    if !is_root() {
        println!("==> note: not root: the testbed and scenario tests will report SKIPPED");
    }
    // The testbed's self-test first: if the testbed itself is broken, the
    // scenarios' verdicts mean nothing.
    for (step, target) in [
        ("testbed self-test", "testbed"),
        ("scenario tests", "scenarios"),
    ] {
        let mut c = cargo();
        c.args([
            "test",
            "-p",
            "sims-testbed",
            "--test",
            target,
            "--",
            "--test-threads=1",
        ])
        .args(passthrough)
        .env("SIMS_BIN_DIR", &bin_dir);
        run(step, c)?;
    }
    if with_targets {
        // The router targets (board-configs/): unit tests under QEMU user
        // mode, release builds, `--version` of each binary.
        router::test_all()?;
    }
    if with_vm {
        // The same scenarios over kernel ipip, in a VM with a real kernel.
        vm_suite(&VmSuiteArgs {
            passthrough: passthrough.to_vec(),
            ..VmSuiteArgs::default()
        })?;
        // Scenarios on the router targets' own architectures (Malta
        // mipsel, virt aarch64) with the release daemons.
        if passthrough.is_empty() {
            router::guest_suites(&["--all".to_string()], &[])?;
        }
    }
    println!("==> all passed");
    Ok(())
}

struct VmSuiteArgs {
    selftest: bool,
    suite: bool,
    backends: Vec<String>,
    timeout_s: u64,
    passthrough: Vec<String>,
}

impl Default for VmSuiteArgs {
    fn default() -> Self {
        VmSuiteArgs {
            selftest: true,
            suite: true,
            backends: vec!["kernel".into(), "mixed".into()],
            timeout_s: 40 * 60,
            passthrough: Vec::new(),
        }
    }
}

fn cmd_test_vm(args: &[String]) -> Result<(), String> {
    let (opts, passthrough) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let (opts, wanted) = router::target_opts(opts)?;
    if !wanted.is_empty() {
        if let Some(bad) = opts.first() {
            return Err(format!("unknown option {bad} (with --target)"));
        }
        return router::guest_suites(&wanted, passthrough);
    }
    let mut a = VmSuiteArgs {
        passthrough: passthrough.to_vec(),
        ..VmSuiteArgs::default()
    };
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        match o.as_str() {
            "--no-selftest" => a.selftest = false,
            "--selftest-only" => a.suite = false,
            "--backends" => {
                let v = it
                    .next()
                    .ok_or("--backends needs a list, e.g. kernel,mixed")?;
                a.backends = v.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(b) = a
                    .backends
                    .iter()
                    .find(|b| !["kernel", "mixed", "userspace", "auto"].contains(&b.as_str()))
                {
                    return Err(format!("unknown backend {b}"));
                }
            }
            "--timeout-s" => {
                a.timeout_s = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--timeout-s needs a number")?
            }
            _ => return Err(format!("unknown option {o}")),
        }
    }
    vm_suite(&a)
}

/// The VM suite: harness self-check, then one boot running the testbed
/// self-test and the scenarios per backend.
fn vm_suite(a: &VmSuiteArgs) -> Result<(), String> {
    let t0 = Instant::now();
    vm::ensure_host_tools().map_err(|e| e.to_string())?;
    if a.selftest {
        println!("==> VM harness self-check (each failure mode must fail)");
        vmtest::selftest(&workspace())?;
    }
    if !a.suite {
        return Ok(());
    }
    let bins = build_bins(false)?;
    let mut c = cargo();
    c.arg("test");
    let tests = vmtest::build_test_bins(c, &["scenarios", "testbed"], false)?;
    println!(
        "==> VM suite: scenarios with backends {} in one boot",
        a.backends.join(", ")
    );
    let guest = vmtest::run_suite(
        &workspace(),
        None,
        &bins,
        &target_dir().join("debug").join("sims-traffic"),
        &tests,
        &vmtest::SuiteOptions {
            backends: a.backends.clone(),
            testbed_selftest: true,
            timeout: Duration::from_secs(a.timeout_s),
            args: a.passthrough.clone(),
        },
    )?;
    println!(
        "==> VM suite passed (guest {:.0} s, total {:.0} s)",
        guest.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn num_opt(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    let mut it = args.iter();
    let mut v = default;
    while let Some(a) = it.next() {
        if a == "--debug" {
            continue;
        }
        if a == name {
            v = it
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))?;
        } else if let Some(x) = a.strip_prefix(&format!("{name}=")) {
            v = x.parse().map_err(|_| format!("{name} needs a number"))?;
        } else {
            return Err(format!("unknown option {a}"));
        }
    }
    Ok(v)
}

fn cmd_demo(args: &[String]) -> Result<(), String> {
    let dwell_s = num_opt(args, "--dwell-s", 6)?;
    if !is_root() {
        return Err("the demo builds network namespaces: run it as root".into());
    }
    let bin_dir = build_bins(false)?;
    run_demo(&DemoOptions {
        traffic_bin: bin_dir.join("sims-traffic"),
        bin_dir,
        dwell_s,
        rate: 200_000,
    })
}

fn cmd_bench_handover(args: &[String]) -> Result<(), String> {
    let v = vmbench::opts(args, &[("--moves", "20"), ("--delay-ms", "0")])?;
    let moves = vmbench::num("--moves", &v[0])? as usize;
    let delay_ms = vmbench::num("--delay-ms", &v[1])?;
    if moves == 0 {
        return Err("--moves must be at least 1".into());
    }
    if !is_root() {
        return Err("the benchmark builds network namespaces: run it as root".into());
    }
    // --debug: quick check of the harness with debug binaries (the figures
    // that count come from the release build).
    let bin_dir = build_bins(!args.iter().any(|a| a == "--debug"))?;
    run_handover_bench(&BenchOptions {
        traffic_bin: bin_dir.join("sims-traffic"),
        bin_dir,
        moves,
        rate: 200_000,
        delay_ms,
    })
    .map(|_| ())
}

fn cmd_testbed(args: &[String]) -> Result<(), String> {
    let mut daemons = false;
    let mut at = None;
    let mut for_s = 1800;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--daemons" => daemons = true,
            "--at" => {
                let v = it.next().ok_or("--at needs a, b or c")?;
                at = Some(
                    Ma::ALL
                        .into_iter()
                        .find(|m| m.letter().to_string() == *v)
                        .ok_or("--at needs a, b or c")?,
                );
            }
            "--for-s" => {
                for_s = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--for-s needs a number")?
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if !is_root() {
        return Err("the testbed builds network namespaces: run it as root".into());
    }
    let bin_dir = if daemons {
        build_bins(false)?
    } else {
        let mut c = cargo();
        c.args(["build", "-p", "sims-testbed", "--bins"]);
        run("build sims-traffic", c)?;
        target_dir().join("debug")
    };
    run_shell(&ShellOptions {
        traffic_bin: bin_dir.join("sims-traffic"),
        bin_dir,
        daemons,
        at,
        for_s,
    })
}
