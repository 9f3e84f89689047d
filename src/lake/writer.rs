//! Batching table writers: one task per table buffers record batches and
//! commits them to Delta when `flush_rows` are waiting or `flush_interval_ms`
//! has passed, so files stay large and commits few.
//!
//! A failed commit (full disk, storage outage) keeps the rows and retries with
//! back-off; while the buffer is over its bound the writer stops taking rows,
//! which slows ingestion instead of growing memory or losing data.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
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
use crate::connectors::now_ms;
use crate::metrics::LatencyProbe;

/// Counters of one writer, shown by `/api/health`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub rows_committed: AtomicU64,
    pub commits: AtomicU64,
    pub version: AtomicI64,
    pub pending_rows: AtomicU64,
    pub failed_commits: AtomicU64,
    pub last_error: Mutex<Option<String>>,
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

enum Msg {
    Rows(RecordBatch),
    Flush(oneshot::Sender<Result<(), String>>),
    /// Commit what is buffered and stop, even if other handles still exist.
    Close,
}

/// Handle to a running table writer.
#[derive(Clone)]
pub struct TableWriter {
    table: Table,
    tx: mpsc::Sender<Msg>,
    stats: Arc<WriterStats>,
}

/// Options of a writer beyond the lake config.
#[derive(Default, Clone)]
pub struct WriterOptions {
    /// Record `commit time - ts` of committed rows (column `ts`) here.
    pub commit_latency: Option<Arc<LatencyProbe>>,
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
        let stats = Arc::new(WriterStats::default());
        stats
            .version
            .store(delta.version().map_or(-1, |v| v as i64), Ordering::Relaxed);
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
            opts,
        };
        let span = tracing::info_span!("lake_writer", table = table.name());
        let join = tokio::spawn(task.run().instrument(span));
        Ok((TableWriter { table, tx, stats }, join))
    }

    /// Queue a batch; waits while the writer is saturated. Returns false when
    /// the writer has stopped.
    pub async fn append(&self, batch: RecordBatch) -> bool {
        if batch.num_rows() == 0 {
            return true;
        }
        self.tx.send(Msg::Rows(batch)).await.is_ok()
    }

    /// Queue a batch without waiting; gives the batch back when the queue is full.
    pub fn try_append(&self, batch: RecordBatch) -> Result<(), RecordBatch> {
        match self.tx.try_send(Msg::Rows(batch)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Msg::Rows(b)))
            | Err(mpsc::error::TrySendError::Closed(Msg::Rows(b))) => Err(b),
            Err(_) => Ok(()),
        }
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

    /// The table written.
    pub fn table(&self) -> Table {
        self.table
    }
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
                    Some(Msg::Rows(b)) => {
                        self.buf_rows += b.num_rows();
                        self.buf.push(b);
                        self.stats.pending_rows.store(self.buf_rows as u64, Ordering::Relaxed);
                        if deadline.is_none() {
                            deadline = Some(Instant::now() + self.interval);
                        }
                        if self.buf_rows >= self.flush_rows {
                            deadline = Some(Instant::now());
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
        // Shutdown: try hard to commit what is left.
        for attempt in 0..8u32 {
            match self.commit().await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, attempt, "final commit failed");
                    tokio::time::sleep(Duration::from_millis(250 << attempt.min(4))).await;
                }
            }
        }
        error!(
            rows = self.buf_rows,
            "giving up: rows could not be committed at shutdown"
        );
    }

    async fn commit(&mut self) -> Result<(), LakeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.buf);
        let rows = self.buf_rows;
        let started = Instant::now();
        let res = self
            .delta
            .clone()
            .write(batches.clone())
            .with_partition_columns(self.table.partition_columns().iter().map(|s| s.to_string()))
            .with_save_mode(SaveMode::Append)
            .with_target_file_size(self.target_file)
            .await;
        match res {
            Ok(t) => {
                self.delta = t;
                self.buf_rows = 0;
                let s = &self.stats;
                s.rows_committed.fetch_add(rows as u64, Ordering::Relaxed);
                s.commits.fetch_add(1, Ordering::Relaxed);
                s.version.store(
                    self.delta.version().map_or(-1, |v| v as i64),
                    Ordering::Relaxed,
                );
                s.pending_rows.store(0, Ordering::Relaxed);
                *s.last_error.lock() = None;
                debug!(rows, ms = started.elapsed().as_millis() as u64, "committed");
                if let Some(p) = &self.opts.commit_latency {
                    record_commit_latency(p, &batches);
                }
                Ok(())
            }
            Err(source) => {
                self.buf = batches;
                self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                let e = LakeError::Delta {
                    table: self.table.name(),
                    source,
                };
                *self.stats.last_error.lock() = Some(e.to_string());
                // The table handle may be stale after a failed commit: reload it.
                if let Err(le) = self.delta.update_state().await {
                    debug!(error = %le, "reload after failed commit");
                }
                Err(e)
            }
        }
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
