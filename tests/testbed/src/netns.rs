//! A network namespace by name, and what the testbed does inside one:
//! `ip -n`, programs run with `ip netns exec`, threads that have joined it
//! (sysctls, in-process UDP sockets).

use std::fs::File;
use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
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

    /// Starts `f` on a new thread that has joined this namespace and
    /// returns at once; `join` the handle for its result. For work that
    /// runs while the test does something else (a capture, a flood); `f`
    /// must bound its own time.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let file = File::open(self.path()).map_err(|e| format!("open {:?}: {e}", self.path()))?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("in-{name}"))
            .spawn(move || {
                // SAFETY: valid netns fd; affects this thread only.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if r != 0 {
                    return Err(format!("setns {name}: {}", io::Error::last_os_error()));
                }
                Ok(f())
            })
            .map_err(|e| format!("spawn a thread in {}: {e}", self.name))
    }

    /// Sends each datagram `repeat` times from `from`, an address this
    /// namespace need not have (a spoofed source: [`udp_socket_freebind`]),
    /// to `to`.
    /// Bounded by the input.
    pub fn send_udp_spoofed(
        &self,
        from: SocketAddrV4,
        to: SocketAddrV4,
        datagrams: &[Vec<u8>],
        repeat: usize,
        pause: Duration,
    ) -> Result<usize> {
        self.in_ns(|| -> Result<usize> {
            let sock = udp_socket_freebind(from).map_err(|e| format!("bind {from}: {e}"))?;
            let mut sent = 0;
            for _ in 0..repeat {
                for d in datagrams {
                    if sock.send_to(d, to).is_ok() {
                        sent += 1;
                    }
                    std::thread::sleep(pause);
                }
            }
            Ok(sent)
        })?
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

    /// A counter of the namespace's `/proc/net/snmp` (`Udp`,
    /// `RcvbufErrors`: datagrams dropped because a socket's receive queue
    /// was full).
    pub fn snmp_counter(&self, proto: &str, name: &str) -> Result<u64> {
        let text = self
            .in_ns(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))?
            .map_err(|e| format!("/proc/net/snmp in {}: {e}", self.name))?;
        let tag = format!("{proto}:");
        let mut rows = text.lines().filter(|l| l.starts_with(&tag));
        let (names, values) = (rows.next(), rows.next());
        let (Some(names), Some(values)) = (names, values) else {
            return Err(format!("no {proto} in /proc/net/snmp of {}", self.name));
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| format!("no {proto} {name} in /proc/net/snmp of {}", self.name))
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

/// A UDP socket of the calling thread's namespace bound to `addr`, which
/// need not be an address of the namespace (IP_FREEBIND, IP_TRANSPARENT):
/// what a host that spoofs its source address sends from.
pub fn udp_socket_freebind(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own; the UdpSocket closes it.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    // IP_FREEBIND binds to an address that is not ours; IP_TRANSPARENT
    // (CAP_NET_ADMIN) lets the kernel route what is sent from it.
    let one: libc::c_int = 1;
    for opt in [libc::IP_FREEBIND, libc::IP_TRANSPARENT] {
        // SAFETY: valid fd, pointer to a live c_int of its size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_IP,
                opt,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: sockaddr_in is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*addr.ip()).to_be(),
    };
    // SAFETY: a valid sockaddr_in of its size.
    let r = unsafe {
        libc::bind(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}
