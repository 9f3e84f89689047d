//! One configuration, loaded and resolved: the platform file, the asset
//! model built from the plant files and twin types, the connectors resolved
//! against it, and the pipelines. Everything is checked here, before
//! anything starts: every error names the file and key to fix.

use std::path::Path;
use std::sync::Arc;

use crate::assets::{self, AssetModel, TwinType};
use crate::config::{ConfigError, ConfigFiles, PlantFile, PlatformFile};
use crate::connectors::Connectors;
use crate::pipeline::spec::Pipeline;

/// The loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub platform: PlatformFile,
    pub model: Arc<AssetModel>,
    /// The protocols' resolved settings and bindings.
    pub connectors: Connectors,
    /// Pipelines of `[pipelines].dir` (or the built-in ones).
    pub pipelines: Vec<Pipeline>,
    /// Where it was loaded from (`embedded:` for the built-in default).
    pub origin: String,
}

impl Config {
    /// Load a platform config from disk, with its plant files, twin types
    /// and pipelines.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Config::resolve(ConfigFiles::load(path)?)
    }

    /// The configuration compiled into the binary (the demo plants).
    pub fn embedded() -> Result<Self, ConfigError> {
        Config::resolve(ConfigFiles::embedded()?)
    }

    /// Resolve parsed files into a configuration.
    pub fn resolve(files: ConfigFiles) -> Result<Self, ConfigError> {
        let twin_types = assets::twin_types_with_features(files.twin_types, files.features)?;
        let model = AssetModel::build(twin_types, files.plants)?;
        let connectors = Connectors::resolve(&model, &files.platform, &files.origin)?;
        let mut pipelines: Vec<Pipeline> = Vec::new();
        for (file, stem, def) in files.pipelines {
            let pl = Pipeline::from_file(def, &file, &stem)?;
            if let Some(other) = pipelines
                .iter()
                .find(|o| o.name == pl.name || o.target == pl.target)
            {
                return Err(ConfigError::invalid(
                    &file,
                    "pipeline",
                    format!(
                        "pipeline `{}` -> {} clashes with `{}` -> {} ({}): names and targets must be unique",
                        pl.name, pl.target, other.name, other.target, other.file
                    ),
                ));
            }
            pipelines.push(pl);
        }
        Ok(Config {
            platform: files.platform,
            model: Arc::new(model),
            connectors,
            pipelines,
            origin: files.origin,
        })
    }

    /// Build a config from parts (tests and benchmarks that generate
    /// plants); no pipelines.
    pub fn from_parts(
        platform: PlatformFile,
        twin_types: std::collections::HashMap<String, Arc<TwinType>>,
        plants: Vec<(String, PlantFile)>,
    ) -> Result<Self, ConfigError> {
        let model = AssetModel::build(twin_types, plants)?;
        let connectors = Connectors::resolve(&model, &platform, "in-memory")?;
        Ok(Config {
            platform,
            model: Arc::new(model),
            connectors,
            pipelines: Vec::new(),
            origin: "in-memory".into(),
        })
    }

    /// The twin types built into the binary.
    pub fn embedded_twin_types(
    ) -> Result<std::collections::HashMap<String, Arc<TwinType>>, ConfigError> {
        assets::twin_types_with_features(
            crate::config::embedded_twin_type_files()?,
            crate::config::embedded_feature_files()?,
        )
    }
}
