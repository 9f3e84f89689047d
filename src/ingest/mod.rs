//! The live ingest stage: what connectors hand over becomes bronze rows,
//! validated and deduplicated silver readings, quarantine rows with their
//! reasons, and reading batches for the twins.
//!
//! This module owns validation, time plausibility, duplicate detection and
//! quarantine for live data. It never talks to a protocol (connectors do)
//! and never holds twin state: it hands batches to a [`TwinFeed`].

pub mod dedup;
pub mod journal;
pub mod landing;
pub mod process;
pub mod record;
pub mod shard;
pub mod validate;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

pub use shard::{IngestStats, IngestStatus, IngestWriters, ReplayMarks, Shard, ShardSetup};

use crate::assets::{AssetIdx, SignalIdx};

/// A reading that passed validation, addressed by signal index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypedReading {
    pub signal: SignalIdx,
    /// Source time, UTC ms.
    pub ts_ms: i64,
    pub value: f64,
    /// Ingest time, UTC ms.
    pub ingest_ms: i64,
}

/// A batch of validated readings for one machine, plus the signals whose
/// latest value was rejected (to show them as `BAD`).
#[derive(Debug, Clone, Default)]
pub struct TwinBatch {
    pub readings: Vec<TypedReading>,
    pub rejected: Vec<(SignalIdx, &'static str)>,
    /// Journal position of the newest message in the batch (0: none): the
    /// twin's checkpoint records it.
    pub lsn: u64,
    /// Replayed from the journal at start: events up to `events_until` are
    /// already in `silver.asset_events` and are not emitted again.
    pub replay: bool,
    pub events_until: Option<i64>,
}

/// Per asset, the journal position its twin's newest durable checkpoint
/// covers: the journal keeps what a twin would need after a crash.
#[derive(Debug)]
pub struct CheckpointLedger {
    lsn: Vec<AtomicU64>,
}

impl CheckpointLedger {
    /// A ledger for `assets` assets, starting at the positions given.
    pub fn new(start: Vec<u64>) -> Self {
        CheckpointLedger {
            lsn: start.into_iter().map(AtomicU64::new).collect(),
        }
    }

    /// The position covered for an asset.
    pub fn get(&self, asset: AssetIdx) -> u64 {
        self.lsn
            .get(asset as usize)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// A checkpoint of an asset covering `lsn` is durable.
    pub fn set(&self, asset: AssetIdx, lsn: u64) {
        if let Some(a) = self.lsn.get(asset as usize) {
            a.fetch_max(lsn, Ordering::Relaxed);
        }
    }
}

/// Where validated readings go live: the machine twins.
#[async_trait]
pub trait TwinFeed: Send + Sync {
    /// Hand a batch to the twin of `asset`, waiting while its mailbox is
    /// full (back-pressure). Returns false when the twin is gone.
    async fn deliver(&self, asset: AssetIdx, batch: TwinBatch) -> bool;
}
