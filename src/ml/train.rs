//! Training: a time-based split with gaps (train, then validation, then
//! test, each separated by the label horizon so no label peeks into the next
//! period), candidates fit on train (smartcore random forest with class
//! weights; logistic regression on standardised, oversampled rows; for a
//! regression, least squares with the far-over rows trimmed), the one with
//! the best validation PR AUC (MAE for regression) kept, its alert
//! threshold chosen on validation, and everything measured once on test,
//! side by side with simple baselines on the same rows.

use std::collections::BTreeMap;

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use super::dataset::Dataset;
use super::forest::Forest;
use super::metrics::{self, Confusion, RegressionMetrics};
use super::model::{Algorithm, Model, Task, FORMAT};
use super::MlError;

/// Knobs of one training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainParams {
    pub task: Task,
    /// Label horizon in plant hours (failure classifiers): the split gap.
    pub horizon_h: Option<f64>,
    /// Alerts must come at least this many plant hours before a failure.
    pub min_lead_h: f64,
    pub trees: usize,
    pub max_depth: u16,
    pub min_samples_leaf: usize,
    pub seed: u64,
    /// Share of the time range for training and validation (the rest is test).
    pub train_share: f64,
    pub validation_share: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            task: Task::Classification,
            horizon_h: None,
            min_lead_h: 8.0,
            trees: 64,
            max_depth: 12,
            min_samples_leaf: 4,
            seed: 42,
            train_share: 0.6,
            validation_share: 0.2,
        }
    }
}

/// Rows of each period.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
    /// Period bounds (UTC ms): train < t1 - gap <= ... validation < t2 - gap; test >= t2.
    pub t1: i64,
    pub t2: i64,
    pub gap_ms: i64,
    pub end: i64,
}

/// The time split with gaps.
pub fn split(ds: &Dataset, p: &TrainParams) -> Result<Split, MlError> {
    let mut ts: Vec<i64> = ds.t.clone();
    ts.sort_unstable();
    ts.dedup();
    if ts.len() < 10 {
        return Err(MlError::Data(format!(
            "{} distinct times: too few to split into train, validation and test",
            ts.len()
        )));
    }
    let (lo, hi) = (ts[0], *ts.last().unwrap());
    let at = |q: f64| lo + ((hi - lo) as f64 * q) as i64;
    let t1 = at(p.train_share);
    let t2 = at(p.train_share + p.validation_share);
    let gap_ms = (p.horizon_h.unwrap_or(0.0) * ds.ms_per_hour) as i64;
    let mut s = Split {
        t1,
        t2,
        gap_ms,
        end: hi,
        ..Default::default()
    };
    for (i, &t) in ds.t.iter().enumerate() {
        if t < t1 - gap_ms {
            s.train.push(i);
        } else if t >= t1 && t < t2 - gap_ms {
            s.validation.push(i);
        } else if t >= t2 {
            s.test.push(i);
        }
    }
    if s.train.is_empty() || s.validation.is_empty() || s.test.is_empty() {
        return Err(MlError::Data(format!(
            "the time split left a period empty (train {}, validation {}, test {} rows): \
             more history is needed than the label horizon's gaps",
            s.train.len(),
            s.validation.len(),
            s.test.len()
        )));
    }
    Ok(s)
}

/// Median of the finite values (0 when there are none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prepared rows of a period (missing values imputed).
pub(crate) fn matrix(ds: &Dataset, rows: &[usize], impute: &[f64]) -> Vec<f64> {
    let k = ds.width();
    let mut x = Vec::with_capacity(rows.len() * k);
    for &r in rows {
        for (c, v) in ds.row(r).iter().enumerate() {
            x.push(if v.is_finite() { *v } else { impute[c] });
        }
    }
    x
}

fn fit_forest(
    x: &[f64],
    y: &[f64],
    w: &[f64],
    k: usize,
    p: &TrainParams,
    progress: &indicatif::ProgressBar,
) -> Result<Forest, MlError> {
    let n = y.len();
    let chunks = rayon::current_num_threads().clamp(1, 8).min(p.trees.max(1));
    let per = p.trees.div_ceil(chunks);
    let mtry = match p.task {
        Task::Classification => ((k as f64).sqrt().ceil() as usize).max(1),
        // A third of the features (the textbook default), but with few
        // features every split sees them all: with five inputs, one random
        // feature per split cannot follow a product of state and load.
        Task::Regression if k <= 8 => k,
        Task::Regression => (k / 3).max(1),
    };
    let parts: Vec<Result<Forest, MlError>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let xm = DenseMatrix::new(n, k, x.to_vec(), false)
                .map_err(|e| MlError::Train(e.to_string()))?;
            let params = RandomForestRegressorParameters {
                max_depth: Some(p.max_depth),
                min_samples_leaf: p.min_samples_leaf,
                min_samples_split: p.min_samples_leaf * 2,
                n_trees: per,
                m: Some(mtry),
                keep_samples: false,
                seed: p.seed.wrapping_add(c as u64 * 7919),
            };
            let y = y.to_vec();
            let rf = RandomForestRegressor::fit_with_weights(&xm, &y, w, params)
                .map_err(|e| MlError::Train(e.to_string()))?;
            progress.inc(per as u64);
            Forest::from_smartcore(&rf).map_err(|e| MlError::Train(e.to_string()))
        })
        .collect();
    let mut f = Forest::default();
    for p in parts {
        f.trees.extend(p?.trees);
    }
    Ok(f)
}

/// Column means and standard deviations.
fn standardise(x: &[f64], n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; k];
    let mut std = vec![0.0; k];
    for r in 0..n {
        for c in 0..k {
            mean[c] += x[r * k + c];
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    for r in 0..n {
        for c in 0..k {
            std[c] += (x[r * k + c] - mean[c]).powi(2);
        }
    }
    std.iter_mut()
        .for_each(|s| *s = (*s / n.max(1) as f64).sqrt().max(1e-9));
    (mean, std)
}

/// Ridge least squares on standardised features, refit twice without the
/// rows whose residual is over three robust standard deviations above the
/// fit (one-sided: waste, a stuck sensor reading high), so that what the
/// model is meant to find does not bend the line towards it.
fn fit_linear(x: &[f64], y: &[f64], k: usize) -> Result<Algorithm, MlError> {
    let n = y.len();
    let (mean, std) = standardise(x, n, k);
    let z = |r: usize, c: usize| (x[r * k + c] - mean[c]) / std[c];
    let mut keep = vec![true; n];
    let mut beta = vec![0.0; k + 1];
    for pass in 0..3 {
        // Normal equations of [1, z] with a small ridge on the slopes.
        let d = k + 1;
        let mut a = vec![0.0; d * d];
        let mut b = vec![0.0; d];
        let mut row = vec![0.0; d];
        let mut m = 0usize;
        for r in (0..n).filter(|&r| keep[r]) {
            row[0] = 1.0;
            for c in 0..k {
                row[c + 1] = z(r, c);
            }
            for i in 0..d {
                b[i] += row[i] * y[r];
                for j in 0..d {
                    a[i * d + j] += row[i] * row[j];
                }
            }
            m += 1;
        }
        if m <= d {
            return Err(MlError::Train(format!(
                "linear regression: {m} rows for {d} parameters"
            )));
        }
        for i in 1..d {
            a[i * d + i] += 1e-6 * m as f64;
        }
        beta = solve(a, b, d)
            .ok_or_else(|| MlError::Train("linear regression: singular system".into()))?;
        if pass == 2 {
            break;
        }
        let resid: Vec<f64> = (0..n)
            .map(|r| y[r] - beta[0] - (0..k).map(|c| beta[c + 1] * z(r, c)).sum::<f64>())
            .collect();
        let kept: Vec<f64> = (0..n).filter(|&r| keep[r]).map(|r| resid[r]).collect();
        let med = median(kept.clone());
        let mad = median(kept.iter().map(|v| (v - med).abs()).collect());
        let cut = med + 3.0 * 1.4826 * mad.max(1e-12);
        for r in 0..n {
            keep[r] = resid[r] <= cut;
        }
    }
    Ok(Algorithm::Linear {
        mean,
        std,
        coef: beta[1..].to_vec(),
        intercept: beta[0],
    })
}

/// Solve `a x = b` (`d` x `d`, row-major) by Gaussian elimination with
/// partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, d: usize) -> Option<Vec<f64>> {
    for col in 0..d {
        let piv =
            (col..d).max_by(|&i, &j| a[i * d + col].abs().total_cmp(&a[j * d + col].abs()))?;
        if a[piv * d + col].abs() < 1e-12 {
            return None;
        }
        if piv != col {
            for j in 0..d {
                a.swap(piv * d + j, col * d + j);
            }
            b.swap(piv, col);
        }
        for i in col + 1..d {
            let f = a[i * d + col] / a[col * d + col];
            if f != 0.0 {
                for j in col..d {
                    a[i * d + j] -= f * a[col * d + j];
                }
                b[i] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|j| a[i * d + j] * x[j]).sum();
        x[i] = (b[i] - s) / a[i * d + i];
    }
    Some(x)
}

fn fit_logistic(x: &[f64], y: &[f64], k: usize, seed: u64) -> Result<Algorithm, MlError> {
    let n = y.len();
    let (mean, std) = standardise(x, n, k);
    // Balance the classes by oversampling positives (at most 20 000 rows).
    let pos: Vec<usize> = (0..n).filter(|&i| y[i] > 0.5).collect();
    let neg: Vec<usize> = (0..n).filter(|&i| y[i] <= 0.5).collect();
    if pos.is_empty() || neg.is_empty() {
        return Err(MlError::Train(
            "logistic regression needs both classes".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let half = 10_000.min(neg.len().max(pos.len()));
    let mut rows: Vec<usize> = Vec::with_capacity(2 * half);
    let mut take = |from: &[usize], m: usize, rows: &mut Vec<usize>| {
        for i in 0..m {
            rows.push(if m <= from.len() {
                from[rng.random_range(0..from.len())]
            } else {
                from[i % from.len()]
            });
        }
    };
    take(&neg, half, &mut rows);
    take(&pos, half, &mut rows);
    let mut xs = Vec::with_capacity(rows.len() * k);
    let mut ys: Vec<u32> = Vec::with_capacity(rows.len());
    for &r in &rows {
        for c in 0..k {
            xs.push((x[r * k + c] - mean[c]) / std[c]);
        }
        ys.push((y[r] > 0.5) as u32);
    }
    let xm =
        DenseMatrix::new(rows.len(), k, xs, false).map_err(|e| MlError::Train(e.to_string()))?;
    let params = LogisticRegressionParameters::default().with_alpha(1.0);
    let lr =
        LogisticRegression::fit(&xm, &ys, params).map_err(|e| MlError::Train(e.to_string()))?;
    use smartcore::linalg::basic::arrays::Array;
    let coef: Vec<f64> = (0..k).map(|c| *lr.coefficients().get((0, c))).collect();
    let intercept = *lr.intercept().get((0, 0));
    Ok(Algorithm::Logistic {
        mean,
        std,
        coef,
        intercept,
    })
}

/// How a failure model's alerts would have played out over a period.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AlertReport {
    pub threshold: f64,
    /// Failures the period saw with a full horizon of data before them.
    pub failures: u64,
    /// Of those, flagged at least `min_lead_h` ahead.
    pub caught: u64,
    /// Flagged at all before they happened.
    pub flagged: u64,
    pub alerts: u64,
    /// Alerts followed by a failure within the horizon.
    pub true_alerts: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Lead times (plant hours) of flagged failures: p0, p10, p50, p90, p100.
    pub lead_h: Vec<f64>,
    /// Unplanned downtime in the period (every cause), plant hours.
    pub unplanned_down_h: f64,
    /// Downtime of the failures caught in time (planned instead), plant hours.
    pub avoidable_down_h: f64,
    pub downtime_avoided_share: f64,
}

/// How alerts are replayed over a period.
#[derive(Debug, Clone, Copy)]
pub struct AlertRule {
    pub threshold: f64,
    pub horizon_h: f64,
    pub min_lead_h: f64,
    /// The period (UTC ms).
    pub from: i64,
    pub to: i64,
}

/// Replay alerts over `rows` (one period) with `scores`: an alert opens at
/// the first row at or over the threshold and stays open until a failure
/// (a true alert) or for one horizon without one (a false alert).
pub fn alerts(ds: &Dataset, rows: &[usize], scores: &[f64], rule: AlertRule) -> AlertReport {
    let AlertRule {
        threshold,
        horizon_h,
        min_lead_h,
        from,
        to,
    } = rule;
    let hz_ms = (horizon_h * ds.ms_per_hour) as i64;
    let mut by_group: BTreeMap<u32, Vec<(i64, f64)>> = BTreeMap::new();
    for (&r, &s) in rows.iter().zip(scores) {
        by_group.entry(ds.group[r]).or_default().push((ds.t[r], s));
    }
    let mut rep = AlertReport {
        threshold,
        ..Default::default()
    };
    let mut leads = Vec::new();
    for (g, mut pts) in by_group {
        pts.sort_by_key(|p| p.0);
        let fails = &ds.failures[g as usize];
        // Alert episodes: (start, end-exclusive, true?)
        let mut open: Option<i64> = None;
        let mut episodes: Vec<(i64, bool)> = Vec::new();
        for &(t, s) in &pts {
            if let Some(st) = open {
                let failed = fails.iter().any(|f| f.0 >= st && f.0 <= t);
                if failed {
                    episodes.push((st, true));
                    open = None;
                } else if t - st > hz_ms {
                    episodes.push((st, false));
                    open = None;
                }
            }
            if open.is_none() && s >= threshold {
                // No alert while the machine is down (its rows are not scored).
                open = Some(t);
            }
        }
        if let Some(st) = open {
            let failed = fails.iter().any(|f| f.0 >= st && f.0 - st <= hz_ms);
            let known = to - st > hz_ms;
            if failed || known {
                episodes.push((st, failed));
            }
        }
        for &(_, ok) in &episodes {
            rep.alerts += 1;
            rep.true_alerts += ok as u64;
        }
        for f in fails {
            if f.0 <= from + hz_ms || f.0 > to {
                continue;
            }
            rep.failures += 1;
            rep.unplanned_down_h += if f.2.is_finite() { f.2 } else { 0.0 };
            let first = episodes
                .iter()
                .filter(|(st, ok)| *ok && *st <= f.0 && f.0 - *st <= hz_ms)
                .map(|e| e.0)
                .min();
            if let Some(st) = first {
                let lead = (f.0 - st) as f64 / ds.ms_per_hour;
                rep.flagged += 1;
                leads.push(lead);
                if lead >= min_lead_h {
                    rep.caught += 1;
                    rep.avoidable_down_h += if f.2.is_finite() { f.2 } else { 0.0 };
                }
            }
        }
        // Minor stops count as unplanned downtime nobody could avoid.
        for &(s, h) in &ds.unplanned[g as usize] {
            let is_failure = fails.iter().any(|f| f.0 == s);
            if !is_failure && s > from + hz_ms && s <= to {
                rep.unplanned_down_h += h;
            }
        }
    }
    rep.precision = if rep.alerts == 0 {
        0.0
    } else {
        rep.true_alerts as f64 / rep.alerts as f64
    };
    rep.recall = if rep.failures == 0 {
        0.0
    } else {
        rep.caught as f64 / rep.failures as f64
    };
    rep.f1 = if rep.precision + rep.recall > 0.0 {
        2.0 * rep.precision * rep.recall / (rep.precision + rep.recall)
    } else {
        0.0
    };
    rep.lead_h = metrics::quantiles(&leads);
    rep.downtime_avoided_share = if rep.unplanned_down_h > 0.0 {
        rep.avoidable_down_h / rep.unplanned_down_h
    } else {
        0.0
    };
    rep
}

/// Classification figures of one scorer on one period.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClassMetrics {
    pub rows: u64,
    pub positives: u64,
    pub roc_auc: f64,
    pub pr_auc: f64,
    /// Row-level, at the alert threshold.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub alerts: Option<AlertReport>,
}

fn class_metrics(scores: &[f64], labels: &[bool], threshold: f64) -> ClassMetrics {
    let c = Confusion::at(scores, labels, threshold);
    ClassMetrics {
        rows: labels.len() as u64,
        positives: labels.iter().filter(|&&l| l).count() as u64,
        roc_auc: metrics::roc_auc(scores, labels),
        pr_auc: metrics::pr_auc(scores, labels),
        precision: c.precision(),
        recall: c.recall(),
        f1: c.f1(),
        alerts: None,
    }
}

/// One candidate or baseline, measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    pub name: String,
    pub validation: serde_json::Value,
    pub test: serde_json::Value,
}

/// A training run: what went in, what came out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    pub model: String,
    pub started_ms: i64,
    pub duration_s: f64,
    pub params: TrainParams,
    pub algorithm: String,
    pub features: Vec<String>,
    /// Tables and versions read.
    pub sources: Vec<(String, Option<u64>)>,
    pub rows: BTreeMap<String, u64>,
    /// Period bounds, RFC 3339.
    pub periods: BTreeMap<String, String>,
    /// Headline test metrics (flat, for the registry and MLflow).
    pub metrics: BTreeMap<String, f64>,
    /// The chosen model and the baselines, on validation and test.
    pub compared: Vec<Scored>,
    /// Features by how often the forest splits on them.
    pub importance: Vec<(String, f64)>,
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Pick the alert threshold on validation: the best alert F1 (ties: higher
/// precision). `probability`: scores are probabilities (a fixed grid, and
/// never 1.0, where a saturated score would be the only alert); else raw
/// values (their quantiles).
fn choose_threshold(
    ds: &Dataset,
    rows: &[usize],
    scores: &[f64],
    p: &TrainParams,
    (from, to): (i64, i64),
    probability: bool,
) -> (f64, AlertReport) {
    let hz = p.horizon_h.unwrap_or(24.0);
    let mut s: Vec<f64> = scores.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    let q = |q: f64| s.get(((s.len().max(1) - 1) as f64 * q) as usize).copied();
    let mut grid: Vec<f64> = Vec::new();
    if probability {
        grid.extend((1..20).map(|i| i as f64 * 0.05));
        for x in [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98] {
            grid.extend(q(x).map(|v| v.min(0.99)));
        }
    } else {
        grid.extend((10..100).filter_map(|i| q(i as f64 / 100.0)));
        grid.extend([0.995, 0.999].into_iter().filter_map(q));
    }
    let mut best: Option<(f64, AlertReport)> = None;
    for th in grid {
        let r = alerts(
            ds,
            rows,
            scores,
            AlertRule {
                threshold: th,
                horizon_h: hz,
                min_lead_h: p.min_lead_h,
                from,
                to,
            },
        );
        let better = match &best {
            None => true,
            Some((_, b)) => (r.f1, r.precision) > (b.f1, b.precision),
        };
        if better {
            best = Some((th, r));
        }
    }
    best.unwrap_or_default()
}

/// The best straight line through one feature (the one most correlated
/// with the label on the training rows): the simple baseline of a
/// regression (RUL from hours since repair, power from running share).
#[derive(Debug, Clone, Copy)]
pub struct LinearBaseline {
    pub feature: usize,
    pub intercept: f64,
    pub slope: f64,
}

impl LinearBaseline {
    /// Fit on a row-major matrix of `k` columns (no missing values).
    pub fn fit(x: &[f64], y: &[f64], k: usize) -> Option<LinearBaseline> {
        let n = y.len() as f64;
        if n < 2.0 {
            return None;
        }
        let my = y.iter().sum::<f64>() / n;
        let mut best: Option<(f64, LinearBaseline)> = None;
        for c in 0..k {
            let mx = (0..y.len()).map(|r| x[r * k + c]).sum::<f64>() / n;
            let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
            for (r, yv) in y.iter().enumerate() {
                let (dx, dy) = (x[r * k + c] - mx, yv - my);
                sxy += dx * dy;
                sxx += dx * dx;
                syy += dy * dy;
            }
            if sxx <= 0.0 || syy <= 0.0 {
                continue;
            }
            let r2 = sxy * sxy / (sxx * syy);
            if best.is_none_or(|b| r2 > b.0) {
                let slope = sxy / sxx;
                best = Some((
                    r2,
                    LinearBaseline {
                        feature: c,
                        intercept: my - slope * mx,
                        slope,
                    },
                ));
            }
        }
        best.map(|b| b.1)
    }

    pub fn predict(&self, x: &[f64], k: usize) -> Vec<f64> {
        (0..x.len() / k.max(1))
            .map(|r| self.intercept + self.slope * x[r * k + self.feature])
            .collect()
    }

    pub fn describe(&self, features: &[String]) -> String {
        format!(
            "straight line on {} ({:.3} {:+.3} x)",
            features.get(self.feature).map_or("?", |s| s.as_str()),
            self.intercept,
            self.slope
        )
    }
}

/// The candidate with the best validation figure (`higher` is better, or
/// lower), each one's figure logged and kept as `<what>_<algorithm>`.
fn choose(
    mut cands: Vec<(Algorithm, f64)>,
    what: &str,
    higher: bool,
    metrics_out: &mut BTreeMap<String, f64>,
) -> Algorithm {
    let cmp =
        |a: &(usize, &(Algorithm, f64)), b: &(usize, &(Algorithm, f64))| a.1 .1.total_cmp(&b.1 .1);
    let it = cands.iter().enumerate();
    let best = if higher {
        it.max_by(cmp)
    } else {
        it.min_by(cmp)
    }
    .map(|(i, _)| i)
    .unwrap_or(0);
    for (i, (a, v)) in cands.iter().enumerate() {
        tracing::info!(
            candidate = a.name(),
            figure = what,
            value = v,
            chosen = i == best,
            "candidate"
        );
        metrics_out.insert(format!("{what}_{}", a.name()), *v);
    }
    cands.swap_remove(best).0
}

/// Train `name` on `ds`. `progress` counts trees.
pub fn train(
    ds: &Dataset,
    name: &str,
    p: &TrainParams,
    progress: &indicatif::ProgressBar,
) -> Result<(Model, Run), MlError> {
    let started_ms = crate::time::now_ms();
    let clock = std::time::Instant::now();
    let k = ds.width();
    let sp = split(ds, p)?;
    let impute: Vec<f64> = (0..k)
        .map(|c| median(sp.train.iter().map(|&r| ds.row(r)[c]).collect()))
        .collect();
    let xtr = matrix(ds, &sp.train, &impute);
    let ytr: Vec<f64> = sp.train.iter().map(|&r| ds.y[r]).collect();
    let xva = matrix(ds, &sp.validation, &impute);
    let yva: Vec<f64> = sp.validation.iter().map(|&r| ds.y[r]).collect();
    let xte = matrix(ds, &sp.test, &impute);
    let yte: Vec<f64> = sp.test.iter().map(|&r| ds.y[r]).collect();
    let classification = p.task == Task::Classification;
    let baseline: Vec<f64> = (0..k)
        .map(|c| {
            median(
                sp.train
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !classification || ytr[*i] <= 0.5)
                    .map(|(i, _)| xtr[i * k + c])
                    .collect(),
            )
        })
        .collect();
    let npos = ytr.iter().filter(|&&y| y > 0.5).count();
    if classification && (npos == 0 || npos == ytr.len()) {
        return Err(MlError::Data(format!(
            "the training period has {npos} positive rows of {}: both classes are needed \
             (more history, or a longer horizon)",
            ytr.len()
        )));
    }
    let weights: Vec<f64> = if classification {
        let wpos = ((ytr.len() - npos) as f64 / npos as f64).clamp(1.0, 50.0);
        ytr.iter()
            .map(|&y| if y > 0.5 { wpos } else { 1.0 })
            .collect()
    } else {
        vec![1.0; ytr.len()]
    };
    progress.set_length(p.trees as u64);
    let forest = fit_forest(&xtr, &ytr, &weights, k, p, progress)?;
    let mut importance = {
        let c = forest.split_counts(k);
        let tot = c.iter().sum::<u64>().max(1) as f64;
        let mut v: Vec<(String, f64)> = ds
            .features
            .iter()
            .cloned()
            .zip(c.iter().map(|&x| x as f64 / tot))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    };
    let mut model = Model {
        format: FORMAT,
        name: name.to_string(),
        task: p.task,
        target: String::new(),
        features: ds.features.clone(),
        impute: impute.clone(),
        baseline,
        algorithm: Algorithm::Forest(forest),
        threshold: None,
        twin_type: None,
        features_version: None,
        horizon_h: p.horizon_h,
        baseline_profile: None,
    };
    let score = |m: &Model, x: &[f64]| {
        let mut out = vec![0.0; x.len() / k.max(1)];
        m.score_matrix(x, &mut out);
        out
    };
    let period = |ms: i64| crate::time::rfc3339(ms);
    let mut rows = BTreeMap::new();
    rows.insert("train".to_string(), sp.train.len() as u64);
    rows.insert("validation".to_string(), sp.validation.len() as u64);
    rows.insert("test".to_string(), sp.test.len() as u64);
    let mut periods = BTreeMap::new();
    let t0 = ds.t.iter().copied().min().unwrap_or(0);
    periods.insert(
        "train".to_string(),
        format!("{} .. {}", period(t0), period(sp.t1 - sp.gap_ms)),
    );
    periods.insert(
        "validation".to_string(),
        format!("{} .. {}", period(sp.t1), period(sp.t2 - sp.gap_ms)),
    );
    periods.insert(
        "test".to_string(),
        format!("{} .. {}", period(sp.t2), period(sp.end)),
    );
    let mut compared = Vec::new();
    let mut metrics_out = BTreeMap::new();
    let algorithm;
    if classification {
        let lva: Vec<bool> = yva.iter().map(|&y| y > 0.5).collect();
        let lte: Vec<bool> = yte.iter().map(|&y| y > 0.5).collect();
        let hz = p.horizon_h.unwrap_or(24.0);
        let (va_from, va_to) = (sp.t1, sp.t2 - sp.gap_ms);
        let (te_from, te_to) = (sp.t2, sp.end);
        // Row metrics and the alert replay of a scorer on the test period.
        let on_test = |scores: &[f64], threshold: f64| {
            let mut m = class_metrics(scores, &lte, threshold);
            let rule = AlertRule {
                threshold,
                horizon_h: hz,
                min_lead_h: p.min_lead_h,
                from: te_from,
                to: te_to,
            };
            m.alerts = Some(alerts(ds, &sp.test, scores, rule));
            m
        };
        // Candidates, chosen on validation PR AUC.
        let mut cands: Vec<(Algorithm, f64)> = Vec::new();
        let f_scores = score(&model, &xva);
        cands.push((model.algorithm.clone(), metrics::pr_auc(&f_scores, &lva)));
        match fit_logistic(&xtr, &ytr, k, p.seed) {
            Ok(lr) => {
                let m = Model {
                    algorithm: lr.clone(),
                    ..model.clone()
                };
                cands.push((lr, metrics::pr_auc(&score(&m, &xva), &lva)));
            }
            Err(e) => tracing::warn!(error = %e, "logistic regression candidate left out"),
        }
        model.algorithm = choose(cands, "validation_pr_auc", true, &mut metrics_out);
        let sva = score(&model, &xva);
        let (th, va_alerts) = choose_threshold(ds, &sp.validation, &sva, p, (va_from, va_to), true);
        model.threshold = Some(th);
        let ste = score(&model, &xte);
        let te = on_test(&ste, th);
        let mut va = class_metrics(&sva, &lva, th);
        va.alerts = Some(va_alerts);
        let a = te.alerts.clone().unwrap_or_default();
        for (key, v) in [
            ("roc_auc", te.roc_auc),
            ("pr_auc", te.pr_auc),
            ("precision", te.precision),
            ("recall", te.recall),
            ("f1", te.f1),
            ("threshold", th),
            ("alert_precision", a.precision),
            ("alert_recall", a.recall),
            ("alert_f1", a.f1),
            ("failures", a.failures as f64),
            ("failures_caught", a.caught as f64),
            (
                "lead_h_median",
                a.lead_h.get(2).copied().unwrap_or(f64::NAN),
            ),
            ("downtime_avoided_share", a.downtime_avoided_share),
        ] {
            metrics_out.insert(key.to_string(), v);
        }
        compared.push(Scored {
            name: model.algorithm.name().to_string(),
            validation: to_value(&va),
            test: to_value(&te),
        });
        // Baselines on the same rows.
        let rate = npos as f64 / ytr.len() as f64;
        let cva = vec![rate; yva.len()];
        let cte = vec![rate; yte.len()];
        let c = on_test(&cte, rate);
        compared.push(Scored {
            name: "baseline: constant failure rate".into(),
            validation: to_value(&class_metrics(&cva, &lva, rate)),
            test: to_value(&c),
        });
        // The best single feature as a threshold alarm (direction and
        // feature picked on train, threshold on validation).
        let ltr: Vec<bool> = ytr.iter().map(|&y| y > 0.5).collect();
        let mut best_f: Option<(usize, f64, f64)> = None;
        for c in 0..k {
            let col: Vec<f64> = (0..ytr.len()).map(|r| xtr[r * k + c]).collect();
            let auc = metrics::roc_auc(&col, &ltr);
            if !auc.is_finite() {
                continue;
            }
            let (dir, a) = if auc >= 0.5 {
                (1.0, auc)
            } else {
                (-1.0, 1.0 - auc)
            };
            if best_f.is_none_or(|b| a > b.2) {
                best_f = Some((c, dir, a));
            }
        }
        if let Some((c, dir, _)) = best_f {
            let col =
                |x: &[f64]| -> Vec<f64> { (0..x.len() / k).map(|r| dir * x[r * k + c]).collect() };
            let (fva, fte) = (col(&xva), col(&xte));
            let (th, _) = choose_threshold(ds, &sp.validation, &fva, p, (va_from, va_to), false);
            let m = on_test(&fte, th);
            compared.push(Scored {
                name: format!(
                    "baseline: threshold alarm on {} {} {}",
                    ds.features[c],
                    if dir > 0.0 { ">=" } else { "<=" },
                    (dir * th * 1000.0).round() / 1000.0
                ),
                validation: to_value(&class_metrics(&fva, &lva, th)),
                test: to_value(&m),
            });
        }
        algorithm = model.algorithm.name().to_string();
    } else {
        // Candidates, chosen on validation MAE (robust to the rare rows far
        // off, which for an energy baseline are the waste it is to find).
        let mut cands: Vec<(Algorithm, f64)> = Vec::new();
        let f_va = score(&model, &xva);
        cands.push((
            model.algorithm.clone(),
            metrics::regression(&f_va, &yva).mae,
        ));
        match fit_linear(&xtr, &ytr, k) {
            Ok(lin) => {
                let m = Model {
                    algorithm: lin.clone(),
                    ..model.clone()
                };
                let mae = metrics::regression(&score(&m, &xva), &yva).mae;
                cands.push((lin, mae));
            }
            Err(e) => tracing::warn!(error = %e, "linear regression candidate left out"),
        }
        model.algorithm = choose(cands, "validation_mae", false, &mut metrics_out);
        let pva = score(&model, &xva);
        let pte = score(&model, &xte);
        let te = metrics::regression(&pte, &yte);
        let va = metrics::regression(&pva, &yva);
        for (key, v) in [
            ("rmse", te.rmse),
            ("mae", te.mae),
            ("phm", te.phm),
            ("phm_mean", te.phm_mean),
            ("validation_rmse", va.rmse),
        ] {
            metrics_out.insert(key.to_string(), v);
        }
        compared.push(Scored {
            name: model.algorithm.name().to_string(),
            validation: to_value(&va),
            test: to_value(&te),
        });
        let mean = ytr.iter().sum::<f64>() / ytr.len().max(1) as f64;
        let cm: RegressionMetrics = metrics::regression(&vec![mean; yte.len()], &yte);
        compared.push(Scored {
            name: "baseline: constant (training mean)".into(),
            validation: to_value(&metrics::regression(&vec![mean; yva.len()], &yva)),
            test: to_value(&cm),
        });
        metrics_out.insert("baseline_rmse".into(), cm.rmse);
        metrics_out.insert("baseline_mae".into(), cm.mae);
        if let Some(lin) = LinearBaseline::fit(&xtr, &ytr, k) {
            let (bva, bte) = (lin.predict(&xva, k), lin.predict(&xte, k));
            let lm = metrics::regression(&bte, &yte);
            compared.push(Scored {
                name: format!("baseline: {}", lin.describe(&ds.features)),
                validation: to_value(&metrics::regression(&bva, &yva)),
                test: to_value(&lm),
            });
            metrics_out.insert("baseline_linear_rmse".into(), lm.rmse);
            metrics_out.insert("baseline_linear_mae".into(), lm.mae);
        }
        algorithm = model.algorithm.name().to_string();
    }
    // A linear model's weights say more than the forest's splits.
    if let Algorithm::Linear { coef, .. } | Algorithm::Logistic { coef, .. } = &model.algorithm {
        let tot = coef.iter().map(|c| c.abs()).sum::<f64>().max(1e-12);
        importance = ds
            .features
            .iter()
            .cloned()
            .zip(coef.iter().map(|c| c.abs() / tot))
            .collect();
        importance.sort_by(|a, b| b.1.total_cmp(&a.1));
    }
    // The training distributions, for drift monitoring.
    let str_scores = score(&model, &xtr);
    model.baseline_profile = Some(super::drift::Baseline {
        features: (0..k)
            .map(|c| {
                let col: Vec<f64> = (0..ytr.len()).map(|r| xtr[r * k + c]).collect();
                super::drift::Profile::fit(&col)
            })
            .collect(),
        score: super::drift::Profile::fit(&str_scores),
    });
    let run = Run {
        run_id: format!("{:016x}", rand::random::<u64>()),
        model: name.to_string(),
        started_ms,
        duration_s: clock.elapsed().as_secs_f64(),
        params: p.clone(),
        algorithm,
        features: ds.features.clone(),
        sources: ds.sources.clone(),
        rows,
        periods,
        metrics: metrics_out,
        compared,
        importance,
    };
    Ok((model, run))
}
