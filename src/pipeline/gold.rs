//! The gold jobs: OEE and energy per machine and shift, computed from the
//! silver tables with the time-series kernels, in each plant's shift
//! calendar (local time zone, daylight saving included).
//!
//! Inputs are read for a window starting at `from` (all data on a full
//! refresh), plus what was in force at `from`: each machine's last state
//! before it and its last counter values (the baseline of the first
//! increment). A machine's last state lasts until its newest reading (the
//! data horizon), so the running shift shows live figures that the next
//! update refines. Only shifts starting at or after `from` are returned;
//! the caller replaces exactly those rows in the target.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{Float64Type, TimestampMicrosecondType};

use crate::assets::{AssetModel, MachineState};
use crate::lake::read::string_column;
use crate::lake::Table;
use crate::pipeline::oee::{self, CounterSamples, IdealCycle, StateEvents};
use crate::query::{QueryError, SqlEngine};
use crate::timeseries::shifts::counter_deltas;
use crate::timeseries::{integrate_hold, KeyInterner, RowOrder, ShiftCalendar};

/// Errors of the gold jobs.
#[derive(Debug, thiserror::Error)]
pub enum GoldError {
    #[error(transparent)]
    Query(Box<QueryError>),
    #[error(transparent)]
    Kernel(#[from] crate::timeseries::TsError),
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    #[error(transparent)]
    Lake(Box<crate::lake::LakeError>),
}

impl From<QueryError> for GoldError {
    fn from(e: QueryError) -> Self {
        GoldError::Query(Box::new(e))
    }
}

impl From<crate::lake::LakeError> for GoldError {
    fn from(e: crate::lake::LakeError) -> Self {
        GoldError::Lake(Box::new(e))
    }
}

/// A step longer than this is a gap in the power signal (integrates nothing).
const POWER_GAP_MS: i64 = 300_000;

use crate::query::timestamp_literal as ts_sql;

pub(super) fn date_sql(ms: i64) -> String {
    let d = chrono::DateTime::from_timestamp_millis(ms - 86_400_000).unwrap_or_default();
    format!("DATE '{}'", d.format("%Y-%m-%d"))
}

/// Rows (asset, ts ms, text, value) of a query.
#[derive(Debug)]
pub(super) struct Rows {
    pub asset: Vec<String>,
    pub ts: Vec<i64>,
    pub text: Vec<String>,
    pub value: Vec<f64>,
}

pub(super) async fn rows(sql: &SqlEngine, q: &str) -> Result<Rows, GoldError> {
    let r = sql.query(q).await?;
    let mut out = Rows {
        asset: vec![],
        ts: vec![],
        text: vec![],
        value: vec![],
    };
    for b in &r.batches {
        let a = string_column(b, 0)?;
        let t = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let x = string_column(b, 2)?;
        let v = b.column(3).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.asset.push(a.value(i).to_string());
            out.ts.push(t.value(i) / 1000);
            out.text.push(x.value(i).to_string());
            out.value
                .push(if v.is_null(i) { f64::NAN } else { v.value(i) });
        }
    }
    Ok(out)
}

/// Events of `kind_filter` in the window plus the last one before it per key.
pub(super) fn windowed(
    select: &str,
    table: &str,
    filter: &str,
    key: &str,
    from: Option<i64>,
) -> String {
    match from {
        None => format!("SELECT {select} FROM {table} WHERE {filter}"),
        Some(f) => format!(
            "SELECT {select} FROM {table} WHERE {filter} AND ts >= {ts} AND date >= {d} \
             UNION ALL \
             SELECT {select} FROM (SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY ts DESC) AS rn \
                                   FROM {table} WHERE {filter} AND ts < {ts}) WHERE rn = 1",
            ts = ts_sql(f),
            d = date_sql(f),
        ),
    }
}

/// Silver inputs of the gold jobs.
struct Inputs {
    states: Rows,
    counters: Rows,
    horizon: HashMap<String, i64>,
    power: Rows,
}

/// State changes since `from`, plus each asset's state in force at `from`.
pub(super) async fn state_events(sql: &SqlEngine, from: Option<i64>) -> Result<Rows, GoldError> {
    let q = windowed(
        "asset_id, ts, code, value",
        "silver.asset_events",
        "kind = 'state'",
        "asset_id",
        from,
    );
    rows(sql, &q).await
}

async fn inputs(
    sql: &SqlEngine,
    model: &AssetModel,
    from: Option<i64>,
    power: bool,
) -> Result<Inputs, GoldError> {
    let states = state_events(sql, from).await?;
    let mut counter_signals: Vec<String> = Vec::new();
    for a in &model.assets {
        for s in [a.twin.good_counter, a.twin.reject_counter]
            .into_iter()
            .flatten()
        {
            let name = &a.twin.signals[s as usize].name;
            if !counter_signals.contains(name) {
                counter_signals.push(name.clone());
            }
        }
    }
    let list = if counter_signals.is_empty() {
        "''".to_string()
    } else {
        counter_signals
            .iter()
            .map(|s| format!("'{}'", s.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let counters = rows(
        sql,
        &windowed(
            "asset_id, ts, signal, value",
            "silver.readings",
            &format!("signal IN ({list})"),
            "asset_id, signal",
            from,
        ),
    )
    .await?;
    let horizon = horizon(sql, from).await?;
    let power = if power {
        let w = from.map_or(String::new(), |f| {
            format!("AND ts >= {} AND date >= {}", ts_sql(f), date_sql(f))
        });
        rows(sql, &format!("SELECT asset_id, ts, signal, value FROM silver.readings WHERE signal = 'power' {w} ORDER BY ts")).await?
    } else {
        Rows {
            asset: vec![],
            ts: vec![],
            text: vec![],
            value: vec![],
        }
    };
    Ok(Inputs {
        states,
        counters,
        horizon,
        power,
    })
}

/// Newest reading per asset since `from`: how far each asset's data reaches.
pub(super) async fn horizon(
    sql: &SqlEngine,
    from: Option<i64>,
) -> Result<HashMap<String, i64>, GoldError> {
    let window = from.map_or(String::new(), |f| {
        format!("WHERE ts >= {} AND date >= {}", ts_sql(f), date_sql(f))
    });
    let h = sql
        .query(&format!(
            "SELECT asset_id, max(ts) FROM silver.readings {window} GROUP BY asset_id"
        ))
        .await?;
    let mut out = HashMap::new();
    for b in &h.batches {
        let a = string_column(b, 0)?;
        let t = b.column(1).as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            out.insert(a.value(i).to_string(), t.value(i) / 1000);
        }
    }
    Ok(out)
}

/// State classes: RUNNING 0, IDLE 1, DOWN 2, SETUP 3.
fn class_of(code: &str) -> u8 {
    match MachineState::ALL.iter().find(|s| s.as_str() == code) {
        Some(MachineState::Running) => oee::RUNNING,
        Some(MachineState::Idle) => 1,
        Some(MachineState::Down) => 2,
        Some(MachineState::Setup) => 3,
        _ => oee::UNPLANNED,
    }
}

/// One plant's rows of the inputs, as kernel arrays.
struct PlantData {
    assets: KeyInterner,
    s_keys: Vec<u32>,
    s_ts: Vec<i64>,
    s_class: Vec<u8>,
    c_keys: Vec<u32>,
    c_ts: Vec<i64>,
    good: Vec<i64>,
    reject: Vec<i64>,
    good_valid: Vec<bool>,
    reject_valid: Vec<bool>,
    ideal: Vec<f64>,
}

fn plant_data(inp: &Inputs, model: &AssetModel, plant: &str) -> PlantData {
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
    // States sorted per asset by time, closed at the asset's data horizon.
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
        d.s_class.push(class_of(&inp.states.text[i]));
        last.insert(k, inp.states.ts[i]);
    }
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

pub(super) fn us(v: &[i64]) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(v.iter().map(|t| t * 1000).collect::<Vec<_>>())
        .with_timezone("UTC")
}

/// `gold.oee_shift` rows for shifts starting at or after `from`.
pub async fn oee_shift(
    sql: &SqlEngine,
    model: &AssetModel,
    from: Option<i64>,
    now_ms: i64,
) -> Result<RecordBatch, GoldError> {
    let inp = inputs(sql, model, from, false).await?;
    let mut cols = OeeCols::default();
    for plant in &model.plants {
        let cal = plant.shift_calendar();
        let d = plant_data(&inp, model, plant.id.as_str());
        if d.assets.is_empty() {
            continue;
        }
        let n = d.assets.len();
        let o = plant_oee(&d, n, &cal)?;
        for r in 0..o.key.len() {
            if from.is_some_and(|f| o.shift_start[r] < f) {
                continue;
            }
            let name = &d.assets.names()[o.key[r] as usize];
            let asset = model.asset(name);
            let line = asset.map_or("", |a| a.line.as_str());
            let ideal = asset.and_then(|a| a.twin.ideal_cycle_s);
            cols.push(
                plant.id.as_str(),
                line,
                name,
                &o,
                r,
                cal.shift(o.shift_start[r]).2,
                ideal,
            );
        }
    }
    cols.finish(now_ms)
}

fn plant_oee(
    d: &PlantData,
    n: usize,
    cal: &dyn ShiftCalendar,
) -> Result<oee::OeeShifts, GoldError> {
    // good and reject come in separate rows: deltas per column, nulls skipped.
    let order = RowOrder::for_rows(&d.c_keys, n, &d.c_ts);
    let dg = counter_deltas(&d.c_keys, &d.good, Some(&d.good_valid), n, &order)?;
    let dr = counter_deltas(&d.c_keys, &d.reject, Some(&d.reject_valid), n, &order)?;
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
    Ok(oee::oee_per_shift(&st, &ct, 4, n, cal)?)
}

#[derive(Default)]
struct OeeCols {
    plant: Vec<String>,
    line: Vec<String>,
    asset: Vec<String>,
    start: Vec<i64>,
    end: Vec<i64>,
    shift: Vec<String>,
    planned: Vec<i64>,
    running: Vec<i64>,
    idle: Vec<i64>,
    down: Vec<i64>,
    setup: Vec<i64>,
    good: Vec<i64>,
    reject: Vec<i64>,
    ideal: Vec<f64>,
    speed_loss: Vec<Option<f64>>,
    cycle: Vec<Option<f64>>,
    ideal_cycle: Vec<Option<f64>>,
    a: Vec<Option<f64>>,
    p: Vec<Option<f64>>,
    q: Vec<Option<f64>>,
    oee: Vec<Option<f64>>,
}

fn opt(a: &Float64Array, r: usize) -> Option<f64> {
    a.is_valid(r).then(|| a.value(r))
}

impl OeeCols {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        plant: &str,
        line: &str,
        asset: &str,
        o: &oee::OeeShifts,
        r: usize,
        shift: &str,
        ideal_cycle_s: Option<f64>,
    ) {
        let parts = o.good[r] + o.reject[r];
        // Actual cycle time: running time per part made.
        self.cycle
            .push((parts > 0).then(|| o.running_ms[r] as f64 / parts as f64 / 1000.0));
        self.ideal_cycle.push(ideal_cycle_s);
        self.plant.push(plant.into());
        self.line.push(line.into());
        self.asset.push(asset.into());
        self.start.push(o.shift_start[r]);
        self.end.push(o.shift_end[r]);
        self.shift.push(shift.into());
        self.planned.push(o.planned_ms[r]);
        self.running.push(o.running_ms[r]);
        self.idle.push(o.state_ms[1][r]);
        self.down.push(o.state_ms[2][r]);
        self.setup.push(o.state_ms[3][r]);
        self.good.push(o.good[r]);
        self.reject.push(o.reject[r]);
        let ideal = if o.ideal_ms[r].is_nan() {
            0.0
        } else {
            o.ideal_ms[r]
        };
        self.ideal.push(ideal);
        self.speed_loss
            .push((!o.ideal_ms[r].is_nan()).then(|| o.running_ms[r] as f64 - o.ideal_ms[r]));
        self.a.push(opt(&o.availability, r));
        self.p.push(opt(&o.performance, r));
        self.q.push(opt(&o.quality, r));
        self.oee.push(opt(&o.oee, r));
    }

    fn finish(self, now_ms: i64) -> Result<RecordBatch, GoldError> {
        let n = self.plant.len();
        let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
        let i = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        let f = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            s(self.plant),
            s(self.line),
            s(self.asset),
            Arc::new(us(&self.start)),
            Arc::new(us(&self.end)),
            s(self.shift),
            i(self.planned),
            i(self.running),
            i(self.idle),
            i(self.down),
            i(self.setup),
            i(self.good),
            i(self.reject),
            Arc::new(Float64Array::from(self.ideal)),
            f(self.speed_loss),
            f(self.cycle),
            f(self.ideal_cycle),
            f(self.a),
            f(self.p),
            f(self.q),
            f(self.oee),
            Arc::new(us(&vec![now_ms; n])),
        ];
        Ok(RecordBatch::try_new(
            Table::GoldOeeShift.arrow_schema(),
            cols,
        )?)
    }
}

/// `gold.energy_shift` rows for shifts starting at or after `from`.
pub async fn energy_shift(
    sql: &SqlEngine,
    model: &AssetModel,
    from: Option<i64>,
    now_ms: i64,
) -> Result<RecordBatch, GoldError> {
    let inp = inputs(sql, model, from, true).await?;
    let (mut plant_c, mut line_c, mut asset_c, mut start_c, mut end_c, mut shift_c) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut kwh_c, mut idle_c, mut good_c, mut per_c, mut n_c) =
        (vec![], vec![], vec![], vec![], vec![]);
    for plant in &model.plants {
        let cal = plant.shift_calendar();
        let d = plant_data(&inp, model, plant.id.as_str());
        // Good parts per shift, from the OEE computation of the same window.
        let mut good_by_shift: HashMap<(u32, i64), i64> = HashMap::new();
        if !d.c_keys.is_empty() {
            let o = plant_oee(&d, d.assets.len(), &cal)?;
            for r in 0..o.key.len() {
                good_by_shift.insert((o.key[r], o.shift_start[r]), o.good[r]);
            }
        }
        // Power rows of this plant, keyed in the same code space as the states.
        let mut interner = d.assets;
        let (mut pk, mut pt, mut pv) = (vec![], vec![], vec![]);
        for i in 0..inp.power.asset.len() {
            if model
                .asset(&inp.power.asset[i])
                .is_some_and(|a| a.plant.as_str() == plant.id.as_str())
            {
                pk.push(interner.code(&inp.power.asset[i]));
                pt.push(inp.power.ts[i]);
                pv.push(inp.power.value[i]);
            }
        }
        if pk.is_empty() {
            continue;
        }
        let n = interner.len();
        let order = RowOrder::for_rows(&pk, n, &pt);
        let power = Float64Array::from(pv);
        let e = integrate_hold(&pk, &pt, &power, n, &order, POWER_GAP_MS, 3_600_000.0)?;
        // The machine's state at each power sample: backward as-of join.
        let m = crate::timeseries::asof_join(
            &pk,
            &pt,
            &d.s_keys,
            &d.s_ts,
            n,
            crate::timeseries::AsofDirection::Backward,
            None,
        )?;
        let mut acc: HashMap<(u32, i64), (i64, f64, f64, i64)> = HashMap::new();
        for i in 0..pk.len() {
            let (start, end) = cal.shift_at(pt[i]);
            let en = e.value(i);
            let running = m[i] != u32::MAX && d.s_class[m[i] as usize] == oee::RUNNING;
            let a = acc.entry((pk[i], start)).or_insert((end, 0.0, 0.0, 0));
            a.1 += en;
            if !running {
                a.2 += en;
            }
            a.3 += 1;
        }
        let mut keys: Vec<_> = acc.into_iter().collect();
        keys.sort_by_key(|((k, s), _)| (*k, *s));
        for ((k, start), (end, kwh, idle, samples)) in keys {
            if from.is_some_and(|f| start < f) {
                continue;
            }
            let name = interner.names()[k as usize].clone();
            let good = good_by_shift.get(&(k, start)).copied().unwrap_or(0);
            plant_c.push(plant.id.as_str().to_string());
            line_c.push(
                model
                    .asset(&name)
                    .map_or(String::new(), |a| a.line.as_str().to_string()),
            );
            asset_c.push(name);
            start_c.push(start);
            end_c.push(end);
            shift_c.push(cal.shift(start).2.to_string());
            kwh_c.push(kwh);
            idle_c.push(idle);
            good_c.push(good);
            per_c.push((good > 0).then(|| kwh / good as f64));
            n_c.push(samples);
        }
    }
    let n = plant_c.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(plant_c)),
        Arc::new(StringArray::from(line_c)),
        Arc::new(StringArray::from(asset_c)),
        Arc::new(us(&start_c)),
        Arc::new(us(&end_c)),
        Arc::new(StringArray::from(shift_c)),
        Arc::new(Float64Array::from(kwh_c)),
        Arc::new(Float64Array::from(idle_c)),
        Arc::new(Int64Array::from(good_c)),
        Arc::new(Float64Array::from(per_c)),
        Arc::new(Int64Array::from(n_c)),
        Arc::new(us(&vec![now_ms; n])),
    ];
    Ok(RecordBatch::try_new(
        Table::GoldEnergyShift.arrow_schema(),
        cols,
    )?)
}

/// `gold.oee_rollup`: OEE per line and per plant and shift, summed from the
/// machine rows of `gold.oee_shift` (times, parts and ideal time add up; the
/// ratios are recomputed from the sums, never averaged). Performance counts
/// only the running time of machines that have an ideal cycle time (a
/// compressor makes no parts and must not dilute it).
pub async fn oee_rollup(
    sql: &SqlEngine,
    from: Option<i64>,
    now_ms: i64,
) -> Result<RecordBatch, GoldError> {
    let window = from.map_or(String::new(), |f| {
        format!("WHERE shift_start >= {}", ts_sql(f))
    });
    let sums =
        "count(*) AS machines, sum(planned_ms) AS planned_ms, sum(running_ms) AS running_ms, \
                sum(idle_ms) AS idle_ms, sum(down_ms) AS down_ms, sum(setup_ms) AS setup_ms, \
                sum(good) AS good, sum(reject) AS reject, sum(ideal_ms) AS ideal_ms, \
                sum(CASE WHEN ideal_cycle_s IS NOT NULL THEN running_ms ELSE 0 END) AS rated_running_ms";
    let q = format!(
        "WITH s AS ( \
           SELECT 'line' AS level, plant, line, shift_start, shift_end, shift, {sums} FROM gold.oee_shift {window} \
             GROUP BY plant, line, shift_start, shift_end, shift \
           UNION ALL \
           SELECT 'plant' AS level, plant, '' AS line, shift_start, shift_end, shift, {sums} FROM gold.oee_shift {window} \
             GROUP BY plant, shift_start, shift_end, shift) \
         SELECT level, plant, line, shift_start, shift_end, shift, machines, planned_ms, running_ms, idle_ms, down_ms, \
           setup_ms, good, reject, ideal_ms, \
           CAST(running_ms AS DOUBLE) / NULLIF(planned_ms, 0) AS availability, \
           ideal_ms / NULLIF(CAST(rated_running_ms AS DOUBLE), 0) AS performance, \
           CAST(good AS DOUBLE) / NULLIF(good + reject, 0) AS quality \
         FROM s ORDER BY level, plant, line, shift_start"
    );
    let r = sql.query(&q).await?;
    let b = deltalake::arrow::compute::concat_batches(&r.schema, &r.batches)?;
    let n = b.num_rows();
    let f = |name: &str| -> Result<Float64Array, GoldError> {
        let c = b
            .column_by_name(name)
            .ok_or_else(|| deltalake::arrow::error::ArrowError::SchemaError(name.into()))?;
        Ok(
            deltalake::arrow::compute::cast(c, &deltalake::arrow::datatypes::DataType::Float64)?
                .as_primitive::<Float64Type>()
                .clone(),
        )
    };
    let (a, p, q) = (f("availability")?, f("performance")?, f("quality")?);
    let oee: Float64Array = (0..n)
        .map(|i| {
            (a.is_valid(i) && p.is_valid(i) && q.is_valid(i))
                .then(|| a.value(i) * p.value(i) * q.value(i))
        })
        .collect();
    let schema = Table::GoldOeeRollup.arrow_schema();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let c: ArrayRef = match field.name().as_str() {
            "oee" => Arc::new(oee.clone()),
            "computed_at" => Arc::new(us(&vec![now_ms; n])),
            name => {
                let c = b
                    .column_by_name(name)
                    .ok_or_else(|| deltalake::arrow::error::ArrowError::SchemaError(name.into()))?;
                deltalake::arrow::compute::cast(c, field.data_type())?
            }
        };
        cols.push(c);
    }
    Ok(RecordBatch::try_new(schema, cols)?)
}
