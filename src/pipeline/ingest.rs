//! Ingest shards: each owns a slice of the assets (by index), takes their
//! envelopes from connectors and, in micro-batches:
//!
//! 1. appends every envelope to bronze (with `parse_error` when it failed);
//! 2. checks each decoded value against the twin type (known signal, type,
//!    range); rejects go to quarantine with the expectation and reason;
//! 3. drops duplicates of `(asset, signal, ts)`;
//! 4. appends good values to silver and hands them to the machine twin.
//!
//! Nothing is lost: what is not in silver is in quarantine or is a counted
//! duplicate, and everything is in bronze.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::warn;

use super::validate::{check, Dedup};
use crate::assets::{AssetIdx, AssetModel, SignalIdx};
use crate::connectors::{Decoded, Envelope, SignalRef, UNASSIGNED_PLANT};
use crate::lake::rows::{BronzeRows, QuarantineRows, ReadingRows};
use crate::lake::writer::TableWriter;
use crate::twins::{Ingest, MachineTwin, TypedReading};

/// Rows per table after which a shard hands a batch to the writer.
const SHARD_BATCH_ROWS: usize = 8192;
/// Envelopes taken from the queue per micro-batch.
const DRAIN: usize = 1024;
/// A source timestamp this far ahead of the ingest clock is marked `UNCERTAIN`.
const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// Counters of the ingest stage (all shards).
#[derive(Debug, Default)]
pub struct IngestStats {
    pub envelopes: AtomicU64,
    pub readings: AtomicU64,
    pub quarantined: AtomicU64,
    pub duplicates: AtomicU64,
    pub parse_errors: AtomicU64,
}

/// Serializable view of [`IngestStats`].
#[derive(Debug, Clone, Serialize)]
pub struct IngestStatus {
    pub envelopes: u64,
    pub readings: u64,
    pub quarantined: u64,
    pub duplicates: u64,
    pub parse_errors: u64,
}

impl IngestStats {
    /// Snapshot of the counters.
    pub fn status(&self) -> IngestStatus {
        IngestStatus {
            envelopes: self.envelopes.load(Ordering::Relaxed),
            readings: self.readings.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            parse_errors: self.parse_errors.load(Ordering::Relaxed),
        }
    }
}

/// Writers of the tables the ingest stage feeds.
#[derive(Clone)]
pub struct IngestWriters {
    pub bronze: TableWriter,
    pub silver: TableWriter,
    pub quarantine: TableWriter,
}

/// One ingest shard.
pub struct Shard {
    model: Arc<AssetModel>,
    rx: mpsc::Receiver<Envelope>,
    twins: Arc<Vec<Addr<MachineTwin>>>,
    writers: IngestWriters,
    stats: Arc<IngestStats>,
    /// Per asset, per signal duplicate filters (created on first use).
    dedup: HashMap<AssetIdx, Vec<Dedup>>,
    /// Newest committed silver timestamp per (asset, signal) at start-up.
    floors: Arc<HashMap<(AssetIdx, SignalIdx), i64>>,
    bronze: BronzeRows,
    silver: ReadingRows,
    quarantine: QuarantineRows,
    pending: HashMap<AssetIdx, Ingest>,
}

impl Shard {
    /// A shard reading from `rx`.
    pub fn new(
        model: Arc<AssetModel>,
        rx: mpsc::Receiver<Envelope>,
        twins: Arc<Vec<Addr<MachineTwin>>>,
        writers: IngestWriters,
        stats: Arc<IngestStats>,
        floors: Arc<HashMap<(AssetIdx, SignalIdx), i64>>,
    ) -> Self {
        Shard {
            model,
            rx,
            twins,
            writers,
            stats,
            dedup: HashMap::new(),
            floors,
            bronze: BronzeRows::new(1024),
            silver: ReadingRows::new(SHARD_BATCH_ROWS),
            quarantine: QuarantineRows::new(),
            pending: HashMap::new(),
        }
    }

    /// Run until every connector has dropped its sender, then flush.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                env = self.rx.recv() => match env {
                    Some(env) => {
                        self.process(env);
                        for _ in 1..DRAIN {
                            match self.rx.try_recv() {
                                Ok(e) => self.process(e),
                                Err(_) => break,
                            }
                        }
                        self.deliver().await;
                        if self.silver.len() >= SHARD_BATCH_ROWS || self.bronze.len() >= SHARD_BATCH_ROWS {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.flush().await,
            }
        }
        self.deliver().await;
        self.flush().await;
    }

    /// Validate one envelope into the builders and the pending twin batches.
    pub fn process(&mut self, env: Envelope) {
        self.stats.envelopes.fetch_add(1, Ordering::Relaxed);
        let model = self.model.clone();
        let asset = env.asset.and_then(|i| model.assets.get(i as usize));
        let plant = asset.map_or(UNASSIGNED_PLANT, |a| a.plant.as_str());
        let asset_id = asset.map(|a| a.id.as_str());
        let parse_error = match &env.decoded {
            Decoded::Error { reason, .. } => Some(reason.as_str()),
            Decoded::Values(_) => None,
        };
        self.bronze.push(
            env.received_ms,
            &env.source,
            plant,
            asset_id,
            &env.payload,
            parse_error,
        );
        let values = match &env.decoded {
            Decoded::Error { code, reason } => {
                self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
                self.quarantine_row(&env, plant, asset_id, None, code, reason);
                return;
            }
            Decoded::Values(v) => v,
        };
        let Some(asset) = asset else { return };
        let twin = &asset.twin;
        let dedup = self.dedup.entry(asset.idx).or_insert_with(|| {
            (0..twin.signals.len())
                .map(|s| {
                    Dedup::new(
                        self.floors
                            .get(&(asset.idx, s as SignalIdx))
                            .copied()
                            .unwrap_or(i64::MIN),
                    )
                })
                .collect()
        });
        let pending = self.pending.entry(asset.idx).or_default();
        let mut ok = 0u64;
        let mut dups = 0u64;
        let mut rejected: Vec<(Option<&str>, &'static str, String)> = Vec::new();
        for sv in values {
            let idx = match &sv.signal {
                SignalRef::Known(i) => *i,
                SignalRef::Unknown(field) => {
                    rejected.push((
                        Some(field),
                        "unknown_signal",
                        format!(
                            "twin type `{}` has no signal bound to field `{field}`",
                            twin.kind
                        ),
                    ));
                    continue;
                }
            };
            let def = &twin.signals[idx as usize];
            match check(def, &sv.value) {
                Err(r) => {
                    pending.rejected.push((idx, r.expectation));
                    rejected.push((Some(&def.name), r.expectation, r.reason));
                }
                Ok(x) => {
                    if dedup[idx as usize].seen(sv.ts_ms) {
                        dups += 1;
                        continue;
                    }
                    let quality = if sv.ts_ms - env.received_ms > FUTURE_SKEW_MS {
                        "UNCERTAIN"
                    } else {
                        "GOOD"
                    };
                    self.silver.push(
                        sv.ts_ms,
                        plant,
                        asset.line.as_str(),
                        asset.id.as_str(),
                        &def.name,
                        x,
                        quality,
                        env.received_ms,
                    );
                    pending.readings.push(TypedReading {
                        signal: idx,
                        ts_ms: sv.ts_ms,
                        value: x,
                        ingest_ms: env.received_ms,
                    });
                    ok += 1;
                }
            }
        }
        for (signal, exp, reason) in rejected {
            self.quarantine_row(&env, plant, asset_id, signal, exp, &reason);
        }
        self.stats.readings.fetch_add(ok, Ordering::Relaxed);
        self.stats.duplicates.fetch_add(dups, Ordering::Relaxed);
    }

    fn quarantine_row(
        &mut self,
        env: &Envelope,
        plant: &str,
        asset: Option<&str>,
        signal: Option<&str>,
        exp: &str,
        reason: &str,
    ) {
        self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
        self.quarantine.push(
            env.received_ms,
            &env.source,
            plant,
            asset,
            signal,
            exp,
            reason,
            &env.payload,
        );
    }

    /// Hand pending readings to the twins. A full mailbox makes the shard wait
    /// (back-pressure), it never drops.
    async fn deliver(&mut self) {
        for (idx, msg) in self.pending.drain() {
            let Some(addr) = self.twins.get(idx as usize) else {
                continue;
            };
            match addr.try_send(msg) {
                Ok(()) => {}
                Err(SendError::Full(msg)) => {
                    if let Err(e) = addr.send(msg).await {
                        warn!(asset = idx, error = %e, "twin did not take readings");
                    }
                }
                Err(SendError::Closed(_)) => warn!(asset = idx, "twin mailbox closed"),
            }
        }
    }

    /// Hand built rows to the writers.
    async fn flush(&mut self) {
        let w = self.writers.clone();
        if !self.bronze.is_empty() {
            match self.bronze.finish() {
                Ok(b) => {
                    w.bronze.append(b).await;
                }
                Err(e) => warn!(error = %e, "bronze batch"),
            }
        }
        if !self.silver.is_empty() {
            match self.silver.finish() {
                Ok(b) => {
                    w.silver.append(b).await;
                }
                Err(e) => warn!(error = %e, "silver batch"),
            }
        }
        if !self.quarantine.is_empty() {
            match self.quarantine.finish() {
                Ok(b) => {
                    w.quarantine.append(b).await;
                }
                Err(e) => warn!(error = %e, "quarantine batch"),
            }
        }
    }
}
