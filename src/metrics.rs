//! Measurements: the Prometheus registry types every layer uses for its
//! counters and histograms (exposed by `GET /metrics`), and latency samples
//! for benchmarks.

use parking_lot::Mutex;

pub use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets (seconds) for latencies from a millisecond to a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A histogram not (yet) in any registry, with [`LATENCY_BUCKETS`].
pub fn latency_histogram(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        .expect("valid histogram options")
}

/// A bounded reservoir of latency samples (milliseconds).
#[derive(Debug, Default)]
pub struct LatencyProbe {
    samples: Mutex<Vec<f64>>,
}

/// Keep at most this many samples (first come).
const MAX_SAMPLES: usize = 4_000_000;

impl LatencyProbe {
    /// Record one latency.
    pub fn record(&self, ms: f64) {
        let mut s = self.samples.lock();
        if s.len() < MAX_SAMPLES {
            s.push(ms);
        }
    }

    /// Record many latencies at once.
    pub fn record_all(&self, it: impl IntoIterator<Item = f64>) {
        let mut s = self.samples.lock();
        for ms in it {
            if s.len() >= MAX_SAMPLES {
                break;
            }
            s.push(ms);
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.lock().len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The given percentiles (0..=100) of the samples, or `None` without samples.
    pub fn percentiles(&self, ps: &[f64]) -> Option<Vec<f64>> {
        self.percentiles_from(0, ps)
    }

    /// The given percentiles of the samples recorded after the first `from`.
    pub fn percentiles_from(&self, from: usize, ps: &[f64]) -> Option<Vec<f64>> {
        let mut s = self.samples.lock().get(from..).unwrap_or_default().to_vec();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        Some(
            ps.iter()
                .map(|p| {
                    let rank = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
                    s[rank.min(s.len() - 1)]
                })
                .collect(),
        )
    }

    /// Drop all samples.
    pub fn clear(&self) {
        self.samples.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let p = LatencyProbe::default();
        assert!(p.percentiles(&[50.0]).is_none());
        p.record_all((1..=100).map(f64::from));
        assert_eq!(
            p.percentiles(&[0.0, 50.0, 99.0, 100.0]).unwrap(),
            vec![1.0, 51.0, 99.0, 100.0]
        );
    }
}
