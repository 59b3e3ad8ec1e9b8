//! The processes a testbed starts: spawned in a namespace, each output
//! line stamped with the monotonic clock into its log, PIDs recorded (for
//! [`super::cleanup_stale`]) and reaped.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use super::{Proc, Testbed};
use crate::netns::Netns;
use crate::sys::{die_with_parent, Result};
use crate::traffic::mono_ns;

impl Testbed {
    pub(super) fn record_pid(&self, pid: u32) {
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pids"))
        {
            let _ = writeln!(f, "{pid}");
        }
    }

    /// Spawns a long-running process in `ns`, output appended to `log`.
    pub(super) fn spawn(
        &mut self,
        label: &str,
        ns: &Netns,
        argv: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<usize> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("open {log:?}: {e}"))?;
        let _ = writeln!(
            f,
            "=== [testbed] starting {label} at t_ns={}: {}",
            mono_ns(),
            argv.join(" ")
        );
        drop(f);
        let mut c = ns.command(&argv[0]);
        c.args(&argv[1..]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut c);
        let mut child = c.spawn().map_err(|e| format!("spawn {label}: {e}"))?;
        // Each line gets a CLOCK_MONOTONIC stamp (seconds), the clock of
        // the dhcp-events file and the traffic tool's progress lines.
        if let Some(o) = child.stdout.take() {
            stamp_lines(o, log.to_path_buf());
        }
        if let Some(e) = child.stderr.take() {
            stamp_lines(e, log.to_path_buf());
        }
        self.record_pid(child.id());
        self.procs.push(Proc {
            label: label.to_string(),
            child,
            log: log.to_path_buf(),
            exited: None,
        });
        Ok(self.procs.len() - 1)
    }

    /// Has the process exited? (reaps it)
    pub(super) fn proc_exited(&mut self, i: usize) -> Option<ExitStatus> {
        let p = &mut self.procs[i];
        if p.exited.is_none() {
            if let Ok(Some(st)) = p.child.try_wait() {
                p.exited = Some(st);
            }
        }
        p.exited
    }

    /// PIDs of the processes this testbed started that are still running.
    pub fn running_pids(&mut self) -> Vec<u32> {
        let mut v = Vec::new();
        for i in 0..self.procs.len() {
            if self.proc_exited(i).is_none() {
                v.push(self.procs[i].child.id());
            }
        }
        v
    }
}

/// Copies lines from `r` to the end of `log`, each prefixed with the
/// monotonic time in seconds; the thread ends at EOF (process exit).
fn stamp_lines(r: impl std::io::Read + Send + 'static, log: PathBuf) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&log) else {
            return;
        };
        let mut rd = std::io::BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match rd.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let t = mono_ns();
                    let mut out = format!("[{}.{:06}] ", t / 1_000_000_000, t / 1_000 % 1_000_000)
                        .into_bytes();
                    out.extend_from_slice(&line);
                    if !out.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                    let _ = f.write_all(&out);
                }
            }
        }
    });
}
