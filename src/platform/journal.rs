//! Opening the ingest journal of a platform: its directory (locked against
//! a second process), its identity and number of streams, what each table
//! and each twin already holds of it, and the duplicate filters' watermarks.
//!
//! The journal's identity (`journal.json`: a random id and the number of
//! shards) is part of every marker the tables carry
//! (`ironlake:ingest:<id>:<shard>`). A new `ingest.shards` applies once the
//! journal is empty (after a clean stop): the journal then starts afresh
//! under a new id; before that, the old number of shards stays in force so
//! that replayed records meet the markers they were written under.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::assets::{AssetIdx, AssetModel, SignalIdx};
use crate::ingest::journal::{write_atomic, Journal, JournalError};
use crate::ingest::shard::{read_watermarks, WATERMARKS};
use crate::lake::{Lakehouse, Table};

/// `journal.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalMeta {
    pub id: String,
    pub shards: usize,
    pub created_ms: i64,
}

/// The opened journal of a platform.
pub struct Journals {
    pub meta: JournalMeta,
    pub streams: Vec<Journal>,
    /// Held while the platform runs: one process per journal.
    _lock: File,
}

/// Where the journal lives: `ingest.journal_dir`, or `_journal` under a
/// local lakehouse.
pub fn journal_dir(configured: &str, lake: &Lakehouse) -> PathBuf {
    if !configured.is_empty() {
        return PathBuf::from(configured);
    }
    lake.root()
        .to_file_path()
        .map(|p| p.join("_journal"))
        .unwrap_or_else(|_| PathBuf::from("journal"))
}

fn stream_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("shard-{i}"))
}

fn new_id() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    format!("{:016x}", r.random::<u64>())
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: dir.display().to_string(),
        source,
    }
}

impl Journals {
    /// Open (or create) the journal in `dir` for `shards` shards.
    pub fn open(dir: &Path, shards: usize, segment_bytes: u64) -> Result<Journals, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(JournalError::Io {
                path: dir.display().to_string(),
                source: std::io::Error::other(
                    "another ironlake process is using this journal (ingest.journal_dir)",
                ),
            });
        }
        let meta_path = dir.join("journal.json");
        let existing: Option<JournalMeta> = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut meta = match existing {
            Some(m) => m,
            None => JournalMeta {
                id: new_id(),
                shards,
                created_ms: crate::time::now_ms(),
            },
        };
        let mut streams = Vec::new();
        for i in 0..meta.shards {
            streams.push(open_stream(dir, i, segment_bytes)?);
        }
        if meta.shards != shards {
            let pending: u64 = streams.iter().map(|j| j.pending_bytes()).sum();
            if pending == 0 {
                info!(
                    from = meta.shards,
                    to = shards,
                    "the journal is empty: starting it afresh with the new number of shards"
                );
                for (i, j) in streams.drain(..).enumerate() {
                    let d = j.dir().to_path_buf();
                    drop(j);
                    reset_stream(&d).map_err(io(&d))?;
                    let _ = i;
                }
                meta = JournalMeta {
                    id: new_id(),
                    shards,
                    created_ms: crate::time::now_ms(),
                };
                for i in 0..shards {
                    streams.push(open_stream(dir, i, segment_bytes)?);
                }
            } else {
                warn!(
                    journal = meta.shards,
                    configured = shards,
                    "the journal holds data written with {} shards: keeping {} shards until it is empty (after a clean stop)",
                    meta.shards,
                    meta.shards
                );
            }
        }
        let bytes = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        write_atomic(dir, "journal.json", &bytes)?;
        Ok(Journals {
            meta,
            streams,
            _lock: lock,
        })
    }

    /// The app id prefix of the tables' markers.
    pub fn app_prefix(&self) -> String {
        format!("ironlake:ingest:{}", self.meta.id)
    }

    /// Bytes above the trim position, all streams.
    pub fn pending_bytes(&self) -> u64 {
        self.streams.iter().map(|j| j.pending_bytes()).sum()
    }
}

fn open_stream(dir: &Path, i: usize, segment_bytes: u64) -> Result<Journal, JournalError> {
    let d = stream_dir(dir, i);
    let (j, rec) = Journal::open(&d, segment_bytes)?;
    if rec.torn_bytes > 0 {
        warn!(
            shard = i,
            bytes = rec.torn_bytes,
            "journal: cut a torn record left by a crash (never acknowledged)"
        );
    }
    if rec.corrupt_records > 0 {
        tracing::error!(
            shard = i,
            records = rec.corrupt_records,
            "journal: unreadable records (disk corruption)"
        );
    }
    Ok(j)
}

/// Delete a stream's segments and trim position (its watermarks stay).
fn reset_stream(d: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(d)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".wal") || name == "trim" {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// The duplicate filters' watermarks saved by every stream (merged by
/// maximum), resolved against the model. `None` when no stream ever saved
/// any (a new journal).
pub fn saved_watermarks(
    dir: &Path,
    model: &AssetModel,
) -> Option<HashMap<(AssetIdx, SignalIdx), i64>> {
    let mut found = false;
    let mut out = HashMap::new();
    let rd = std::fs::read_dir(dir).ok()?;
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with("shard-") {
            continue;
        }
        let p = e.path().join(WATERMARKS);
        match read_watermarks(&p) {
            Ok(entries) => {
                found = true;
                for (a, s, w) in entries {
                    if let Some(asset) = model.asset(&a) {
                        if let Some(sig) = asset.twin.signal(&s) {
                            let e = out.entry((asset.idx, sig)).or_insert(i64::MIN);
                            *e = (*e).max(w);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(file = %p.display(), error = %e, "unreadable dedup watermarks"),
        }
    }
    found.then_some(out)
}

/// Watermarks from `silver.readings` itself (a lakehouse written before
/// the journal existed, or a journal directory that was deleted): the
/// newest plausible reading per signal within the accepted past.
pub async fn watermarks_from_silver(
    lake: &Lakehouse,
    model: &AssetModel,
    max_past_ms: i64,
    max_future_ms: i64,
) -> HashMap<(AssetIdx, SignalIdx), i64> {
    let now = crate::time::now_ms();
    let mut out = HashMap::new();
    let keys = ["asset_id", "signal"];
    match lake
        .newest_ts(
            Table::SilverReadings,
            &keys,
            now - max_past_ms,
            now + max_future_ms,
        )
        .await
    {
        Ok(rows) => {
            for (k, w) in rows {
                if let Some(asset) = model.asset(&k[0]) {
                    if let Some(sig) = asset.twin.signal(&k[1]) {
                        out.insert((asset.idx, sig), w);
                    }
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot read silver watermarks; late duplicates are looked up as they come")
        }
    }
    out
}
