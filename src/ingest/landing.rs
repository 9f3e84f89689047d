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

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::validate::{check, check_time, TimePolicy};
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
    /// Per (asset, signal), the newest time silver holds (seeded from
    /// silver at start): older readings are looked up before they are taken.
    pub marks: parking_lot::Mutex<HashMap<(AssetIdx, SignalIdx), i64>>,
}

/// Tables by name, opened once.
#[derive(Default)]
struct Tables {
    open: HashMap<String, MarkedTable>,
}

impl Tables {
    fn get(&mut self, name: &TableName) -> &mut MarkedTable {
        self.open
            .entry(name.to_string())
            .or_insert_with(|| MarkedTable::new(name.clone()))
    }
}

impl LandingStage {
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
            let (body, done) = chunk_body(chunk);
            let mut delay = std::time::Duration::from_millis(250);
            let mut tries = 0;
            let result = loop {
                tries += 1;
                match self.take(&body, &mut tables).await {
                    Ok(r) => break Ok(r),
                    Err(e) if tries >= 4 => break Err(e),
                    Err(e) => {
                        warn!(source = %body.source, file = %body.file, position = body.position, error = %e, "landing slice not committed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            };
            if let Err(e) = &result {
                error!(source = %body.source, file = %body.file, position = body.position, error = %e, "landing slice not committed");
            }
            let _ = done.send(result.map_err(|e| e.to_string()));
        }
    }

    async fn take(&self, c: &Body, tables: &mut Tables) -> Result<ChunkReport, LakeError> {
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
        // Validate.
        let n = c.readings.len();
        let mut quarantine = QuarantineRows::new();
        // Readings that passed: (index in the slice, value).
        let mut ok: Vec<(usize, f64)> = Vec::with_capacity(n);
        for (i, r) in c.readings.iter().enumerate() {
            let Some(a) = self.model.assets.get(r.asset as usize) else {
                continue;
            };
            let Some(def) = a.twin.signals.get(r.signal as usize) else {
                continue;
            };
            let checked =
                check_time(&time, r.ts_ms, c.received_ms).and_then(|()| check(def, &r.value));
            match checked {
                Ok(x) => ok.push((i, x)),
                Err(rej) => {
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
        }
        // Duplicates: within the slice by a set; against silver for
        // readings not newer than what silver holds of their signal.
        let mut seen: foldhash::HashSet<(AssetIdx, u32, i64)> = Default::default();
        seen.reserve(ok.len());
        let mut unsure: HashMap<&str, (Vec<&str>, i64, i64)> = HashMap::new();
        {
            let marks = self.marks.lock();
            for &(i, _) in &ok {
                let r = &c.readings[i];
                let wm = marks.get(&(r.asset, r.signal)).copied().unwrap_or(i64::MIN);
                if r.ts_ms <= wm {
                    let a = &self.model.assets[r.asset as usize];
                    let e =
                        unsure
                            .entry(a.plant.as_str())
                            .or_insert((Vec::new(), i64::MAX, i64::MIN));
                    if !e.0.contains(&a.id.as_str()) {
                        e.0.push(a.id.as_str());
                    }
                    e.1 = e.1.min(r.ts_ms);
                    e.2 = e.2.max(r.ts_ms);
                }
            }
        }
        let mut existing = std::collections::HashSet::new();
        for (plant, (assets, from, to)) in &unsure {
            existing.extend(
                self.lake
                    .reading_keys_between(plant, assets, *from, *to)
                    .await?,
            );
        }
        let mut silver = ReadingRows::new(ok.len());
        let mut twins: HashMap<AssetIdx, TwinBatch> = HashMap::new();
        let mut newest: HashMap<(AssetIdx, u16), i64> = HashMap::new();
        for &(i, x) in &ok {
            let r = &c.readings[i];
            let a = &self.model.assets[r.asset as usize];
            let def = &a.twin.signals[r.signal as usize];
            if !seen.insert((r.asset, r.signal as u32, r.ts_ms))
                || (!existing.is_empty()
                    && existing.contains(&(a.id.to_string(), def.name.clone(), r.ts_ms)))
            {
                report.duplicates += 1;
                continue;
            }
            let nw = newest.entry((r.asset, r.signal)).or_insert(i64::MIN);
            *nw = (*nw).max(r.ts_ms);
            silver.push(
                r.ts_ms,
                a.plant.as_str(),
                a.line.as_str(),
                a.id.as_str(),
                &def.name,
                x,
                "GOOD",
                c.received_ms,
            );
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
        report.readings = silver.len() as u64;
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
        if !silver.is_empty() {
            writes.push((Table::SilverReadings.table_name(), vec![silver.finish()?]));
        }
        if !quarantine.is_empty() {
            writes.push((
                Table::SilverQuarantine.table_name(),
                vec![quarantine.finish()?],
            ));
        }
        for (name, batches) in writes {
            if batches.iter().all(|b| b.num_rows() == 0) {
                continue;
            }
            let t = tables.get(&name);
            if t.marker(&self.lake, &app).await? >= Some(c.position) {
                report.skipped_tables += 1;
                continue;
            }
            t.append(&self.lake, batches, &app, c.position).await?;
        }

        {
            let mut marks = self.marks.lock();
            for (k, ts) in newest {
                let m = marks.entry(k).or_insert(i64::MIN);
                *m = (*m).max(ts);
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

/// A chunk without its answer channel.
struct Body {
    source: Arc<str>,
    position: u64,
    file: Arc<str>,
    start: u64,
    received_ms: i64,
    bronze: TableName,
    raw: Vec<RecordBatch>,
    readings: Vec<crate::connectors::ChunkReading>,
    table: Option<TableName>,
    table_rows: Vec<RecordBatch>,
    issues: Vec<crate::connectors::ChunkIssue>,
    twins_from_ms: i64,
    max_past_ms: i64,
}

type Done = tokio::sync::oneshot::Sender<Result<ChunkReport, String>>;

fn chunk_body(c: FileChunk) -> (Body, Done) {
    let body = Body {
        source: c.source,
        position: c.position,
        file: c.file,
        start: c.start,
        received_ms: c.received_ms,
        bronze: c.bronze,
        raw: c.raw,
        readings: c.readings,
        table: c.table,
        table_rows: c.table_rows,
        issues: c.issues,
        twins_from_ms: c.twins_from_ms,
        max_past_ms: c.max_past_ms,
    };
    (body, c.done)
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
