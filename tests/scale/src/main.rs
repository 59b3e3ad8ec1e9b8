//! `sims-scale`: runs the simulator and prints its figures (run by
//! `cargo xtask bench scale`; docs/SCALE.md).
//!
//! ```text
//! sims-scale [--ci] [--cities N] [--agents-per-city N] [--nodes-per-city N]
//!            [--hours H] [--seed S] [--threads T] [--plots DIR]
//! ```

use std::process::ExitCode;

use sims_scale::{plot, run, sizing, Config};

const USAGE: &str = "usage: sims-scale [--ci] [--cities N] [--agents-per-city N] [--nodes-per-city N] [--hours H] [--seed S] [--threads T] [--plots DIR]";

fn parse() -> Result<(Config, Option<String>, bool), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = if args.iter().any(|a| a == "--ci") {
        Config::ci()
    } else {
        Config::full()
    };
    let mut plots = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--ci" {
            continue;
        }
        let v = it.next().ok_or(format!("{a}: needs a value\n{USAGE}"))?;
        let num = || -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{a} {v}: not a number\n{USAGE}"))
        };
        match a.as_str() {
            "--cities" => cfg.cities = num()? as usize,
            "--agents-per-city" => cfg.agents_per_city = num()? as usize,
            "--nodes-per-city" => cfg.nodes_per_city = num()? as usize,
            "--hours" => cfg.day_ms = num()? * 3_600_000,
            "--seed" => cfg.seed = num()?,
            "--threads" => cfg.threads = num()? as usize,
            "--plots" => plots = Some(v.clone()),
            _ => return Err(USAGE.into()),
        }
    }
    Ok((cfg, plots, args.iter().any(|a| a == "--ci")))
}

fn main() -> ExitCode {
    let (cfg, plots, ci) = match parse() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("sims-scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "sims-scale: {} cities x {} hotspots, {} nodes each, {} h, {} threads",
        cfg.cities,
        cfg.agents_per_city,
        cfg.nodes_per_city,
        cfg.day_ms / 3_600_000,
        cfg.threads
    );
    let st = match run(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sims-scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The sizing advice also from busier hotspots (not in the figures).
    let mut dense = Vec::new();
    if !ci {
        for d in cfg.dense() {
            match run(&d) {
                Ok(s) => {
                    eprintln!(
                        "sims-scale: sizing run, cities of {} hotspots: {} agents, {} nodes, {:.0} s, invariants violated {}",
                        d.agents_per_city,
                        s.agents.len(),
                        s.nodes,
                        s.wall_s,
                        s.violations.total()
                    );
                    dense.push(s)
                }
                Err(e) => {
                    eprintln!("sims-scale: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let report = st.report();
    let (body, last) = report.trim_end().rsplit_once('\n').unwrap_or(("", &report));
    println!("{body}");
    println!("sizing (busiest hour's arrivals -> peaks seen -> advice):");
    let runs: Vec<&_> = std::iter::once(&st).chain(&dense).collect();
    for r in sizing(&runs) {
        println!(
            "  up to {:>4} arrivals/hour ({:>4} hotspots): peak {:>4} bindings, {:>5} credentials -> max_bindings {:>4}, max_credentials {:>5}, simsd {:.0} KiB",
            r.arrivals_per_hour,
            r.agents,
            r.peak_bindings,
            r.peak_credentials,
            r.max_bindings,
            r.max_credentials,
            r.rss_kib
        );
    }
    if let Some(dir) = plots {
        match plot::all(&st, std::path::Path::new(&dir)) {
            Ok(files) => {
                for f in files {
                    println!("plot: {f}");
                }
            }
            Err(e) => {
                eprintln!("sims-scale: plots: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{last}");
    if runs.iter().any(|s| s.violations.total() > 0) {
        eprintln!("sims-scale: invariants violated");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
