//! What both daemons' command lines share: a stderr logger that reads
//! `RUST_LOG`, an option reader, and the status-socket client.
//!
//! Hand-written rather than env_logger and argh: on mipsel those two cost
//! simsd 22 KB of a 400 KB budget for a dozen options and one log format.

use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

/// Logs `[<unix seconds>.<ms> LEVEL target] message` lines to stderr.
struct StderrLog {
    default: LevelFilter,
    /// `target=level` rules; the longest matching target wins.
    rules: Vec<(String, LevelFilter)>,
}

impl StderrLog {
    fn level_for(&self, target: &str) -> LevelFilter {
        self.rules
            .iter()
            .filter(|(t, _)| {
                target == t
                    || (target.starts_with(t.as_str()) && target[t.len()..].starts_with("::"))
            })
            .max_by_key(|(t, _)| t.len())
            .map_or(self.default, |(_, l)| *l)
    }
}

impl Log for StderrLog {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level_for(m.target())
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = String::with_capacity(128);
        let _ = writeln!(
            line,
            "[{}.{:03} {:<5} {}] {}",
            t.as_secs(),
            t.subsec_millis(),
            r.level(),
            r.target(),
            r.args()
        );
        // One write per line: lines of two threads do not interleave.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Parses a `RUST_LOG` value: comma-separated `level` (the default) and
/// `target=level` items, as env_logger reads them (without its regex
/// filter). Returns the default, the rules, and the items not understood.
fn parse_filter(
    spec: &str,
    default: LevelFilter,
) -> (LevelFilter, Vec<(String, LevelFilter)>, Vec<String>) {
    let mut out = default;
    let mut rules = Vec::new();
    let mut bad = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some((target, level)) => match LevelFilter::from_str(level.trim()) {
                Ok(l) => rules.push((target.trim().to_string(), l)),
                Err(_) => bad.push(item.to_string()),
            },
            None => match LevelFilter::from_str(item) {
                Ok(l) => out = l,
                // A bare target name enables everything for it.
                Err(_) if !item.contains(char::is_whitespace) => {
                    rules.push((item.to_string(), LevelFilter::Trace))
                }
                Err(_) => bad.push(item.to_string()),
            },
        }
    }
    (out, rules, bad)
}

/// Installs the stderr logger: `RUST_LOG` if set, else `info`.
pub fn init_logger() {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let (default, rules, bad) = parse_filter(&spec, LevelFilter::Info);
    let max = rules.iter().map(|(_, l)| *l).fold(default, Ord::max);
    // Leaked once: the logger lives as long as the process.
    let logger: &'static StderrLog = Box::leak(Box::new(StderrLog { default, rules }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
    for b in bad {
        log::warn!("RUST_LOG: ignoring '{b}' (not a level or target=level)");
    }
}

/// The command line after the program name, one word at a time, with
/// `--name=value` taken apart.
pub struct Args {
    words: std::vec::IntoIter<String>,
    /// The value of the last `--name=value`, until taken.
    inline: Option<(String, String)>,
}

impl Args {
    pub fn from_env() -> Args {
        Args::new(std::env::args().skip(1).collect())
    }

    pub fn new(words: Vec<String>) -> Args {
        Args {
            words: words.into_iter(),
            inline: None,
        }
    }

    /// The next option or word. Err if the previous option was a switch
    /// given a value (`--json=yes`).
    pub fn next_word(&mut self) -> Result<Option<String>, String> {
        if let Some((name, _)) = self.inline.take() {
            return Err(format!("{name} takes no value"));
        }
        let Some(w) = self.words.next() else {
            return Ok(None);
        };
        if let Some((name, value)) = w.strip_prefix("--").and_then(|r| r.split_once('=')) {
            let name = format!("--{name}");
            self.inline = Some((name.clone(), value.to_string()));
            return Ok(Some(name));
        }
        Ok(Some(w))
    }

    /// The value of option `name` (just returned by `next_word`).
    pub fn value<T: FromStr>(&mut self, name: &str) -> Result<T, String> {
        let v = match self.inline.take() {
            Some((_, v)) => v,
            None => self
                .words
                .next()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        v.parse()
            .map_err(|_| format!("{name}: '{v}' is not a valid value"))
    }
}

/// Asks a daemon's status socket for its JSON report.
pub fn query_status(sock: &Path, daemon: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(sock)
        .map_err(|e| format!("{daemon} is not running ({}: {e})", sock.display()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("reading {daemon} status: {e}"))?;
    Ok(out)
}

/// `<daemon> status [--json]`: prints the daemon's JSON report as it is,
/// or through `human` (line breaks for people); exit 1 if no daemon
/// answers on `sock`.
pub fn print_status(sock: &Path, daemon: &str, json: bool, human: fn(&str) -> String) -> ExitCode {
    match query_status(sock, daemon) {
        Ok(out) => {
            println!("{}", if json { out } else { human(&out) });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    fn words(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from).collect())
    }

    #[test]
    fn options_with_separate_and_inline_values() {
        let mut a = words("-c /etc/x --state-dir=/run/s status --json");
        assert_eq!(a.next_word().unwrap().as_deref(), Some("-c"));
        assert_eq!(a.value::<String>("-c").unwrap(), "/etc/x");
        assert_eq!(a.next_word().unwrap().as_deref(), Some("--state-dir"));
        assert_eq!(a.value::<String>("--state-dir").unwrap(), "/run/s");
        assert_eq!(a.next_word().unwrap().as_deref(), Some("status"));
        assert_eq!(a.next_word().unwrap().as_deref(), Some("--json"));
        assert_eq!(a.next_word().unwrap(), None);
    }

    #[test]
    fn bad_values_and_switch_values_are_errors() {
        let mut a = words("--port nope");
        a.next_word().unwrap();
        assert_eq!(
            a.value::<u16>("--port").unwrap_err(),
            "--port: 'nope' is not a valid value"
        );
        let mut a = words("--port");
        a.next_word().unwrap();
        assert_eq!(
            a.value::<u16>("--port").unwrap_err(),
            "--port needs a value"
        );
        let mut a = words("--json=yes");
        a.next_word().unwrap();
        assert_eq!(a.next_word().unwrap_err(), "--json takes no value");
    }

    #[test]
    fn rust_log_levels_and_targets() {
        let (d, rules, bad) = parse_filter("", LevelFilter::Info);
        assert_eq!((d, rules.len(), bad.len()), (LevelFilter::Info, 0, 0));
        let (d, rules, bad) = parse_filter(
            "warn,simsd=debug, sims_linux::netlink=trace,x=loud",
            LevelFilter::Info,
        );
        assert_eq!(d, LevelFilter::Warn);
        assert_eq!(bad, vec!["x=loud".to_string()]);
        let log = StderrLog { default: d, rules };
        assert_eq!(log.level_for("simsd"), LevelFilter::Debug);
        assert_eq!(log.level_for("simsd::dataplane"), LevelFilter::Debug);
        assert_eq!(log.level_for("simsdx"), LevelFilter::Warn);
        assert_eq!(log.level_for("sims_linux::netlink"), LevelFilter::Trace);
        assert_eq!(log.level_for("sims_linux::tun"), LevelFilter::Warn);
        assert!(log.enabled(
            &Metadata::builder()
                .level(Level::Debug)
                .target("simsd")
                .build()
        ));
        assert!(!log.enabled(
            &Metadata::builder()
                .level(Level::Info)
                .target("other")
                .build()
        ));
    }
}
