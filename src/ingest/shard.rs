//! Ingest shards. Each owns a slice of the assets and its own journal
//! stream, and in micro-batches:
//!
//! 1. writes every envelope to its journal and syncs once per batch (group
//!    commit), then acknowledges the envelopes to their connectors;
//! 2. validates them (type, range, time plausibility, exact duplicates),
//!    into bronze rows, silver readings, quarantine rows with reasons and
//!    reading batches for the twins;
//! 3. hands the rows to the table writers tagged with the journal position
//!    they reach, so each Delta commit records how far it holds the journal;
//! 4. trims the journal once every table (and every twin checkpoint) holds
//!    what it would delete.
//!
//! At start a shard replays its journal above the trim position: a table
//! gets the rows of the records its marker does not cover, a twin the
//! readings its checkpoint does not. Nothing is lost: what is not in silver
//! is in quarantine or is a counted duplicate, everything is in bronze, and
//! nothing is written twice.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::dedup::SignalDedup;
use super::journal::{write_atomic, Journal};
use super::process::{self, Message, QuarantineRow, SilverRow, Staged};
use super::record;
use super::validate::TimePolicy;
use super::{CheckpointLedger, TwinBatch, TwinFeed, TypedReading};
use crate::assets::{AssetIdx, AssetModel, SignalIdx};
use crate::connectors::{Queued, UNASSIGNED_PLANT};
use crate::lake::read::ReadingKey;
use crate::lake::rows::{BronzeRows, QuarantineRows, ReadingRows};
use crate::lake::writer::{Origin, TableWriter};
use crate::lake::Lakehouse;
use crate::metrics::{Histogram, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use crate::time::now_ms;

/// Rows per table after which a shard hands a batch to the writer.
const SHARD_BATCH_ROWS: usize = 8192;
/// Payload bytes after which a shard hands its bronze rows over (an Arrow
/// string column holds at most 2 GiB).
const SHARD_BATCH_BYTES: usize = 64 << 20;
/// Envelopes taken from the queue per micro-batch (one journal sync).
const DRAIN: usize = 2048;
/// How often the journal is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// File of a shard's duplicate-filter watermarks.
pub const WATERMARKS: &str = "watermarks";

/// Delete journal segments no longer needed: on the blocking pool while the
/// shard runs (unlinking large files takes the kernel a while and must not
/// hold up appends), here when `inline` (shutdown) or outside a runtime.
fn delete_segments(shard: usize, old: Vec<std::path::PathBuf>, inline: bool) {
    if old.is_empty() {
        return;
    }
    let delete = move || {
        for p in old {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(shard, path = %p.display(), error = %e, "cannot delete a trimmed journal segment; the next start deletes it");
                }
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if !inline => drop(rt.spawn_blocking(delete)),
        _ => delete(),
    }
}

/// Counters of the ingest stage (all shards), exported by `/metrics`.
pub struct IngestStats {
    pub envelopes: IntCounter,
    pub journaled_bytes: IntCounter,
    pub journal_syncs: IntCounter,
    pub journal_errors: IntCounter,
    pub readings: IntCounter,
    pub duplicates: IntCounter,
    pub parse_errors: IntCounter,
    pub quarantined: IntCounterVec,
    pub lookups: IntCounter,
    pub readings_lost: IntCounter,
    pub shard_restarts: IntCounter,
    pub replayed: IntCounter,
    /// Journal bytes above the trim position, per shard.
    pub journal_pending_bytes: IntGaugeVec,
    /// Age of the oldest record not yet trimmed, per shard.
    pub journal_age_seconds: IntGaugeVec,
    /// Envelopes waiting in each shard's queue.
    pub queue_depth: IntGaugeVec,
    /// From receipt to durable in the journal (what a broker waits for its ack).
    pub ack_latency: Histogram,
}

impl IngestStats {
    /// Fresh counters.
    pub fn new() -> Self {
        let c = |n: &str, h: &str| IntCounter::new(n, h).expect("valid counter");
        let g = |n: &str, h: &str, l: &[&str]| {
            IntGaugeVec::new(Opts::new(n, h), l).expect("valid gauge")
        };
        IngestStats {
            envelopes: c(
                "ironlake_ingest_received_total",
                "Messages and polls received from connectors",
            ),
            journaled_bytes: c(
                "ironlake_journal_written_bytes_total",
                "Bytes written to the ingest journal",
            ),
            journal_syncs: c(
                "ironlake_journal_syncs_total",
                "Journal group commits (fdatasync)",
            ),
            journal_errors: c(
                "ironlake_journal_errors_total",
                "Failed journal writes (retried; nothing acknowledged)",
            ),
            readings: c(
                "ironlake_ingest_readings_total",
                "Readings accepted into silver",
            ),
            duplicates: c(
                "ironlake_ingest_duplicates_total",
                "Readings dropped as exact duplicates of (asset, signal, ts)",
            ),
            parse_errors: c(
                "ironlake_ingest_parse_errors_total",
                "Messages that could not be decoded",
            ),
            quarantined: IntCounterVec::new(
                Opts::new(
                    "ironlake_ingest_quarantined_total",
                    "Rows quarantined, by reason",
                ),
                &["reason"],
            )
            .expect("valid counter"),
            lookups: c(
                "ironlake_ingest_dedup_lookups_total",
                "Readings older than the in-memory dedup window, checked against silver",
            ),
            readings_lost: c(
                "ironlake_readings_lost_total",
                "Readings lost (corrupt journal records); must stay 0",
            ),
            shard_restarts: c(
                "ironlake_ingest_shard_restarts_total",
                "Ingest shards restarted after a failure",
            ),
            replayed: c(
                "ironlake_journal_replayed_total",
                "Journal records replayed at start",
            ),
            journal_pending_bytes: g(
                "ironlake_journal_pending_bytes",
                "Journal bytes not yet held by the lake",
                &["shard"],
            ),
            journal_age_seconds: g(
                "ironlake_journal_age_seconds",
                "Age of the oldest journal record not yet held by the lake",
                &["shard"],
            ),
            queue_depth: g(
                "ironlake_ingest_queue_depth",
                "Envelopes waiting in a shard's queue",
                &["shard"],
            ),
            ack_latency: crate::metrics::latency_histogram(
                "ironlake_ingest_ack_latency_seconds",
                "From receipt to durable in the journal (acknowledgement to the broker)",
            ),
        }
    }

    /// Register every counter in `r`.
    pub fn register(&self, r: &Registry) -> Result<(), prometheus::Error> {
        r.register(Box::new(self.envelopes.clone()))?;
        r.register(Box::new(self.journaled_bytes.clone()))?;
        r.register(Box::new(self.journal_syncs.clone()))?;
        r.register(Box::new(self.journal_errors.clone()))?;
        r.register(Box::new(self.readings.clone()))?;
        r.register(Box::new(self.duplicates.clone()))?;
        r.register(Box::new(self.parse_errors.clone()))?;
        r.register(Box::new(self.quarantined.clone()))?;
        r.register(Box::new(self.lookups.clone()))?;
        r.register(Box::new(self.readings_lost.clone()))?;
        r.register(Box::new(self.shard_restarts.clone()))?;
        r.register(Box::new(self.replayed.clone()))?;
        r.register(Box::new(self.journal_pending_bytes.clone()))?;
        r.register(Box::new(self.journal_age_seconds.clone()))?;
        r.register(Box::new(self.queue_depth.clone()))?;
        r.register(Box::new(self.ack_latency.clone()))?;
        Ok(())
    }

    /// Snapshot for `/api/health`.
    pub fn status(&self) -> IngestStatus {
        IngestStatus {
            envelopes: self.envelopes.get(),
            readings: self.readings.get(),
            quarantined: prometheus::core::Collector::collect(&self.quarantined)
                .iter()
                .flat_map(|f| f.get_metric())
                .map(|m| m.get_counter().get_value() as u64)
                .sum(),
            duplicates: self.duplicates.get(),
            parse_errors: self.parse_errors.get(),
            readings_lost: self.readings_lost.get(),
        }
    }
}

impl Default for IngestStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Serializable view of [`IngestStats`].
#[derive(Debug, Clone, Serialize)]
pub struct IngestStatus {
    pub envelopes: u64,
    pub readings: u64,
    pub quarantined: u64,
    pub duplicates: u64,
    pub parse_errors: u64,
    pub readings_lost: u64,
}

/// Writers of the tables the ingest stage feeds.
#[derive(Clone)]
pub struct IngestWriters {
    pub bronze: TableWriter,
    pub silver: TableWriter,
    pub quarantine: TableWriter,
}

impl IngestWriters {
    fn all(&self) -> [&TableWriter; 3] {
        [&self.bronze, &self.silver, &self.quarantine]
    }
}

/// What each table held of a stream when a replay started: rows of records
/// at or below a mark are not written again.
#[derive(Debug, Clone, Default)]
pub struct ReplayMarks {
    pub bronze: u64,
    pub silver: u64,
    pub quarantine: u64,
    /// Per asset, the position its twin's checkpoint covers.
    pub twins: HashMap<AssetIdx, u64>,
    /// Per asset, the newest event already in `silver.asset_events`.
    pub events_until: HashMap<AssetIdx, i64>,
}

/// Everything a shard is built from.
pub struct ShardSetup {
    pub id: usize,
    pub model: Arc<AssetModel>,
    pub feed: Arc<dyn TwinFeed>,
    pub writers: IngestWriters,
    pub stats: Arc<IngestStats>,
    pub journal: Journal,
    pub lake: Arc<Lakehouse>,
    pub time: TimePolicy,
    pub dedup_recent: usize,
    pub ledger: Arc<CheckpointLedger>,
    /// Duplicate-filter watermarks per (asset, signal).
    pub seeds: HashMap<(AssetIdx, SignalIdx), i64>,
    pub replay: ReplayMarks,
    pub stop: CancellationToken,
    /// When set, records `durable time - source time` of each message.
    pub ack_probe: Option<Arc<crate::metrics::LatencyProbe>>,
    /// When set, records `receipt time - source time` of each message.
    pub received_probe: Option<Arc<crate::metrics::LatencyProbe>>,
    /// Limits for payloads the connectors left to decode here.
    pub limits: crate::connectors::DecodeLimits,
}

/// One ingest shard.
pub struct Shard {
    id: usize,
    model: Arc<AssetModel>,
    feed: Arc<dyn TwinFeed>,
    writers: IngestWriters,
    stats: Arc<IngestStats>,
    journal: Journal,
    lake: Arc<Lakehouse>,
    time: TimePolicy,
    dedup_recent: usize,
    ledger: Arc<CheckpointLedger>,
    stop: CancellationToken,
    dedup: HashMap<AssetIdx, Vec<SignalDedup>>,
    seeds: HashMap<(AssetIdx, SignalIdx), i64>,
    marks: ReplayMarks,
    bronze: BronzeRows,
    bronze_bytes: usize,
    silver: ReadingRows,
    quarantine: QuarantineRows,
    pending: HashMap<AssetIdx, TwinBatch>,
    /// Readings to look up in silver before they are accepted: (position,
    /// row, whether silver already holds the record's rows).
    unsure: Vec<(u64, SilverRow, bool)>,
    /// Every record up to here is processed.
    last_lsn: u64,
    /// Per table, the position last reported to its writer.
    reported: [u64; 3],
    /// Per asset, the newest position delivered to its twin.
    delivered: HashMap<AssetIdx, u64>,
    /// (position, receipt time) of recent batches, for the journal's age.
    ages: VecDeque<(u64, i64)>,
    last_trim: Instant,
    encode_buf: Vec<u8>,
    ack_probe: Option<Arc<crate::metrics::LatencyProbe>>,
    received_probe: Option<Arc<crate::metrics::LatencyProbe>>,
    /// Replaying the journal (twin batches carry the replay flag).
    replaying: bool,
    limits: crate::connectors::DecodeLimits,
}

impl Shard {
    /// A shard from its setup.
    pub fn new(s: ShardSetup) -> Self {
        let last = s.journal.trimmed();
        Shard {
            id: s.id,
            model: s.model,
            feed: s.feed,
            writers: s.writers,
            stats: s.stats,
            journal: s.journal,
            lake: s.lake,
            time: s.time,
            dedup_recent: s.dedup_recent.max(1),
            ledger: s.ledger,
            stop: s.stop,
            dedup: HashMap::new(),
            seeds: s.seeds,
            marks: s.replay,
            bronze: BronzeRows::new(1024),
            bronze_bytes: 0,
            silver: ReadingRows::new(SHARD_BATCH_ROWS),
            quarantine: QuarantineRows::new(),
            pending: HashMap::new(),
            unsure: Vec::new(),
            last_lsn: last,
            reported: [0; 3],
            delivered: HashMap::new(),
            ages: VecDeque::new(),
            last_trim: Instant::now(),
            encode_buf: Vec::with_capacity(4096),
            ack_probe: s.ack_probe,
            received_probe: s.received_probe,
            replaying: false,
            limits: s.limits,
        }
    }

    /// The shard's index (its journal stream).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Replay the journal above its trim position (at start, before any
    /// new envelope). Returns the records replayed.
    pub async fn replay(&mut self) -> u64 {
        let from = self.journal.trimmed();
        let mut n = 0u64;
        self.replaying = true;
        let records: Vec<_> = self.journal.replay(from).collect();
        for r in records {
            match r {
                Ok((lsn, bytes)) => {
                    match record::decode(&bytes, &self.model) {
                        Ok(rec) => {
                            let model = self.model.clone();
                            let asset = rec.asset_id.as_deref().and_then(|a| model.asset(a));
                            let msg = Message {
                                received_ms: rec.received_ms,
                                asset,
                                unknown_asset: rec.asset_id.as_deref(),
                                payload: &rec.payload,
                                decoded: &rec.decoded,
                            };
                            let source = rec.source.clone();
                            self.process(lsn, &msg, &source, true);
                        }
                        Err(e) => {
                            error!(shard = self.id, lsn, error = %e, "unreadable journal record");
                            self.stats.readings_lost.inc();
                            self.last_lsn = lsn;
                        }
                    }
                    n += 1;
                    if n.is_multiple_of(2048) {
                        self.resolve_unsure().await;
                        self.deliver().await;
                        if self.silver.len() >= SHARD_BATCH_ROWS
                            || self.bronze.len() >= SHARD_BATCH_ROWS
                        {
                            self.flush().await;
                        }
                    }
                }
                Err(e) => {
                    error!(shard = self.id, error = %e, "cannot read the journal");
                    break;
                }
            }
        }
        self.resolve_unsure().await;
        self.deliver().await;
        self.flush().await;
        self.stats.replayed.inc_by(n);
        // Replay done: marks no longer apply.
        self.marks = ReplayMarks::default();
        self.replaying = false;
        if n > 0 {
            info!(shard = self.id, records = n, "journal replayed");
        }
        n
    }

    /// Run until every connector has dropped its sender, then flush.
    pub async fn run(&mut self, rx: &mut mpsc::Receiver<Queued>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let depth = self
            .stats
            .queue_depth
            .with_label_values(&[&self.id.to_string()]);
        loop {
            tokio::select! {
                env = rx.recv() => match env {
                    Some(q) => {
                        let mut bytes = q.env.payload.len();
                        let mut batch = vec![q];
                        while batch.len() < DRAIN && bytes < SHARD_BATCH_BYTES {
                            match rx.try_recv() {
                                Ok(q) => {
                                    bytes += q.env.payload.len();
                                    batch.push(q);
                                }
                                Err(_) => break,
                            }
                        }
                        depth.set(rx.len() as i64);
                        if !self.ingest(batch).await {
                            break;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.flush().await;
                    self.maybe_trim(false);
                }
            }
        }
        self.deliver().await;
        self.flush().await;
    }

    /// Journal a batch, acknowledge it, process it. False when stopping
    /// while the journal cannot be written (the batch stays unacknowledged).
    async fn ingest(&mut self, mut batch: Vec<Queued>) -> bool {
        // Payloads the connectors left undecoded are decoded here, in
        // parallel shards, before they are journaled.
        for q in batch.iter_mut() {
            q.env.decode(&self.limits);
        }
        let mut backoff = Duration::from_millis(100);
        let lsns = loop {
            match self.journal_batch(&batch) {
                Ok(l) => break l,
                Err(e) => {
                    self.stats.journal_errors.inc();
                    error!(shard = self.id, error = %e, retry_in = ?backoff, "cannot write the ingest journal; nothing is acknowledged until it can");
                    if let Err(e) = self.journal.discard_unsynced() {
                        error!(shard = self.id, error = %e, "cannot reset the journal after a failed write");
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let now = now_ms();
        if let (Some(first), Some(&lsn)) = (batch.first(), lsns.last()) {
            self.ages.push_back((lsn, first.env.received_ms));
        }
        for env in batch.iter_mut().map(|q| &mut q.env) {
            if let Some(a) = env.ack.take() {
                a.done();
            }
            if let Some(v) = env.decoded.values().first() {
                if let Some(p) = &self.ack_probe {
                    p.record((now - v.ts_ms) as f64);
                }
                if let Some(p) = &self.received_probe {
                    p.record((env.received_ms - v.ts_ms) as f64);
                }
            }
            self.stats
                .ack_latency
                .observe((now - env.received_ms).max(0) as f64 / 1000.0);
        }
        self.stats.envelopes.inc_by(batch.len() as u64);
        let model = self.model.clone();
        for (q, lsn) in batch.into_iter().zip(lsns) {
            let env = q.env;
            let asset = env.asset.and_then(|a| model.assets.get(a as usize));
            let msg = Message {
                received_ms: env.received_ms,
                asset,
                unknown_asset: None,
                payload: &env.payload,
                decoded: &env.decoded,
            };
            self.process(lsn, &msg, &env.source, false);
        }
        self.resolve_unsure().await;
        self.deliver().await;
        if self.silver.len() >= SHARD_BATCH_ROWS
            || self.bronze.len() >= SHARD_BATCH_ROWS
            || self.bronze_bytes >= SHARD_BATCH_BYTES
        {
            self.flush().await;
        }
        true
    }

    fn journal_batch(
        &mut self,
        batch: &[Queued],
    ) -> Result<Vec<u64>, super::journal::JournalError> {
        let mut lsns = Vec::with_capacity(batch.len());
        let mut bytes = 0u64;
        for env in batch.iter().map(|q| &q.env) {
            record::encode(env, &self.model, &mut self.encode_buf);
            bytes += self.encode_buf.len() as u64;
            lsns.push(self.journal.append(&self.encode_buf)?);
        }
        // fdatasync blocks: let the runtime move other tasks off this thread.
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(|| self.journal.sync())?;
        } else {
            self.journal.sync()?;
        }
        self.stats.journaled_bytes.inc_by(bytes);
        self.stats.journal_syncs.inc();
        Ok(lsns)
    }

    /// Validate one message into the builders and the pending twin batches.
    fn process(&mut self, lsn: u64, msg: &Message<'_>, source: &str, replay: bool) {
        let asset = msg.asset;
        let plant = asset.map_or(UNASSIGNED_PLANT, |a| a.plant.as_str());
        let asset_id = asset.map(|a| a.id.as_str());
        let skip = |mark: u64| replay && lsn <= mark;
        let (skip_bronze, skip_silver, skip_quarantine) = (
            skip(self.marks.bronze),
            skip(self.marks.silver),
            skip(self.marks.quarantine),
        );
        let (twin_mark, events_until) = match (asset, replay) {
            (Some(a), true) => (
                self.marks.twins.get(&a.idx).copied().unwrap_or(0),
                self.marks.events_until.get(&a.idx).copied(),
            ),
            _ => (0, None),
        };
        let dedup = asset.map(|a| process::filters(&mut self.dedup, a, &self.seeds));
        let time = self.time;
        let staged = std::panic::catch_unwind(AssertUnwindSafe(|| {
            process::stage(msg, &time, dedup, lsn)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error!(shard = self.id, lsn, panic = %what, "a message could not be processed; quarantined");
            Staged {
                quarantine: vec![QuarantineRow {
                    signal: None,
                    expectation: "ingest_error",
                    reason: format!("the ingest stage failed on this message: {what}"),
                    payload: crate::connectors::kept_payload(msg.payload.as_bytes()),
                }],
                ..Default::default()
            }
        });
        if !skip_bronze {
            let parse_error = match msg.decoded {
                crate::connectors::Decoded::Error { reason, .. } => Some(reason.as_str()),
                _ => None,
            };
            let asset_name = asset_id.or(msg.unknown_asset.filter(|s| !s.is_empty()));
            self.bronze.push(
                msg.received_ms,
                source,
                plant,
                asset_name,
                msg.payload,
                parse_error,
            );
            self.bronze_bytes += msg.payload.len();
        }
        if matches!(msg.decoded, crate::connectors::Decoded::Error { .. }) {
            self.stats.parse_errors.inc();
        }
        for q in &staged.quarantine {
            self.stats
                .quarantined
                .with_label_values(&[q.expectation])
                .inc();
            if !skip_quarantine {
                self.quarantine.push(
                    msg.received_ms,
                    source,
                    plant,
                    asset_id.or(msg.unknown_asset.filter(|s| !s.is_empty())),
                    q.signal.as_deref(),
                    q.expectation,
                    &q.reason,
                    &q.payload,
                );
            }
        }
        self.stats.duplicates.inc_by(staged.duplicates);
        let twin = staged.twin;
        if !skip_silver {
            for r in &staged.silver {
                self.push_silver(r);
            }
        }
        // Silver holds a skipped record's rows: whether an unsure reading
        // came from this record (a twin needs it) or was a duplicate of an
        // earlier one, the row's ingest time tells.
        self.unsure
            .extend(staged.unsure.iter().map(|r| (lsn, *r, skip_silver)));
        if let Some(a) = asset {
            if lsn > twin_mark && (!twin.is_empty() || !staged.rejected.is_empty()) {
                let p = self.pending.entry(a.idx).or_default();
                p.readings.extend(twin);
                p.rejected.extend(staged.rejected);
                p.lsn = lsn;
                if replay {
                    p.replay = true;
                    p.events_until = events_until;
                }
            }
        }
        self.last_lsn = lsn;
    }

    fn push_silver(&mut self, r: &SilverRow) {
        if let Some((plant, line, asset, signal)) = process::names(&self.model, r) {
            self.silver.push(
                r.ts_ms,
                plant,
                line,
                asset,
                &signal,
                r.value,
                if r.uncertain { "UNCERTAIN" } else { "GOOD" },
                r.ingest_ms,
            );
            self.stats.readings.inc();
        }
    }

    /// Look up readings older than the dedup memory in silver; the new ones
    /// are accepted, the rest counted as duplicates.
    async fn resolve_unsure(&mut self) {
        if self.unsure.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.unsure);
        let keys: Vec<ReadingKey> = parked
            .iter()
            .filter_map(|(_, r, _)| {
                let (plant, _, asset, signal) = process::names(&self.model, r)?;
                Some(ReadingKey {
                    plant: plant.to_string(),
                    asset_id: asset.to_string(),
                    signal: signal.to_string(),
                    ts_ms: r.ts_ms,
                })
            })
            .collect();
        self.stats.lookups.inc_by(keys.len() as u64);
        let mut backoff = Duration::from_millis(200);
        let found = loop {
            match self.lake.find_readings(&keys).await {
                Ok(f) => break f,
                Err(e) => {
                    warn!(shard = self.id, error = %e, retry_in = ?backoff, "cannot look up late readings in silver; retrying");
                    if self.stop.is_cancelled() {
                        // Stopping: the records stay in the journal and are replayed.
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        for (lsn, r, committed) in parked {
            let Some((plant, _, asset, signal)) = process::names(&self.model, &r) else {
                continue;
            };
            let key = ReadingKey {
                plant: plant.to_string(),
                asset_id: asset.to_string(),
                signal: signal.to_string(),
                ts_ms: r.ts_ms,
            };
            let Some(f) = self
                .dedup
                .get_mut(&r.asset)
                .and_then(|v| v.get_mut(r.signal as usize))
            else {
                continue;
            };
            let in_silver = found.get(&key).copied();
            // Two copies of one late reading in the same batch: the second
            // finds the first accepted.
            let seen = f.check(r.ts_ms) == super::dedup::Verdict::Duplicate;
            f.accept(r.ts_ms, lsn);
            let original = match (committed, in_silver) {
                // Replayed record already in silver: it brought the row if
                // the row was received when the record was.
                (true, Some(at)) => !seen && at == r.ingest_ms,
                (true, None) => false,
                (false, Some(_)) => false,
                (false, None) => !seen,
            };
            if !original {
                if !committed {
                    self.stats.duplicates.inc();
                }
                continue;
            }
            if !committed {
                self.push_silver(&r);
            }
            if lsn <= self.marks.twins.get(&r.asset).copied().unwrap_or(0) {
                continue;
            }
            let events_until = self.marks.events_until.get(&r.asset).copied();
            let p = self.pending.entry(r.asset).or_default();
            p.readings.push(reading(&r));
            p.lsn = p.lsn.max(lsn);
            if self.replaying {
                p.replay = true;
                p.events_until = events_until;
            }
        }
    }

    /// Hand pending readings to the twins. A full mailbox makes the shard wait
    /// (back-pressure), it never drops.
    async fn deliver(&mut self) {
        let pending: Vec<(AssetIdx, TwinBatch)> = self.pending.drain().collect();
        for (idx, msg) in pending {
            let lsn = msg.lsn;
            if self.feed.deliver(idx, msg).await {
                self.delivered.insert(idx, lsn);
            } else {
                warn!(asset = idx, "twin did not take readings");
            }
        }
    }

    /// Hand built rows to the writers, with the journal position they reach.
    async fn flush(&mut self) {
        if !self.unsure.is_empty() {
            self.resolve_unsure().await;
            self.deliver().await;
        }
        let origin = Origin {
            stream: self.id,
            upto: self.last_lsn,
        };
        let w = self.writers.clone();
        let batches = [
            (!self.bronze.is_empty()).then(|| self.bronze.finish()),
            (!self.silver.is_empty()).then(|| self.silver.finish()),
            (!self.quarantine.is_empty()).then(|| self.quarantine.finish()),
        ];
        self.bronze_bytes = 0;
        for (i, (writer, batch)) in w.all().into_iter().zip(batches).enumerate() {
            match batch {
                Some(Ok(b)) => {
                    writer.append_from(b, origin).await;
                    self.reported[i] = origin.upto;
                }
                Some(Err(e)) => {
                    // Builders of one table always agree on their lengths.
                    error!(table = writer.table().name(), error = %e, "cannot build a batch; the journal keeps the records");
                }
                None if self.reported[i] < origin.upto => {
                    writer.progress(origin).await;
                    self.reported[i] = origin.upto;
                }
                None => {}
            }
        }
    }

    /// Trim the journal up to what every table and every twin checkpoint
    /// holds, remembering the duplicate filters' watermarks first. The
    /// segments trimmed are deleted before this returns when `inline`
    /// (shutdown), else on the blocking pool.
    pub fn maybe_trim(&mut self, inline: bool) {
        if self.last_trim.elapsed() < TRIM_EVERY {
            return;
        }
        self.last_trim = Instant::now();
        let silver_durable = self
            .writers
            .silver
            .marks(self.id)
            .map_or(0, |m| m.durable.load(std::sync::atomic::Ordering::Relaxed));
        for filters in self.dedup.values_mut() {
            for f in filters.iter_mut() {
                f.evict(self.dedup_recent, silver_durable);
            }
        }
        let t = self.trim_point();
        let shard = self.id.to_string();
        if t > self.journal.trimmed() {
            if let Err(e) = self.save_watermarks() {
                warn!(shard = self.id, error = %e, "cannot save dedup watermarks; not trimming");
            } else {
                match self.journal.trim_detached(t) {
                    Ok(old) => delete_segments(self.id, old, inline),
                    Err(e) => warn!(shard = self.id, error = %e, "cannot trim the journal"),
                }
            }
        }
        while self
            .ages
            .front()
            .is_some_and(|(lsn, _)| *lsn <= self.journal.trimmed())
        {
            self.ages.pop_front();
        }
        let age = self
            .ages
            .front()
            .map_or(0, |(_, at)| (now_ms() - at).max(0) / 1000);
        self.stats
            .journal_age_seconds
            .with_label_values(&[&shard])
            .set(age);
        self.stats
            .journal_pending_bytes
            .with_label_values(&[&shard])
            .set(self.journal.pending_bytes() as i64);
    }

    /// Up to where the journal may be trimmed: what every table holds and
    /// what every twin's durable checkpoint covers.
    fn trim_point(&self) -> u64 {
        let mut t = self.last_lsn;
        for w in self.writers.all() {
            let d = w
                .marks(self.id)
                .map_or(0, |m| m.durable.load(std::sync::atomic::Ordering::Relaxed));
            t = t.min(d);
        }
        for (&a, &d) in &self.delivered {
            let c = self.ledger.get(a);
            if d > c {
                t = t.min(c);
            }
        }
        t
    }

    /// Write the watermarks of every signal (atomically).
    fn save_watermarks(&self) -> Result<(), super::journal::JournalError> {
        let mut out = Vec::new();
        let mut n = 0u32;
        let mut body = Vec::new();
        for (&a, filters) in &self.dedup {
            let Some(asset) = self.model.assets.get(a as usize) else {
                continue;
            };
            for (s, f) in filters.iter().enumerate() {
                if f.watermark() == i64::MIN {
                    continue;
                }
                let Some(sig) = asset.twin.signals.get(s) else {
                    continue;
                };
                put(&mut body, asset.id.as_str());
                put(&mut body, &sig.name);
                body.extend_from_slice(&f.watermark().to_le_bytes());
                n += 1;
            }
        }
        // Watermarks of assets this run saw no data for are kept as they were.
        for (&(a, s), &w) in &self.seeds {
            if self.dedup.contains_key(&a) {
                continue;
            }
            let Some(asset) = self.model.assets.get(a as usize) else {
                continue;
            };
            let Some(sig) = asset.twin.signals.get(s as usize) else {
                continue;
            };
            put(&mut body, asset.id.as_str());
            put(&mut body, &sig.name);
            body.extend_from_slice(&w.to_le_bytes());
            n += 1;
        }
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&body);
        write_atomic(self.journal_dir(), WATERMARKS, &out)
    }

    fn journal_dir(&self) -> &std::path::Path {
        self.journal.dir()
    }

    /// Final trim at shutdown, after writers and twin checkpoints are durable
    /// (its segments deleted before it returns).
    pub fn final_trim(&mut self) {
        self.last_trim = Instant::now() - TRIM_EVERY;
        self.maybe_trim(true);
        let durable = |w: &TableWriter| {
            w.marks(self.id)
                .map_or(0, |m| m.durable.load(std::sync::atomic::Ordering::Relaxed))
        };
        tracing::debug!(
            shard = self.id,
            last = self.last_lsn,
            trimmed = self.journal.trimmed(),
            bronze = durable(&self.writers.bronze),
            silver = durable(&self.writers.silver),
            quarantine = durable(&self.writers.quarantine),
            "final trim"
        );
    }

    /// After a failure: forget everything in memory and replay the journal
    /// from what the (still running) writers and twins already have.
    pub async fn recover(&mut self) {
        let received = |w: &TableWriter| {
            w.marks(self.id)
                .map_or(0, |m| m.received.load(std::sync::atomic::Ordering::Relaxed))
        };
        let marks = ReplayMarks {
            bronze: received(&self.writers.bronze),
            silver: received(&self.writers.silver),
            quarantine: received(&self.writers.quarantine),
            twins: self.delivered.clone(),
            events_until: HashMap::new(),
        };
        if let Err(e) = self.journal.discard_unsynced() {
            error!(shard = self.id, error = %e, "cannot reset the journal");
        }
        self.bronze = BronzeRows::new(1024);
        self.bronze_bytes = 0;
        self.silver = ReadingRows::new(SHARD_BATCH_ROWS);
        self.quarantine = QuarantineRows::new();
        self.pending.clear();
        self.unsure.clear();
        self.dedup.clear();
        self.reported = [0; 3];
        self.marks = marks;
        self.last_lsn = self.journal.trimmed();
        self.replay().await;
    }
}

fn put(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn reading(r: &SilverRow) -> TypedReading {
    TypedReading {
        signal: r.signal,
        ts_ms: r.ts_ms,
        value: r.value,
        ingest_ms: r.ingest_ms,
    }
}

/// Read a watermarks file: (asset id, signal, watermark).
pub fn read_watermarks(path: &std::path::Path) -> std::io::Result<Vec<(String, String, i64)>> {
    let b = std::fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated watermarks file");
    let mut c = Cursor { b: &b, pos: 0 };
    let n = c.u32().ok_or_else(bad)?;
    let mut out = Vec::with_capacity((n as usize).min(1 << 20));
    for _ in 0..n {
        let a = c.str().ok_or_else(bad)?;
        let sg = c.str().ok_or_else(bad)?;
        let w = c.i64().ok_or_else(bad)?;
        out.push((a, sg, w));
    }
    Ok(out)
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}
