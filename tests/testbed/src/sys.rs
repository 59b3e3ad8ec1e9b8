//! Process plumbing: the tools' paths, commands with timeouts, started
//! processes killed by PID, polling, the testbed lock, log tails. The
//! namespaces themselves are netns.rs.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub type Result<T> = std::result::Result<T, String>;

/// First existing path among `candidates`, else a PATH lookup of `name`.
pub fn find_tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        if Path::new(c).is_file() {
            return Some(PathBuf::from(c));
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn ip_bin() -> PathBuf {
    find_tool(
        "ip",
        &["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"],
    )
    .unwrap_or_else(|| PathBuf::from("ip"))
}

pub fn nft_bin() -> PathBuf {
    find_tool("nft", &["/usr/sbin/nft", "/sbin/nft"]).unwrap_or_else(|| PathBuf::from("nft"))
}

pub fn tc_bin() -> PathBuf {
    find_tool("tc", &["/usr/sbin/tc", "/sbin/tc"]).unwrap_or_else(|| PathBuf::from("tc"))
}

pub fn dnsmasq_bin() -> PathBuf {
    find_tool("dnsmasq", &["/usr/sbin/dnsmasq", "/sbin/dnsmasq"])
        .unwrap_or_else(|| PathBuf::from("dnsmasq"))
}

pub fn busybox_bin() -> PathBuf {
    find_tool("busybox", &["/bin/busybox", "/usr/bin/busybox"])
        .unwrap_or_else(|| PathBuf::from("busybox"))
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Out {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Out {
    pub fn ok(&self) -> bool {
        !self.timed_out && self.status.map(|s| s.success()).unwrap_or(false)
    }
}

/// Makes a spawned child die with the spawning thread (SIGKILL), so a test
/// process that is killed does not leave daemons behind.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
}

/// Runs `cmd` to completion with a timeout (killing it by PID on timeout),
/// feeding `stdin` if given.
pub fn run_cmd(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Out> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().map_err(|e| format!("spawn {desc}: {e}"))?;
    if let Some(data) = stdin {
        let mut si = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = si.write_all(&data);
        });
    }
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => return Err(format!("wait {desc}: {e}")),
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Ok(Out {
        status,
        stdout,
        stderr,
        timed_out,
    })
}

/// Runs and requires success; the error carries the command and its stderr.
pub fn run_ok(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = run_cmd(cmd, stdin, timeout)?;
    if out.ok() {
        Ok(out.stdout)
    } else if out.timed_out {
        Err(format!("{desc}: timed out after {timeout:?}"))
    } else {
        Err(format!(
            "{desc}: {}: {}{}",
            out.status.map(|s| s.to_string()).unwrap_or_default(),
            out.stderr.trim(),
            if out.stdout.trim().is_empty() {
                String::new()
            } else {
                format!(" (stdout: {})", out.stdout.trim())
            }
        ))
    }
}

/// Sends `sig` to `pid` (a process this harness started).
pub fn kill_pid(pid: u32, sig: i32) -> bool {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

pub fn pid_alive(pid: u32) -> bool {
    kill_pid(pid, 0)
}

/// Stops a child we started: SIGTERM, then SIGKILL after `grace`; reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    kill_pid(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Polls `f` every `every` until it yields `Some`, at most `timeout`.
/// The error says what was awaited and the last observation.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> std::result::Result<Option<T>, String>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("(no observation)");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "timed out after {:.1}s waiting for {what}; last: {last}",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(every);
    }
}

/// Process-wide exclusive lock serializing testbeds (also across processes),
/// so parallel test threads or a concurrent demo do not share the CPU
/// during timing-sensitive scenarios.
pub struct TestbedLock {
    _f: File,
}

impl TestbedLock {
    pub fn acquire(timeout: Duration) -> Result<TestbedLock> {
        let path = Path::new("/run/sims-testbed.lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .or_else(|_| {
                File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(std::env::temp_dir().join("sims-testbed.lock"))
            })
            .map_err(|e| format!("open lock file: {e}"))?;
        let start = Instant::now();
        let mut said = false;
        loop {
            // SAFETY: valid fd.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(TestbedLock { _f: f });
            }
            if !said {
                eprintln!("[testbed] waiting for another testbed to finish (lock {path:?})");
                said = true;
            }
            if start.elapsed() >= timeout {
                return Err("another testbed holds the lock for too long".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Err(e) => format!("(cannot read {path:?}: {e})"),
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].join("\n")
        }
    }
}

/// chmod: the testbed's scripts (0755) and secrets (0600).
pub fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}
