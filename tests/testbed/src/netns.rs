//! A network namespace by name, and what the testbed does inside one:
//! `ip -n`, programs run with `ip netns exec`, threads that have joined it
//! (sysctls, in-process UDP sockets).

use std::fs::File;
use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::sys::{ip_bin, run_ok, Result};

/// A network namespace by name (`/run/netns/<name>`).
#[derive(Clone, Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: impl Into<String>) -> Netns {
        Netns { name: name.into() }
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// `ip -n <ns> <args>`: output on success.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(ip_bin());
        c.arg("-n").arg(&self.name).args(args);
        run_ok(c, None, Duration::from_secs(15))
    }

    /// Several `ip` commands in one process (`ip -n <ns> -batch -`).
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        self.ip_batch_timeout(lines, Duration::from_secs(30))
    }

    /// [`Netns::ip_batch`] with its own time limit (large batches).
    pub fn ip_batch_timeout(&self, lines: &[String], timeout: Duration) -> Result<()> {
        let mut c = Command::new(ip_bin());
        c.arg("-n").arg(&self.name).args(["-batch", "-"]);
        let input = lines.join("\n") + "\n";
        run_ok(c, Some(input.as_bytes()), timeout).map(|_| ())
    }

    /// A command that runs inside the namespace (`ip netns exec`), which
    /// execs the program: the child's PID is the program's PID.
    pub fn command(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(ip_bin());
        c.args(["netns", "exec"]).arg(&self.name).arg(prog);
        c
    }

    /// Runs a program in the namespace with a timeout; stdout on success.
    pub fn run(
        &self,
        prog: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String> {
        let mut c = self.command(prog);
        c.args(args);
        run_ok(c, None, timeout)
    }

    /// Runs `f` on a thread that has joined this namespace (setns affects
    /// only the calling thread); for sysctls and in-process sockets.
    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(self.path()).map_err(|e| format!("open {:?}: {e}", self.path()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: valid netns fd; affects this thread only.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if r != 0 {
                    return Err(format!(
                        "setns {}: {}",
                        self.name,
                        io::Error::last_os_error()
                    ));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| "namespace thread panicked".to_string())?
        })
    }

    /// Writes sysctls (keys like `net.ipv4.ip_forward`) inside the namespace.
    pub fn sysctls(&self, kv: &[(String, String)]) -> Result<Vec<String>> {
        self.in_ns(|| {
            let mut failed = Vec::new();
            for (k, v) in kv {
                let p = format!("/proc/sys/{}", k.replace('.', "/"));
                if let Err(e) = std::fs::write(&p, v) {
                    failed.push(format!("{k}={v}: {e}"));
                }
            }
            failed
        })
    }

    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let p = format!("/proc/sys/{}", key.replace('.', "/"));
        self.in_ns(move || std::fs::read_to_string(&p).map(|s| s.trim().to_string()))?
            .map_err(|e| format!("read {key} in {}: {e}", self.name))
    }

    /// Interface names in the namespace.
    pub fn interfaces(&self) -> Result<Vec<String>> {
        self.in_ns(|| {
            std::fs::read_dir("/proc/sys/net/ipv4/conf")
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n != "all" && n != "default")
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Sends each datagram from the namespace (optionally from `bind`) to
    /// `to`, pausing `pause` every `batch` datagrams. Bounded by the input.
    pub fn send_udp(
        &self,
        bind: Option<SocketAddrV4>,
        to: SocketAddrV4,
        datagrams: &[Vec<u8>],
        batch: usize,
        pause: Duration,
    ) -> Result<usize> {
        self.in_ns(|| -> Result<usize> {
            let sock = UdpSocket::bind(bind.unwrap_or(SocketAddrV4::new([0, 0, 0, 0].into(), 0)))
                .map_err(|e| format!("bind: {e}"))?;
            let _ = sock.set_broadcast(true);
            let mut sent = 0;
            for (i, d) in datagrams.iter().enumerate() {
                if sock.send_to(d, to).is_ok() {
                    sent += 1;
                }
                if batch > 0 && (i + 1) % batch == 0 {
                    std::thread::sleep(pause);
                }
            }
            Ok(sent)
        })?
    }

    /// A request/answer exchange from the namespace: sends `datagram` from
    /// `bind` to `to`, again every `every` (identical bytes, as a
    /// retransmission), until `answer` accepts a received datagram (returns
    /// `Some`) or `timeout` passes (`Ok(None)`).
    pub fn udp_request<T: Send>(
        &self,
        bind: SocketAddrV4,
        to: SocketAddrV4,
        datagram: &[u8],
        every: Duration,
        timeout: Duration,
        mut answer: impl FnMut(&[u8], std::net::SocketAddr) -> Option<T> + Send,
    ) -> Result<Option<T>> {
        self.in_ns(move || -> Result<Option<T>> {
            let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + timeout;
            let mut next_send = Instant::now();
            let mut buf = vec![0u8; 65536];
            while Instant::now() < deadline {
                if Instant::now() >= next_send {
                    sock.send_to(datagram, to)
                        .map_err(|e| format!("send from {bind} to {to}: {e}"))?;
                    next_send = Instant::now() + every;
                }
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let Some(v) = answer(&buf[..n], from) {
                        return Ok(Some(v));
                    }
                }
            }
            Ok(None)
        })?
    }

    /// Receives one datagram on `bind` within `timeout` (e.g. to capture an
    /// agent advertisement on the LAN).
    pub fn recv_udp(
        &self,
        bind: SocketAddrV4,
        timeout: Duration,
    ) -> Result<Option<(Vec<u8>, std::net::SocketAddr)>> {
        self.in_ns(|| -> Result<Option<(Vec<u8>, std::net::SocketAddr)>> {
            let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
            let _ = sock.set_broadcast(true);
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + timeout;
            let mut buf = vec![0u8; 65536];
            while Instant::now() < deadline {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    return Ok(Some((buf[..n].to_vec(), from)));
                }
            }
            Ok(None)
        })?
    }
}
