//! simsd, the SIMS Mobility Agent: a thin poll loop around the sans-IO
//! agent of `sims-proto`, executing its actions on the kernel.

mod config;
mod dataplane;
mod nft;
mod offload;
mod status;

use std::cell::RefCell;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use log::{error, info, warn};
use sims_linux::cli;
use sims_linux::event::{self, Signals};
use sims_linux::monitor::Monitor;
use sims_linux::udp::bind_udp;
use sims_proto::agent::{Action, Agent, LanView, Now, Sink};

use dataplane::Dataplane;

const USAGE: &str = "\
Usage: simsd [-c <config>] [--state-dir <dir>] [status [--json] | check]

SIMS Mobility Agent.

Options:
  -c, --config <file>   config file, UCI syntax (default /etc/config/sims)
  --state-dir <dir>     status socket and saved state (default /var/run/sims)
  --version             print the version and exit
  -h, --help            print this help

Commands:
  status [--json]       show the running daemon's bindings, peers, counters
  check                 check the config file and exit
";

#[derive(PartialEq)]
enum Cmd {
    Run,
    Status { json: bool },
    Check,
    Version,
    Help,
}

struct Args {
    config: String,
    state_dir: String,
    cmd: Cmd,
}

fn parse_args(mut a: cli::Args) -> Result<Args, String> {
    let mut args = Args {
        config: "/etc/config/sims".into(),
        state_dir: "/var/run/sims".into(),
        cmd: Cmd::Run,
    };
    while let Some(w) = a.next_word()? {
        match (w.as_str(), &mut args.cmd) {
            ("-h" | "--help", _) => args.cmd = Cmd::Help,
            ("--version", _) => args.cmd = Cmd::Version,
            ("-c" | "--config", _) => args.config = a.value(&w)?,
            ("--state-dir", _) => args.state_dir = a.value(&w)?,
            ("status", Cmd::Run) => args.cmd = Cmd::Status { json: false },
            ("check", Cmd::Run) => args.cmd = Cmd::Check,
            ("--json", Cmd::Status { json }) => *json = true,
            _ => return Err(format!("unexpected argument '{w}'")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args(cli::Args::from_env()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("simsd: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    cli::init_logger();
    match args.cmd {
        Cmd::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Cmd::Version => {
            println!("simsd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        // The daemon speaks JSON only; a compact human view of it.
        Cmd::Status { json } => cli::print_status(
            &Path::new(&args.state_dir).join("simsd.sock"),
            "simsd",
            json,
            |out| out.replace("},{", "},\n  {").replace(":[{", ":[\n  {"),
        ),
        Cmd::Check => match config::load(&args.config) {
            Ok(c) => {
                println!(
                    "{}: ok, agent {} with {} peers",
                    args.config,
                    c.agent.id,
                    c.agent.peers.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run => match run(&args.config, Path::new(&args.state_dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Neighbour lookups for the agent's "held by another host" check.
struct Lan<'a, 'd>(&'a RefCell<&'d mut Dataplane>);
impl LanView for Lan<'_, '_> {
    fn holder(&self, addr: Ipv4Addr) -> Option<[u8; 6]> {
        self.0.borrow_mut().lan_holder(addr)
    }
}

/// Carries out the agent's actions as it emits them: a burst (restoring
/// thousands of bindings, a round of retransmissions) never waits in a
/// list, where each action would hold up to a datagram (measured: 1.2 MB
/// of peak heap for a restore of 1,000 bindings).
struct Exec<'a, 'd> {
    dp: &'a RefCell<&'d mut Dataplane>,
    cfg: &'a config::Config,
    lan: &'a UdpSocket,
    wan: &'a UdpSocket,
    /// Anything was emitted.
    emitted: bool,
    /// A kernel change was applied (a binding came or went).
    kernel: bool,
}

impl Sink for Exec<'_, '_> {
    fn push(&mut self, a: Action) {
        self.emitted = true;
        match a {
            Action::Send { dst, data } => {
                let lan = self
                    .cfg
                    .agent
                    .lan_prefixes
                    .iter()
                    .any(|p| p.contains(*dst.ip()));
                let sock = if lan { self.lan } else { self.wan };
                if let Err(e) = sock.send_to(&data, dst) {
                    warn!("send to {dst}: {e}");
                }
            }
            Action::BroadcastLan { data } => {
                let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.cfg.agent.port);
                if let Err(e) = self.lan.send_to(&data, dst) {
                    log::debug!("advertisement: {e}");
                }
            }
            other => {
                self.kernel = true;
                if let Err(e) = self.dp.borrow_mut().apply(&other) {
                    error!("kernel: {other:?}: {e}");
                }
            }
        }
    }
}

fn now() -> Now {
    Now {
        ms: event::now_ms(),
        unix_s: event::unix_s(),
    }
}

/// `boot` grows across restarts even within one second.
fn next_boot(dir: &Path) -> u32 {
    let file = dir.join("boot");
    let last: u32 = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let boot = (event::unix_s() as u32).max(last.wrapping_add(1));
    let _ = std::fs::write(&file, boot.to_string());
    boot
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = sims_linux::random_bytes(&mut b);
    u32::from_ne_bytes(b)
}

struct Daemon {
    cfg: config::Config,
    cfg_path: String,
    dir: PathBuf,
    agent: Agent,
    dp: Dataplane,
    lan: UdpSocket,
    wan: UdpSocket,
    dirty: bool,
}

impl Daemon {
    fn start(
        cfg: config::Config,
        cfg_path: &str,
        dir: &Path,
        saved: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        let boot = next_boot(dir);
        let dp = Dataplane::open(&cfg).map_err(|e| format!("data plane: {e}"))?;
        let port = cfg.agent.port;
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        let lan = bind_udp(any, Some(&cfg.lan_ifname), true, true)
            .map_err(|e| format!("bind {any} on {}: {e}", cfg.lan_ifname))?;
        let wan = bind_udp(any, Some(&cfg.wan_ifname), false, true)
            .map_err(|e| format!("bind {any} on {}: {e}", cfg.wan_ifname))?;
        let agent = Agent::new(cfg.agent.clone(), boot, random_u32());
        let mut d = Daemon {
            cfg,
            cfg_path: cfg_path.to_string(),
            dir: dir.to_path_buf(),
            agent,
            dp,
            lan,
            wan,
            dirty: true,
        };
        if let Some(data) = saved {
            if d.with_exec(false, |agent, _, ex| agent.restore(now(), &data, ex)) {
                info!("restored {} bindings", d.agent.bindings().count());
            } else {
                warn!("saved state unreadable; starting empty");
            }
        }
        let cfg = &d.cfg;
        info!(
            "agent {} (boot {boot}) on {} / {}, {} peers",
            cfg.agent.id,
            cfg.lan_ifname,
            cfg.wan_ifname,
            cfg.agent.peers.len()
        );
        Ok(d)
    }

    /// Runs `f` on the agent with the LAN view and the executor of its
    /// actions. The saved state is due when a binding changed, or, for
    /// `answering` (handling a datagram), when anything was sent: answers
    /// change credentials and sequence numbers. Timers' advertisements
    /// and retransmissions change nothing saved.
    fn with_exec<R>(
        &mut self,
        answering: bool,
        f: impl FnOnce(&mut Agent, &Lan, &mut Exec) -> R,
    ) -> R {
        let dp = RefCell::new(&mut self.dp);
        let mut ex = Exec {
            dp: &dp,
            cfg: &self.cfg,
            lan: &self.lan,
            wan: &self.wan,
            emitted: false,
            kernel: false,
        };
        let r = f(&mut self.agent, &Lan(&dp), &mut ex);
        self.dirty |= ex.kernel || (answering && ex.emitted);
        r
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("simsd.state")
    }

    fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let data = self.agent.save(now());
        let tmp = self.dir.join("simsd.state.tmp");
        if std::fs::write(&tmp, &data)
            .and_then(|_| std::fs::rename(&tmp, self.state_file()))
            .is_err()
        {
            warn!("could not save state in {}", self.dir.display());
        }
    }

    fn on_datagram(&mut self, via_lan: bool, buf: &mut [u8]) {
        // Bounded per wakeup so a flood cannot starve timers.
        for _ in 0..64 {
            let sock = if via_lan { &self.lan } else { &self.wan };
            let (n, src) = match sock.recv_from(buf) {
                Ok(x) => x,
                Err(_) => return,
            };
            let SocketAddr::V4(src) = src else { continue };
            let now = now();
            self.with_exec(true, |agent, lan, ex| {
                agent.handle_datagram(now, src, via_lan, &buf[..n], lan, ex)
            });
        }
    }

    /// SIGHUP: a valid new config replaces the running one, keeping the
    /// bindings whose peers still exist; an invalid one changes nothing.
    fn reload(self) -> Self {
        let cfg = match config::load(&self.cfg_path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, keeping the running configuration: {e}");
                return self;
            }
        };
        let saved = self.agent.save(now());
        let (path, dir) = (self.cfg_path.clone(), self.dir.clone());
        let old_cfg = self.cfg.clone();
        let mut old = self;
        old.dp.shutdown();
        drop(old);
        match Daemon::start(cfg, &path, &dir, Some(saved.clone())) {
            Ok(d) => {
                info!("configuration reloaded");
                d
            }
            Err(e) => {
                error!("reload failed ({e}); restarting with the previous configuration");
                match Daemon::start(old_cfg, &path, &dir, Some(saved)) {
                    Ok(d) => d,
                    Err(e) => {
                        error!("cannot restart: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
    }
}

fn run(cfg_path: &str, dir: &Path) -> Result<(), String> {
    let cfg = config::load(cfg_path).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let signals = Signals::open().map_err(|e| format!("signals: {e}"))?;
    let mut mon = Monitor::open().map_err(|e| format!("netlink monitor: {e}"))?;
    let saved = std::fs::read(dir.join("simsd.state")).ok();
    let mut d = Daemon::start(cfg, cfg_path, dir, saved)?;
    let sock_path = dir.join("simsd.sock");
    let _ = std::fs::remove_file(&sock_path);
    let status =
        UnixListener::bind(&sock_path).map_err(|e| format!("{}: {e}", sock_path.display()))?;
    status.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let now_ms = event::now_ms();
        let next = d
            .agent
            .poll_timeout()
            .min(d.dp.next_deadline().unwrap_or(u64::MAX));
        let wait = next.saturating_sub(now_ms).min(1000) as i32;
        let mut fds = vec![
            signals.fd(),
            mon.fd(),
            status.as_raw_fd(),
            d.lan.as_raw_fd(),
            d.wan.as_raw_fd(),
        ];
        let raw = d.dp.raw_fd();
        if let Some(r) = raw {
            fds.push(r);
        }
        let tuns = d.dp.tun_fds();
        fds.extend(tuns.iter().map(|(_, fd)| *fd));
        let ready = event::poll_readable(&fds, wait).map_err(|e| format!("poll: {e}"))?;
        for i in ready {
            match i {
                0 => {
                    while let Some(sig) = signals.next() {
                        if sig == libc::SIGHUP {
                            info!("SIGHUP: reloading {}", d.cfg_path);
                            d = d.reload();
                        } else {
                            info!("signal {sig}: shutting down");
                            d.save();
                            d.dp.shutdown();
                            let _ = std::fs::remove_file(&sock_path);
                            return Ok(());
                        }
                    }
                }
                1 => {
                    let events = mon.recv().unwrap_or_default();
                    let overrun = mon.take_overrun();
                    for ev in &events {
                        if let Err(e) = d.dp.on_event(ev) {
                            warn!("resync: {e}");
                        }
                    }
                    if overrun {
                        if let Err(e) = d.dp.resync() {
                            warn!("resync: {e}");
                        }
                    }
                }
                2 => {
                    while let Ok((mut c, _)) = status.accept() {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_write_timeout(Some(std::time::Duration::from_secs(2)));
                        let s = status::json(&d.agent, &mut d.dp, event::now_ms());
                        let _ = c.write_all(s.as_bytes());
                    }
                }
                3 => d.on_datagram(true, &mut buf),
                4 => d.on_datagram(false, &mut buf),
                5 if raw.is_some() => d.dp.pump_raw(&mut buf),
                i => {
                    let k = i - 5 - usize::from(raw.is_some());
                    if let Some((p, _)) = tuns.get(k) {
                        d.dp.pump_tun(*p, &mut buf);
                    }
                }
            }
        }
        let t = now();
        d.with_exec(false, |agent, _, ex| agent.handle_timeout(t, ex));
        d.dp.expire_idle(t.ms);
        d.save();
    }
}

#[cfg(test)]
mod args_tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        parse_args(cli::Args::new(
            s.split_whitespace().map(String::from).collect(),
        ))
    }

    #[test]
    fn command_lines() {
        let a = parse("").unwrap();
        assert!(
            a.cmd == Cmd::Run && a.config == "/etc/config/sims" && a.state_dir == "/var/run/sims"
        );
        let a = parse("-c /tmp/x --state-dir /tmp/s status --json").unwrap();
        assert!(
            a.cmd == Cmd::Status { json: true } && a.config == "/tmp/x" && a.state_dir == "/tmp/s"
        );
        assert!(parse("--config=/tmp/y check").unwrap().cmd == Cmd::Check);
        assert_eq!(
            parse("--json").err().unwrap(),
            "unexpected argument '--json'"
        );
        assert_eq!(
            parse("check status").err().unwrap(),
            "unexpected argument 'status'"
        );
        assert_eq!(parse("-c").err().unwrap(), "-c needs a value");
    }
}
