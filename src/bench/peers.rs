//! `ironlake bench --data DIR --workload W --json`: the peer workloads of
//! `../shared/bench/WORKLOADS.md` (W0-W7), run on ironlake's own readers and
//! time-series kernels, so that `peers_bench.py` can time ironlake beside
//! polars, DuckDB and pandas on the same files with the same checksums.
//!
//! Inputs are loaded untimed (W1-W5: Parquet into one Arrow batch per
//! table); the timed region runs from data in memory to a materialised
//! result (Arrow arrays); the checksum is computed after, untimed. The last
//! line printed is `{"workload": "W3", "seconds": ..., "checksum": {...}}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use deltalake::arrow::compute::{cast, concat_batches, take};
use deltalake::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType,
};
use serde_json::{json, Map, Value};

use crate::connectors::files::{self, ColumnKind, FileColumn, FileSchema};
use crate::pipeline::oee::{self, CounterSamples, IdealCycle, StateEvents};
use crate::timeseries::{
    asof_join, dedup_first, integrate_hold, rolling, windows, AsofDirection, FixedShifts,
    KeyInterner, Keys, RollingSpec, RollingStats, RowOrder, WindowFrame, WindowSpec,
};

/// The five signals of the telemetry data set, with their valid ranges (W1).
pub const SIGNALS: [(&str, f64, f64); 5] = [
    ("temperature_c", -40.0, 200.0),
    ("vibration_mm_s", 0.0, 100.0),
    ("current_a", 0.0, 1000.0),
    ("power_kw", 0.0, 1000.0),
    ("spindle_rpm", 0.0, 30000.0),
];
const EPOCH_2024_MS: i64 = 1_704_067_200_000;
const WINDOW_N: usize = 60;
const Z_LIMIT: f64 = 3.0;
const Z_STD_EPS: f64 = 1e-5;
const GAP_MS: i64 = 5_000;
const SHIFT_MS: i64 = 8 * 3_600_000;
const IDEAL_CYCLE_MS: f64 = 30_000.0;
const MS_PER_H: f64 = 3_600_000.0;

/// Workload names.
pub const WORKLOADS: [&str; 8] = ["W0", "W1", "W2", "W3", "W4", "W5", "W6", "W7"];

/// Run one workload on the data set in `dir`; print the result (the JSON
/// document as the last line when `json`).
pub fn run(dir: &Path, workload: &str, json: bool, warmup: usize) -> Result<()> {
    let w = workload.to_ascii_uppercase();
    if !WORKLOADS.contains(&w.as_str()) {
        bail!(
            "unknown workload `{workload}`: expected one of {}",
            WORKLOADS.join(", ")
        );
    }
    let threads = files::default_threads();
    let (seconds, checksum) = match w.as_str() {
        "W0" => {
            let path = dir.join("telemetry.parquet");
            let (s, out) = timed(warmup, || read_parquet(&path, threads))?;
            (s, telemetry_checksum(&out)?)
        }
        "W1" => {
            let tele = load(dir, "telemetry", threads)?;
            let (s, out) = timed(warmup, || w1(&tele))?;
            (s, telemetry_checksum(&[out])?)
        }
        "W2" => {
            let silver = load(dir, "silver", threads)?;
            let states = load(dir, "states", threads)?;
            let (s, out) = timed(warmup, || w2(&silver, &states))?;
            (s, w2_checksum(&out)?)
        }
        "W3" => {
            let silver = load(dir, "silver", threads)?;
            let (s, out) = timed(warmup, || w3(&silver))?;
            (s, w3_checksum(&out)?)
        }
        "W4" => {
            let silver = load(dir, "silver", threads)?;
            let (s, out) = timed(warmup, || w4(&silver))?;
            (s, w4_checksum(&out)?)
        }
        "W5" => {
            let states = load(dir, "states", threads)?;
            let counts = load(dir, "counts", threads)?;
            let (s, out) = timed(warmup, || w5(&states, &counts))?;
            (s, w5_checksum(&out))
        }
        "W6" => {
            let path = dir.join("telemetry.jsonl");
            let schema = telemetry_file_schema(true);
            let (s, out) = timed(warmup, || Ok(files::read_jsonl(&path, &schema, threads)?))?;
            check_rejected(&out)?;
            (s, telemetry_checksum(&out.batches)?)
        }
        _ => {
            let path = dir.join("telemetry.csv");
            let schema = telemetry_file_schema(false);
            let (s, out) = timed(warmup, || Ok(files::read_csv(&path, &schema, threads)?))?;
            check_rejected(&out)?;
            (s, telemetry_checksum(&out.batches)?)
        }
    };
    let doc = json!({"workload": w, "seconds": seconds, "checksum": Value::Object(checksum)});
    if json {
        println!("{doc}");
    } else {
        println!("{w}: {seconds:.3} s");
        println!("{}", serde_json::to_string_pretty(&doc["checksum"])?);
    }
    Ok(())
}

/// Run `f` `warmup` times untimed (dropping the results), then once timed.
/// The warm-up leaves the process as a long-running engine is: allocator
/// arenas and page tables in place, as the peers' Python processes have them
/// from their earlier loads and repeats.
fn timed<T>(warmup: usize, f: impl Fn() -> Result<T>) -> Result<(f64, T)> {
    for _ in 0..warmup {
        drop(f()?);
    }
    let t = Instant::now();
    let out = f()?;
    Ok((t.elapsed().as_secs_f64(), out))
}

fn check_rejected(p: &files::ParsedFile) -> Result<()> {
    if let Some(r) = p.rejected.first() {
        bail!(
            "{} lines rejected; first at byte {}: {}",
            p.rejected.len(),
            r.offset,
            r.reason
        );
    }
    Ok(())
}

/// The telemetry file schema of W6 (JSON: `machine`, `signals.*`) and W7 (CSV).
fn telemetry_file_schema(jsonl: bool) -> FileSchema {
    let mut columns = vec![
        FileColumn::new(
            "machine_id",
            if jsonl { "machine" } else { "machine_id" },
            ColumnKind::Text,
            false,
        ),
        FileColumn::new("ts", "ts", ColumnKind::Timestamp, false),
        FileColumn::new("plant", "plant", ColumnKind::Text, false),
        FileColumn::new("line", "line", ColumnKind::Text, false),
    ];
    for (s, _, _) in SIGNALS {
        let src = if jsonl {
            format!("signals.{s}")
        } else {
            s.to_string()
        };
        columns.push(FileColumn::new(s, &src, ColumnKind::Float, true));
    }
    FileSchema::new(columns)
}

/// Read a Parquet file into Arrow batches with `threads` readers (the
/// engine's reader, [`files::read_parquet_table`]).
pub fn read_parquet(path: &Path, threads: usize) -> Result<Vec<RecordBatch>> {
    Ok(files::read_parquet_table(path, threads)?)
}

/// An input table in memory: one batch.
fn load(dir: &Path, table: &str, threads: usize) -> Result<RecordBatch> {
    let path: PathBuf = dir.join(format!("{table}.parquet"));
    let batches = read_parquet(&path, threads)?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| anyhow!("{}: no rows", path.display()))?;
    let b = concat_batches(&schema, &batches)?;
    // The workloads compute on epoch milliseconds.
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in schema.fields().iter().zip(b.columns()) {
        match f.data_type() {
            DataType::Timestamp(u, tz) if *u != TimeUnit::Millisecond => {
                let t = DataType::Timestamp(TimeUnit::Millisecond, tz.clone());
                cols.push(cast(c, &t)?);
                fields.push(Field::new(f.name(), t, f.is_nullable()));
            }
            // Text as one compact dictionary (each distinct value once), as
            // a table kept in memory is: batches of different row groups
            // concatenated repeat every dictionary (38 row groups x 100,000
            // machine ids), and a plain column would be hashed per row.
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(..) => {
                let t = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                cols.push(cast(&cast(c, &DataType::Utf8)?, &t)?);
                fields.push(Field::new(f.name(), t, f.is_nullable()));
            }
            _ => {
                cols.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| anyhow!("input has no column `{name}`"))
}

fn ts_ms(b: &RecordBatch) -> Result<&[i64]> {
    Ok(column(b, "ts")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| anyhow!("column `ts` is not a timestamp[ms]"))?
        .values())
}

fn f64_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Float64Array> {
    column(b, name)?
        .as_primitive_opt::<Float64Type>()
        .ok_or_else(|| anyhow!("column `{name}` is not float64"))
}

fn i64_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    column(b, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| anyhow!("column `{name}` is not int64"))
}

// ------------------------------------------------------------------ workloads

/// W1: range/NaN filter, then the first row of every (machine, ts).
pub fn w1(t: &RecordBatch) -> Result<RecordBatch> {
    let keys = Keys::from_array("machine_id", column(t, "machine_id")?)?;
    let ts = ts_ms(t)?;
    let n = t.num_rows();
    let mut ok = vec![true; n];
    for (name, lo, hi) in SIGNALS {
        let c = f64_col(t, name)?;
        let v = c.values();
        match c.nulls() {
            None => ok
                .iter_mut()
                .zip(v.iter())
                .for_each(|(o, &x)| *o &= x >= lo && x <= hi),
            Some(nb) => ok
                .iter_mut()
                .enumerate()
                .for_each(|(i, o)| *o &= nb.is_valid(i) && v[i] >= lo && v[i] <= hi),
        }
    }
    let keep = dedup_first(&keys.codes, ts, keys.len(), Some(&ok))?;
    let idx = UInt32Array::from(keep);
    let cols = t
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &idx, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(t.schema(), cols)?)
}

/// W2: backward as-of join of silver with the machine's state.
pub fn w2(silver: &RecordBatch, states: &RecordBatch) -> Result<RecordBatch> {
    let mut interner = KeyInterner::new();
    let rk = interner.intern("machine_id", column(states, "machine_id")?)?;
    let lk = interner.intern("machine_id", column(silver, "machine_id")?)?;
    let m = asof_join(
        &lk,
        ts_ms(silver)?,
        &rk,
        ts_ms(states)?,
        interner.len(),
        AsofDirection::Backward,
        None,
    )?;
    let idx = UInt32Array::from_iter(m.iter().map(|&i| (i != u32::MAX).then_some(i)));
    let mut extra = Vec::new();
    for (name, out) in [
        ("state", "state"),
        ("product_code", "product_code"),
        ("ts", "state_ts"),
    ] {
        extra.push((out, take(column(states, name)?.as_ref(), &idx, None)?));
    }
    with_columns(silver, extra)
}

/// W3: rolling 60-row mean/std of vibration per machine and its z-score.
pub fn w3(silver: &RecordBatch) -> Result<RecordBatch> {
    let keys = Keys::from_array("machine_id", column(silver, "machine_id")?)?;
    let ts = ts_ms(silver)?;
    let vib = f64_col(silver, "vibration_mm_s")?;
    let order = RowOrder::parallel(&keys.codes, keys.len(), ts);
    let spec = RollingSpec {
        frame: WindowFrame::Rows(WINDOW_N),
        min_periods: WINDOW_N,
    };
    let stats = RollingStats {
        mean: true,
        std: true,
        ..Default::default()
    };
    let r = rolling(&keys.codes, ts, vib, keys.len(), &order, spec, stats)?;
    let (mean, std) = (r.mean.unwrap_or_else(empty), r.std.unwrap_or_else(empty));
    let z: Float64Array = (0..vib.len())
        .map(|i| {
            (std.is_valid(i) && std.value(i) > Z_STD_EPS)
                .then(|| (vib.value(i) - mean.value(i)) / std.value(i))
        })
        .collect();
    with_columns(
        silver,
        vec![
            ("vib_mean", Arc::new(mean) as ArrayRef),
            ("vib_std", Arc::new(std)),
            ("z", Arc::new(z)),
        ],
    )
}

/// `batch` with nullable columns appended (the input's columns are shared, not copied).
fn with_columns(batch: &RecordBatch, extra: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    for (name, c) in extra {
        fields.push(Field::new(name, c.data_type().clone(), true));
        cols.push(c);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn empty() -> Float64Array {
    Float64Array::from(Vec::<f64>::new())
}

/// W4: 1-minute tumbling aggregates of temperature and power, and energy.
pub fn w4(silver: &RecordBatch) -> Result<RecordBatch> {
    let keys = Keys::from_array("machine_id", column(silver, "machine_id")?)?;
    let ts = ts_ms(silver)?;
    let temp = f64_col(silver, "temperature_c")?;
    let power = f64_col(silver, "power_kw")?;
    let order = RowOrder::parallel(&keys.codes, keys.len(), ts);
    let e = integrate_hold(&keys.codes, ts, power, keys.len(), &order, GAP_MS, MS_PER_H)?;
    let w = windows(
        &keys.codes,
        ts,
        &[temp, power, &e],
        keys.len(),
        &order,
        WindowSpec::tumbling(60_000),
    )?;
    let names = StringArray::from_iter_values(keys.names.iter());
    let machine = take(&names, &UInt32Array::from(w.key.clone()), None)?;
    let (t, p, en) = (&w.columns[0], &w.columns[1], &w.columns[2]);
    let ws = deltalake::arrow::array::TimestampMillisecondArray::from(w.start.clone());
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("machine_id", machine),
        ("window_start", Arc::new(ws)),
        ("temp_avg", Arc::new(t.mean())),
        ("temp_min", Arc::new(t.min_array())),
        ("temp_max", Arc::new(t.max_array())),
        (
            "temp_count",
            Arc::new(Int64Array::from_iter_values(
                t.count.iter().map(|&c| c as i64),
            )),
        ),
        ("power_avg", Arc::new(p.mean())),
        ("power_min", Arc::new(p.min_array())),
        ("power_max", Arc::new(p.max_array())),
        (
            "power_count",
            Arc::new(Int64Array::from_iter_values(
                p.count.iter().map(|&c| c as i64),
            )),
        ),
        ("energy_kwh", Arc::new(Float64Array::from(en.sum.clone()))),
    ];
    Ok(RecordBatch::try_from_iter(cols)?)
}

/// W5: OEE per machine per 8-hour shift.
pub fn w5(states: &RecordBatch, counts: &RecordBatch) -> Result<oee::OeeShifts> {
    let mut interner = KeyInterner::new();
    let sk = interner.intern("machine_id", column(states, "machine_id")?)?;
    let ck = interner.intern("machine_id", column(counts, "machine_id")?)?;
    let state = Keys::from_array("state", column(states, "state")?)?;
    let class_of: Vec<u8> = state
        .names
        .iter()
        .map(|s| oee::class_of(crate::assets::MachineState::parse(s)))
        .collect();
    let class: Vec<u8> = state
        .codes
        .iter()
        .map(|&c| class_of.get(c as usize).copied().unwrap_or(oee::UNPLANNED))
        .collect();
    let st = StateEvents {
        keys: &sk,
        ts: ts_ms(states)?,
        class: &class,
    };
    let ct = CounterSamples {
        keys: &ck,
        ts: ts_ms(counts)?,
        good: i64_col(counts, "good_count")?.values(),
        reject: i64_col(counts, "reject_count")?.values(),
        ideal_cycle_ms: IdealCycle::Constant(IDEAL_CYCLE_MS),
    };
    let cal = FixedShifts {
        length_ms: SHIFT_MS,
        origin_ms: 0,
    };
    Ok(oee::oee_per_shift(
        &st,
        &ct,
        oee::CLASSES,
        interner.len(),
        &cal,
    )?)
}

// ------------------------------------------------------------------ checksums

fn sum_valid(a: &Float64Array) -> (f64, usize) {
    let mut s = 0.0;
    let mut n = 0;
    for i in 0..a.len() {
        if a.is_valid(i) && !a.value(i).is_nan() {
            s += a.value(i);
            n += 1;
        }
    }
    (s, n)
}

/// W0/W1/W6/W7: rows, ts_sum, machines, sum_<signal>, nulls.
pub fn telemetry_checksum(batches: &[RecordBatch]) -> Result<Map<String, Value>> {
    let mut rows = 0usize;
    let mut ts_sum: i64 = 0;
    let mut machines = KeyInterner::new();
    let mut sums = [0.0f64; 5];
    let mut nulls = 0usize;
    for b in batches {
        rows += b.num_rows();
        ts_sum += ts_ms(b)?.iter().map(|t| t - EPOCH_2024_MS).sum::<i64>();
        machines.intern("machine_id", column(b, "machine_id")?)?;
        for (k, (s, _, _)) in SIGNALS.iter().enumerate() {
            let (sum, n) = sum_valid(f64_col(b, s)?);
            sums[k] += sum;
            nulls += b.num_rows() - n;
        }
    }
    let mut m = Map::new();
    m.insert("rows".into(), json!(rows));
    m.insert("ts_sum".into(), json!(ts_sum));
    m.insert("machines".into(), json!(machines.len()));
    for (k, (s, _, _)) in SIGNALS.iter().enumerate() {
        m.insert(format!("sum_{s}"), json!(sums[k]));
    }
    m.insert("nulls".into(), json!(nulls));
    Ok(m)
}

fn strings(a: &ArrayRef) -> Result<StringArray> {
    Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn w2_checksum(b: &RecordBatch) -> Result<Map<String, Value>> {
    let state = strings(column(b, "state")?)?;
    let product = strings(column(b, "product_code")?)?;
    let ts = ts_ms(b)?;
    let sts = column(b, "state_ts")?.as_primitive::<TimestampMillisecondType>();
    let mut n = std::collections::BTreeMap::<&str, u64>::new();
    let (mut nulls, mut lag, mut prod) = (0u64, 0i64, 0i64);
    for (i, &t) in ts.iter().enumerate() {
        if state.is_null(i) {
            nulls += 1;
            continue;
        }
        *n.entry(state.value(i)).or_default() += 1;
        lag += t - sts.value(i);
        prod += product.value(i)[1..].parse::<i64>().unwrap_or(0);
    }
    let mut m = Map::new();
    m.insert("rows".into(), json!(b.num_rows()));
    for s in ["RUNNING", "IDLE", "DOWN", "SETUP"] {
        m.insert(format!("n_{s}"), json!(n.get(s).copied().unwrap_or(0)));
    }
    m.insert("n_null_state".into(), json!(nulls));
    m.insert("lag_ms_sum".into(), json!(lag));
    m.insert("product_sum".into(), json!(prod));
    Ok(m)
}

fn w3_checksum(b: &RecordBatch) -> Result<Map<String, Value>> {
    let z = f64_col(b, "z")?;
    let (sum_z, n_z) = sum_valid(z);
    let anomalies = (0..z.len())
        .filter(|&i| z.is_valid(i) && z.value(i).abs() > Z_LIMIT)
        .count();
    let mut m = Map::new();
    m.insert("rows".into(), json!(b.num_rows()));
    m.insert("n_z".into(), json!(n_z));
    m.insert("n_anomaly".into(), json!(anomalies));
    m.insert("sum_z".into(), json!(sum_z));
    m.insert(
        "sum_mean".into(),
        json!(sum_valid(f64_col(b, "vib_mean")?).0),
    );
    m.insert("sum_std".into(), json!(sum_valid(f64_col(b, "vib_std")?).0));
    Ok(m)
}

fn w4_checksum(b: &RecordBatch) -> Result<Map<String, Value>> {
    let ws = column(b, "window_start")?.as_primitive::<TimestampMillisecondType>();
    let ws_sum: i64 = ws.values().iter().map(|w| w - EPOCH_2024_MS).sum::<i64>() / 1000;
    let mut m = Map::new();
    m.insert("windows".into(), json!(b.num_rows()));
    for c in ["temp_count", "power_count"] {
        m.insert(
            format!("sum_{c}"),
            json!(i64_col(b, c)?.values().iter().sum::<i64>()),
        );
    }
    m.insert("ws_sum".into(), json!(ws_sum));
    for c in [
        "temp_avg",
        "temp_min",
        "temp_max",
        "power_avg",
        "power_min",
        "power_max",
        "energy_kwh",
    ] {
        m.insert(format!("sum_{c}"), json!(sum_valid(f64_col(b, c)?).0));
    }
    Ok(m)
}

fn w5_checksum(o: &oee::OeeShifts) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("rows".into(), json!(o.key.len()));
    m.insert("planned_ms".into(), json!(o.planned_ms.iter().sum::<i64>()));
    m.insert("running_ms".into(), json!(o.running_ms.iter().sum::<i64>()));
    m.insert("good".into(), json!(o.good.iter().sum::<i64>()));
    m.insert("reject".into(), json!(o.reject.iter().sum::<i64>()));
    m.insert("n_oee".into(), json!(o.oee.len() - o.oee.null_count()));
    for (name, a) in [
        ("availability", &o.availability),
        ("performance", &o.performance),
        ("quality", &o.quality),
        ("oee", &o.oee),
    ] {
        m.insert(format!("sum_{name}"), json!(sum_valid(a).0));
    }
    m
}
