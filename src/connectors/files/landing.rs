//! The landing folder at run time (like Databricks Auto Loader): each
//! `[[files.sources]]` entry is one [`Source`] that watches its folder,
//! takes every complete file once, in order, and hands it to the ingest
//! stage's bulk path in slices ([`FileChunk`]).
//!
//! **Exactly once.** A new file gets a range of *positions* (one per slice:
//! `chunk_mb` of text, or a Parquet row group) recorded in the source's
//! manifest before it is read. The ingest stage commits each slice to
//! every table with the application transaction `landing:<source>` =
//! position in the same commit as the rows, and answers once all hold it;
//! the manifest then records the slice as done. After a crash the slices
//! not recorded are read again and the ingest stage skips the tables whose
//! marker already holds them: nothing is lost, nothing written twice.
//!
//! **Complete files only.** A file is read once its size and modification
//! time have not changed for `settle_ms`; names ending in `.tmp`, `.part`,
//! `.inprogress` or starting with `.` or `_` are never read (write there,
//! then rename). A file that changes after it was taken is not read again
//! (counted in `ironlake_landing_files_total{outcome="changed"}`).
//!
//! **Schema.** Inferred from the first file, then evolved per
//! `schema_evolution` (see [`Evolution`]); every version is kept in the
//! source's `schema.json`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::config::{Evolution, FilesSection, Format, Layout, Resolved};
use super::infer::{self, SourceSchema};
use super::map::{map_rows, Mapping};
use super::store::StoreError;
use super::{ColumnKind, FileError, ParsedFile};
use crate::assets::{AssetIdx, AssetModel, SignalDef};
use crate::config::ConfigError;
use crate::connectors::{
    parse_table, section_table, ChunkIssue, ChunkReport, Connector, FileChunk, Protocol, Source,
    SourceContext,
};
use crate::metrics::{IntCounterVec, IntGaugeVec, Opts, Registry};
use crate::time::now_ms;

/// The landing folder protocol (`[files]`).
pub struct Files;

impl Protocol for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn check_signal(&self, _signal: &SignalDef, _binding: &toml::Value) -> Result<(), String> {
        Err("landing files name their signals in their rows or columns; there is no per-signal `files` binding".into())
    }

    fn resolve(
        &self,
        section: Option<&toml::Value>,
        platform_file: &str,
        model: &AssetModel,
        machines: &[AssetIdx],
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let sec: FilesSection = parse_table(section_table(section), platform_file, "files")?;
        let sources = sec.resolve(platform_file)?;
        if sources.is_empty() {
            if let Some(a) = machines.first().and_then(|&i| model.assets.get(i as usize)) {
                return Err(ConfigError::invalid(
                    &a.source.file,
                    &format!("{}.protocol", a.source.key),
                    "`files`: no [[files.sources]] in the platform file feeds this machine",
                ));
            }
        }
        Ok(Box::new(FilesConnector {
            sources,
            model: Arc::new(model.clone()),
            machines: machines.to_vec(),
            stats: Arc::new(LandingStats::new()),
            status: Arc::new(Mutex::new(HashMap::new())),
        }))
    }
}

/// Counters of the landing folder, by source.
pub struct LandingStats {
    pub files: IntCounterVec,
    pub rows: IntCounterVec,
    pub bytes: IntCounterVec,
    pub rejected_lines: IntCounterVec,
    pub new_columns: IntCounterVec,
    pub pending_files: IntGaugeVec,
    pub schema_version: IntGaugeVec,
}

impl LandingStats {
    fn new() -> Self {
        let c = |n: &str, h: &str, l: &[&str]| {
            IntCounterVec::new(Opts::new(n, h), l).expect("valid counter")
        };
        let g =
            |n: &str, h: &str| IntGaugeVec::new(Opts::new(n, h), &["source"]).expect("valid gauge");
        LandingStats {
            files: c(
                "ironlake_landing_files_total",
                "Landing files by outcome (done, failed, changed after they were taken)",
                &["source", "outcome"],
            ),
            rows: c(
                "ironlake_landing_rows_total",
                "Rows read from landing files and committed",
                &["source"],
            ),
            bytes: c(
                "ironlake_landing_bytes_total",
                "Bytes of landing files committed",
                &["source"],
            ),
            rejected_lines: c(
                "ironlake_landing_rejected_lines_total",
                "Lines or rows of landing files that could not be parsed (quarantined)",
                &["source"],
            ),
            new_columns: c(
                "ironlake_landing_new_columns_total",
                "Columns added to a landing source's schema by evolution",
                &["source"],
            ),
            pending_files: g(
                "ironlake_landing_pending_files",
                "Complete files not yet committed",
            ),
            schema_version: g(
                "ironlake_landing_schema_version",
                "Version of a landing source's schema",
            ),
        }
    }

    /// Register every counter (a second registration is ignored).
    pub fn register(&self, r: &Registry) {
        let _ = r.register(Box::new(self.files.clone()));
        let _ = r.register(Box::new(self.rows.clone()));
        let _ = r.register(Box::new(self.bytes.clone()));
        let _ = r.register(Box::new(self.rejected_lines.clone()));
        let _ = r.register(Box::new(self.new_columns.clone()));
        let _ = r.register(Box::new(self.pending_files.clone()));
        let _ = r.register(Box::new(self.schema_version.clone()));
    }
}

/// What `GET /api/landing` shows of a source.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LandingStatus {
    pub name: String,
    pub path: String,
    pub layout: String,
    pub schema_evolution: String,
    pub bronze_table: String,
    pub silver_table: Option<String>,
    /// `watching`, `reading` or `failed`.
    pub state: String,
    pub schema_version: u32,
    pub columns: Vec<infer::SchemaColumn>,
    pub files_done: u64,
    pub files_pending: u64,
    pub rows: u64,
    pub last_file: Option<String>,
    pub last_error: Option<String>,
}

/// The resolved `[files]` section: one source per landing folder.
pub struct FilesConnector {
    sources: Vec<Resolved>,
    model: Arc<AssetModel>,
    machines: Vec<AssetIdx>,
    stats: Arc<LandingStats>,
    status: Arc<Mutex<HashMap<String, LandingStatus>>>,
}

impl FilesConnector {
    /// The landing counters (registered by the platform).
    pub fn stats(&self) -> &Arc<LandingStats> {
        &self.stats
    }

    /// Every source's status, by name.
    pub fn status(&self) -> Vec<LandingStatus> {
        let st = self.status.lock();
        self.sources
            .iter()
            .map(|s| {
                st.get(&s.cfg.name)
                    .cloned()
                    .unwrap_or_else(|| LandingStatus {
                        name: s.cfg.name.clone(),
                        path: s.location(),
                        state: "starting".into(),
                        ..Default::default()
                    })
            })
            .collect()
    }

    /// The resolved sources.
    pub fn sources(&self) -> &[Resolved] {
        &self.sources
    }
}

impl Connector for FilesConnector {
    fn protocol(&self) -> &'static str {
        "files"
    }

    fn endpoint(&self, asset: AssetIdx) -> Option<String> {
        self.machines.contains(&asset).then(|| {
            let names: Vec<_> = self.sources.iter().map(|s| s.cfg.name.as_str()).collect();
            format!("files:{}", names.join(","))
        })
    }

    fn sources(&self) -> Vec<Box<dyn Source>> {
        self.sources
            .iter()
            .map(|s| {
                Box::new(Landing {
                    src: s.clone(),
                    model: self.model.clone(),
                    stats: self.stats.clone(),
                    status: self.status.clone(),
                }) as Box<dyn Source>
            })
            .collect()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// One file taken by a source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Path relative to the source's folder.
    pub name: String,
    pub size: u64,
    pub mtime_ms: i64,
    /// Positions `first .. first + chunks`.
    pub first: u64,
    pub chunks: u64,
    /// Slices the tables hold (from the start of the file).
    pub acked: u64,
    pub rows: u64,
    pub error: Option<String>,
    /// A change after it was taken was seen (and counted).
    #[serde(default)]
    pub changed: bool,
}

impl FileEntry {
    fn done(&self) -> bool {
        self.acked >= self.chunks
    }
}

/// A source's record of the files it took, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub next_position: u64,
    pub files: Vec<FileEntry>,
}

/// Names a source never reads (being written, or hidden).
fn skipped_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.starts_with('.')
        || base.starts_with('_')
        || [".tmp", ".part", ".inprogress", ".crc", ".partial"]
            .iter()
            .any(|s| base.ends_with(s))
}

/// Files under `dir` (recursively) that `format` takes: (relative name, size, mtime).
fn list(dir: &Path, format: Format) -> std::io::Result<Vec<(String, u64, i64)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && prefix.is_empty() => {
                return Err(e)
            }
            Err(_) => continue,
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if skipped_name(&rel) {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push((e.path(), rel));
            } else if md.is_file() && format.of(&name).is_some() {
                let mtime = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                out.push((rel, md.len(), mtime));
            }
        }
    }
    out.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    Ok(out)
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Why a slice could not be read.
#[derive(Debug)]
enum ChunkError {
    /// The file cannot be used (not the format, no key column, unreadable):
    /// quarantined as a whole, the source goes on.
    Unreadable(String),
    /// The source must stop here (`failOnNewColumns`, its state not writable).
    Stop(String),
}

impl From<String> for ChunkError {
    fn from(s: String) -> Self {
        ChunkError::Unreadable(s)
    }
}

/// Why a file is not ingested (the source stops at it).
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("{0}")]
    File(String),
    /// The ingest stage could not commit (storage): offered again later.
    #[error("{0}")]
    Retry(String),
    #[error("the platform is stopping")]
    Shutdown,
}

/// One watched folder.
struct Landing {
    src: Resolved,
    model: Arc<AssetModel>,
    stats: Arc<LandingStats>,
    status: Arc<Mutex<HashMap<String, LandingStatus>>>,
}

/// Slices in flight to the ingest stage.
type InFlight = VecDeque<(usize, oneshot::Receiver<Result<ChunkReport, String>>)>;

/// A slice handed over: which file (index in the manifest) and its answer.
const MAX_IN_FLIGHT: usize = 2;

impl Source for Landing {
    fn name(&self) -> String {
        format!("files:{}", self.src.cfg.name)
    }

    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut w = match Worker::open(*self, &cx) {
                Ok(w) => w,
                Err(e) => {
                    error!(error = %e, "landing source cannot start");
                    cx.shutdown.cancelled().await;
                    return;
                }
            };
            w.run(&cx).await;
        })
    }

    fn respawn(&self) -> Option<Box<dyn Source>> {
        Some(Box::new(Landing {
            src: self.src.clone(),
            model: self.model.clone(),
            stats: self.stats.clone(),
            status: self.status.clone(),
        }))
    }
}

struct Worker {
    l: Landing,
    state: PathBuf,
    manifest: Manifest,
    schema: SourceSchema,
    /// Files seen with the same size and time since then.
    settling: HashMap<String, (u64, i64, Instant)>,
    failed: Option<String>,
    logged_missing: bool,
    reported_new: Vec<String>,
}

impl Worker {
    fn open(l: Landing, cx: &SourceContext) -> Result<Worker, String> {
        let state = cx.state_dir.join("files").join(&l.src.cfg.name);
        std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        let manifest: Manifest = read_json(&state.join("manifest.json"))?;
        let schema: SourceSchema = read_json(&state.join("schema.json"))?;
        let w = Worker {
            l,
            state,
            manifest,
            schema,
            settling: HashMap::new(),
            failed: None,
            logged_missing: false,
            reported_new: Vec::new(),
        };
        w.clean_staging();
        w.publish("watching", None);
        Ok(w)
    }

    fn name(&self) -> &str {
        &self.l.src.cfg.name
    }

    fn publish(&self, state: &str, last_file: Option<&str>) {
        let s = &self.l.src;
        let done = self.manifest.files.iter().filter(|f| f.done()).count() as u64;
        let pending = self.manifest.files.iter().filter(|f| !f.done()).count() as u64;
        let mut st = self.l.status.lock();
        let prev_last = st.get(&s.cfg.name).and_then(|p| p.last_file.clone());
        st.insert(
            s.cfg.name.clone(),
            LandingStatus {
                name: s.cfg.name.clone(),
                path: s.location(),
                layout: format!("{:?}", s.cfg.layout).to_lowercase(),
                schema_evolution: s.cfg.schema_evolution.as_str().into(),
                bronze_table: s.bronze.to_string(),
                silver_table: s.silver.as_ref().map(|t| t.to_string()),
                state: state.into(),
                schema_version: self.schema.version,
                columns: self.schema.columns.clone(),
                files_done: done,
                files_pending: pending,
                rows: self.manifest.files.iter().map(|f| f.rows).sum(),
                last_file: last_file.map(str::to_string).or(prev_last),
                last_error: self.failed.clone(),
            },
        );
        self.l
            .stats
            .pending_files
            .with_label_values(&[self.name()])
            .set(pending as i64);
        self.l
            .stats
            .schema_version
            .with_label_values(&[self.name()])
            .set(self.schema.version as i64);
    }

    fn save_manifest(&self) -> Result<(), String> {
        let b = serde_json::to_vec(&self.manifest).map_err(|e| e.to_string())?;
        write_atomic(&self.state, "manifest.json", &b)
            .map_err(|e| format!("{}: {e}", self.state.display()))
    }

    fn save_schema(&self) -> Result<(), String> {
        let b = serde_json::to_vec_pretty(&self.schema).map_err(|e| e.to_string())?;
        write_atomic(&self.state, "schema.json", &b)
            .map_err(|e| format!("{}: {e}", self.state.display()))?;
        // Every version, for the record.
        let _ = write_atomic(
            &self.state,
            &format!("schema.v{}.json", self.schema.version),
            &b,
        );
        Ok(())
    }

    async fn run(&mut self, cx: &SourceContext) {
        let poll = Duration::from_millis(self.l.src.cfg.poll_ms);
        loop {
            if self.failed.is_none() {
                if let Err(e) = self.scan().await {
                    warn!(source = %self.name(), error = %e, "cannot list the landing folder");
                }
                match self.ingest_pending(cx).await {
                    Ok(()) => {}
                    Err(Stop::Shutdown) => return,
                    Err(Stop::Retry(e)) => {
                        warn!(source = %self.name(), error = %e, "landing slices not committed; offered again shortly");
                        tokio::select! {
                            _ = cx.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                    }
                    Err(Stop::File(e)) => {
                        error!(source = %self.name(), error = %e, "landing source stopped at a file it cannot take; fix or remove the file and restart");
                        self.failed = Some(e);
                        self.l
                            .stats
                            .files
                            .with_label_values(&[self.name(), "failed"])
                            .inc();
                        self.publish("failed", None);
                    }
                }
            }
            tokio::select! {
                _ = cx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// List the folder; complete new files get their positions.
    async fn scan(&mut self) -> Result<(), String> {
        let listed = match &self.l.src.remote {
            Some(r) => r
                .list(self.l.src.cfg.format, skipped_name)
                .await
                .map_err(|e| e.to_string()),
            None => list(&self.l.src.dir, self.l.src.cfg.format)
                .map_err(|e| format!("{}: {e}", self.l.src.dir.display())),
        };
        let listing = match listed {
            Ok(l) => {
                self.logged_missing = false;
                l
            }
            Err(e) => {
                if !self.logged_missing {
                    self.logged_missing = true;
                    return Err(e);
                }
                return Ok(());
            }
        };
        let settle = Duration::from_millis(self.l.src.cfg.settle_ms);
        let known: HashMap<&str, usize> = self
            .manifest
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        let mut changed = Vec::new();
        let mut ready = Vec::new();
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for (name, size, mtime) in listing {
            seen.insert(name.clone());
            if let Some(&i) = known.get(name.as_str()) {
                let f = &self.manifest.files[i];
                if !f.changed && (f.size != size || f.mtime_ms != mtime) {
                    changed.push(i);
                }
                continue;
            }
            let e = self
                .settling
                .entry(name.clone())
                .or_insert((size, mtime, now));
            if e.0 != size || e.1 != mtime {
                *e = (size, mtime, now);
            }
            if now.duration_since(e.2) >= settle {
                ready.push((name, size, mtime));
            }
        }
        self.settling.retain(|n, _| seen.contains(n));
        for i in changed {
            let f = &mut self.manifest.files[i];
            f.changed = true;
            warn!(source = %self.l.src.cfg.name, file = %f.name, "a landing file changed after it was taken; it is not read again (drop a new file instead)");
            self.l
                .stats
                .files
                .with_label_values(&[&self.l.src.cfg.name, "changed"])
                .inc();
        }
        if ready.is_empty() {
            return Ok(());
        }
        for (name, size, mtime) in ready {
            self.settling.remove(&name);
            let chunks = match self.l.src.cfg.format.of(&name) {
                Some(Format::Parquet) => {
                    let groups = match &self.l.src.remote {
                        Some(r) => match r.parquet_row_groups(&name, size).await {
                            Ok(n) => n,
                            // Not listed again until the store answers.
                            Err(StoreError::Store(e)) => return Err(e),
                            // Read as one slice: the reader says why it is not Parquet.
                            Err(_) => 1,
                        },
                        None => {
                            super::parquet::row_groups(&self.l.src.dir.join(&name)).unwrap_or(1)
                        }
                    };
                    groups.max(1) as u64
                }
                _ => size.div_ceil(self.chunk_bytes()).max(1),
            };
            let first = self.manifest.next_position + 1;
            self.manifest.next_position += chunks;
            self.manifest.files.push(FileEntry {
                name,
                size,
                mtime_ms: mtime,
                first,
                chunks,
                acked: 0,
                rows: 0,
                error: None,
                changed: false,
            });
        }
        self.save_manifest()?;
        self.publish("watching", None);
        Ok(())
    }

    fn chunk_bytes(&self) -> u64 {
        self.l.src.cfg.chunk_mb << 20
    }

    /// Where a file is read: in the folder, or staged from the object store.
    fn file_path(&self, name: &str) -> PathBuf {
        match &self.l.src.remote {
            Some(_) => self.state.join("staging").join(name),
            None => self.l.src.dir.join(name),
        }
    }

    /// A file's name as shown in logs and errors.
    fn shown(&self, name: &str) -> String {
        match &self.l.src.remote {
            Some(r) => format!("{}/{name}", r.url.trim_end_matches('/')),
            None => self.l.src.dir.join(name).display().to_string(),
        }
    }

    /// An object-store file: bring it into the staging folder before its
    /// first slice is read (again after a restart). `Err(reason)`: the
    /// object cannot be read (gone, rewritten) and is quarantined; a store
    /// that does not answer stops the round (tried again).
    async fn stage(&mut self, i: usize) -> Result<Result<(), String>, Stop> {
        let Some(remote) = self.l.src.remote.clone() else {
            return Ok(Ok(()));
        };
        let f = &self.manifest.files[i];
        let dest = self.file_path(&f.name);
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == f.size) {
            return Ok(Ok(()));
        }
        match remote.stage(&f.name, f.size, &dest).await {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::Store(e)) => Err(Stop::Retry(e)),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    /// An object-store file is done: its staged copy goes.
    fn unstage(&self, name: &str) {
        if self.l.src.remote.is_some() {
            let _ = std::fs::remove_file(self.file_path(name));
        }
    }

    /// Staged copies of files that are done (a crash between the commit
    /// and the removal) go at start.
    fn clean_staging(&self) {
        if self.l.src.remote.is_none() {
            return;
        }
        let pending: std::collections::HashSet<PathBuf> = self
            .manifest
            .files
            .iter()
            .filter(|f| !f.done())
            .map(|f| self.file_path(&f.name))
            .collect();
        let mut stack = vec![self.state.join("staging")];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                } else if !pending.contains(&p) {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }

    /// Ingest every file not done, in order.
    async fn ingest_pending(&mut self, cx: &SourceContext) -> Result<(), Stop> {
        let pending: Vec<usize> = (0..self.manifest.files.len())
            .filter(|&i| !self.manifest.files[i].done())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let mut in_flight: InFlight = VecDeque::new();
        let bar = (pending.len() > 1 || self.manifest.files[pending[0]].chunks > 4).then(|| {
            let chunks: u64 = pending
                .iter()
                .map(|&i| {
                    let f = &self.manifest.files[i];
                    f.chunks - f.acked
                })
                .sum();
            let pb = indicatif::ProgressBar::new(chunks);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} slices {elapsed_precise} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_prefix(format!("landing {}", self.name()));
            pb
        });
        let result = async {
            for &i in &pending {
                let name = self.manifest.files[i].name.clone();
                self.publish("reading", Some(&name));
                let f = self.manifest.files[i].clone();
                for k in f.acked..f.chunks {
                    if cx.shutdown.is_cancelled() {
                        return Err(Stop::Shutdown);
                    }
                    let shown = self.shown(&name);
                    let staged = if k == f.acked {
                        self.stage(i).await?
                    } else {
                        Ok(())
                    };
                    let read = match staged {
                        Ok(()) => self.read_chunk(i, k).await,
                        Err(e) => Err(ChunkError::Unreadable(e)),
                    };
                    let (chunk, rx, last) = match read {
                        Ok((c, rx)) => (c, rx, false),
                        Err(ChunkError::Stop(e)) => return Err(Stop::File(format!("{shown}: {e}"))),
                        Err(ChunkError::Unreadable(e)) => {
                            warn!(source = %self.name(), file = %shown, error = %e, "landing file quarantined");
                            self.manifest.files[i].error = Some(e.clone());
                            let (c, rx) = self.unreadable_chunk(i, k, e);
                            (c, rx, true)
                        }
                    };
                    if !cx.sink.send_chunk(chunk).await {
                        return Err(Stop::Shutdown);
                    }
                    in_flight.push_back((i, rx));
                    if last {
                        while !in_flight.is_empty() {
                            self.settle_one(&mut in_flight, bar.as_ref()).await?;
                        }
                        break;
                    }
                    while in_flight.len() >= MAX_IN_FLIGHT {
                        self.settle_one(&mut in_flight, bar.as_ref()).await?;
                    }
                }
            }
            while !in_flight.is_empty() {
                self.settle_one(&mut in_flight, bar.as_ref()).await?;
            }
            Ok(())
        }
        .await;
        // Wait for what was handed over even when stopping at a file.
        while !in_flight.is_empty() {
            if self.settle_one(&mut in_flight, bar.as_ref()).await.is_err() {
                break;
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        self.publish("watching", None);
        result
    }

    /// Wait for the oldest slice in flight and record it.
    async fn settle_one(
        &mut self,
        in_flight: &mut InFlight,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<(), Stop> {
        let Some((i, rx)) = in_flight.pop_front() else {
            return Ok(());
        };
        let report = match rx.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Stop::Retry(e)),
            Err(_) => return Err(Stop::Shutdown),
        };
        let name = self.l.src.cfg.name.clone();
        let f = &mut self.manifest.files[i];
        f.acked += 1;
        f.rows += report.rows;
        if f.error.is_some() {
            // Quarantined as a whole: the rest of its slices are not read.
            if let Some(b) = bar {
                b.inc(f.chunks - f.acked);
            }
            f.acked = f.chunks;
            let file = f.name.clone();
            self.l
                .stats
                .files
                .with_label_values(&[&name, "unreadable"])
                .inc();
            self.unstage(&file);
            self.save_manifest().map_err(Stop::File)?;
            return Ok(());
        }
        self.l
            .stats
            .rows
            .with_label_values(&[&name])
            .inc_by(report.rows);
        if f.done() {
            self.l
                .stats
                .bytes
                .with_label_values(&[&name])
                .inc_by(f.size);
            self.l.stats.files.with_label_values(&[&name, "done"]).inc();
            info!(source = %name, file = %f.name, rows = f.rows, "landing file committed");
            let file = f.name.clone();
            self.unstage(&file);
        }
        if let Some(b) = bar {
            b.inc(1);
        }
        self.save_manifest().map_err(Stop::File)?;
        Ok(())
    }

    /// Read slice `k` of file `i`, evolving the schema as the mode says,
    /// and map it.
    async fn read_chunk(
        &mut self,
        i: usize,
        k: u64,
    ) -> Result<(FileChunk, oneshot::Receiver<Result<ChunkReport, String>>), ChunkError> {
        let f = self.manifest.files[i].clone();
        let path = self.file_path(&f.name);
        let format = self.l.src.cfg.format.of(&f.name).unwrap_or(Format::Jsonl);
        let cfg = self.l.src.cfg.clone();
        let mode = cfg.schema_evolution;
        if self.schema.version == 0 {
            let (p, ts) = (path.clone(), cfg.ts.clone());
            let found = tokio::task::spawn_blocking(move || match format {
                Format::Csv => infer::infer_csv(&p, &ts),
                Format::Parquet => infer::infer_parquet(&p, &ts),
                _ => infer::infer_jsonl(&p, &ts),
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            if found.columns.is_empty() {
                return Err(ChunkError::Unreadable(
                    "no columns could be inferred from the file's first lines".into(),
                ));
            }
            self.schema.merge(&found);
            self.schema.version = 1;
            self.save_schema().map_err(ChunkError::Stop)?;
            info!(source = %cfg.name, columns = self.schema.columns.len(), "landing schema inferred");
        }
        let chunk_bytes = self.chunk_bytes();
        let parsed = loop {
            let fs = self.schema.file_schema(
                mode == Evolution::Rescue,
                matches!(mode, Evolution::AddNewColumns | Evolution::FailOnNewColumns),
            );
            let p = path.clone();
            let limit = f.size;
            let parsed: ParsedFile =
                tokio::task::spawn_blocking(move || -> Result<_, FileError> {
                    let threads = super::default_threads();
                    let range = (k * chunk_bytes)..((k + 1) * chunk_bytes).min(limit);
                    match format {
                        Format::Csv => super::read_csv_part(&p, &fs, threads, Some(range)),
                        Format::Parquet => {
                            super::parquet::read_parquet_part(&p, &fs, k as usize..k as usize + 1)
                        }
                        _ => super::read_jsonl_part(&p, &fs, threads, Some(range)),
                    }
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let new: Vec<_> = parsed
                .new_fields
                .iter()
                .filter(|n| !self.schema.knows(&n.path))
                .cloned()
                .collect();
            if new.is_empty() {
                break parsed;
            }
            match mode {
                Evolution::AddNewColumns => {
                    let before = self.schema.columns.len();
                    let parquet_found = if format == Format::Parquet {
                        Some(infer::infer_parquet(&path, &cfg.ts).map_err(|e| e.to_string())?)
                    } else {
                        None
                    };
                    for n in &new {
                        let found = match (&parquet_found, format) {
                            (Some(pf), _) => infer::Inferred {
                                columns: pf
                                    .columns
                                    .iter()
                                    .filter(|c| c.0 == n.path)
                                    .cloned()
                                    .collect(),
                                ignored: vec![n.path.clone()],
                            },
                            (None, Format::Csv) => {
                                let text: String =
                                    serde_json::from_str(&n.sample).unwrap_or_default();
                                let mut i = infer::infer_json_value(&n.path, "null", &cfg.ts);
                                let kind = if text.is_empty() {
                                    ColumnKind::Text
                                } else {
                                    match super::map::text_value(&text) {
                                        crate::connectors::RawValue::Num(_) => ColumnKind::Float,
                                        crate::connectors::RawValue::Bool(_) => ColumnKind::Bool,
                                        _ => ColumnKind::Text,
                                    }
                                };
                                i.columns = vec![(n.path.clone(), kind)];
                                i
                            }
                            _ => infer::infer_json_value(&n.path, &n.sample, &cfg.ts),
                        };
                        self.schema.merge(&found);
                        // Whatever could not be a column is not new again.
                        self.schema.ignore(&n.path);
                    }
                    let added = self.schema.columns.len() - before;
                    self.schema.version += 1;
                    self.save_schema().map_err(ChunkError::Stop)?;
                    self.l
                        .stats
                        .new_columns
                        .with_label_values(&[&cfg.name])
                        .inc_by(added as u64);
                    let names: Vec<_> = new.iter().map(|n| n.path.as_str()).collect();
                    info!(source = %cfg.name, file = %f.name, version = self.schema.version, columns = ?names, "landing schema evolved: new columns added");
                    // Read the slice again with them.
                }
                Evolution::FailOnNewColumns => {
                    let names: Vec<_> = new.iter().map(|n| format!("`{}`", n.path)).collect();
                    return Err(ChunkError::Stop(format!(
                        "new columns {} (schema_evolution = \"failOnNewColumns\": change the mode, or remove the file, and restart)",
                        names.join(", ")
                    )));
                }
                Evolution::Rescue | Evolution::None => {
                    for n in new {
                        if !self.reported_new.contains(&n.path) {
                            info!(source = %cfg.name, field = %n.path, mode = mode.as_str(), "landing file has a field the schema does not (not added)");
                            self.reported_new.push(n.path);
                        }
                    }
                    break parsed;
                }
            }
        };
        let mapping = Mapping::new(
            &self.schema,
            cfg.layout,
            [&cfg.asset, &cfg.ts, &cfg.signal, &cfg.value],
            &cfg.ignore,
        )
        .map_err(|e| e.to_string())?;
        let model = self.model_ref();
        let start = if format == Format::Parquet {
            k
        } else {
            k * chunk_bytes
        };
        let rejected = parsed.rejected.len() as u64;
        if rejected > 0 {
            self.l
                .stats
                .rejected_lines
                .with_label_values(&[&cfg.name])
                .inc_by(rejected);
        }
        let batches = parsed.batches;
        let (mapped, batches) = tokio::task::spawn_blocking(move || {
            let m = map_rows(&mapping, &model, &batches, |r| r as u64);
            (m, batches)
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut issues = mapped.issues;
        for r in parsed.rejected {
            issues.push(ChunkIssue {
                asset: None,
                signal: None,
                code: "parse_error",
                reason: r.reason,
                payload: r.text,
                offset: r.offset,
            });
        }
        let (tx, rx) = oneshot::channel();
        let chunk = FileChunk {
            source: Arc::from(cfg.name.as_str()),
            position: f.first + k,
            file: Arc::from(f.name.as_str()),
            start,
            received_ms: now_ms(),
            bronze: self.l.src.bronze.clone(),
            raw: batches,
            readings: mapped.readings,
            table: if cfg.layout == Layout::Table {
                self.l.src.silver.clone()
            } else {
                None
            },
            table_rows: mapped.table_rows,
            issues,
            twins_from_ms: now_ms() - (cfg.twin_horizon_s as i64) * 1000,
            max_past_ms: (cfg.max_past_days as i64).saturating_mul(86_400_000),
            done: tx,
        };
        Ok((chunk, rx))
    }

    /// The slice that quarantines an unreadable file (one row, its reason).
    fn unreadable_chunk(
        &self,
        i: usize,
        k: u64,
        reason: String,
    ) -> (FileChunk, oneshot::Receiver<Result<ChunkReport, String>>) {
        let f = &self.manifest.files[i];
        let cfg = &self.l.src.cfg;
        let (tx, rx) = oneshot::channel();
        let chunk = FileChunk {
            source: Arc::from(cfg.name.as_str()),
            position: f.first + k,
            file: Arc::from(f.name.as_str()),
            start: 0,
            received_ms: now_ms(),
            bronze: self.l.src.bronze.clone(),
            raw: Vec::new(),
            readings: Vec::new(),
            table: None,
            table_rows: Vec::new(),
            issues: vec![ChunkIssue {
                asset: None,
                signal: None,
                code: "unreadable_file",
                reason,
                payload: serde_json::json!({ "file": f.name, "size": f.size }).to_string(),
                offset: 0,
            }],
            twins_from_ms: i64::MAX,
            max_past_ms: 0,
            done: tx,
        };
        (chunk, rx)
    }

    fn model_ref(&self) -> Arc<AssetModel> {
        self.l.model.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_being_written_are_skipped() {
        for n in [
            "a.jsonl.tmp",
            ".a.jsonl",
            "_SUCCESS",
            "x/.hidden.csv",
            "b.csv.part",
        ] {
            assert!(skipped_name(n), "{n}");
        }
        assert!(!skipped_name("day/2026-01-01.jsonl"));
    }

    #[test]
    fn listing_is_ordered_by_time_then_name_and_recursive() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("b.jsonl"), "{}\n").unwrap();
        std::fs::write(d.path().join("a.jsonl"), "{}\n").unwrap();
        std::fs::write(d.path().join("sub/c.csv"), "x\n1\n").unwrap();
        std::fs::write(d.path().join("note.txt"), "x").unwrap();
        std::fs::write(d.path().join("w.jsonl.tmp"), "{}").unwrap();
        let l = list(d.path(), Format::Auto).unwrap();
        let mut names: Vec<_> = l.iter().map(|x| x.0.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["a.jsonl", "b.jsonl", "sub/c.csv"]);
        assert!(list(&d.path().join("missing"), Format::Auto).is_err());
    }
}
