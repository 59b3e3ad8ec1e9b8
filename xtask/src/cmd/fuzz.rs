//! `cargo xtask fuzz [--secs N] [--runs N] [--cargo-fuzz] [target...]`:
//! builds the fuzz crate (fuzz/, cargo-fuzz's layout, outside the
//! workspace) with the nightly toolchain and runs each target under
//! libFuzzer, for N seconds or N executions (both: whichever comes
//! first; neither: 20 s), then prints the executions per target.
//!
//! By default without cargo-fuzz (CI has none): `cargo build` with the
//! flags cargo-fuzz passes (coverage instrumentation, `--cfg fuzzing`;
//! no sanitizer), then the binaries are run directly. `--cargo-fuzz` uses
//! `cargo fuzz run` instead (it must be installed). Either way the
//! committed seeds (fuzz/corpus/<target>/) are read and never written:
//! what libFuzzer finds goes to <target dir>/fuzz/corpus/<target>/, a
//! crashing input to <target dir>/fuzz/artifacts/<target>/, libFuzzer's
//! output to <target dir>/fuzz/logs/<target>.log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sims_vm::host::{apt_install, is_root, which};

use crate::cargo::{status, target_dir, workspace};
use crate::opts;

/// The triple cargo-fuzz builds for: with `--target`, RUSTFLAGS reach the
/// targets' code only, not build scripts and proc macros.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What cargo-fuzz passes to rustc (sanitizer "none").
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// How long each target runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub secs: Option<u64>,
    pub runs: Option<u64>,
}

impl Limit {
    fn args(self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(s) = self.secs {
            v.push(format!("-max_total_time={s}"));
        }
        if let Some(r) = self.runs {
            v.push(format!("-runs={r}"));
        }
        v
    }
}

/// One target's run.
pub struct Ran {
    pub target: String,
    pub execs: u64,
    pub secs: f64,
}

/// `cargo xtask fuzz ...`
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let (names, rest) = split_names(args);
    let o = opts::parse(&rest, &["--cargo-fuzz"], &["--secs", "--runs"])?;
    let mut limit = Limit {
        secs: o
            .value("--secs")
            .map(|v| opts::num("--secs", v))
            .transpose()?,
        runs: o
            .value("--runs")
            .map(|v| opts::num("--runs", v))
            .transpose()?,
    };
    if limit == Limit::default() {
        limit.secs = Some(20);
    }
    run(&names, limit, o.has("--cargo-fuzz")).map(drop)
}

/// Target names are the arguments that are neither options nor their
/// values.
fn split_names(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut names, mut rest) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--secs" || a == "--runs" {
            rest.push(a.clone());
            rest.extend(it.next().cloned());
        } else if a.starts_with('-') {
            rest.push(a.clone());
        } else {
            names.push(a.clone());
        }
    }
    (names, rest)
}

fn fuzz_dir() -> PathBuf {
    workspace().join("fuzz")
}

/// The targets: fuzz/fuzz_targets/*.rs.
pub fn all_targets() -> Result<Vec<String>, String> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut v: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Builds and runs `names` (all if empty); prints and returns the counts.
pub fn run(names: &[String], limit: Limit, cargo_fuzz: bool) -> Result<Vec<Ran>, String> {
    let all = all_targets()?;
    let names: Vec<String> = if names.is_empty() {
        all.clone()
    } else {
        names.to_vec()
    };
    if let Some(bad) = names.iter().find(|n| !all.contains(n)) {
        return Err(format!(
            "no fuzz target {bad} (there are: {})",
            all.join(", ")
        ));
    }
    ensure_cxx()?;
    ensure_nightly()?;
    let out = target_dir().join("fuzz");
    let t0 = Instant::now();
    if !cargo_fuzz {
        build(&names, &out)?;
    }
    let build_s = t0.elapsed().as_secs_f64();
    let mut ran = Vec::new();
    for n in &names {
        ran.push(run_one(n, &out, limit, cargo_fuzz)?);
    }
    println!("==> fuzzing passed (no crash):");
    for r in &ran {
        println!(
            "    {:10} {:>12} executions in {:5.0} s ({:.0}/s)",
            r.target,
            r.execs,
            r.secs,
            r.execs as f64 / r.secs.max(0.001)
        );
    }
    if !cargo_fuzz {
        println!(
            "    build {build_s:.0} s, total {:.0} s",
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(ran)
}

/// libfuzzer-sys compiles libFuzzer (C++).
fn ensure_cxx() -> Result<(), String> {
    if ["c++", "g++", "clang++"].iter().any(|c| which(c).is_some()) {
        return Ok(());
    }
    if !is_root() {
        return Err("fuzzing needs a C++ compiler (libFuzzer): install g++ or clang".into());
    }
    eprintln!("==> installing g++ (libFuzzer is C++)");
    apt_install(&["g++"])
}

fn rustup() -> Result<PathBuf, String> {
    which("rustup").ok_or_else(|| "fuzzing needs rustup and its nightly toolchain".into())
}

fn ensure_nightly() -> Result<(), String> {
    let rustup = rustup()?;
    let list = Command::new(&rustup)
        .args(["toolchain", "list"])
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    if String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        return Ok(());
    }
    status(
        "rustup toolchain install nightly",
        Command::new(&rustup).args(["toolchain", "install", "nightly", "--profile", "minimal"]),
    )
}

/// `cargo` of the nightly toolchain, without the environment of the
/// cargo running xtask.
fn nightly_cargo() -> Result<Command, String> {
    let mut c = crate::cargo::toolchain_cargo(&rustup()?, "nightly", &workspace());
    c.env_remove("CARGO_TARGET_DIR");
    Ok(c)
}

fn build(names: &[String], out: &Path) -> Result<(), String> {
    let mut c = nightly_cargo()?;
    c.args(["build", "--release", "--manifest-path"])
        .arg(fuzz_dir().join("Cargo.toml"))
        .args(["--target", TRIPLE, "--target-dir"])
        .arg(out)
        .env("RUSTFLAGS", RUSTFLAGS);
    for n in names {
        c.args(["--bin", n]);
    }
    println!("==> build fuzz targets {}", names.join(", "));
    status("building the fuzz targets", &mut c)
}

fn run_one(name: &str, out: &Path, limit: Limit, cargo_fuzz: bool) -> Result<Ran, String> {
    let corpus = out.join("corpus").join(name);
    let artifacts = out.join("artifacts").join(name);
    let logs = out.join("logs");
    for d in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let seeds = fuzz_dir().join("corpus").join(name);
    // New inputs go to the first directory: ours, never the committed seeds.
    let mut lf: Vec<String> = vec![
        corpus.display().to_string(),
        seeds.display().to_string(),
        "-print_final_stats=1".into(),
        "-timeout=10".into(),
        "-rss_limit_mb=2048".into(),
        format!("-artifact_prefix={}/", artifacts.display()),
    ];
    lf.extend(limit.args());
    let mut c = if cargo_fuzz {
        let mut c = nightly_cargo()?;
        c.args(["fuzz", "run", "--sanitizer", "none", "--debug-assertions"])
            .args(["--target", TRIPLE, "--target-dir"])
            .arg(out)
            .arg(name)
            .args(&lf[..2])
            .arg("--")
            .args(&lf[2..]);
        c
    } else {
        let mut c = Command::new(out.join(TRIPLE).join("release").join(name));
        c.current_dir(workspace()).args(&lf);
        c
    };
    let log = logs.join(format!("{name}.log"));
    let file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| e.to_string())?;
    c.stdin(Stdio::null()).stdout(file).stderr(file2);
    println!("==> fuzz {name} ({})", limit.args().join(" "));
    let t0 = Instant::now();
    let st = c
        .status()
        .map_err(|e| format!("fuzz {name}: cannot run {c:?}: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).unwrap_or_default();
    if !st.success() {
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("    {l}");
        }
        return Err(format!(
            "fuzz target {name} failed ({st}): the input is in {}, the whole output in {}",
            artifacts.display(),
            log.display()
        ));
    }
    let execs = executions(&text).ok_or_else(|| {
        format!(
            "fuzz {name}: no stat::number_of_executed_units in {}",
            log.display()
        )
    })?;
    println!(
        "    {name}: {execs} executions in {secs:.0} s ({:.0}/s)",
        execs as f64 / secs.max(0.001)
    );
    Ok(Ran {
        target: name.to_string(),
        execs,
        secs,
    })
}

/// libFuzzer's `-print_final_stats=1` count of executions.
fn executions(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_and_names() {
        let log = "#1024\tpulse  cov: 10 ft: 12 corp: 3/9b exec/s: 512 rss: 40Mb\n\
                   Done 4096 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 4096\n\
                   stat::average_exec_per_sec:     2048\n";
        assert_eq!(executions(log), Some(4096));
        assert_eq!(executions("crashed\n"), None);
        let a: Vec<String> = ["agent", "--secs", "5", "node", "--cargo-fuzz"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (names, rest) = split_names(&a);
        assert_eq!(names, ["agent", "node"]);
        assert_eq!(rest, ["--secs", "5", "--cargo-fuzz"]);
        let t = all_targets().unwrap();
        for want in [
            "agent", "config", "netlink", "node", "offload", "restore", "wire_msg",
        ] {
            assert!(t.iter().any(|n| n == want), "{want}");
        }
    }
}
