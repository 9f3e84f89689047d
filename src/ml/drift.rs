//! Drift of a model's inputs and outputs against its training baseline
//! (like Lakehouse Monitoring): each feature's training distribution is
//! kept in the artifact as a histogram on its training quantiles; live
//! values (the twins' scored rows in `gold.predictions`) are binned the
//! same way and compared with the population stability index (PSI), the
//! Kolmogorov-Smirnov distance (on the bin edges) and the Jensen-Shannon
//! distance (base 2, 0..1), per twin type and per machine, into
//! `gold.drift` on a schedule.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use serde::{Deserialize, Serialize};

use super::registry::Registry;
use super::MlError;
use crate::lake::{Lakehouse, Table};
use crate::query::SqlEngine;

/// A training distribution: bin edges (sorted, distinct) and the share of
/// training values in each of the `edges.len() + 1` bins (`x <= edge`
/// goes left).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub edges: Vec<f64>,
    pub expected: Vec<f64>,
}

/// How far live values moved from the training distribution.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Drift {
    pub n: u64,
    pub psi: f64,
    pub ks: f64,
    pub js: f64,
}

/// PSI at or over this: the population moved (the usual reading: < 0.1
/// stable, 0.1 .. 0.25 some change, > 0.25 a shift worth acting on).
pub const PSI_WARN: f64 = 0.1;
pub const PSI_ALERT: f64 = 0.25;

fn bin(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e < x)
}

impl Profile {
    /// The histogram of `values` on their 5 % quantiles.
    pub fn fit(values: &[f64]) -> Profile {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Profile::default();
        }
        v.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..20)
            .map(|i| v[((v.len() - 1) as f64 * i as f64 / 20.0) as usize])
            .collect();
        edges.dedup();
        let mut counts = vec![0u64; edges.len() + 1];
        for x in &v {
            counts[bin(&edges, *x)] += 1;
        }
        let n = v.len() as f64;
        Profile {
            edges,
            expected: counts.iter().map(|c| *c as f64 / n).collect(),
        }
    }

    /// Compare live `values` with the training distribution.
    pub fn compare(&self, values: &[f64]) -> Drift {
        let mut counts = vec![0u64; self.expected.len()];
        let mut n = 0u64;
        for x in values.iter().filter(|x| x.is_finite()) {
            counts[bin(&self.edges, *x)] += 1;
            n += 1;
        }
        if n == 0 || self.expected.is_empty() {
            return Drift::default();
        }
        // Empty bins get a small share, or PSI would be infinite.
        const EPS: f64 = 1e-4;
        let (mut psi, mut ks, mut js) = (0.0, 0.0f64, 0.0);
        let (mut ce, mut ca) = (0.0, 0.0);
        for (e, c) in self.expected.iter().zip(&counts) {
            let a = *c as f64 / n as f64;
            let (pe, pa) = (e.max(EPS), a.max(EPS));
            psi += (pa - pe) * (pa / pe).ln();
            ce += e;
            ca += a;
            ks = ks.max((ce - ca).abs());
            let m = (e + a) / 2.0;
            if *e > 0.0 {
                js += 0.5 * e * (e / m).log2();
            }
            if a > 0.0 {
                js += 0.5 * a * (a / m).log2();
            }
        }
        Drift {
            n,
            psi,
            ks,
            js: js.max(0.0).sqrt(),
        }
    }
}

/// Training profiles of a model: one per feature, and one of its scores.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    pub features: Vec<Profile>,
    pub score: Profile,
}

/// `OK`, `WARN` or `ALERT` for a PSI.
pub fn status(psi: f64) -> &'static str {
    if psi >= PSI_ALERT {
        "ALERT"
    } else if psi >= PSI_WARN {
        "WARN"
    } else {
        "OK"
    }
}

/// What one drift check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftReport {
    pub rows: usize,
    pub alerts: Vec<String>,
}

struct Out {
    scope: Vec<&'static str>,
    asset: Vec<String>,
    kind: Vec<String>,
    model: Vec<String>,
    version: Vec<i32>,
    feature: Vec<String>,
    n: Vec<i64>,
    psi: Vec<f64>,
    ks: Vec<f64>,
    js: Vec<f64>,
    status: Vec<&'static str>,
}

/// Compare the champions' scored rows of the last `window_ms` with their
/// training baselines, per twin type and per machine; append the results
/// to `gold.drift`. Machines with fewer than `min_rows` rows are left out.
pub async fn check(
    lake: &Arc<Lakehouse>,
    registry: &Registry,
    window_ms: i64,
    now_ms: i64,
    min_rows: usize,
) -> Result<DriftReport, MlError> {
    let preds = crate::lake::TableName::parse("gold.predictions").expect("valid");
    if !lake.exists(&preds) {
        return Ok(DriftReport::default());
    }
    let sql = SqlEngine::new(lake.clone());
    let since = crate::time::rfc3339(now_ms - window_ms);
    let q = format!(
        "SELECT asset_id, twin_type, model, version, coalesce(failure_prob, rul_h, expected_kw) AS score, inputs \
         FROM gold.predictions WHERE role = 'champion' AND inputs IS NOT NULL AND ts >= '{since}'"
    );
    let res = sql
        .query(&q)
        .await
        .map_err(|e| MlError::Data(e.to_string()))?;
    // (model, version) -> asset -> (twin type, scores, inputs)
    type Rows = (String, Vec<f64>, Vec<Vec<f64>>);
    let mut by: HashMap<(String, i32), HashMap<String, Rows>> = HashMap::new();
    for b in &res.batches {
        use super::dataset::{numbers, strings};
        let (asset, kind, model, inputs) = (
            strings(b.column(0))?,
            strings(b.column(1))?,
            strings(b.column(2))?,
            strings(b.column(5))?,
        );
        let (version, score) = (numbers(b.column(3))?, numbers(b.column(4))?);
        for r in 0..b.num_rows() {
            let x: Vec<f64> = serde_json::from_str(&inputs[r]).unwrap_or_default();
            let e = by
                .entry((model[r].clone(), version[r] as i32))
                .or_default()
                .entry(asset[r].clone())
                .or_insert_with(|| (kind[r].clone(), Vec::new(), Vec::new()));
            if score[r].is_finite() {
                e.1.push(score[r]);
            }
            e.2.push(x);
        }
    }
    let mut o = Out {
        scope: vec![],
        asset: vec![],
        kind: vec![],
        model: vec![],
        version: vec![],
        feature: vec![],
        n: vec![],
        psi: vec![],
        ks: vec![],
        js: vec![],
        status: vec![],
    };
    let mut alerts = Vec::new();
    let mut keys: Vec<_> = by.keys().cloned().collect();
    keys.sort();
    for (model, version) in keys {
        let assets = &by[&(model.clone(), version)];
        let Ok(m) = registry.load(&model, version as u32) else {
            continue;
        };
        let Some(base) = m.baseline_profile.as_ref() else {
            continue;
        };
        let kind = assets
            .values()
            .next()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        let mut push = |scope: &'static str, asset: &str, feature: &str, d: Drift| {
            let st = status(d.psi);
            if st == "ALERT" {
                alerts.push(format!(
                    "{model} v{version}: `{feature}` drifted{} (PSI {:.2}, KS {:.2})",
                    if asset.is_empty() {
                        String::new()
                    } else {
                        format!(" on {asset}")
                    },
                    d.psi,
                    d.ks
                ));
            }
            o.scope.push(scope);
            o.asset.push(asset.to_string());
            o.kind.push(kind.clone());
            o.model.push(model.clone());
            o.version.push(version);
            o.feature.push(feature.to_string());
            o.n.push(d.n as i64);
            o.psi.push(d.psi);
            o.ks.push(d.ks);
            o.js.push(d.js);
            o.status.push(st);
        };
        let mut scopes: Vec<(&'static str, String, Vec<&Rows>)> =
            vec![("twin_type", String::new(), assets.values().collect())];
        let mut names: Vec<&String> = assets.keys().collect();
        names.sort();
        for a in names {
            if assets[a].2.len() >= min_rows {
                scopes.push(("asset", a.clone(), vec![&assets[a]]));
            }
        }
        for (scope, asset, rows) in scopes {
            for (i, prof) in base.features.iter().enumerate() {
                let vals: Vec<f64> = rows
                    .iter()
                    .flat_map(|r| r.2.iter().filter_map(|x| x.get(i).copied()))
                    .collect();
                push(scope, &asset, &m.features[i], prof.compare(&vals));
            }
            let scores: Vec<f64> = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
            push(scope, &asset, "_prediction", base.score.compare(&scores));
        }
    }
    let n = o.n.len();
    if n == 0 {
        return Ok(DriftReport::default());
    }
    let ts = |v: i64| {
        Arc::new(
            deltalake::arrow::array::TimestampMicrosecondArray::from(vec![v * 1000; n])
                .with_timezone("UTC"),
        ) as ArrayRef
    };
    let batch = RecordBatch::try_new(
        Table::GoldDrift.arrow_schema(),
        vec![
            ts(now_ms),
            ts(now_ms - window_ms),
            Arc::new(StringArray::from(o.scope)),
            Arc::new(StringArray::from(o.asset)),
            Arc::new(StringArray::from(o.kind)),
            Arc::new(StringArray::from(o.model)),
            Arc::new(Int32Array::from(o.version)),
            Arc::new(StringArray::from(o.feature)),
            Arc::new(Int64Array::from(o.n)),
            Arc::new(Float64Array::from(o.psi)),
            Arc::new(Float64Array::from(o.ks)),
            Arc::new(Float64Array::from(o.js)),
            Arc::new(StringArray::from(o.status)),
        ],
    )
    .map_err(|e| MlError::Data(e.to_string()))?;
    let t = lake
        .open_or_create(Table::GoldDrift)
        .await
        .map_err(|e| MlError::Data(e.to_string()))?;
    t.write(vec![batch])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .map_err(|e| MlError::Data(format!("gold.drift: {e}")))?;
    for a in &alerts {
        tracing::warn!("{a}");
    }
    Ok(DriftReport { rows: n, alerts })
}

/// What the monitor schedule watches.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub every: std::time::Duration,
    /// Drift compares the scores of this window (ms) with the training data.
    pub window_ms: i64,
    /// Days of past predictions whose quality is recomputed (0: none).
    pub quality_days: i64,
}

/// Check drift, and the quality of past predictions, every `m.every` until
/// `stop` (the first check after one period).
pub fn spawn_schedule(
    lake: Arc<Lakehouse>,
    registry: Registry,
    model: Arc<crate::assets::AssetModel>,
    m: Monitor,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(m.every);
        t.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = t.tick() => {}
            }
            let now = crate::time::now_ms();
            match check(&lake, &registry, m.window_ms, now, 6).await {
                Ok(r) => tracing::debug!(rows = r.rows, alerts = r.alerts.len(), "drift checked"),
                Err(e) => tracing::warn!(error = %e, "drift check failed"),
            }
            if m.quality_days > 0 {
                match super::quality::check(&lake, &registry, &model, m.quality_days, now, 8.0)
                    .await
                {
                    Ok(r) => tracing::debug!(rows = r.rows.len(), "prediction quality checked"),
                    Err(e) => tracing::warn!(error = %e, "prediction quality check failed"),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_distribution_is_stable_and_a_shift_is_an_alert() {
        let train: Vec<f64> = (0..10_000)
            .map(|i| ((i * 7919) % 10_000) as f64 / 100.0)
            .collect();
        let p = Profile::fit(&train);
        assert!(p.edges.len() == 19 && (p.expected.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let same: Vec<f64> = (0..3000)
            .map(|i| ((i * 104_729) % 10_000) as f64 / 100.0)
            .collect();
        let d = p.compare(&same);
        assert!(d.psi < 0.02 && d.ks < 0.03 && d.js < 0.05, "{d:?}");
        assert_eq!(status(d.psi), "OK");
        let shifted: Vec<f64> = same.iter().map(|x| x + 30.0).collect();
        let d = p.compare(&shifted);
        assert!(d.psi > PSI_ALERT && d.ks > 0.25 && d.js > 0.3, "{d:?}");
        assert_eq!(status(d.psi), "ALERT");
        // A feature that is mostly one value (downs in a day) keeps sane bins.
        let lumpy: Vec<f64> = (0..1000)
            .map(|i| if i % 10 == 0 { 1.0 } else { 0.0 })
            .collect();
        let p = Profile::fit(&lumpy);
        assert_eq!(p.edges, vec![0.0, 1.0]);
        assert!((p.expected[0] - 0.9).abs() < 1e-9);
        assert!(p.compare(&lumpy).psi.abs() < 1e-9);
        assert_eq!(p.compare(&[]), Drift::default());
    }
}
