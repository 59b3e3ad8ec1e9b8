//! A small deterministic generator (splitmix64) and the distributions the
//! workload draws from. Deterministic so that a run is reproducible from
//! its seed, and dependency-free.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() <= p
    }

    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }

    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Log-normal with the given median (e^mu) and sigma of the log.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Pareto with scale `xm` and shape `alpha`.
    pub fn pareto(&mut self, xm: f64, alpha: f64) -> f64 {
        xm / self.unit().powf(1.0 / alpha)
    }

    pub fn poisson(&mut self, mean: f64) -> usize {
        // Knuth's method; the means here are small.
        let l = (-mean).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= self.unit();
            if p <= l || k > 1000 {
                return k;
            }
            k += 1;
        }
    }

    /// An index drawn with the given weights.
    pub fn weighted(&mut self, w: &[f64]) -> usize {
        let total: f64 = w.iter().sum();
        let mut x = self.unit() * total;
        for (i, wi) in w.iter().enumerate() {
            if x <= *wi {
                return i;
            }
            x -= wi;
        }
        w.len().saturating_sub(1)
    }

    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.u64().to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_have_their_parameters() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let mean = (0..n).map(|_| r.exp(3.0)).sum::<f64>() / n as f64;
        assert!((mean - 3.0).abs() < 0.05, "exp mean {mean}");
        let mut v: Vec<f64> = (0..n).map(|_| r.lognormal(10.0, 1.0)).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let median = v[n / 2];
        assert!((median - 10.0).abs() < 0.3, "lognormal median {median}");
        let over = (0..n).filter(|_| r.pareto(1.0, 1.5) > 4.0).count() as f64 / n as f64;
        assert!((over - 0.125).abs() < 0.01, "pareto tail {over}");
        let pm = (0..n).map(|_| r.poisson(2.5)).sum::<usize>() as f64 / n as f64;
        assert!((pm - 2.5).abs() < 0.03, "poisson mean {pm}");
    }
}
