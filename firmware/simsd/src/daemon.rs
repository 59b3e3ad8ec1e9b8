//! The daemon: the agent, its data plane and its sockets around one
//! `poll(2)` loop whose descriptors are named slots; SIGHUP reloads the
//! configuration, keeping the bindings whose peers remain.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use log::{error, info, warn};
use sims_daemon::status::StatusSocket;
use sims_daemon::{now, random_seed, state};
use sims_linux::event::{self, Signals};
use sims_linux::monitor::{Event, Monitor};
use sims_linux::netlink::{Netlink, NUD_LIVE};
use sims_linux::udp::bind_udp;
use sims_proto::agent::Agent;

use crate::config::{self, Config};
use crate::dataplane::{Accounts, Dataplane};
use crate::exec::{Exec, Lan};
use crate::status;

/// The state file is written at most this often (except at shutdown).
const SAVE_EVERY_MS: u64 = 1_000;

/// In the state directory: the saved bindings and credentials.
const STATE_FILE: &str = "simsd.state";
/// In the state directory: where `simsd status` asks.
pub const SOCKET_FILE: &str = "simsd.sock";
/// In the state directory: the traffic totals, if no file is configured.
const ACCOUNTING_FILE: &str = "traffic";

/// The LAN socket: pinned to the LAN device, broadcasts allowed.
fn bind_lan(cfg: &Config) -> Result<UdpSocket, String> {
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.agent.port);
    bind_udp(any, Some(&cfg.lan_ifname), true, true)
        .map_err(|e| format!("bind {any} on {}: {e}", cfg.lan_ifname))
}

/// The WAN device's IPv4 address (its first, not link-local), our
/// endpoint when none is configured.
fn wan_address(wan: &str) -> Option<Ipv4Addr> {
    let mut nl = Netlink::open().ok()?;
    let link = nl.link_by_name(wan).ok()??;
    let addrs = nl.addrs(Some(link.index)).ok()?;
    addrs
        .iter()
        .map(|a| a.addr)
        .find(|a| !a.is_link_local() && !a.is_loopback() && !a.is_unspecified())
}

/// `cfg` with its endpoint: the configured one, or the WAN device's
/// address, waited for (a DHCP or PPPoE WAN may not have one yet when we
/// start) until it comes or a signal ends the wait (None).
fn with_endpoint(mut cfg: Config, path: &str, signals: &Signals) -> Option<Config> {
    let mut said = false;
    loop {
        if !cfg.follow_wan {
            return Some(cfg);
        }
        if let Some(a) = wan_address(&cfg.wan_ifname) {
            info!(
                "endpoint {a}: the address of {} (none configured)",
                cfg.wan_ifname
            );
            cfg.agent.endpoint = a;
            return Some(cfg);
        }
        if !said {
            info!("waiting for an IPv4 address on {}", cfg.wan_ifname);
            said = true;
        }
        if event::poll_readable(&[signals.fd()], 1000)
            .unwrap_or_default()
            .is_empty()
        {
            continue;
        }
        while let Some(sig) = signals.next() {
            if sig != libc::SIGHUP {
                return None;
            }
            // A new config while we wait: take it (or keep this one).
            match config::load(path) {
                Ok(c) => cfg = c,
                Err(e) => error!("reload refused, keeping the running configuration: {e}"),
            }
        }
    }
}

/// Where the accounts are kept: the configured file, or the state
/// directory's.
fn accounting_file(cfg: &Config, dir: &Path) -> PathBuf {
    cfg.accounting_file
        .as_ref()
        .map_or_else(|| dir.join(ACCOUNTING_FILE), PathBuf::from)
}

/// The WAN socket: pinned to the WAN device.
fn bind_wan(cfg: &Config) -> Result<UdpSocket, String> {
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.agent.port);
    bind_udp(any, Some(&cfg.wan_ifname), false, true)
        .map_err(|e| format!("bind {any} on {}: {e}", cfg.wan_ifname))
}

/// The interface index of device `name`, if it exists.
fn link_index(name: &str) -> Option<u32> {
    Netlink::open()
        .ok()?
        .link_by_name(name)
        .ok()?
        .map(|l| l.index)
}

pub struct Daemon {
    cfg: Config,
    cfg_path: String,
    dir: PathBuf,
    agent: Agent,
    dp: Dataplane,
    lan: UdpSocket,
    wan: UdpSocket,
    /// The WAN device the WAN socket is bound to (a PPPoE WAN's device is
    /// recreated at each reconnect).
    wan_index: Option<u32>,
    /// A WAN address the data plane failed to start on: not tried again
    /// at every address event (our own tunnels' addresses make them).
    failed_endpoint: Option<Ipv4Addr>,
    dirty: bool,
    last_save_ms: u64,
}

impl Daemon {
    /// `accounts`: those of the data plane this one replaces (None: read
    /// from the accounting file).
    fn start(
        cfg: Config,
        cfg_path: &str,
        dir: &Path,
        saved: Option<Vec<u8>>,
        accounts: Option<Accounts>,
    ) -> Result<Self, String> {
        let mut dp = Dataplane::open(&cfg).map_err(|e| format!("data plane: {e}"))?;
        let lan = bind_lan(&cfg)?;
        let wan = bind_wan(&cfg)?;
        let wan_index = link_index(&cfg.wan_ifname);
        let agent = Agent::new(cfg.agent.clone(), random_seed()?);
        dp.keep_moves_in(dir.join(crate::dataplane::MOVED_FILE));
        dp.keep_accounts(
            accounts,
            &accounting_file(&cfg, dir),
            cfg.accounting_interval_ms,
            event::now_ms(),
        );
        let mut d = Daemon {
            cfg,
            cfg_path: cfg_path.to_string(),
            dir: dir.to_path_buf(),
            agent,
            dp,
            lan,
            wan,
            wan_index,
            failed_endpoint: None,
            dirty: true,
            last_save_ms: 0,
        };
        if let Some(data) = saved {
            if d.with_exec(false, |agent, _, ex| agent.restore(now(), &data, ex)) {
                info!("restored {} bindings", d.agent.bindings().count());
            } else {
                warn!("saved state unreadable; starting empty");
            }
        }
        if d.cfg.follow_wan {
            // Peers learn our run, and our address if it changed, now.
            d.with_exec(false, |agent, _, ex| agent.hello_peers(now(), ex));
        }
        let cfg = &d.cfg;
        info!(
            "agent {} (instance {:016x}) on {} / {}, {} peers",
            cfg.agent.id,
            d.agent.instance(),
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
            failed: false,
        };
        let r = f(&mut self.agent, &Lan(&dp), &mut ex);
        self.dirty |= ex.kernel || (answering && ex.emitted);
        r
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Writes the saved state if something in it changed (owner-only: it
    /// lists the nodes' keys and credentials).
    /// At most one write a second: a flood of registrations (each renewing
    /// a guest's credential) must not rewrite the file, on flash, at the
    /// flood's rate. The loop wakes at least once a second, so a change is
    /// on disk within about a second; `force` (shutdown) writes at once.
    fn save(&mut self, force: bool) {
        if !self.dirty {
            return;
        }
        let t = event::now_ms();
        if !force && t < self.last_save_ms.saturating_add(SAVE_EVERY_MS) {
            return;
        }
        self.last_save_ms = t;
        self.dirty = false;
        let data = self.agent.save(now());
        if let Err(e) = state::write_atomic(&self.state_file(), &data, state::PRIVATE) {
            warn!("could not save state in {}: {e}", self.dir.display());
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

    /// The LAN bridge was recreated: SO_BINDTODEVICE bound the socket to
    /// the old device's index, so bind a new one to the new device.
    fn rebind_lan(&mut self) {
        match bind_lan(&self.cfg) {
            Ok(s) => {
                info!("LAN socket bound to the new {}", self.cfg.lan_ifname);
                self.lan = s;
            }
            Err(e) => warn!("{e}"),
        }
    }

    /// A host appeared on the LAN with an address: if it is one we
    /// redirect for another node, the agent ends the redirect.
    fn on_neighbour(&mut self, ev: &Event) {
        let Event::NeighNew(index, addr, n) = ev else {
            return;
        };
        let (Some(mac), true) = (n.mac, n.state & NUD_LIVE != 0) else {
            return;
        };
        if *index != self.dp.lan_index() {
            return;
        }
        let (t, addr) = (now(), *addr);
        self.with_exec(false, |agent, _, ex| agent.lan_neighbour(t, addr, mac, ex));
    }

    /// SIGHUP: a valid new config replaces the running one; an invalid
    /// one changes nothing. Peers (added, removed, reordered, new keys or
    /// prefixes), limits and timers are taken in place: the bindings of
    /// the peers that stay, and their kernel state, are not touched (their
    /// sessions lose no packet); a removed peer's bindings end and it is
    /// told. Anything else (interfaces, our id, endpoint, port or
    /// prefixes, the backend, the kernel numbers) restarts the data
    /// plane, keeping the bindings whose peers remain.
    fn reload(mut self) -> Self {
        let mut cfg = match config::load(&self.cfg_path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, keeping the running configuration: {e}");
                return self;
            }
        };
        if cfg.follow_wan {
            cfg.agent.endpoint = wan_address(&cfg.wan_ifname).unwrap_or(self.cfg.agent.endpoint);
        }
        // The agent takes the new peers first either way: a removed peer's
        // bindings end with a TunnelRelease even when the data plane then
        // restarts (which restores only the bindings of the peers that stay).
        let (t, agent_cfg) = (now(), cfg.agent.clone());
        let map = self.with_exec(false, |agent, _, ex| agent.reconfigure(t, agent_cfg, ex));
        if map.is_some() && self.dp.reloads_in_place(&cfg) {
            match self.dp.reconfigure(&cfg) {
                Ok(()) => {
                    // A changed accounting file or interval, and
                    // accounts for the peers added.
                    let a = self.dp.take_accounts();
                    self.dp.keep_accounts(
                        Some(a),
                        &accounting_file(&cfg, &self.dir),
                        cfg.accounting_interval_ms,
                        event::now_ms(),
                    );
                    info!(
                        "configuration reloaded in place, {} peers",
                        cfg.agent.peers.len()
                    );
                    self.cfg = cfg;
                    self.dirty = true;
                    return self;
                }
                Err(e) => error!("reload in place failed ({e}); restarting the data plane"),
            }
        }
        self.restart(cfg)
    }

    /// An address changed somewhere: if we follow the WAN's and it is not
    /// our endpoint any more, the data plane restarts on the new one
    /// (tunnels' local end, sockets) keeping the bindings, and the peers
    /// are told (`Daemon::start`). An address gone with none new (the
    /// WAN down) changes nothing: nobody can reach us anyway.
    fn follow_wan(self) -> Self {
        if !self.cfg.follow_wan {
            return self;
        }
        match wan_address(&self.cfg.wan_ifname) {
            Some(a) if a != self.cfg.agent.endpoint && Some(a) != self.failed_endpoint => {
                info!(
                    "WAN address of {} changed from {} to {a}: following it",
                    self.cfg.wan_ifname, self.cfg.agent.endpoint
                );
                let mut cfg = self.cfg.clone();
                cfg.agent.endpoint = a;
                let d = self.restart(cfg);
                d.with_failed(a)
            }
            _ => self,
        }
    }

    /// After a restart onto `a`: if it did not take (the previous
    /// configuration runs again), remember not to try `a` again until the
    /// WAN's address changes once more.
    fn with_failed(mut self, a: Ipv4Addr) -> Self {
        self.failed_endpoint = (self.cfg.agent.endpoint != a).then_some(a);
        self
    }

    /// A request on the status socket: `status`, or `reset-traffic
    /// [<peer>]` (the operator's reset of the accounting).
    fn answer(&mut self, req: &str, started_ms: u64) -> String {
        let mut words = req.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("status"), None, _) => status::json(
                &self.agent,
                &mut self.dp,
                self.cfg.follow_wan,
                started_ms,
                event::now_ms(),
            ),
            (Some("reset-traffic"), peer, None) => match self.dp.reset_traffic(peer) {
                Ok(()) => {
                    info!("traffic counters of {} reset", peer.unwrap_or("every peer"));
                    "{\"ok\":true}".into()
                }
                Err(e) => format!("{{\"error\":{}}}", sims_daemon::json::q(&e)),
            },
            _ => format!(
                "{{\"error\":{}}}",
                sims_daemon::json::q(&format!("unknown request '{req}'"))
            ),
        }
    }

    /// The WAN device was recreated (a PPPoE reconnect, even with the same
    /// address): SO_BINDTODEVICE bound the socket to the old device's
    /// index, so bind a new one.
    fn rebind_wan(&mut self) {
        let now = link_index(&self.cfg.wan_ifname);
        if now.is_none() || now == self.wan_index {
            return;
        }
        match bind_wan(&self.cfg) {
            Ok(s) => {
                info!("WAN socket bound to the new {}", self.cfg.wan_ifname);
                self.wan = s;
                self.wan_index = now;
            }
            Err(e) => warn!("{e}"),
        }
    }

    /// The data plane and the agent started again under `cfg`, from the
    /// agent's saved state (the previous configuration if `cfg` fails).
    fn restart(self, cfg: Config) -> Self {
        let saved = self.agent.save(now());
        let (path, dir) = (self.cfg_path.clone(), self.dir.clone());
        let old_cfg = self.cfg.clone();
        let mut old = self;
        old.dp.shutdown();
        let accounts = old.dp.take_accounts();
        drop(old);
        match Daemon::start(
            cfg,
            &path,
            &dir,
            Some(saved.clone()),
            Some(accounts.clone()),
        ) {
            Ok(d) => {
                info!("configuration reloaded, data plane restarted");
                d
            }
            Err(e) => {
                error!("reload failed ({e}); restarting with the previous configuration");
                match Daemon::start(old_cfg, &path, &dir, Some(saved), Some(accounts)) {
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

/// What each polled descriptor is, so the loop dispatches by name.
#[derive(Clone, Copy)]
enum Slot {
    Signals,
    Monitor,
    Status,
    Lan,
    Wan,
    /// The userspace backend's raw ipip socket.
    RawIpip,
    /// A peer's TUN device (userspace backend), by its kernel slot.
    Tun(usize),
}

pub fn run(cfg_path: &str, dir: &Path) -> Result<(), String> {
    let cfg = config::load(cfg_path).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let signals = Signals::open().map_err(|e| format!("signals: {e}"))?;
    let Some(cfg) = with_endpoint(cfg, cfg_path, &signals) else {
        return Ok(());
    };
    let mut mon = Monitor::with_neighbours().map_err(|e| format!("netlink monitor: {e}"))?;
    let saved = std::fs::read(dir.join(STATE_FILE)).ok();
    let mut d = Daemon::start(cfg, cfg_path, dir, saved, None)?;
    let status = StatusSocket::bind(&dir.join(SOCKET_FILE))?;
    let started_ms = event::now_ms();
    let mut buf = vec![0u8; 65_536];
    // Reused every turn of the loop: no allocation per wakeup.
    let mut slots: Vec<(Slot, RawFd)> = Vec::new();
    let mut fds: Vec<RawFd> = Vec::new();
    loop {
        let now_ms = event::now_ms();
        let next = d.agent.poll_timeout().unwrap_or(u64::MAX);
        let wait = next.saturating_sub(now_ms).min(1000) as i32;
        slots.clear();
        slots.extend([
            (Slot::Signals, signals.fd()),
            (Slot::Monitor, mon.fd()),
            (Slot::Status, status.fd()),
            (Slot::Lan, d.lan.as_raw_fd()),
            (Slot::Wan, d.wan.as_raw_fd()),
        ]);
        slots.extend(d.dp.raw_fd().map(|fd| (Slot::RawIpip, fd)));
        slots.extend(d.dp.tun_fds().into_iter().map(|(p, fd)| (Slot::Tun(p), fd)));
        fds.clear();
        fds.extend(slots.iter().map(|(_, fd)| *fd));
        let ready = event::poll_readable(&fds, wait).map_err(|e| format!("poll: {e}"))?;
        for i in ready {
            let Some(&(slot, _)) = slots.get(i) else {
                continue;
            };
            match slot {
                Slot::Signals => {
                    while let Some(sig) = signals.next() {
                        if sig == libc::SIGHUP {
                            info!("SIGHUP: reloading {}", d.cfg_path);
                            d = d.reload();
                        } else {
                            info!("signal {sig}: shutting down");
                            d.save(true);
                            d.dp.shutdown();
                            return Ok(());
                        }
                    }
                }
                Slot::Monitor => {
                    let events = mon.recv().unwrap_or_default();
                    let overrun = mon.take_overrun();
                    let lan_before = d.dp.lan_index();
                    let mut addr_changed = overrun;
                    for ev in &events {
                        if let Err(e) = d.dp.on_event(ev) {
                            warn!("resync: {e}");
                        }
                        d.on_neighbour(ev);
                        addr_changed |= matches!(
                            ev,
                            Event::AddrNew(_) | Event::AddrDel(_) | Event::LinkNew(_)
                        );
                    }
                    if overrun {
                        if let Err(e) = d.dp.resync() {
                            warn!("resync: {e}");
                        }
                    }
                    if d.dp.lan_index() != lan_before {
                        d.rebind_lan();
                    }
                    if addr_changed {
                        d = d.follow_wan();
                        d.rebind_wan();
                    }
                }
                Slot::Status => status.serve(|req| d.answer(req, started_ms)),
                Slot::Lan => d.on_datagram(true, &mut buf),
                Slot::Wan => d.on_datagram(false, &mut buf),
                Slot::RawIpip => d.dp.pump_raw(&mut buf),
                Slot::Tun(p) => d.dp.pump_tun(p, &mut buf),
            }
        }
        let t = now();
        d.with_exec(false, |agent, _, ex| agent.handle_timeout(t, ex));
        d.save(false);
        d.dp.save_accounts(false, t.ms);
    }
}
