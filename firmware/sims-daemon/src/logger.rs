//! The daemons' logger: `[<unix seconds>.<ms> LEVEL target] message`
//! lines on stderr (procd and the testbed collect them), filtered by
//! `RUST_LOG` as env_logger reads it.
//!
//! Messages carry text from the network (agent ids, providers), so every
//! line is made safe before it is written: control characters become
//! `\xNN`, and other invisible or reordering ones (C1 controls, bidi
//! overrides, zero-width characters, line separators) `\u{NNNN}`; a
//! message is always exactly one line as it was formatted, never two.
//! And a flood from one place (a peer sending garbage) cannot fill the
//! log: each call site may write `SIMS_LOG_BURST` lines a second, and
//! reports the lines it dropped in one line when that second is over.
//!
//! Hand-written rather than env_logger: on mipsel env_logger and argh cost
//! simsd 22 KB of a 400 KB budget for one log format and a dozen options.

use std::fmt::Write as _;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Logs `[<unix seconds>.<ms> LEVEL target] message` lines to stderr.
struct StderrLog {
    default: LevelFilter,
    /// `target=level` rules; the longest matching target wins.
    rules: Vec<(String, LevelFilter)>,
    limiter: Mutex<Limiter>,
    /// The limiter's clock: milliseconds since the logger was installed.
    start: Instant,
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

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The lines of `reports`, then `record`'s, written to stderr in one
    /// write.
    fn write(&self, reports: &[Suppressed], record: Option<&Record>) {
        if reports.is_empty() && record.is_none() {
            return;
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut out = String::with_capacity(128);
        let head = |out: &mut String, level: Level, target: &str| {
            let _ = write!(
                out,
                "[{}.{:03} {:<5} ",
                t.as_secs(),
                t.subsec_millis(),
                level
            );
            escape_into(out, target);
            out.push_str("] ");
        };
        for s in reports {
            head(&mut out, s.level, &s.target);
            let _ = writeln!(
                out,
                "{} lines suppressed (over {} a second from {}:{})",
                s.lines, s.burst, s.file, s.line
            );
        }
        if let Some(r) = record {
            head(&mut out, r.level(), r.target());
            let _ = write!(Escaping(&mut out), "{}", r.args());
            out.push('\n');
        }
        // One write: lines of two threads do not interleave.
        let _ = std::io::stderr().write_all(out.as_bytes());
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
        let mut reports = Vec::new();
        let site = Site {
            file: r.file_static().unwrap_or(""),
            line: r.line().unwrap_or(0),
            level: r.level(),
        };
        let pass = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(self.now_ms(), site, r.target(), &mut reports);
        self.write(&reports, pass.then_some(r));
    }

    /// Reports the call sites whose suppression has lifted (the daemons'
    /// loops may call `log::logger().flush()` on a timer; otherwise the
    /// report comes with the next line logged).
    fn flush(&self) {
        let mut reports = Vec::new();
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sweep(self.now_ms(), &mut reports);
        self.write(&reports, None);
    }
}

/// `s` appended to `out` with unsafe characters (`crate::is_unsafe`) as `\xNN`
/// (ASCII) or `\u{NNNN}`. Backslashes are kept as they are.
fn escape_into(out: &mut String, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if !crate::is_unsafe(c) {
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

/// Lines a second per call site: `quiet` for info, debug and trace, `loud`
/// for warnings and errors (0: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Burst {
    quiet: u32,
    loud: u32,
}

const DEFAULT_BURST: Burst = Burst {
    quiet: 20,
    loud: 100,
};

/// Call sites the limiter tracks (the daemons have under a hundred; past
/// this, lines of new sites are not limited).
const MAX_SITES: usize = 256;

/// A log macro's place in the source, and its level.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Site {
    file: &'static str,
    line: u32,
    level: Level,
}

/// One call site's count in its current window of a second.
struct Window {
    site: Site,
    target: String,
    start_ms: u64,
    lines: u32,
    suppressed: u64,
}

/// A call site's lines dropped in a window, reported once it has passed.
#[derive(Debug, PartialEq, Eq)]
struct Suppressed {
    level: Level,
    target: String,
    file: &'static str,
    line: u32,
    lines: u64,
    burst: u32,
}

/// At most `burst` lines per call site in each window of a second; the
/// rest are counted and reported in one line when the window has passed.
/// Time is an input (milliseconds on any monotonic clock).
struct Limiter {
    burst: Burst,
    windows: Vec<Window>,
    /// Windows with suppressed lines not yet reported.
    pending: usize,
}

impl Limiter {
    fn new(burst: Burst) -> Limiter {
        Limiter {
            burst,
            windows: Vec::new(),
            pending: 0,
        }
    }

    fn burst_of(&self, level: Level) -> u32 {
        if level <= Level::Warn {
            self.burst.loud
        } else {
            self.burst.quiet
        }
    }

    /// Whether a line from `site` may be written now. Reports of windows
    /// that have passed are appended to `reports` first.
    fn admit(
        &mut self,
        now_ms: u64,
        site: Site,
        target: &str,
        reports: &mut Vec<Suppressed>,
    ) -> bool {
        self.sweep(now_ms, reports);
        let burst = self.burst_of(site.level);
        if burst == 0 {
            return true;
        }
        let i =
            match self.windows.iter().position(|w| w.site == site) {
                Some(i) => i,
                None => {
                    let fresh = Window {
                        site,
                        target: target.to_string(),
                        start_ms: now_ms,
                        lines: 0,
                        suppressed: 0,
                    };
                    if self.windows.len() < MAX_SITES {
                        self.windows.push(fresh);
                        self.windows.len() - 1
                    } else if let Some(i) = self.windows.iter().position(|w| {
                        w.suppressed == 0 && now_ms.saturating_sub(w.start_ms) >= 1000
                    }) {
                        self.windows[i] = fresh;
                        i
                    } else {
                        return true;
                    }
                }
            };
        let w = &mut self.windows[i];
        if now_ms.saturating_sub(w.start_ms) >= 1000 {
            w.start_ms = now_ms;
            w.lines = 0;
        }
        if w.lines < burst {
            w.lines += 1;
            return true;
        }
        if w.suppressed == 0 {
            self.pending += 1;
        }
        w.suppressed += 1;
        false
    }

    /// Reports, into `reports`, every window with suppressed lines that has
    /// passed.
    fn sweep(&mut self, now_ms: u64, reports: &mut Vec<Suppressed>) {
        if self.pending == 0 {
            return;
        }
        let burst = self.burst;
        for w in &mut self.windows {
            if w.suppressed > 0 && now_ms.saturating_sub(w.start_ms) >= 1000 {
                reports.push(Suppressed {
                    level: w.site.level,
                    target: w.target.clone(),
                    file: w.site.file,
                    line: w.site.line,
                    lines: w.suppressed,
                    burst: if w.site.level <= Level::Warn {
                        burst.loud
                    } else {
                        burst.quiet
                    },
                });
                w.suppressed = 0;
                self.pending -= 1;
            }
        }
    }
}

/// Parses `SIMS_LOG_BURST`: `<quiet>` or `<quiet>,<loud>` lines a second
/// per call site (0: no limit); `None` if malformed.
fn parse_burst(spec: &str) -> Option<Burst> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Some(DEFAULT_BURST);
    }
    let (q, l) = match spec.split_once(',') {
        Some((q, l)) => (q.trim().parse().ok()?, l.trim().parse().ok()?),
        None => (spec.parse().ok()?, DEFAULT_BURST.loud),
    };
    Some(Burst { quiet: q, loud: l })
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

/// Installs the stderr logger: `RUST_LOG` if set, else `info`; at most
/// `SIMS_LOG_BURST` lines a second per call site (default 20 for info and
/// below, 100 for warnings and errors).
pub fn init_logger() {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let (default, rules, bad) = parse_filter(&spec, LevelFilter::Info);
    let max = rules.iter().map(|(_, l)| *l).fold(default, Ord::max);
    let burst_spec = std::env::var("SIMS_LOG_BURST").unwrap_or_default();
    let burst = parse_burst(&burst_spec);
    // Leaked once: the logger lives as long as the process.
    let logger: &'static StderrLog = Box::leak(Box::new(StderrLog {
        default,
        rules,
        limiter: Mutex::new(Limiter::new(burst.unwrap_or(DEFAULT_BURST))),
        start: Instant::now(),
    }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
    for b in bad {
        log::warn!("RUST_LOG: ignoring '{b}' (not a level or target=level)");
    }
    if burst.is_none() {
        log::warn!(
            "SIMS_LOG_BURST: ignoring '{burst_spec}' (not <lines a second> or <info>,<warn>)"
        );
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
        let log = StderrLog {
            default: d,
            rules,
            limiter: Mutex::new(Limiter::new(DEFAULT_BURST)),
            start: Instant::now(),
        };
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

    const A: Site = Site {
        file: "simsd/src/exec.rs",
        line: 10,
        level: Level::Debug,
    };

    #[test]
    fn each_call_site_gets_a_burst_a_second() {
        let mut l = Limiter::new(Burst { quiet: 3, loud: 5 });
        let mut r = Vec::new();
        let b = Site { line: 11, ..A };
        let w = Site {
            level: Level::Warn,
            ..A
        };
        let admitted = |l: &mut Limiter, t, s, r: &mut Vec<_>| {
            (0..10).filter(|_| l.admit(t, s, "simsd::exec", r)).count()
        };
        assert_eq!(admitted(&mut l, 0, A, &mut r), 3);
        // Another site, and the same line at another level, count apart.
        assert_eq!(admitted(&mut l, 10, b, &mut r), 3);
        assert_eq!(admitted(&mut l, 20, w, &mut r), 5);
        assert!(!l.admit(999, A, "simsd::exec", &mut r));
        assert!(r.is_empty(), "nothing reported within the second");
        // The window has passed: one report per site, then lines again.
        assert!(l.admit(1000, A, "simsd::exec", &mut r));
        assert_eq!(
            r,
            vec![Suppressed {
                level: Level::Debug,
                target: "simsd::exec".into(),
                file: "simsd/src/exec.rs",
                line: 10,
                lines: 8,
                burst: 3
            }]
        );
        r.clear();
        l.sweep(1020, &mut r);
        assert_eq!(
            r.iter()
                .map(|s| (s.line, s.level, s.lines))
                .collect::<Vec<_>>(),
            vec![(11, Level::Debug, 7), (10, Level::Warn, 5)]
        );
        r.clear();
        l.sweep(5000, &mut r);
        assert!(r.is_empty(), "reported once");
        assert_eq!(admitted(&mut l, 1001, A, &mut r), 2);
    }

    #[test]
    fn zero_is_no_limit_and_sites_are_bounded() {
        let mut l = Limiter::new(Burst { quiet: 0, loud: 1 });
        let mut r = Vec::new();
        assert!((0..1000).all(|_| l.admit(0, A, "t", &mut r)));
        assert!(l.windows.is_empty());
        let mut l = Limiter::new(Burst { quiet: 1, loud: 1 });
        for line in 0..2 * MAX_SITES as u32 {
            l.admit(0, Site { line, ..A }, "t", &mut r);
        }
        assert_eq!(l.windows.len(), MAX_SITES);
        // Full: an untracked site is not limited; after a second a stale
        // window is reused.
        let new = Site { line: 9999, ..A };
        assert!(l.admit(0, new, "t", &mut r) && l.admit(0, new, "t", &mut r));
        assert!(l.admit(1000, new, "t", &mut r) && !l.admit(1000, new, "t", &mut r));
        assert_eq!(l.windows.len(), MAX_SITES);
    }

    #[test]
    fn sims_log_burst() {
        assert_eq!(parse_burst(""), Some(DEFAULT_BURST));
        assert_eq!(
            parse_burst("5"),
            Some(Burst {
                quiet: 5,
                loud: 100
            })
        );
        assert_eq!(parse_burst(" 5, 0 "), Some(Burst { quiet: 5, loud: 0 }));
        assert_eq!(
            parse_burst("0"),
            Some(Burst {
                quiet: 0,
                loud: 100
            })
        );
        assert_eq!(parse_burst("-1"), None);
        assert_eq!(parse_burst("5,x"), None);
    }
}
