//! The daemons' logger: `[<unix seconds>.<ms> LEVEL target] message`
//! lines on stderr (procd and the testbed collect them), filtered by
//! `RUST_LOG` as env_logger reads it.
//!
//! Hand-written rather than env_logger: on mipsel env_logger and argh cost
//! simsd 22 KB of a 400 KB budget for one log format and a dozen options.

use std::fmt::Write as _;
use std::io::Write as _;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

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

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

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
