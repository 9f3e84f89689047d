//! Inputs of the gold jobs, read from silver with DataFrame expressions and
//! turned into kernel arrays per plant.
//!
//! A job's window starts at `from` (everything on a full refresh). Besides
//! the rows in the window it needs what was in force at `from`: each
//! machine's last state before it and its last counter values (the baseline
//! of the first increment), found with `row_number()` over the rows before.
//! A machine's last state lasts until its newest plausible reading (the data
//! horizon, never beyond now), so the running shift shows live figures that
//! the next update refines.

use std::collections::HashMap;

use deltalake::arrow::array::{Array, AsArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::functions_window::expr_fn::row_number;
use deltalake::datafusion::logical_expr::ExprFunctionExt;
use deltalake::datafusion::prelude::{col, lit, Expr};
use deltalake::datafusion::scalar::ScalarValue;

use super::{GoldContext, GoldError};
use crate::assets::{AssetModel, MachineState};
use crate::lake::read::string_column;
use crate::lake::Table;
use crate::pipeline::oee::{self, CounterSamples, IdealCycle, StateEvents};
use crate::time::day_of;
use crate::timeseries::shifts::counter_deltas_tolerant;
use crate::timeseries::{KeyInterner, RowOrder, ShiftCalendar};

/// Rows (asset, ts ms, text, value) read from silver.
#[derive(Debug, Default)]
pub struct Rows {
    pub asset: Vec<String>,
    pub ts: Vec<i64>,
    pub text: Vec<String>,
    pub value: Vec<f64>,
}

/// A timestamp literal (µs, UTC) for an instant in ms.
pub fn ts_lit(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(ms.saturating_mul(1000)),
        Some("UTC".into()),
    ))
}

fn date_lit(ms: i64) -> Expr {
    lit(ScalarValue::Date32(Some(day_of(ms))))
}

/// Timestamps as an Arrow column (µs, UTC).
pub fn us(v: &[i64]) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(v.iter().map(|t| t * 1000).collect::<Vec<_>>())
        .with_timezone("UTC")
}

fn read_err(t: Table) -> impl Fn(deltalake::datafusion::error::DataFusionError) -> GoldError {
    move |source| GoldError::Read {
        table: t.name(),
        source,
    }
}

async fn frame(cx: &GoldContext<'_>, t: Table) -> Result<DataFrame, GoldError> {
    cx.sql.session().table(t.name()).await.map_err(read_err(t))
}

/// Rows of `t` matching `filter` with `ts >= from`, plus the newest row
/// before `from` per `key`; columns `select` = (asset_id, ts, text, value).
async fn windowed(
    cx: &GoldContext<'_>,
    t: Table,
    filter: Expr,
    select: [Expr; 4],
    key: Vec<Expr>,
    from: Option<i64>,
) -> Result<Rows, GoldError> {
    let e = read_err(t);
    let df = frame(cx, t).await?;
    let out = match from {
        None => df
            .filter(filter)
            .map_err(&e)?
            .select(select.to_vec())
            .map_err(&e)?,
        Some(f) => {
            let recent = df
                .clone()
                .filter(
                    filter
                        .clone()
                        .and(col("ts").gt_eq(ts_lit(f)))
                        .and(col("date").gt_eq(date_lit(f))),
                )
                .map_err(&e)?
                .select(select.to_vec())
                .map_err(&e)?;
            let rn = row_number()
                .partition_by(key)
                .order_by(vec![col("ts").sort(false, false)])
                .build()
                .map_err(&e)?
                .alias("rn");
            let before = df
                .filter(filter.and(col("ts").lt(ts_lit(f))))
                .map_err(&e)?
                .window(vec![rn])
                .map_err(&e)?
                .filter(col("rn").eq(lit(1u64)))
                .map_err(&e)?
                .select(select.to_vec())
                .map_err(&e)?;
            recent.union(before).map_err(&e)?
        }
    };
    collect_rows(out, t).await
}

/// Collect (asset_id, ts, text, value) rows.
async fn collect_rows(df: DataFrame, t: Table) -> Result<Rows, GoldError> {
    let batches = df.collect().await.map_err(read_err(t))?;
    let mut out = Rows::default();
    for b in &batches {
        let a = string_column(b, 0)?;
        let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let x = string_column(b, 2)?;
        let v = deltalake::arrow::compute::cast(b.column(3), &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.asset.push(a.value(i).to_string());
            out.ts.push(ts.value(i) / 1000);
            out.text.push(x.value(i).to_string());
            out.value
                .push(if v.is_null(i) { f64::NAN } else { v.value(i) });
        }
    }
    Ok(out)
}

fn event_cols(text: &str) -> [Expr; 4] {
    [col("asset_id"), col("ts"), col(text), col("value")]
}

/// State changes since `from`, plus each asset's state in force at `from`.
pub async fn state_events(cx: &GoldContext<'_>, from: Option<i64>) -> Result<Rows, GoldError> {
    windowed(
        cx,
        Table::SilverAssetEvents,
        col("kind").eq(lit("state")),
        event_cols("code"),
        vec![col("asset_id")],
        from,
    )
    .await
}

/// Rows of `t` matching `filter` with `ts >= from` (all with `None`):
/// (asset_id, ts, `text`, value).
async fn since(
    cx: &GoldContext<'_>,
    t: Table,
    filter: Expr,
    text: &str,
    from: Option<i64>,
) -> Result<Rows, GoldError> {
    let filter = match from {
        Some(f) => filter
            .and(col("ts").gt_eq(ts_lit(f)))
            .and(col("date").gt_eq(date_lit(f))),
        None => filter,
    };
    let df = frame(cx, t)
        .await?
        .filter(filter)
        .and_then(|d| d.select(event_cols(text).to_vec()))
        .map_err(read_err(t))?;
    collect_rows(df, t).await
}

/// Every reading of `assets` since `from` (signal names in `text`).
pub async fn readings_of(
    cx: &GoldContext<'_>,
    assets: &[String],
    from: Option<i64>,
) -> Result<Rows, GoldError> {
    if assets.is_empty() {
        return Ok(Rows::default());
    }
    let list: Vec<Expr> = assets.iter().map(|a| lit(a.as_str())).collect();
    let filter = col("asset_id").in_list(list, false);
    since(cx, Table::SilverReadings, filter, "signal", from).await
}

/// One energy baseline score: the bucket ending at `ts`.
#[derive(Debug, Clone, Copy)]
pub struct EnergyScore {
    pub ts: i64,
    pub expected_kw: f64,
    pub actual_kw: f64,
    /// kW over expected before the bucket counts as waste.
    pub tolerance_kw: f64,
}

/// The champion energy baselines' scores per machine since `from`
/// (`gold.predictions`, written by the twins), in time order.
pub async fn energy_scores(
    cx: &GoldContext<'_>,
    from: Option<i64>,
) -> Result<HashMap<String, Vec<EnergyScore>>, GoldError> {
    let t = Table::GoldPredictions;
    let mut filter = col("role")
        .eq(lit("champion"))
        .and(col("expected_kw").is_not_null())
        .and(col("actual_kw").is_not_null());
    if let Some(f) = from {
        filter = filter
            .and(col("ts").gt_eq(ts_lit(f)))
            .and(col("date").gt_eq(date_lit(f)));
    }
    let df = frame(cx, t)
        .await?
        .filter(filter)
        .and_then(|d| {
            d.select(vec![
                col("asset_id"),
                col("ts"),
                col("expected_kw"),
                col("actual_kw"),
                col("threshold"),
            ])
        })
        .map_err(read_err(t))?;
    let batches = df.collect().await.map_err(read_err(t))?;
    let mut out: HashMap<String, Vec<EnergyScore>> = HashMap::new();
    for b in &batches {
        let a = string_column(b, 0)?;
        let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
        let (e, x, th) = (f(2), f(3), f(4));
        for i in 0..b.num_rows() {
            out.entry(a.value(i).to_string())
                .or_default()
                .push(EnergyScore {
                    ts: ts.value(i) / 1000,
                    expected_kw: e.value(i),
                    actual_kw: x.value(i),
                    tolerance_kw: if th.is_null(i) { 0.0 } else { th.value(i) },
                });
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|s| s.ts);
        // A bucket scored twice (a replay) counts once.
        v.dedup_by_key(|s| s.ts);
    }
    Ok(out)
}

/// Alarms raised since `from`.
pub async fn alarms_raised(cx: &GoldContext<'_>, from: Option<i64>) -> Result<Rows, GoldError> {
    let filter = col("kind").eq(lit("alarm_raised"));
    since(cx, Table::SilverAssetEvents, filter, "code", from).await
}

/// Part counter readings since `from`, plus each counter's last value before.
pub async fn counters(cx: &GoldContext<'_>, from: Option<i64>) -> Result<Rows, GoldError> {
    let mut names: Vec<Expr> = Vec::new();
    let mut seen = Vec::new();
    for a in &cx.model.assets {
        for s in [a.twin.good_counter, a.twin.reject_counter]
            .into_iter()
            .flatten()
        {
            let name = &a.twin.signals[s as usize].name;
            if !seen.contains(name) {
                seen.push(name.clone());
                names.push(lit(name.as_str()));
            }
        }
    }
    if names.is_empty() {
        return Ok(Rows::default());
    }
    windowed(
        cx,
        Table::SilverReadings,
        col("signal").in_list(names, false),
        event_cols("signal"),
        vec![col("asset_id"), col("signal")],
        from,
    )
    .await
}

/// Readings of one signal since `from`.
pub async fn signal_readings(
    cx: &GoldContext<'_>,
    signal: &str,
    from: Option<i64>,
) -> Result<Rows, GoldError> {
    let filter = col("signal").eq(lit(signal));
    since(cx, Table::SilverReadings, filter, "signal", from).await
}

/// Newest plausible reading per asset since `from` (never after `now_ms`):
/// how far each asset's data reaches.
pub async fn horizon(
    cx: &GoldContext<'_>,
    from: Option<i64>,
    now_ms: i64,
) -> Result<HashMap<String, i64>, GoldError> {
    let rows = cx
        .sql
        .lake()
        .newest_ts(
            Table::SilverReadings,
            &["asset_id"],
            from.unwrap_or(0),
            now_ms,
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(mut k, t)| Some((k.pop()?, t)))
        .collect())
}

/// Silver inputs of the shift jobs.
pub struct ShiftInputs {
    pub states: Rows,
    pub counters: Rows,
    pub horizon: HashMap<String, i64>,
}

impl ShiftInputs {
    /// States, counters and horizons for a window from `from`.
    pub async fn read(
        cx: &GoldContext<'_>,
        from: Option<i64>,
        now_ms: i64,
    ) -> Result<ShiftInputs, GoldError> {
        Ok(ShiftInputs {
            states: state_events(cx, from).await?,
            counters: counters(cx, from).await?,
            horizon: horizon(cx, from, now_ms).await?,
        })
    }
}

/// One plant's rows of the inputs, as kernel arrays.
pub struct PlantData {
    pub assets: KeyInterner,
    pub s_keys: Vec<u32>,
    pub s_ts: Vec<i64>,
    pub s_class: Vec<u8>,
    pub c_keys: Vec<u32>,
    pub c_ts: Vec<i64>,
    pub good: Vec<i64>,
    pub reject: Vec<i64>,
    pub good_valid: Vec<bool>,
    pub reject_valid: Vec<bool>,
    pub ideal: Vec<f64>,
}

/// The rows of `plant`, states closed at each asset's data horizon.
pub fn plant_data(inp: &ShiftInputs, model: &AssetModel, plant: &str) -> PlantData {
    let mut d = PlantData {
        assets: KeyInterner::new(),
        s_keys: vec![],
        s_ts: vec![],
        s_class: vec![],
        c_keys: vec![],
        c_ts: vec![],
        good: vec![],
        reject: vec![],
        good_valid: vec![],
        reject_valid: vec![],
        ideal: vec![],
    };
    let in_plant = |id: &str| model.asset(id).filter(|a| a.plant.as_str() == plant);
    let mut idx: Vec<usize> = (0..inp.states.asset.len())
        .filter(|&i| in_plant(&inp.states.asset[i]).is_some())
        .collect();
    idx.sort_by(|&a, &b| {
        (&inp.states.asset[a], inp.states.ts[a]).cmp(&(&inp.states.asset[b], inp.states.ts[b]))
    });
    let mut last: HashMap<u32, i64> = HashMap::new();
    for &i in &idx {
        let k = d.assets.code(&inp.states.asset[i]);
        d.s_keys.push(k);
        d.s_ts.push(inp.states.ts[i]);
        d.s_class
            .push(oee::class_of(MachineState::parse(&inp.states.text[i])));
        last.insert(k, inp.states.ts[i]);
    }
    // Each asset's last state ends at its data horizon.
    for (k, t) in last {
        let name = d.assets.names()[k as usize].clone();
        if let Some(&h) = inp.horizon.get(&name) {
            if h > t {
                d.s_keys.push(k);
                d.s_ts.push(h);
                d.s_class.push(oee::UNPLANNED);
            }
        }
    }
    // Counter samples: one row per (asset, ts) with good and reject columns.
    let mut idx: Vec<usize> = (0..inp.counters.asset.len())
        .filter(|&i| in_plant(&inp.counters.asset[i]).is_some())
        .collect();
    idx.sort_by(|&a, &b| {
        (&inp.counters.asset[a], inp.counters.ts[a])
            .cmp(&(&inp.counters.asset[b], inp.counters.ts[b]))
    });
    for &i in &idx {
        let Some(asset) = in_plant(&inp.counters.asset[i]) else {
            continue;
        };
        let sig = asset.twin.signal(&inp.counters.text[i]);
        let is_good = sig.is_some() && sig == asset.twin.good_counter;
        let is_reject = sig.is_some() && sig == asset.twin.reject_counter;
        if !is_good && !is_reject {
            continue;
        }
        let k = d.assets.code(asset.id.as_str());
        let v = inp.counters.value[i];
        let v = if v.is_finite() { v.round() as i64 } else { 0 };
        d.c_keys.push(k);
        d.c_ts.push(inp.counters.ts[i]);
        d.good.push(if is_good { v } else { 0 });
        d.reject.push(if is_reject { v } else { 0 });
        d.good_valid.push(is_good);
        d.reject_valid.push(is_reject);
        d.ideal
            .push(asset.twin.ideal_cycle_s.map_or(f64::NAN, |s| s * 1000.0));
    }
    d
}

/// OEE per (asset, shift) of one plant's data.
pub fn plant_oee(d: &PlantData, cal: &dyn ShiftCalendar) -> Result<oee::OeeShifts, GoldError> {
    let n = d.assets.len();
    // good and reject come in separate rows: deltas per column, nulls skipped.
    let order = RowOrder::for_rows(&d.c_keys, n, &d.c_ts);
    let dg = counter_deltas_tolerant(&d.c_keys, &d.good, Some(&d.good_valid), n, &order)?;
    let dr = counter_deltas_tolerant(&d.c_keys, &d.reject, Some(&d.reject_valid), n, &order)?;
    // Feed increments as cumulative sums so oee_per_shift's deltas give them back.
    let (mut cg, mut cr) = (vec![0i64; dg.len()], vec![0i64; dr.len()]);
    let mut acc: HashMap<u32, (i64, i64)> = HashMap::new();
    order.for_each(|i| {
        let e = acc.entry(d.c_keys[i]).or_default();
        e.0 += dg[i];
        e.1 += dr[i];
        cg[i] = e.0;
        cr[i] = e.1;
    });
    let st = StateEvents {
        keys: &d.s_keys,
        ts: &d.s_ts,
        class: &d.s_class,
    };
    let ct = CounterSamples {
        keys: &d.c_keys,
        ts: &d.c_ts,
        good: &cg,
        reject: &cr,
        ideal_cycle_ms: IdealCycle::PerRow(&d.ideal),
    };
    Ok(oee::oee_per_shift(&st, &ct, oee::CLASSES, n, cal)?)
}
