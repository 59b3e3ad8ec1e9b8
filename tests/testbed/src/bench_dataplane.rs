//! `cargo xtask bench dataplane` (run in the VM, over kernel ipip): two
//! ratios, each the median of interleaved pairs measured in one run.
//!
//! * `relayed_vs_direct`: TCP throughput (CN → node, a checked stream as
//!   fast as it goes) of a session from the node's old address, relayed
//!   MN → MA-B ⇒ tunnel ⇒ MA-A → CN, against a session from its new
//!   address routed over the same hops without encapsulation: the Internet
//!   router sends MA-B's traffic to the CN via MA-A (a policy rule), and
//!   MA-A forwards and masquerades it like the relayed traffic. Every hop
//!   shares the guest's CPUs, so only this comparison isolates the
//!   tunnel's own cost. Both paths reach the CN from MA-A's WAN address
//!   (checked with `whoami`).
//! * `new_10k_vs_0`: forwarding of new sessions through MA-B (64-byte UDP
//!   packets, counted at the CN, and a TCP stream) with no binding, and
//!   with 10,000 visitor bindings' worth of SIMS state installed on MA-B —
//!   exactly what simsd installs per visitor binding: a /32 in the SIMS
//!   table (1144, proto 153) and an element of the peer's `out_` set, plus
//!   the catch-all rule. (Installed directly rather than through 10,000
//!   registrations: it is this kernel state that every forwarded packet
//!   meets.)

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::product::{nft_set_out, SIMS_NFT_TABLE, SIMS_PROTO, SIMS_RULE_PRIORITY, SIMS_TABLE};
use crate::run::{catch_interrupts, check_interrupt, run_options};
use crate::session::{Dir, StreamSpec};
use crate::sys::{nft_bin, wait_for, Result};
use crate::testbed::{Ma, Testbed, CN_IP};

pub struct DataplaneOptions {
    pub bin_dir: PathBuf,
    pub traffic_bin: PathBuf,
    /// Interleaved pairs per ratio (at least 8).
    pub pairs: usize,
    /// Length of each TCP measurement.
    pub tcp_ms: u64,
    /// Length of each 64-byte UDP measurement.
    pub udp_ms: u64,
    /// Bindings installed for the "10k" side.
    pub bindings: usize,
    /// Also measure, once, the naive design (one `ip rule` per binding):
    /// shows that the measurement can see a per-binding cost at all.
    pub naive_control: bool,
}

impl DataplaneOptions {
    pub fn new(bin_dir: PathBuf, traffic_bin: PathBuf) -> Self {
        DataplaneOptions {
            bin_dir,
            traffic_bin,
            pairs: 8,
            tcp_ms: 3000,
            udp_ms: 2000,
            bindings: 10_000,
            naive_control: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DataplaneReport {
    pub relayed_vs_direct: f64,
    pub new_udp64_10k_vs_0: f64,
    pub new_tcp_10k_vs_0: f64,
    /// 64-byte rate with one rule per binding vs none (the control).
    pub naive_udp64_10k_vs_0: Option<f64>,
}

impl DataplaneReport {
    /// The worse of the two new-session ratios.
    pub fn new_10k_vs_0(&self) -> f64 {
        self.new_udp64_10k_vs_0.min(self.new_tcp_10k_vs_0)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// UDP port on the CN for the 64-byte packet count (not the server's).
const SINK_PORT: u16 = 5009;
/// First address of the synthetic visitor bindings (10.128.0.0/16 and up).
const SYNTH_BASE: u32 = u32::from_be_bytes([10, 128, 0, 1]);

pub fn run_dataplane_bench(o: &DataplaneOptions) -> Result<DataplaneReport> {
    catch_interrupts();
    if o.pairs < 1 {
        return Err("pairs must be at least 1".into());
    }
    let opts = run_options(&o.bin_dir, &o.traffic_bin, "bench-dataplane");
    let mut tb = Testbed::new(opts)?;
    let r = body(&mut tb, o);
    if r.is_err() {
        tb.mark_failed();
    }
    r
}

/// Mbit/s of a checked CN → node stream from `bind`, as fast as TCP goes.
fn tcp_mbps(tb: &Testbed, bind: Ipv4Addr, ms: u64, label: &str) -> Result<f64> {
    let mut s = tb.stream(
        StreamSpec::new(Dir::Down, label)
            .rate(100_000_000_000)
            .duration_ms(ms)
            .bind(bind),
    )?;
    let r = s.wait(Duration::from_millis(ms + 60_000))?;
    if !r.verified || r.reset {
        return Err(format!("{label}: stream not verified: {r:?}"));
    }
    let secs = r.end_ns.saturating_sub(r.start_ns) as f64 / 1e9;
    if secs <= 0.0 || r.bytes == 0 {
        return Err(format!("{label}: no data: {r:?}"));
    }
    Ok(r.bytes as f64 * 8.0 / secs / 1e6)
}

/// 64-byte IPv4 packets (36 bytes of UDP payload) per second from the node
/// (`bind`) to the CN, counted by a receiver on the CN.
fn udp64_pps(tb: &Testbed, bind: Ipv4Addr, ms: u64) -> Result<f64> {
    let cn = tb.cn();
    let mn = tb.mn();
    let dur = Duration::from_millis(ms);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let recv = std::thread::spawn(move || {
        cn.in_ns(move || -> Result<(u64, Duration)> {
            let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SINK_PORT))
                .map_err(|e| format!("bind sink: {e}"))?;
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .map_err(|e| e.to_string())?;
            let _ = ready_tx.send(());
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            // Bounded: the sender runs `dur`; stop once it has been quiet.
            let hard = Instant::now() + dur + Duration::from_secs(10);
            while Instant::now() < hard {
                match sock.recv(&mut buf) {
                    Ok(_) => {
                        let now = Instant::now();
                        first.get_or_insert(now);
                        last = now;
                        n += 1;
                    }
                    Err(_) => {
                        if first.is_some() && last.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                    }
                }
            }
            let span = first.map(|f| last - f).unwrap_or_default();
            Ok((n, span))
        })?
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "UDP sink did not start".to_string())?;
    let sent = mn.in_ns(move || -> Result<u64> {
        let sock =
            UdpSocket::bind(SocketAddrV4::new(bind, 0)).map_err(|e| format!("bind {bind}: {e}"))?;
        sock.connect(SocketAddrV4::new(CN_IP, SINK_PORT))
            .map_err(|e| e.to_string())?;
        let payload = [0x5au8; 36];
        let end = Instant::now() + dur;
        let mut sent = 0u64;
        while Instant::now() < end {
            for _ in 0..64 {
                if sock.send(&payload).is_ok() {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    })??;
    let (n, span) = recv.join().map_err(|_| "UDP sink panicked".to_string())??;
    if n == 0 || span.is_zero() {
        return Err(format!("no 64-byte packet reached the CN ({sent} sent)"));
    }
    Ok(n as f64 / span.as_secs_f64())
}

fn synth_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(SYNTH_BASE + i as u32)
}

/// Installs `n` visitor bindings' SIMS state on `x` (peer index 0):
/// the catch-all rule, /32 routes in the SIMS table, `out_0` elements.
fn install_bindings(tb: &Testbed, x: Ma, n: usize) -> Result<()> {
    let ns = tb.agent(x);
    let mut lines = vec![format!(
        "rule add priority {SIMS_RULE_PRIORITY} lookup {SIMS_TABLE} proto {SIMS_PROTO}"
    )];
    for i in 0..n {
        lines.push(format!(
            "route add {}/32 dev br-lan table {SIMS_TABLE} proto {SIMS_PROTO} scope link",
            synth_addr(i)
        ));
    }
    ns.ip_batch_timeout(&lines, Duration::from_secs(300))?;
    let elems: Vec<String> = (0..n).map(|i| synth_addr(i).to_string()).collect();
    let set = nft_set_out(0);
    let mut script = String::new();
    for chunk in elems.chunks(2000) {
        script.push_str(&format!(
            "add element inet {SIMS_NFT_TABLE} {set} {{ {} }}\n",
            chunk.join(", ")
        ));
    }
    let mut c = ns.command(nft_bin());
    c.args(["-f", "-"]);
    crate::sys::run_ok(c, Some(script.as_bytes()), Duration::from_secs(120)).map(|_| ())
}

fn remove_bindings(tb: &Testbed, x: Ma) -> Result<()> {
    let ns = tb.agent(x);
    ns.ip(&["rule", "del", "priority", &SIMS_RULE_PRIORITY.to_string()])?;
    ns.ip(&["route", "flush", "table", &SIMS_TABLE.to_string()])?;
    ns.run(
        nft_bin(),
        &["flush", "set", "inet", SIMS_NFT_TABLE, &nft_set_out(0)],
        Duration::from_secs(60),
    )
    .map(|_| ())
}

fn count_state(tb: &Testbed, x: Ma) -> Result<(usize, usize)> {
    let ns = tb.agent(x);
    let routes = ns
        .ip(&["-4", "route", "show", "table", &SIMS_TABLE.to_string()])?
        .lines()
        .count();
    let rules = ns
        .ip(&["-4", "rule", "show"])?
        .lines()
        .filter(|l| l.starts_with(&format!("{SIMS_RULE_PRIORITY}:")))
        .count();
    Ok((routes, rules))
}

fn body(tb: &mut Testbed, o: &DataplaneOptions) -> Result<DataplaneReport> {
    let a_addr = Ma::A.node_addr();
    let b_addr = Ma::B.node_addr();
    tb.start_all_at(Ma::A)?;
    // A slow session from A's address keeps the node's old address (and
    // so the binding) alive while the relayed measurements run.
    let mut keep = tb.stream(
        StreamSpec::new(Dir::Down, "keepalive")
            .rate(10_000)
            .duration_ms(3_600_000)
            .bind(a_addr),
    )?;
    tb.move_to(Ma::B)?;
    tb.wait_node_at(Ma::B, Duration::from_secs(30))?;
    tb.wait_node_binding(a_addr, "relayed", Duration::from_secs(30))?;

    // The plain route over the same hops: the Internet router sends MA-B's
    // traffic for the CN to MA-A, which forwards it (hairpin on its WAN)
    // and masquerades it.
    tb.inet().ip_batch(&[
        format!(
            "rule add priority 100 from {} to {CN_IP} lookup 200",
            Ma::B.wan_ip()
        ),
        format!("route add default via {} table 200", Ma::A.wan_ip()),
    ])?;
    tb.agent(Ma::A).run(
        nft_bin(),
        &[
            "insert", "rule", "inet", "fw4", "forward", "iifname", "wan", "oifname", "wan",
            "accept",
        ],
        Duration::from_secs(10),
    )?;
    let relayed_seen = tb.whoami(Some(a_addr))?.seen;
    let direct_seen = tb.whoami(Some(b_addr))?.seen;
    println!(
        "dataplane: relayed session seen by the CN as {relayed_seen}, direct one as {direct_seen}"
    );
    for (what, seen) in [("relayed", relayed_seen), ("direct", direct_seen)] {
        if *seen.ip() != Ma::A.wan_ip() {
            return Err(format!(
                "the {what} path does not leave by MA-A ({seen}): the comparison would be unfair"
            ));
        }
    }
    let mut r_vs_d = Vec::new();
    for i in 1..=o.pairs {
        check_interrupt()?;
        let r = tcp_mbps(tb, a_addr, o.tcp_ms, &format!("relayed-{i}"))?;
        let d = tcp_mbps(tb, b_addr, o.tcp_ms, &format!("direct-{i}"))?;
        println!(
            "pair {i:>2}: relayed {r:7.1} Mbit/s  direct {d:7.1} Mbit/s  ratio {:.3}",
            r / d
        );
        r_vs_d.push(r / d);
    }
    let relayed_vs_direct = median(&r_vs_d);
    println!(
        "relayed_vs_direct median of {} pairs: {relayed_vs_direct:.3}",
        o.pairs
    );
    // Back to plain routing; the old address goes when its session ends.
    tb.inet().ip(&["rule", "del", "priority", "100"])?;
    let _ = keep.finish(Duration::from_secs(30));
    wait_for(
        "MA-B to hold no binding and no SIMS rule",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let st = tb.agent_status(Ma::B)?;
            let (routes, rules) = count_state(tb, Ma::B)?;
            Ok((st.bindings.is_empty() && routes == 0 && rules == 0).then_some(()))
        },
    )?;

    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for i in 1..=o.pairs {
        check_interrupt()?;
        let (routes, rules) = count_state(tb, Ma::B)?;
        if routes != 0 || rules != 0 {
            return Err(format!(
                "MA-B not clean before pair {i}: {routes} routes, {rules} rules"
            ));
        }
        let u0 = udp64_pps(tb, b_addr, o.udp_ms)?;
        let t0 = tcp_mbps(tb, b_addr, o.tcp_ms, &format!("new0-{i}"))?;
        let t = Instant::now();
        install_bindings(tb, Ma::B, o.bindings)?;
        let installed = t.elapsed();
        let (routes, rules) = count_state(tb, Ma::B)?;
        if routes < o.bindings || rules != 1 {
            return Err(format!(
                "installing {} bindings left {routes} routes and {rules} catch-all rules",
                o.bindings
            ));
        }
        let u1 = udp64_pps(tb, b_addr, o.udp_ms)?;
        let t1 = tcp_mbps(tb, b_addr, o.tcp_ms, &format!("new10k-{i}"))?;
        remove_bindings(tb, Ma::B)?;
        println!(
            "pair {i:>2}: 64-byte UDP {u0:8.0} pps / {u1:8.0} pps with {} bindings (ratio {:.3}); TCP {t0:7.1} / {t1:7.1} Mbit/s (ratio {:.3}); install took {:.1} s",
            o.bindings,
            u1 / u0,
            t1 / t0,
            installed.as_secs_f64()
        );
        udp.push(u1 / u0);
        tcp.push(t1 / t0);
    }
    let naive = if o.naive_control {
        check_interrupt()?;
        let u0 = udp64_pps(tb, b_addr, o.udp_ms)?;
        let t = Instant::now();
        let rules: Vec<String> = (0..o.bindings)
            .map(|i| {
                format!(
                    "rule add priority 2000 from {} lookup {SIMS_TABLE}",
                    synth_addr(i)
                )
            })
            .collect();
        tb.agent(Ma::B)
            .ip_batch_timeout(&rules, Duration::from_secs(600))?;
        let installed = t.elapsed();
        let u1 = udp64_pps(tb, b_addr, o.udp_ms)?;
        println!(
            "control, the naive design (one ip rule per binding, {} rules): 64-byte UDP {u0:.0} pps / {u1:.0} pps (ratio {:.3}); install took {:.1} s",
            o.bindings,
            u1 / u0,
            installed.as_secs_f64()
        );
        Some(u1 / u0)
    } else {
        None
    };
    let report = DataplaneReport {
        relayed_vs_direct,
        new_udp64_10k_vs_0: median(&udp),
        new_tcp_10k_vs_0: median(&tcp),
        naive_udp64_10k_vs_0: naive,
    };
    println!(
        "new_10k_vs_0 medians of {} pairs: udp64={:.3} tcp={:.3}",
        o.pairs, report.new_udp64_10k_vs_0, report.new_tcp_10k_vs_0
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_addresses_stay_out_of_the_testbed() {
        assert_eq!(synth_addr(0), Ipv4Addr::new(10, 128, 0, 1));
        assert_eq!(synth_addr(9_999), Ipv4Addr::new(10, 128, 39, 16));
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
