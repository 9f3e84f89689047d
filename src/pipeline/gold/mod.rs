//! The gold jobs: business tables computed from silver with the time-series
//! kernels, in each plant's shift calendar (local time zone, daylight saving
//! included). Each job is one file here implementing [`GoldJob`] and one line
//! in [`JOBS`]; a pipeline file names it by its `kind`.
//!
//! A job is asked for the rows whose `replace_key` (when they start) is at
//! or after `from` (all rows on a full refresh); the runner replaces exactly
//! those rows of the target in one commit. Jobs read their inputs with
//! DataFrame expressions (see [`inputs`]), never SQL assembled from text.

mod downtime_events;
mod energy_shift;
mod features;
pub mod inputs;
mod oee_rollup;
mod oee_shift;
mod reliability;

use async_trait::async_trait;
use deltalake::arrow::array::RecordBatch;

use crate::assets::AssetModel;
use crate::config::PipelinesConfig;
use crate::lake::Table;
use crate::query::{QueryError, SqlEngine};

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
    #[error("reading {table}: {source}")]
    Read {
        table: &'static str,
        #[source]
        source: deltalake::datafusion::error::DataFusionError,
    },
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

/// What a job computes with.
pub struct GoldContext<'a> {
    /// Sessions over the lake tables.
    pub sql: &'a SqlEngine,
    /// Assets, lines, plants and their shift calendars.
    pub model: &'a AssetModel,
    pub config: &'a PipelinesConfig,
}

/// One gold job.
#[async_trait]
pub trait GoldJob: Send + Sync {
    /// The `kind` that names it in pipeline files.
    fn kind(&self) -> &'static str;
    /// The table it writes unless the pipeline file names another.
    fn target(&self) -> Table;
    /// The tables it reads; their versions are recorded with each update,
    /// and an update with every source unchanged commits nothing.
    fn sources(&self) -> &'static [Table];
    /// The column by which recomputed rows replace old ones (rows with
    /// `key >= from`); `None` rebuilds the whole table on every update.
    fn replace_key(&self) -> Option<&'static str>;
    /// The rows starting at or after `from` (all with `None`), computed at `now_ms`.
    async fn compute(
        &self,
        cx: &GoldContext<'_>,
        from: Option<i64>,
        now_ms: i64,
    ) -> Result<RecordBatch, GoldError>;
}

/// Every gold job.
pub static JOBS: &[&dyn GoldJob] = &[
    &oee_shift::OeeShift,
    &oee_rollup::OeeRollup,
    &energy_shift::EnergyShift,
    &downtime_events::DowntimeEvents,
    &reliability::Reliability,
    &features::Features,
];

/// The gold job of a `kind`.
pub fn job(kind: &str) -> Option<&'static dyn GoldJob> {
    JOBS.iter().copied().find(|j| j.kind() == kind)
}
