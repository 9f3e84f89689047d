//! The energy baseline's own finish after training: its tolerance (how far
//! over the expected power a bucket must be to count as waste, from the
//! validation residuals) and, when the simulator's ground truth is in the
//! lake (`system.sim_wear.waste_kw`), how well the residual finds the waste
//! it hid (auxiliaries left on, leaks), side by side with a straight line
//! on the best single feature.

use std::collections::HashMap;
use std::sync::Arc;

use super::dataset::{numbers, strings, Dataset};
use super::model::Model;
use super::train::{matrix, median, split, LinearBaseline, Run, Scored, TrainParams};
use super::MlError;
use crate::lake::{Lakehouse, TableName};
use crate::query::SqlEngine;

/// Tolerance = this many robust standard deviations of the validation
/// residuals (1.4826 x median absolute deviation: waste episodes, which
/// are rare, do not widen it).
const SIGMAS: f64 = 3.0;

/// Robust tolerance of residuals `y - pred`.
pub fn tolerance(pred: &[f64], y: &[f64]) -> f64 {
    let r: Vec<f64> = y.iter().zip(pred).map(|(a, p)| a - p).collect();
    let m = median(r.clone());
    let mad = median(r.iter().map(|x| (x - m).abs()).collect());
    (SIGMAS * 1.4826 * mad).max(1e-6)
}

/// Waste found by a predictor on the test rows, against the truth.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WasteReport {
    pub tolerance_kw: f64,
    /// Buckets flagged (drawn - expected > tolerance) and truly wasteful
    /// (the simulator added at least the champion's tolerance).
    pub flagged: u64,
    pub wasteful: u64,
    pub hits: u64,
    pub precision: f64,
    pub recall: f64,
    /// kWh over expected in flagged buckets, and the kWh the simulator wasted.
    pub kwh_estimated: f64,
    pub kwh_true: f64,
}

fn report(pred: &[f64], y: &[f64], truth: &[f64], tol: f64, truth_tol: f64, h: f64) -> WasteReport {
    let mut w = WasteReport {
        tolerance_kw: tol,
        ..Default::default()
    };
    for i in 0..y.len() {
        let flag = y[i] - pred[i] > tol;
        let real = truth[i] >= truth_tol;
        w.flagged += flag as u64;
        w.wasteful += real as u64;
        w.hits += (flag && real) as u64;
        if flag {
            w.kwh_estimated += (y[i] - pred[i]) * h;
        }
        w.kwh_true += truth[i] * h;
    }
    w.precision = w.hits as f64 / w.flagged.max(1) as f64;
    w.recall = w.hits as f64 / w.wasteful.max(1) as f64;
    w
}

/// Simulated waste (mean kW) per (machine, bucket end), when recorded.
async fn truth(lake: &Arc<Lakehouse>) -> Result<Option<HashMap<(String, i64), f64>>, MlError> {
    let name = TableName::parse("system.sim_wear").expect("valid name");
    if !lake.exists(&name) {
        return Ok(None);
    }
    let sql = SqlEngine::new(lake.clone());
    let res = sql
        .query("SELECT asset_id, ts, waste_kw FROM system.sim_wear WHERE waste_kw IS NOT NULL")
        .await
        .map_err(|e| MlError::Data(e.to_string()))?;
    let mut out = HashMap::new();
    for b in &res.batches {
        let (ids, ts, w) = (
            strings(b.column(0))?,
            numbers(b.column(1))?,
            numbers(b.column(2))?,
        );
        for i in 0..b.num_rows() {
            out.insert((ids[i].clone(), ts[i] as i64), w[i]);
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Set the energy model's tolerance and measure waste detection.
pub async fn finish(
    lake: &Arc<Lakehouse>,
    ds: &Dataset,
    p: &TrainParams,
    bucket_ms: i64,
    m: &mut Model,
    run: &mut Run,
) -> Result<(), MlError> {
    let k = ds.width();
    let sp = split(ds, p)?;
    let score = |m: &Model, rows: &[usize]| {
        let x = matrix(ds, rows, &m.impute);
        let mut out = vec![0.0; rows.len()];
        m.score_matrix(&x, &mut out);
        out
    };
    let ys = |rows: &[usize]| rows.iter().map(|&r| ds.y[r]).collect::<Vec<f64>>();
    let (yva, yte) = (ys(&sp.validation), ys(&sp.test));
    let tol = tolerance(&score(m, &sp.validation), &yva);
    m.threshold = Some(tol);
    run.metrics.insert("tolerance_kw".into(), tol);
    let Some(truth) = truth(lake).await? else {
        return Ok(());
    };
    run.sources.push((
        "system.sim_wear".into(),
        lake.open_by_name("system.sim_wear")
            .await
            .ok()
            .and_then(|t| t.version()),
    ));
    let t_te: Vec<f64> = sp
        .test
        .iter()
        .map(|&r| {
            truth
                .get(&(ds.groups[ds.group[r] as usize].clone(), ds.t[r]))
                .copied()
                .unwrap_or(0.0)
        })
        .collect();
    let h = bucket_ms as f64 / ds.ms_per_hour;
    let model_w = report(&score(m, &sp.test), &yte, &t_te, tol, tol, h);
    for (key, v) in [
        ("waste_precision", model_w.precision),
        ("waste_recall", model_w.recall),
        ("waste_kwh_estimated", model_w.kwh_estimated),
        ("waste_kwh_true", model_w.kwh_true),
    ] {
        run.metrics.insert(key.into(), v);
    }
    let json = |w: &WasteReport| serde_json::to_value(w).unwrap_or_default();
    run.compared.push(Scored {
        name: format!("waste detection: {} residual", m.algorithm.name()),
        validation: serde_json::Value::Null,
        test: json(&model_w),
    });
    // The straight line on one feature, with its own tolerance, against the same truth.
    let xtr = matrix(ds, &sp.train, &m.impute);
    if let Some(lin) = LinearBaseline::fit(&xtr, &ys(&sp.train), k) {
        let bva = lin.predict(&matrix(ds, &sp.validation, &m.impute), k);
        let bte = lin.predict(&matrix(ds, &sp.test, &m.impute), k);
        let btol = tolerance(&bva, &yva);
        let w = report(&bte, &yte, &t_te, btol, tol, h);
        run.metrics
            .insert("baseline_waste_precision".into(), w.precision);
        run.metrics.insert("baseline_waste_recall".into(), w.recall);
        run.compared.push(Scored {
            name: format!("waste detection: baseline {}", lin.describe(&ds.features)),
            validation: serde_json::Value::Null,
            test: json(&w),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_ignores_rare_waste_and_report_counts_it() {
        // Residuals of +-0.5 kW noise, and 5 % of buckets 10 kW over.
        let n = 200;
        let pred = vec![20.0; n];
        let y: Vec<f64> = (0..n)
            .map(|i| {
                20.0 + if i % 20 == 0 {
                    10.0
                } else {
                    (i % 3) as f64 * 0.5 - 0.5
                }
            })
            .collect();
        let tol = tolerance(&pred, &y);
        assert!(tol > 0.5 && tol < 5.0, "tolerance {tol}");
        let truth: Vec<f64> = (0..n)
            .map(|i| if i % 20 == 0 { 10.0 } else { 0.0 })
            .collect();
        let w = report(&pred, &y, &truth, tol, tol, 0.5);
        assert_eq!((w.flagged, w.wasteful, w.hits), (10, 10, 10));
        assert!((w.kwh_estimated - 50.0).abs() < 1e-9);
        assert!((w.kwh_true - 50.0).abs() < 1e-9);
        assert_eq!((w.precision, w.recall), (1.0, 1.0));
    }
}
