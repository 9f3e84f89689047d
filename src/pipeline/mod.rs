//! The medallion flows: the ingest stage (connector envelopes into bronze
//! rows, validated and deduplicated silver readings, quarantine rows with
//! reasons, reading batches for the twins), and the declarative pipelines
//! that build silver and gold tables from them with expectations.

pub mod downtime;
pub mod gold;
pub mod ingest;
pub mod oee;
pub mod run;
pub mod source;
pub mod spec;
pub mod validate;

pub use ingest::{IngestStats, IngestStatus, Shard};
