//! Pieces shared by the `sims-traffic` tool and the harness: the checked
//! counter stream, the monotonic clock and the tool's output formats.

use std::time::{Duration, Instant};

/// CLOCK_MONOTONIC in nanoseconds: shared by every process on the host,
/// whatever its network namespace, so tool and harness timestamps compare.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[inline]
fn counter_byte(off: u64) -> u8 {
    (off / 8).to_be_bytes()[(off % 8) as usize]
}

/// Generates the stream: consecutive 8-byte big-endian counters from 0.
#[derive(Default)]
pub struct CounterGen {
    off: u64,
}

impl CounterGen {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            *b = counter_byte(self.off);
            self.off += 1;
        }
    }
    pub fn offset(&self) -> u64 {
        self.off
    }
}

/// Verifies the stream byte by byte and measures arrival gaps.
pub struct CounterCheck {
    off: u64,
    bad_at: Option<(u64, u8, u8)>,
    last: Option<Instant>,
    max_gap: Duration,
    recent_gap: Duration,
}

impl Default for CounterCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl CounterCheck {
    pub fn new() -> Self {
        CounterCheck {
            off: 0,
            bad_at: None,
            last: None,
            max_gap: Duration::ZERO,
            recent_gap: Duration::ZERO,
        }
    }

    pub fn feed(&mut self, data: &[u8], now: Instant) {
        if data.is_empty() {
            return;
        }
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            self.max_gap = self.max_gap.max(gap);
            self.recent_gap = self.recent_gap.max(gap);
        }
        self.last = Some(now);
        if self.bad_at.is_none() {
            for (i, &b) in data.iter().enumerate() {
                let off = self.off + i as u64;
                let want = counter_byte(off);
                if b != want {
                    self.bad_at = Some((off, want, b));
                    break;
                }
            }
        }
        self.off += data.len() as u64;
    }

    pub fn bytes(&self) -> u64 {
        self.off
    }

    pub fn max_gap_ms(&self) -> f64 {
        self.max_gap.as_secs_f64() * 1e3
    }

    /// Largest gap since the previous call (for per-interval progress).
    pub fn take_recent_gap_ms(&mut self) -> f64 {
        let g = self.recent_gap.as_secs_f64() * 1e3;
        self.recent_gap = Duration::ZERO;
        g
    }

    /// Why the stream is not valid, if it is not.
    pub fn error(&self) -> Option<String> {
        self.bad_at.map(|(off, want, got)| {
            format!("stream corrupt at byte {off}: expected {want:#04x}, got {got:#04x}")
        })
    }
}

pub fn json_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// The final JSON line of `sims-traffic stream`.
#[derive(Clone, Debug)]
pub struct StreamResult {
    pub dir: String,
    pub bytes: u64,
    pub verified: bool,
    pub max_gap_ms: f64,
    pub reset: bool,
    pub error: Option<String>,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl StreamResult {
    pub fn parse(line: &str) -> Option<StreamResult> {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        Some(StreamResult {
            dir: v["dir"].as_str()?.to_string(),
            bytes: v["bytes"].as_u64().unwrap_or(0),
            verified: v["verified"].as_bool().unwrap_or(false),
            max_gap_ms: v["max_gap_ms"].as_f64().unwrap_or(0.0),
            reset: v["reset"].as_bool().unwrap_or(false),
            error: v["error"].as_str().map(str::to_string),
            start_ns: v["start_ns"].as_u64().unwrap_or(0),
            end_ns: v["end_ns"].as_u64().unwrap_or(0),
        })
    }
}

/// A `progress ...` line of the stream tool (client side, or the server's
/// log for upstreams): `key=value` pairs.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub t_ns: u64,
    /// Bytes verified (down, or up as seen by the server) or sent (up, client).
    pub bytes: u64,
    pub max_gap_ms: f64,
    pub recent_gap_ms: f64,
    pub id: Option<String>,
}

impl Progress {
    pub fn parse(line: &str) -> Option<Progress> {
        // Tolerates the harness's `[<mono s>] ` log prefix.
        let mut l = line.trim();
        if l.starts_with('[') {
            l = l.split_once("] ").map(|x| x.1).unwrap_or(l);
        }
        let rest = l.strip_prefix("progress ")?;
        let mut p = Progress::default();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "t_ns" => p.t_ns = v.parse().ok()?,
                "bytes" | "sent" => p.bytes = v.parse().ok()?,
                "max_gap_ms" => p.max_gap_ms = v.parse().ok()?,
                "recent_gap_ms" => p.recent_gap_ms = v.parse().ok()?,
                "id" => p.id = Some(v.to_string()),
                _ => {}
            }
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_stream_verifies_across_odd_chunks() {
        let mut g = CounterGen::new();
        let mut c = CounterCheck::new();
        let now = Instant::now();
        for n in [1usize, 7, 8, 9, 1000, 3, 65536] {
            let mut buf = vec![0; n];
            g.fill(&mut buf);
            c.feed(&buf, now);
        }
        assert_eq!(c.bytes(), g.offset());
        assert!(c.error().is_none());
    }

    #[test]
    fn gap_duplication_and_corruption_are_detected() {
        // gap: skip 8 bytes
        let mut g = CounterGen::new();
        let mut buf = vec![0; 64];
        g.fill(&mut buf);
        let mut c = CounterCheck::new();
        c.feed(&buf[..16], Instant::now());
        c.feed(&buf[24..], Instant::now());
        assert!(c.error().is_some());
        // duplication: resend a chunk
        let mut c = CounterCheck::new();
        c.feed(&buf[..16], Instant::now());
        c.feed(&buf[8..], Instant::now());
        assert!(c.error().is_some());
        // corruption
        let mut bad = buf.clone();
        bad[40] ^= 1;
        let mut c = CounterCheck::new();
        c.feed(&bad, Instant::now());
        assert!(c.error().unwrap().contains("byte 40"));
    }

    #[test]
    fn gaps_are_measured() {
        let mut c = CounterCheck::new();
        let t = Instant::now();
        c.feed(&[0], t);
        c.feed(&[0], t + Duration::from_millis(250));
        c.feed(&[0], t + Duration::from_millis(260));
        assert!((c.max_gap_ms() - 250.0).abs() < 0.01);
        assert!((c.take_recent_gap_ms() - 250.0).abs() < 0.01);
        assert_eq!(c.take_recent_gap_ms(), 0.0);
    }

    #[test]
    fn result_and_progress_lines_parse() {
        let r = StreamResult::parse(
            r#"{"dir":"up","bytes":10,"verified":true,"max_gap_ms":220.5,"reset":false,"error":null,"start_ns":1,"end_ns":2}"#,
        )
        .unwrap();
        assert!(r.verified && !r.reset && r.bytes == 10 && r.error.is_none());
        let p = Progress::parse(
            "progress id=x dir=up t_ns=5 bytes=100 max_gap_ms=3.5 recent_gap_ms=1.0",
        )
        .unwrap();
        assert_eq!((p.t_ns, p.bytes, p.id.as_deref()), (5, 100, Some("x")));
        let p = Progress::parse("[12.345] progress id=y t_ns=6 bytes=1").unwrap();
        assert_eq!((p.t_ns, p.id.as_deref()), (6, Some("y")));
        assert_eq!(json_escape("a\"b\\\n"), "a\\\"b\\\\\\n");
    }
}
