//! Models with their whole life: training data from the lake
//! (`dataset`), training and honest evaluation (`train`, `metrics`), the
//! serving format (`model`, `forest`), the registry (`registry`), and the
//! scorer the twins call with their live features (`serve`).
//!
//! Built-in models are named after the twin type they serve:
//! `<twin type>_failure` (probability that a failure starts within the
//! horizon), `<twin type>_rul` (remaining useful life, plant hours) and
//! `<twin type>_energy` (the power a well-run machine draws in its state
//! and at its load: the baseline whose residual is energy waste).
//! This module never touches the live path itself: the platform hands
//! `serve::Champions` to the twins through the `twins::scoring::Scorer`
//! trait.

pub mod dataset;
pub mod drift;
pub mod energy;
pub mod forest;
pub mod metrics;
pub mod model;
pub mod quality;
pub mod registry;
pub mod serve;
pub mod train;

use std::fmt::Write as _;
use std::sync::Arc;

use crate::assets::AssetModel;
use crate::lake::Lakehouse;
use dataset::{Dataset, Label};
use model::{Model, Task};
use train::{Run, TrainParams};

/// Errors of the model lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error("training data: {0}")]
    Data(String),
    #[error("training: {0}")]
    Train(String),
    #[error("model registry: {0}")]
    Registry(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// Default label horizon of failure models (plant hours).
pub const HORIZON_H: f64 = 24.0;
/// Remaining useful life is capped here (plant hours): beyond, "healthy".
pub const RUL_CAP_H: f64 = 240.0;

/// The kinds of built-in model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failure,
    Rul,
    Energy,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Failure, Kind::Rul, Kind::Energy];

    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Failure => "_failure",
            Kind::Rul => "_rul",
            Kind::Energy => "_energy",
        }
    }

    pub fn task(self) -> Task {
        match self {
            Kind::Failure => Task::Classification,
            Kind::Rul | Kind::Energy => Task::Regression,
        }
    }

    /// The kind a model name says (`<twin type><suffix>`).
    pub fn of(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| name.ends_with(k.suffix()))
    }
}

/// What a built-in model name means.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltIn {
    pub twin_type: String,
    pub task: Task,
    pub kind: Kind,
}

/// `<twin>_failure`, `<twin>_rul` or `<twin>_energy` of a twin type with a
/// feature set (`_energy`: with an `[energy]` section).
pub fn builtin(model: &AssetModel, name: &str) -> Result<BuiltIn, MlError> {
    let Some(kind) = Kind::of(name) else {
        return Err(MlError::Invalid(format!(
            "`{name}`: built-in models are <twin type>_failure, <twin type>_rul or \
             <twin type>_energy (or train on a table with --table)"
        )));
    };
    let twin = &name[..name.len() - kind.suffix().len()];
    match model.twin_types.get(twin).map(|t| &t.features) {
        Some(Some(set)) if kind != Kind::Energy || set.energy.is_some() => Ok(BuiltIn {
            twin_type: twin.to_string(),
            task: kind.task(),
            kind,
        }),
        Some(Some(_)) => Err(MlError::Invalid(format!(
            "twin type `{twin}`'s feature set has no [energy] section (target and inputs)"
        ))),
        Some(None) => Err(MlError::Invalid(format!(
            "twin type `{twin}` has no feature set (models/features/{twin}.toml)"
        ))),
        None => Err(MlError::Invalid(format!("no twin type `{twin}`"))),
    }
}

/// Every built-in model name of the config (twin types with features).
pub fn builtin_names(model: &AssetModel) -> Vec<String> {
    let mut v: Vec<String> = model
        .twin_types
        .values()
        .filter_map(|t| t.features.as_ref().map(|f| (t, f)))
        .flat_map(|(t, f)| {
            Kind::ALL
                .into_iter()
                .filter(|k| *k != Kind::Energy || f.energy.is_some())
                .map(|k| format!("{}{}", t.kind, k.suffix()))
        })
        .collect();
    v.sort();
    v
}

/// Load the training data of a built-in model.
pub async fn builtin_dataset(
    lake: &Arc<Lakehouse>,
    model: &AssetModel,
    b: &BuiltIn,
    horizon_h: f64,
) -> Result<Dataset, MlError> {
    let tt = &model.twin_types[&b.twin_type];
    let set = tt.features.as_ref().expect("checked by builtin()");
    let (names, label): (Vec<String>, Label) = match b.kind {
        Kind::Failure => (all_names(set), Label::FailureWithin(horizon_h)),
        Kind::Rul => (all_names(set), Label::Rul { cap_h: RUL_CAP_H }),
        Kind::Energy => {
            let (inputs, target) = set.energy_names().expect("checked by builtin()");
            let mut v: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
            v.push(target.to_string());
            (v, Label::LastFeature)
        }
    };
    dataset::from_features(
        lake,
        &b.twin_type,
        set.version,
        &names,
        set.ms_per_hour,
        label,
        1.0,
    )
    .await
}

fn all_names(set: &crate::assets::features::FeatureSet) -> Vec<String> {
    set.names().iter().map(|s| s.to_string()).collect()
}

/// Train a built-in model end to end; returns the artifact and its run.
pub async fn train_builtin(
    lake: &Arc<Lakehouse>,
    model: &AssetModel,
    name: &str,
    mut params: TrainParams,
    progress: &indicatif::ProgressBar,
) -> Result<(Model, Run, Dataset), MlError> {
    let b = builtin(model, name)?;
    let hz = params.horizon_h.unwrap_or(HORIZON_H);
    params.task = b.task;
    params.horizon_h = match b.kind {
        Kind::Failure => Some(hz),
        // The RUL label looks up to the cap ahead: no less a gap.
        Kind::Rul => Some(RUL_CAP_H.min(hz.max(HORIZON_H))),
        // Power in the same bucket: nothing looks ahead.
        Kind::Energy => None,
    };
    let ds = builtin_dataset(lake, model, &b, hz).await?;
    let set = model.twin_types[&b.twin_type]
        .features
        .clone()
        .expect("checked");
    let (ds2, name2, p2) = (ds.clone(), name.to_string(), params.clone());
    let pb = progress.clone();
    let (mut m, mut run) =
        tokio::task::spawn_blocking(move || train::train(&ds2, &name2, &p2, &pb))
            .await
            .map_err(|e| MlError::Train(e.to_string()))??;
    m.twin_type = Some(b.twin_type.clone());
    m.features_version = Some(set.version);
    m.target = match b.kind {
        Kind::Failure => format!("failure_within_{hz}h"),
        Kind::Rul => "rul_h".into(),
        Kind::Energy => set
            .energy_names()
            .map(|(_, t)| t.to_string())
            .unwrap_or_default(),
    };
    if b.kind == Kind::Energy {
        energy::finish(lake, &ds, &params, set.bucket_ms, &mut m, &mut run).await?;
    }
    Ok((m, run, ds))
}

/// The model card of a version (Markdown): what it is, the data, the
/// figures side by side with baselines, and where it is weak.
pub fn card(m: &Model, run: &Run) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", m.name);
    let _ = writeln!(
        s,
        "**Task**: {} of `{}`{}. **Algorithm**: {} ({} features).\n",
        m.task.as_str(),
        m.target,
        m.twin_type
            .as_ref()
            .map(|t| format!(
                " for twin type `{t}` (feature definitions v{})",
                m.features_version.unwrap_or(0)
            ))
            .unwrap_or_default(),
        run.algorithm,
        m.features.len()
    );
    let _ = writeln!(s, "## Data\n");
    for (t, v) in &run.sources {
        let _ = writeln!(
            s,
            "- `{t}` at version {}",
            v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
        );
    }
    for (k, v) in &run.periods {
        let _ = writeln!(
            s,
            "- {k}: {v} ({} rows)",
            run.rows.get(k).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        s,
        "\nPeriods are split by time with a gap of one label horizon between them, so no \
         label looks into the next period.\n"
    );
    let _ = writeln!(s, "## Test figures\n");
    let _ = writeln!(s, "| | value |\n|---|---|");
    for (k, v) in &run.metrics {
        let _ = writeln!(s, "| {k} | {v:.4} |");
    }
    let _ = writeln!(s, "\n## Compared on the same test rows\n");
    for c in &run.compared {
        let _ = writeln!(s, "- **{}**: `{}`", c.name, c.test);
    }
    let _ = writeln!(s, "\n## Most used features\n");
    for (f, w) in run.importance.iter().take(8) {
        let _ = writeln!(s, "- {f}: {:.1} % of splits", w * 100.0);
    }
    let _ = writeln!(s, "\n## Limits\n");
    let _ = writeln!(
        s,
        "- Trained on {}; a plant whose machines wear differently must retrain on its own history.\n\
         - Stops that give no warning in the signals (jams, material shortages) cannot be predicted; \
         they stay in the unplanned downtime figures.\n\
         - Feature definitions are versioned: the twins serve this model only to machines whose \
         feature set has the same version.",
        if run.sources.iter().any(|s| s.0 == "system.sim_failures") {
            "simulated history (the simulator's ground truth labels it)"
        } else {
            "the lake's history"
        }
    );
    if m.twin_type.is_some() && Kind::of(&m.name) == Some(Kind::Energy) {
        let _ = writeln!(
            s,
            "- Energy baseline: it learns the power the machines drew, waste included (nobody \
             labels waste); waste is what lies over its expectation by more than the tolerance \
             (three robust standard deviations of the validation residuals), so waste that is \
             always there, on every machine, is invisible to it. A new product mix or a \
             changed machine needs retraining."
        );
    }
    s
}
