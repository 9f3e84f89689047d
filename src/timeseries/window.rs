//! Tumbling and sliding time windows per key, and sample-and-hold
//! integration (energy from power).
//!
//! Windows are aligned to `origin + j * slide` (epoch-aligned by default, so
//! 1-minute windows start on the minute) and half-open `[start, start +
//! width)`. Each key keeps only its open windows while the rows stream by in
//! time order; a window gets an output slot when its first row arrives, so
//! there are no empty windows and no per-window hash lookups. NaN values
//! count as missing, like nulls.

use std::borrow::Cow;
use std::collections::VecDeque;

use deltalake::arrow::array::{Array, Float64Array};
use rayon::prelude::*;

use super::keys::NULL_KEY;
use super::order::RowOrder;
use super::rolling::{f64_array, Valid};
use super::{same_len, TsError};

/// Window geometry, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub width_ms: i64,
    pub slide_ms: i64,
    pub origin_ms: i64,
}

impl WindowSpec {
    /// Back-to-back windows of `width_ms`, epoch-aligned.
    pub fn tumbling(width_ms: i64) -> WindowSpec {
        WindowSpec {
            width_ms,
            slide_ms: width_ms,
            origin_ms: 0,
        }
    }

    /// Windows of `width_ms` starting every `slide_ms`, epoch-aligned.
    pub fn sliding(width_ms: i64, slide_ms: i64) -> WindowSpec {
        WindowSpec {
            width_ms,
            slide_ms,
            origin_ms: 0,
        }
    }

    fn check(&self) -> Result<(), TsError> {
        if self.width_ms <= 0 || self.slide_ms <= 0 || self.slide_ms > self.width_ms {
            return Err(TsError::Param(format!(
                "window width {} ms, slide {} ms: expected 0 < slide <= width",
                self.width_ms, self.slide_ms
            )));
        }
        Ok(())
    }

    /// Start of the last window containing `t`.
    #[inline]
    fn last_start(&self, t: i64) -> i64 {
        self.origin_ms + (t - self.origin_ms).div_euclid(self.slide_ms) * self.slide_ms
    }
}

/// Aggregates of one input column, one entry per window.
#[derive(Debug, Default, Clone)]
pub struct ColumnAggs {
    pub count: Vec<u64>,
    pub sum: Vec<f64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
}

impl ColumnAggs {
    fn append(&mut self, mut other: ColumnAggs) {
        self.count.append(&mut other.count);
        self.sum.append(&mut other.sum);
        self.min.append(&mut other.min);
        self.max.append(&mut other.max);
    }

    fn open(&mut self) {
        self.count.push(0);
        self.sum.push(0.0);
        self.min.push(f64::INFINITY);
        self.max.push(f64::NEG_INFINITY);
    }

    #[inline]
    fn add(&mut self, slot: usize, v: f64) {
        self.count[slot] += 1;
        self.sum[slot] += v;
        if v < self.min[slot] {
            self.min[slot] = v;
        }
        if v > self.max[slot] {
            self.max[slot] = v;
        }
    }

    /// Mean per window (null without values).
    pub fn mean(&self) -> Float64Array {
        let ok: Vec<bool> = self.count.iter().map(|&c| c > 0).collect();
        let v = self
            .sum
            .iter()
            .zip(&self.count)
            .map(|(&s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
            .collect();
        f64_array(v, ok)
    }

    /// Min per window (null without values).
    pub fn min_array(&self) -> Float64Array {
        self.bounded(&self.min)
    }

    /// Max per window (null without values).
    pub fn max_array(&self) -> Float64Array {
        self.bounded(&self.max)
    }

    fn bounded(&self, v: &[f64]) -> Float64Array {
        let ok: Vec<bool> = self.count.iter().map(|&c| c > 0).collect();
        let v = v
            .iter()
            .zip(&self.count)
            .map(|(&x, &c)| if c > 0 { x } else { 0.0 })
            .collect();
        f64_array(v, ok)
    }
}

/// One row per (key, window) that has rows.
#[derive(Debug, Default, Clone)]
pub struct WindowAggs {
    pub key: Vec<u32>,
    pub start: Vec<i64>,
    pub columns: Vec<ColumnAggs>,
}

impl WindowAggs {
    /// Move `other`'s windows after these.
    fn append(&mut self, mut other: WindowAggs) {
        self.key.append(&mut other.key);
        self.start.append(&mut other.start);
        for (a, b) in self.columns.iter_mut().zip(other.columns) {
            a.append(b);
        }
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.key.len()
    }

    /// Whether there are no windows.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }
}

/// Count, sum, min and max of every column per key and window. Windows come
/// in the order their first row is visited (for partitioned rows,
/// [`RowOrder::parallel`], computed on all worker threads: partition by
/// partition).
pub fn windows(
    keys: &[u32],
    ts: &[i64],
    columns: &[&Float64Array],
    n_keys: usize,
    order: &RowOrder,
    spec: WindowSpec,
) -> Result<WindowAggs, TsError> {
    spec.check()?;
    let mut lens = vec![keys.len(), ts.len()];
    lens.extend(columns.iter().map(|c| c.len()));
    same_len("window key/ts/columns", &lens)?;
    let empty = || WindowAggs {
        columns: vec![ColumnAggs::default(); columns.len()],
        ..Default::default()
    };
    let Some(p) = order.partitions() else {
        let values: Vec<(&[f64], Valid)> = columns
            .iter()
            .map(|c| (c.values().as_ref(), Valid::from(c.nulls())))
            .collect();
        let acc = Accumulate { ts, values, spec };
        let mut out = empty();
        // Open windows per key: (start, output slot), oldest first.
        let mut open: Vec<VecDeque<(i64, usize)>> = vec![VecDeque::new(); n_keys];
        order.for_each(|i| {
            let k = keys[i];
            if k != NULL_KEY {
                acc.row(&mut out, &mut open[k as usize], k, i);
            }
        });
        return Ok(out);
    };
    let vals: Vec<Vec<Vec<f64>>> = columns.iter().map(|c| p.split(keys, c.values())).collect();
    let valid: Vec<Option<Vec<Vec<bool>>>> = columns
        .iter()
        .map(|c| {
            c.nulls()
                .map(|nb| p.split(keys, &nb.iter().collect::<Vec<bool>>()))
        })
        .collect();
    let parts: Vec<WindowAggs> = p
        .parts
        .par_iter()
        .enumerate()
        .map(|(pi, part)| {
            // Each column in visiting order (a copy only when the rows
            // arrived shuffled), then one sequential walk.
            let key = part.gather(&part.key);
            let ts = part.gather(&part.ts);
            let cols: Vec<GatheredColumn> = vals
                .iter()
                .zip(&valid)
                .map(|(v, ok)| {
                    (
                        part.gather(&v[pi]),
                        ok.as_ref().map(|ok| part.gather(&ok[pi])),
                    )
                })
                .collect();
            let values = cols
                .iter()
                .map(|(v, ok)| (v.as_ref(), ok.as_deref().map_or(Valid::All, Valid::Bools)))
                .collect();
            let acc = Accumulate {
                ts: &ts,
                values,
                spec,
            };
            let mut out = empty();
            let mut open: Vec<VecDeque<(i64, usize)>> = vec![VecDeque::new(); part.keys.len()];
            for (j, &k) in key.iter().enumerate() {
                acc.row(&mut out, &mut open[part.local(k)], k, j);
            }
            out
        })
        .collect();
    let mut out = empty();
    out.key.reserve(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.append(p);
    }
    Ok(out)
}

/// A value column and its validity, in a partition's visiting order.
type GatheredColumn<'a> = (Cow<'a, [f64]>, Option<Cow<'a, [bool]>>);

/// The inputs of one window aggregation and its per-row step.
struct Accumulate<'a> {
    ts: &'a [i64],
    values: Vec<(&'a [f64], Valid<'a>)>,
    spec: WindowSpec,
}

impl Accumulate<'_> {
    /// Add row `i` of key `k` to its windows; `q` holds the key's open windows.
    #[inline]
    fn row(&self, out: &mut WindowAggs, q: &mut VecDeque<(i64, usize)>, k: u32, i: usize) {
        let spec = &self.spec;
        let t = self.ts[i];
        let last = spec.last_start(t);
        let first = if spec.slide_ms == spec.width_ms {
            last
        } else {
            // The oldest aligned start whose window still contains t.
            let mut s = last - ((spec.width_ms - 1) / spec.slide_ms) * spec.slide_ms;
            while s + spec.width_ms <= t {
                s += spec.slide_ms;
            }
            s
        };
        while q.front().is_some_and(|&(s, _)| s < first) {
            q.pop_front();
        }
        let mut s = first;
        while s <= last {
            let slot = match q.iter().find(|w| w.0 == s) {
                Some(&(_, slot)) => slot,
                None => {
                    let slot = out.key.len();
                    out.key.push(k);
                    out.start.push(s);
                    out.columns.iter_mut().for_each(ColumnAggs::open);
                    q.push_back((s, slot));
                    slot
                }
            };
            for (c, (v, nulls)) in self.values.iter().enumerate() {
                if nulls.get(i) && !v[i].is_nan() {
                    out.columns[c].add(slot, v[i]);
                }
            }
            s += spec.slide_ms;
        }
    }
}

/// Sample-and-hold (left Riemann) integral of each step, per key: row i gets
/// `value_i * dt / divisor`, with `dt` the time to the key's next row, when
/// `dt <= max_gap_ms`; a longer step is a data gap and integrates nothing,
/// and so does a key's last row or a null/NaN value (0.0). For power in kW
/// and ms, `divisor = 3_600_000` gives kWh.
pub fn integrate_hold(
    keys: &[u32],
    ts: &[i64],
    values: &Float64Array,
    n_keys: usize,
    order: &RowOrder,
    max_gap_ms: i64,
    divisor: f64,
) -> Result<Float64Array, TsError> {
    let n = same_len(
        "integrate key/ts/values",
        &[keys.len(), ts.len(), values.len()],
    )?;
    let mut out = vec![0.0f64; n];
    let v = values.values();
    // The energy of a step of `dt` from a value `x` (valid: not null).
    let hold = |x: f64, valid: bool, dt: i64| -> Option<f64> {
        (dt <= max_gap_ms && valid && !x.is_nan()).then(|| x * dt as f64 / divisor)
    };
    match order.partitions() {
        None => {
            let mut prev = vec![usize::MAX; n_keys];
            order.for_each(|i| {
                let k = keys[i];
                if k == NULL_KEY {
                    return;
                }
                let p = prev[k as usize];
                if p != usize::MAX {
                    if let Some(e) = hold(v[p], values.is_valid(p), ts[i] - ts[p]) {
                        out[p] = e;
                    }
                }
                prev[k as usize] = i;
            });
        }
        Some(p) => {
            let vals = p.split(keys, v);
            let valid = values
                .nulls()
                .map(|nb| p.split(keys, &nb.iter().collect::<Vec<bool>>()));
            let parts: Vec<Vec<f64>> = p
                .parts
                .par_iter()
                .enumerate()
                .map(|(pi, part)| {
                    // In visiting order (see `windows`), back at the end.
                    let key = part.gather(&part.key);
                    let t = part.gather(&part.ts);
                    let v = part.gather(&vals[pi]);
                    let ok = valid.as_ref().map(|x| part.gather(&x[pi]));
                    let mut e = vec![0.0f64; part.len()];
                    let mut prev = vec![usize::MAX; part.keys.len()];
                    for (j, &k) in key.iter().enumerate() {
                        let pr = &mut prev[part.local(k)];
                        let p = *pr;
                        if p != usize::MAX {
                            let valid = ok.as_ref().is_none_or(|o| o[p]);
                            if let Some(x) = hold(v[p], valid, t[j] - t[p]) {
                                e[p] = x;
                            }
                        }
                        *pr = j;
                    }
                    part.ungather(e)
                })
                .collect();
            out = p.merge(keys, &parts, 0.0);
        }
    }
    Ok(Float64Array::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tumbling_minutes_per_key() {
        let keys = vec![0, 1, 0, 0, 1];
        let ts = vec![59_000, 1_000, 60_000, 119_999, 61_000];
        let v = Float64Array::from(vec![Some(1.0), Some(5.0), Some(2.0), None, Some(7.0)]);
        let w = windows(
            &keys,
            &ts,
            &[&v],
            2,
            &RowOrder::Natural(5),
            WindowSpec::tumbling(60_000),
        )
        .unwrap();
        assert_eq!(w.key, vec![0, 1, 0, 1]);
        assert_eq!(w.start, vec![0, 0, 60_000, 60_000]);
        assert_eq!(w.columns[0].count, vec![1, 1, 1, 1]);
        assert_eq!(w.columns[0].sum, vec![1.0, 5.0, 2.0, 7.0]);
        assert!(windows(
            &keys,
            &ts,
            &[&v],
            2,
            &RowOrder::Natural(5),
            WindowSpec::sliding(10, 20)
        )
        .is_err());
    }

    #[test]
    fn hold_integration_skips_gaps_and_last_rows() {
        let keys = vec![0, 0, 1, 0, 0];
        let ts = vec![0, 1_000, 0, 7_000, 8_000];
        let p = Float64Array::from(vec![3.6, 7.2, 1.0, 3.6, 1.0]);
        let e =
            integrate_hold(&keys, &ts, &p, 2, &RowOrder::Natural(5), 5_000, 3_600_000.0).unwrap();
        assert_eq!(e.values().to_vec(), vec![0.001, 0.0, 0.0, 0.001, 0.0]);
        let grouped = RowOrder::partitioned(&keys, 2, &ts);
        let g = integrate_hold(&keys, &ts, &p, 2, &grouped, 5_000, 3_600_000.0).unwrap();
        assert_eq!(g, e);
    }

    proptest! {
        #[test]
        fn sliding_windows_agree_with_reference(
            rows in prop::collection::vec((0u32..3, 0i64..40, -5i32..5), 0..80),
            width in 1i64..30,
            slide_div in 1i64..4,
        ) {
            let slide = (width / slide_div).max(1);
            let mut rows = rows;
            rows.sort_by_key(|r| r.1);
            let keys: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let ts: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let v = Float64Array::from(rows.iter().map(|r| r.2 as f64).collect::<Vec<_>>());
            let spec = WindowSpec::sliding(width, slide);
            let w = windows(&keys, &ts, &[&v], 3, &RowOrder::Natural(keys.len()), spec).unwrap();
            // Partitioned on the worker threads: the same windows.
            let g = windows(&keys, &ts, &[&v], 3, &RowOrder::partitioned(&keys, 3, &ts), spec).unwrap();
            let mut a: Vec<_> = (0..w.len()).map(|j| (w.key[j], w.start[j], w.columns[0].count[j], w.columns[0].sum[j].to_bits())).collect();
            a.sort();
            let mut b: Vec<_> = (0..g.len()).map(|j| (g.key[j], g.start[j], g.columns[0].count[j], g.columns[0].sum[j].to_bits())).collect();
            b.sort();
            prop_assert_eq!(a, b);
            // Reference: every aligned window of every key, brute force.
            let mut expect = std::collections::BTreeMap::new();
            for (i, &k) in keys.iter().enumerate() {
                let mut s = (ts[i] - width).div_euclid(slide) * slide;
                while s <= ts[i] {
                    if s <= ts[i] && ts[i] < s + width {
                        let e = expect.entry((k, s)).or_insert((0u64, 0.0f64, f64::INFINITY));
                        e.0 += 1;
                        e.1 += v.value(i);
                        e.2 = e.2.min(v.value(i));
                    }
                    s += slide;
                }
            }
            let mut got = std::collections::BTreeMap::new();
            for j in 0..w.len() {
                let c = &w.columns[0];
                prop_assert!(got.insert((w.key[j], w.start[j]), (c.count[j], c.sum[j], c.min[j])).is_none());
            }
            prop_assert_eq!(got, expect);
        }

        /// Rows that go back in time (a shuffled delivery): partitions walk
        /// copies of their columns in time order; the windows and the
        /// energy equal those of rows grouped by key.
        #[test]
        fn shuffled_partitions_agree_with_grouped_rows(
            rows in prop::collection::vec((0u32..5, 0i64..200_000, prop::option::of(-5i32..50)), 0..300),
        ) {
            let keys: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let ts: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let v = Float64Array::from(rows.iter().map(|r| r.2.map(f64::from)).collect::<Vec<_>>());
            let grouped = RowOrder::grouped(&keys, 5, &ts);
            let parts = RowOrder::partitioned(&keys, 5, &ts);
            let spec = WindowSpec::tumbling(60_000);
            let a = windows(&keys, &ts, &[&v], 5, &grouped, spec).unwrap();
            let b = windows(&keys, &ts, &[&v], 5, &parts, spec).unwrap();
            let set = |w: &WindowAggs| {
                let c = &w.columns[0];
                let mut x: Vec<_> = (0..w.len())
                    .map(|j| (w.key[j], w.start[j], c.count[j], c.sum[j].to_bits(), c.min[j].to_bits(), c.max[j].to_bits()))
                    .collect();
                x.sort();
                x
            };
            prop_assert_eq!(set(&a), set(&b));
            let ea = integrate_hold(&keys, &ts, &v, 5, &grouped, 30_000, 3_600_000.0).unwrap();
            let eb = integrate_hold(&keys, &ts, &v, 5, &parts, 30_000, 3_600_000.0).unwrap();
            prop_assert_eq!(ea, eb);
        }
    }
}
