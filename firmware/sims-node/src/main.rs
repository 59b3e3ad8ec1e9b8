//! sims-node, the SIMS Mobile Node client: a thin poll loop around the
//! sans-IO node of `sims-proto`. It watches the interface's addresses and
//! routes over netlink (the DHCP client owns the current address), keeps
//! old addresses as /32s, points the default route's source at the current
//! address, and counts sockets on old addresses through sock_diag.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use log::{debug, error, info, warn};
use sims_linux::cli;
use sims_linux::event::{self, Signals};
use sims_linux::monitor::{Event, Monitor};
use sims_linux::netlink::{Netlink, Route};
use sims_linux::{sockdiag, udp};
use sims_proto::node::{Action, Node, NodeConfig};

const MAIN_TABLE: u32 = 254;
const CENSUS_MS: u64 = 250;

const USAGE: &str = "\
Usage: sims-node -i <interface> [options] | sims-node [--state-dir <dir>] status [--json]

SIMS Mobile Node.

Options:
  -i, --iface <name>    the interface that moves between networks (e.g. wlan0)
  --state-dir <dir>     directory for the status socket (default /var/run/sims-node)
  --grace-ms <ms>       how long an old address may have no sockets before
                        it is released (default 2000)
  --port <port>         SIMS control port (default 4434)
  --version             print the version and exit
  -h, --help            print this help

Commands:
  status [--json]       show the node's current address, agent and bindings
";

#[derive(PartialEq)]
enum Cmd {
    Run,
    Status { json: bool },
    Version,
    Help,
}

struct Args {
    iface: Option<String>,
    state_dir: String,
    grace_ms: u64,
    port: u16,
    cmd: Cmd,
}

fn parse_args(mut a: cli::Args) -> Result<Args, String> {
    let mut args = Args {
        iface: None,
        state_dir: "/var/run/sims-node".into(),
        grace_ms: 2000,
        port: sims_proto::DEFAULT_PORT,
        cmd: Cmd::Run,
    };
    while let Some(w) = a.next_word()? {
        match (w.as_str(), &mut args.cmd) {
            ("-h" | "--help", _) => args.cmd = Cmd::Help,
            ("--version", _) => args.cmd = Cmd::Version,
            ("-i" | "--iface", _) => args.iface = Some(a.value(&w)?),
            ("--state-dir", _) => args.state_dir = a.value(&w)?,
            ("--grace-ms", _) => args.grace_ms = a.value(&w)?,
            ("--port", _) => args.port = a.value(&w)?,
            ("status", Cmd::Run) => args.cmd = Cmd::Status { json: false },
            ("--json", Cmd::Status { json }) => *json = true,
            _ => return Err(format!("unexpected argument '{w}'")),
        }
    }
    if args.cmd == Cmd::Run && args.iface.is_none() {
        return Err("-i <interface> is required".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args(cli::Args::from_env()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sims-node: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    cli::init_logger();
    let iface = match &args.cmd {
        Cmd::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Cmd::Version => {
            println!("sims-node {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Cmd::Status { json } => {
            return cli::print_status(
                &Path::new(&args.state_dir).join("sims-node.sock"),
                "sims-node",
                *json,
                |out| out.replace(",\"", ", \"").replace("},{", "},\n  {"),
            );
        }
        Cmd::Run => args.iface.clone().unwrap_or_default(),
    };
    match run(&args, &iface) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

struct Client {
    iface: String,
    index: u32,
    nl: Netlink,
    node: Node,
    sock: UdpSocket,
    port: u16,
    /// Old addresses kept as /32 on the interface.
    held: BTreeSet<Ipv4Addr>,
    state_file: PathBuf,
    /// What the state file holds.
    saved: Vec<u8>,
}

impl Client {
    /// Writes the node's identity and credentials when they changed
    /// (owner-only: it holds the secret key).
    fn save(&mut self) {
        let data = self.node.save();
        if data == self.saved {
            return;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.state_file.with_extension("tmp");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&data))
            .and_then(|_| std::fs::rename(&tmp, &self.state_file));
        match written {
            Ok(()) => self.saved = data,
            Err(e) => warn!("saving {}: {e}", self.state_file.display()),
        }
    }

    /// The DHCP address: the interface's address with a real prefix.
    fn dhcp_address(&mut self) -> Option<Ipv4Addr> {
        let addrs = self.nl.addrs(Some(self.index)).ok()?;
        addrs.iter().find(|a| a.prefix_len < 32).map(|a| a.addr)
    }

    fn execute(&mut self, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Send { dst, data } => {
                    let sent = match self.node.current() {
                        Some(src) => udp::send_from(&self.sock, &data, dst, src),
                        None => self.sock.send_to(&data, dst),
                    };
                    if let Err(e) = sent {
                        debug!("send to {dst}: {e}");
                    }
                }
                Action::Broadcast { data } => {
                    let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.port);
                    let sent = match self.node.current() {
                        Some(src) => udp::send_from(&self.sock, &data, dst, src),
                        None => self.sock.send_to(&data, dst),
                    };
                    if let Err(e) = sent {
                        debug!("solicitation: {e}");
                    }
                }
                Action::HoldAddress(addr) => {
                    self.held.insert(addr);
                    self.hold(addr);
                }
                Action::DropAddress(addr) => {
                    if self.held.remove(&addr) {
                        info!("dropping old address {addr}");
                        let _ = self.nl.addr_del(self.index, addr, 32);
                    }
                }
            }
        }
    }

    /// Put a held /32 back (the DHCP client flushed it, or it was never
    /// there): every missing moment stretches the old sessions' stall.
    fn hold(&mut self, addr: Ipv4Addr) {
        match self.nl.addr_add(self.index, addr, 32, true) {
            Ok(()) => info!("holding old address {addr}/32 on {}", self.iface),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => warn!("cannot hold {addr}: {e}"),
        }
    }

    /// New connections must use the current address: give the default
    /// route through this interface `src <current>`.
    fn fix_default_route(&mut self) {
        let Some(cur) = self.node.current() else {
            return;
        };
        let Ok(routes) = self.nl.routes(MAIN_TABLE) else {
            return;
        };
        for r in routes {
            if r.dst_len == 0 && r.oif == Some(self.index) && r.prefsrc != Some(cur) {
                let fixed = Route {
                    prefsrc: Some(cur),
                    ..r
                };
                match self.nl.route_replace(&fixed) {
                    Ok(()) => info!("default route via {:?} now has src {cur}", r.gateway),
                    Err(e) => warn!("default route src: {e}"),
                }
            }
        }
    }

    fn address_changed(&mut self) {
        let cur = self.dhcp_address();
        if cur != self.node.current() {
            let mut acts = Vec::new();
            self.node.set_address(event::now_ms(), cur, &mut acts);
            self.execute(acts);
            self.fix_default_route();
        }
    }

    fn on_events(&mut self, events: &[Event]) {
        let mut addr_change = false;
        let mut route_change = false;
        for ev in events {
            match ev {
                Event::AddrDel(a) if a.index == self.index => {
                    if a.prefix_len == 32 && self.held.contains(&a.addr) {
                        self.hold(a.addr);
                    }
                    addr_change = true;
                }
                Event::AddrNew(a) if a.index == self.index => addr_change = true,
                Event::LinkNew(l) if l.index == self.index => addr_change = true,
                Event::RouteNew(r) if r.table == MAIN_TABLE && r.dst_len == 0 => {
                    route_change = true
                }
                _ => {}
            }
        }
        if addr_change {
            // A flush removes several at once: re-check every held one.
            let present: Vec<Ipv4Addr> = self
                .nl
                .addrs(Some(self.index))
                .unwrap_or_default()
                .iter()
                .filter(|a| a.prefix_len == 32)
                .map(|a| a.addr)
                .collect();
            let missing: Vec<Ipv4Addr> = self
                .held
                .iter()
                .filter(|a| !present.contains(a))
                .copied()
                .collect();
            for a in missing {
                self.hold(a);
            }
            self.address_changed();
        }
        if route_change {
            self.fix_default_route();
        }
    }

    fn census(&mut self) {
        let old: Vec<Ipv4Addr> = self.node.old_addresses().collect();
        if old.is_empty() {
            return;
        }
        match sockdiag::tcp_socket_counts(&old) {
            Ok(counts) => {
                let mut acts = Vec::new();
                self.node.socket_census(event::now_ms(), &counts, &mut acts);
                self.execute(acts);
            }
            Err(e) => debug!("sock_diag: {e}"),
        }
    }

    fn status_json(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "{{\"iface\":\"{}\",\"node\":\"", self.iface);
        for b in &self.node.key()[..8] {
            let _ = write!(s, "{b:02x}");
        }
        s.push_str("\",\"current\":");
        match self.node.current() {
            Some(c) => {
                let agent = self.node.agent().map(|a| a.id.as_str()).unwrap_or("");
                let _ = write!(
                    s,
                    "{{\"addr\":\"{c}\",\"agent\":\"{agent}\",\"registered\":{}}}",
                    self.node.is_registered()
                );
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"bindings\":[");
        for (i, b) in self.node.bindings().iter().enumerate() {
            let _ = write!(
                s,
                "{}{{\"addr\":\"{}\",\"issuer\":\"{}\",\"state\":\"{}\",\"sockets\":{}}}",
                if i > 0 { "," } else { "" },
                b.addr(),
                b.cred.issuer,
                b.state.as_str(),
                b.sockets
            );
        }
        s.push_str("]}");
        s
    }
}

/// ARP on a moving interface: requests must carry the current address
/// (arp_announce 2), since the new router's reverse-path filter drops ARP
/// from an old address it has not bound yet; and the node must answer ARP
/// for its held /32s (arp_ignore 0 or 1; 2 would ignore them).
fn tune_arp(iface: &str) {
    use sims_linux::sysctl;
    if let Err(e) = sysctl::set_ipv4_conf(iface, "arp_announce", "2") {
        warn!("{iface}: arp_announce: {e}");
    }
    let ignore = sysctl::get(&format!("net/ipv4/conf/{iface}/arp_ignore"));
    if ignore.is_ok_and(|v| v.trim().parse::<u32>().unwrap_or(0) >= 2) {
        if let Err(e) = sysctl::set_ipv4_conf(iface, "arp_ignore", "1") {
            warn!("{iface}: arp_ignore: {e}");
        }
    }
}

fn run(args: &Args, iface: &str) -> Result<(), String> {
    let dir = Path::new(&args.state_dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let signals = Signals::open().map_err(|e| format!("signals: {e}"))?;
    let mut mon = Monitor::open().map_err(|e| format!("netlink monitor: {e}"))?;
    let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    let link = nl
        .link_by_name(iface)
        .map_err(|e| format!("netlink: {e}"))?
        .ok_or_else(|| format!("interface {iface} not found"))?;
    tune_arp(iface);
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, args.port);
    let sock =
        udp::bind_udp(any, Some(iface), true, true).map_err(|e| format!("bind {any}: {e}"))?;
    let mut seed = [0u8; 32];
    sims_linux::random_bytes(&mut seed).map_err(|e| format!("random: {e}"))?;
    let cfg = NodeConfig {
        port: args.port,
        grace_ms: args.grace_ms,
        ..NodeConfig::default()
    };
    let mac = link.mac.unwrap_or_default();
    let req_seed = u32::from_ne_bytes([seed[0], seed[1], seed[2], seed[3]]);
    // The identity and credentials of a previous run (a restart, not a
    // reboot: the state dir is a tmpfs): its held addresses are still on
    // the interface, and with them its relayed sessions.
    let state_file = dir.join("sims-node.state");
    let node = match std::fs::read(&state_file) {
        Ok(data) => match Node::restore(cfg.clone(), &data, mac, req_seed) {
            Some(n) => {
                info!(
                    "restored the node's identity and {} addresses from {}",
                    n.bindings().len(),
                    state_file.display()
                );
                n
            }
            None => {
                warn!("{} unreadable; a new identity", state_file.display());
                Node::new(cfg, seed, mac, req_seed)
            }
        },
        Err(_) => Node::new(cfg, seed, mac, req_seed),
    };
    let mut c = Client {
        state_file,
        saved: Vec::new(),
        iface: iface.to_string(),
        index: link.index,
        nl,
        node,
        sock,
        port: args.port,
        held: BTreeSet::new(),
    };
    let sock_path = dir.join("sims-node.sock");
    let _ = std::fs::remove_file(&sock_path);
    let status =
        UnixListener::bind(&sock_path).map_err(|e| format!("{}: {e}", sock_path.display()))?;
    status.set_nonblocking(true).map_err(|e| e.to_string())?;
    info!("sims-node on {iface}");
    c.address_changed();
    let mut next_census = event::now_ms();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = event::now_ms();
        let until = c.node.poll_timeout().unwrap_or(u64::MAX).min(next_census);
        let wait = until.saturating_sub(now).min(1000) as i32;
        let fds = [
            signals.fd(),
            mon.fd(),
            status.as_raw_fd(),
            c.sock.as_raw_fd(),
        ];
        for i in event::poll_readable(&fds, wait).map_err(|e| format!("poll: {e}"))? {
            match i {
                0 => {
                    if let Some(sig) = signals.next() {
                        if sig != libc::SIGHUP {
                            info!("signal {sig}: exiting (old addresses stay on {iface})");
                            let _ = std::fs::remove_file(&sock_path);
                            return Ok(());
                        }
                    }
                }
                1 => {
                    let events = mon.recv().unwrap_or_default();
                    if mon.take_overrun() {
                        c.on_events(&[Event::LinkNew(link.clone())]);
                    }
                    c.on_events(&events);
                }
                2 => {
                    while let Ok((mut s, _)) = status.accept() {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(c.status_json().as_bytes());
                    }
                }
                _ => {
                    for _ in 0..64 {
                        let Ok((n, SocketAddr::V4(src))) = c.sock.recv_from(&mut buf) else {
                            break;
                        };
                        let mut acts = Vec::new();
                        c.node
                            .handle_datagram(event::now_ms(), src, &buf[..n], &mut acts);
                        c.execute(acts);
                    }
                }
            }
        }
        let now = event::now_ms();
        if now >= next_census {
            c.census();
            next_census = now + CENSUS_MS;
        }
        let mut acts = Vec::new();
        c.node.handle_timeout(now, &mut acts);
        c.execute(acts);
        c.save();
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
        let a = parse("-i wlan0").unwrap();
        assert!(a.cmd == Cmd::Run && a.iface.as_deref() == Some("wlan0"));
        assert_eq!((a.grace_ms, a.port), (2000, sims_proto::DEFAULT_PORT));
        assert!(USAGE.contains(&format!("(default {})", sims_proto::DEFAULT_PORT)));
        let a = parse("--iface=eth0 --grace-ms 500 --port 5000").unwrap();
        assert_eq!((a.grace_ms, a.port), (500, 5000));
        assert!(
            parse("--state-dir /tmp/n status --json").unwrap().cmd == Cmd::Status { json: true }
        );
        assert_eq!(parse("").err().unwrap(), "-i <interface> is required");
        assert_eq!(
            parse("-i x --port 70000").err().unwrap(),
            "--port: '70000' is not a valid value"
        );
    }
}
