//! Configuration file formats: the platform (`config/ironlake.toml`), the
//! plants (`config/plants/*.toml`), the twin types (`twins/*.toml`) and the
//! pipelines (`config/pipelines/*.toml`), parsed with serde, plus reading
//! them from disk or from the copies built into the binary.
//!
//! This module owns file formats only: it never builds the asset model
//! (`assets` does), never reads a protocol's own keys (each connector reads
//! its `[<protocol>]` section and machine `source` tables) and never
//! validates a pipeline's SQL (`pipeline::spec` does). Every error names the
//! file and the key to fix.
//!
//! **Defaults.** `config/ironlake.toml` is compiled into the binary and is
//! the single source of defaults: a user's platform file is laid over it key
//! by key, so any key it leaves out (in any section) takes the built-in
//! value. `plants` must be given; `twins` and `pipelines.dir` left out mean
//! the built-in twin types and pipelines.

mod embedded;
pub mod features;
pub mod pipeline;
pub mod plant;
pub mod twin_type;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use embedded::EMBEDDED;
pub use pipeline::PipelineFile;
pub use plant::{
    AreaConfig, FloorConfig, FloorZone, LineConfig, MachineConfig, PlantFile, PlantHeader,
    ShiftConfig,
};
pub use twin_type::TwinTypeDef;

/// A configuration problem, always naming the file (and key) to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// An invalid key of a file.
    pub fn invalid(file: &str, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// `[http]`: the REST API and twin browser.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Live events kept for a slow `GET /api/stream` subscriber; one that
    /// falls further behind is told to resynchronise.
    #[serde(default = "default_live_buffer")]
    pub live_buffer: usize,
    /// Live streams open at once; more are refused with 503.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
}

fn default_live_buffer() -> usize {
    8192
}

fn default_max_streams() -> usize {
    256
}

/// `[lake]`: where and how the Delta tables are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Root directory (or URL) of the lakehouse.
    pub root: String,
    /// Commit when this many rows are buffered for a table.
    pub flush_rows: usize,
    /// Commit at least this often when rows are buffered.
    pub flush_interval_ms: u64,
    /// Target Parquet file size.
    pub target_file_mb: u64,
    /// Compact the ingest tables' small files this often (0: never).
    pub compact_interval_s: u64,
    /// After each compaction, delete files no version of the last this many
    /// hours needs (0: never).
    pub vacuum_retention_hours: u64,
}

/// `[twin]`: defaults for twin actors (a twin type may override windows).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinConfig {
    /// Seconds between checkpoints to `gold.asset_state`.
    pub checkpoint_interval_s: u64,
    /// Days of checkpoint history `gold.asset_state` keeps (0: all).
    pub checkpoint_keep_days: u32,
    /// Readings in the count-based rolling window.
    pub count_window: usize,
    /// Length of the time-based rolling window.
    pub time_window_s: f64,
    /// Smoothing factor of the exponential moving average (0..1].
    pub ema_alpha: f64,
    /// Mailbox capacity of each twin actor (messages).
    pub mailbox: usize,
    /// Actor threads (arbiters) hosting the twins.
    pub arbiters: usize,
    /// A signal not updated for this many seconds shows quality `STALE`.
    pub stale_after_s: f64,
    /// A machine whose source sent nothing for this many seconds (or whose
    /// connector reports it disconnected) goes to state `DISCONNECTED`.
    pub disconnected_after_s: f64,
}

/// `[ingest]`: the journal and the bronze/silver stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Parallel ingest shards (assets are partitioned across them); 0: one
    /// per two CPU cores (see [`IngestConfig::effective_shards`]). A new
    /// value takes effect once the journal is empty (after a clean stop).
    pub shards: usize,
    /// Messages queued per shard before connectors are slowed down.
    pub queue: usize,
    /// Bytes of payload queued per shard before connectors are slowed down.
    pub queue_mib: usize,
    /// Directory of the ingest journal; empty: `_journal` under a local
    /// lakehouse root (required when the lakehouse is on object storage).
    pub journal_dir: String,
    /// Journal segment size; whole segments are deleted once the lake holds them.
    pub journal_segment_mib: u64,
    /// Largest accepted message; larger ones are quarantined (`payload_too_large`).
    pub max_payload_kib: usize,
    /// Most values accepted from one message; the rest are quarantined (`too_many_fields`).
    pub max_fields: usize,
    /// A source timestamp further ahead of the ingest clock is quarantined
    /// (`future_timestamp`).
    pub max_future_skew_s: u64,
    /// A source timestamp older than this is quarantined (`ancient_timestamp`).
    pub max_past_days: u64,
    /// Timestamps remembered per signal for exact duplicate detection in
    /// memory; older repeats are checked against `silver.readings`.
    pub dedup_recent: usize,
    /// Memory all signals' remembered timestamps may take together (4 bytes
    /// each): with more signals than `dedup_recent` fits, each remembers
    /// fewer (never under 64).
    pub dedup_memory_mib: u64,
}

impl IngestConfig {
    /// The shards to run: `shards`, or with 0 one per two CPU cores (1 to
    /// 16). Each shard journals and syncs its own batches, so on a small
    /// machine fewer shards make larger group commits: on 2 cores one shard
    /// took 8% less CPU per reading than two and ingested 6-8% more at
    /// saturation (`bench ingest --shards`, 2026-12-07).
    pub fn effective_shards(&self) -> usize {
        if self.shards > 0 {
            return self.shards;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (cores / 2).clamp(1, 16)
    }
}

impl IngestConfig {
    /// Timestamps each of `signals` signals remembers: `dedup_recent`,
    /// or fewer when that many would not fit in `dedup_memory_mib`.
    pub fn dedup_per_signal(&self, signals: usize) -> usize {
        let fits = (self.dedup_memory_mib as usize).saturating_mul(1 << 20) / 4 / signals.max(1);
        self.dedup_recent.min(fits.max(64)).max(1)
    }
}

/// `[sql]`: the query engine's own bounded pool (`POST /api/sql`, history,
/// pipelines, compaction), kept apart from ingestion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Threads running queries and batch jobs (at a lower CPU priority).
    pub threads: usize,
    /// Memory all queries together may hold; a query that needs more fails
    /// with a clear error instead of taking the process down.
    pub memory_mb: usize,
    /// A query running longer is cancelled.
    pub timeout_s: u64,
    /// Queries running at once; more wait up to `queue_wait_ms` for a
    /// slot, then are refused with 503.
    pub max_concurrent: usize,
    /// How long a query waits for a free slot before it is refused (a
    /// dashboard opening several panels at once queues briefly instead of
    /// failing).
    #[serde(default = "default_queue_wait_ms")]
    pub queue_wait_ms: u64,
}

fn default_queue_wait_ms() -> u64 {
    2000
}

/// `[pipelines]`: the declarative silver/gold pipelines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelinesConfig {
    /// Directory of pipeline files (`*.toml`), relative to the config file;
    /// left out: the built-in pipelines.
    pub dir: Option<String>,
    /// Run every enabled pipeline this often while the platform runs (0: never).
    pub interval_s: u64,
    /// Gold jobs recompute the shifts of this many hours back on each update.
    pub lookback_h: u64,
    /// MTBF / MTTR cover this many trailing days.
    pub reliability_days: u64,
}

/// `[models]`: the model registry and live scoring in the twins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Model registry directory (as `lake.root`: relative to the working
    /// directory). Twins serve the `champion` (and score the `challenger`)
    /// of `<twin type>_failure`, `<twin type>_rul` and `<twin type>_energy`.
    pub registry: String,
    /// Score live features in the twins.
    pub serve: bool,
    /// Seconds between looks at the registry for promoted versions (hot swap).
    pub reload_s: u64,
    /// Seconds between drift checks of the served models (0: never).
    #[serde(default = "d_drift_interval")]
    pub drift_interval_s: u64,
    /// Drift checks compare the scored rows of this many (timestamp)
    /// seconds with the training data.
    #[serde(default = "d_drift_window")]
    pub drift_window_s: u64,
    /// With each drift check, the quality of the past predictions of the
    /// last this many (timestamp) days, once labels are known, is
    /// recomputed into `gold.model_quality` (0: never).
    #[serde(default = "d_quality_days")]
    pub quality_days: u64,
}

fn d_quality_days() -> u64 {
    14
}

fn d_drift_interval() -> u64 {
    300
}
fn d_drift_window() -> u64 {
    3600
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            registry: "./models/registry".into(),
            serve: true,
            reload_s: 5,
            drift_interval_s: d_drift_interval(),
            drift_window_s: d_drift_window(),
            quality_days: d_quality_days(),
        }
    }
}

/// `config/ironlake.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct PlatformFile {
    /// Plant files, relative to this file.
    pub plants: Vec<String>,
    /// Directory of twin types, relative to this file; left out: the
    /// built-in twin types.
    pub twins: Option<String>,
    /// Directory of feature sets (`<twin type>.toml`), relative to this
    /// file; left out: the built-in ones (`models/features`).
    #[serde(default)]
    pub features: Option<String>,
    pub http: HttpConfig,
    pub lake: LakeConfig,
    pub twin: TwinConfig,
    pub ingest: IngestConfig,
    pub sql: SqlConfig,
    pub pipelines: PipelinesConfig,
    #[serde(default)]
    pub models: ModelsConfig,
    /// `[edge]`: read by `ironlake edge` only (the gateway's buffer and uplink).
    #[serde(default)]
    pub edge: Option<toml::Value>,
    /// Sections of the connectors (`[mqtt]`, ...), each read by its protocol.
    #[serde(flatten)]
    pub connectors: BTreeMap<String, toml::Value>,
}

/// Keys of the platform file that are not connector sections.
pub const PLATFORM_KEYS: [&str; 11] = [
    "plants",
    "twins",
    "features",
    "http",
    "lake",
    "twin",
    "ingest",
    "sql",
    "pipelines",
    "models",
    "edge",
];

/// Keys never taken from the built-in defaults: paths relative to the
/// user's file (left out, they mean the built-in files) and the plants.
const NOT_DEFAULTED: [&[&str]; 4] = [
    &["plants"],
    &["twins"],
    &["features"],
    &["pipelines", "dir"],
];

impl PlatformFile {
    /// The platform defaults of `config/ironlake.toml` as built into the binary;
    /// programs that assemble a config in code start from these.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        let file = "embedded:config/ironlake.toml";
        let p: PlatformFile = parse_toml(default_text(), file)?;
        validate_platform(&p, file)?;
        Ok(p)
    }

    /// Parse a platform file, taking every key it leaves out from the
    /// built-in defaults.
    pub fn parse_with_defaults(text: &str, file: &str) -> Result<Self, ConfigError> {
        let user: toml::Table = parse_toml(text, file)?;
        let mut merged: toml::Table = parse_toml(default_text(), "embedded:config/ironlake.toml")?;
        for path in NOT_DEFAULTED {
            remove_path(&mut merged, path);
        }
        overlay(&mut merged, user);
        let p: PlatformFile =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    file: file.to_string(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        validate_platform(&p, file)?;
        Ok(p)
    }

    /// A connector's section (`[mqtt]`), if present.
    pub fn connector(&self, protocol: &str) -> Option<&toml::Value> {
        self.connectors.get(protocol)
    }
}

fn default_text() -> &'static str {
    EMBEDDED.get("config/ironlake.toml").unwrap_or_default()
}

/// Lay `top` over `base`: tables merge key by key, anything else replaces.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn remove_path(t: &mut toml::Table, path: &[&str]) {
    match path {
        [] => {}
        [last] => {
            t.remove(*last);
        }
        [first, rest @ ..] => {
            if let Some(toml::Value::Table(inner)) = t.get_mut(*first) {
                remove_path(inner, rest);
            }
        }
    }
}

/// Where configuration files are read from: disk or the copy built into the binary.
pub trait FileSource {
    fn read(&self, path: &Path) -> Result<String, ConfigError>;
    fn list_toml(&self, dir: &Path) -> Result<Vec<PathBuf>, ConfigError>;
}

/// Files on disk.
pub struct Disk;

impl FileSource for Disk {
    fn read(&self, path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.display().to_string(),
            source,
        })
    }
    fn list_toml(&self, dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
        let rd = std::fs::read_dir(dir).map_err(|source| ConfigError::Io {
            file: dir.display().to_string(),
            source,
        })?;
        let mut out: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Parse TOML text into `T`, reporting the file, line and key on error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Every file of one configuration, parsed but not yet resolved into a model.
#[derive(Debug, Clone)]
pub struct ConfigFiles {
    /// Where it was loaded from (`embedded:` for the built-in default).
    pub origin: String,
    pub platform: PlatformFile,
    /// Twin type files: (path, definition).
    pub twin_types: Vec<(String, TwinTypeDef)>,
    /// Feature set files: (path, definition).
    pub features: Vec<(String, features::FeatureSetDef)>,
    /// Plant files: (path, plant).
    pub plants: Vec<(String, PlantFile)>,
    /// Pipeline files: (path, file stem, definition).
    pub pipelines: Vec<(String, String, PipelineFile)>,
}

impl ConfigFiles {
    /// A platform file on disk, with the files it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_with(&Disk, path, path.display().to_string())
    }

    /// The configuration compiled into the binary (the demo plants).
    pub fn embedded() -> Result<Self, ConfigError> {
        load_with(
            &EMBEDDED,
            Path::new("config/ironlake.toml"),
            "embedded:config/ironlake.toml".into(),
        )
    }
}

fn load_with(
    src: &dyn FileSource,
    path: &Path,
    origin: String,
) -> Result<ConfigFiles, ConfigError> {
    let file = path.display().to_string();
    let platform = PlatformFile::parse_with_defaults(&src.read(path)?, &file)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let twin_types = match &platform.twins {
        Some(dir) => read_twin_types(src, &base.join(dir))?,
        None => embedded_twin_type_files()?,
    };
    let features = match &platform.features {
        Some(dir) => read_feature_sets(src, &base.join(dir))?,
        // The built-in sets apply to the twin types of those names there are.
        None => embedded_feature_files()?
            .into_iter()
            .filter(|(_, f)| twin_types.iter().any(|(_, t)| t.kind == f.twin_type))
            .collect(),
    };
    if platform.plants.is_empty() {
        return Err(ConfigError::invalid(
            &file,
            "plants",
            "list at least one plant file",
        ));
    }
    let mut plants = Vec::new();
    for p in &platform.plants {
        let pp = base.join(p);
        let pfile = pp.display().to_string();
        let pf: PlantFile = parse_toml(&src.read(&pp)?, &pfile)?;
        plants.push((pfile, pf));
    }
    let pipelines = match &platform.pipelines.dir {
        Some(dir) => read_pipelines(src, &base.join(dir))?,
        None => read_pipelines(&EMBEDDED, Path::new("config/pipelines"))?,
    };
    Ok(ConfigFiles {
        origin,
        platform,
        twin_types,
        features,
        plants,
        pipelines,
    })
}

/// Pipeline files of a directory (none if it does not exist).
fn read_pipelines(
    src: &dyn FileSource,
    dir: &Path,
) -> Result<Vec<(String, String, PipelineFile)>, ConfigError> {
    let files = match src.list_toml(dir) {
        Ok(f) => f,
        Err(ConfigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for p in files {
        let file = p.display().to_string();
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("pipeline")
            .to_string();
        let def: PipelineFile = parse_toml(&src.read(&p)?, &file)?;
        out.push((file, stem, def));
    }
    Ok(out)
}

/// Every `*.toml` twin type file of a directory on disk.
pub fn twin_type_files(dir: &Path) -> Result<Vec<(String, TwinTypeDef)>, ConfigError> {
    read_twin_types(&Disk, dir)
}

/// The feature set files compiled into the binary (`models/features`).
pub fn embedded_feature_files() -> Result<Vec<(String, features::FeatureSetDef)>, ConfigError> {
    read_feature_sets(&EMBEDDED, Path::new("models/features"))
}

/// Feature set files of a directory (none if it does not exist).
fn read_feature_sets(
    src: &dyn FileSource,
    dir: &Path,
) -> Result<Vec<(String, features::FeatureSetDef)>, ConfigError> {
    let files = match src.list_toml(dir) {
        Ok(f) => f,
        Err(ConfigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for p in files {
        let file = p.display().to_string();
        out.push((file.clone(), parse_toml(&src.read(&p)?, &file)?));
    }
    Ok(out)
}

/// The twin type files compiled into the binary.
pub fn embedded_twin_type_files() -> Result<Vec<(String, TwinTypeDef)>, ConfigError> {
    read_twin_types(&EMBEDDED, Path::new("twins"))
}

fn read_twin_types(
    src: &dyn FileSource,
    dir: &Path,
) -> Result<Vec<(String, TwinTypeDef)>, ConfigError> {
    let mut out = Vec::new();
    for p in src.list_toml(dir)? {
        let file = p.display().to_string();
        let def: TwinTypeDef = parse_toml(&src.read(&p)?, &file)?;
        out.push((file, def));
    }
    if out.is_empty() {
        return Err(ConfigError::invalid(
            &dir.display().to_string(),
            "twins",
            "no twin type (*.toml) found",
        ));
    }
    Ok(out)
}

fn validate_platform(p: &PlatformFile, file: &str) -> Result<(), ConfigError> {
    let bad = |key: &str, message: &str| Err(ConfigError::invalid(file, key, message));
    if p.lake.flush_rows == 0 {
        return bad("lake.flush_rows", "must be above 0");
    }
    if p.lake.flush_interval_ms == 0 {
        return bad("lake.flush_interval_ms", "must be above 0");
    }
    if (1..168).contains(&p.lake.vacuum_retention_hours) {
        return bad(
            "lake.vacuum_retention_hours",
            "must be 0 (never vacuum) or at least 168 (the tables' own retention: readers on an older version would lose their files)",
        );
    }
    if p.twin.count_window < 2 {
        return bad("twin.count_window", "must be at least 2");
    }
    if p.twin.time_window_s.is_nan() || p.twin.time_window_s <= 0.0 {
        return bad("twin.time_window_s", "must be above 0");
    }
    if !(p.twin.ema_alpha > 0.0 && p.twin.ema_alpha <= 1.0) {
        return bad("twin.ema_alpha", "must lie in (0, 1]");
    }
    if p.twin.checkpoint_interval_s == 0 {
        return bad("twin.checkpoint_interval_s", "must be above 0");
    }
    if p.twin.arbiters == 0 || p.twin.mailbox == 0 {
        return bad("twin.arbiters", "arbiters and mailbox must be above 0");
    }
    if p.twin.disconnected_after_s.is_nan() || p.twin.disconnected_after_s <= 0.0 {
        return bad("twin.disconnected_after_s", "must be above 0");
    }
    if p.ingest.shards > 256 {
        return bad("ingest.shards", "must be from 0 (automatic) to 256");
    }
    if p.ingest.queue == 0 || p.ingest.queue_mib == 0 {
        return bad("ingest.queue", "queue and queue_mib must be above 0");
    }
    if p.ingest.max_payload_kib == 0 || p.ingest.max_fields == 0 {
        return bad(
            "ingest.max_payload_kib",
            "max_payload_kib and max_fields must be above 0",
        );
    }
    if p.ingest.max_payload_kib > 256 * 1024 {
        return bad("ingest.max_payload_kib", "must be at most 262144 (256 MiB)");
    }
    if p.ingest.journal_segment_mib == 0 {
        return bad("ingest.journal_segment_mib", "must be above 0");
    }
    if p.ingest.max_past_days == 0 {
        return bad("ingest.max_past_days", "must be above 0");
    }
    if p.ingest.journal_dir.is_empty() && p.lake.root.contains("://") {
        return bad(
            "ingest.journal_dir",
            "the lakehouse is on object storage: give a local directory for the ingest journal",
        );
    }
    if p.sql.threads == 0 || p.sql.max_concurrent == 0 {
        return bad("sql.threads", "threads and max_concurrent must be above 0");
    }
    if p.sql.memory_mb < 16 {
        return bad("sql.memory_mb", "must be at least 16");
    }
    if p.sql.timeout_s == 0 {
        return bad("sql.timeout_s", "must be above 0");
    }
    Ok(())
}

/// Parse an IANA time zone name.
pub fn parse_timezone(name: &str) -> Option<chrono_tz::Tz> {
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_memory_is_shared_among_all_signals() {
        let i = PlatformFile::embedded_default().unwrap().ingest;
        assert_eq!((i.dedup_recent, i.dedup_memory_mib), (512, 256));
        // 1,000 machines of 10 signals: 512 each (20 MB).
        assert_eq!(i.dedup_per_signal(10_000), 512);
        // 100,000 machines of 10 signals: 67 each (268 MB), not 512 (2 GB).
        assert_eq!(i.dedup_per_signal(1_000_000), 67);
        assert!(i.dedup_per_signal(1_000_000) * 4 * 1_000_000 <= 256 << 20);
        // Never under 64, however many signals.
        assert_eq!(i.dedup_per_signal(100_000_000), 64);
        assert_eq!(i.dedup_per_signal(0), 512);
    }

    #[test]
    fn shards_zero_means_one_per_two_cores() {
        let d = PlatformFile::embedded_default().unwrap();
        assert_eq!(d.ingest.shards, 0, "the shipped default is automatic");
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(d.ingest.effective_shards(), (cores / 2).clamp(1, 16));
        let p = PlatformFile::parse_with_defaults("plants = []\n[ingest]\nshards = 3\n", "f.toml")
            .unwrap();
        assert_eq!(p.ingest.effective_shards(), 3, "an explicit count is kept");
        let e =
            PlatformFile::parse_with_defaults("plants = []\n[ingest]\nshards = 300\n", "f.toml")
                .unwrap_err()
                .to_string();
        assert!(e.contains("ingest.shards"), "{e}");
    }

    #[test]
    fn one_key_per_section_is_enough() {
        let text = "plants = [\"p.toml\"]\n[http]\nlisten = \"127.0.0.1:9999\"\n[lake]\nroot = \"/tmp/x\"\n\
                    [twin]\narbiters = 3\n[ingest]\nshards = 4\n[sql]\ntimeout_s = 5\n\
                    [pipelines]\ninterval_s = 7\n[mqtt]\nport = 1884\n";
        let p = PlatformFile::parse_with_defaults(text, "mine.toml").unwrap();
        let d = PlatformFile::embedded_default().unwrap();
        assert_eq!(p.http.listen.port(), 9999);
        assert_eq!(p.lake.root, "/tmp/x");
        assert_eq!(p.lake.flush_rows, d.lake.flush_rows);
        assert_eq!(p.twin.arbiters, 3);
        assert_eq!(p.twin.count_window, d.twin.count_window);
        assert_eq!(p.ingest.shards, 4);
        assert_eq!(p.ingest.queue, d.ingest.queue);
        assert_eq!(p.sql.timeout_s, 5);
        assert_eq!(p.sql.memory_mb, d.sql.memory_mb);
        assert_eq!(p.pipelines.interval_s, 7);
        assert_eq!(p.pipelines.dir, None, "left out: the built-in pipelines");
        assert_eq!(p.twins, None, "left out: the built-in twin types");
        let mqtt = p.connector("mqtt").and_then(|v| v.as_table()).unwrap();
        assert_eq!(mqtt["port"].as_integer(), Some(1884));
        assert_eq!(mqtt["host"].as_str(), Some("127.0.0.1"));
        assert!(mqtt["embedded"].as_table().is_some());
    }

    #[test]
    fn unknown_and_mistyped_keys_name_the_key() {
        let e =
            PlatformFile::parse_with_defaults("plants = []\n[lake]\nflush_rowz = 3\n", "f.toml")
                .unwrap_err()
                .to_string();
        assert!(e.contains("f.toml") && e.contains("flush_rowz"), "{e}");
        let e = PlatformFile::parse_with_defaults(
            "plants = []\n[lake]\nflush_rows = \"x\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.toml") && e.contains("flush_rows"), "{e}");
        let e =
            PlatformFile::parse_with_defaults("plants = []\n[lake]\nflush_rows = 0\n", "f.toml")
                .unwrap_err()
                .to_string();
        assert!(e.contains("lake.flush_rows"), "{e}");
        let e = PlatformFile::parse_with_defaults(
            "plants = []\n[lake]\nvacuum_retention_hours = 24\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lake.vacuum_retention_hours"), "{e}");
        for ok in [0, 168, 720] {
            let text = format!("plants = []\n[lake]\nvacuum_retention_hours = {ok}\n");
            assert!(PlatformFile::parse_with_defaults(&text, "f.toml").is_ok());
        }
    }
}
