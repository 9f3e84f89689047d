//! Columnar row builders, one per table: callers append rows and get Arrow
//! record batches in the table's schema. No per-row allocation beyond the
//! column buffers.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, Date32Builder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};

use super::schema::Table;
use super::LakeError;
use crate::time::day_of;

fn ts_builder(cap: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC")
}

fn finish(table: Table, cols: Vec<ArrayRef>) -> Result<RecordBatch, LakeError> {
    Ok(RecordBatch::try_new(table.arrow_schema(), cols)?)
}

/// Rows of `bronze.raw_events`.
pub struct BronzeRows {
    ingest_ts: TimestampMicrosecondBuilder,
    source: StringBuilder,
    plant: StringBuilder,
    asset_id: StringBuilder,
    payload: StringBuilder,
    parse_error: StringBuilder,
    date: Date32Builder,
}

impl BronzeRows {
    /// Empty builder.
    pub fn new(cap: usize) -> Self {
        BronzeRows {
            ingest_ts: ts_builder(cap),
            source: StringBuilder::with_capacity(cap, cap * 24),
            plant: StringBuilder::with_capacity(cap, cap * 8),
            asset_id: StringBuilder::with_capacity(cap, cap * 8),
            payload: StringBuilder::with_capacity(cap, cap * 128),
            parse_error: StringBuilder::new(),
            date: Date32Builder::with_capacity(cap),
        }
    }
    /// Append one received message.
    pub fn push(
        &mut self,
        ingest_ms: i64,
        source: &str,
        plant: &str,
        asset: Option<&str>,
        payload: &str,
        parse_error: Option<&str>,
    ) {
        self.ingest_ts.append_value(ingest_ms * 1000);
        self.source.append_value(source);
        self.plant.append_value(plant);
        self.asset_id.append_option(asset);
        self.payload.append_value(payload);
        self.parse_error.append_option(parse_error);
        self.date.append_value(day_of(ingest_ms));
    }
    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.date.len()
    }
    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Take the rows as a batch, leaving the builder empty.
    pub fn finish(&mut self) -> Result<RecordBatch, LakeError> {
        finish(
            Table::BronzeRawEvents,
            vec![
                Arc::new(self.ingest_ts.finish()),
                Arc::new(self.source.finish()),
                Arc::new(self.plant.finish()),
                Arc::new(self.asset_id.finish()),
                Arc::new(self.payload.finish()),
                Arc::new(self.parse_error.finish()),
                Arc::new(self.date.finish()),
            ],
        )
    }
}

/// Rows of `silver.readings`.
pub struct ReadingRows {
    ts: TimestampMicrosecondBuilder,
    plant: StringBuilder,
    line: StringBuilder,
    asset_id: StringBuilder,
    signal: StringBuilder,
    value: Float64Builder,
    quality: StringBuilder,
    ingest_ts: TimestampMicrosecondBuilder,
    date: Date32Builder,
}

impl ReadingRows {
    /// Empty builder.
    pub fn new(cap: usize) -> Self {
        ReadingRows {
            ts: ts_builder(cap),
            plant: StringBuilder::with_capacity(cap, cap * 8),
            line: StringBuilder::with_capacity(cap, cap * 10),
            asset_id: StringBuilder::with_capacity(cap, cap * 10),
            signal: StringBuilder::with_capacity(cap, cap * 12),
            value: Float64Builder::with_capacity(cap),
            quality: StringBuilder::with_capacity(cap, cap * 4),
            ingest_ts: ts_builder(cap),
            date: Date32Builder::with_capacity(cap),
        }
    }
    /// Append one typed reading.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        ts_ms: i64,
        plant: &str,
        line: &str,
        asset: &str,
        signal: &str,
        value: f64,
        quality: &str,
        ingest_ms: i64,
    ) {
        self.ts.append_value(ts_ms * 1000);
        self.plant.append_value(plant);
        self.line.append_value(line);
        self.asset_id.append_value(asset);
        self.signal.append_value(signal);
        self.value.append_value(value);
        self.quality.append_value(quality);
        self.ingest_ts.append_value(ingest_ms * 1000);
        self.date.append_value(day_of(ts_ms));
    }
    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.date.len()
    }
    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Take the rows as a batch.
    pub fn finish(&mut self) -> Result<RecordBatch, LakeError> {
        finish(
            Table::SilverReadings,
            vec![
                Arc::new(self.ts.finish()),
                Arc::new(self.plant.finish()),
                Arc::new(self.line.finish()),
                Arc::new(self.asset_id.finish()),
                Arc::new(self.signal.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.quality.finish()),
                Arc::new(self.ingest_ts.finish()),
                Arc::new(self.date.finish()),
            ],
        )
    }
}

/// Rows of `silver.quarantine`.
pub struct QuarantineRows {
    ingest_ts: TimestampMicrosecondBuilder,
    source: StringBuilder,
    plant: StringBuilder,
    asset_id: StringBuilder,
    signal: StringBuilder,
    expectation: StringBuilder,
    reason: StringBuilder,
    payload: StringBuilder,
    date: Date32Builder,
}

impl QuarantineRows {
    /// Empty builder.
    pub fn new() -> Self {
        QuarantineRows {
            ingest_ts: ts_builder(0),
            source: StringBuilder::new(),
            plant: StringBuilder::new(),
            asset_id: StringBuilder::new(),
            signal: StringBuilder::new(),
            expectation: StringBuilder::new(),
            reason: StringBuilder::new(),
            payload: StringBuilder::new(),
            date: Date32Builder::new(),
        }
    }
    /// Append one rejected item.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        ingest_ms: i64,
        source: &str,
        plant: &str,
        asset: Option<&str>,
        signal: Option<&str>,
        expectation: &str,
        reason: &str,
        payload: &str,
    ) {
        self.ingest_ts.append_value(ingest_ms * 1000);
        self.source.append_value(source);
        self.plant.append_value(plant);
        self.asset_id.append_option(asset);
        self.signal.append_option(signal);
        self.expectation.append_value(expectation);
        self.reason.append_value(reason);
        self.payload.append_value(payload);
        self.date.append_value(day_of(ingest_ms));
    }
    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.date.len()
    }
    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Take the rows as a batch.
    pub fn finish(&mut self) -> Result<RecordBatch, LakeError> {
        finish(
            Table::SilverQuarantine,
            vec![
                Arc::new(self.ingest_ts.finish()),
                Arc::new(self.source.finish()),
                Arc::new(self.plant.finish()),
                Arc::new(self.asset_id.finish()),
                Arc::new(self.signal.finish()),
                Arc::new(self.expectation.finish()),
                Arc::new(self.reason.finish()),
                Arc::new(self.payload.finish()),
                Arc::new(self.date.finish()),
            ],
        )
    }
}

impl Default for QuarantineRows {
    fn default() -> Self {
        Self::new()
    }
}

/// One row of `silver.asset_events`.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetEventRow {
    pub ts_ms: i64,
    pub plant: Arc<str>,
    pub line: Arc<str>,
    pub asset_id: Arc<str>,
    /// `state`, `alarm_raised`, `alarm_cleared`, `counter`.
    pub kind: &'static str,
    pub code: String,
    pub value: Option<f64>,
    pub message: Option<String>,
}

/// Build a `silver.asset_events` batch.
pub fn events_batch(rows: &[AssetEventRow]) -> Result<RecordBatch, LakeError> {
    let n = rows.len();
    let mut ts = ts_builder(n);
    let (mut plant, mut line, mut asset, mut kind, mut code, mut msg) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut value = Float64Builder::with_capacity(n);
    let mut date = Date32Builder::with_capacity(n);
    for r in rows {
        ts.append_value(r.ts_ms * 1000);
        plant.append_value(&r.plant);
        line.append_value(&r.line);
        asset.append_value(&r.asset_id);
        kind.append_value(r.kind);
        code.append_value(&r.code);
        value.append_option(r.value);
        msg.append_option(r.message.as_deref());
        date.append_value(day_of(r.ts_ms));
    }
    finish(
        Table::SilverAssetEvents,
        vec![
            Arc::new(ts.finish()),
            Arc::new(plant.finish()),
            Arc::new(line.finish()),
            Arc::new(asset.finish()),
            Arc::new(kind.finish()),
            Arc::new(code.finish()),
            Arc::new(value.finish()),
            Arc::new(msg.finish()),
            Arc::new(date.finish()),
        ],
    )
}

/// One row of `gold.asset_state` (a twin checkpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct AssetStateRow {
    pub ts_ms: i64,
    pub plant: Arc<str>,
    pub line: Arc<str>,
    pub asset_id: Arc<str>,
    pub state: &'static str,
    pub health: Option<f64>,
    pub failure_prob: Option<f64>,
    pub rul_h: Option<f64>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub zone: Option<String>,
    pub good_parts: i64,
    pub rejected_parts: i64,
    pub active_alarms: i32,
    /// The full twin state as JSON (what a restarted twin reloads).
    pub stats: String,
    /// Energy baseline: expected mean power of the newest bucket, and
    /// drawn minus expected (kW).
    pub energy_expected_kw: Option<f64>,
    pub energy_deviation_kw: Option<f64>,
}

/// Build a `gold.asset_state` batch.
pub fn asset_state_batch(rows: &[AssetStateRow]) -> Result<RecordBatch, LakeError> {
    let n = rows.len();
    let (mut ee, mut ed) = (Float64Builder::new(), Float64Builder::new());
    let mut ts = ts_builder(n);
    let (mut plant, mut line, mut asset, mut state, mut zone, mut stats) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut health, mut fp, mut rul, mut lat, mut lon) = (
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    );
    let (mut good, mut rej) = (Int64Builder::new(), Int64Builder::new());
    let mut alarms = Int32Builder::new();
    let mut date = Date32Builder::with_capacity(n);
    for r in rows {
        ts.append_value(r.ts_ms * 1000);
        plant.append_value(&r.plant);
        line.append_value(&r.line);
        asset.append_value(&r.asset_id);
        state.append_value(r.state);
        health.append_option(r.health);
        fp.append_option(r.failure_prob);
        rul.append_option(r.rul_h);
        lat.append_option(r.lat);
        lon.append_option(r.lon);
        zone.append_option(r.zone.as_deref());
        good.append_value(r.good_parts);
        rej.append_value(r.rejected_parts);
        alarms.append_value(r.active_alarms);
        stats.append_value(&r.stats);
        date.append_value(day_of(r.ts_ms));
        ee.append_option(r.energy_expected_kw);
        ed.append_option(r.energy_deviation_kw);
    }
    finish(
        Table::GoldAssetState,
        vec![
            Arc::new(ts.finish()),
            Arc::new(plant.finish()),
            Arc::new(line.finish()),
            Arc::new(asset.finish()),
            Arc::new(state.finish()),
            Arc::new(health.finish()),
            Arc::new(fp.finish()),
            Arc::new(rul.finish()),
            Arc::new(lat.finish()),
            Arc::new(lon.finish()),
            Arc::new(zone.finish()),
            Arc::new(good.finish()),
            Arc::new(rej.finish()),
            Arc::new(alarms.finish()),
            Arc::new(stats.finish()),
            Arc::new(date.finish()),
            Arc::new(ee.finish()),
            Arc::new(ed.finish()),
        ],
    )
}

/// One row of `gold.predictions` (one model's live score of one machine).
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    /// End of the feature bucket scored.
    pub ts_ms: i64,
    pub plant: Arc<str>,
    pub line: Arc<str>,
    pub asset_id: Arc<str>,
    pub twin_type: String,
    pub model: String,
    pub version: i32,
    pub role: &'static str,
    pub failure_prob: Option<f64>,
    pub threshold: Option<f64>,
    pub alert: Option<bool>,
    pub rul_h: Option<f64>,
    /// Top contributing features, JSON `[[name, contribution], ...]`.
    pub reasons: Option<String>,
    /// The model's inputs (JSON array in its feature order), champions only:
    /// what drift monitoring compares with the training data.
    pub inputs: Option<String>,
    pub scored_at_ms: i64,
    /// Energy baseline: expected and drawn mean power over the bucket (kW).
    pub expected_kw: Option<f64>,
    pub actual_kw: Option<f64>,
}

/// Build a `gold.predictions` batch.
pub fn predictions_batch(rows: &[PredictionRow]) -> Result<RecordBatch, LakeError> {
    let n = rows.len();
    let (mut ts, mut at) = (ts_builder(n), ts_builder(n));
    let mut s: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    let mut version = Int32Builder::new();
    let (mut fp, mut th, mut rul) = (
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    );
    let mut alert = deltalake::arrow::array::BooleanBuilder::new();
    let mut date = Date32Builder::with_capacity(n);
    let (mut exp, mut act) = (Float64Builder::new(), Float64Builder::new());
    for r in rows {
        ts.append_value(r.ts_ms * 1000);
        s[0].append_value(&r.plant);
        s[1].append_value(&r.line);
        s[2].append_value(&r.asset_id);
        s[3].append_value(&r.twin_type);
        s[4].append_value(&r.model);
        version.append_value(r.version);
        s[5].append_value(r.role);
        fp.append_option(r.failure_prob);
        th.append_option(r.threshold);
        alert.append_option(r.alert);
        rul.append_option(r.rul_h);
        s[6].append_option(r.reasons.as_deref());
        s[7].append_option(r.inputs.as_deref());
        at.append_value(r.scored_at_ms * 1000);
        date.append_value(day_of(r.ts_ms));
        exp.append_option(r.expected_kw);
        act.append_option(r.actual_kw);
    }
    let mut s = s.into_iter().map(|mut b| Arc::new(b.finish()));
    let mut next = || s.next().expect("eight string columns");
    let (plant, line, asset, kind, model, role, reasons, inputs) = (
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
    );
    finish(
        Table::GoldPredictions,
        vec![
            Arc::new(ts.finish()),
            plant,
            line,
            asset,
            kind,
            model,
            Arc::new(version.finish()),
            role,
            Arc::new(fp.finish()),
            Arc::new(th.finish()),
            Arc::new(alert.finish()),
            Arc::new(rul.finish()),
            reasons,
            inputs,
            Arc::new(at.finish()),
            Arc::new(date.finish()),
            Arc::new(exp.finish()),
            Arc::new(act.finish()),
        ],
    )
}

/// One row of `silver.assets` (the asset register).
#[derive(Debug, Clone, PartialEq)]
pub struct AssetRow {
    pub asset_id: String,
    pub name: String,
    pub plant: String,
    pub area: String,
    pub line: String,
    pub twin_type: String,
    pub protocol: String,
    pub signals: i32,
    /// Position on the plant's floor map (metres).
    pub x_m: Option<f64>,
    pub y_m: Option<f64>,
}

/// Build a `silver.assets` batch, every row stamped `updated_ms`.
pub fn assets_batch(rows: &[AssetRow], updated_ms: i64) -> Result<RecordBatch, LakeError> {
    let n = rows.len();
    let mut s: Vec<StringBuilder> = (0..7).map(|_| StringBuilder::new()).collect();
    let mut signals = Int32Builder::with_capacity(n);
    let (mut x, mut y) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    let mut ts = ts_builder(n);
    for r in rows {
        for (b, v) in s.iter_mut().zip([
            &r.asset_id,
            &r.name,
            &r.plant,
            &r.area,
            &r.line,
            &r.twin_type,
            &r.protocol,
        ]) {
            b.append_value(v);
        }
        signals.append_value(r.signals);
        x.append_option(r.x_m);
        y.append_option(r.y_m);
        ts.append_value(updated_ms * 1000);
    }
    let mut cols: Vec<ArrayRef> = s
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    cols.push(Arc::new(signals.finish()));
    cols.push(Arc::new(x.finish()));
    cols.push(Arc::new(y.finish()));
    cols.push(Arc::new(ts.finish()));
    finish(Table::SilverAssets, cols)
}
