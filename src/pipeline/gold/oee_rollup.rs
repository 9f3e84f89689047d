//! `gold.oee_rollup`: OEE per line and per plant and shift, summed from the
//! machine rows of `gold.oee_shift`. Times, parts and ideal time add up; the
//! ratios are recomputed from the sums, never averaged.
//!
//! Rated and unrated machines are treated alike in every figure: when a
//! line (or plant) has machines with an ideal cycle time (rated: they make
//! parts), all its figures (times, parts, availability, performance,
//! quality) cover exactly those machines, so a compressor neither dilutes
//! availability nor performance. A line of unrated machines only (utilities)
//! reports their times and availability; performance, quality and OEE are
//! null there. `machines` counts the machines the row covers.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use deltalake::arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::prelude::col;

use super::inputs::{ts_lit, us};
use super::{GoldContext, GoldError, GoldJob};
use crate::lake::read::string_column;
use crate::lake::Table;

/// The roll-up job.
pub struct OeeRollup;

#[async_trait]
impl GoldJob for OeeRollup {
    fn kind(&self) -> &'static str {
        "oee_rollup"
    }
    fn target(&self) -> Table {
        Table::GoldOeeRollup
    }
    fn sources(&self) -> &'static [Table] {
        &[Table::GoldOeeShift]
    }
    fn replace_key(&self) -> Option<&'static str> {
        Some("shift_start")
    }
    async fn compute(
        &self,
        cx: &GoldContext<'_>,
        from: Option<i64>,
        now_ms: i64,
    ) -> Result<RecordBatch, GoldError> {
        let t = Table::GoldOeeShift;
        let e = |source| GoldError::Read {
            table: t.name(),
            source,
        };
        let mut df = cx.sql.session().table(t.name()).await.map_err(e)?;
        if let Some(f) = from {
            df = df.filter(col("shift_start").gt_eq(ts_lit(f))).map_err(e)?;
        }
        let batches = df.collect().await.map_err(e)?;
        let mut groups: BTreeMap<Key, Sums> = BTreeMap::new();
        for b in &batches {
            let machine = MachineRows::of(b)?;
            for r in 0..b.num_rows() {
                let (plant, line) = (machine.plant.value(r), machine.line.value(r));
                for level in ["line", "plant"] {
                    let key = Key {
                        level,
                        plant: plant.to_string(),
                        line: if level == "line" {
                            line.to_string()
                        } else {
                            String::new()
                        },
                        start: machine.start.value(r) / 1000,
                    };
                    let s = groups.entry(key).or_default();
                    s.end = machine.end.value(r) / 1000;
                    s.shift = machine.shift.value(r).to_string();
                    let rated = machine.ideal_cycle.is_valid(r);
                    s.add(rated, &machine, r);
                }
            }
        }
        rollup_batch(groups, now_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    level: &'static str,
    plant: String,
    line: String,
    start: i64,
}

/// Times and parts of one group of machines.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    machines: i64,
    planned: i64,
    running: i64,
    idle: i64,
    down: i64,
    setup: i64,
    unknown: i64,
    good: i64,
    reject: i64,
    ideal: f64,
}

#[derive(Debug, Default)]
struct Sums {
    end: i64,
    shift: String,
    rated: Figures,
    all: Figures,
}

impl Sums {
    fn add(&mut self, rated: bool, m: &MachineRows, r: usize) {
        let mut targets = vec![&mut self.all];
        if rated {
            targets.push(&mut self.rated);
        }
        for f in targets {
            f.machines += 1;
            f.planned += m.planned.value(r);
            f.running += m.running.value(r);
            f.idle += m.idle.value(r);
            f.down += m.down.value(r);
            f.setup += m.setup.value(r);
            f.unknown += if m.unknown.is_valid(r) {
                m.unknown.value(r)
            } else {
                0
            };
            f.good += m.good.value(r);
            f.reject += m.reject.value(r);
            f.ideal += m.ideal.value(r);
        }
    }
}

/// The columns of `gold.oee_shift` the roll-up reads.
struct MachineRows {
    plant: StringArray,
    line: StringArray,
    shift: StringArray,
    start: deltalake::arrow::array::TimestampMicrosecondArray,
    end: deltalake::arrow::array::TimestampMicrosecondArray,
    planned: Int64Array,
    running: Int64Array,
    idle: Int64Array,
    down: Int64Array,
    setup: Int64Array,
    unknown: Int64Array,
    good: Int64Array,
    reject: Int64Array,
    ideal: Float64Array,
    ideal_cycle: Float64Array,
}

impl MachineRows {
    fn of(b: &RecordBatch) -> Result<MachineRows, GoldError> {
        let idx = |name: &str| {
            b.schema()
                .index_of(name)
                .map_err(|_| deltalake::arrow::error::ArrowError::SchemaError(name.into()))
        };
        let int = |name: &str| -> Result<Int64Array, GoldError> {
            match b.schema().index_of(name) {
                Ok(i) => Ok(
                    deltalake::arrow::compute::cast(b.column(i), &DataType::Int64)?
                        .as_primitive::<Int64Type>()
                        .clone(),
                ),
                // `unknown_ms` is missing from tables written before it existed.
                Err(_) => Ok(Int64Array::new_null(b.num_rows())),
            }
        };
        let float = |name: &str| -> Result<Float64Array, GoldError> {
            Ok(
                deltalake::arrow::compute::cast(b.column(idx(name)?), &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            )
        };
        let ts = |name: &str| -> Result<_, GoldError> {
            Ok(b.column(idx(name)?)
                .as_primitive::<TimestampMicrosecondType>()
                .clone())
        };
        Ok(MachineRows {
            plant: string_column(b, idx("plant")?)?,
            line: string_column(b, idx("line")?)?,
            shift: string_column(b, idx("shift")?)?,
            start: ts("shift_start")?,
            end: ts("shift_end")?,
            planned: int("planned_ms")?,
            running: int("running_ms")?,
            idle: int("idle_ms")?,
            down: int("down_ms")?,
            setup: int("setup_ms")?,
            unknown: int("unknown_ms")?,
            good: int("good")?,
            reject: int("reject")?,
            ideal: float("ideal_ms")?,
            ideal_cycle: float("ideal_cycle_s")?,
        })
    }
}

fn rollup_batch(groups: BTreeMap<Key, Sums>, now_ms: i64) -> Result<RecordBatch, GoldError> {
    let n = groups.len();
    let mut s: [Vec<String>; 4] = Default::default();
    let mut ts: [Vec<i64>; 2] = Default::default();
    let mut ints: [Vec<i64>; 9] = Default::default();
    let mut ideal = Vec::with_capacity(n);
    let mut ratios: [Vec<Option<f64>>; 4] = Default::default();
    for (k, g) in groups {
        let rated = g.rated.machines > 0;
        let f = if rated { g.rated } else { g.all };
        s[0].push(k.level.to_string());
        s[1].push(k.plant);
        s[2].push(k.line);
        s[3].push(g.shift);
        ts[0].push(k.start);
        ts[1].push(g.end);
        for (col, v) in ints.iter_mut().zip([
            f.machines, f.planned, f.running, f.idle, f.down, f.setup, f.good, f.reject, f.unknown,
        ]) {
            col.push(v);
        }
        ideal.push(f.ideal);
        let a = (f.planned > 0).then(|| f.running as f64 / f.planned as f64);
        let p = (rated && f.running > 0).then(|| f.ideal / f.running as f64);
        let q =
            (rated && f.good + f.reject > 0).then(|| f.good as f64 / (f.good + f.reject) as f64);
        let o = match (a, p, q) {
            (Some(a), Some(p), Some(q)) => Some(a * p * q),
            _ => None,
        };
        for (col, v) in ratios.iter_mut().zip([a, p, q, o]) {
            col.push(v);
        }
    }
    let [level, plant, line, shift] = s;
    let [start, end] = ts;
    let [machines, planned, running, idle, down, setup, good, reject, unknown] = ints;
    let [a, p, q, o] = ratios;
    let st = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let i = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
    let f = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        st(level),
        st(plant),
        st(line),
        Arc::new(us(&start)),
        Arc::new(us(&end)),
        st(shift),
        i(machines),
        i(planned),
        i(running),
        i(idle),
        i(down),
        i(setup),
        i(good),
        i(reject),
        Arc::new(Float64Array::from(ideal)),
        f(a),
        f(p),
        f(q),
        f(o),
        Arc::new(us(&vec![now_ms; n])),
        i(unknown),
    ];
    Ok(RecordBatch::try_new(
        Table::GoldOeeRollup.arrow_schema(),
        cols,
    )?)
}
