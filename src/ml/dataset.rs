//! Training data from the lake, as a dense row-major matrix with a label,
//! a group (the machine, or `--group-by`) and a time per row.
//!
//! * **Built-in features**: `gold.features` of one twin type (long format,
//!   pivoted to one row per machine and bucket), labelled from the failures
//!   that followed each row: `system.sim_failures` (the simulator's ground
//!   truth, causes `wear` and `injected`) when present, else the stops of
//!   `silver.asset_events` that lasted at least `min_down_h` plant hours.
//!   Classification: "a failure starts within `horizon_h`"; regression:
//!   remaining useful life in plant hours (rows with no later failure are
//!   censored and left out). Rows while the machine is down are left out.
//! * **Any table**: `--table layer.name --label COL --features A,B
//!   --group-by UNIT --order-by TIME`, each column cast to a number.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};

use super::MlError;
use crate::lake::{Lakehouse, TableName};
use crate::query::SqlEngine;

/// A training matrix.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub features: Vec<String>,
    /// Row-major, `rows x features.len()`; NaN is missing.
    pub x: Vec<f64>,
    /// Label (0/1 for classification).
    pub y: Vec<f64>,
    /// Group index per row (into `groups`).
    pub group: Vec<u32>,
    pub groups: Vec<String>,
    /// Order key per row (UTC ms for times).
    pub t: Vec<i64>,
    /// Failures (start, end, plant hours down) per group, sorted; empty in
    /// table mode.
    pub failures: Vec<Vec<(i64, i64, f64)>>,
    /// Unplanned stops of any cause in plant hours per group (for the
    /// downtime figure), from the ground truth.
    pub unplanned: Vec<Vec<(i64, f64)>>,
    /// Table versions read (lineage).
    pub sources: Vec<(String, Option<u64>)>,
    /// Timestamp ms per plant hour.
    pub ms_per_hour: f64,
}

impl Dataset {
    pub fn rows(&self) -> usize {
        self.y.len()
    }
    pub fn width(&self) -> usize {
        self.features.len()
    }
    pub fn row(&self, i: usize) -> &[f64] {
        let k = self.width();
        &self.x[i * k..(i + 1) * k]
    }
}

/// How built-in feature rows are labelled.
#[derive(Debug, Clone, Copy)]
pub enum Label {
    /// A failure starts within this many plant hours.
    FailureWithin(f64),
    /// Plant hours until the next failure starts (capped).
    Rul { cap_h: f64 },
    /// The value of the last feature listed, in the same row (which then
    /// leaves the features): the energy baseline's power. Every row with a
    /// value counts, down or not.
    LastFeature,
}

fn sql_err(e: crate::query::QueryError) -> MlError {
    MlError::Data(e.to_string())
}

async fn version_of(lake: &Lakehouse, name: &str) -> Option<u64> {
    lake.open_by_name(name).await.ok().and_then(|t| t.version())
}

/// Numbers of a column (timestamps as UTC ms).
pub(crate) fn numbers(a: &dyn Array) -> Result<Vec<f64>, MlError> {
    match a.data_type() {
        DataType::Timestamp(unit, _) => {
            let div = match unit {
                TimeUnit::Second => 1e-3,
                TimeUnit::Millisecond => 1.0,
                TimeUnit::Microsecond => 1e3,
                TimeUnit::Nanosecond => 1e6,
            };
            let c = cast(a, &DataType::Int64).map_err(|e| MlError::Data(e.to_string()))?;
            let c = c.as_primitive::<Int64Type>();
            Ok((0..c.len())
                .map(|i| {
                    if c.is_null(i) {
                        f64::NAN
                    } else {
                        (c.value(i) as f64 / div).floor()
                    }
                })
                .collect())
        }
        DataType::Boolean => {
            let b = a.as_boolean();
            Ok((0..b.len())
                .map(|i| {
                    if b.is_null(i) {
                        f64::NAN
                    } else {
                        b.value(i) as u8 as f64
                    }
                })
                .collect())
        }
        _ => {
            let c = cast(a, &DataType::Float64).map_err(|e| {
                MlError::Data(format!(
                    "column of type {} is not a number: {e}",
                    a.data_type()
                ))
            })?;
            let c = c.as_primitive::<Float64Type>();
            Ok((0..c.len())
                .map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) })
                .collect())
        }
    }
}

pub(crate) fn strings(a: &dyn Array) -> Result<Vec<String>, MlError> {
    let c = cast(a, &DataType::Utf8).map_err(|e| MlError::Data(e.to_string()))?;
    let c = c.as_string::<i32>();
    Ok((0..c.len())
        .map(|i| {
            if c.is_null(i) {
                String::new()
            } else {
                c.value(i).to_string()
            }
        })
        .collect())
}

/// An identifier for the SQL engine (Databricks dialect: backticks).
fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `gold.features` of `twin_type` (definitions `version`), labelled.
pub async fn from_features(
    lake: &Arc<Lakehouse>,
    twin_type: &str,
    version: u32,
    names: &[String],
    ms_per_hour: f64,
    label: Label,
    min_down_h: f64,
) -> Result<Dataset, MlError> {
    let sql = SqlEngine::new(lake.clone());
    let q = format!(
        "SELECT asset_id, bucket_end, feature, value FROM gold.features \
         WHERE twin_type = {} AND features_version = {version}",
        literal(twin_type)
    );
    let res = sql.query(&q).await.map_err(sql_err)?;
    let col: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let k = names.len();
    let mut ds = Dataset {
        features: names.to_vec(),
        ms_per_hour,
        ..Default::default()
    };
    let mut group_of: HashMap<String, u32> = HashMap::new();
    let mut row_of: HashMap<(u32, i64), usize> = HashMap::new();
    for b in &res.batches {
        let ids = strings(b.column(0))?;
        let ts = numbers(b.column(1))?;
        let fs = strings(b.column(2))?;
        let vs = numbers(b.column(3))?;
        for i in 0..b.num_rows() {
            let Some(&c) = col.get(fs[i].as_str()) else {
                continue;
            };
            let g = match group_of.get(&ids[i]) {
                Some(g) => *g,
                None => {
                    let g = ds.groups.len() as u32;
                    ds.groups.push(ids[i].clone());
                    group_of.insert(ids[i].clone(), g);
                    g
                }
            };
            let t = ts[i] as i64;
            let r = *row_of.entry((g, t)).or_insert_with(|| {
                ds.x.extend(std::iter::repeat_n(f64::NAN, k));
                ds.group.push(g);
                ds.t.push(t);
                ds.y.push(0.0);
                ds.t.len() - 1
            });
            ds.x[r * k + c] = vs[i];
        }
    }
    if ds.t.is_empty() {
        return Err(MlError::Data(format!(
            "gold.features has no rows of twin type `{twin_type}` with features_version {version}: \
             run `ironlake pipeline run features` (or `ironlake simulate --history-days 30`) first"
        )));
    }
    ds.sources.push((
        "gold.features".into(),
        version_of(lake, "gold.features").await,
    ));
    load_failures(lake, &sql, &mut ds, min_down_h).await?;
    label_rows(&mut ds, label);
    Ok(ds)
}

/// Failures per group, from the simulator's ground truth or from the stops
/// in `silver.asset_events`.
pub(crate) async fn load_failures(
    lake: &Arc<Lakehouse>,
    sql: &SqlEngine,
    ds: &mut Dataset,
    min_down_h: f64,
) -> Result<(), MlError> {
    let n = ds.groups.len();
    ds.failures = vec![Vec::new(); n];
    ds.unplanned = vec![Vec::new(); n];
    let gi: HashMap<&str, usize> = ds
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let sim = TableName::parse("system.sim_failures").expect("valid name");
    let mut found = Vec::new();
    if lake.exists(&sim) {
        let res = sql
            .query(
                "SELECT asset_id, started_at, ended_at, cause, plant_hours_down \
                 FROM system.sim_failures",
            )
            .await
            .map_err(sql_err)?;
        for b in &res.batches {
            let (ids, st, en) = (
                strings(b.column(0))?,
                numbers(b.column(1))?,
                numbers(b.column(2))?,
            );
            let (cause, hours) = (strings(b.column(3))?, numbers(b.column(4))?);
            for i in 0..b.num_rows() {
                found.push((
                    ids[i].clone(),
                    st[i] as i64,
                    if en[i].is_nan() {
                        i64::MAX
                    } else {
                        en[i] as i64
                    },
                    hours[i],
                    cause[i] != "minor_stop",
                ));
            }
        }
        ds.sources.push((
            "system.sim_failures".into(),
            version_of(lake, "system.sim_failures").await,
        ));
    } else {
        // DOWN periods from the state events: a stop long enough is a failure.
        let res = sql
            .query(
                "SELECT asset_id, ts, code FROM silver.asset_events \
                 WHERE kind = 'state' ORDER BY asset_id, ts",
            )
            .await
            .map_err(sql_err)?;
        let mut open: HashMap<String, i64> = HashMap::new();
        for b in &res.batches {
            let (ids, ts, val) = (
                strings(b.column(0))?,
                numbers(b.column(1))?,
                strings(b.column(2))?,
            );
            for i in 0..b.num_rows() {
                let t = ts[i] as i64;
                match (val[i].eq_ignore_ascii_case("DOWN"), open.get(&ids[i])) {
                    (true, None) => {
                        open.insert(ids[i].clone(), t);
                    }
                    (false, Some(&t0)) => {
                        let h = (t - t0) as f64 / ds.ms_per_hour;
                        found.push((ids[i].clone(), t0, t, h, h >= min_down_h));
                        open.remove(&ids[i]);
                    }
                    _ => {}
                }
            }
        }
        for (id, t0) in open {
            found.push((id, t0, i64::MAX, f64::NAN, true));
        }
        ds.sources.push((
            "silver.asset_events".into(),
            version_of(lake, "silver.asset_events").await,
        ));
    }
    for (id, s, e, h, failure) in found {
        let Some(&g) = gi.get(id.as_str()) else {
            continue;
        };
        if failure {
            ds.failures[g].push((s, e, h));
        }
        ds.unplanned[g].push((s, if h.is_finite() { h } else { 0.0 }));
    }
    for f in ds.failures.iter_mut() {
        f.sort_by_key(|x| x.0);
    }
    Ok(())
}

/// Label each row from the failures after it; drop rows that cannot be
/// labelled (machine down, or too close to the end of the data to know).
#[allow(clippy::needless_range_loop)]
fn label_rows(ds: &mut Dataset, label: Label) {
    let end = ds.t.iter().copied().max().unwrap_or(0);
    let k = ds.width();
    let mut keep = vec![false; ds.rows()];
    for r in 0..ds.rows() {
        let (g, t) = (ds.group[r] as usize, ds.t[r]);
        if let Label::LastFeature = label {
            let v = ds.x[r * k + k - 1];
            ds.y[r] = v;
            keep[r] = v.is_finite();
            continue;
        }
        let fs = &ds.failures[g];
        if fs.iter().any(|&(s, e, _)| t > s && t <= e) {
            continue; // down (being repaired)
        }
        let next = fs.iter().find(|&&(s, _, _)| s >= t).map(|f| f.0);
        let h = next.map(|n| (n - t) as f64 / ds.ms_per_hour);
        match label {
            Label::FailureWithin(hz) => match h {
                Some(h) if h <= hz => {
                    ds.y[r] = 1.0;
                    keep[r] = true;
                }
                _ if (end - t) as f64 / ds.ms_per_hour >= hz => {
                    ds.y[r] = 0.0;
                    keep[r] = true;
                }
                _ => {}
            },
            Label::Rul { cap_h } => match h {
                Some(h) => {
                    ds.y[r] = h.min(cap_h);
                    keep[r] = true;
                }
                None if (end - t) as f64 / ds.ms_per_hour >= cap_h => {
                    ds.y[r] = cap_h;
                    keep[r] = true;
                }
                None => {}
            },
            Label::LastFeature => unreachable!("labelled above"),
        }
    }
    // The label column leaves the features.
    let kx = if let Label::LastFeature = label {
        ds.features.pop();
        k - 1
    } else {
        k
    };
    let mut x = Vec::with_capacity(ds.x.len());
    let (mut y, mut gr, mut tt) = (Vec::new(), Vec::new(), Vec::new());
    for (r, &k2) in keep.iter().enumerate() {
        if k2 {
            x.extend_from_slice(&ds.x[r * k..r * k + kx]);
            y.push(ds.y[r]);
            gr.push(ds.group[r]);
            tt.push(ds.t[r]);
        }
    }
    (ds.x, ds.y, ds.group, ds.t) = (x, y, gr, tt);
}

/// Any table: `label`, `features`, grouped by `group_by`, ordered by `order_by`.
pub async fn from_table(
    lake: &Arc<Lakehouse>,
    table: &str,
    label: &str,
    features: &[String],
    group_by: Option<&str>,
    order_by: &str,
) -> Result<Dataset, MlError> {
    let name = TableName::parse(table).map_err(|e| MlError::Data(e.to_string()))?;
    if !lake.exists(&name) {
        return Err(MlError::Data(format!("table `{table}` does not exist")));
    }
    if features.is_empty() {
        return Err(MlError::Data("--features: name at least one column".into()));
    }
    let sql = SqlEngine::new(lake.clone());
    let mut cols = vec![
        group_by.map(quote).unwrap_or_else(|| "'all'".into()),
        quote(order_by),
        quote(label),
    ];
    cols.extend(features.iter().map(|f| quote(f)));
    let q = format!("SELECT {} FROM {name}", cols.join(", "));
    let res = sql.query(&q).await.map_err(sql_err)?;
    let mut ds = Dataset {
        features: features.to_vec(),
        ms_per_hour: 3_600_000.0,
        ..Default::default()
    };
    let mut group_of: HashMap<String, u32> = HashMap::new();
    let mut skipped = 0usize;
    for b in &res.batches {
        let b: &RecordBatch = b;
        let g = strings(b.column(0))?;
        let t = numbers(b.column(1))?;
        let y = numbers(b.column(2)).map_err(|e| MlError::Data(format!("--label {label}: {e}")))?;
        let mut fx = Vec::with_capacity(features.len());
        for (i, f) in features.iter().enumerate() {
            fx.push(
                numbers(b.column(3 + i)).map_err(|e| MlError::Data(format!("feature {f}: {e}")))?,
            );
        }
        for r in 0..b.num_rows() {
            if y[r].is_nan() || t[r].is_nan() {
                skipped += 1;
                continue;
            }
            let gi = *group_of.entry(g[r].clone()).or_insert_with(|| {
                ds.groups.push(g[r].clone());
                ds.groups.len() as u32 - 1
            });
            ds.group.push(gi);
            ds.t.push(t[r] as i64);
            ds.y.push(y[r]);
            for c in &fx {
                ds.x.push(c[r]);
            }
        }
    }
    if skipped > 0 {
        tracing::info!(skipped, "rows without a label or an order value left out");
    }
    if ds.rows() == 0 {
        return Err(MlError::Data(format!("`{table}` has no labelled rows")));
    }
    ds.failures = vec![Vec::new(); ds.groups.len()];
    ds.unplanned = vec![Vec::new(); ds.groups.len()];
    ds.sources
        .push((table.to_string(), version_of(lake, table).await));
    Ok(ds)
}
