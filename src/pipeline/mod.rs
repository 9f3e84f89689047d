//! Declarative pipelines: silver and gold tables built from committed lake
//! tables, incrementally and exactly once, with expectations (warn / drop /
//! fail, like Delta Live Tables), and the gold jobs (OEE, energy, downtime,
//! reliability) behind one trait.
//!
//! This module reads only committed tables; the live ingest stage that
//! feeds bronze and silver from connectors is `ingest`.

pub mod commit;
pub mod expect;
pub mod gold;
pub mod oee;
pub mod run;
pub mod spec;

use crate::lake::increments::IncrementError;
use crate::lake::LakeError;
use crate::query::QueryError;

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Increment(#[from] IncrementError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Gold(#[from] gold::GoldError),
    #[error("expectation `{name}` (`{condition}`) failed on {rows} row(s), e.g. {example}; the target was not changed")]
    Expectation {
        name: String,
        condition: String,
        rows: usize,
        example: String,
    },
    #[error("expectation `{name}`: {message}")]
    BadExpectation { name: String, message: String },
    #[error("writing {table}: {message}")]
    Write { table: String, message: String },
    #[error("source {0} does not exist yet")]
    NoSource(String),
    #[error("writing {table}: another update committed the same source range first")]
    Concurrent { table: String },
}
