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
//! * `bench handover [--moves N]` — release build, N alternating moves
//!   measured with `sims-traffic probe`; the last line is
//!   `handover median_ms=<x> p99_ms=<y> moves=<n>`. `--debug` uses debug
//!   binaries (a quick check of the harness, not figures to quote).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use sims_testbed::harness::{
    run_demo, run_handover_bench, run_shell, BenchOptions, DemoOptions, ShellOptions,
};
use sims_testbed::Ma;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("test") => cmd_test(&args[1..]),
        Some("demo") => cmd_demo(&args[1..]),
        Some("testbed") => cmd_testbed(&args[1..]),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("handover") => cmd_bench_handover(&args[2..]),
            _ => Err("usage: cargo xtask bench handover [--moves N] [--debug]".into()),
        },
        _ => Err(
            "usage: cargo xtask test [--no-lint] [--no-unit] [-- <test args>]\n       \
             cargo xtask demo [--dwell-s N]\n       \
             cargo xtask testbed [--daemons] [--at a|b|c] [--for-s N]\n       \
             cargo xtask bench handover [--moves N] [--debug]"
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
    let st = c
        .status()
        .map_err(|e| format!("{step}: cannot run {c:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({st})"))
    }
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
    if let Some(bad) = opts.iter().find(|a| *a != "--no-lint" && *a != "--no-unit") {
        return Err(format!("unknown option {bad}"));
    }
    if lint {
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
    println!("==> all passed");
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
    let moves = num_opt(args, "--moves", 20)? as usize;
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
