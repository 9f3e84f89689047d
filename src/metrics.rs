//! Small in-process measurements: latency samples for benchmarks and health.

use parking_lot::Mutex;

/// A bounded reservoir of latency samples (milliseconds).
#[derive(Debug, Default)]
pub struct LatencyProbe {
    samples: Mutex<Vec<f64>>,
}

/// Keep at most this many samples (first come).
const MAX_SAMPLES: usize = 1_000_000;

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
        let mut s = self.samples.lock().clone();
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
