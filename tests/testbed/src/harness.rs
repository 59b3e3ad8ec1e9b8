//! `cargo xtask demo` and `cargo xtask testbed` (a testbed to poke at), on
//! the testbed. The benchmarks are in bench_handover.rs and
//! bench_dataplane.rs; their entry points are re-exported here, where
//! xtask finds them.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use crate::bench_handover::{
    percentile, run_handover_bench, BenchOptions, BenchReport, MoveSample, Steps,
};
pub use crate::run::{catch_interrupts, interrupted};

use crate::run::{mb, run_options, sleep_checked};
use crate::session::{Dir, Session, StreamSpec};
use crate::sys::Result;
use crate::testbed::{Ma, Options, Testbed};

// ---------------------------------------------------------------- demo

pub struct DemoOptions {
    pub bin_dir: PathBuf,
    pub traffic_bin: PathBuf,
    /// Seconds spent in each network.
    pub dwell_s: u64,
    pub rate: u64,
}

/// Starts the testbed, a steady download at the node, moves A → B → A and
/// prints what happens each second.
pub fn run_demo(o: &DemoOptions) -> Result<()> {
    catch_interrupts();
    let opts = run_options(&o.bin_dir, &o.traffic_bin, "demo");
    println!("demo: building the testbed (cn, inet, ma-a, ma-b, mn)…");
    let mut tb = Testbed::new(opts)?;
    let r = demo_body(&mut tb, o);
    if r.is_err() {
        tb.mark_failed();
    }
    println!("demo: tearing down the testbed");
    drop(tb);
    r
}

fn demo_body(tb: &mut Testbed, o: &DemoOptions) -> Result<()> {
    tb.start_agents()?;
    tb.start_node()?;
    let m = tb.move_to(Ma::A)?;
    println!(
        "demo: node joined LAN A, DHCP gave {} in {:.0} ms",
        m.addr,
        m.dhcp_ms()
    );
    tb.wait_node_at(Ma::A, Duration::from_secs(15))?;
    let home = Ma::A.node_addr();
    let mut s = tb.stream(
        StreamSpec::new(Dir::Down, "demo-download")
            .rate(o.rate)
            .duration_ms(600_000)
            .bind(home),
    )?;
    println!(
        "demo: download session {home} → {} at {} KB/s (checked counter stream)",
        tb.cn_addr(),
        o.rate / 1000
    );
    let mut w = Watch {
        start: Instant::now(),
        last_bytes: 0,
        last_change: Instant::now(),
    };
    let plan = [Ma::B, Ma::A];
    demo_watch(tb, &s, home, &mut w, o.dwell_s)?;
    for to in plan {
        let from = tb.location();
        let m = tb.move_to(to)?;
        println!(
            "demo: ── moved {from} → {to}: link up, DHCP gave {} in {:.0} ms",
            m.addr,
            m.dhcp_ms()
        );
        demo_watch(tb, &s, home, &mut w, o.dwell_s)?;
    }
    let r = s.finish(Duration::from_secs(30))?;
    println!(
        "demo: session ended: {} verified={} reset={} longest stall {:.0} ms{}",
        mb(r.bytes),
        r.verified,
        r.reset,
        r.max_gap_ms,
        r.error.map(|e| format!(" error: {e}")).unwrap_or_default()
    );
    if !r.verified {
        return Err("the demo session was not verified".into());
    }
    Ok(())
}

/// What the demo remembers between its once-a-second lines.
struct Watch {
    start: Instant,
    last_bytes: u64,
    last_change: Instant,
}

fn demo_watch(tb: &Testbed, s: &Session, home: Ipv4Addr, w: &mut Watch, secs: u64) -> Result<()> {
    for _ in 0..secs {
        sleep_checked(Duration::from_secs(1))?;
        let p = s.last_progress().unwrap_or_default();
        if p.bytes != w.last_bytes {
            w.last_bytes = p.bytes;
            w.last_change = Instant::now();
        }
        let (cur, relay) = match tb.node_status() {
            Ok(st) => (
                st.current
                    .as_ref()
                    .map(|(a, g)| format!("{a} via {g}"))
                    .unwrap_or_else(|| "-".into()),
                st.binding(&home.to_string())
                    .map(|b| b.state.clone())
                    .unwrap_or_else(|| "-".into()),
            ),
            Err(e) => (format!("(status: {e})"), "?".into()),
        };
        let idle = w.last_change.elapsed();
        let flow = if idle > Duration::from_millis(500) {
            format!("STALLED for {:.1} s", idle.as_secs_f64())
        } else {
            format!("flowing, longest pause {:.0} ms", p.recent_gap_ms)
        };
        println!(
            "t={:5.1}s  at {}  current {:<24} session {home}: {:>9} verified, {:<8} {flow} (longest overall {:.0} ms)",
            w.start.elapsed().as_secs_f64(),
            tb.location(),
            cur,
            mb(p.bytes),
            relay,
            p.max_gap_ms
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- shell

pub struct ShellOptions {
    pub bin_dir: PathBuf,
    pub traffic_bin: PathBuf,
    pub daemons: bool,
    pub at: Option<Ma>,
    /// Upper bound on how long the testbed stays up.
    pub for_s: u64,
}

/// Builds the testbed (optionally with daemons, the node attached at
/// `at`), prints how to reach it, and keeps it up until Ctrl-C or `for_s`.
pub fn run_shell(o: &ShellOptions) -> Result<()> {
    catch_interrupts();
    let opts = Options {
        bin_dir: Some(o.bin_dir.clone()),
        traffic_bin: Some(o.traffic_bin.clone()),
        label: "shell".into(),
        lanhost: true,
        ..Options::default()
    };
    let mut tb = Testbed::new(opts)?;
    if o.daemons {
        tb.start_agents()?;
        tb.start_node()?;
    }
    if let Some(x) = o.at {
        let m = tb.move_to(x)?;
        println!("node attached at {x}: {}", m.addr);
    }
    println!("testbed {} is up; run dir {}", tb.prefix, tb.dir.display());
    for n in tb.namespace_names() {
        println!("  ip netns exec {n} …");
    }
    println!(
        "  CN server: {}; traffic tool: {}",
        tb.cn_addr(),
        tb.traffic_bin.display()
    );
    println!("Ctrl-C (or {} s) tears it down.", o.for_s);
    let end = Instant::now() + Duration::from_secs(o.for_s);
    while Instant::now() < end && !interrupted() {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("tearing down");
    Ok(())
}
