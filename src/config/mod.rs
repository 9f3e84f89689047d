//! Typed configuration: the platform (`config/ironlake.toml`), the plants
//! (`config/plants/*.toml`) and the twin types (`twins/*.toml`).
//!
//! Everything is parsed with serde and validated at load; every error names the
//! file and the key to fix. Defaults live in `config/ironlake.toml`, which is
//! also compiled into the binary so that `ironlake demo` runs from anywhere.

mod embedded;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::assets::{AssetModel, ModbusBinding, TwinType};

pub use embedded::EMBEDDED;

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

/// `[http]`: the REST API and twin browser.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
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
    /// Compact the ingest tables' small files this often (0: never; see
    /// `ironlake lake optimize`).
    #[serde(default = "compact_interval_s")]
    pub compact_interval_s: u64,
}

fn compact_interval_s() -> u64 {
    3600
}

/// `[twin]`: defaults for twin actors (a twin type may override windows).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinConfig {
    /// Seconds between checkpoints to `gold.asset_state`.
    pub checkpoint_interval_s: u64,
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
}

/// `[ingest]`: the bronze/silver micro-batch stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Parallel ingest shards (assets are partitioned across them).
    pub shards: usize,
    /// Envelopes queued per shard before connectors are slowed down.
    pub queue: usize,
}

/// `[mqtt.embedded]`: the embedded broker (rumqttd).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Largest accepted payload in bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
}

fn default_max_payload() -> usize {
    256 * 1024
}

/// `[mqtt]`: the broker ironlake subscribes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Topic filters to subscribe to; messages on topics bound to no machine are
    /// quarantined (`unknown_asset`). Empty: subscribe to each machine's topic.
    #[serde(default)]
    pub subscribe: Vec<String>,
    pub keep_alive_s: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub embedded: Option<EmbeddedBrokerConfig>,
}

/// `config/ironlake.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformFile {
    /// Plant files, relative to this file.
    pub plants: Vec<String>,
    /// Directory of twin types, relative to this file.
    pub twins: String,
    pub http: HttpConfig,
    pub lake: LakeConfig,
    pub twin: TwinConfig,
    pub ingest: IngestConfig,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub pipelines: PipelinesConfig,
}

/// `[pipelines]`: the declarative silver/gold pipelines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// Directory of pipeline files (`*.toml`), relative to the config file.
    pub dir: String,
    /// Run every enabled pipeline this often while the platform runs (0: never).
    pub interval_s: u64,
    /// Gold jobs recompute the shifts of this many hours back on each update.
    pub lookback_h: u64,
    /// MTBF / MTTR cover this many trailing days.
    pub reliability_days: u64,
}

impl Default for PipelinesConfig {
    fn default() -> Self {
        PipelinesConfig {
            dir: "pipelines".into(),
            interval_s: 60,
            lookback_h: 48,
            reliability_days: 30,
        }
    }
}

/// `[plant]` of a plant file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantHeader {
    pub id: String,
    pub name: Option<String>,
    #[serde(default = "utc")]
    pub timezone: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

fn utc() -> String {
    "UTC".into()
}

impl PlatformFile {
    /// The platform defaults of `config/ironlake.toml` as built into the binary;
    /// programs that assemble a config in code start from these.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        let file = "embedded:config/ironlake.toml";
        let text = EMBEDDED.get("config/ironlake.toml").unwrap_or_default();
        let p: PlatformFile = parse_toml(text, file)?;
        validate_platform(&p, file)?;
        Ok(p)
    }
}

/// `[[areas]]` of a plant file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaConfig {
    pub id: String,
    pub name: Option<String>,
}

/// `[[lines]]` of a plant file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub id: String,
    pub name: Option<String>,
    pub area: String,
}

/// Modbus TCP source of a machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSourceConfig {
    pub host: String,
    pub port: u16,
    #[serde(default = "default_unit")]
    pub unit: u8,
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Per-signal overrides of the twin type's register map.
    #[serde(default)]
    pub registers: BTreeMap<String, ModbusBinding>,
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    2000
}

/// MQTT source of a machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    pub topic: String,
    /// Dotted path of the source timestamp in the payload.
    #[serde(default = "default_ts_field")]
    pub ts_field: Option<String>,
    /// Per-signal overrides of the twin type's JSON field paths.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

fn default_ts_field() -> Option<String> {
    Some("ts".into())
}

/// Where a machine's signals come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum SourceConfig {
    Modbus(ModbusSourceConfig),
    Mqtt(MqttSourceConfig),
}

/// `[[machines]]` of a plant file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub id: String,
    pub name: Option<String>,
    pub line: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: SourceConfig,
}

/// A plant file (`config/plants/*.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantFile {
    pub plant: PlantHeader,
    #[serde(default)]
    pub areas: Vec<AreaConfig>,
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    #[serde(default)]
    pub machines: Vec<MachineConfig>,
    /// Shift pattern in the plant's time zone (default: 06:00, 14:00, 22:00).
    #[serde(default)]
    pub shifts: Vec<ShiftConfig>,
}

/// `[[shifts]]` of a plant file: a shift starting every day at a local time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    pub name: String,
    /// Local start time, `HH:MM`.
    pub start: String,
}

/// The loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub platform: PlatformFile,
    pub model: Arc<AssetModel>,
    /// Pipelines of `[pipelines].dir`.
    pub pipelines: Vec<crate::pipeline::spec::Pipeline>,
    /// Where it was loaded from (`embedded:` for the built-in default).
    pub origin: String,
}

/// Where configuration files are read from: disk or the copy built into the binary.
trait FileSource {
    fn read(&self, path: &Path) -> Result<String, ConfigError>;
    fn list_toml(&self, dir: &Path) -> Result<Vec<PathBuf>, ConfigError>;
}

struct Disk;

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

impl Config {
    /// Load a platform config from disk, with its plant files and twin types.
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

    /// Build a config from parts (used by tests and benchmarks that generate plants).
    pub fn from_parts(
        platform: PlatformFile,
        twin_types: HashMap<String, Arc<TwinType>>,
        plants: Vec<(String, PlantFile)>,
    ) -> Result<Self, ConfigError> {
        let model = AssetModel::build(twin_types, plants)?;
        Ok(Config {
            platform,
            model: Arc::new(model),
            pipelines: Vec::new(),
            origin: "in-memory".into(),
        })
    }
}

fn load_with(src: &dyn FileSource, path: &Path, origin: String) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let platform: PlatformFile = parse_toml(&src.read(path)?, &file)?;
    validate_platform(&platform, &file)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let twin_types = load_twin_types_with(src, &base.join(&platform.twins))?;
    if platform.plants.is_empty() {
        return Err(ConfigError::Invalid {
            file,
            key: "plants".into(),
            message: "list at least one plant file".into(),
        });
    }
    let mut plants = Vec::new();
    for p in &platform.plants {
        let pp = base.join(p);
        let pfile = pp.display().to_string();
        let pf: PlantFile = parse_toml(&src.read(&pp)?, &pfile)?;
        plants.push((pfile, pf));
    }
    let model = AssetModel::build(twin_types, plants)?;
    let pipelines = load_pipelines_with(src, &base.join(&platform.pipelines.dir))?;
    Ok(Config {
        platform,
        model: Arc::new(model),
        pipelines,
        origin,
    })
}

/// Pipeline files of a directory (none if it does not exist).
fn load_pipelines_with(
    src: &dyn FileSource,
    dir: &Path,
) -> Result<Vec<crate::pipeline::spec::Pipeline>, ConfigError> {
    let files = match src.list_toml(dir) {
        Ok(f) => f,
        Err(ConfigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out: Vec<crate::pipeline::spec::Pipeline> = Vec::new();
    for p in files {
        let file = p.display().to_string();
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("pipeline");
        let pl = crate::pipeline::spec::Pipeline::from_toml(&src.read(&p)?, &file, stem)?;
        if let Some(other) = out
            .iter()
            .find(|o| o.name == pl.name || o.target == pl.target)
        {
            return Err(ConfigError::Invalid {
                file,
                key: "pipeline".into(),
                message: format!(
                    "pipeline `{}` -> {} clashes with `{}` -> {} ({}): names and targets must be unique",
                    pl.name, pl.target, other.name, other.target, other.file
                ),
            });
        }
        out.push(pl);
    }
    Ok(out)
}

/// Load every `*.toml` twin type of a directory from disk.
pub fn load_twin_types(dir: &Path) -> Result<HashMap<String, Arc<TwinType>>, ConfigError> {
    load_twin_types_with(&Disk, dir)
}

/// The twin types compiled into the binary.
pub fn embedded_twin_types() -> Result<HashMap<String, Arc<TwinType>>, ConfigError> {
    load_twin_types_with(&EMBEDDED, Path::new("twins"))
}

fn load_twin_types_with(
    src: &dyn FileSource,
    dir: &Path,
) -> Result<HashMap<String, Arc<TwinType>>, ConfigError> {
    let mut out = HashMap::new();
    for p in src.list_toml(dir)? {
        let file = p.display().to_string();
        let t = TwinType::from_toml(&src.read(&p)?, &file)?;
        if out.contains_key(&t.kind) {
            return Err(ConfigError::Invalid {
                file,
                key: "kind".into(),
                message: format!("twin type `{}` is defined twice", t.kind),
            });
        }
        out.insert(t.kind.clone(), Arc::new(t));
    }
    if out.is_empty() {
        return Err(ConfigError::Invalid {
            file: dir.display().to_string(),
            key: "twins".into(),
            message: "no twin type (*.toml) found".into(),
        });
    }
    Ok(out)
}

fn validate_platform(p: &PlatformFile, file: &str) -> Result<(), ConfigError> {
    let bad = |key: &str, message: &str| {
        Err(ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        })
    };
    if p.lake.flush_rows == 0 {
        return bad("lake.flush_rows", "must be above 0");
    }
    if p.lake.flush_interval_ms == 0 {
        return bad("lake.flush_interval_ms", "must be above 0");
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
    if p.ingest.shards == 0 || p.ingest.queue == 0 {
        return bad("ingest.shards", "shards and queue must be above 0");
    }
    Ok(())
}

/// Parse an IANA time zone name.
pub fn parse_timezone(name: &str) -> Option<chrono_tz::Tz> {
    name.parse().ok()
}
