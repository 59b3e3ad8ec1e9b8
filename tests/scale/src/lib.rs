//! SIMS at Internet scale: a discrete-event simulator that drives the real
//! `sims_proto` agent and node state machines (the code simsd and
//! sims-node run) for thousands of hotspots and a hundred thousand moving
//! nodes over a simulated day, with workload models fitted to published
//! measurements, and the same workload accounted for Mobile IPv4 (a home
//! agent carries every packet of a node away from home) and for no
//! mobility. docs/SCALE.md has the model, its sources and the figures.

pub mod plot;
pub mod rng;
pub mod sim;
pub mod stats;
pub mod workload;

use std::time::Instant;

use sim::{City, CityConfig, Net};
use stats::Stats;
use workload::Workload;

#[derive(Clone, Debug)]
pub struct Config {
    pub cities: usize,
    pub agents_per_city: usize,
    pub nodes_per_city: usize,
    pub day_ms: u64,
    pub seed: u64,
    pub threads: usize,
    pub workload: Workload,
    pub net: Net,
    pub p_agreement: f64,
    pub providers: usize,
    pub max_bindings: usize,
    pub max_per_peer: usize,
    /// How long past its last use the checker lets a binding live (ms);
    /// `None`: the grace time plus two lifetimes, and a minute.
    pub stale_bound_ms: Option<u64>,
}

impl Config {
    /// The size: 1,000 hotspots in 100 cities, 100,000 nodes.
    pub fn full() -> Self {
        Config {
            cities: 100,
            agents_per_city: 10,
            nodes_per_city: 1000,
            day_ms: 24 * 3_600_000,
            seed: 1,
            threads: 2,
            workload: Workload::default(),
            net: Net::default(),
            p_agreement: 0.8,
            providers: 3,
            max_bindings: 1024,
            max_per_peer: 512,
            stale_bound_ms: None,
        }
    }

    /// Seconds, for `cargo xtask test`: small tables so that the limits
    /// are reached and their enforcement checked.
    pub fn ci() -> Self {
        Config {
            cities: 2,
            agents_per_city: 5,
            nodes_per_city: 300,
            seed: 7,
            max_bindings: 4,
            max_per_peer: 2,
            ..Config::full()
        }
    }

    /// Busier hotspots for the sizing advice: cities of 2 and 3 hotspots
    /// among as many nodes as the full run's cities of 10.
    pub fn dense(&self) -> [Config; 2] {
        [(3, 10), (2, 6)].map(|(agents, cities)| Config {
            cities,
            agents_per_city: agents,
            nodes_per_city: 1000,
            seed: self.seed + agents as u64,
            ..self.clone()
        })
    }

    pub fn city(&self, c: usize) -> CityConfig {
        CityConfig {
            city: c,
            first_agent: c * self.agents_per_city,
            agents: self.agents_per_city,
            nodes: self.nodes_per_city,
            day_ms: self.day_ms,
            seed: self.seed.wrapping_mul(1_000_003).wrapping_add(c as u64),
            workload: self.workload.clone(),
            net: self.net.clone(),
            p_agreement: self.p_agreement,
            providers: self.providers,
            max_bindings: self.max_bindings,
            max_per_peer: self.max_per_peer,
            stale_bound_ms: self.stale_bound_ms,
        }
    }
}

/// Runs every city (on `threads` threads) and adds up their statistics,
/// in city order.
pub fn run(cfg: &Config) -> Result<Stats, String> {
    if cfg.nodes_per_city > sim::MAX_NODES_PER_CITY {
        return Err(format!(
            "at most {} nodes per city (one /22 LAN per hotspot)",
            sim::MAX_NODES_PER_CITY
        ));
    }
    if cfg.agents_per_city < 2 || cfg.cities == 0 {
        return Err("at least one city of two hotspots".into());
    }
    let t0 = Instant::now();
    let threads = cfg.threads.clamp(1, cfg.cities);
    let mut per_city: Vec<Option<Stats>> = vec![None; cfg.cities];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..cfg.cities)
                        .step_by(threads)
                        .map(|c| (c, City::new(cfg.city(c)).run()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(v) = h.join() {
                for (c, st) in v {
                    per_city[c] = Some(st);
                }
            }
        }
    });
    let mut total = Stats::new(cfg.day_ms);
    for (c, st) in per_city.into_iter().enumerate() {
        total.merge(st.ok_or(format!("city {c} did not finish"))?);
    }
    total.wall_s = t0.elapsed().as_secs_f64();
    Ok(total)
}

/// One row of the sizing advice: hotspots whose busiest hour saw up to
/// `arrivals_per_hour` arrivals held at most `peak_bindings` at once.
#[derive(Clone, Debug)]
pub struct SizingRow {
    pub arrivals_per_hour: u32,
    pub agents: usize,
    pub peak_bindings: usize,
    pub max_bindings: usize,
    pub peak_credentials: usize,
    pub max_credentials: usize,
    pub rss_kib: f64,
}

/// Hotspots grouped by their busiest hour's arrivals; the advice is twice
/// the largest peak of bindings seen in the group (rounded up to 16), 1.5
/// times its largest number of credentials (rounded up to 64), and the RSS
/// that simsd needs with both tables full.
pub fn sizing(runs: &[&Stats]) -> Vec<SizingRow> {
    let bounds = [10u32, 25, 50, 100, 200, 400, 800, 1600];
    let mut rows = Vec::new();
    let mut lo = 0;
    for &hi in &bounds {
        let group: Vec<_> = (runs.iter().flat_map(|st| st.agents.iter()))
            .filter(|a| {
                let peak = a.arrivals_per_hour.iter().copied().max().unwrap_or(0);
                peak > lo && peak <= hi
            })
            .collect();
        lo = hi;
        if group.is_empty() {
            continue;
        }
        let peak = group.iter().map(|a| a.peak_bindings).max().unwrap_or(0);
        let max_bindings = ((2 * peak).max(16)).div_ceil(16) * 16;
        let creds = group.iter().map(|a| a.peak_credentials).max().unwrap_or(0);
        let max_credentials = ((creds * 3 / 2).max(64)).div_ceil(64) * 64;
        rows.push(SizingRow {
            arrivals_per_hour: hi,
            agents: group.len(),
            peak_bindings: peak,
            max_bindings,
            peak_credentials: creds,
            max_credentials,
            rss_kib: stats::SIMSD_IDLE_KIB
                + stats::SIMSD_KIB_PER_BINDING * max_bindings as f64
                + stats::credential_bytes() * max_credentials as f64 / 1024.0,
        });
    }
    rows
}
