//! The configuration files compiled into the binary, so that `ironlake demo`
//! needs nothing but the executable.

use std::path::{Path, PathBuf};

use super::{ConfigError, FileSource};

/// Files under the repository root, by relative path.
pub struct Embedded(&'static [(&'static str, &'static str)]);

/// Every file `ironlake demo` needs (and the built-in model registry) (pipelines in file-name order, as on disk).
pub static EMBEDDED: Embedded = Embedded(&[
    (
        "config/ironlake.toml",
        include_str!("../../config/ironlake.toml"),
    ),
    (
        "config/plants/plant-a.toml",
        include_str!("../../config/plants/plant-a.toml"),
    ),
    (
        "config/plants/plant-b.toml",
        include_str!("../../config/plants/plant-b.toml"),
    ),
    (
        "config/pipelines/alarm_log.toml",
        include_str!("../../config/pipelines/alarm_log.toml"),
    ),
    (
        "config/pipelines/downtime.toml",
        include_str!("../../config/pipelines/downtime.toml"),
    ),
    (
        "config/pipelines/energy_shift.toml",
        include_str!("../../config/pipelines/energy_shift.toml"),
    ),
    (
        "config/pipelines/features.toml",
        include_str!("../../config/pipelines/features.toml"),
    ),
    (
        "config/pipelines/oee_shift.toml",
        include_str!("../../config/pipelines/oee_shift.toml"),
    ),
    (
        "config/pipelines/oee_shift_rollup.toml",
        include_str!("../../config/pipelines/oee_shift_rollup.toml"),
    ),
    (
        "config/pipelines/reliability.toml",
        include_str!("../../config/pipelines/reliability.toml"),
    ),
    (
        "models/features/cnc_mill.toml",
        include_str!("../../models/features/cnc_mill.toml"),
    ),
    (
        "models/features/press.toml",
        include_str!("../../models/features/press.toml"),
    ),
    // The shipped champions (`models/registry`, see models/README.md).
    (
        "models/registry/cnc_mill_energy/registry.json",
        include_str!("../../models/registry/cnc_mill_energy/registry.json"),
    ),
    (
        "models/registry/cnc_mill_energy/v1/card.md",
        include_str!("../../models/registry/cnc_mill_energy/v1/card.md"),
    ),
    (
        "models/registry/cnc_mill_energy/v1/model.json",
        include_str!("../../models/registry/cnc_mill_energy/v1/model.json"),
    ),
    (
        "models/registry/cnc_mill_energy/v1/run.json",
        include_str!("../../models/registry/cnc_mill_energy/v1/run.json"),
    ),
    (
        "models/registry/cnc_mill_failure/registry.json",
        include_str!("../../models/registry/cnc_mill_failure/registry.json"),
    ),
    (
        "models/registry/cnc_mill_failure/v1/card.md",
        include_str!("../../models/registry/cnc_mill_failure/v1/card.md"),
    ),
    (
        "models/registry/cnc_mill_failure/v1/model.json",
        include_str!("../../models/registry/cnc_mill_failure/v1/model.json"),
    ),
    (
        "models/registry/cnc_mill_failure/v1/run.json",
        include_str!("../../models/registry/cnc_mill_failure/v1/run.json"),
    ),
    (
        "models/registry/cnc_mill_rul/registry.json",
        include_str!("../../models/registry/cnc_mill_rul/registry.json"),
    ),
    (
        "models/registry/cnc_mill_rul/v1/card.md",
        include_str!("../../models/registry/cnc_mill_rul/v1/card.md"),
    ),
    (
        "models/registry/cnc_mill_rul/v1/model.json",
        include_str!("../../models/registry/cnc_mill_rul/v1/model.json"),
    ),
    (
        "models/registry/cnc_mill_rul/v1/run.json",
        include_str!("../../models/registry/cnc_mill_rul/v1/run.json"),
    ),
    (
        "models/registry/press_energy/registry.json",
        include_str!("../../models/registry/press_energy/registry.json"),
    ),
    (
        "models/registry/press_energy/v1/card.md",
        include_str!("../../models/registry/press_energy/v1/card.md"),
    ),
    (
        "models/registry/press_energy/v1/model.json",
        include_str!("../../models/registry/press_energy/v1/model.json"),
    ),
    (
        "models/registry/press_energy/v1/run.json",
        include_str!("../../models/registry/press_energy/v1/run.json"),
    ),
    (
        "models/registry/press_failure/registry.json",
        include_str!("../../models/registry/press_failure/registry.json"),
    ),
    (
        "models/registry/press_failure/v1/card.md",
        include_str!("../../models/registry/press_failure/v1/card.md"),
    ),
    (
        "models/registry/press_failure/v1/model.json",
        include_str!("../../models/registry/press_failure/v1/model.json"),
    ),
    (
        "models/registry/press_failure/v1/run.json",
        include_str!("../../models/registry/press_failure/v1/run.json"),
    ),
    (
        "models/registry/press_rul/registry.json",
        include_str!("../../models/registry/press_rul/registry.json"),
    ),
    (
        "models/registry/press_rul/v1/card.md",
        include_str!("../../models/registry/press_rul/v1/card.md"),
    ),
    (
        "models/registry/press_rul/v1/model.json",
        include_str!("../../models/registry/press_rul/v1/model.json"),
    ),
    (
        "models/registry/press_rul/v1/run.json",
        include_str!("../../models/registry/press_rul/v1/run.json"),
    ),
    (
        "twins/cnc_mill.toml",
        include_str!("../../twins/cnc_mill.toml"),
    ),
    ("twins/press.toml", include_str!("../../twins/press.toml")),
    (
        "twins/conveyor.toml",
        include_str!("../../twins/conveyor.toml"),
    ),
    (
        "twins/compressor.toml",
        include_str!("../../twins/compressor.toml"),
    ),
    (
        "simulators/demo.toml",
        include_str!("../../simulators/demo.toml"),
    ),
]);

/// Collapse `a/b/../c` to `a/c` so relative references resolve inside the bundle.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_str().unwrap_or("")),
            _ => {}
        }
    }
    parts.join("/")
}

impl Embedded {
    /// Embedded files under a directory prefix (`models/registry/`).
    pub fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'static str, &'static str)> + 'a {
        self.0
            .iter()
            .copied()
            .filter(move |(p, _)| p.starts_with(prefix))
    }

    /// Text of an embedded file.
    pub fn get(&self, path: &str) -> Option<&'static str> {
        let key = normalize(Path::new(path));
        self.0.iter().find(|(p, _)| *p == key).map(|(_, t)| *t)
    }
}

impl FileSource for Embedded {
    fn read(&self, path: &Path) -> Result<String, ConfigError> {
        self.get(&path.display().to_string())
            .map(str::to_string)
            .ok_or_else(|| ConfigError::Io {
                file: format!("embedded:{}", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not in the binary"),
            })
    }
    fn list_toml(&self, dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
        let prefix = format!("{}/", normalize(dir));
        Ok(self
            .0
            .iter()
            .filter(|(p, _)| {
                p.starts_with(&prefix) && p.ends_with(".toml") && !p[prefix.len()..].contains('/')
            })
            .map(|(p, _)| PathBuf::from(p))
            .collect())
    }
}
