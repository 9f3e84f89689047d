//! The model registry (like MLflow's): registered models with numbered
//! versions, each with its artifact (`model.json`, loadable without the
//! training code), the run that produced it (`run.json`: parameters,
//! metrics, the Delta table versions it read, feature definitions' version)
//! and a model card (`card.md`); aliases (`champion`, `challenger`) and
//! stages per version. Plain files under one directory, so it is diffable,
//! copyable and ships in git:
//!
//! ```text
//! <root>/<model>/registry.json      versions, stages, aliases
//! <root>/<model>/v<N>/model.json    the artifact
//! <root>/<model>/v<N>/run.json      the training run
//! <root>/<model>/v<N>/card.md       the model card
//! ```
//!
//! Writes go to a temporary file renamed into place, so a reader (a twin
//! reloading its champion) never sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::Model;
use super::train::Run;
use super::MlError;

/// Lifecycle stage of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    None,
    Staging,
    Production,
    Archived,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }
}

/// One version of a registered model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Version {
    pub version: u32,
    pub run_id: String,
    pub created_ms: i64,
    pub stage: Stage,
    pub algorithm: String,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub features_version: Option<u32>,
    /// Tables (and versions) it was trained on: lineage.
    #[serde(default)]
    pub sources: Vec<(String, Option<u64>)>,
}

/// A registered model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisteredModel {
    pub name: String,
    pub task: String,
    #[serde(default)]
    pub twin_type: Option<String>,
    pub target: String,
    #[serde(default)]
    pub description: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub versions: Vec<Version>,
    /// Alias -> version.
    #[serde(default)]
    pub aliases: BTreeMap<String, u32>,
}

impl RegisteredModel {
    pub fn version(&self, v: u32) -> Option<&Version> {
        self.versions.iter().find(|x| x.version == v)
    }
    pub fn alias(&self, a: &str) -> Option<u32> {
        self.aliases.get(a).copied()
    }
    pub fn latest(&self) -> Option<u32> {
        self.versions.iter().map(|v| v.version).max()
    }
}

/// The registry directory.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> MlError {
    MlError::Registry(format!("{}: {e}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MlError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// A model name: lower case letters, digits, `_` and `-`.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Registry {
    pub fn open(root: impl Into<PathBuf>) -> Registry {
        Registry { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Every registered model, by name.
    pub fn list(&self) -> Result<Vec<RegisteredModel>, MlError> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.root, e)),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().join("registry.json").is_file() {
                out.push(self.get(&name)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One registered model.
    pub fn get(&self, name: &str) -> Result<RegisteredModel, MlError> {
        if !valid_name(name) {
            return Err(MlError::NotFound(format!("model `{name}`")));
        }
        let p = self.dir(name).join("registry.json");
        let text = std::fs::read_to_string(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                MlError::NotFound(format!("model `{name}` (no {})", p.display()))
            } else {
                io(&p, e)
            }
        })?;
        serde_json::from_str(&text).map_err(|e| MlError::Registry(format!("{}: {e}", p.display())))
    }

    fn put(&self, m: &RegisteredModel) -> Result<(), MlError> {
        let p = self.dir(&m.name).join("registry.json");
        let text = serde_json::to_vec_pretty(m).map_err(|e| MlError::Registry(e.to_string()))?;
        write_atomic(&p, &text)
    }

    /// Register a trained model as the next version of its name.
    pub fn register(&self, model: &Model, run: &Run, card: &str) -> Result<u32, MlError> {
        if !valid_name(&model.name) {
            return Err(MlError::Registry(format!(
                "model name `{}`: lower case letters, digits, `_` and `-`",
                model.name
            )));
        }
        let now = crate::time::now_ms();
        let mut m = match self.get(&model.name) {
            Ok(m) => m,
            Err(MlError::NotFound(_)) => RegisteredModel {
                name: model.name.clone(),
                task: model.task.as_str().into(),
                twin_type: model.twin_type.clone(),
                target: model.target.clone(),
                description: String::new(),
                created_ms: now,
                updated_ms: now,
                versions: Vec::new(),
                aliases: BTreeMap::new(),
            },
            Err(e) => return Err(e),
        };
        let v = m.latest().unwrap_or(0) + 1;
        let dir = self.dir(&model.name).join(format!("v{v}"));
        let compact = serde_json::to_vec(model).map_err(|e| MlError::Registry(e.to_string()))?;
        let pretty =
            serde_json::to_vec_pretty(run).map_err(|e| MlError::Registry(e.to_string()))?;
        write_atomic(&dir.join("model.json"), &compact)?;
        write_atomic(&dir.join("run.json"), &pretty)?;
        write_atomic(&dir.join("card.md"), card.as_bytes())?;
        m.versions.push(Version {
            version: v,
            run_id: run.run_id.clone(),
            created_ms: now,
            stage: Stage::None,
            algorithm: run.algorithm.clone(),
            metrics: run.metrics.clone(),
            features_version: model.features_version,
            sources: run.sources.clone(),
        });
        m.updated_ms = now;
        m.target = model.target.clone();
        self.put(&m)?;
        Ok(v)
    }

    /// Point `alias` at `version` (a version can carry several aliases; an
    /// alias names one version). `champion` also moves the stage to
    /// Production (the previous champion goes to Archived).
    pub fn set_alias(&self, name: &str, alias: &str, version: u32) -> Result<(), MlError> {
        let mut m = self.get(name)?;
        if m.version(version).is_none() {
            return Err(MlError::NotFound(format!(
                "model `{name}` version {version}"
            )));
        }
        if !valid_name(alias) {
            return Err(MlError::Registry(format!(
                "alias `{alias}`: lower case letters, digits, `_`"
            )));
        }
        let previous = m.aliases.insert(alias.to_string(), version);
        if alias == "champion" {
            for v in m.versions.iter_mut() {
                if v.version == version {
                    v.stage = Stage::Production;
                } else if Some(v.version) == previous && v.stage == Stage::Production {
                    v.stage = Stage::Archived;
                }
            }
        } else if alias == "challenger" {
            if let Some(v) = m.versions.iter_mut().find(|v| v.version == version) {
                if v.stage == Stage::None {
                    v.stage = Stage::Staging;
                }
            }
        }
        m.updated_ms = crate::time::now_ms();
        self.put(&m)
    }

    /// Archive a version: it loses its aliases and no twin serves it.
    pub fn archive(&self, name: &str, version: u32) -> Result<(), MlError> {
        let mut m = self.get(name)?;
        let Some(v) = m.versions.iter_mut().find(|v| v.version == version) else {
            return Err(MlError::NotFound(format!(
                "model `{name}` version {version}"
            )));
        };
        v.stage = Stage::Archived;
        m.aliases.retain(|_, v| *v != version);
        m.updated_ms = crate::time::now_ms();
        self.put(&m)
    }

    /// The version an alias or a number names (`champion`, `3`, `v3`, `latest`).
    pub fn resolve(&self, name: &str, which: &str) -> Result<u32, MlError> {
        let m = self.get(name)?;
        let w = which.trim_start_matches('v');
        if which == "latest" {
            return m
                .latest()
                .ok_or_else(|| MlError::NotFound(format!("model `{name}` has no versions")));
        }
        if let Ok(n) = w.parse::<u32>() {
            return m
                .version(n)
                .map(|v| v.version)
                .ok_or_else(|| MlError::NotFound(format!("model `{name}` version {n}")));
        }
        m.alias(which)
            .ok_or_else(|| MlError::NotFound(format!("model `{name}` has no alias `{which}`")))
    }

    fn read(&self, name: &str, version: u32, file: &str) -> Result<String, MlError> {
        let p = self.dir(name).join(format!("v{version}")).join(file);
        std::fs::read_to_string(&p).map_err(|e| io(&p, e))
    }

    /// Load a version's artifact (validated).
    pub fn load(&self, name: &str, version: u32) -> Result<Model, MlError> {
        let text = self.read(name, version, "model.json")?;
        let m: Model = serde_json::from_str(&text)
            .map_err(|e| MlError::Registry(format!("{name} v{version}: model.json: {e}")))?;
        m.validate()
            .map_err(|e| MlError::Registry(format!("{name} v{version}: {e}")))?;
        Ok(m)
    }

    /// A version's training run.
    pub fn run(&self, name: &str, version: u32) -> Result<Run, MlError> {
        let text = self.read(name, version, "run.json")?;
        serde_json::from_str(&text)
            .map_err(|e| MlError::Registry(format!("{name} v{version}: run.json: {e}")))
    }

    /// A version's model card (Markdown).
    pub fn card(&self, name: &str, version: u32) -> Result<String, MlError> {
        self.read(name, version, "card.md")
    }

    /// Start a registry that does not exist yet with the champions built
    /// into the binary (trained on the demo simulator, see models/README.md),
    /// so `ironlake demo` predicts from its first minute. Returns the files
    /// written (none when the directory exists).
    pub fn install_builtin(&self) -> Result<usize, MlError> {
        if self.root.exists() {
            return Ok(0);
        }
        let mut n = 0;
        for (path, text) in crate::config::EMBEDDED.under("models/registry/") {
            let rel = path.trim_start_matches("models/registry/");
            write_atomic(&self.root.join(rel), text.as_bytes())?;
            n += 1;
        }
        Ok(n)
    }

    /// A fingerprint of the registry's state (changes when anything is
    /// registered, promoted or archived): the serving side polls it.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            let mut names: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path().join("registry.json"))
                .collect();
            names.sort();
            for p in names {
                if let Ok(md) = std::fs::metadata(&p) {
                    let t = md
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0);
                    for x in [t, md.len()] {
                        h = (h ^ x).wrapping_mul(0x0100_0000_01b3);
                    }
                }
            }
        }
        h
    }
}
