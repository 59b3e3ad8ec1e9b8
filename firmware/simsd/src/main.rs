//! simsd, the SIMS Mobility Agent: a thin poll loop around the sans-IO
//! agent of `sims-proto`, executing its actions on the kernel.

mod daemon;
mod dataplane;
mod exec;
mod nft;
mod status;

use std::path::Path;
use std::process::ExitCode;

use sims_daemon::args::{exit_status, usage_error, Args as Words};
use sims_daemon::{logger, status as status_socket};
use simsd::config;

const USAGE: &str = "\
Usage: simsd [-c <config>] [--state-dir <dir>] [status [--json] | reset-traffic [<peer>] | check | keygen]

SIMS Mobility Agent.

Options:
  -c, --config <file>   config file, UCI syntax (default /etc/config/sims)
  --state-dir <dir>     status socket and saved state (default /var/run/sims)
  --version             print the version and exit
  -h, --help            print this help

Commands:
  status [--json]       show the running daemon's bindings, peers, counters
  reset-traffic [<peer>]
                        count a peer's traffic (every peer's) from zero, now
  check                 check the config file and exit
  keygen                print a new random peer key (64 hex digits)
";

#[derive(PartialEq)]
enum Cmd {
    Run,
    Status { json: bool },
    ResetTraffic { peer: Option<String> },
    Check,
    Keygen,
    Version,
    Help,
}

struct Args {
    config: String,
    state_dir: String,
    cmd: Cmd,
}

fn parse_args(mut a: Words) -> Result<Args, String> {
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
            ("reset-traffic", Cmd::Run) => args.cmd = Cmd::ResetTraffic { peer: None },
            (id, Cmd::ResetTraffic { peer: p @ None }) if !id.starts_with('-') => {
                let valid = (1..=10).contains(&id.len())
                    && id.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b)
                    });
                if !valid {
                    return Err(format!("'{id}' is not a peer id (1-10 of a-z 0-9 - _)"));
                }
                *p = Some(id.to_string())
            }
            ("keygen", Cmd::Run) => args.cmd = Cmd::Keygen,
            ("--json", Cmd::Status { json }) => *json = true,
            _ => return Err(format!("unexpected argument '{w}'")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args(Words::from_env()) {
        Ok(a) => a,
        Err(e) => return usage_error("simsd", &e, USAGE),
    };
    logger::init_logger();
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
        Cmd::Status { json } => status_socket::print_status(
            &Path::new(&args.state_dir).join(daemon::SOCKET_FILE),
            "simsd",
            json,
            |out| out.replace("},{", "},\n  {").replace(":[{", ":[\n  {"),
        ),
        Cmd::ResetTraffic { peer } => {
            let req = match &peer {
                Some(p) => format!("reset-traffic {p}"),
                None => "reset-traffic".into(),
            };
            let sock = Path::new(&args.state_dir).join(daemon::SOCKET_FILE);
            match status_socket::query(&sock, "simsd", &req) {
                Ok(out) if out.starts_with("{\"ok\"") => {
                    println!(
                        "traffic of {} counted from zero",
                        peer.as_deref().unwrap_or("every peer")
                    );
                    ExitCode::SUCCESS
                }
                Ok(out) => {
                    eprintln!("simsd: {out}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
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
        Cmd::Keygen => match config::keygen() {
            Ok(key) => {
                print!("{key}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("simsd: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run => exit_status(daemon::run(&args.config, Path::new(&args.state_dir))),
    }
}

#[cfg(test)]
mod args_tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        parse_args(Words::from_line(s))
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
        assert!(parse("keygen").unwrap().cmd == Cmd::Keygen);
        assert!(parse("reset-traffic").unwrap().cmd == Cmd::ResetTraffic { peer: None });
        assert!(
            parse("reset-traffic ma-b").unwrap().cmd
                == Cmd::ResetTraffic {
                    peer: Some("ma-b".into())
                }
        );
        assert!(parse("reset-traffic ma-b ma-c").is_err());
        assert!(parse("reset-traffic MA").is_err());
        assert!(parse("reset-traffic toolongpeerid").is_err());
        assert!(parse("-c /tmp/x keygen").unwrap().cmd == Cmd::Keygen);
        assert_eq!(
            parse("keygen check").err().unwrap(),
            "unexpected argument 'check'"
        );
        assert_eq!(
            parse("check keygen").err().unwrap(),
            "unexpected argument 'keygen'"
        );
        assert_eq!(
            parse("keygen --json").err().unwrap(),
            "unexpected argument '--json'"
        );
        assert!(USAGE.contains("| keygen]") && USAGE.contains("\n  keygen "));
    }
}
