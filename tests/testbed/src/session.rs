//! Checked streams and other traffic sessions between the node and the CN
//! (`sims-traffic` processes), as the harness sees them.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::sys::Result;
use crate::traffic::{Progress, StreamResult};

/// `sims-traffic whoami`: the node's local address and what the CN saw.
#[derive(Clone, Debug)]
pub struct Whoami {
    pub local: SocketAddrV4,
    pub seen: SocketAddrV4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Up,
    Down,
}

impl Dir {
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

/// A checked stream between the node and the CN.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    pub dir: Dir,
    /// Bytes per second (0: an idle connection).
    pub rate: u64,
    /// Hard cap on the stream's length; `Session::stop` ends it earlier.
    pub duration_ms: u64,
    /// Source address (None: the kernel picks the current one).
    pub bind: Option<Ipv4Addr>,
    pub label: String,
}

impl StreamSpec {
    pub fn new(dir: Dir, label: &str) -> StreamSpec {
        StreamSpec {
            dir,
            rate: 200_000,
            duration_ms: 120_000,
            bind: None,
            label: label.into(),
        }
    }
    pub fn rate(mut self, r: u64) -> Self {
        self.rate = r;
        self
    }
    pub fn duration_ms(mut self, d: u64) -> Self {
        self.duration_ms = d;
        self
    }
    pub fn bind(mut self, a: Ipv4Addr) -> Self {
        self.bind = Some(a);
        self
    }
}

/// A running `sims-traffic stream` in the node's namespace. Dropping it
/// kills the process.
pub struct Session {
    pub label: String,
    /// The id the server logs for an upstream (`progress id=...`).
    pub id: String,
    pub dir: Dir,
    pub(crate) child: Child,
    pub out: PathBuf,
    pub(crate) err: PathBuf,
    pub(crate) until: PathBuf,
    pub(crate) result: Option<StreamResult>,
}

impl Session {
    /// Asks the stream to end cleanly (creates its `--until-file`).
    pub fn stop(&self) {
        let _ = fs::write(&self.until, b"stop\n");
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the tool printed so far.
    pub fn output(&self) -> String {
        let mut s = fs::read_to_string(&self.out).unwrap_or_default();
        let e = fs::read_to_string(&self.err).unwrap_or_default();
        if !e.trim().is_empty() {
            s.push_str("\n[stderr]\n");
            s.push_str(&e);
        }
        s
    }

    /// The last line of its output that is a JSON value (what `probe`
    /// reports at its end), and the whole output for messages.
    pub fn last_json(&self) -> (Option<serde_json::Value>, String) {
        let out = self.output();
        let v = out.lines().rev().find_map(|l| serde_json::from_str(l).ok());
        (v, out)
    }

    pub fn progress(&self) -> Vec<Progress> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(Progress::parse)
            .collect()
    }

    pub fn last_progress(&self) -> Option<Progress> {
        self.progress().pop()
    }

    /// Waits (bounded) for the process to exit (killing it on timeout).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Ok(st),
                Ok(None) => {}
                Err(e) => return Err(format!("wait {}: {e}", self.label)),
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "{} did not end within {timeout:?}; output:\n{}",
                    self.label,
                    tail_str(&self.output(), 15)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) for the stream to end and returns its result.
    pub fn wait(&mut self, timeout: Duration) -> Result<StreamResult> {
        if let Some(r) = &self.result {
            return Ok(r.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(e) => return Err(format!("wait {}: {e}", self.label)),
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "stream {} did not end within {timeout:?}; output:\n{}",
                    self.label,
                    tail_str(&self.output(), 15)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = fs::read_to_string(&self.out).unwrap_or_default();
        let r = out
            .lines()
            .rev()
            .find_map(StreamResult::parse)
            .ok_or_else(|| {
                format!(
                    "stream {} ended without a result; output:\n{}",
                    self.label,
                    tail_str(&self.output(), 15)
                )
            })?;
        self.result = Some(r.clone());
        Ok(r)
    }

    /// `stop` then `wait`.
    pub fn finish(&mut self, timeout: Duration) -> Result<StreamResult> {
        self.stop();
        self.wait(timeout)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail_str(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}
