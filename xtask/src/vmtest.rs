//! `cargo xtask test vm`: the harness's self-check (each failure mode must
//! end in its error), then the scenario suite in the guest over kernel ipip
//! and in the mixed pair (tests/vm/suite.sh), in one boot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::vm::{self, Spec, VmError};

/// A directory shared with the guest: `<cache>/share-<pid>-<what>/`,
/// removed on drop.
pub struct Share {
    pub dir: PathBuf,
}

impl Share {
    pub fn new(cache: &Path, what: &str) -> Result<Share, String> {
        remove_stale_shares(cache);
        let dir = cache.join(format!("share-{}-{what}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Share { dir })
    }

    pub fn write(&self, name: &str, text: &str) -> Result<(), String> {
        fs::write(self.dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    }

    /// Copies a binary into bin/ (a copy: a concurrent cargo build must not
    /// change what the guest runs).
    pub fn add_bin(&self, src: &Path, name: &str) -> Result<PathBuf, String> {
        let dst = self.dir.join("bin").join(name);
        fs::copy(src, &dst).map_err(|e| format!("copy {} to the share: {e}", src.display()))?;
        Ok(dst)
    }
}

/// Shares left by runs that were killed (their pid is gone).
fn remove_stale_shares(cache: &Path) {
    let Ok(rd) = fs::read_dir(cache) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("share-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Builds the integration-test binaries of sims-testbed and returns
/// (test target name, executable) from cargo's JSON messages.
/// `cargo` ends in `test` plus any target options.
pub fn build_test_bins(
    mut cargo: Command,
    targets: &[&str],
    release: bool,
) -> Result<Vec<(String, PathBuf)>, String> {
    cargo.args(["-p", "sims-testbed", "--no-run", "--message-format=json"]);
    if release {
        cargo.arg("--release");
    }
    for t in targets {
        cargo.args(["--test", t]);
    }
    println!("==> build test binaries {}", targets.join(", "));
    let out = cargo
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the test binaries failed ({})",
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for l in text.lines() {
        if !l.contains("\"reason\":\"compiler-artifact\"") || !l.contains("\"kind\":[\"test\"]") {
            continue;
        }
        let (Some(name), Some(exe)) =
            (json_str(l, "\"name\":\""), json_str(l, "\"executable\":\""))
        else {
            continue;
        };
        if targets.contains(&name.as_str()) {
            v.push((name, PathBuf::from(exe)));
        }
    }
    for t in targets {
        if !v.iter().any(|(n, _)| n == t) {
            return Err(format!("cargo named no executable for test target {t}"));
        }
    }
    Ok(v)
}

/// The first string value after `key` (which ends with the opening quote).
fn json_str(line: &str, key: &str) -> Option<String> {
    let i = line.find(key)? + key.len();
    let rest = &line[i..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

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
    foreign: Option<vm::Foreign>,
    daemons: &Path,
    traffic: &Path,
    tests: &[(String, PathBuf)],
    o: &SuiteOptions,
) -> Result<Duration, String> {
    let mut spec = match foreign {
        Some(f) => vm::Spec::for_guest(workspace, PathBuf::new(), "suite.sh", f),
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
    let script = fs::read_to_string(workspace.join("tests/vm/suite.sh"))
        .map_err(|e| format!("tests/vm/suite.sh: {e}"))?;
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
    let out = vm::run(&spec).map_err(|e| e.to_string())?;
    Ok(out.elapsed)
}

/// Boots once and runs `cmds` (shell lines) in the guest via
/// tests/vm/bench.sh, with the daemons, sims-traffic and this xtask binary
/// in /mnt/host/bin and `SIMS_TESTBED_BACKEND=kernel`. Returns the console.
pub fn run_guest_commands(
    workspace: &Path,
    bins: &Path,
    what: &str,
    cmds: &[String],
    timeout: Duration,
) -> Result<vm::Outcome, String> {
    let mut spec = Spec::new(workspace, PathBuf::new(), "bench.sh");
    let share = Share::new(&spec.cache, what)?;
    spec.share = share.dir.clone();
    spec.timeout = timeout;
    for b in ["simsd", "sims-node", "sims-traffic"] {
        spec.guest_bins.push(share.add_bin(&bins.join(b), b)?);
    }
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    spec.guest_bins.push(share.add_bin(&me, "xtask")?);
    let script = fs::read_to_string(workspace.join("tests/vm/bench.sh"))
        .map_err(|e| format!("tests/vm/bench.sh: {e}"))?;
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
    vm::run(&spec).map_err(|e| e.to_string())
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
    vm::ensure_host_tools().map_err(|e| e.to_string())?;

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
        match vm::run(spec) {
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
    match vm::run(&base) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_come_from_cargo_json() {
        let l = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["test"],"crate_types":["bin"],"name":"scenarios","src_path":"/w/tests/tests/scenarios.rs"},"profile":{},"features":[],"filenames":["/w/target/debug/deps/scenarios-1"],"executable":"/w/target/debug/deps/scenarios-1","fresh":true}"#;
        assert_eq!(json_str(l, "\"name\":\"").as_deref(), Some("scenarios"));
        assert_eq!(
            json_str(l, "\"executable\":\"").as_deref(),
            Some("/w/target/debug/deps/scenarios-1")
        );
        assert_eq!(
            json_str(r#"{"executable":null}"#, "\"executable\":\""),
            None
        );
    }
}
