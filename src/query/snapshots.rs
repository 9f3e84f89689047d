//! The tables' newest snapshots, kept between queries.
//!
//! Opening a Delta table reads its log: the last checkpoint and every commit
//! since (17 ms a query for a `silver.readings` of 800 files and 34 commits,
//! most of a dashboard question's time on small tables). An engine keeps
//! the snapshot it loaded and, for the next query, reads only the commits
//! made since, so every query still sees every commit made before it
//! started.
//!
//! A table can be deleted and created again under the same name (a test
//! lakehouse, a table dropped by hand). Before reusing a snapshot the cache
//! checks that the commit file of its version is still the one it read
//! (size and modification time); otherwise it opens the table afresh.

use std::collections::HashMap;
use std::sync::Mutex;

use deltalake::DeltaTable;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use super::QueryError;
use crate::lake::{Lakehouse, TableName};

/// What identifies the commit a snapshot was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CommitStamp {
    size: u64,
    modified_ms: i64,
}

struct Entry {
    table: DeltaTable,
    stamp: Option<CommitStamp>,
}

/// Newest snapshots by table, shared by the clones of an engine.
#[derive(Default)]
pub(super) struct Snapshots {
    tables: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.tables.lock().map(|t| t.len()).unwrap_or(0);
        write!(f, "Snapshots({n} tables)")
    }
}

async fn stamp(table: &DeltaTable) -> Option<CommitStamp> {
    let version = table.version()?;
    let path = ObjectPath::from(format!("_delta_log/{version:020}.json"));
    let meta = table
        .log_store()
        .object_store(None)
        .head(&path)
        .await
        .ok()?;
    Some(CommitStamp {
        size: meta.size,
        modified_ms: meta.last_modified.timestamp_millis(),
    })
}

/// The table opened afresh from its log with its stamp, or `None` if it is
/// gone.
async fn fresh(
    lake: &Lakehouse,
    name: &TableName,
) -> Result<Option<(DeltaTable, Option<CommitStamp>)>, QueryError> {
    let Some(t) = super::open_table(lake, name).await? else {
        return Ok(None);
    };
    let s = stamp(&t).await;
    Ok(Some((t, s)))
}

impl Snapshots {
    /// `name` at its newest committed version, or `None` if it does not
    /// exist.
    pub(super) async fn latest(
        &self,
        lake: &Lakehouse,
        name: &TableName,
    ) -> Result<Option<DeltaTable>, QueryError> {
        let key = name.to_string();
        if !lake.exists(name) {
            self.lock().remove(&key);
            return Ok(None);
        }
        let cached = self
            .lock()
            .get(&key)
            .map(|e| (e.table.clone(), e.stamp.clone()));
        let (table, stamp) = match cached {
            Some((mut table, Some(was))) if stamp(&table).await.as_ref() == Some(&was) => {
                let before = table.version();
                match table.update_incremental(None).await {
                    // No new commit: the stamp just read still holds.
                    Ok(()) if table.version() == before => (table, Some(was)),
                    Ok(()) => {
                        let s = stamp(&table).await;
                        (table, s)
                    }
                    Err(e) => {
                        tracing::debug!(table = %key, error = %e, "snapshot update failed; opening afresh");
                        match fresh(lake, name).await? {
                            Some(f) => f,
                            None => return Ok(None),
                        }
                    }
                }
            }
            _ => match fresh(lake, name).await? {
                Some(f) => f,
                None => return Ok(None),
            },
        };
        // Last writer wins: a query that loaded an older version only
        // makes the next one read a few more commits.
        self.lock().insert(
            key,
            Entry {
                table: table.clone(),
                stamp,
            },
        );
        Ok(Some(table))
    }

    /// How many tables are held.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}
