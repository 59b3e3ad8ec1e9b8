//! Benchmarks that need the VM (xtask/src/vm.rs): `bench vm-delay` (the
//! handover benchmark under netem WAN delay) and `bench dataplane` (the
//! data-plane ratios over kernel ipip), plus their guest side, `xtask guest
//! ...`, which tests/vm/bench.sh runs inside the VM with the binaries of the
//! share (there is no cargo in the guest).

use std::path::PathBuf;
use std::time::Duration;

use sims_testbed::dataplane::{run_dataplane_bench, DataplaneOptions};
use sims_testbed::harness::{run_handover_bench, BenchOptions};

use crate::vmtest;

/// Values of `--name V` / `--name=V` options (defaults given); `--debug`
/// is allowed as a switch; anything else is an error.
pub fn opts(args: &[String], known: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let mut vals: Vec<String> = known.iter().map(|(_, d)| d.to_string()).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--debug" {
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let Some(i) = known.iter().position(|(n, _)| *n == name) else {
            return Err(format!("unknown option {a}"));
        };
        vals[i] = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
    }
    Ok(vals)
}

pub fn num(name: &str, v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("{name} needs a number, not {v:?}"))
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

/// `cargo xtask bench vm-delay`: one boot, one testbed per delay.
pub fn cmd_bench_vm_delay(args: &[String]) -> Result<(), String> {
    let v = opts(args, &[("--moves", "20"), ("--delays", "0,10,40")])?;
    let moves = num("--moves", &v[0])?;
    let delays: Vec<u64> = v[1]
        .split(',')
        .map(|d| num("--delays", d.trim()))
        .collect::<Result<_, _>>()?;
    if moves == 0 || delays.is_empty() {
        return Err("--moves must be at least 1 and --delays name at least one delay".into());
    }
    let bins = crate::build_bins(!args.iter().any(|a| a == "--debug"))?;
    let cmds: Vec<String> = delays
        .iter()
        .map(|d| {
            format!(
                "/mnt/host/bin/xtask guest bench-handover --bin-dir /mnt/host/bin --moves {moves} --delay-ms {d}"
            )
        })
        .collect();
    let timeout = Duration::from_secs(600 + 60 * moves * delays.len() as u64);
    let out = vmtest::run_guest_commands(&crate::workspace(), &bins, "vm-delay", &cmds, timeout)?;
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
pub fn cmd_bench_dataplane(args: &[String]) -> Result<(), String> {
    let v = opts(args, &[("--pairs", "8")])?;
    let pairs = num("--pairs", &v[0])?;
    if pairs == 0 {
        return Err("--pairs must be at least 1".into());
    }
    let bins = crate::build_bins(!args.iter().any(|a| a == "--debug"))?;
    let cmds = vec![format!(
        "/mnt/host/bin/xtask guest bench-dataplane --bin-dir /mnt/host/bin --pairs {pairs}"
    )];
    let timeout = Duration::from_secs(900 + 120 * pairs);
    let out = vmtest::run_guest_commands(&crate::workspace(), &bins, "dataplane", &cmds, timeout)?;
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
pub fn cmd_guest(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("bench-handover") => {
            let v = opts(
                &args[1..],
                &[
                    ("--bin-dir", "/mnt/host/bin"),
                    ("--moves", "10"),
                    ("--delay-ms", "0"),
                ],
            )?;
            let bin_dir = PathBuf::from(&v[0]);
            let delay_ms = num("--delay-ms", &v[2])?;
            let r = run_handover_bench(&BenchOptions {
                traffic_bin: bin_dir.join("sims-traffic"),
                bin_dir,
                moves: num("--moves", &v[1])? as usize,
                rate: 200_000,
                delay_ms,
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
            let v = opts(
                &args[1..],
                &[("--bin-dir", "/mnt/host/bin"), ("--pairs", "8")],
            )?;
            let bin_dir = PathBuf::from(&v[0]);
            let mut o = DataplaneOptions::new(bin_dir.clone(), bin_dir.join("sims-traffic"));
            o.pairs = num("--pairs", &v[1])? as usize;
            let r = run_dataplane_bench(&o)?;
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
    fn options_and_fields() {
        let a: Vec<String> = ["--moves", "3", "--debug", "--delays=0,5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            opts(&a, &[("--moves", "10"), ("--delays", "0,10,40")]).unwrap(),
            ["3", "0,5"]
        );
        assert!(opts(&a, &[("--moves", "10")]).is_err());
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
