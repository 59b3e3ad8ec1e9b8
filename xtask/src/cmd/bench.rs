//! `cargo xtask bench ...`: `handover` (namespaces on the host),
//! `footprint` (router targets), and the benchmarks that need the VM,
//! `vm-delay` (the handover benchmark under netem WAN delay) and
//! `dataplane` (the data-plane ratios over kernel ipip), plus their guest
//! side, `xtask guest ...`, which tests/vm/bench.sh runs inside the VM with
//! the binaries of the share (there is no cargo in the guest).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sims_testbed::dataplane::{run_dataplane_bench, DataplaneOptions};
use sims_testbed::harness::{run_handover_bench, BenchOptions};
use sims_vm::host::is_root;

use crate::cargo::{build_bins, workspace};
use crate::{opts, targets};

/// `cargo xtask bench handover [--moves N] [--delay-ms N] [--no-early]
/// [--rto-min-ms N] [--dhcp-delay-s N] [--debug]`: N alternating moves
/// measured with `sims-traffic probe`; the last two lines are `handover
/// median_ms=<x> p99_ms=<y> moves=<n>` and `stall down_ms=<x> up_ms=<y>
/// linkup_ms=<z>`. `--no-early` and `--rto-min-ms` set sims-node's levers
/// (to measure what each gives); `--dhcp-delay-s` slows the DHCP server.
pub fn handover(args: &[String]) -> Result<(), String> {
    let o = opts::parse(
        args,
        &["--debug", "--no-early"],
        &["--moves", "--delay-ms", "--rto-min-ms", "--dhcp-delay-s"],
    )?;
    let moves = o.num("--moves", 20)? as usize;
    let delay_ms = o.num("--delay-ms", 0)?;
    let mut node_args = Vec::new();
    if o.has("--no-early") {
        node_args.push("--no-early".to_string());
    }
    if o.value("--rto-min-ms").is_some() {
        node_args.push("--rto-min-ms".to_string());
        node_args.push(o.num("--rto-min-ms", 20)?.to_string());
    }
    let dhcp_delay_s = o.num("--dhcp-delay-s", 0)? as u32;
    if moves == 0 {
        return Err("--moves must be at least 1".into());
    }
    if !is_root() {
        return Err("the benchmark builds network namespaces: run it as root".into());
    }
    // --debug: quick check of the harness with debug binaries (the figures
    // that count come from the release build).
    let bin_dir = build_bins(!o.has("--debug"))?;
    run_handover_bench(&BenchOptions {
        traffic_bin: bin_dir.join("sims-traffic"),
        bin_dir,
        moves,
        rate: 200_000,
        delay_ms,
        node_args,
        dhcp_delay_s,
    })
    .map(|_| ())
}

/// `cargo xtask bench footprint [--target <triple>]...`: sizes and peak
/// RSS per router target (every one by default).
pub fn footprint(args: &[String]) -> Result<(), String> {
    let mut wanted = opts::parse(args, &["--all"], &["--target"])?.targets();
    if wanted.is_empty() {
        wanted.push("--all".into());
    }
    let boards = targets::chosen(&wanted)?;
    targets::footprint::run(&mut targets::targets(), &boards)
}

/// `cargo xtask bench flood`: the agent's protocol CPU per second under
/// 10,000 datagrams/s of each message type, against idle (the
/// sims-proto example `flood`, release build).
pub fn flood(args: &[String]) -> Result<(), String> {
    opts::parse(args, &[], &[])?;
    let mut c = crate::cargo::cargo();
    c.args([
        "run",
        "--release",
        "-q",
        "-p",
        "sims-proto",
        "--example",
        "flood",
    ]);
    crate::cargo::run("bench flood", c)
}

/// `cargo xtask bench scale [--cities N] [--agents-per-city N]
/// [--nodes-per-city N] [--hours H] [--seed S] [--threads T] [--plots DIR]`:
/// the Internet-scale simulator (tests/scale, docs/SCALE.md) with the real
/// protocol cores; by default 1,000 hotspots and 100,000 nodes over a day,
/// plots into docs/scale/. Last line `scale agents=<n> nodes=<m>
/// bindings_p99=<x> relayed_bytes_fraction=<y> mip_ha_ratio=<z>`.
pub fn scale(args: &[String]) -> Result<(), String> {
    let o = opts::parse(
        args,
        &[],
        &[
            "--cities",
            "--agents-per-city",
            "--nodes-per-city",
            "--hours",
            "--seed",
            "--threads",
            "--plots",
        ],
    )?;
    let mut c = crate::cargo::cargo();
    c.args(["run", "--profile", "sim", "-q", "-p", "sims-scale", "--"]);
    c.args(args);
    if o.value("--plots").is_none() {
        c.args([
            "--plots",
            &workspace().join("docs/scale").display().to_string(),
        ]);
    }
    crate::cargo::run("bench scale", c)
}

/// `cargo xtask bench handover-cpu`: the protocol's CPU per handover on
/// x86_64 natively and on mipsel in the Malta guest, with its crypto share
/// (the sims-proto example `handover`, release builds).
pub fn handover_cpu(args: &[String]) -> Result<(), String> {
    opts::parse(args, &[], &[])?;
    let boards = targets::chosen(&[
        "x86_64-unknown-linux-musl".into(),
        "mipsel-unknown-linux-musl".into(),
    ])?;
    targets::handover_cpu::run(&mut targets::targets(), &boards[0], &boards[1])
}

/// A `key=value` number in a whitespace-separated line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|x| x.parse().ok())
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        f64::NAN
    }
}

/// Boots once and runs `cmds` in the VM with this xtask binary as the
/// guest's side (`xtask guest ...`; there is no cargo in the guest).
fn guest_commands(
    bins: &Path,
    what: &str,
    cmds: &[String],
    timeout: Duration,
) -> Result<sims_vm::Outcome, String> {
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    sims_vm::suite::run_guest_commands(&workspace(), bins, (&me, "xtask"), what, cmds, timeout)
}

/// `cargo xtask bench vm-delay`: one boot, one testbed per delay.
pub fn vm_delay(args: &[String]) -> Result<(), String> {
    let o = opts::parse(args, &["--debug"], &["--moves", "--delays"])?;
    let moves = o.num("--moves", 20)?;
    let delays: Vec<u64> = o
        .value("--delays")
        .unwrap_or("0,10,40")
        .split(',')
        .map(|d| opts::num("--delays", d.trim()))
        .collect::<Result<_, _>>()?;
    if moves == 0 || delays.is_empty() {
        return Err("--moves must be at least 1 and --delays name at least one delay".into());
    }
    let bins = build_bins(!o.has("--debug"))?;
    let cmds: Vec<String> = delays
        .iter()
        .map(|d| {
            format!(
                "/mnt/host/bin/xtask guest bench-handover --bin-dir /mnt/host/bin --moves {moves} --delay-ms {d}"
            )
        })
        .collect();
    let timeout = Duration::from_secs(600 + 60 * moves * delays.len() as u64);
    let out = guest_commands(&bins, "vm-delay", &cmds, timeout)?;
    let rows: Vec<(f64, f64, f64)> = out
        .console
        .iter()
        .filter_map(|l| l.trim().strip_prefix("vm-delay "))
        .filter_map(|l| {
            Some((
                field(l, "delay_ms")?,
                field(l, "median_ms")?,
                field(l, "p99_ms")?,
            ))
        })
        .collect();
    if rows.len() != delays.len() {
        return Err(format!(
            "expected {} results from the guest, got {}",
            delays.len(),
            rows.len()
        ));
    }
    println!(
        "\nhandover vs one-way WAN delay (netem on each agent's WAN; kernel ipip; VM under TCG; {moves} moves each):"
    );
    println!("| one-way delay | handover median | p99 | median - median at 0 ms |");
    println!("| --- | --- | --- | --- |");
    let base = rows.iter().find(|r| r.0 == 0.0).map(|r| r.1);
    for (d, m, p) in &rows {
        println!(
            "| {d:.0} ms | {m:.2} ms | {p:.2} ms | {} |",
            base.map(|b| format!("{:+.2} ms", m - b))
                .unwrap_or_else(|| "-".into())
        );
    }
    let k = slope(&rows.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
    println!("fitted slope: {k:.2} ms of handover per ms of one-way delay");
    println!(
        "handover_vs_delay {} slope={k:.2}",
        rows.iter()
            .map(|(d, m, _)| format!("{d:.0}ms={m:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// `cargo xtask bench dataplane`: the ratios, measured in the VM.
pub fn dataplane(args: &[String]) -> Result<(), String> {
    let o = opts::parse(args, &["--debug"], &["--pairs"])?;
    let pairs = o.num("--pairs", 8)?;
    if pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    let bins = build_bins(!o.has("--debug"))?;
    let cmds = vec![format!(
        "/mnt/host/bin/xtask guest bench-dataplane --bin-dir /mnt/host/bin --pairs {pairs}"
    )];
    let timeout = Duration::from_secs(900 + 120 * pairs);
    let out = guest_commands(&bins, "dataplane", &cmds, timeout)?;
    let last = out
        .console
        .iter()
        .rev()
        .find(|l| l.trim().starts_with("dataplane relayed_vs_direct="))
        .ok_or("the guest printed no `dataplane ...` result line")?;
    println!("{}", last.trim());
    Ok(())
}

/// `xtask guest bench-handover|bench-dataplane ...`, inside the VM.
pub fn guest(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("bench-handover") => {
            let o = opts::parse(
                &args[1..],
                &["--debug"],
                &["--bin-dir", "--moves", "--delay-ms"],
            )?;
            let bin_dir = PathBuf::from(o.value("--bin-dir").unwrap_or("/mnt/host/bin"));
            let delay_ms = o.num("--delay-ms", 0)?;
            let r = run_handover_bench(&BenchOptions {
                traffic_bin: bin_dir.join("sims-traffic"),
                bin_dir,
                moves: o.num("--moves", 10)? as usize,
                rate: 200_000,
                delay_ms,
                // The figure is the protocol's share of the handover from
                // the new address on (one agent-to-agent crossing), which
                // early registration would hide before the address came.
                node_args: vec!["--no-early".into()],
                dhcp_delay_s: 0,
            })?;
            println!(
                "vm-delay delay_ms={delay_ms} median_ms={:.2} p99_ms={:.2} moves={}",
                r.median_ms,
                r.p99_ms,
                r.samples.len()
            );
            Ok(())
        }
        Some("bench-dataplane") => {
            let o = opts::parse(&args[1..], &["--debug"], &["--bin-dir", "--pairs"])?;
            let bin_dir = PathBuf::from(o.value("--bin-dir").unwrap_or("/mnt/host/bin"));
            let mut d = DataplaneOptions::new(bin_dir.clone(), bin_dir.join("sims-traffic"));
            d.pairs = o.num("--pairs", 8)? as usize;
            let r = run_dataplane_bench(&d)?;
            println!(
                "dataplane relayed_vs_direct={:.3} new_10k_vs_0={:.3}",
                r.relayed_vs_direct,
                r.new_10k_vs_0()
            );
            Ok(())
        }
        _ => Err("usage (inside the VM): xtask guest bench-handover|bench-dataplane ...".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_slope() {
        assert_eq!(
            field(
                "vm-delay delay_ms=10 median_ms=31.50 p99_ms=40",
                "median_ms"
            ),
            Some(31.5)
        );
        assert_eq!(field("x delay_ms=10", "delay"), None);
        let k = slope(&[(0.0, 5.0), (10.0, 55.0), (40.0, 205.0)]);
        assert!((k - 5.0).abs() < 1e-9);
    }
}
