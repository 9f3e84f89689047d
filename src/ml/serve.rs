//! Serving inside the twins: the registry's `champion` (and `challenger`)
//! of every built-in model, loaded once, shared by all twins of the type
//! behind an `Arc` swapped whole when the registry changes (a promotion is
//! served at the next feature row, without a restart, and no twin ever
//! sees half a model).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use super::model::{Model, Task};
use super::registry::Registry;
use crate::assets::features::FeatureSet;
use crate::assets::AssetModel;
use crate::twins::features::FeatureRow;
use crate::twins::scoring::{ModelScore, Role, Scorer};

/// A model being served.
struct Loaded {
    name: String,
    version: u32,
    role: Role,
    model: Model,
    /// Model feature i is the set's feature `index[i]`.
    index: Vec<usize>,
    features_version: Option<u32>,
    /// Energy baselines: the set's feature holding the power drawn.
    actual: Option<usize>,
}

/// What is being served, for the API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Served {
    pub model: String,
    pub version: u32,
    pub role: Role,
    pub twin_type: String,
    pub algorithm: String,
}

impl std::fmt::Debug for Champions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Champions({}, {} served)",
            self.registry.root().display(),
            self.served().len()
        )
    }
}

/// The champions and challengers of the built-in models.
pub struct Champions {
    registry: Registry,
    names: Vec<(String, String)>,
    by_type: RwLock<Arc<HashMap<String, Vec<Loaded>>>>,
    fingerprint: AtomicU64,
    /// Problems of the last load (a model that does not fit its twin type).
    pub problems: RwLock<Vec<String>>,
}

impl Champions {
    /// Load what the registry serves for `model`'s twin types.
    pub fn load(registry: Registry, model: &AssetModel) -> Arc<Champions> {
        let mut names = Vec::new();
        for n in super::builtin_names(model) {
            if let Ok(b) = super::builtin(model, &n) {
                names.push((n, b.twin_type));
            }
        }
        names.sort();
        let c = Arc::new(Champions {
            registry,
            names,
            by_type: RwLock::new(Arc::new(HashMap::new())),
            fingerprint: AtomicU64::new(0),
            problems: RwLock::new(Vec::new()),
        });
        c.reload_if_changed(model);
        c
    }

    /// Reload when the registry changed; returns whether it did.
    pub fn reload_if_changed(&self, model: &AssetModel) -> bool {
        let fp = self.registry.fingerprint();
        if fp == self.fingerprint.swap(fp, Ordering::Relaxed) && fp != 0 {
            return false;
        }
        let mut by_type: HashMap<String, Vec<Loaded>> = HashMap::new();
        let mut problems = Vec::new();
        for (name, kind) in &self.names {
            let Ok(reg) = self.registry.get(name) else {
                continue;
            };
            let Some(set) = model.twin_types.get(kind).and_then(|t| t.features.clone()) else {
                continue;
            };
            for (alias, role) in [
                ("champion", Role::Champion),
                ("challenger", Role::Challenger),
            ] {
                let Some(v) = reg.alias(alias) else {
                    continue;
                };
                match self.registry.load(name, v).and_then(|m| fit(m, &set)) {
                    Ok((m, index)) => {
                        tracing::info!(model = %name, version = v, role = role.as_str(), "serving");
                        let actual = (super::Kind::of(name) == Some(super::Kind::Energy))
                            .then(|| set.names().iter().position(|n| *n == m.target))
                            .flatten();
                        by_type.entry(kind.clone()).or_default().push(Loaded {
                            name: name.clone(),
                            version: v,
                            role,
                            features_version: m.features_version,
                            model: m,
                            index,
                            actual,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(model = %name, version = v, error = %e, "not served");
                        problems.push(format!("{name} v{v}: {e}"));
                    }
                }
            }
        }
        *self.by_type.write() = Arc::new(by_type);
        *self.problems.write() = problems;
        true
    }

    /// What is served now.
    pub fn served(&self) -> Vec<Served> {
        let g = self.by_type.read().clone();
        let mut v: Vec<Served> = g
            .iter()
            .flat_map(|(t, ls)| {
                ls.iter().map(move |l| Served {
                    model: l.name.clone(),
                    version: l.version,
                    role: l.role,
                    twin_type: t.clone(),
                    algorithm: l.model.algorithm.name().into(),
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
        v
    }

    /// Watch the registry every `every` until `stop`.
    pub fn spawn_watch(
        self: Arc<Self>,
        model: Arc<AssetModel>,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every.max(std::time::Duration::from_millis(200)));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = t.tick() => {}
                }
                let (c, m) = (self.clone(), model.clone());
                let _ = tokio::task::spawn_blocking(move || c.reload_if_changed(&m)).await;
            }
        })
    }
}

/// Map a model's features onto a feature set (by name; same definitions' version).
fn fit(m: Model, set: &FeatureSet) -> Result<(Model, Vec<usize>), super::MlError> {
    if let Some(v) = m.features_version {
        if v != set.version {
            return Err(super::MlError::Invalid(format!(
                "trained on feature definitions v{v}, the twin type has v{} (retrain)",
                set.version
            )));
        }
    }
    let names = set.names();
    let index = m
        .features
        .iter()
        .map(|f| {
            names.iter().position(|n| n == f).ok_or_else(|| {
                super::MlError::Invalid(format!("feature `{f}` is not in the twin type's set"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((m, index))
}

impl Scorer for Champions {
    fn score(&self, set: &FeatureSet, row: &FeatureRow) -> Vec<ModelScore> {
        let g = self.by_type.read().clone();
        let Some(ls) = g.get(&set.twin_type) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(ls.len());
        let mut raw: Vec<Option<f64>> = Vec::new();
        let mut x = Vec::new();
        for l in ls {
            if l.features_version.is_some_and(|v| v != set.version) {
                continue;
            }
            raw.clear();
            raw.extend(
                l.index
                    .iter()
                    .map(|&i| row.values.get(i).copied().flatten()),
            );
            l.model.prepare(&raw, &mut x);
            let s = l.model.score(&x);
            let mut ms = ModelScore {
                model: l.name.clone(),
                version: l.version,
                role: l.role,
                failure_prob: None,
                threshold: None,
                horizon_h: None,
                rul_h: None,
                reasons: Vec::new(),
                inputs: (l.role == Role::Champion).then(|| x.clone()),
                expected_kw: None,
                actual_kw: None,
            };
            match l.model.task {
                Task::Classification => {
                    let p = s.clamp(0.0, 1.0);
                    ms.failure_prob = Some((p * 1e4).round() / 1e4);
                    ms.threshold = l.model.threshold;
                    ms.horizon_h = l.model.horizon_h;
                    if l.model.threshold.is_some_and(|t| p >= t) {
                        ms.reasons = l
                            .model
                            .contributions(&x, 3)
                            .into_iter()
                            .map(|(f, d)| (f, (d * 1e3).round() / 1e3))
                            .collect();
                    }
                }
                Task::Regression => match l.actual {
                    Some(a) => {
                        ms.expected_kw = Some((s.max(0.0) * 100.0).round() / 100.0);
                        ms.actual_kw = row.values.get(a).copied().flatten();
                        ms.threshold = l.model.threshold;
                    }
                    None => ms.rul_h = Some((s.max(0.0) * 10.0).round() / 10.0),
                },
            }
            out.push(ms);
        }
        out
    }
}
