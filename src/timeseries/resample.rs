//! Resampling irregular samples onto a regular grid per key (linear
//! interpolation or forward fill), and gap detection.
//!
//! Grid points are multiples of the interval (epoch-aligned) between a key's
//! first and last sample. A point on a sample takes its value; a point
//! between two samples is interpolated between them, unless the two are
//! further apart than `max_gap_ms`: a gap is not papered over, the point is
//! null. Null and NaN inputs are not samples.

use deltalake::arrow::array::{Array, Float64Array};

use super::keys::NULL_KEY;
use super::order::RowOrder;
use super::rolling::f64_array;
use super::{same_len, TsError};

/// How grid points between samples get their value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Straight line between the samples around the point.
    Linear,
    /// The previous sample's value.
    Forward,
}

impl std::str::FromStr for Fill {
    type Err = TsError;
    fn from_str(s: &str) -> Result<Self, TsError> {
        match s.to_ascii_lowercase().as_str() {
            "linear" => Ok(Fill::Linear),
            "ffill" | "forward" => Ok(Fill::Forward),
            other => Err(TsError::Param(format!(
                "fill `{other}`: expected linear or ffill"
            ))),
        }
    }
}

/// A resampled series: one row per key and grid point.
#[derive(Debug)]
pub struct Resampled {
    pub key: Vec<u32>,
    pub ts: Vec<i64>,
    pub value: Float64Array,
}

/// Resample every key onto the grid of `interval_ms`.
#[allow(clippy::too_many_arguments)]
pub fn resample(
    keys: &[u32],
    ts: &[i64],
    values: &Float64Array,
    n_keys: usize,
    order: &RowOrder,
    interval_ms: i64,
    fill: Fill,
    max_gap_ms: Option<i64>,
) -> Result<Resampled, TsError> {
    same_len(
        "resample key/ts/values",
        &[keys.len(), ts.len(), values.len()],
    )?;
    if interval_ms <= 0 {
        return Err(TsError::Param(format!(
            "resample interval {interval_ms} ms"
        )));
    }
    let mut prev: Vec<Option<(i64, f64)>> = vec![None; n_keys];
    let (mut ok_key, mut ok_ts, mut out_v, mut out_ok) = (vec![], vec![], vec![], vec![]);
    let v = values.values();
    order.for_each(|i| {
        let k = keys[i];
        if k == NULL_KEY || values.is_null(i) || v[i].is_nan() {
            return;
        }
        let (t, x) = (ts[i], v[i]);
        let p = prev[k as usize];
        // Grid points in (previous sample, t]; only t itself for the first.
        let first_g = match p {
            Some((tp, _)) => (tp.div_euclid(interval_ms) + 1) * interval_ms,
            None => {
                if t.rem_euclid(interval_ms) == 0 {
                    t
                } else {
                    t + 1
                }
            }
        };
        let mut g = first_g;
        while g <= t {
            let val = if g == t {
                Some(x)
            } else {
                // Only reachable with a previous sample.
                p.and_then(|(tp, xp)| {
                    if max_gap_ms.is_some_and(|m| t - tp > m) {
                        return None;
                    }
                    Some(match fill {
                        Fill::Forward => xp,
                        Fill::Linear => xp + (x - xp) * ((g - tp) as f64 / (t - tp) as f64),
                    })
                })
            };
            ok_key.push(k);
            ok_ts.push(g);
            out_v.push(val.unwrap_or(0.0));
            out_ok.push(val.is_some());
            g += interval_ms;
        }
        prev[k as usize] = Some((t, x));
    });
    Ok(Resampled {
        key: ok_key,
        ts: ok_ts,
        value: f64_array(out_v, out_ok),
    })
}

/// Steps longer than a threshold: one row per gap.
#[derive(Debug, Default, PartialEq)]
pub struct Gaps {
    pub key: Vec<u32>,
    /// Timestamp of the last row before the gap.
    pub start: Vec<i64>,
    /// Timestamp of the first row after it.
    pub end: Vec<i64>,
}

/// Every step between consecutive rows of a key longer than `threshold_ms`.
pub fn gaps(
    keys: &[u32],
    ts: &[i64],
    n_keys: usize,
    order: &RowOrder,
    threshold_ms: i64,
) -> Result<Gaps, TsError> {
    same_len("gaps key/ts", &[keys.len(), ts.len()])?;
    let mut last: Vec<Option<i64>> = vec![None; n_keys];
    let mut out = Gaps::default();
    order.for_each(|i| {
        let k = keys[i];
        if k == NULL_KEY {
            return;
        }
        if let Some(p) = last[k as usize] {
            if ts[i] - p > threshold_ms {
                out.key.push(k);
                out.start.push(p);
                out.end.push(ts[i]);
            }
        }
        last[k as usize] = Some(ts[i]);
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn linear_and_ffill_with_a_gap() {
        let keys = vec![0, 0, 0, 0];
        let ts = vec![500, 2_000, 3_000, 10_000];
        let v = Float64Array::from(vec![1.0, 4.0, 6.0, 0.0]);
        let o = RowOrder::Natural(4);
        let r = resample(&keys, &ts, &v, 1, &o, 1_000, Fill::Linear, Some(5_000)).unwrap();
        assert_eq!(
            r.ts,
            vec![1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000, 10_000]
        );
        assert_eq!(r.value.value(0), 2.0);
        assert_eq!(r.value.value(1), 4.0);
        assert_eq!(r.value.value(2), 6.0);
        assert!(r.value.is_null(3) && r.value.is_null(8));
        assert_eq!(r.value.value(9), 0.0);
        let f = resample(&keys, &ts, &v, 1, &o, 1_000, Fill::Forward, None).unwrap();
        assert_eq!(f.value.value(0), 1.0);
        assert_eq!(f.value.value(5), 6.0);
        let g = gaps(&keys, &ts, 1, &o, 5_000).unwrap();
        assert_eq!(
            g,
            Gaps {
                key: vec![0],
                start: vec![3_000],
                end: vec![10_000]
            }
        );
    }

    proptest! {
        #[test]
        fn linear_resample_agrees_with_reference(
            steps in prop::collection::vec((1i64..2_500, -100i32..100), 1..40),
            interval in 100i64..1_500,
        ) {
            let mut t = 0;
            let (mut ts, mut vs) = (vec![], vec![]);
            for (dt, x) in steps { t += dt; ts.push(t); vs.push(x as f64); }
            let keys = vec![0u32; ts.len()];
            let arr = Float64Array::from(vs.clone());
            let r = resample(&keys, &ts, &arr, 1, &RowOrder::Natural(ts.len()), interval, Fill::Linear, None).unwrap();
            // Reference: every grid point in [first, last], by search.
            let mut g = (ts[0] + interval - 1).div_euclid(interval) * interval;
            let mut j = 0;
            while g <= *ts.last().unwrap() {
                let hi = ts.iter().position(|&x| x >= g).unwrap();
                let expect = if ts[hi] == g { vs[hi] } else {
                    let lo = hi - 1;
                    vs[lo] + (vs[hi] - vs[lo]) * ((g - ts[lo]) as f64 / (ts[hi] - ts[lo]) as f64)
                };
                prop_assert_eq!(r.ts[j], g);
                prop_assert!((r.value.value(j) - expect).abs() < 1e-9);
                j += 1;
                g += interval;
            }
            prop_assert_eq!(j, r.ts.len());
        }
    }
}
