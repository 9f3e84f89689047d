//! Models with their whole life: training data from the lake
//! (`dataset`), training and honest evaluation (`train`, `metrics`), the
//! serving format (`model`, `forest`), the registry (`registry`), and the
//! scorer the twins call with their live features (`serve`).
//!
//! Built-in models are named after the twin type they serve:
//! `<twin type>_failure` (probability that a failure starts within the
//! horizon) and `<twin type>_rul` (remaining useful life, plant hours).
//! This module never touches the live path itself: the platform hands
//! `serve::Champions` to the twins through the `twins::scoring::Scorer`
//! trait.

pub mod dataset;
pub mod drift;
pub mod forest;
pub mod metrics;
pub mod model;
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

/// What a built-in model name means.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltIn {
    pub twin_type: String,
    pub task: Task,
}

/// `<twin>_failure` or `<twin>_rul` of a twin type with a feature set.
pub fn builtin(model: &AssetModel, name: &str) -> Result<BuiltIn, MlError> {
    let (twin, task) = if let Some(t) = name.strip_suffix("_failure") {
        (t, Task::Classification)
    } else if let Some(t) = name.strip_suffix("_rul") {
        (t, Task::Regression)
    } else {
        return Err(MlError::Invalid(format!(
            "`{name}`: built-in models are <twin type>_failure or <twin type>_rul \
             (or train on a table with --table)"
        )));
    };
    match model.twin_types.get(twin) {
        Some(tt) if tt.features.is_some() => Ok(BuiltIn {
            twin_type: twin.to_string(),
            task,
        }),
        Some(_) => Err(MlError::Invalid(format!(
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
        .filter(|t| t.features.is_some())
        .flat_map(|t| [format!("{}_failure", t.kind), format!("{}_rul", t.kind)])
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
    let names: Vec<String> = set.names().iter().map(|s| s.to_string()).collect();
    let label = match b.task {
        Task::Classification => Label::FailureWithin(horizon_h),
        Task::Regression => Label::Rul { cap_h: RUL_CAP_H },
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
    params.horizon_h = Some(match b.task {
        Task::Classification => hz,
        // The RUL label looks up to the cap ahead: no less a gap.
        Task::Regression => RUL_CAP_H.min(hz.max(HORIZON_H)),
    });
    let ds = builtin_dataset(lake, model, &b, hz).await?;
    let set = model.twin_types[&b.twin_type]
        .features
        .clone()
        .expect("checked");
    let (ds2, name2, p2) = (ds.clone(), name.to_string(), params.clone());
    let pb = progress.clone();
    let (mut m, run) = tokio::task::spawn_blocking(move || train::train(&ds2, &name2, &p2, &pb))
        .await
        .map_err(|e| MlError::Train(e.to_string()))??;
    m.twin_type = Some(b.twin_type.clone());
    m.features_version = Some(set.version);
    m.target = match b.task {
        Task::Classification => format!("failure_within_{hz}h"),
        Task::Regression => "rul_h".into(),
    };
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
    s
}
