//! The medallion flows. For now: the ingest stage, which turns connector
//! envelopes into bronze rows, validated and deduplicated silver readings,
//! quarantine rows with reasons, and reading batches for the twins.

pub mod ingest;
pub mod oee;
pub mod validate;

pub use ingest::{IngestStats, IngestStatus, Shard};
