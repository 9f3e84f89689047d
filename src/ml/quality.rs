//! The quality of past predictions, once their labels are known: every
//! failure model's live scores in `gold.predictions` (champion and
//! challenger side by side) against the failures that followed, per model,
//! version, role and day, into `gold.model_quality`.
//!
//! A score at `t` is labelled once the horizon after it has passed (or a
//! failure came within it). Failures are the simulator's ground truth when
//! the lake has it, else stops of at least an hour in
//! `silver.asset_events`, as in training. Row figures use the model's
//! threshold; alert figures replay alerts the way the training report does
//! (an alert opens at the first score over the threshold and is true when a
//! failure follows within the horizon; a failure is caught when flagged at
//! least `min_lead_h` ahead).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};

use super::dataset::{load_failures, numbers, strings, Dataset};
use super::metrics::Confusion;
use super::registry::Registry;
use super::train::{alerts, AlertRule};
use super::{MlError, HORIZON_H};
use crate::assets::AssetModel;
use crate::lake::{Lakehouse, Table, TableName};
use crate::query::SqlEngine;

/// One model version's figures over one day.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Quality {
    pub model: String,
    pub version: i32,
    pub role: String,
    pub twin_type: String,
    /// The UTC day of the scores (timestamps).
    pub day: String,
    pub rows: u64,
    pub positives: u64,
    pub flagged: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub alerts: u64,
    pub true_alerts: u64,
    pub failures: u64,
    pub caught: u64,
    pub alert_precision: Option<f64>,
    pub alert_recall: Option<f64>,
}

/// What a check found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QualityReport {
    pub rows: Vec<Quality>,
}

type Key = (String, i32, String, String);

/// Recompute the quality of the failure models' scores of the last `days`
/// days (of timestamps) as of `now_ms`, replacing those days in
/// `gold.model_quality`.
pub async fn check(
    lake: &Arc<Lakehouse>,
    registry: &Registry,
    model: &AssetModel,
    days: i64,
    now_ms: i64,
    min_lead_h: f64,
) -> Result<QualityReport, MlError> {
    let preds = TableName::parse("gold.predictions").expect("valid");
    if !lake.exists(&preds) {
        return Ok(QualityReport::default());
    }
    let day_ms = 86_400_000;
    let from = (now_ms.div_euclid(day_ms) - days.max(1) + 1) * day_ms;
    let sql = SqlEngine::new(lake.clone());
    let q = format!(
        "SELECT asset_id, ts, model, version, role, twin_type, failure_prob, threshold \
         FROM gold.predictions WHERE failure_prob IS NOT NULL AND threshold IS NOT NULL \
         AND ts >= '{}'",
        crate::time::rfc3339(from)
    );
    let res = sql
        .query(&q)
        .await
        .map_err(|e| MlError::Data(e.to_string()))?;
    // (model, version, role, twin type) -> (asset, ts, score, threshold)
    let mut by: BTreeMap<Key, Vec<(String, i64, f64, f64)>> = BTreeMap::new();
    for b in &res.batches {
        let (asset, model_c, role, kind) = (
            strings(b.column(0))?,
            strings(b.column(2))?,
            strings(b.column(4))?,
            strings(b.column(5))?,
        );
        let (ts, version, p, th) = (
            numbers(b.column(1))?,
            numbers(b.column(3))?,
            numbers(b.column(6))?,
            numbers(b.column(7))?,
        );
        for r in 0..b.num_rows() {
            by.entry((
                model_c[r].clone(),
                version[r] as i32,
                role[r].clone(),
                kind[r].clone(),
            ))
            .or_default()
            .push((asset[r].clone(), ts[r] as i64, p[r], th[r]));
        }
    }
    let mut out = Vec::new();
    for ((name, version, role, kind), rows) in by {
        let Some(set) = model.twin_types.get(&kind).and_then(|t| t.features.clone()) else {
            continue;
        };
        let horizon_h = registry
            .load(&name, version as u32)
            .ok()
            .and_then(|m| m.horizon_h)
            .unwrap_or(HORIZON_H);
        let hz_ms = (horizon_h * set.ms_per_hour) as i64;
        // One dataset of the scored rows (no features), failures loaded as in training.
        let mut ds = Dataset {
            ms_per_hour: set.ms_per_hour,
            ..Default::default()
        };
        let mut gi: HashMap<String, u32> = HashMap::new();
        let mut scores = Vec::with_capacity(rows.len());
        let mut thresholds = Vec::with_capacity(rows.len());
        for (a, t, p, th) in rows {
            let g = *gi.entry(a.clone()).or_insert_with(|| {
                ds.groups.push(a);
                ds.groups.len() as u32 - 1
            });
            ds.group.push(g);
            ds.t.push(t);
            ds.y.push(0.0);
            scores.push(p);
            thresholds.push(th);
        }
        load_failures(lake, &sql, &mut ds, 1.0).await?;
        // Labels, where known.
        let mut known = Vec::new();
        for r in 0..ds.t.len() {
            let (g, t) = (ds.group[r] as usize, ds.t[r]);
            let fs = &ds.failures[g];
            if fs.iter().any(|&(s, e, _)| t > s && t <= e) {
                continue; // down
            }
            let next = fs.iter().find(|f| f.0 >= t).map(|f| f.0);
            match next {
                Some(n) if n - t <= hz_ms => {
                    ds.y[r] = 1.0;
                    known.push(r);
                }
                _ if now_ms - t >= hz_ms => known.push(r),
                _ => {}
            }
        }
        let mut per_day: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for r in known {
            per_day
                .entry(ds.t[r].div_euclid(day_ms))
                .or_default()
                .push(r);
        }
        for (day, rs) in per_day {
            let sc: Vec<f64> = rs.iter().map(|&r| scores[r]).collect();
            let labels: Vec<bool> = rs.iter().map(|&r| ds.y[r] > 0.5).collect();
            let th = thresholds[rs[0]];
            let c = Confusion::at(&sc, &labels, th);
            let rule = AlertRule {
                threshold: th,
                horizon_h,
                min_lead_h,
                from: day * day_ms,
                to: ((day + 1) * day_ms).min(now_ms),
            };
            let a = alerts(&ds, &rs, &sc, rule);
            let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
            out.push(Quality {
                model: name.clone(),
                version,
                role: role.clone(),
                twin_type: kind.clone(),
                day: crate::time::rfc3339(day * day_ms)[..10].to_string(),
                rows: rs.len() as u64,
                positives: labels.iter().filter(|&&l| l).count() as u64,
                flagged: sc.iter().filter(|&&s| s >= th).count() as u64,
                precision: ratio(c.tp, c.tp + c.fp),
                recall: ratio(c.tp, c.tp + c.r#fn),
                alerts: a.alerts,
                true_alerts: a.true_alerts,
                failures: a.failures,
                caught: a.caught,
                alert_precision: ratio(a.true_alerts, a.alerts),
                alert_recall: ratio(a.caught, a.failures),
            });
        }
    }
    if !out.is_empty() {
        write(lake, &out, from, now_ms).await?;
    }
    Ok(QualityReport { rows: out })
}

async fn write(lake: &Lakehouse, q: &[Quality], from: i64, now_ms: i64) -> Result<(), MlError> {
    let n = q.len();
    let s = |f: fn(&Quality) -> &str| {
        Arc::new(StringArray::from(q.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let i = |f: fn(&Quality) -> u64| {
        Arc::new(Int64Array::from(
            q.iter().map(|x| f(x) as i64).collect::<Vec<_>>(),
        )) as ArrayRef
    };
    let fl = |f: fn(&Quality) -> Option<f64>| {
        Arc::new(Float64Array::from(q.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let days: Vec<i32> = q
        .iter()
        .map(|x| {
            chrono::NaiveDate::parse_from_str(&x.day, "%Y-%m-%d")
                .map(|d| {
                    (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days()
                        as i32
                })
                .unwrap_or(0)
        })
        .collect();
    let batch = RecordBatch::try_new(
        Table::GoldModelQuality.arrow_schema(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![now_ms * 1000; n]).with_timezone("UTC")),
            Arc::new(Date32Array::from(days)),
            s(|x| &x.model),
            Arc::new(Int32Array::from(
                q.iter().map(|x| x.version).collect::<Vec<_>>(),
            )),
            s(|x| &x.role),
            s(|x| &x.twin_type),
            i(|x| x.rows),
            i(|x| x.positives),
            i(|x| x.flagged),
            fl(|x| x.precision),
            fl(|x| x.recall),
            i(|x| x.alerts),
            i(|x| x.true_alerts),
            i(|x| x.failures),
            i(|x| x.caught),
            fl(|x| x.alert_precision),
            fl(|x| x.alert_recall),
        ],
    )
    .map_err(|e| MlError::Data(e.to_string()))?;
    let since = crate::time::rfc3339(from);
    lake.replace(
        Table::GoldModelQuality,
        vec![batch],
        Some(format!("day >= '{}'", &since[..10])),
    )
    .await
    .map_err(|e| MlError::Data(format!("gold.model_quality: {e}")))?;
    Ok(())
}
