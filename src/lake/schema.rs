//! Schemas of the lake tables (the contract in ARCHITECTURE.md plus a few
//! useful extra columns). Timestamps are `Timestamp(µs, UTC)`, the Delta
//! `timestamp` type; `date` is the UTC day, a partition column.

use std::sync::{Arc, LazyLock};

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::TableName;

/// Every table ironlake writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    BronzeRawEvents,
    SilverReadings,
    SilverAssetEvents,
    SilverQuarantine,
    SilverAssets,
    GoldAssetState,
    GoldPredictions,
    GoldOeeShift,
    GoldOeeRollup,
    GoldEnergyShift,
    GoldDowntimeEvents,
    GoldReliability,
    GoldFeatures,
    SystemPipelineRuns,
    SimFailures,
    SimWear,
    GoldDrift,
    GoldModelQuality,
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

static ASSETS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("asset_id", DataType::Utf8, false),
        f("name", DataType::Utf8, false),
        f("plant", DataType::Utf8, false),
        f("area", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("twin_type", DataType::Utf8, false),
        f("protocol", DataType::Utf8, false),
        f("signals", DataType::Int32, false),
        f("x_m", DataType::Float64, true),
        f("y_m", DataType::Float64, true),
        f("updated_ts", ts(), false),
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
        f("energy_expected_kw", DataType::Float64, true),
        f("energy_deviation_kw", DataType::Float64, true),
    ]))
});

static PREDICTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("ts", ts(), false),
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("twin_type", DataType::Utf8, false),
        f("model", DataType::Utf8, false),
        f("version", DataType::Int32, false),
        f("role", DataType::Utf8, false),
        f("failure_prob", DataType::Float64, true),
        f("threshold", DataType::Float64, true),
        f("alert", DataType::Boolean, true),
        f("rul_h", DataType::Float64, true),
        f("reasons", DataType::Utf8, true),
        f("inputs", DataType::Utf8, true),
        f("scored_at", ts(), false),
        f("date", DataType::Date32, false),
        f("expected_kw", DataType::Float64, true),
        f("actual_kw", DataType::Float64, true),
    ]))
});

static OEE_SHIFT: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("shift_start", ts(), false),
        f("shift_end", ts(), false),
        f("shift", DataType::Utf8, false),
        f("planned_ms", DataType::Int64, false),
        f("running_ms", DataType::Int64, false),
        f("idle_ms", DataType::Int64, false),
        f("down_ms", DataType::Int64, false),
        f("setup_ms", DataType::Int64, false),
        f("good", DataType::Int64, false),
        f("reject", DataType::Int64, false),
        f("ideal_ms", DataType::Float64, false),
        f("speed_loss_ms", DataType::Float64, true),
        f("avg_cycle_s", DataType::Float64, true),
        f("ideal_cycle_s", DataType::Float64, true),
        f("availability", DataType::Float64, true),
        f("performance", DataType::Float64, true),
        f("quality", DataType::Float64, true),
        f("oee", DataType::Float64, true),
        f("computed_at", ts(), false),
        // Added later: nullable, at the end (schema evolution appends).
        f("unknown_ms", DataType::Int64, true),
    ]))
});

static OEE_ROLLUP: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("level", DataType::Utf8, false),
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("shift_start", ts(), false),
        f("shift_end", ts(), false),
        f("shift", DataType::Utf8, false),
        f("machines", DataType::Int64, false),
        f("planned_ms", DataType::Int64, false),
        f("running_ms", DataType::Int64, false),
        f("idle_ms", DataType::Int64, false),
        f("down_ms", DataType::Int64, false),
        f("setup_ms", DataType::Int64, false),
        f("good", DataType::Int64, false),
        f("reject", DataType::Int64, false),
        f("ideal_ms", DataType::Float64, false),
        f("availability", DataType::Float64, true),
        f("performance", DataType::Float64, true),
        f("quality", DataType::Float64, true),
        f("oee", DataType::Float64, true),
        f("computed_at", ts(), false),
        f("unknown_ms", DataType::Int64, true),
    ]))
});

static ENERGY_SHIFT: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("shift_start", ts(), false),
        f("shift_end", ts(), false),
        f("shift", DataType::Utf8, false),
        f("kwh", DataType::Float64, false),
        f("idle_kwh", DataType::Float64, false),
        f("good", DataType::Int64, false),
        f("kwh_per_good_part", DataType::Float64, true),
        f("samples", DataType::Int64, false),
        f("computed_at", ts(), false),
        f("expected_kwh", DataType::Float64, true),
        f("wasted_kwh", DataType::Float64, true),
    ]))
});

static FEATURES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("twin_type", DataType::Utf8, false),
        f("features_version", DataType::Int32, false),
        f("bucket_end", ts(), false),
        f("feature", DataType::Utf8, false),
        f("value", DataType::Float64, true),
        f("computed_at", ts(), false),
    ]))
});

static SIM_FAILURES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("twin_type", DataType::Utf8, false),
        f("started_at", ts(), false),
        f("ended_at", ts(), true),
        f("cause", DataType::Utf8, false),
        f("plant_hours_down", DataType::Float64, true),
        f("time_scale", DataType::Float64, false),
    ]))
});

static SIM_WEAR: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("plant", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("twin_type", DataType::Utf8, false),
        f("ts", ts(), false),
        f("degradation", DataType::Float64, false),
        f("wear_per_h", DataType::Float64, false),
        f("state", DataType::Utf8, false),
        f("waste_kw", DataType::Float64, true),
    ]))
});

static DRIFT: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("ts", ts(), false),
        f("window_start", ts(), false),
        f("scope", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("twin_type", DataType::Utf8, false),
        f("model", DataType::Utf8, false),
        f("version", DataType::Int32, false),
        f("feature", DataType::Utf8, false),
        f("n", DataType::Int64, false),
        f("psi", DataType::Float64, false),
        f("ks", DataType::Float64, false),
        f("js", DataType::Float64, false),
        f("status", DataType::Utf8, false),
    ]))
});

static MODEL_QUALITY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("computed_at", ts(), false),
        f("day", DataType::Date32, false),
        f("model", DataType::Utf8, false),
        f("version", DataType::Int32, false),
        f("role", DataType::Utf8, false),
        f("twin_type", DataType::Utf8, false),
        f("rows", DataType::Int64, false),
        f("positives", DataType::Int64, false),
        f("flagged", DataType::Int64, false),
        f("precision", DataType::Float64, true),
        f("recall", DataType::Float64, true),
        f("alerts", DataType::Int64, false),
        f("true_alerts", DataType::Int64, false),
        f("failures", DataType::Int64, false),
        f("caught", DataType::Int64, false),
        f("alert_precision", DataType::Float64, true),
        f("alert_recall", DataType::Float64, true),
    ]))
});

static DOWNTIME: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("start", ts(), false),
        f("end", ts(), false),
        f("duration_ms", DataType::Int64, false),
        f("state", DataType::Utf8, false),
        f("reason", DataType::Utf8, false),
        f("shift_start", ts(), false),
        f("shift", DataType::Utf8, false),
        f("open", DataType::Boolean, false),
        f("computed_at", ts(), false),
    ]))
});

static RELIABILITY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("plant", DataType::Utf8, false),
        f("line", DataType::Utf8, false),
        f("asset_id", DataType::Utf8, false),
        f("window_start", ts(), false),
        f("window_end", ts(), false),
        f("running_ms", DataType::Int64, false),
        f("down_ms", DataType::Int64, false),
        f("failures", DataType::Int64, false),
        f("mtbf_h", DataType::Float64, true),
        f("mttr_h", DataType::Float64, true),
        f("computed_at", ts(), false),
    ]))
});

static PIPELINE_RUNS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        f("run_id", DataType::Utf8, false),
        f("pipeline", DataType::Utf8, false),
        f("target", DataType::Utf8, false),
        f("started", ts(), false),
        f("finished", ts(), false),
        f("status", DataType::Utf8, false),
        f("rows_in", DataType::Int64, false),
        f("rows_out", DataType::Int64, false),
        f("rows_dropped", DataType::Int64, false),
        f("rows_warned", DataType::Int64, false),
        f("expectations", DataType::Utf8, false),
        f("source_versions", DataType::Utf8, false),
        f("target_version", DataType::Int64, true),
        f("message", DataType::Utf8, true),
        f("date", DataType::Date32, false),
    ]))
});

impl Table {
    /// Tables written by the pipelines (created on their first update).
    pub const PIPELINE: [Table; 7] = [
        Table::GoldOeeShift,
        Table::GoldOeeRollup,
        Table::GoldEnergyShift,
        Table::GoldDowntimeEvents,
        Table::GoldReliability,
        Table::GoldFeatures,
        Table::SystemPipelineRuns,
    ];

    /// The simulator's ground truth (written by `ironlake simulate --history-days`).
    pub const SIM: [Table; 2] = [Table::SimFailures, Table::SimWear];

    /// Written by the model monitor (`gold.drift`, `gold.model_quality`).
    pub const MONITOR: [Table; 2] = [Table::GoldDrift, Table::GoldModelQuality];

    /// The asset register, rewritten by the platform when the configuration changes.
    pub const REGISTER: [Table; 1] = [Table::SilverAssets];

    /// All tables, in layer order.
    pub const ALL: [Table; 6] = [
        Table::BronzeRawEvents,
        Table::SilverReadings,
        Table::SilverAssetEvents,
        Table::SilverQuarantine,
        Table::GoldAssetState,
        Table::GoldPredictions,
    ];

    /// `layer.table` name.
    pub fn name(self) -> &'static str {
        match self {
            Table::BronzeRawEvents => "bronze.raw_events",
            Table::SilverReadings => "silver.readings",
            Table::SilverAssetEvents => "silver.asset_events",
            Table::SilverQuarantine => "silver.quarantine",
            Table::SilverAssets => "silver.assets",
            Table::GoldAssetState => "gold.asset_state",
            Table::GoldPredictions => "gold.predictions",
            Table::GoldOeeShift => "gold.oee_shift",
            Table::GoldOeeRollup => "gold.oee_rollup",
            Table::GoldEnergyShift => "gold.energy_shift",
            Table::GoldDowntimeEvents => "gold.downtime_events",
            Table::GoldReliability => "gold.reliability",
            Table::GoldFeatures => "gold.features",
            Table::SystemPipelineRuns => "system.pipeline_runs",
            Table::SimFailures => "system.sim_failures",
            Table::SimWear => "system.sim_wear",
            Table::GoldDrift => "gold.drift",
            Table::GoldModelQuality => "gold.model_quality",
        }
    }

    /// Table by `layer.table` name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL
            .into_iter()
            .chain(Table::REGISTER)
            .chain(Table::PIPELINE)
            .chain(Table::SIM)
            .chain(Table::MONITOR)
            .find(|t| t.name() == name)
    }

    /// Table by its name.
    pub fn from_table_name(name: &TableName) -> Option<Table> {
        Table::from_name(&name.to_string())
    }

    /// The table's name as a [`TableName`].
    pub fn table_name(self) -> TableName {
        TableName::parse(self.name()).expect("contract table names are valid")
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
            Table::SilverAssets => {
                "The asset register: every configured machine, its plant, area, line, twin type and source"
            }
            Table::GoldAssetState => "Twin checkpoints: state, statistics, health",
            Table::GoldPredictions => {
                "Every live model score of every machine: champion and challenger side by side"
            }
            Table::GoldOeeShift => "OEE per machine and shift, with the losses behind it",
            Table::GoldOeeRollup => "OEE per line and per plant and shift",
            Table::GoldEnergyShift => {
                "Energy per machine and shift, per good part, and while not running"
            }
            Table::GoldDowntimeEvents => "Every stop of every machine: duration, state and reason",
            Table::GoldReliability => "MTBF and MTTR per machine over a trailing window",
            Table::GoldFeatures => {
                "Model features per machine and time bucket (models/features), as the twins compute them"
            }
            Table::SystemPipelineRuns => "Every pipeline update: rows in/out, expectations, status",
            Table::SimFailures => {
                "Simulator ground truth: when and why each simulated machine went down"
            }
            Table::SimWear => {
                "Simulator ground truth: each simulated machine's hidden wear per feature bucket"
            }
            Table::GoldDrift => {
                "Drift of each served model's inputs and predictions against its training data"
            }
            Table::GoldModelQuality => {
                "Precision and recall of past failure predictions per model and day, once labels are known"
            }
        }
    }

    /// Arrow schema of the table's rows.
    pub fn arrow_schema(self) -> SchemaRef {
        match self {
            Table::BronzeRawEvents => BRONZE.clone(),
            Table::SilverReadings => READINGS.clone(),
            Table::SilverAssetEvents => EVENTS.clone(),
            Table::SilverQuarantine => QUARANTINE.clone(),
            Table::SilverAssets => ASSETS.clone(),
            Table::GoldAssetState => ASSET_STATE.clone(),
            Table::GoldPredictions => PREDICTIONS.clone(),
            Table::GoldOeeShift => OEE_SHIFT.clone(),
            Table::GoldOeeRollup => OEE_ROLLUP.clone(),
            Table::GoldEnergyShift => ENERGY_SHIFT.clone(),
            Table::GoldDowntimeEvents => DOWNTIME.clone(),
            Table::GoldReliability => RELIABILITY.clone(),
            Table::GoldFeatures => FEATURES.clone(),
            Table::SystemPipelineRuns => PIPELINE_RUNS.clone(),
            Table::SimFailures => SIM_FAILURES.clone(),
            Table::SimWear => SIM_WEAR.clone(),
            Table::GoldDrift => DRIFT.clone(),
            Table::GoldModelQuality => MODEL_QUALITY.clone(),
        }
    }

    /// Partition columns.
    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            Table::GoldOeeShift
            | Table::GoldOeeRollup
            | Table::GoldEnergyShift
            | Table::GoldDowntimeEvents
            | Table::GoldReliability
            | Table::GoldFeatures
            | Table::SimFailures
            | Table::SimWear
            | Table::SilverAssets => &["plant"],
            Table::SystemPipelineRuns => &["date"],
            Table::GoldDrift | Table::GoldModelQuality => &[],
            _ => &["plant", "date"],
        }
    }
}
