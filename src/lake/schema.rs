//! Schemas of the lake tables (the contract in ARCHITECTURE.md plus a few
//! useful extra columns). Timestamps are `Timestamp(µs, UTC)`, the Delta
//! `timestamp` type; `date` is the UTC day, a partition column.

use std::sync::{Arc, LazyLock};

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Every table ironlake writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    BronzeRawEvents,
    SilverReadings,
    SilverAssetEvents,
    SilverQuarantine,
    GoldAssetState,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn f(name: &str, t: DataType, nullable: bool) -> Field {
    Field::new(name, t, nullable)
}

static BRONZE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("ingest_ts", ts(), false),
        f("source", DataType::Utf8, false),
        f("plant", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, true),
        f("payload", DataType::Utf8, false),
        f("parse_error", DataType::Utf8, true),
        f("date", DataType::Date32, false),
    ]))
});

static READINGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("ts", ts(), false),
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("signal", DataType::Utf8, false),
        f("value", DataType::Float64, false),
        f("quality", DataType::Utf8, false),
        f("ingest_ts", ts(), false),
        f("date", DataType::Date32, false),
    ]))
});

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("ts", ts(), false),
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("kind", DataType::Utf8, false),
        f("code", DataType::Utf8, false),
        f("value", DataType::Float64, true),
        f("message", DataType::Utf8, true),
        f("date", DataType::Date32, false),
    ]))
});

static QUARANTINE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("ingest_ts", ts(), false),
        f("source", DataType::Utf8, false),
        f("plant", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, true),
        f("signal", DataType::Utf8, true),
        f("expectation", DataType::Utf8, false),
        f("reason", DataType::Utf8, false),
        f("payload", DataType::Utf8, false),
        f("date", DataType::Date32, false),
    ]))
});

static ASSET_STATE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("ts", ts(), false),
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("state", DataType::Utf8, false),
        f("health", DataType::Float64, true),
        f("failure_prob", DataType::Float64, true),
        f("rul_h", DataType::Float64, true),
        f("lat", DataType::Float64, true),
        f("lon", DataType::Float64, true),
        f("zone", DataType::Utf8, true),
        f("good_parts", DataType::Int64, false),
        f("rejected_parts", DataType::Int64, false),
        f("active_alarms", DataType::Int32, false),
        f("stats", DataType::Utf8, false),
        f("date", DataType::Date32, false),
    ]))
});

impl Table {
    /// All tables, in layer order.
    pub const ALL: [Table; 5] = [
        Table::BronzeRawEvents,
        Table::SilverReadings,
        Table::SilverAssetEvents,
        Table::SilverQuarantine,
        Table::GoldAssetState,
    ];

    /// `layer.table` name.
    pub fn name(self) -> &'static str {
        match self {
            Table::BronzeRawEvents => "bronze.raw_events",
            Table::SilverReadings => "silver.readings",
            Table::SilverAssetEvents => "silver.asset_events",
            Table::SilverQuarantine => "silver.quarantine",
            Table::GoldAssetState => "gold.asset_state",
        }
    }

    /// Table by `layer.table` name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// One-line description stored as the table comment.
    pub fn comment(self) -> &'static str {
        match self {
            Table::BronzeRawEvents => "Every received message or register poll, as received",
            Table::SilverReadings => "Typed, range-checked, deduplicated signal values",
            Table::SilverAssetEvents => {
                "Machine state changes, alarms raised and cleared, part counts"
            }
            Table::SilverQuarantine => "Rejected input with the rule it broke and why",
            Table::GoldAssetState => "Twin checkpoints: state, statistics, health",
        }
    }

    /// Arrow schema of the table's rows.
    pub fn arrow_schema(self) -> SchemaRef {
        match self {
            Table::BronzeRawEvents => BRONZE.clone(),
            Table::SilverReadings => READINGS.clone(),
            Table::SilverAssetEvents => EVENTS.clone(),
            Table::SilverQuarantine => QUARANTINE.clone(),
            Table::GoldAssetState => ASSET_STATE.clone(),
        }
    }

    /// Partition columns.
    pub fn partition_columns(self) -> &'static [&'static str] {
        &["plant", "date"]
    }
}
