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
mod oldroutes;
mod status;

use std::path::Path;
use std::process::ExitCode;

use sims_daemon::args::{exit_status, usage_error, Args as Words};
use sims_daemon::{logger, status as status_socket};

use client::{run, RunOptions, SOCKET_FILE};

const USAGE: &str = "\
Usage: sims-node -i <interface> [options] | sims-node [--state-dir <dir>] status [--json]

SIMS Mobile Node.

Options:
  -i, --iface <name>    the interface that moves between networks (e.g. wlan0)
  --state-dir <dir>     directory for the status socket (default /var/run/sims-node)
  --grace-ms <ms>       how long an old address may have no sockets before
                        it is released (default 2000)
  --port <port>         SIMS control port (default 4434)
  --rto-min-ms <ms>     least TCP retransmission timeout of the sessions on
                        the node's SIMS addresses (default 0: the kernel's,
                        200; docs/BENCHMARKS.md measures what a lower one gives)
  --no-early            do not register old addresses before DHCP finishes
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
    rto_min_ms: u32,
    early: bool,
    cmd: Cmd,
}

fn parse_args(mut a: Words) -> Result<Args, String> {
    let mut args = Args {
        iface: None,
        state_dir: "/var/run/sims-node".into(),
        grace_ms: 2000,
        port: sims_proto::DEFAULT_PORT,
        rto_min_ms: 0,
        early: true,
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
            ("--rto-min-ms", _) => args.rto_min_ms = a.value(&w)?,
            ("--no-early", _) => args.early = false,
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
    let args = match parse_args(Words::from_env()) {
        Ok(a) => a,
        Err(e) => return usage_error("sims-node", &e, USAGE),
    };
    logger::init_logger();
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
            return status_socket::print_status(
                &Path::new(&args.state_dir).join(SOCKET_FILE),
                "sims-node",
                *json,
                |out| out.replace(",\"", ", \"").replace("},{", "},\n  {"),
            );
        }
        Cmd::Run => args.iface.clone().unwrap_or_default(),
    };
    exit_status(run(&RunOptions {
        iface,
        dir: args.state_dir.into(),
        grace_ms: args.grace_ms,
        port: args.port,
        rto_min_ms: (args.rto_min_ms > 0).then_some(args.rto_min_ms),
        early: args.early,
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
        assert!(a.cmd == Cmd::Run && a.iface.as_deref() == Some("wlan0"));
        assert_eq!((a.grace_ms, a.port), (2000, sims_proto::DEFAULT_PORT));
        assert!(USAGE.contains(&format!("(default {})", sims_proto::DEFAULT_PORT)));
        assert!(a.early && a.rto_min_ms == 0);
        let a =
            parse("--iface=eth0 --grace-ms 500 --port 5000 --rto-min-ms 20 --no-early").unwrap();
        assert_eq!((a.grace_ms, a.port), (500, 5000));
        assert!(!a.early && a.rto_min_ms == 20);
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
