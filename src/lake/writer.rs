//! Batching table writers: one task per table buffers record batches and
//! commits them to Delta when `flush_rows` are waiting or `flush_interval_ms`
//! has passed, so files stay large and commits few.
//!
//! **Journal positions.** Rows that come from the ingest journal arrive
//! tagged with their origin (a journal stream, e.g. one ingest shard) and
//! the position up to which that origin has handed over everything it has
//! for this table. Each commit carries, per origin, an application
//! transaction (`txn { appId: "<prefix>:<origin>", version: position }`)
//! in the same atomic commit as the rows. After a crash, the ingest stage
//! reads these markers and replays its journal from there: what a commit
//! holds is never written twice, what it does not is written again.
//!
//! **Failures.** A failed commit (full disk, storage outage) keeps the rows
//! and retries with back-off; while the buffer is over its bound the writer
//! stops taking rows, which slows ingestion instead of growing memory or
//! losing data. A commit that reports an error after it landed (a failed
//! checkpoint or log clean-up) is recognised by its markers and not
//! retried. At shutdown the writer tries for a bounded time and then gives
//! up: rows from the journal are still in the journal and are replayed at
//! the next start.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, warn, Instrument};

use super::{LakeError, Lakehouse, Table};
use crate::config::LakeConfig;
use crate::metrics::{Histogram, LatencyProbe};
use crate::time::now_ms;

/// How long a stopping writer keeps trying to commit.
const SHUTDOWN_TRIES: Duration = Duration::from_secs(10);

/// Counters of one writer, shown by `/api/health` and `/metrics`.
#[derive(Debug)]
pub struct WriterStats {
    pub rows_committed: AtomicU64,
    pub commits: AtomicU64,
    pub version: AtomicI64,
    pub pending_rows: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Rows given up at shutdown that no journal holds (must stay 0).
    pub rows_lost: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Seconds from the first buffered row to its commit.
    pub commit_latency: Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            rows_committed: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            version: AtomicI64::new(-1),
            pending_rows: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            rows_lost: AtomicU64::new(0),
            last_error: Mutex::new(None),
            commit_latency: crate::metrics::latency_histogram(
                "ironlake_commit_latency_seconds",
                "Time from the first buffered row to its Delta commit",
            ),
        }
    }
}

/// Serializable view of [`WriterStats`].
#[derive(Debug, Clone, Serialize)]
pub struct WriterStatus {
    pub table: &'static str,
    pub rows_committed: u64,
    pub commits: u64,
    pub version: i64,
    pub pending_rows: u64,
    pub failed_commits: u64,
    pub last_error: Option<String>,
}

/// Where rows come from: a journal stream and how far it has handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Index of the journal stream (an ingest shard).
    pub stream: usize,
    /// Every record of the stream up to this position has been handed over.
    pub upto: u64,
}

enum Msg {
    Rows(RecordBatch, Option<Origin>),
    /// A stream has handed over everything up to a position (with no rows
    /// for this table since its last rows).
    Progress(Origin),
    Flush(oneshot::Sender<Result<(), String>>),
    /// Commit what is buffered and stop, even if other handles still exist.
    Close,
}

/// Per journal stream: how far it has handed over, and how far the table
/// durably holds it.
#[derive(Debug, Default)]
pub struct StreamMarks {
    /// Position committed (or, with nothing of the stream pending,
    /// handed over): the journal may be trimmed up to here for this table.
    pub durable: AtomicU64,
    /// Position handed over (committed or buffered).
    pub received: AtomicU64,
}

/// Handle to a running table writer.
#[derive(Clone)]
pub struct TableWriter {
    table: Table,
    tx: mpsc::Sender<Msg>,
    stats: Arc<WriterStats>,
    marks: Arc<Vec<StreamMarks>>,
    app_prefix: Arc<str>,
}

/// Options of a writer beyond the lake config.
#[derive(Default, Clone)]
pub struct WriterOptions {
    /// Record `commit time - ts` of committed rows (column `ts`) here.
    pub commit_latency: Option<Arc<LatencyProbe>>,
    /// Journal streams feeding this table, and the app id prefix of their
    /// markers (`<prefix>:<stream>`).
    pub streams: usize,
    pub app_prefix: String,
    /// Where commit latencies are observed (a registered metric).
    pub latency: Option<Histogram>,
}

impl TableWriter {
    /// Open (or create) the table and start its writer task.
    pub async fn start(
        lake: &Lakehouse,
        table: Table,
        cfg: &LakeConfig,
        opts: WriterOptions,
    ) -> Result<(Self, JoinHandle<()>), LakeError> {
        let delta = lake.open_or_create(table).await?;
        let mut stats = WriterStats::default();
        if let Some(h) = &opts.latency {
            stats.commit_latency = h.clone();
        }
        let stats = Arc::new(stats);
        stats
            .version
            .store(delta.version().map_or(-1, |v| v as i64), Ordering::Relaxed);
        let marks: Arc<Vec<StreamMarks>> =
            Arc::new((0..opts.streams).map(|_| StreamMarks::default()).collect());
        let app_prefix: Arc<str> = Arc::from(opts.app_prefix.as_str());
        // Markers already committed: the journal positions this table holds.
        for (s, m) in marks.iter().enumerate() {
            let v = committed_marker(&delta, &app_id(&app_prefix, s))
                .await
                .map_err(|source| LakeError::Delta {
                    table: table.name(),
                    source,
                })?
                .unwrap_or(0);
            m.durable.store(v, Ordering::Relaxed);
            m.received.store(v, Ordering::Relaxed);
        }
        let (tx, rx) = mpsc::channel(64);
        let task = WriterTask {
            table,
            delta,
            rx,
            stats: stats.clone(),
            flush_rows: cfg.flush_rows,
            interval: Duration::from_millis(cfg.flush_interval_ms),
            target_file: NonZeroU64::new(cfg.target_file_mb.max(1) * 1024 * 1024),
            buf: Vec::new(),
            buf_rows: 0,
            first_row_at: None,
            pending: vec![None; marks.len()],
            marks: marks.clone(),
            app_prefix: app_prefix.clone(),
            opts,
        };
        let span = tracing::info_span!("lake_writer", table = table.name());
        let join = tokio::spawn(task.run().instrument(span));
        Ok((
            TableWriter {
                table,
                tx,
                stats,
                marks,
                app_prefix,
            },
            join,
        ))
    }

    /// Queue a batch; waits while the writer is saturated. Returns false when
    /// the writer has stopped.
    pub async fn append(&self, batch: RecordBatch) -> bool {
        if batch.num_rows() == 0 {
            return true;
        }
        self.tx.send(Msg::Rows(batch, None)).await.is_ok()
    }

    /// Queue a batch from a journal stream, with the position it has handed
    /// over up to. Returns false when the writer has stopped.
    pub async fn append_from(&self, batch: RecordBatch, origin: Origin) -> bool {
        if batch.num_rows() == 0 {
            return self.progress(origin).await;
        }
        self.tx.send(Msg::Rows(batch, Some(origin))).await.is_ok()
    }

    /// A journal stream has handed over everything up to a position.
    pub async fn progress(&self, origin: Origin) -> bool {
        self.tx.send(Msg::Progress(origin)).await.is_ok()
    }

    /// Commit everything queued so far and wait for it.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| "writer stopped".to_string())?;
        rx.await.map_err(|_| "writer stopped".to_string())?
    }

    /// Commit what is buffered and stop the writer task.
    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Close).await;
    }

    /// Status for the health endpoint.
    pub fn status(&self) -> WriterStatus {
        let s = &self.stats;
        WriterStatus {
            table: self.table.name(),
            rows_committed: s.rows_committed.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            version: s.version.load(Ordering::Relaxed),
            pending_rows: s.pending_rows.load(Ordering::Relaxed),
            failed_commits: s.failed_commits.load(Ordering::Relaxed),
            last_error: s.last_error.lock().clone(),
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// Journal positions of a stream in this table.
    pub fn marks(&self, stream: usize) -> Option<&StreamMarks> {
        self.marks.get(stream)
    }

    /// The app id of a stream's markers.
    pub fn app_id(&self, stream: usize) -> String {
        app_id(&self.app_prefix, stream)
    }

    /// The table written.
    pub fn table(&self) -> Table {
        self.table
    }
}

fn app_id(prefix: &str, stream: usize) -> String {
    format!("{prefix}:{stream}")
}

/// The version of an application transaction in a table's snapshot.
pub async fn committed_marker(
    t: &DeltaTable,
    app: &str,
) -> Result<Option<u64>, deltalake::DeltaTableError> {
    if t.version().is_none() {
        return Ok(None);
    }
    let state = t.snapshot()?;
    Ok(state
        .transaction_version(t.log_store().as_ref(), app)
        .await?
        .map(|v| v.max(0) as u64))
}

struct WriterTask {
    table: Table,
    delta: DeltaTable,
    rx: mpsc::Receiver<Msg>,
    stats: Arc<WriterStats>,
    flush_rows: usize,
    interval: Duration,
    target_file: Option<NonZeroU64>,
    buf: Vec<RecordBatch>,
    buf_rows: usize,
    first_row_at: Option<Instant>,
    /// Per stream: the position its buffered rows reach (None: nothing buffered).
    pending: Vec<Option<u64>>,
    marks: Arc<Vec<StreamMarks>>,
    app_prefix: Arc<str>,
    opts: WriterOptions,
}

impl WriterTask {
    async fn run(mut self) {
        let mut deadline: Option<Instant> = None;
        let mut backoff = Duration::from_millis(200);
        // Stop taking rows above this bound: back-pressure instead of memory growth.
        let max_buffer = self.flush_rows.saturating_mul(4);
        loop {
            let accepting = self.buf_rows < max_buffer;
            tokio::select! {
                msg = self.rx.recv(), if accepting => match msg {
                    Some(Msg::Rows(b, origin)) => {
                        self.buf_rows += b.num_rows();
                        self.buf.push(b);
                        self.first_row_at.get_or_insert_with(Instant::now);
                        if let Some(o) = origin {
                            if let Some(p) = self.pending.get_mut(o.stream) {
                                *p = Some(o.upto);
                                self.marks[o.stream].received.store(o.upto, Ordering::Relaxed);
                            }
                        }
                        self.stats.pending_rows.store(self.buf_rows as u64, Ordering::Relaxed);
                        if deadline.is_none() {
                            deadline = Some(Instant::now() + self.interval);
                        }
                        if self.buf_rows >= self.flush_rows {
                            deadline = Some(Instant::now());
                        }
                    }
                    Some(Msg::Progress(o)) => {
                        if let Some(m) = self.marks.get(o.stream) {
                            m.received.store(o.upto, Ordering::Relaxed);
                            match &mut self.pending[o.stream] {
                                // Rows of the stream wait: their commit covers this too.
                                Some(p) => *p = o.upto,
                                None => m.durable.store(o.upto, Ordering::Relaxed),
                            }
                        }
                    }
                    Some(Msg::Flush(reply)) => {
                        let r = self.commit().await.map_err(|e| e.to_string());
                        if r.is_ok() {
                            deadline = None;
                        }
                        let _ = reply.send(r);
                    }
                    Some(Msg::Close) | None => break,
                },
                _ = sleep_until(deadline) => {
                    match self.commit().await {
                        Ok(()) => {
                            backoff = Duration::from_millis(200);
                            deadline = None;
                        }
                        Err(e) => {
                            warn!(error = %e, rows = self.buf_rows, retry_in = ?backoff, "commit failed; keeping rows and retrying");
                            deadline = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
        }
        // Shutdown: try to commit what is left, for a bounded time.
        let give_up = Instant::now() + SHUTDOWN_TRIES;
        let mut wait = Duration::from_millis(250);
        loop {
            match self.commit().await {
                Ok(()) => return,
                Err(e) if Instant::now() + wait < give_up => {
                    warn!(error = %e, "final commit failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    let from_journal = self.pending.iter().any(Option::is_some);
                    if from_journal {
                        warn!(error = %e, rows = self.buf_rows, "giving up at shutdown: the rows stay in the ingest journal and are written at the next start");
                    } else {
                        error!(error = %e, rows = self.buf_rows, "giving up at shutdown: rows could not be committed");
                        self.stats
                            .rows_lost
                            .fetch_add(self.buf_rows as u64, Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
    }

    /// The markers of the streams with rows in this commit.
    fn txns(&self) -> Vec<Transaction> {
        self.pending
            .iter()
            .enumerate()
            .filter_map(|(s, p)| {
                p.map(|upto| Transaction::new(app_id(&self.app_prefix, s), upto as i64))
            })
            .collect()
    }

    async fn commit(&mut self) -> Result<(), LakeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.buf);
        let rows = self.buf_rows;
        let started = Instant::now();
        let txns = self.txns();
        let props = CommitProperties::default().with_application_transactions(txns.clone());
        let res = self
            .delta
            .clone()
            .write(batches.clone())
            .with_partition_columns(self.table.partition_columns().iter().map(|s| s.to_string()))
            .with_save_mode(SaveMode::Append)
            .with_target_file_size(self.target_file)
            .with_commit_properties(props)
            .await;
        let landed = match res {
            Ok(t) => {
                self.delta = t;
                true
            }
            Err(source) => {
                // The table handle may be stale after a failed commit: reload it.
                if let Err(le) = self.delta.update_state().await {
                    debug!(error = %le, "reload after failed commit");
                }
                // Landed anyway (a post-commit step failed)? Only markers can tell.
                let mut landed = !txns.is_empty();
                for t in &txns {
                    match committed_marker(&self.delta, &t.app_id).await {
                        Ok(Some(v)) if v as i64 >= t.version => {}
                        _ => landed = false,
                    }
                }
                let e = LakeError::Delta {
                    table: self.table.name(),
                    source,
                };
                if landed {
                    warn!(error = %e, "the commit landed but a step after it failed; not writing the rows again");
                } else {
                    self.buf = batches.clone();
                    self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                    *self.stats.last_error.lock() = Some(e.to_string());
                    return Err(e);
                }
                true
            }
        };
        debug_assert!(landed);
        self.buf_rows = 0;
        for (s, p) in self.pending.iter_mut().enumerate() {
            if let Some(upto) = p.take() {
                self.marks[s].durable.store(upto, Ordering::Relaxed);
            }
        }
        let s = &self.stats;
        s.rows_committed.fetch_add(rows as u64, Ordering::Relaxed);
        s.commits.fetch_add(1, Ordering::Relaxed);
        s.version.store(
            self.delta.version().map_or(-1, |v| v as i64),
            Ordering::Relaxed,
        );
        s.pending_rows.store(0, Ordering::Relaxed);
        *s.last_error.lock() = None;
        if let Some(t0) = self.first_row_at.take() {
            s.commit_latency.observe(t0.elapsed().as_secs_f64());
        }
        debug!(rows, ms = started.elapsed().as_millis() as u64, "committed");
        if let Some(p) = &self.opts.commit_latency {
            record_commit_latency(p, &batches);
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn record_commit_latency(p: &LatencyProbe, batches: &[RecordBatch]) {
    let now_us = now_ms() * 1000;
    for b in batches {
        if let Some(ts) = b
            .column_by_name("ts")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        {
            // Sample to keep the probe cheap.
            let step = (ts.len() / 256).max(1);
            p.record_all(
                (0..ts.len())
                    .step_by(step)
                    .map(|i| (now_us - ts.value(i)) as f64 / 1000.0),
            );
        }
    }
}
