//! What a run measures, per city, and the figures printed from the sum.

use std::fmt::Write as _;

use crate::sim::Cause;

/// Hours of simulated time accounted (the day and its tail).
pub const HOURS: usize = 25;

/// The measured footprint (docs/BENCHMARKS.md, "Footprint", mipsel_24kc,
/// run of 2026-12-01): simsd idle, and its growth per binding with its
/// credential (1,000 bindings: 1,416 KiB RSS against 720 idle; the core's
/// heap 369 KiB, ≈ 354 bytes each).
pub const SIMSD_IDLE_KIB: f64 = 720.0;
pub const SIMSD_KIB_PER_BINDING: f64 = (1416.0 - 720.0) / 1000.0;
pub const HEAP_BYTES_PER_BINDING: f64 = 369.0 * 1024.0 / 1000.0;

/// A credential the agent issued and remembers (the node's address here):
/// its entry and key in the B-tree, plus the tree's share per entry (an
/// estimate: B-tree nodes hold up to 11 entries). Measured with
/// `size_of` on the machine running the simulator; the footprint above
/// already counts one credential per binding.
pub fn credential_bytes() -> f64 {
    (std::mem::size_of::<sims_proto::agent::CredEntry>() + 4 + 16) as f64
}

#[derive(Clone, Debug, Default)]
pub struct AgentStats {
    pub cpu_ns: u64,
    pub kernel_actions: u64,
    pub peak_tunnels: usize,
    pub arrivals_per_hour: Vec<u32>,
    pub peak_bindings: usize,
    pub peak_credentials: usize,
    pub table_full: u64,
    pub relayed_bytes: f64,
    pub mip_ha_bytes: f64,
    pub verifications: u64,
    pub key_agreements: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Violations {
    pub limits: u64,
    pub stale: u64,
    pub chain: u64,
    /// A core's timer still due after its handle_timeout.
    pub spin: u64,
    pub examples: Vec<String>,
}

impl Violations {
    fn example(&mut self, s: String) {
        if self.examples.len() < 10 {
            self.examples.push(s);
        }
    }
    pub fn note_stale(&mut self, s: String) {
        self.stale += 1;
        self.example(s);
    }
    pub fn note_chain(&mut self, s: String) {
        self.chain += 1;
        self.example(s);
    }
    pub fn note_spin(&mut self, s: String) {
        self.spin += 1;
        self.example(s);
    }
    pub fn total(&self) -> u64 {
        self.limits + self.stale + self.chain + self.spin
    }
}

#[derive(Clone, Debug)]
pub struct Stats {
    pub day_ms: u64,
    pub nodes: usize,
    pub agents: Vec<AgentStats>,
    pub arrivals: u64,
    pub moves: u64,
    pub flows: u64,
    pub sims_survived: u64,
    pub sims_lost: u64,
    /// Lost because the hotspot had no roaming agreement with the issuer.
    pub sims_lost_no_agreement: u64,
    pub bytes_direct: f64,
    pub bytes_relayed: f64,
    pub mip_ha_bytes: f64,
    pub hourly_relayed: Vec<f64>,
    pub hourly_mip: Vec<f64>,
    /// Datagrams sent, by cause (sim::Cause) and message type.
    pub msg: Vec<Vec<u64>>,
    pub online_ms: u64,
    pub violations: Violations,
    pub relayed_checked: u64,
    /// Per sample (each simulated minute of the day), bindings per agent.
    pub samples: Vec<Vec<u16>>,
    pub node_relayed_fraction: Vec<f64>,
    pub wall_s: f64,
}

impl Stats {
    pub fn new(day_ms: u64) -> Self {
        Stats {
            day_ms,
            nodes: 0,
            agents: Vec::new(),
            arrivals: 0,
            moves: 0,
            flows: 0,
            sims_survived: 0,
            sims_lost: 0,
            sims_lost_no_agreement: 0,
            bytes_direct: 0.0,
            bytes_relayed: 0.0,
            mip_ha_bytes: 0.0,
            hourly_relayed: vec![0.0; HOURS],
            hourly_mip: vec![0.0; HOURS],
            msg: vec![vec![0; 256]; 4],
            online_ms: 0,
            violations: Violations::default(),
            relayed_checked: 0,
            samples: Vec::new(),
            node_relayed_fraction: Vec::new(),
            wall_s: 0.0,
        }
    }

    pub fn merge(&mut self, o: Stats) {
        self.nodes += o.nodes;
        self.agents.extend(o.agents);
        self.arrivals += o.arrivals;
        self.moves += o.moves;
        self.flows += o.flows;
        self.sims_survived += o.sims_survived;
        self.sims_lost += o.sims_lost;
        self.sims_lost_no_agreement += o.sims_lost_no_agreement;
        self.bytes_direct += o.bytes_direct;
        self.bytes_relayed += o.bytes_relayed;
        self.mip_ha_bytes += o.mip_ha_bytes;
        for (a, b) in self.hourly_relayed.iter_mut().zip(&o.hourly_relayed) {
            *a += b;
        }
        for (a, b) in self.hourly_mip.iter_mut().zip(&o.hourly_mip) {
            *a += b;
        }
        for (m, om) in self.msg.iter_mut().zip(&o.msg) {
            for (a, b) in m.iter_mut().zip(om) {
                *a += b;
            }
        }
        self.online_ms += o.online_ms;
        let v = o.violations;
        self.violations.limits += v.limits;
        self.violations.stale += v.stale;
        self.violations.chain += v.chain;
        self.violations.spin += v.spin;
        for e in v.examples {
            self.violations.example(e);
        }
        self.relayed_checked += o.relayed_checked;
        if self.samples.len() < o.samples.len() {
            self.samples.resize(o.samples.len(), Vec::new());
        }
        for (a, b) in self.samples.iter_mut().zip(o.samples) {
            a.extend(b);
        }
        self.node_relayed_fraction.extend(o.node_relayed_fraction);
    }

    pub fn all_samples(&self) -> Vec<f64> {
        self.samples.iter().flatten().map(|&x| x as f64).collect()
    }

    pub fn relayed_fraction(&self) -> f64 {
        let total = self.bytes_direct + self.bytes_relayed;
        if total > 0.0 {
            self.bytes_relayed / total
        } else {
            0.0
        }
    }

    pub fn mip_ha_ratio(&self) -> f64 {
        if self.bytes_relayed > 0.0 {
            self.mip_ha_bytes / self.bytes_relayed
        } else {
            f64::INFINITY
        }
    }

    /// Datagrams an exchange started by `cause` sent, per occurrence.
    pub fn per(&self, cause: Cause, n: u64) -> f64 {
        self.msg[cause as usize].iter().sum::<u64>() as f64 / n.max(1) as f64
    }

    /// The report: one figure per line, the summary line last.
    pub fn report(&self) -> String {
        let mut o = String::new();
        let n_agents = self.agents.len();
        let samples = self.all_samples();
        let (b_mean, p99, max) = (
            mean(&samples),
            percentile(&samples, 99.0),
            samples.iter().cloned().fold(0.0, f64::max),
        );
        let h = self.day_ms as f64 / 3_600_000.0;
        let _ = writeln!(
            o,
            "workload: {n_agents} agents, {} nodes, {h:.0} h: {} arrivals, {} moves, {} flows",
            self.nodes, self.arrivals, self.moves, self.flows
        );
        let _ = writeln!(
            o,
            "bindings per agent (each minute): mean {b_mean:.2}, p99 {p99:.0}, max {max:.0}"
        );
        let peak: Vec<f64> = self.agents.iter().map(|a| a.peak_bindings as f64).collect();
        let _ = writeln!(
            o,
            "peak bindings of an agent over the day: median {:.0}, p99 {:.0}, max {:.0}; peak credentials max {}; table full {}",
            percentile(&peak, 50.0),
            percentile(&peak, 99.0),
            peak.iter().cloned().fold(0.0, f64::max),
            self.agents.iter().map(|a| a.peak_credentials).max().unwrap_or(0),
            self.agents.iter().map(|a| a.table_full).sum::<u64>()
        );
        let mem = |b: f64| SIMSD_IDLE_KIB + SIMSD_KIB_PER_BINDING * b;
        let creds: Vec<f64> = self
            .agents
            .iter()
            .map(|a| a.peak_credentials as f64)
            .collect();
        let _ = writeln!(
            o,
            "credentials an agent remembers (issued to nodes on its LAN, kept a day): median {:.0}, p99 {:.0}, max {:.0}; {:.0} bytes each: {:.1} KiB at the max",
            percentile(&creds, 50.0),
            percentile(&creds, 99.0),
            creds.iter().cloned().fold(0.0, f64::max),
            credential_bytes(),
            creds.iter().cloned().fold(0.0, f64::max) * credential_bytes() / 1024.0
        );
        let _ = writeln!(
            o,
            "agent memory (simsd RSS on mipsel from the footprint: {SIMSD_IDLE_KIB:.0} KiB + {SIMSD_KIB_PER_BINDING:.3} KiB per binding): p99 {:.0} KiB, max {:.0} KiB; binding heap at the max {:.1} KiB",
            mem(percentile(&peak, 99.0)),
            mem(peak.iter().cloned().fold(0.0, f64::max)),
            peak.iter().cloned().fold(0.0, f64::max) * HEAP_BYTES_PER_BINDING / 1024.0
        );
        let names = [
            (0x01, "advertisement"),
            (0x02, "solicitation"),
            (0x03, "registration"),
            (0x04, "registration-reply"),
            (0x05, "release"),
            (0x06, "release-reply"),
            (0x11, "tunnel-request"),
            (0x12, "tunnel-reply"),
            (0x13, "tunnel-release"),
            (0x14, "tunnel-release-reply"),
            (0x15, "peer-challenge"),
            (0x16, "peer-hello"),
            (0x17, "peer-hello-reply"),
            (0x18, "peer-move-challenge"),
        ];
        let kinds = |c: Cause, n: u64| -> String {
            (names.iter())
                .filter(|(t, _)| self.msg[c as usize][*t] > 0)
                .map(|(t, name)| {
                    format!(
                        "{name} {:.2}",
                        self.msg[c as usize][*t] as f64 / n.max(1) as f64
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let first = self.arrivals - self.moves;
        let _ = writeln!(
            o,
            "control messages per move: {:.2} ({}); per first arrival of a period: {:.2}",
            self.per(Cause::Move, self.moves),
            kinds(Cause::Move, self.moves),
            self.per(Cause::Arrival, first)
        );
        let node_h = self.online_ms as f64 / 3_600_000.0;
        let adverts = self.msg[Cause::Periodic as usize][1];
        let _ = writeln!(
            o,
            "and besides: releases of ended sessions {:.2} per move; timers (refreshes, retransmissions, hellos) {:.1} per online node-hour; advertisements {:.0} per agent-hour",
            self.per(Cause::Release, self.moves),
            (self.per(Cause::Periodic, 1) - adverts as f64) / node_h.max(1e-9),
            adverts as f64 / (n_agents.max(1) as f64 * (h + crate::sim::TAIL_MS as f64 / 3_600_000.0))
        );
        let total = self.bytes_direct + self.bytes_relayed;
        let _ = writeln!(
            o,
            "bytes: {:.3} TB carried, {:.4} relayed through SIMS tunnels, {:.4} direct; MIPv4 home agents would carry {:.3} TB ({:.3} of all)",
            total / 1e12,
            self.relayed_fraction(),
            1.0 - self.relayed_fraction(),
            self.mip_ha_bytes / 1e12,
            self.mip_ha_bytes / total.max(1.0)
        );
        let fr = &self.node_relayed_fraction;
        let _ = writeln!(
            o,
            "relayed fraction per node: median {:.4}, p90 {:.4}, p99 {:.4}, nodes with none {:.3}",
            percentile(fr, 50.0),
            percentile(fr, 90.0),
            percentile(fr, 99.0),
            fr.iter().filter(|&&x| x == 0.0).count() as f64 / fr.len().max(1) as f64
        );
        let crossing = self.sims_survived + self.sims_lost;
        let _ = writeln!(
            o,
            "sessions alive at a move: {crossing} of {} ({:.4}); survive: SIMS {} ({:.4}), MIPv4 {crossing} (1.0000), no mobility 0 (0.0000); SIMS lost {}: {} to hotspots without a roaming agreement with the issuer, {} other",
            self.flows,
            crossing as f64 / self.flows.max(1) as f64,
            self.sims_survived,
            self.sims_survived as f64 / crossing.max(1) as f64,
            self.sims_lost,
            self.sims_lost_no_agreement,
            self.sims_lost - self.sims_lost_no_agreement
        );
        let cpu: Vec<f64> = self.agents.iter().map(|a| a.cpu_ns as f64 / 1e6).collect();
        let ka: u64 = self.agents.iter().map(|a| a.key_agreements).sum();
        let _ = writeln!(
            o,
            "agent protocol CPU over the day (x86_64, this machine): mean {:.0} ms, p99 {:.0} ms, max {:.0} ms ({:.1e} of one core at the max); key agreements {ka}, {:.2} per arrival",
            mean(&cpu),
            percentile(&cpu, 99.0),
            cpu.iter().cloned().fold(0.0, f64::max),
            cpu.iter().cloned().fold(0.0, f64::max) / (h * 3_600_000.0),
            ka as f64 / self.arrivals.max(1) as f64
        );
        let v = &self.violations;
        let _ = writeln!(
            o,
            "invariants: limits {}, stale bindings {}, relay paths not one tunnel {} (of {} relayed checked), timers left due {}",
            v.limits, v.stale, v.chain, self.relayed_checked, v.spin
        );
        for e in &v.examples {
            let _ = writeln!(o, "  violation: {e}");
        }
        let _ = writeln!(o, "wall time {:.1} s", self.wall_s);
        let _ = writeln!(
            o,
            "scale agents={n_agents} nodes={} bindings_p99={p99:.0} relayed_bytes_fraction={:.4} mip_ha_ratio={:.1}",
            self.nodes,
            self.relayed_fraction(),
            self.mip_ha_ratio()
        );
        o
    }
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p / 100.0).round() as usize;
    v[i.min(v.len() - 1)]
}
