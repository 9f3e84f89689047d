//! The bulk path of the ingest stage: slices of landing-folder files
//! ([`FileChunk`]) become bronze rows as read, validated silver readings,
//! quarantine rows with their reasons, rows of a non-telemetry table, and
//! readings for the twins when they are recent.
//!
//! A file is its own journal: nothing is copied into the ingest journal.
//! Each table gets one commit per slice carrying the application
//! transaction `landing:<source>` = the slice's position; a table whose
//! marker already holds a position (a restart after a crash) is not
//! written again. The connector records a slice as done only once this
//! stage answered, i.e. once every table holds it.
//!
//! Values are checked like live ones (type, range, time plausibility with
//! the source's own look-back); exact duplicates of (asset, signal, time)
//! within a slice are dropped and counted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tokio::sync::mpsc;
use tracing::{error, warn};

use rayon::prelude::*;

use super::validate::{check, check_time, Rejection, TimePolicy};
use super::{IngestStats, TwinBatch, TwinFeed, TypedReading};
use crate::assets::{AssetIdx, AssetModel, SignalIdx};
use crate::connectors::{ChunkReport, FileChunk, RawValue};
use crate::lake::append::MarkedTable;
use crate::lake::rows::{QuarantineRows, ReadingRows};
use crate::lake::{LakeError, Lakehouse, Table, TableName};

/// Column added to bronze rows: the file they came from.
pub const FILE_COLUMN: &str = "_file";
/// Column added to bronze rows: when they were committed.
pub const INGEST_TS_COLUMN: &str = "_ingest_ts";

/// The bulk stage: one task taking slices in order.
pub struct LandingStage {
    pub model: Arc<AssetModel>,
    pub lake: Arc<Lakehouse>,
    pub feed: Arc<dyn TwinFeed>,
    pub stats: Arc<IngestStats>,
    pub time: TimePolicy,
    /// Stop taking slices (the one being committed finishes).
    pub stop: tokio_util::sync::CancellationToken,
    /// Per (asset, signal) slot (see [`LandingStage::slots_of`]), the
    /// newest time silver holds (seeded from silver at start): older
    /// readings are looked up there before they are taken.
    pub marks: parking_lot::Mutex<Vec<i64>>,
    /// First slot of each asset.
    pub slot_base: Vec<u32>,
    pub slots: usize,
}

/// Tables by name, opened once.
#[derive(Default)]
struct Tables {
    open: HashMap<String, MarkedTable>,
}

impl Tables {
    /// Take a table out (to commit it beside others); give it back with [`Tables::put`].
    fn take(&mut self, name: &TableName) -> MarkedTable {
        self.open
            .remove(&name.to_string())
            .unwrap_or_else(|| MarkedTable::new(name.clone()))
    }

    fn put(&mut self, t: MarkedTable) {
        self.open.insert(t.name().to_string(), t);
    }
}

/// A part of a slice validated: (reading, value) that passed, and the rejects.
type Checked = (Vec<(u32, f64)>, Vec<(u32, Rejection)>);

/// Readings per parallel part of a slice.
const PART: usize = 65_536;

impl LandingStage {
    /// The slot layout of a model (first slot per asset, slots in all),
    /// and the watermarks of `seeds` laid out in it.
    pub fn slots_of(
        model: &AssetModel,
        seeds: &HashMap<(AssetIdx, SignalIdx), i64>,
    ) -> (Vec<u32>, usize, Vec<i64>) {
        let mut base = Vec::with_capacity(model.assets.len());
        let mut n = 0usize;
        for a in &model.assets {
            base.push(n as u32);
            n += a.twin.signals.len();
        }
        let mut marks = vec![i64::MIN; n];
        for ((a, s), ts) in seeds {
            if let Some(b) = base.get(*a as usize) {
                let k = *b as usize + *s as usize;
                if k < n {
                    marks[k] = *ts;
                }
            }
        }
        (base, n, marks)
    }

    /// Take slices until the channel closes. A slice whose commits fail
    /// (full disk, storage outage) is retried a few times, then answered
    /// with the error: the connector offers it again later.
    pub async fn run(self, mut rx: mpsc::Receiver<FileChunk>) {
        let mut tables = Tables::default();
        loop {
            let chunk = tokio::select! {
                c = rx.recv() => c,
                _ = self.stop.cancelled() => None,
            };
            let Some(chunk) = chunk else { return };
            let mut delay = std::time::Duration::from_millis(250);
            let mut tries = 0;
            let result = loop {
                tries += 1;
                match self.take(&chunk, &mut tables).await {
                    Ok(r) => break Ok(r),
                    Err(e) if tries >= 4 => break Err(e),
                    Err(e) => {
                        warn!(source = %chunk.source, file = %chunk.file, position = chunk.position, error = %e, "landing slice not committed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            };
            if let Err(e) = &result {
                error!(source = %chunk.source, file = %chunk.file, position = chunk.position, error = %e, "landing slice not committed");
            }
            let _ = chunk.done.send(result.map_err(|e| e.to_string()));
        }
    }

    async fn take(&self, c: &FileChunk, tables: &mut Tables) -> Result<ChunkReport, LakeError> {
        let app = format!("landing:{}", c.source);
        let mut report = ChunkReport {
            rows: c.raw.iter().map(|b| b.num_rows() as u64).sum(),
            ..Default::default()
        };
        let time = TimePolicy {
            max_future_ms: self.time.max_future_ms,
            max_past_ms: c.max_past_ms,
        };
        let source_label = format!("landing:{}:{}@{}", c.source, c.file, c.start);
        // Validate, in parallel: the values that passed, and the rejects.
        let parts: Vec<Checked> = c
            .readings
            .par_chunks(PART)
            .enumerate()
            .map(|(k, rs)| {
                let mut ok = Vec::with_capacity(rs.len());
                let mut bad = Vec::new();
                for (j, r) in rs.iter().enumerate() {
                    let i = (k * PART + j) as u32;
                    let Some(def) = self
                        .model
                        .assets
                        .get(r.asset as usize)
                        .and_then(|a| a.twin.signal_def(r.signal))
                    else {
                        continue;
                    };
                    match check_time(&time, r.ts_ms, c.received_ms)
                        .and_then(|()| check(&def, &r.value))
                    {
                        Ok(x) => ok.push((i, x)),
                        Err(rej) => bad.push((i, rej)),
                    }
                }
                (ok, bad)
            })
            .collect();
        let mut quarantine = QuarantineRows::new();
        let mut ok: Vec<(u32, f64)> = Vec::with_capacity(c.readings.len());
        for (good, bad) in parts {
            ok.extend(good);
            for (i, rej) in bad {
                let r = &c.readings[i as usize];
                let a = &self.model.assets[r.asset as usize];
                let Some(def) = a.twin.signal_def(r.signal) else {
                    continue;
                };
                self.stats
                    .quarantined
                    .with_label_values(&[rej.expectation])
                    .inc();
                quarantine.push(
                    c.received_ms,
                    &source_label,
                    a.plant.as_str(),
                    Some(a.id.as_str()),
                    Some(def.name.as_str()),
                    rej.expectation,
                    &rej.reason,
                    &value_json(&def.name, &r.value, r.ts_ms),
                );
            }
        }
        // Duplicates. Per (asset, signal) slot: a reading newer than every
        // earlier one of its slot in this slice is new here; the others
        // ("late") are checked against the earlier ones. A reading not
        // newer than what silver held before this slice is looked up there.
        let slot = |r: &crate::connectors::ChunkReading| {
            self.slot_base[r.asset as usize] as usize + r.signal as usize
        };
        let mut newest = vec![i64::MIN; self.slots];
        let mut late: Vec<u32> = Vec::new();
        let mut unsure: HashMap<&str, (Vec<&str>, i64, i64)> = HashMap::new();
        {
            let marks = self.marks.lock();
            for &(i, _) in &ok {
                let r = &c.readings[i as usize];
                let s = slot(r);
                if r.ts_ms > newest[s] {
                    newest[s] = r.ts_ms;
                } else {
                    late.push(i);
                }
                if r.ts_ms <= marks[s] {
                    let a = &self.model.assets[r.asset as usize];
                    let e =
                        unsure
                            .entry(a.plant.as_str())
                            .or_insert((Vec::new(), i64::MAX, i64::MIN));
                    if e.0.last() != Some(&a.id.as_str()) && !e.0.contains(&a.id.as_str()) {
                        e.0.push(a.id.as_str());
                    }
                    e.1 = e.1.min(r.ts_ms);
                    e.2 = e.2.max(r.ts_ms);
                }
            }
        }
        let mut dup = vec![false; c.readings.len()];
        if !late.is_empty() {
            let keys: foldhash::HashSet<(usize, i64)> = late
                .iter()
                .map(|&i| {
                    let r = &c.readings[i as usize];
                    (slot(r), r.ts_ms)
                })
                .collect();
            let mut flagged = vec![false; self.slots];
            for k in &keys {
                flagged[k.0] = true;
            }
            let mut seen: foldhash::HashSet<(usize, i64)> = Default::default();
            for &(i, _) in &ok {
                let r = &c.readings[i as usize];
                let s = slot(r);
                if flagged[s] && keys.contains(&(s, r.ts_ms)) && !seen.insert((s, r.ts_ms)) {
                    dup[i as usize] = true;
                }
            }
        }
        if !unsure.is_empty() {
            let mut existing = std::collections::HashSet::new();
            for (plant, (assets, from, to)) in &unsure {
                existing.extend(
                    self.lake
                        .reading_keys_between(plant, assets, *from, *to)
                        .await?,
                );
            }
            if !existing.is_empty() {
                for &(i, _) in &ok {
                    let r = &c.readings[i as usize];
                    let a = &self.model.assets[r.asset as usize];
                    let key = (
                        a.id.to_string(),
                        signal_name(a, r.signal).into_owned(),
                        r.ts_ms,
                    );
                    if existing.contains(&key) {
                        dup[i as usize] = true;
                    }
                }
            }
        }
        ok.retain(|(i, _)| !dup[*i as usize]);
        report.duplicates = dup.iter().filter(|d| **d).count() as u64;
        // Silver rows, in parallel parts.
        let silver: Vec<RecordBatch> = ok
            .par_chunks(PART)
            .map(|part| {
                let mut rows = ReadingRows::new(part.len());
                for &(i, x) in part {
                    let r = &c.readings[i as usize];
                    let a = &self.model.assets[r.asset as usize];
                    rows.push(
                        r.ts_ms,
                        a.plant.as_str(),
                        a.line.as_str(),
                        a.id.as_str(),
                        &signal_name(a, r.signal),
                        x,
                        "GOOD",
                        c.received_ms,
                    );
                }
                rows.finish()
            })
            .collect::<Result<_, _>>()?;
        let mut twins: HashMap<AssetIdx, TwinBatch> = HashMap::new();
        for &(i, x) in &ok {
            let r = &c.readings[i as usize];
            if r.ts_ms >= c.twins_from_ms {
                twins
                    .entry(r.asset)
                    .or_default()
                    .readings
                    .push(TypedReading {
                        signal: r.signal,
                        ts_ms: r.ts_ms,
                        value: x,
                        ingest_ms: c.received_ms,
                    });
            }
        }
        report.readings = ok.len() as u64;
        for i in &c.issues {
            let plant = i
                .asset
                .as_deref()
                .and_then(|id| self.model.asset(id))
                .map_or(crate::connectors::UNASSIGNED_PLANT, |a| a.plant.as_str());
            self.stats.quarantined.with_label_values(&[i.code]).inc();
            let reason = match i.code {
                "parse_error" => format!("byte {}: {}", i.offset, i.reason),
                "unreadable_file" => i.reason.clone(),
                _ => format!("row {}: {}", i.offset, i.reason),
            };
            quarantine.push(
                c.received_ms,
                &source_label,
                plant,
                i.asset.as_deref(),
                i.signal.as_deref(),
                i.code,
                &reason,
                &i.payload,
            );
        }
        report.quarantined = quarantine.len() as u64;
        self.stats.duplicates.inc_by(report.duplicates);
        self.stats.readings.inc_by(report.readings);

        // Commit: bronze, the table's silver, readings, quarantine.
        let bronze = bronze_batches(&c.raw, &c.file, c.received_ms)?;
        let mut writes: Vec<(TableName, Vec<RecordBatch>)> = vec![(c.bronze.clone(), bronze)];
        if let Some(t) = &c.table {
            writes.push((
                t.clone(),
                bronze_batches(&c.table_rows, &c.file, c.received_ms)?,
            ));
        }
        if !ok.is_empty() {
            writes.push((Table::SilverReadings.table_name(), silver));
        }
        if !quarantine.is_empty() {
            writes.push((
                Table::SilverQuarantine.table_name(),
                vec![quarantine.finish()?],
            ));
        }
        // The tables are independent: their commits run side by side.
        let mut pending = Vec::new();
        for (name, batches) in writes {
            if batches.iter().all(|b| b.num_rows() == 0) {
                continue;
            }
            pending.push((tables.take(&name), batches));
        }
        let results = futures::future::join_all(pending.into_iter().map(|(mut t, batches)| {
            let (lake, app, pos) = (self.lake.clone(), app.clone(), c.position);
            async move {
                let r = async {
                    if t.marker(&lake, &app).await? >= Some(pos) {
                        return Ok(true);
                    }
                    t.append(&lake, batches, &app, pos).await.map(|()| false)
                }
                .await;
                (t, r)
            }
        }))
        .await;
        let mut first_err = None;
        for (t, r) in results {
            tables.put(t);
            match r {
                Ok(true) => report.skipped_tables += 1,
                Ok(false) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        {
            let mut marks = self.marks.lock();
            for (s, ts) in newest.iter().enumerate() {
                if *ts > marks[s] {
                    marks[s] = *ts;
                }
            }
        }
        // Recent readings to the twins, in time order per machine.
        for (asset, mut b) in twins {
            b.readings.sort_by_key(|r| r.ts_ms);
            if !self.feed.deliver(asset, b).await {
                warn!(
                    asset,
                    "twin gone; landing readings for it are in silver only"
                );
            }
        }
        Ok(report)
    }
}

fn value_json(signal: &str, v: &RawValue, ts_ms: i64) -> String {
    let j = match v {
        RawValue::Num(x) => serde_json::Number::from_f64(*x)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        RawValue::Bool(b) => serde_json::Value::Bool(*b),
        RawValue::Text(t) => serde_json::Value::String(super::validate::truncate(t, 1024).into()),
        RawValue::Null => serde_json::Value::Null,
    };
    serde_json::json!({ "signal": signal, "ts": ts_ms, "value": j }).to_string()
}

/// Rows as read, in Delta's types (text plain, time in microseconds), with
/// the file and ingest time added.
fn bronze_batches(
    raw: &[RecordBatch],
    file: &str,
    ingest_ms: i64,
) -> Result<Vec<RecordBatch>, LakeError> {
    let mut out = Vec::with_capacity(raw.len());
    for b in raw {
        let n = b.num_rows();
        let mut fields: Vec<Field> = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for (f, a) in b.schema().fields().iter().zip(b.columns()) {
            let t = match f.data_type() {
                DataType::Dictionary(_, v) => (**v).clone(),
                DataType::Timestamp(_, tz) => {
                    DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
                }
                t => t.clone(),
            };
            let a = if &t == a.data_type() {
                a.clone()
            } else {
                cast(a, &t)?
            };
            fields.push(Field::new(f.name(), t, true));
            cols.push(a);
        }
        fields.push(Field::new(FILE_COLUMN, DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from(vec![file; n])));
        fields.push(Field::new(
            INGEST_TS_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
        cols.push(Arc::new(
            TimestampMicrosecondArray::from(vec![ingest_ms * 1000; n]).with_timezone("UTC"),
        ));
        out.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?);
    }
    Ok(out)
}

/// A reading's signal name (declared, or added at run time).
fn signal_name(a: &crate::assets::Asset, idx: crate::assets::SignalIdx) -> Cow<'_, str> {
    match a.twin.signals.get(idx as usize) {
        Some(d) => Cow::Borrowed(d.name.as_str()),
        None => Cow::Owned(
            a.twin
                .extra
                .def(idx)
                .map(|d| d.name.clone())
                .unwrap_or_default(),
        ),
    }
}
