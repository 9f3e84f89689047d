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
    /// Milliseconds as `f32` (exact to a microsecond below 8 s): half the
    /// memory of `f64` for what a bench keeps.
    samples: Mutex<Vec<f32>>,
}

/// Keep at most this many samples (first come): 64 MiB a probe, 160 s of
/// 100,000 messages a second (a 4,000,000 cap ran out after 40 s of
/// `bench ingest` at a million readings a second).
const MAX_SAMPLES: usize = 16_000_000;

impl LatencyProbe {
    /// Record one latency.
    pub fn record(&self, ms: f64) {
        let mut s = self.samples.lock();
        if s.len() < MAX_SAMPLES {
            s.push(ms as f32);
        }
    }

    /// Record many latencies at once.
    pub fn record_all(&self, it: impl IntoIterator<Item = f64>) {
        let mut s = self.samples.lock();
        for ms in it {
            if s.len() >= MAX_SAMPLES {
                break;
            }
            s.push(ms as f32);
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
        s.sort_by(f32::total_cmp);
        Some(
            ps.iter()
                .map(|p| {
                    let rank = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
                    s[rank.min(s.len() - 1)] as f64
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

    /// A bench at a million readings a second records 100,000 latencies a
    /// second: the timeline after 40 s still has samples.
    #[test]
    fn samples_past_four_million_are_kept() {
        let p = LatencyProbe::default();
        p.record_all((0..5_000_000).map(|i| (i % 1000) as f64 / 10.0));
        p.record(7_999.5);
        assert_eq!(p.len(), 5_000_001);
        let tail = p.percentiles_from(4_999_000, &[0.0, 100.0]).unwrap();
        assert_eq!(tail, vec![0.0, 7_999.5]);
    }

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
