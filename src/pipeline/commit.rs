//! Committing a pipeline's output exactly once.
//!
//! Every commit carries application transactions (`txn { appId, version }`)
//! naming the source versions it covers. Three rules make it exactly once
//! under concurrency and failure:
//!
//! * **One snapshot.** The commit is made on the very snapshot of the target
//!   the markers were read from, so Delta's conflict check sees any other
//!   commit with the same `appId` made since (another process running the
//!   same pipeline) and refuses ours ([`PipelineError::Concurrent`]) instead
//!   of appending the same range twice.
//! * **A lock per pipeline** (a file lock under `<lakehouse>/_locks/` on a
//!   local lakehouse) keeps two updates of one pipeline on one machine from
//!   computing the same range at all.
//! * **Commits that report an error are checked.** delta-rs can commit and
//!   then fail a post-commit step (checkpoint, log clean-up); retrying would
//!   duplicate the rows. After an error the target is reloaded: if it holds
//!   our markers, the commit happened.

use std::path::PathBuf;
use std::time::Duration;

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;

use super::PipelineError;
use crate::lake::{LakeError, Lakehouse, Table, TableName};

/// The version recorded for `app` in the table's snapshot.
pub async fn txn_version(t: &DeltaTable, app: &str) -> Result<Option<i64>, PipelineError> {
    let open = |source| LakeError::Open {
        table: app.to_string(),
        source,
    };
    let state = t.snapshot().map_err(open)?;
    Ok(state
        .transaction_version(t.log_store().as_ref(), app)
        .await
        .map_err(open)?)
}

/// What to write in one commit.
pub struct Commit<'a> {
    pub target: &'a TableName,
    pub batches: Vec<RecordBatch>,
    pub partition_by: &'a [String],
    pub mode: SaveMode,
    /// Rows matching this predicate are replaced (with `SaveMode::Overwrite`).
    pub replace_where: Option<String>,
    pub txns: Vec<Transaction>,
    /// Add columns the target does not have yet (gold tables that grew).
    pub merge_schema: bool,
}

/// Commit on `snapshot` (the target as read when the markers were checked;
/// `None` if it did not exist). Returns the target after the commit.
pub async fn commit(
    lake: &Lakehouse,
    snapshot: Option<DeltaTable>,
    c: Commit<'_>,
) -> Result<DeltaTable, PipelineError> {
    let target = c.target.to_string();
    let werr = |message: String| PipelineError::Write {
        table: target.clone(),
        message,
    };
    let table = match snapshot {
        Some(t) => t,
        None => create(lake, c.target).await?,
    };
    let empty = c.batches.first().map(|b| b.slice(0, 0));
    let mut batches: Vec<RecordBatch> =
        c.batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    if batches.is_empty() {
        batches.extend(empty);
    }
    let props = CommitProperties::default().with_application_transactions(c.txns.clone());
    let mut w = table
        .write(batches)
        .with_save_mode(c.mode)
        .with_commit_properties(props);
    if !c.partition_by.is_empty() {
        w = w.with_partition_columns(c.partition_by.to_vec());
    }
    if let Some(pred) = c.replace_where {
        w = w.with_replace_where(pred);
    }
    if c.merge_schema {
        w = w.with_schema_mode(SchemaMode::Merge);
    }
    match w.await {
        Ok(t) => Ok(t),
        Err(e) => {
            let text = e.to_string();
            if is_concurrent_transaction(&e) {
                return Err(PipelineError::Concurrent {
                    table: target.clone(),
                });
            }
            // Did the commit happen before the error (a failed post-commit step)?
            if !c.txns.is_empty() {
                if let Ok(t) = lake.open_existing(c.target).await {
                    let mut all = true;
                    for tx in &c.txns {
                        if txn_version(&t, &tx.app_id).await? != Some(tx.version) {
                            all = false;
                            break;
                        }
                    }
                    if all {
                        tracing::warn!(table = %target, error = %text, "commit landed but a post-commit step failed; not retrying");
                        return Ok(t);
                    }
                }
            }
            Err(werr(format!(
                "{text} (if the pipeline's output columns changed, rebuild with `ironlake pipeline run {target} --full-refresh`)"
            )))
        }
    }
}

fn is_concurrent_transaction(e: &deltalake::DeltaTableError) -> bool {
    matches!(
        e,
        deltalake::DeltaTableError::Transaction {
            source: deltalake::kernel::transaction::TransactionError::CommitConflict(
                deltalake::kernel::transaction::CommitConflictError::ConcurrentTransaction
            )
        }
    )
}

/// Create an empty target (a contract table with its schema; otherwise the
/// first write creates the columns).
async fn create(lake: &Lakehouse, name: &TableName) -> Result<DeltaTable, PipelineError> {
    if let Some(t) = Table::from_table_name(name) {
        return Ok(lake.open_or_create(t).await?);
    }
    let url = lake.url_of(name);
    if let Ok(p) = url.to_file_path() {
        std::fs::create_dir_all(&p).map_err(|e| PipelineError::Write {
            table: name.to_string(),
            message: e.to_string(),
        })?;
    }
    deltalake::DeltaTableBuilder::from_url(url)
        .and_then(|b| b.build())
        .map_err(|e| PipelineError::Write {
            table: name.to_string(),
            message: e.to_string(),
        })
}

/// An exclusive lock on one pipeline's updates, released on drop.
pub struct PipelineLock {
    _file: Option<std::fs::File>,
}

impl PipelineLock {
    /// Take the lock of `pipeline`, waiting up to `wait` for another update
    /// to finish. `Ok(None)`: still held by another update after `wait`. On
    /// object storage there is no local lock (the commit check still holds).
    pub async fn acquire(
        lake: &Lakehouse,
        pipeline: &str,
        wait: Duration,
    ) -> Result<Option<PipelineLock>, PipelineError> {
        let Ok(root) = lake.root().to_file_path() else {
            return Ok(Some(PipelineLock { _file: None }));
        };
        let dir: PathBuf = root.join("_locks");
        let path = dir.join(format!("pipeline-{pipeline}.lock"));
        let io = |e: std::io::Error| PipelineError::Write {
            table: path.display().to_string(),
            message: format!("pipeline lock: {e}"),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(PipelineLock { _file: Some(file) })),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }
}
