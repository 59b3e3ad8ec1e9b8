//! Teardown: this testbed's (Drop: processes killed by PID, namespaces
//! deleted, the run dir kept on failure) and what earlier runs left behind
//! ([`cleanup_stale`]).

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::Testbed;
use crate::sys::{ip_bin, kill_pid, pid_alive, run_cmd, stop_child};

const ROLES: [&str; 11] = [
    "cn",
    "inet",
    "ma-a",
    "ma-b",
    "ma-c",
    "mn",
    "lanhost-a",
    "tr-lan",
    "guest-a",
    "guest-b",
    "guest-c",
];

/// Removes namespaces (and kills the processes in them that the old run
/// recorded having started) that earlier testbed runs left behind: only
/// names of this testbed's pattern `s<pid>-<n>-<role>` whose pid is gone.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir("/run/netns") else {
        return removed;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((pid, prefix)) = parse_ns_name(&name) else {
            continue;
        };
        if pid == me || pid_alive(pid) {
            continue;
        }
        let run_dir = run_dir_for(&prefix);
        let recorded: Vec<u32> = fs::read_to_string(run_dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let mut c = Command::new(ip_bin());
        c.args(["netns", "pids", &name]);
        if let Ok(out) = run_cmd(c, None, Duration::from_secs(5)) {
            for p in out
                .stdout
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
            {
                if recorded.contains(&p) {
                    kill_pid(p, libc::SIGKILL);
                }
            }
        }
        let mut c = Command::new(ip_bin());
        c.args(["netns", "del", &name]);
        let _ = run_cmd(c, None, Duration::from_secs(5));
        let _ = fs::remove_dir_all(&run_dir);
        removed.push(name);
    }
    if !removed.is_empty() {
        eprintln!("[testbed] removed stale namespaces: {}", removed.join(" "));
    }
    // Run dirs kept after failures: removed a day later, once their run is gone.
    if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(prefix) = name.strip_prefix("sims-tb-") else {
                continue;
            };
            let Some((pid, _)) = parse_ns_name(&format!("{prefix}-cn")) else {
                continue;
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map(|age| age > Duration::from_secs(24 * 3600))
                .unwrap_or(false);
            if old && pid != me && !pid_alive(pid) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    removed
}

/// `s<pid>-<n>-<role>` → (pid, `s<pid>-<n>-`).
fn parse_ns_name(name: &str) -> Option<(u32, String)> {
    let rest = name.strip_prefix('s')?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, role) = rest.split_once('-')?;
    if pid.is_empty() || n.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !n.bytes().all(|b| b.is_ascii_digit()) || !ROLES.contains(&role) {
        return None;
    }
    Some((pid.parse().ok()?, format!("s{pid}-{n}-")))
}

pub(super) fn run_dir_for(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sims-tb-{}", prefix.trim_end_matches('-')))
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let failed = self.failed || std::thread::panicking();
        // Collected while everything still exists, printed after cleanup
        // (a broken stderr must not stop the cleanup).
        let diag = if failed || std::env::var_os("SIMS_TESTBED_VERBOSE").is_some() {
            Some(self.diagnostics())
        } else {
            None
        };
        // Kill every process we started (by PID), latest first.
        for i in (0..self.procs.len()).rev() {
            if self.procs[i].exited.is_none() {
                let st = stop_child(&mut self.procs[i].child, Duration::from_secs(2));
                self.procs[i].exited = st;
            }
        }
        for ns in self.namespaces.iter().rev() {
            let mut c = Command::new(ip_bin());
            c.args(["netns", "del", &ns.name]);
            let _ = run_cmd(c, None, Duration::from_secs(10));
        }
        if !failed && std::env::var_os("SIMS_TESTBED_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
        let mut err = std::io::stderr();
        if let Some(d) = diag {
            if std::thread::panicking() {
                // Goes to the test's captured output, shown on failure.
                eprintln!("{d}");
            } else {
                let _ = writeln!(err, "{d}");
            }
        }
        if failed {
            let _ = writeln!(err, "[testbed] logs kept in {}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_names_round_trip_and_foreign_names_are_ignored() {
        assert_eq!(
            parse_ns_name("s1234-0-ma-a"),
            Some((1234, "s1234-0-".to_string()))
        );
        assert_eq!(parse_ns_name("s1-22-lanhost-a").unwrap().0, 1);
        assert_eq!(parse_ns_name("s1-22-guest-b").unwrap().0, 1);
        for n in [
            "s1234-0-other",
            "sx-0-cn",
            "s12-cn",
            "docker",
            "s-1-cn",
            "s1-1-",
        ] {
            assert_eq!(parse_ns_name(n), None, "{n}");
        }
    }
}
