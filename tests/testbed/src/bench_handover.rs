//! `cargo xtask bench handover` (and, in the VM, `bench vm-delay`): N
//! alternating moves, each timed with `sims-traffic probe` and with the
//! daemons' logs, under checked streams both ways.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::run::{catch_interrupts, check_interrupt, mb, run_options, sleep_checked};
use crate::session::{Dir, Session, StreamSpec};
use crate::sys::Result;
use crate::testbed::{Ma, Testbed};
use crate::traffic::{mono_ns, Progress};

pub struct BenchOptions {
    pub bin_dir: PathBuf,
    pub traffic_bin: PathBuf,
    pub moves: usize,
    pub rate: u64,
    /// One-way netem delay on each agent's WAN link (0: none).
    pub delay_ms: u64,
    /// Extra sims-node arguments (the levers: `--no-early`, `--rto-min-ms 0`).
    pub node_args: Vec<String>,
    /// dnsmasq's reply delay (s): DHCP slower by that much.
    pub dhcp_delay_s: u32,
}

#[derive(Clone, Debug)]
pub struct MoveSample {
    pub n: usize,
    pub from: Ma,
    pub to: Ma,
    pub new_addr_to_echo_ms: Option<f64>,
    pub link_up_to_echo_ms: Option<f64>,
    pub dhcp_ms: f64,
    pub stall_down_ms: Option<f64>,
    pub stall_up_ms: Option<f64>,
    /// Where the handover went, from the daemons' logs (see [`Steps`]).
    pub steps: Option<Steps>,
    /// What the move cost both agents (see [`AgentWork`]).
    pub work: Option<AgentWork>,
}

/// Work both agents did for one move, from their status counters: round
/// trips with the kernel (netlink requests, nftables batches) and the
/// time spent in them, and public-key verifications.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AgentWork {
    pub kernel_exchanges: f64,
    pub kernel_ms: f64,
    pub verifications: f64,
}

/// The agents' cumulative [`AgentWork`] now.
fn agent_work(tb: &Testbed) -> Option<AgentWork> {
    let mut w = AgentWork::default();
    for x in [Ma::A, Ma::B] {
        let st = tb.agent_status(x).ok()?;
        let k = &st.raw["kernel"];
        w.kernel_exchanges += k["exchanges"].as_f64()?;
        w.kernel_ms += k["us"].as_f64()? / 1000.0;
        w.verifications += st.raw["counters"]["verifications"].as_f64()?;
    }
    Some(w)
}

/// One move as the daemons logged it, in ms after sims-node saw its new
/// address, negative before it (the testbed stamps every log line with
/// CLOCK_MONOTONIC µs).
#[derive(Clone, Debug, PartialEq)]
pub struct Steps {
    /// The new agent's advertisement reached the node.
    pub advert_ms: f64,
    /// The old agent redirected the old address into the tunnel (it had
    /// the new agent's request, checked the proof, installed it).
    pub old_agent_ms: f64,
    /// The new agent had the old agent's answer and the visitor side up.
    pub new_agent_ms: f64,
    /// The node had the new agent's registration reply.
    pub registered_ms: f64,
}

/// The first line of a testbed log stamped at or after `since_s` that
/// contains every one of `needles`; its stamp.
fn stamp_of(log: &str, since_s: f64, needles: &[&str]) -> Option<f64> {
    log.lines().find_map(|l| {
        let t: f64 = l
            .strip_prefix('[')?
            .split_once(']')?
            .0
            .trim()
            .parse()
            .ok()?;
        (t >= since_s && needles.iter().all(|n| l.contains(n))).then_some(t)
    })
}

/// The steps of the move `from` -> `to` that started at `since_ns`, from
/// the node's and both agents' logs (info level).
fn steps_of(node: &str, old_agent: &str, new_agent: &str, m: StepsOf) -> Option<Steps> {
    let since = m.since_ns as f64 / 1e9;
    let old = m.from.node_addr().to_string();
    let new = m.to.node_addr().to_string();
    let t0 = stamp_of(node, since, &["current address None -> Some(", &new])?;
    let ms = |t: f64| (t - t0) * 1e3;
    // Each step's first line since the link went down: before the new
    // address (negative) when the node registered early.
    let to = m.to.id();
    Some(Steps {
        advert_ms: ms(stamp_of(node, since, &[&format!("agent {to} (instance")])?),
        old_agent_ms: ms(stamp_of(
            old_agent,
            since,
            &[&format!("redirecting {old} to peer {to}")],
        )?),
        new_agent_ms: ms(stamp_of(
            new_agent,
            since,
            &[&format!("{old} relayed from peer {}", m.from.id())],
        )?),
        registered_ms: ms(stamp_of(
            node,
            since,
            &["registered", &format!("with {to}")],
        )?),
    })
}

#[derive(Clone, Copy)]
struct StepsOf {
    from: Ma,
    to: Ma,
    since_ns: u64,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub samples: Vec<MoveSample>,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub sessions_verified: bool,
}

/// Nearest-rank percentile (p in 0..=100) of unsorted values.
pub fn percentile(vals: &[f64], p: f64) -> Option<f64> {
    if vals.is_empty() {
        return None;
    }
    let mut v = vals.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

fn median(vals: &[f64]) -> Option<f64> {
    if vals.is_empty() {
        return None;
    }
    let mut v = vals.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn window_stall(p: &[Progress], from_ns: u64, to_ns: u64) -> Option<f64> {
    p.iter()
        .filter(|p| p.t_ns > from_ns && p.t_ns <= to_ns)
        .map(|p| p.recent_gap_ms)
        .reduce(f64::max)
}

struct AddrSessions {
    addr: Ipv4Addr,
    down: Session,
    up: Session,
}

/// N alternating moves A→B→A…, each measured with `sims-traffic probe`
/// (new address → first echo from the old address), with checked streams
/// in both directions on the address being carried.
pub fn run_handover_bench(o: &BenchOptions) -> Result<BenchReport> {
    catch_interrupts();
    let mut opts = run_options(&o.bin_dir, &o.traffic_bin, "bench-handover");
    opts.node_args = o.node_args.clone();
    opts.dhcp_reply_delay_s = o.dhcp_delay_s;
    if !o.node_args.is_empty() || o.dhcp_delay_s > 0 {
        println!(
            "bench: sims-node {:?}, DHCP server reply delay {} s",
            o.node_args, o.dhcp_delay_s
        );
    }
    let mut tb = Testbed::new(opts)?;
    if o.delay_ms > 0 {
        tb.set_wan_delay(o.delay_ms)?;
        println!(
            "bench: netem delay {} ms on each agent's WAN (one way between agents)",
            o.delay_ms
        );
    }
    let r = bench_body(&mut tb, o);
    if r.is_err() {
        tb.mark_failed();
    }
    drop(tb);
    r
}

fn open_pair(tb: &Testbed, addr: Ipv4Addr, rate: u64, cap_ms: u64) -> Result<AddrSessions> {
    let down = tb.stream(
        StreamSpec::new(Dir::Down, &format!("bench-down-{addr}"))
            .rate(rate)
            .duration_ms(cap_ms)
            .bind(addr),
    )?;
    let up = tb.stream(
        StreamSpec::new(Dir::Up, &format!("bench-up-{addr}"))
            .rate(rate)
            .duration_ms(cap_ms)
            .bind(addr),
    )?;
    Ok(AddrSessions { addr, down, up })
}

fn bench_body(tb: &mut Testbed, o: &BenchOptions) -> Result<BenchReport> {
    let cap_ms = (o.moves as u64 * 15 + 120) * 1000;
    tb.start_all_at(Ma::A)?;
    println!(
        "bench: testbed up; {} moves, streams at {} KB/s each way",
        o.moves,
        o.rate / 1000
    );
    let mut pairs: Vec<AddrSessions> = vec![open_pair(tb, Ma::A.node_addr(), o.rate, cap_ms)?];
    let mut samples = Vec::new();
    for n in 1..=o.moves {
        check_interrupt()?;
        let from = tb.location();
        let to = if from == Ma::A { Ma::B } else { Ma::A };
        let old = from.node_addr();
        let work_before = agent_work(tb);
        let probe = tb.spawn_probe(old, 5000);
        let mut probe = probe?;
        let m = tb.move_to(to)?;
        probe.wait_exit(Duration::from_secs(20))?;
        let (v, text) = probe.last_json();
        let v = v.ok_or_else(|| format!("probe printed no JSON: {text}"))?;
        tb.wait_node_at(to, Duration::from_secs(15))?;
        tb.wait_node_binding(old, "relayed", Duration::from_secs(15))?;
        if !pairs.iter().any(|p| p.addr == to.node_addr()) && n == 1 {
            // Sessions opened in B, carried when going back to A.
            pairs.push(open_pair(tb, to.node_addr(), o.rate, cap_ms)?);
        }
        // Let the streams report past the stall (progress every second).
        sleep_checked(Duration::from_millis(2200))?;
        let work = match (work_before, agent_work(tb)) {
            (Some(a), Some(b)) => Some(AgentWork {
                kernel_exchanges: b.kernel_exchanges - a.kernel_exchanges,
                kernel_ms: b.kernel_ms - a.kernel_ms,
                verifications: b.verifications - a.verifications,
            }),
            _ => None,
        };
        let now = mono_ns();
        let carried = pairs.iter().find(|p| p.addr == old);
        let stall_down =
            carried.and_then(|p| window_stall(&p.down.progress(), m.link_down_ns, now));
        let stall_up =
            carried.and_then(|p| window_stall(&tb.server_progress(&p.up.id), m.link_down_ns, now));
        let s = MoveSample {
            n,
            from,
            to,
            new_addr_to_echo_ms: v["new_addr_to_echo_ms"].as_f64(),
            link_up_to_echo_ms: v["link_up_to_echo_ms"].as_f64(),
            dhcp_ms: m.dhcp_ms(),
            stall_down_ms: stall_down,
            stall_up_ms: stall_up,
            steps: steps_of(
                &std::fs::read_to_string(tb.node_dir().join("sims-node.log")).unwrap_or_default(),
                &tb.agent_log(from),
                &tb.agent_log(to),
                StepsOf {
                    from,
                    to,
                    since_ns: m.link_down_ns,
                },
            ),
            work,
        };
        let f = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "move {n:>3} {from}->{to} session {old}: new_addr_to_echo_ms={} link_up_to_echo_ms={} dhcp_ms={:.1} stall_down_ms={} stall_up_ms={} kernel_exchanges={} kernel_ms={} verifications={}",
            f(s.new_addr_to_echo_ms),
            f(s.link_up_to_echo_ms),
            s.dhcp_ms,
            f(s.stall_down_ms),
            f(s.stall_up_ms),
            f(s.work.map(|w| w.kernel_exchanges)),
            f(s.work.map(|w| w.kernel_ms)),
            f(s.work.map(|w| w.verifications)),
        );
        samples.push(s);
    }
    let mut verified = true;
    for p in pairs.iter_mut() {
        for (name, s) in [("down", &mut p.down), ("up", &mut p.up)] {
            let r = s.finish(Duration::from_secs(60))?;
            println!(
                "session {} {name}: {} verified={} reset={} max_stall_ms={:.1}{}",
                p.addr,
                mb(r.bytes),
                r.verified,
                r.reset,
                r.max_gap_ms,
                r.error.map(|e| format!(" error: {e}")).unwrap_or_default()
            );
            verified &= r.verified && !r.reset;
        }
    }
    let col =
        |f: fn(&MoveSample) -> Option<f64>| -> Vec<f64> { samples.iter().filter_map(f).collect() };
    let echo = col(|s| s.new_addr_to_echo_ms);
    let link = col(|s| s.link_up_to_echo_ms);
    let dhcp = col(|s| Some(s.dhcp_ms));
    let sd = col(|s| s.stall_down_ms);
    let su = col(|s| s.stall_up_ms);
    let lost = samples.len() - echo.len();
    let line = |name: &str, v: &[f64]| {
        println!(
            "{name:<22} n={:<3} median={} p99={} max={}",
            v.len(),
            median(v)
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
            percentile(v, 99.0)
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
            v.iter()
                .copied()
                .reduce(f64::max)
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
        )
    };
    println!("summary (ms):");
    line("new_addr_to_echo", &echo);
    line("link_up_to_echo", &link);
    line("dhcp (link_up_to_addr)", &dhcp);
    line("stall_down", &sd);
    line("stall_up", &su);
    println!("where the handover goes (ms after the node saw its new address; daemons' logs):");
    line(
        "advert_at_node",
        &col(|s| s.steps.as_ref().map(|x| x.advert_ms)),
    );
    line(
        "old_agent_redirected",
        &col(|s| s.steps.as_ref().map(|x| x.old_agent_ms)),
    );
    line(
        "new_agent_visitor_up",
        &col(|s| s.steps.as_ref().map(|x| x.new_agent_ms)),
    );
    line(
        "node_registered",
        &col(|s| s.steps.as_ref().map(|x| x.registered_ms)),
    );
    println!("what a move costs both agents together (status counters):");
    line(
        "kernel_exchanges",
        &col(|s| s.work.map(|w| w.kernel_exchanges)),
    );
    line("kernel_ms", &col(|s| s.work.map(|w| w.kernel_ms)));
    // The agents' public-key operations (X25519 of a node's session: once
    // per node and agent run, so 0 on every move after the first two).
    line("public_key_ops", &col(|s| s.work.map(|w| w.verifications)));
    println!("moves without echo: {lost}; all sessions verified without reset: {verified}");
    let med = median(&echo).unwrap_or(f64::NAN);
    let p99 = percentile(&echo, 99.0).unwrap_or(f64::NAN);
    println!(
        "handover median_ms={med:.2} p99_ms={p99:.2} moves={}",
        samples.len()
    );
    let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    println!(
        "stall down_ms={:.2} up_ms={:.2} linkup_ms={:.2}",
        m(&sd),
        m(&su),
        m(&link)
    );
    if lost > 0 {
        return Err(format!("{lost} moves got no echo"));
    }
    Ok(BenchReport {
        samples,
        median_ms: med,
        p99_ms: p99,
        sessions_verified: verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the testbed stores them (from a real run, A -> B).
    #[test]
    fn steps_come_from_the_daemons_logs() {
        let node = "\
[16185.220797] [1795627909.016 INFO  sims_proto::node] current address Some(10.1.0.50) -> None
[16185.302707] [1795627909.098 INFO  sims_proto::node] current address None -> Some(10.2.0.50)
[16185.303129] [1795627909.099 INFO  sims_proto::node] agent ma-b (instance 5f2a10c3e2d1b0a9) on 10.2.0.50
[16185.304829] [1795627909.100 INFO  sims_proto::node] registered with ma-b
";
        let ma_a = "\
[16184.888755] [1795627908.684 INFO  simsd] agent ma-a (instance 0123456789abcdef) on br-lan / wan, 1 peers
[16185.304366] [1795627909.100 INFO  sims_proto::agent] redirecting 10.1.0.50 to peer ma-b
";
        let ma_b = "\
[16185.303713] [1795627909.099 INFO  simsd::dataplane] tunnel sims-ma-a to 100.64.1.2 up (userspace)
[16185.304580] [1795627909.100 INFO  sims_proto::agent] 10.1.0.50 relayed from peer ma-a
";
        let m = StepsOf {
            from: Ma::A,
            to: Ma::B,
            since_ns: 16_185_200_000_000,
        };
        let s = steps_of(node, ma_a, ma_b, m).unwrap();
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(near(s.advert_ms, 0.422), "{s:?}");
        assert!(near(s.old_agent_ms, 1.659), "{s:?}");
        assert!(near(s.new_agent_ms, 1.873), "{s:?}");
        assert!(near(s.registered_ms, 2.122), "{s:?}");
        // Lines from before the move do not count; a missing step is None.
        let later = StepsOf {
            since_ns: 16_186_000_000_000,
            ..m
        };
        assert_eq!(steps_of(node, ma_a, ma_b, later), None);
        assert_eq!(steps_of(node, "", ma_b, m), None);
        // Registered early: every step before the new address.
        let early = "\
[16185.220797] [1795627909.016 INFO  sims_proto::node] current address Some(10.1.0.50) -> None
[16185.221797] [1795627909.017 INFO  sims_proto::node] agent ma-b (instance 5f2a10c3e2d1b0a9) heard before DHCP: registering early
[16185.224829] [1795627909.020 INFO  sims_proto::node] registered early with ma-b
[16185.302707] [1795627909.098 INFO  sims_proto::node] current address None -> Some(10.2.0.50)
[16185.303129] [1795627909.099 INFO  sims_proto::node] agent ma-b (instance 5f2a10c3e2d1b0a9) on 10.2.0.50
[16185.304829] [1795627909.100 INFO  sims_proto::node] registered with ma-b
";
        let s = steps_of(early, ma_a, ma_b, m).unwrap();
        assert!(near(s.advert_ms, -80.91), "{s:?}");
        assert!(near(s.registered_ms, -77.878), "{s:?}");
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
        assert_eq!(percentile(&[], 99.0), None);
    }
}
