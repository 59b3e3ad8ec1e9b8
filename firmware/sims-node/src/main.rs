//! sims-node, the SIMS Mobile Node client: a thin poll loop around the
//! sans-IO node of `sims-proto`. It watches the interface's addresses and
//! routes over netlink (the DHCP client owns the current address), keeps
//! old addresses as /32s, points the default route's source at the current
//! address, and counts sockets on old addresses through sock_diag.
//!
//! `client.rs` is the loop and the node's actions, `addrs.rs` the kernel
//! state a node keeps right (held /32s, the default route's source, ARP),
//! `status.rs` its report.

mod addrs;
mod client;
mod ifaces;
mod natlan;
mod oldroutes;
mod status;

use std::path::Path;
use std::process::ExitCode;

use sims_daemon::args::{exit_status, usage_error, Args as Words};
use sims_daemon::{logger, status as status_socket};

use client::{run, RunOptions, SOCKET_FILE};

const USAGE: &str = "\
Usage: sims-node -i <interface> [options] | sims-node [--run-dir <dir>] status [--json]

SIMS Mobile Node.

Options:
  -i, --iface <name>    the interface that moves between networks (e.g. wlan0);
                        repeated for several (Wi-Fi and a dock's Ethernet):
                        the one in use is the one with the least metric of
                        its default route
  --state-dir <dir>     where the node's identity and credentials are kept
                        (default /var/lib/sims-node: they must survive a
                        reboot, or every relayed address is lost)
  --run-dir <dir>       directory for the status socket (default
                        /run/sims-node; the state dir if only that is given)
  --grace-ms <ms>       how long an old address may have no sockets before
                        it is released (default 2000)
  --port <port>         SIMS control port (default 4434)
  --rto-min-ms <ms>     least TCP retransmission timeout of the sessions on
                        the node's SIMS addresses (default 0: the kernel's,
                        200; docs/BENCHMARKS.md measures what a lower one gives)
  --no-early            do not register old addresses before DHCP finishes
  --router              a travel router: the LAN behind it is NATed to the
                        current address by sims-node (snat, table
                        ip sims_node), and its clients' sessions keep old
                        addresses as the node's own do
  --version             print the version and exit
  -h, --help            print this help

Commands:
  status [--json]       the current network and its agent, each old address
                        with the connections that keep it and where it is
                        relayed (--json: the same for scripts)
";

#[derive(PartialEq)]
enum Cmd {
    Run,
    Status { json: bool },
    Version,
    Help,
}

struct Args {
    ifaces: Vec<String>,
    state_dir: Option<String>,
    run_dir: Option<String>,
    grace_ms: u64,
    port: u16,
    rto_min_ms: u32,
    early: bool,
    router: bool,
    cmd: Cmd,
}

fn parse_args(mut a: Words) -> Result<Args, String> {
    let mut args = Args {
        ifaces: Vec::new(),
        state_dir: None,
        run_dir: None,
        grace_ms: 2000,
        port: sims_proto::DEFAULT_PORT,
        rto_min_ms: 0,
        early: true,
        router: false,
        cmd: Cmd::Run,
    };
    while let Some(w) = a.next_word()? {
        match (w.as_str(), &mut args.cmd) {
            ("-h" | "--help", _) => args.cmd = Cmd::Help,
            ("--version", _) => args.cmd = Cmd::Version,
            ("-i" | "--iface", _) => args.ifaces.push(a.value(&w)?),
            ("--state-dir", _) => args.state_dir = Some(a.value(&w)?),
            ("--run-dir", _) => args.run_dir = Some(a.value(&w)?),
            ("--grace-ms", _) => args.grace_ms = a.value(&w)?,
            ("--port", _) => args.port = a.value(&w)?,
            ("--rto-min-ms", _) => args.rto_min_ms = a.value(&w)?,
            ("--no-early", _) => args.early = false,
            ("--router", _) => args.router = true,
            ("status", Cmd::Run) => args.cmd = Cmd::Status { json: false },
            ("--json", Cmd::Status { json }) => *json = true,
            _ => return Err(format!("unexpected argument '{w}'")),
        }
    }
    if args.cmd == Cmd::Run && args.ifaces.is_empty() {
        return Err("-i <interface> is required".into());
    }
    Ok(args)
}

/// Where the state file and the status socket live.
fn dirs(a: &Args) -> (String, String) {
    let state = a
        .state_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    let run = (a.run_dir.clone())
        .or_else(|| a.state_dir.clone())
        .unwrap_or_else(|| DEFAULT_RUN_DIR.into());
    (state, run)
}

const DEFAULT_STATE_DIR: &str = "/var/lib/sims-node";
const DEFAULT_RUN_DIR: &str = "/run/sims-node";

fn main() -> ExitCode {
    let args = match parse_args(Words::from_env()) {
        Ok(a) => a,
        Err(e) => return usage_error("sims-node", &e, USAGE),
    };
    logger::init_logger();
    let (state_dir, run_dir) = dirs(&args);
    let iface = match &args.cmd {
        Cmd::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Cmd::Version => {
            println!("sims-node {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Cmd::Status { json: true } => {
            return status_socket::print_status(
                &Path::new(&run_dir).join(SOCKET_FILE),
                "sims-node",
                true,
                |out| out.to_string(),
            );
        }
        Cmd::Status { json: false } => {
            let sock = Path::new(&run_dir).join(SOCKET_FILE);
            return match status_socket::query(&sock, "sims-node", "report") {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::Run => args.ifaces.clone(),
    };
    exit_status(run(&RunOptions {
        ifaces: iface,
        state_dir: state_dir.into(),
        run_dir: run_dir.into(),
        grace_ms: args.grace_ms,
        port: args.port,
        rto_min_ms: (args.rto_min_ms > 0).then_some(args.rto_min_ms),
        early: args.early,
        router: args.router,
    }))
}

#[cfg(test)]
mod args_tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        parse_args(Words::from_line(s))
    }

    #[test]
    fn command_lines() {
        let a = parse("-i wlan0").unwrap();
        assert!(a.cmd == Cmd::Run && a.ifaces == ["wlan0"]);
        assert_eq!(parse("-i wlan0 -i eth0").unwrap().ifaces, ["wlan0", "eth0"]);
        assert_eq!((a.grace_ms, a.port), (2000, sims_proto::DEFAULT_PORT));
        assert!(USAGE.contains(&format!("(default {})", sims_proto::DEFAULT_PORT)));
        assert!(a.early && a.rto_min_ms == 0);
        let a =
            parse("--iface=eth0 --grace-ms 500 --port 5000 --rto-min-ms 20 --no-early").unwrap();
        assert_eq!((a.grace_ms, a.port), (500, 5000));
        assert!(!a.early && a.rto_min_ms == 20);
        let a = parse("--state-dir /tmp/n status --json").unwrap();
        assert!(a.cmd == Cmd::Status { json: true });
        assert_eq!(dirs(&a), ("/tmp/n".into(), "/tmp/n".into()));
        let a = parse("-i wlan0").unwrap();
        assert_eq!(
            dirs(&a),
            ("/var/lib/sims-node".into(), "/run/sims-node".into())
        );
        let a = parse("-i wlan0 --state-dir /s --run-dir /r").unwrap();
        assert_eq!(dirs(&a), ("/s".into(), "/r".into()));
        assert_eq!(parse("").err().unwrap(), "-i <interface> is required");
        assert_eq!(
            parse("-i x --port 70000").err().unwrap(),
            "--port: '70000' is not a valid value"
        );
    }
}
