//! Whole runs: the scenario suite in one boot (tests/vm/suite.sh), shell
//! commands in one boot (tests/vm/bench.sh, for the benchmarks), and the
//! harness's self-check (each failure mode must end in its error).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Foreign, Outcome, Share, Spec, VmError};

pub struct SuiteOptions {
    pub backends: Vec<String>,
    pub testbed_selftest: bool,
    pub timeout: Duration,
    /// libtest arguments for the scenario binary (filters).
    pub args: Vec<String>,
}

/// Boots once and runs suite.sh: kernel ipip sanity, testbed self-test,
/// the scenario suite per backend. `daemons` holds simsd and sims-node;
/// `traffic` is sims-traffic where cargo built it (the test binaries know
/// it by that path); `foreign`: a router target's guest instead of x86_64.
pub fn run_suite(
    workspace: &Path,
    foreign: Option<Foreign>,
    daemons: &Path,
    traffic: &Path,
    tests: &[(String, PathBuf)],
    o: &SuiteOptions,
) -> Result<Duration, String> {
    let mut spec = match foreign {
        Some(f) => Spec::for_guest(workspace, PathBuf::new(), "suite.sh", f),
        None => Spec::new(workspace, PathBuf::new(), "suite.sh"),
    };
    let share = Share::new(&spec.cache, "suite")?;
    spec.share = share.dir.clone();
    spec.timeout = o.timeout;
    for b in ["simsd", "sims-node"] {
        spec.guest_bins.push(share.add_bin(&daemons.join(b), b)?);
    }
    spec.guest_bins
        .push(share.add_bin(traffic, "sims-traffic")?);
    for (name, exe) in tests {
        spec.guest_bins.push(share.add_bin(exe, name)?);
    }
    let path = crate::script("suite.sh");
    let script = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    share.write("suite.sh", &script)?;
    share.write(
        "vm.env",
        &format!(
            "SIMS_BIN_DIR=/mnt/host/bin\n\
             SIMS_VM_LINKS=\"{}=/mnt/host/bin/sims-traffic\"\n\
             SIMS_VM_BACKENDS=\"{}\"\n\
             SIMS_VM_SELFTEST={}\n",
            traffic.display(),
            o.backends.join(" "),
            u8::from(o.testbed_selftest)
        ),
    )?;
    share.write(
        "args",
        &o.args.iter().map(|a| format!("{a}\n")).collect::<String>(),
    )?;
    let out = crate::run(&spec).map_err(|e| e.to_string())?;
    Ok(out.elapsed)
}

/// Boots once and runs `cmds` (shell lines) in the guest via
/// tests/vm/bench.sh, with the daemons, sims-traffic and `tool` (the
/// guest's side of the commands, e.g. xtask itself: there is no cargo in
/// the guest) as `/mnt/host/bin/<tool_name>`, and
/// `SIMS_TESTBED_BACKEND=kernel`. Returns the console.
pub fn run_guest_commands(
    workspace: &Path,
    bins: &Path,
    tool: (&Path, &str),
    what: &str,
    cmds: &[String],
    timeout: Duration,
) -> Result<Outcome, String> {
    let mut spec = Spec::new(workspace, PathBuf::new(), "bench.sh");
    let share = Share::new(&spec.cache, what)?;
    spec.share = share.dir.clone();
    spec.timeout = timeout;
    for b in ["simsd", "sims-node", "sims-traffic"] {
        spec.guest_bins.push(share.add_bin(&bins.join(b), b)?);
    }
    spec.guest_bins.push(share.add_bin(tool.0, tool.1)?);
    let path = crate::script("bench.sh");
    let script = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    share.write("bench.sh", &script)?;
    let mut env = String::from("SIMS_TESTBED_BACKEND=kernel\n");
    // Diagnostics of passing testbeds, on request (docs/TESTBED.md).
    if let Ok(v) = std::env::var("SIMS_TESTBED_VERBOSE") {
        env.push_str(&format!("SIMS_TESTBED_VERBOSE='{}'\n", v.replace('\'', "")));
    }
    share.write("vm.env", &env)?;
    share.write(
        "cmds",
        &cmds.iter().map(|c| format!("{c}\n")).collect::<String>(),
    )?;
    crate::run(&spec).map_err(|e| e.to_string())
}

/// Proves that each failure mode of the harness is an error, not a pass:
/// a kernel package that cannot be fetched, a module that does not load,
/// a guest that does not boot, a guest that times out, a failing run.
pub fn selftest(workspace: &Path) -> Result<(), String> {
    let t0 = Instant::now();
    let mut base = Spec::new(workspace, PathBuf::new(), "ok.sh");
    let share = Share::new(&base.cache, "selftest")?;
    share.write("ok.sh", "echo selftest guest ok\nexit 0\n")?;
    share.write("fail.sh", "echo failing on purpose\nexit 3\n")?;
    share.write("slow.sh", "sleep 600\n")?;
    base.share = share.dir.clone();
    base.echo = std::env::var_os("SIMS_VM_VERBOSE").is_some();
    base.timeout = Duration::from_secs(120);
    crate::host::ensure_host_tools().map_err(|e| e.to_string())?;

    type Check = fn(&VmError) -> bool;
    let mut cases: Vec<(&str, Spec, Check)> = Vec::new();

    let mut s = base.clone();
    s.kernel = Some("0.0.0-sims-selftest-missing-amd64".into());
    cases.push(("kernel package missing", s, |e| {
        matches!(e, VmError::Fetch(_))
    }));

    let mut s = base.clone();
    s.modules.push("sims_selftest_no_such_module".into());
    cases.push((
        "module does not load",
        s,
        |e| matches!(e, VmError::Modules(m) if m == &["sims_selftest_no_such_module".to_string()]),
    ));

    let mut s = base.clone();
    s.append.push("rdinit=/sims-selftest-no-such-init".into());
    cases.push(("guest does not boot", s, |e| matches!(e, VmError::Boot(_))));

    let mut s = base.clone();
    s.run = "slow.sh".into();
    s.timeout = Duration::from_secs(1);
    cases.push(("guest times out (1 s)", s, |e| {
        matches!(e, VmError::Timeout(_))
    }));

    let mut s = base.clone();
    s.run = "fail.sh".into();
    cases.push((
        "guest run fails",
        s,
        |e| matches!(e, VmError::Guest(m) if m.contains("fail.sh exited with 3")),
    ));

    let mut bad = Vec::new();
    for (what, spec, ok) in &cases {
        let t = Instant::now();
        match crate::run(spec) {
            Err(e) if ok(&e) => println!(
                "==> vm selftest: {what}: failed as it must ({:.1} s): {}",
                t.elapsed().as_secs_f64(),
                e.to_string().lines().next().unwrap_or("")
            ),
            Err(e) => {
                println!("==> vm selftest: {what}: WRONG error: {e}");
                bad.push(*what);
            }
            Ok(_) => {
                println!("==> vm selftest: {what}: PASSED, but must fail");
                bad.push(*what);
            }
        }
    }
    // And the control: the same harness passes a guest that passes.
    let t = Instant::now();
    match crate::run(&base) {
        Ok(_) => println!(
            "==> vm selftest: passing guest: passed ({:.1} s)",
            t.elapsed().as_secs_f64()
        ),
        Err(e) => {
            println!("==> vm selftest: passing guest: FAILED: {e}");
            bad.push("passing guest");
        }
    }
    if bad.is_empty() {
        println!(
            "==> vm selftest: all failure modes detected ({:.1} s)",
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(format!("VM harness self-check failed: {}", bad.join(", ")))
    }
}
