//! The landing folder as written: `[[files.sources]]` in the platform file,
//! one entry per watched folder.
//!
//! ```toml
//! [[files.sources]]
//! name = "historian"                 # metrics, markers, bronze.landing_<name>
//! path = "landing/historian"         # relative to the platform file
//! format = "auto"                    # auto (by extension) | jsonl | csv | parquet
//! layout = "long"                    # long | wide | table
//! schema_evolution = "addNewColumns" # addNewColumns | rescue | failOnNewColumns | none
//! asset = "machine_id"               # long, wide: the column with the asset id
//! ts = "ts"                          # long, wide: the source time column
//! signal = "signal"                  # long: the signal name column
//! value = "value"                    # long: the value column
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::store::RemotePrefix;

use crate::config::ConfigError;
use crate::lake::{Layer, TableName};

/// How rows map to readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One reading per row: asset, signal, ts, value columns.
    Long,
    /// One row per asset and time, one column per signal.
    Wide,
    /// Not telemetry (ERP extracts, maintenance logs): rows land as their
    /// own `bronze.<table>` and `silver.<table>`.
    Table,
}

/// What happens when files bring columns the source's schema lacks
/// (the names of Databricks Auto Loader's `cloudFiles.schemaEvolutionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Evolution {
    /// New columns are added (nullable) and the file is read with them.
    #[serde(rename = "addNewColumns")]
    AddNewColumns,
    /// The schema never changes: new fields and values that do not fit
    /// their column go, as JSON, into `_rescued_data`.
    #[serde(rename = "rescue")]
    Rescue,
    /// A file with new columns is not ingested; the source stops at it
    /// with the columns named, until the file is removed or the mode changed.
    #[serde(rename = "failOnNewColumns")]
    FailOnNewColumns,
    /// New columns are ignored (still in the file, not in the tables).
    #[serde(rename = "none")]
    None,
}

impl Evolution {
    /// The name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Evolution::AddNewColumns => "addNewColumns",
            Evolution::Rescue => "rescue",
            Evolution::FailOnNewColumns => "failOnNewColumns",
            Evolution::None => "none",
        }
    }
}

/// File format of a source (or `auto`: by extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Auto,
    Jsonl,
    Csv,
    Parquet,
}

impl Format {
    /// The format of a file name (`auto` resolved), or none for a file the
    /// source does not take.
    pub fn of(self, name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        let by_ext = if lower.ends_with(".jsonl")
            || lower.ends_with(".ndjson")
            || lower.ends_with(".json")
        {
            Format::Jsonl
        } else if lower.ends_with(".csv") {
            Format::Csv
        } else if lower.ends_with(".parquet") {
            Format::Parquet
        } else {
            return None;
        };
        match self {
            Format::Auto => Some(by_ext),
            f if f == by_ext => Some(f),
            _ => None,
        }
    }
}

fn default_format() -> Format {
    Format::Auto
}
fn default_layout() -> Layout {
    Layout::Long
}
fn default_evolution() -> Evolution {
    Evolution::AddNewColumns
}
fn default_asset() -> String {
    "asset_id".into()
}
fn default_ts() -> String {
    "ts".into()
}
fn default_signal() -> String {
    "signal".into()
}
fn default_value() -> String {
    "value".into()
}
fn default_settle_ms() -> u64 {
    1000
}
fn default_poll_ms() -> u64 {
    500
}
fn default_chunk_mb() -> u64 {
    64
}
fn default_twin_horizon_s() -> u64 {
    3600
}
fn default_max_past_days() -> u64 {
    3650
}

/// One `[[files.sources]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Names the source in metrics, markers and `bronze.landing_<name>`
    /// (lower case letters, digits, `_`).
    pub name: String,
    /// The folder watched (relative to the platform file, or `file:///...`),
    /// or an object-store prefix (`s3://bucket/prefix`, `gs://`, `az://`,
    /// `abfss://`, `https://`).
    pub path: String,
    /// Object-store prefixes: options of `object_store`'s builder
    /// (`aws_endpoint`, `aws_region`, `aws_access_key_id`, ...), over the
    /// `AWS_*`/`GOOGLE_*`/`AZURE_*` environment variables.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    #[serde(default = "default_format")]
    pub format: Format,
    #[serde(default = "default_layout")]
    pub layout: Layout,
    #[serde(default = "default_evolution")]
    pub schema_evolution: Evolution,
    #[serde(default = "default_asset")]
    pub asset: String,
    #[serde(default = "default_ts")]
    pub ts: String,
    #[serde(default = "default_signal")]
    pub signal: String,
    #[serde(default = "default_value")]
    pub value: String,
    /// Wide layout: columns that are neither signals nor keys (`plant`,
    /// `operator`): kept in bronze, not readings.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Layout `table`: the table name (default: the source's name).
    #[serde(default)]
    pub table: Option<String>,
    /// A file is read once its size and modification time have not
    /// changed for this long (files named `*.tmp`, `*.part`, `.*` or `_*`
    /// are never read: write there and rename).
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// How often the folder is listed.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Files are read in slices of about this many MiB (the memory bound).
    #[serde(default = "default_chunk_mb")]
    pub chunk_mb: u64,
    /// Readings newer than this many seconds also go to the twins; older
    /// ones (backfills) only to the lake.
    #[serde(default = "default_twin_horizon_s")]
    pub twin_horizon_s: u64,
    /// Readings older than this many days are quarantined
    /// (`ancient_timestamp`); historian exports are often years old.
    #[serde(default = "default_max_past_days")]
    pub max_past_days: u64,
}

/// `[files]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FilesSection {
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

impl Resolved {
    /// Where the source reads from, as shown (folder or URL).
    pub fn location(&self) -> String {
        match &self.remote {
            Some(r) => r.url.clone(),
            None => self.dir.display().to_string(),
        }
    }
}

/// A source resolved: paths made absolute, tables named.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub cfg: SourceConfig,
    /// The local folder (for an object-store prefix: empty).
    pub dir: PathBuf,
    /// An object-store prefix, staged file by file into the source's state.
    pub remote: Option<RemotePrefix>,
    /// Where rows land as read: `bronze.landing_<name>` or `bronze.<table>`.
    pub bronze: TableName,
    /// Layout `table`: `silver.<table>`.
    pub silver: Option<TableName>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl FilesSection {
    /// Check every source and resolve its paths against the platform file's folder.
    pub fn resolve(&self, platform_file: &str) -> Result<Vec<Resolved>, ConfigError> {
        let base: PathBuf = if platform_file.starts_with("embedded:") {
            PathBuf::from(".")
        } else {
            Path::new(platform_file)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        let mut out: Vec<Resolved> = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = |k: &str| format!("files.sources[{i}].{k}");
            let bad = |k: &str, m: String| ConfigError::invalid(platform_file, &key(k), m);
            if !valid_name(&s.name) {
                return Err(bad(
                    "name",
                    format!(
                        "`{}`: use lower case letters, digits and `_` (64 at most, not starting with a digit)",
                        s.name
                    ),
                ));
            }
            if out.iter().any(|o| o.cfg.name == s.name) {
                return Err(bad("name", format!("`{}` is used twice", s.name)));
            }
            let mut remote = None;
            let dir = if let Some(rest) = s.path.strip_prefix("file://") {
                PathBuf::from(rest)
            } else if s.path.contains("://") {
                remote = Some(
                    RemotePrefix::open(&s.path, &s.storage_options).map_err(|e| bad("path", e))?,
                );
                PathBuf::new()
            } else {
                let p = Path::new(&s.path);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                }
            };
            if remote.is_none() && !s.storage_options.is_empty() {
                return Err(bad(
                    "storage_options",
                    "only for an object-store path (s3://, gs://, az://, https://)".into(),
                ));
            }
            if s.chunk_mb == 0 || s.chunk_mb > 4096 {
                return Err(bad("chunk_mb", "must be between 1 and 4096".into()));
            }
            if s.poll_ms == 0 {
                return Err(bad("poll_ms", "must be at least 1".into()));
            }
            let (bronze, silver) = match s.layout {
                Layout::Table => {
                    let t = s.table.clone().unwrap_or_else(|| s.name.clone());
                    if !valid_name(&t) {
                        return Err(bad("table", format!("`{t}`: not a table name")));
                    }
                    let reserved = ["readings", "quarantine", "asset_events", "raw_events"];
                    if reserved.contains(&t.as_str()) {
                        return Err(bad(
                            "table",
                            format!("`{t}` is one of ironlake's own tables"),
                        ));
                    }
                    (
                        TableName::new(Layer::Bronze, &t)
                            .map_err(|e| bad("table", e.message.to_string()))?,
                        Some(
                            TableName::new(Layer::Silver, &t)
                                .map_err(|e| bad("table", e.message.to_string()))?,
                        ),
                    )
                }
                _ => {
                    if s.table.is_some() {
                        return Err(bad(
                            "table",
                            "only for layout = \"table\" (telemetry lands in silver.readings)"
                                .into(),
                        ));
                    }
                    let cols = [&s.asset, &s.ts];
                    if cols.iter().any(|c| c.is_empty()) {
                        return Err(bad("asset", "column names must not be empty".into()));
                    }
                    (
                        TableName::new(Layer::Bronze, &format!("landing_{}", s.name))
                            .map_err(|e| bad("name", e.message.to_string()))?,
                        None,
                    )
                }
            };
            out.push(Resolved {
                cfg: s.clone(),
                dir,
                remote,
                bronze,
                silver,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        assert_eq!(Format::Auto.of("a.JSONL"), Some(Format::Jsonl));
        assert_eq!(Format::Auto.of("a.csv"), Some(Format::Csv));
        assert_eq!(Format::Csv.of("a.parquet"), None);
        assert_eq!(Format::Auto.of("a.txt"), None);
    }

    #[test]
    fn sources_are_checked_with_their_key() {
        let sec: FilesSection = toml::from_str(
            r#"
            [[sources]]
            name = "Hist"
            path = "x"
            "#,
        )
        .unwrap();
        let e = sec.resolve("cfg/ironlake.toml").unwrap_err().to_string();
        assert!(e.contains("files.sources[0].name"), "{e}");
        let sec: FilesSection = toml::from_str(
            r#"
            [[sources]]
            name = "hist"
            path = "landing"
            schema_evolution = "rescue"
            "#,
        )
        .unwrap();
        let r = sec.resolve("cfg/ironlake.toml").unwrap();
        assert_eq!(r[0].dir, PathBuf::from("cfg/landing"));
        assert_eq!(r[0].bronze.to_string(), "bronze.landing_hist");
        assert!(toml::from_str::<FilesSection>(
            "[[sources]]\nname='a'\npath='b'\nschema_evolution='addnewcolumns'"
        )
        .is_err());
    }
}
