//! The workload: when nodes are online, where they go, and the flows they
//! open. Every parameter is a fit, made for this simulator, to a published
//! measurement; docs/SCALE.md cites each source and says what was fitted.

use crate::rng::Rng;

pub const MIN: f64 = 60_000.0;
pub const HOUR: f64 = 3_600_000.0;

#[derive(Clone, Debug)]
pub struct Workload {
    /// Online periods a day per node: 1 + Poisson(this). With the period
    /// length below, a node is online ~14 % of the day on average, the low
    /// end of the 14–88 % Hsu & Helmy (WiNMee 2006) found across campus
    /// traces: hotspots see visitors, not residents.
    pub extra_periods_mean: f64,
    /// Start of an online period: hours of the day, a mixture of peaks
    /// (morning, noon, evening) with this spread (the diurnal cycle of
    /// Kotz & Essien, MobiCom 2002).
    pub period_peaks_h: [f64; 3],
    pub period_spread_h: f64,
    /// Length of an online period: log-normal (ms median, sigma).
    pub period_median_ms: f64,
    pub period_sigma: f64,
    /// Dwell at one hotspot: log-normal, as the pause times of Kim, Kotz
    /// & Kim (INFOCOM 2006) from the Dartmouth trace.
    pub dwell_median_ms: f64,
    pub dwell_sigma: f64,
    /// Off-link time between two hotspots (walking): log-normal.
    pub gap_median_ms: f64,
    pub gap_sigma: f64,
    /// Probability that the next hotspot is the node's home one (Ojala et
    /// al. 2005: 60 % of stations have a home AP holding ~80 % of their
    /// time).
    pub p_home: f64,
    /// Hotspots a node uses besides its home (Hsu & Helmy: users visit
    /// under 5 % of the APs).
    pub favourites: usize,
    /// Zipf exponent of hotspot popularity within a city.
    pub zipf: f64,
    /// Flow arrivals while the node has an address: Poisson, mean gap.
    pub flow_gap_ms: f64,
    /// Flow duration: log-normal body (Brownlee & claffy 2002: ~45 % of
    /// streams last under 2 s) with a Pareto tail of this weight (their
    /// tortoises, over 15 min; Quan & Heidemann 2010: ~20 % of bytes in
    /// flows over 10 min).
    pub flow_median_ms: f64,
    pub flow_sigma: f64,
    pub tail_weight: f64,
    pub tail_xm_ms: f64,
    pub tail_alpha: f64,
    /// Flow rate (bytes/s): log-normal, independent of the duration
    /// (Brownlee & claffy found size and lifetime independent of each
    /// other's class).
    pub rate_median: f64,
    pub rate_sigma: f64,
    /// DHCP after link-up (odhcpd/dnsmasq answer, udhcpc's first
    /// DISCOVER): log-normal.
    pub dhcp_median_ms: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            extra_periods_mean: 0.5,
            period_peaks_h: [9.0, 13.0, 19.0],
            period_spread_h: 2.0,
            period_median_ms: 100.0 * MIN,
            period_sigma: 0.8,
            dwell_median_ms: 25.0 * MIN,
            dwell_sigma: 1.1,
            gap_median_ms: 60_000.0,
            gap_sigma: 0.9,
            p_home: 0.5,
            favourites: 3,
            zipf: 0.8,
            flow_gap_ms: 10_000.0,
            flow_median_ms: 2_400.0,
            flow_sigma: 1.8,
            tail_weight: 0.06,
            tail_xm_ms: 30_000.0,
            tail_alpha: 1.2,
            rate_median: 20_000.0,
            rate_sigma: 1.5,
            dhcp_median_ms: 1_200.0,
        }
    }
}

impl Workload {
    /// A node's online periods over a day of `day_ms`: sorted, disjoint.
    pub fn periods(&self, r: &mut Rng, day_ms: f64) -> Vec<(u64, u64)> {
        let n = 1 + r.poisson(self.extra_periods_mean);
        let mut v: Vec<(u64, u64)> = (0..n)
            .map(|_| {
                let peak = self.period_peaks_h[r.below(3)];
                let h = (peak + self.period_spread_h * r.normal()).rem_euclid(24.0);
                let start = h * HOUR * day_ms / (24.0 * HOUR);
                let len = r.lognormal(self.period_median_ms, self.period_sigma);
                (start as u64, (start + len).min(day_ms) as u64)
            })
            .collect();
        v.sort();
        // Overlapping periods merge (the laptop stayed open).
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (s, e) in v {
            match out.last_mut() {
                Some(l) if s <= l.1 + 60_000 => l.1 = l.1.max(e),
                _ if e > s + 60_000 => out.push((s, e)),
                _ => {}
            }
        }
        out
    }

    pub fn dwell(&self, r: &mut Rng) -> u64 {
        r.lognormal(self.dwell_median_ms, self.dwell_sigma) as u64
    }

    pub fn gap(&self, r: &mut Rng) -> u64 {
        (r.lognormal(self.gap_median_ms, self.gap_sigma) as u64).max(1_000)
    }

    pub fn dhcp(&self, r: &mut Rng) -> u64 {
        (r.lognormal(self.dhcp_median_ms, 0.4) as u64).max(100)
    }

    pub fn flow_duration(&self, r: &mut Rng) -> u64 {
        let d = if r.chance(self.tail_weight) {
            r.pareto(self.tail_xm_ms, self.tail_alpha)
        } else {
            r.lognormal(self.flow_median_ms, self.flow_sigma)
        };
        (d as u64).max(1)
    }

    /// Bytes per millisecond.
    pub fn flow_rate(&self, r: &mut Rng) -> f64 {
        r.lognormal(self.rate_median, self.rate_sigma) / 1000.0
    }

    /// Popularity weights of a city's hotspots.
    pub fn popularity(&self, hotspots: usize) -> Vec<f64> {
        (0..hotspots)
            .map(|i| 1.0 / ((i + 1) as f64).powf(self.zipf))
            .collect()
    }
}
