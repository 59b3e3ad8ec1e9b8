//! `cargo xtask test`: lint, unit tests, the testbed self-test and the
//! scenarios on the host, every router target's tests, then the VM suite
//! (x86_64 with kernel ipip, then the router targets' guests), then each
//! fuzz target for 10 s;
//! `test --target ...` (one target's tests) and `test vm ...`.

use std::time::{Duration, Instant};

use sims_vm::host::is_root;
use sims_vm::suite::{self, SuiteOptions};

use crate::cargo::{build_bins, build_test_bins, cargo, run, target_dir, workspace};
use crate::cmd::fuzz;
use crate::targets::{self, Board};
use crate::{deps, opts};

/// `cargo xtask test [--no-lint] [--no-unit] [--no-targets] [--no-vm]
/// [--no-fuzz] [-- <libtest args>]`, or `test --target <t>... | --all`.
pub fn test(args: &[String]) -> Result<(), String> {
    let o = opts::parse(
        args,
        &[
            "--no-lint",
            "--no-unit",
            "--no-vm",
            "--no-targets",
            "--no-fuzz",
            "--all",
        ],
        &["--target"],
    )?;
    if !o.targets().is_empty() {
        if let Some(bad) = o.first_besides_targets() {
            return Err(format!("unknown option {bad} (with --target)"));
        }
        return test_targets(&o.targets(), &o.rest);
    }
    let passthrough = &o.rest;
    let mut clock = StageClock::start();
    if !o.has("--no-lint") {
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
        clock.lap("fmt, clippy");
    }
    if !o.has("--no-unit") {
        let mut c = cargo();
        c.args(["test", "--workspace", "--exclude", "sims-testbed"]);
        run("unit tests (workspace)", c)?;
        let mut c = cargo();
        c.args(["test", "-p", "sims-testbed", "--lib", "--bins"]);
        run("unit tests (sims-testbed)", c)?;
        clock.lap("unit tests");
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
        ("fault scenarios", "faults"),
        ("attack scenarios", "attacks"),
        (
            "sims-node on laptops: DHCP clients, service, status, dock",
            "laptop",
        ),
        ("LuCI status page on a live handover (Chromium)", "luci"),
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
        clock.lap(target);
    }
    // The OpenWrt package with OpenWrt's own programs (the kit in
    // ../shared/openwrt) and the simsd just built: installed, upgraded
    // and removed with opkg and apk, its init script under procd, the
    // feed's test.sh.
    let mut c = cargo();
    c.args(["test", "-p", "sims-openwrt"])
        .args(["--test", "packages", "--test", "procd", "--test", "feed"])
        .args(["--test", "luci_package", "--test", "luci"])
        .env("SIMS_BIN_DIR", &bin_dir);
    run(
        "OpenWrt packages: opkg, apk, procd, test.sh; luci-app-sims in Chromium",
        c,
    )?;
    clock.lap("OpenWrt packages, LuCI");
    if !o.has("--no-targets") {
        // The router targets (board-configs/): unit tests under QEMU user
        // mode, release builds, `--version` of each binary.
        test_targets(&["--all".to_string()], &[])?;
        clock.lap("router targets (QEMU user mode)");
        // The sims package of every board, installed with OpenWrt's
        // opkg, its apk metadata read, the feed's test.sh under QEMU.
        if sims_openwrt::kit().is_some() {
            super::package::package_boards(&["--all".to_string()])?;
        } else {
            println!(
                "==> packages SKIPPED: no OpenWrt kit (../shared/openwrt, or SIMS_OPENWRT_KIT)"
            );
        }
        // sims-node's .deb from the x86-64 board's static build, installed
        // and removed with dpkg (the workspace's unit tests pack the debug
        // build the same way).
        super::package::package_deb()?;
        let node = crate::cargo::target_dir().join("openwrt/x86_64/sims-node");
        let mut c = cargo();
        c.args(["test", "-p", "sims-debian"])
            .env("SIMS_NODE_BIN", &node);
        run("sims-node's .deb with dpkg (the static amd64 build)", c)?;
        clock.lap("router packages");
    }
    if !o.has("--no-vm") {
        // The same scenarios over kernel ipip, in a VM with a real kernel.
        vm_suite(&VmSuiteArgs {
            passthrough: passthrough.clone(),
            ..VmSuiteArgs::default()
        })?;
        clock.lap("VM suite (x86_64)");
        // Scenarios on the router targets' own architectures (Malta
        // mipsel, virt aarch64) with the release daemons.
        if passthrough.is_empty() {
            guest_suites(&["--all".to_string()], &[])?;
            clock.lap("router guests");
        }
    }
    if !o.has("--no-fuzz") {
        // Every fuzz target for a short fixed time (the long runs are
        // `cargo xtask fuzz --runs N`, docs/BENCHMARKS.md "Fuzzing").
        let limit = fuzz::Limit {
            secs: Some(FUZZ_SECS),
            runs: None,
        };
        fuzz::run(&[], limit, false)?;
        clock.lap("fuzz");
    }
    clock.print();
    println!("==> all passed");
    Ok(())
}

/// Wall time per stage of `cargo xtask test`, printed at the end so that
/// CI's time budget (docs/TESTBED.md) can be checked stage by stage.
struct StageClock {
    began: Instant,
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl StageClock {
    fn start() -> Self {
        let now = Instant::now();
        StageClock {
            began: now,
            last: now,
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.laps.push((stage, now - self.last));
        self.last = now;
    }

    fn print(&self) {
        println!("==> stage times:");
        for (stage, d) in &self.laps {
            println!("    {stage:<34} {:>5} s", d.as_secs());
        }
        println!(
            "    {:<34} {:>5} s",
            "total",
            self.began.elapsed().as_secs()
        );
    }
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SECS: u64 = 10;

/// The router targets' tests: unit and protocol tests under QEMU user
/// mode (natively for x86_64), the release build, and its binaries'
/// `--version` under QEMU.
fn test_targets(wanted: &[String], passthrough: &[String]) -> Result<(), String> {
    let boards = targets::chosen(wanted)?;
    let mut t = targets::targets();
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

/// `cargo xtask test vm [--no-selftest] [--selftest-only] [--backends
/// kernel,mixed] [--timeout-s N] [-- <libtest args>]`, or `test vm
/// --target <t>... | --all` (the router targets' guests).
pub fn test_vm(args: &[String]) -> Result<(), String> {
    let o = opts::parse(
        args,
        &["--no-selftest", "--selftest-only", "--all"],
        &["--backends", "--timeout-s", "--target"],
    )?;
    let wanted = o.targets();
    if !wanted.is_empty() {
        if let Some(bad) = o.first_besides_targets() {
            return Err(format!("unknown option {bad} (with --target)"));
        }
        return guest_suites(&wanted, &o.rest);
    }
    let mut a = VmSuiteArgs {
        passthrough: o.rest.clone(),
        selftest: !o.has("--no-selftest"),
        suite: !o.has("--selftest-only"),
        timeout_s: o.num("--timeout-s", 40 * 60)?,
        ..VmSuiteArgs::default()
    };
    if let Some(v) = o.value("--backends") {
        a.backends = v.split(',').map(|s| s.trim().to_string()).collect();
        if let Some(b) = a
            .backends
            .iter()
            .find(|b| !["kernel", "mixed", "userspace", "auto"].contains(&b.as_str()))
        {
            return Err(format!("unknown backend {b}"));
        }
    }
    vm_suite(&a)
}

/// The VM suite: harness self-check, then one boot running the testbed
/// self-test and the scenarios per backend.
fn vm_suite(a: &VmSuiteArgs) -> Result<(), String> {
    let t0 = Instant::now();
    sims_vm::host::ensure_host_tools().map_err(|e| e.to_string())?;
    if a.selftest {
        println!("==> VM harness self-check (each failure mode must fail)");
        suite::selftest(&workspace())?;
    }
    if !a.suite {
        return Ok(());
    }
    let bins = build_bins(false)?;
    let mut c = cargo();
    c.arg("test");
    let tests = build_test_bins(c, &["scenarios", "testbed"], false)?;
    println!(
        "==> VM suite: scenarios with backends {} in one boot",
        a.backends.join(", ")
    );
    let guest = suite::run_suite(
        &workspace(),
        None,
        &bins,
        &target_dir().join("debug").join("sims-traffic"),
        &tests,
        &SuiteOptions {
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

/// The agent scenarios in the system guest of each chosen board that has
/// one; one boot per board, kernel ipip on every agent, the release
/// daemons and the cross-built scenario tests.
fn guest_suites(wanted: &[String], filters: &[String]) -> Result<(), String> {
    let boards: Vec<Board> = targets::chosen(wanted)?
        .into_iter()
        .filter(|b| b.guest.is_some())
        .collect();
    if boards.is_empty() {
        return Err(
            "none of these targets has a system guest (vm_* keys in board-configs/)".into(),
        );
    }
    let mut t = targets::targets();
    let mut times = Vec::new();
    for b in &boards {
        let t0 = Instant::now();
        let built = t.build(b)?;
        let tests = build_test_bins(t.test_cargo(b)?, &["scenarios"], false)?;
        let traffic = t.traffic_bin(b)?;
        let f = b.vm_guest().ok_or("no guest")?;
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
        let guest = suite::run_suite(
            &workspace(),
            Some(f),
            &built.dir,
            &traffic,
            &tests,
            &SuiteOptions {
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
