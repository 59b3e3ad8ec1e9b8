//! The daemons' logger: `[<unix seconds>.<ms> LEVEL target] message`
//! lines on stderr (procd and the testbed collect them), filtered by
//! `RUST_LOG` as env_logger reads it.
//!
//! Messages carry text from the network (agent ids, providers), so every
//! line is made safe before it is written: control characters become
//! `\xNN`, and other invisible or reordering ones (C1 controls, bidi
//! overrides, zero-width characters, line separators) `\u{NNNN}`; a
//! message is always exactly one line as it was formatted, never two.
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
        let _ = write!(
            line,
            "[{}.{:03} {:<5} ",
            t.as_secs(),
            t.subsec_millis(),
            r.level()
        );
        escape_into(&mut line, r.target());
        line.push_str("] ");
        let _ = write!(Escaping(&mut line), "{}", r.args());
        line.push('\n');
        // One write per line: lines of two threads do not interleave.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Whether `c` is written escaped: controls (C0, DEL, C1), and the
/// invisible characters that reorder or hide text (bidi marks, embeddings,
/// overrides and isolates; zero-width characters; line and paragraph
/// separators; the byte-order mark; interlinear annotations).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// `s` appended to `out` with unsafe characters (`is_unsafe`) as `\xNN`
/// (ASCII) or `\u{NNNN}`. Backslashes are kept as they are.
fn escape_into(out: &mut String, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
}

/// A `fmt::Write` that escapes what is written through it into a String.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
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

    fn escaped(s: &str) -> String {
        let mut o = String::new();
        escape_into(&mut o, s);
        o
    }

    #[test]
    fn controls_and_invisible_characters_are_escaped() {
        assert_eq!(
            escaped("ma-a (boot 3) 10.1.0.50"),
            "ma-a (boot 3) 10.1.0.50"
        );
        // A forged second line stays on the first.
        assert_eq!(
            escaped("ma-b\n[1700000000.000 ERROR simsd] forged"),
            "ma-b\\x0a[1700000000.000 ERROR simsd] forged"
        );
        assert_eq!(
            escaped("a\rb\tc\u{1b}[2Jd\u{7f}"),
            "a\\x0db\\x09c\\x1b[2Jd\\x7f"
        );
        assert_eq!(escaped("\u{9b}31m"), "\\u{009b}31m");
        assert_eq!(
            escaped("evil\u{202e}gnp.exe\u{2066}\u{200b}\u{2028}\u{feff}"),
            "evil\\u{202e}gnp.exe\\u{2066}\\u{200b}\\u{2028}\\u{feff}"
        );
        assert_eq!(escaped("café Ω 漢 \\x41"), "café Ω 漢 \\x41");
        // Through fmt, as log lines are written: the arguments and the
        // format string's own text alike.
        let id = "x\ny";
        let mut out = String::new();
        let _ = write!(Escaping(&mut out), "agent {id:?} {id}\t.");
        assert_eq!(out, "agent \"x\\ny\" x\\x0ay\\x09.");
    }
}
