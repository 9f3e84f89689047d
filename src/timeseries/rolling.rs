//! Rolling statistics per key over a window of the last N rows or the last
//! D milliseconds: count, sum, mean, sample standard deviation (ddof 1),
//! min, max; and exponential moving averages.
//!
//! Exactness. Sums are kept as add/remove running sums of `v - shift`, where
//! `shift` is a value of the window, re-anchored and recomputed from the
//! window's values every `max(64, window)` updates, so rounding cannot build
//! up. On top of that, a window whose values are all equal (a machine that
//! is DOWN reports a constant) is detected by the length of the trailing run
//! of equal values and answered exactly: mean = the value, std = 0.0, as a
//! two-pass formula would. Min and max use monotonic deques (O(1) amortised).
//!
//! Null values occupy their row in a row window but do not count towards
//! `min_periods` or any statistic. A NaN or infinite value in the window
//! makes every statistic of that window NaN (as arithmetic would), without
//! poisoning later windows.

use std::collections::VecDeque;

use deltalake::arrow::array::{Array, Float64Array, UInt32Array};
use deltalake::arrow::buffer::NullBuffer;

use super::keys::NULL_KEY;
use rayon::prelude::*;

use super::order::{Partitions, RowOrder};
use super::{same_len, TsError};

/// The extent of a rolling window, ending at (and including) the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFrame {
    /// The current row and the `n - 1` rows before it, of the same key.
    Rows(usize),
    /// Rows of the same key with `ts > current ts - d` (d in ms).
    Time(i64),
}

/// What a rolling computation is over.
#[derive(Debug, Clone, Copy)]
pub struct RollingSpec {
    pub frame: WindowFrame,
    /// Fewest non-null values for a non-null result.
    pub min_periods: usize,
}

/// Which statistics to compute (others are skipped, not computed and dropped).
#[derive(Debug, Clone, Copy, Default)]
pub struct RollingStats {
    pub count: bool,
    pub sum: bool,
    pub mean: bool,
    pub std: bool,
    pub min: bool,
    pub max: bool,
}

/// Rolling results, one value per input row (`None` when not requested).
#[derive(Debug, Default)]
pub struct RollingOut {
    pub count: Option<UInt32Array>,
    pub sum: Option<Float64Array>,
    pub mean: Option<Float64Array>,
    pub std: Option<Float64Array>,
    pub min: Option<Float64Array>,
    pub max: Option<Float64Array>,
}

/// A column being built: values plus validity.
struct Col {
    on: bool,
    v: Vec<f64>,
    ok: Vec<bool>,
}

impl Col {
    fn new(on: bool, n: usize) -> Col {
        let (v, ok) = if on {
            (vec![0.0; n], vec![false; n])
        } else {
            (Vec::new(), Vec::new())
        };
        Col { on, v, ok }
    }
    #[inline]
    fn set(&mut self, i: usize, x: Option<f64>) {
        if self.on {
            if let Some(x) = x {
                self.v[i] = x;
                self.ok[i] = true;
            }
        }
    }
    fn finish(self) -> Option<Float64Array> {
        self.on.then(|| f64_array(self.v, self.ok))
    }
}

/// A Float64Array from values and a validity vector.
pub fn f64_array(v: Vec<f64>, ok: Vec<bool>) -> Float64Array {
    let nulls = NullBuffer::from(ok);
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    Float64Array::new(v.into(), nulls)
}

/// The window of one key.
#[derive(Default)]
struct KeyWindow {
    /// (order: row sequence or ts, value, valid)
    q: VecDeque<(i64, f64, bool)>,
    seq: i64,
    nn: usize,
    bad: usize,
    shift: f64,
    s1: f64,
    s2: f64,
    updates: usize,
    run_v: f64,
    run_n: usize,
    minq: VecDeque<(i64, f64)>,
    maxq: VecDeque<(i64, f64)>,
}

impl KeyWindow {
    fn push(&mut self, ord: i64, v: f64, valid: bool, minmax: (bool, bool)) {
        self.q.push_back((ord, v, valid));
        if !valid {
            return;
        }
        if !v.is_finite() {
            self.bad += 1;
            self.run_n = 0;
            return;
        }
        if self.nn == 0 {
            self.shift = v;
            self.s1 = 0.0;
            self.s2 = 0.0;
        }
        let d = v - self.shift;
        self.s1 += d;
        self.s2 += d * d;
        self.nn += 1;
        self.updates += 1;
        if self.run_n > 0 && v == self.run_v {
            self.run_n += 1;
        } else {
            self.run_v = v;
            self.run_n = 1;
        }
        if minmax.0 {
            while self.minq.back().is_some_and(|b| b.1 >= v) {
                self.minq.pop_back();
            }
            self.minq.push_back((ord, v));
        }
        if minmax.1 {
            while self.maxq.back().is_some_and(|b| b.1 <= v) {
                self.maxq.pop_back();
            }
            self.maxq.push_back((ord, v));
        }
    }

    fn evict_while(&mut self, out: impl Fn(i64) -> bool) {
        while let Some(&(ord, v, valid)) = self.q.front() {
            if !out(ord) {
                break;
            }
            self.q.pop_front();
            if !valid {
                continue;
            }
            if !v.is_finite() {
                self.bad -= 1;
                continue;
            }
            let d = v - self.shift;
            self.s1 -= d;
            self.s2 -= d * d;
            self.nn -= 1;
            self.updates += 1;
            if self.nn == 0 {
                self.s1 = 0.0;
                self.s2 = 0.0;
            }
        }
        while self.minq.front().is_some_and(|f| out(f.0)) {
            self.minq.pop_front();
        }
        while self.maxq.front().is_some_and(|f| out(f.0)) {
            self.maxq.pop_front();
        }
        if self.updates >= self.q.len().max(64) {
            self.rebuild();
        }
    }

    /// Re-anchor the shifted sums on the newest value and recompute them.
    fn rebuild(&mut self) {
        self.updates = 0;
        let Some(&(_, anchor, _)) = self.q.iter().rev().find(|e| e.2 && e.1.is_finite()) else {
            return;
        };
        self.shift = anchor;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &(_, v, valid) in &self.q {
            if valid && v.is_finite() {
                let d = v - anchor;
                s1 += d;
                s2 += d * d;
            }
        }
        self.s1 = s1;
        self.s2 = s2;
    }

    fn constant(&self) -> bool {
        self.run_n >= self.nn
    }
    fn mean(&self) -> f64 {
        if self.bad > 0 {
            f64::NAN
        } else if self.constant() {
            self.run_v
        } else {
            self.shift + self.s1 / self.nn as f64
        }
    }
    fn sum(&self) -> f64 {
        if self.bad > 0 {
            f64::NAN
        } else if self.constant() {
            self.run_v * self.nn as f64
        } else {
            self.shift * self.nn as f64 + self.s1
        }
    }
    fn std(&self) -> Option<f64> {
        if self.nn < 2 {
            return None;
        }
        if self.bad > 0 {
            return Some(f64::NAN);
        }
        if self.constant() {
            return Some(0.0);
        }
        let n = self.nn as f64;
        let var = (self.s2 - self.s1 * self.s1 / n) / (n - 1.0);
        Some(var.max(0.0).sqrt())
    }
}

/// Rolling statistics of `values` per key. `ts` is needed for time frames
/// and for ordering; `order` must visit each key's rows in time order
/// (see [`RowOrder::for_rows`]). Partitioned rows ([`RowOrder::parallel`])
/// are computed on all worker threads, one key range at a time.
pub fn rolling(
    keys: &[u32],
    ts: &[i64],
    values: &Float64Array,
    n_keys: usize,
    order: &RowOrder,
    spec: RollingSpec,
    stats: RollingStats,
) -> Result<RollingOut, TsError> {
    let n = same_len(
        "rolling key/ts/values",
        &[keys.len(), ts.len(), values.len()],
    )?;
    match spec.frame {
        WindowFrame::Rows(0) => return Err(TsError::Param("row window of 0 rows".into())),
        WindowFrame::Time(d) if d <= 0 => {
            return Err(TsError::Param(format!("time window of {d} ms")))
        }
        _ => {}
    }
    let step = |ts, vals, valid| Step {
        ts,
        vals,
        valid,
        frame: spec.frame,
        minmax: (stats.min, stats.max),
        min_periods: spec.min_periods.max(1),
    };
    let Some(p) = order.partitions() else {
        let mut out = Outs::new(stats, n);
        let step = step(ts, values.values(), Valid::from(values.nulls()));
        let mut state: Vec<KeyWindow> = (0..n_keys).map(|_| KeyWindow::default()).collect();
        order.for_each(|i| {
            let k = keys[i];
            if k != NULL_KEY {
                step.row(&mut state[k as usize], i, &mut out);
            }
        });
        return Ok(out.finish());
    };
    let vals = p.split(keys, values.values());
    let valid = values
        .nulls()
        .map(|nb| p.split(keys, &nb.iter().collect::<Vec<bool>>()));
    let parts: Vec<Outs> = p
        .parts
        .par_iter()
        .enumerate()
        .map(|(pi, part)| {
            // In visiting order (see `Part::gather`), back at the end.
            let mut out = Outs::new(stats, part.len());
            let key = part.gather(&part.key);
            let ts = part.gather(&part.ts);
            let v = part.gather(&vals[pi]);
            let okv = valid.as_ref().map(|x| part.gather(&x[pi]));
            let ok = okv.as_deref().map_or(Valid::All, Valid::Bools);
            let step = Step {
                ts: &ts,
                vals: &v,
                valid: ok,
                frame: spec.frame,
                minmax: (stats.min, stats.max),
                min_periods: spec.min_periods.max(1),
            };
            let mut state: Vec<KeyWindow> =
                (0..part.keys.len()).map(|_| KeyWindow::default()).collect();
            for (j, &k) in key.iter().enumerate() {
                step.row(&mut state[part.local(k)], j, &mut out);
            }
            out.ungather(part)
        })
        .collect();
    Ok(Outs::merge(stats, p, keys, parts).finish())
}

/// The statistics being computed, one value per row.
struct Outs {
    count: Vec<u32>,
    count_ok: Vec<bool>,
    sum: Col,
    mean: Col,
    std: Col,
    min: Col,
    max: Col,
}

impl Outs {
    fn new(stats: RollingStats, n: usize) -> Outs {
        let c = if stats.count { n } else { 0 };
        Outs {
            count: vec![0; c],
            count_ok: vec![false; c],
            sum: Col::new(stats.sum, n),
            mean: Col::new(stats.mean, n),
            std: Col::new(stats.std, n),
            min: Col::new(stats.min, n),
            max: Col::new(stats.max, n),
        }
    }

    /// Per-partition outputs back in row order.
    fn merge(stats: RollingStats, p: &Partitions, keys: &[u32], mut parts: Vec<Outs>) -> Outs {
        let mut col = |on: bool, get: fn(&mut Outs) -> &mut Col| -> Col {
            if !on {
                return Col::new(false, 0);
            }
            let v: Vec<Vec<f64>> = parts
                .iter_mut()
                .map(|o| std::mem::take(&mut get(o).v))
                .collect();
            let ok: Vec<Vec<bool>> = parts
                .iter_mut()
                .map(|o| std::mem::take(&mut get(o).ok))
                .collect();
            Col {
                on,
                v: p.merge(keys, &v, 0.0),
                ok: p.merge(keys, &ok, false),
            }
        };
        let sum = col(stats.sum, |o| &mut o.sum);
        let mean = col(stats.mean, |o| &mut o.mean);
        let std = col(stats.std, |o| &mut o.std);
        let min = col(stats.min, |o| &mut o.min);
        let max = col(stats.max, |o| &mut o.max);
        let (count, count_ok) = if stats.count {
            let c: Vec<Vec<u32>> = parts
                .iter_mut()
                .map(|o| std::mem::take(&mut o.count))
                .collect();
            let ok: Vec<Vec<bool>> = parts
                .iter_mut()
                .map(|o| std::mem::take(&mut o.count_ok))
                .collect();
            (p.merge(keys, &c, 0), p.merge(keys, &ok, false))
        } else {
            (Vec::new(), Vec::new())
        };
        Outs {
            count,
            count_ok,
            sum,
            mean,
            std,
            min,
            max,
        }
    }

    /// Rows computed in a partition's visiting order back in arrival order.
    fn ungather(self, part: &super::order::Part) -> Outs {
        if !part.is_permuted() {
            return self;
        }
        let col = |c: Col| Col {
            on: c.on,
            v: if c.on { part.ungather(c.v) } else { c.v },
            ok: if c.on { part.ungather(c.ok) } else { c.ok },
        };
        let counting = !self.count.is_empty();
        Outs {
            count: if counting {
                part.ungather(self.count)
            } else {
                self.count
            },
            count_ok: if counting {
                part.ungather(self.count_ok)
            } else {
                self.count_ok
            },
            sum: col(self.sum),
            mean: col(self.mean),
            std: col(self.std),
            min: col(self.min),
            max: col(self.max),
        }
    }

    fn finish(self) -> RollingOut {
        let on = !self.count_ok.is_empty();
        RollingOut {
            count: on.then(|| {
                let nulls = NullBuffer::from(self.count_ok);
                UInt32Array::new(self.count.into(), Some(nulls))
            }),
            sum: self.sum.finish(),
            mean: self.mean.finish(),
            std: self.std.finish(),
            min: self.min.finish(),
            max: self.max.finish(),
        }
    }
}

/// Validity of the values a step reads.
#[derive(Clone, Copy)]
pub(crate) enum Valid<'a> {
    All,
    Nulls(&'a NullBuffer),
    Bools(&'a [bool]),
}

impl<'a> From<Option<&'a NullBuffer>> for Valid<'a> {
    fn from(n: Option<&'a NullBuffer>) -> Self {
        n.map_or(Valid::All, Valid::Nulls)
    }
}

impl Valid<'_> {
    #[inline]
    pub(crate) fn get(&self, i: usize) -> bool {
        match self {
            Valid::All => true,
            Valid::Nulls(b) => b.is_valid(i),
            Valid::Bools(b) => b[i],
        }
    }
}

/// The inputs of one rolling computation and its per-row step.
struct Step<'a> {
    ts: &'a [i64],
    vals: &'a [f64],
    valid: Valid<'a>,
    frame: WindowFrame,
    minmax: (bool, bool),
    min_periods: usize,
}

impl Step<'_> {
    /// Add row `i` to its key's window `w` and write the row's statistics.
    #[inline]
    fn row(&self, w: &mut KeyWindow, i: usize, o: &mut Outs) {
        let valid = self.valid.get(i);
        let t = self.ts[i];
        let ord = match self.frame {
            WindowFrame::Rows(_) => {
                w.seq += 1;
                w.seq
            }
            WindowFrame::Time(_) => t,
        };
        w.push(ord, self.vals[i], valid, self.minmax);
        let first = match self.frame {
            WindowFrame::Rows(r) => ord - r as i64,
            WindowFrame::Time(d) => t - d,
        };
        w.evict_while(|o| o <= first);
        if !o.count.is_empty() {
            o.count[i] = w.nn as u32;
            o.count_ok[i] = true;
        }
        if w.nn < self.min_periods {
            return;
        }
        o.sum.set(i, Some(w.sum()));
        o.mean.set(i, Some(w.mean()));
        o.std.set(i, w.std());
        let poisoned = w.bad > 0;
        let bound = |f: &(i64, f64)| if poisoned { f64::NAN } else { f.1 };
        o.min.set(i, w.minq.front().map(bound));
        o.max.set(i, w.maxq.front().map(bound));
    }
}

/// Exponential moving average per key: `e = alpha * v + (1 - alpha) * e_prev`,
/// starting at the key's first value. A null value repeats the previous
/// average (null before the first value).
pub fn ema(
    keys: &[u32],
    values: &Float64Array,
    n_keys: usize,
    order: &RowOrder,
    alpha: f64,
) -> Result<Float64Array, TsError> {
    if !(alpha > 0.0 && alpha <= 1.0) {
        return Err(TsError::Param(format!(
            "EMA alpha {alpha}: expected 0 < alpha <= 1"
        )));
    }
    ema_with(keys, values, n_keys, order, |_, _| alpha)
}

/// Time-aware EMA per key: the weight of a new value grows with the time
/// since the previous one, `alpha = 1 - exp(-dt / tau)`, so irregular
/// sampling does not bias it.
pub fn ema_time(
    keys: &[u32],
    ts: &[i64],
    values: &Float64Array,
    n_keys: usize,
    order: &RowOrder,
    tau_ms: f64,
) -> Result<Float64Array, TsError> {
    if tau_ms.is_nan() || tau_ms <= 0.0 {
        return Err(TsError::Param(format!(
            "EMA time constant {tau_ms} ms: expected > 0"
        )));
    }
    same_len("ema key/ts", &[keys.len(), ts.len()])?;
    ema_with(keys, values, n_keys, order, |i, prev| {
        let dt = (ts[i] - ts[prev]) as f64;
        1.0 - (-dt.max(0.0) / tau_ms).exp()
    })
}

fn ema_with(
    keys: &[u32],
    values: &Float64Array,
    n_keys: usize,
    order: &RowOrder,
    alpha: impl Fn(usize, usize) -> f64,
) -> Result<Float64Array, TsError> {
    let n = same_len("ema key/values", &[keys.len(), values.len()])?;
    // Per key: (ema, index of the previous valid row).
    let mut state: Vec<Option<(f64, usize)>> = vec![None; n_keys];
    let mut out = Col::new(true, n);
    let vals = values.values();
    order.for_each(|i| {
        let k = keys[i];
        if k == NULL_KEY {
            return;
        }
        let s = &mut state[k as usize];
        if values.is_valid(i) {
            let v = vals[i];
            *s = Some(match *s {
                None => (v, i),
                Some((e, prev)) => {
                    let a = alpha(i, prev);
                    (a * v + (1.0 - a) * e, i)
                }
            });
        }
        out.set(i, s.map(|s| s.0));
    });
    Ok(out
        .finish()
        .unwrap_or_else(|| Float64Array::from(Vec::<f64>::new())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (mean, std, min, max) of a window, or None below min_periods.
    type Stats = Option<(f64, Option<f64>, f64, f64)>;

    /// Two-pass statistics of the window of every row, straight from the definition.
    fn reference(
        keys: &[u32],
        ts: &[i64],
        vals: &[Option<f64>],
        frame: WindowFrame,
        min_periods: usize,
    ) -> Vec<Stats> {
        (0..keys.len())
            .map(|i| {
                let same: Vec<usize> = (0..=i).filter(|&j| keys[j] == keys[i]).collect();
                let win: Vec<usize> = match frame {
                    WindowFrame::Rows(r) => same[same.len().saturating_sub(r)..].to_vec(),
                    WindowFrame::Time(d) => {
                        same.into_iter().filter(|&j| ts[j] > ts[i] - d).collect()
                    }
                };
                let v: Vec<f64> = win.iter().filter_map(|&j| vals[j]).collect();
                if v.len() < min_periods.max(1) {
                    return None;
                }
                let n = v.len() as f64;
                let mean = v.iter().sum::<f64>() / n;
                let std = (v.len() > 1).then(|| {
                    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
                });
                let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                Some((mean, std, min, max))
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    const ALL: RollingStats = RollingStats {
        count: true,
        sum: true,
        mean: true,
        std: true,
        min: true,
        max: true,
    };

    fn run(keys: &[u32], ts: &[i64], vals: &[Option<f64>], frame: WindowFrame, mp: usize) {
        let arr = Float64Array::from(vals.to_vec());
        let order = RowOrder::for_rows(keys, 3, ts);
        let spec = RollingSpec {
            frame,
            min_periods: mp,
        };
        let out = rolling(keys, ts, &arr, 3, &order, spec, ALL).unwrap();
        // Partitioned and walked on the worker threads: the same, bit for bit.
        let grouped = RowOrder::partitioned(keys, 3, ts);
        let par = rolling(keys, ts, &arr, 3, &grouped, spec, ALL).unwrap();
        assert_eq!(par.count, out.count);
        assert_eq!(par.sum, out.sum);
        assert_eq!(par.mean, out.mean);
        assert_eq!(par.std, out.std);
        assert_eq!(par.min, out.min);
        assert_eq!(par.max, out.max);
        let (mean, std, min, max) = (
            out.mean.unwrap(),
            out.std.unwrap(),
            out.min.unwrap(),
            out.max.unwrap(),
        );
        for (i, r) in reference(keys, ts, vals, frame, mp).into_iter().enumerate() {
            match r {
                None => assert!(mean.is_null(i), "row {i}: expected null mean"),
                Some((m, s, lo, hi)) => {
                    assert!(
                        close(mean.value(i), m),
                        "row {i}: mean {} vs {m}",
                        mean.value(i)
                    );
                    assert_eq!(min.value(i), lo, "row {i} min");
                    assert_eq!(max.value(i), hi, "row {i} max");
                    match s {
                        None => assert!(std.is_null(i)),
                        Some(s) => assert!(
                            close(std.value(i), s) || (s < 1e-12 && std.value(i) < 1e-9),
                            "row {i}: std {} vs {s}",
                            std.value(i)
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn constant_windows_are_exact_after_varying_values() {
        // Varying values, then a long constant run (a DOWN machine at 0.05).
        let mut vals: Vec<Option<f64>> = (0..100)
            .map(|i| Some(1.5 + (i as f64 * 0.37).sin()))
            .collect();
        vals.extend(std::iter::repeat_n(Some(0.05), 200));
        let n = vals.len();
        let keys = vec![0u32; n];
        let ts: Vec<i64> = (0..n as i64).map(|i| i * 1000).collect();
        let arr = Float64Array::from(vals.clone());
        let order = RowOrder::for_rows(&keys, 1, &ts);
        let spec = RollingSpec {
            frame: WindowFrame::Rows(60),
            min_periods: 60,
        };
        let out = rolling(&keys, &ts, &arr, 1, &order, spec, ALL).unwrap();
        let (mean, std) = (out.mean.unwrap(), out.std.unwrap());
        assert!(mean.is_null(58) && !mean.is_null(59));
        for i in 160..n {
            assert_eq!(std.value(i), 0.0, "row {i}");
            assert_eq!(mean.value(i), 0.05, "row {i}");
        }
        run(&keys, &ts, &vals, WindowFrame::Rows(60), 60);
    }

    #[test]
    fn nan_poisons_only_its_windows() {
        let vals = vec![Some(1.0), Some(f64::NAN), Some(3.0), Some(4.0), Some(5.0)];
        let keys = vec![0u32; 5];
        let ts = vec![0, 1, 2, 3, 4];
        let arr = Float64Array::from(vals);
        let order = RowOrder::for_rows(&keys, 1, &ts);
        let spec = RollingSpec {
            frame: WindowFrame::Rows(2),
            min_periods: 1,
        };
        let out = rolling(&keys, &ts, &arr, 1, &order, spec, ALL).unwrap();
        let mean = out.mean.unwrap();
        assert!(mean.value(1).is_nan() && mean.value(2).is_nan());
        assert_eq!(mean.value(3), 3.5);
        assert_eq!(out.std.unwrap().value(4), std::f64::consts::FRAC_1_SQRT_2);
    }

    #[test]
    fn ema_per_key_and_by_time() {
        let keys = vec![0, 1, 0, 0];
        let vals = Float64Array::from(vec![Some(10.0), Some(1.0), None, Some(20.0)]);
        let order = RowOrder::Natural(4);
        let e = ema(&keys, &vals, 2, &order, 0.5).unwrap();
        assert_eq!(
            (e.value(0), e.value(1), e.value(2), e.value(3)),
            (10.0, 1.0, 10.0, 15.0)
        );
        let ts = vec![0, 0, 500, 1000];
        let e = ema_time(&keys, &ts, &vals, 2, &order, 1000.0).unwrap();
        let a = 1.0 - (-1.0f64).exp();
        assert!((e.value(3) - (a * 20.0 + (1.0 - a) * 10.0)).abs() < 1e-12);
        assert!(ema(&keys, &vals, 2, &order, 0.0).is_err());
    }

    fn rows() -> impl Strategy<Value = (Vec<u32>, Vec<i64>, Vec<Option<f64>>)> {
        // Values on a 0.5 grid so that constant and repeated runs are common.
        prop::collection::vec(
            (0u32..3, 0i64..5, prop::option::weighted(0.9, -4i32..4)),
            0..120,
        )
        .prop_map(|v| {
            let mut t = 0;
            let mut keys = vec![];
            let mut ts = vec![];
            let mut vals = vec![];
            for (k, dt, x) in v {
                t += dt;
                keys.push(k);
                ts.push(t);
                vals.push(x.map(|x| x as f64 * 0.5 + 100.0));
            }
            (keys, ts, vals)
        })
    }

    proptest! {
        #[test]
        fn row_windows_agree_with_reference((keys, ts, vals) in rows(), n in 1usize..8, mp in 0usize..4) {
            run(&keys, &ts, &vals, WindowFrame::Rows(n), mp);
        }

        #[test]
        fn time_windows_agree_with_reference((keys, ts, vals) in rows(), d in 1i64..15, mp in 0usize..3) {
            run(&keys, &ts, &vals, WindowFrame::Time(d), mp);
        }
    }
}
