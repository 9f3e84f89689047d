//! The plug-in point through which a machine twin scores its live
//! features: each time a feature bucket closes, the twin hands the row to
//! the platform's [`Scorer`] (the model registry's champions and
//! challengers, see `ml::serve`) and keeps what comes back: failure
//! probability, remaining useful life, health, the features that explain
//! an alert, and the power the machine should draw (energy baseline). Twins know nothing of model formats or files.

use serde::Serialize;

use super::features::FeatureRow;
use crate::assets::features::FeatureSet;

/// Whose score it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves: its scores drive the twin's health and alerts.
    Champion,
    /// Shadow: scored beside the champion and recorded, never acted on.
    Challenger,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Challenger => "challenger",
        }
    }
}

/// One model's score of one feature row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelScore {
    pub model: String,
    pub version: u32,
    pub role: Role,
    /// Probability that a failure starts within the model's horizon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_prob: Option<f64>,
    /// The alert threshold of a failure model; an energy baseline's
    /// tolerance (kW over expected before a bucket counts as waste).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizon_h: Option<f64>,
    /// Remaining useful life, plant hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rul_h: Option<f64>,
    /// Energy baseline: the mean power (kW) expected over the bucket for
    /// the machine's state and load, and what it drew.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_kw: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_kw: Option<f64>,
    /// Features pushing the score away from a healthy machine's, largest
    /// first (failure models over their threshold only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<(String, f64)>,
    /// The inputs scored, in the model's feature order (champions; kept in
    /// `gold.predictions` for drift monitoring, not shown by the API).
    #[serde(skip)]
    pub inputs: Option<Vec<f64>>,
}

/// What the models said about a machine's newest feature row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    /// End of the feature bucket scored (UTC ms).
    pub bucket_end: i64,
    pub failure_prob: Option<f64>,
    pub rul_h: Option<f64>,
    /// 0..100: 100 minus the failure probability in percent.
    pub health: Option<f64>,
    /// The champion failure model is at or over its threshold.
    pub alert: bool,
    /// Energy baseline (champion): expected and drawn mean power over the
    /// bucket (kW), the difference, and whether it is over the tolerance.
    pub energy_expected_kw: Option<f64>,
    pub energy_actual_kw: Option<f64>,
    pub energy_deviation_kw: Option<f64>,
    pub energy_waste: bool,
    pub scores: Vec<ModelScore>,
}

impl Prediction {
    /// Combine model scores (the champions' drive the headline figures).
    pub fn of(bucket_end: i64, scores: Vec<ModelScore>) -> Prediction {
        let champ = |f: fn(&ModelScore) -> Option<f64>| {
            scores
                .iter()
                .filter(|s| s.role == Role::Champion)
                .find_map(f)
        };
        let failure_prob = champ(|s| s.failure_prob);
        let threshold = champ(|s| s.failure_prob.and(s.threshold));
        let expected = champ(|s| s.expected_kw);
        let actual = champ(|s| s.expected_kw.and(s.actual_kw));
        let tolerance = champ(|s| s.expected_kw.and(s.threshold));
        let deviation = match (expected, actual) {
            (Some(e), Some(a)) => Some(((a - e) * 100.0).round() / 100.0),
            _ => None,
        };
        Prediction {
            bucket_end,
            failure_prob,
            rul_h: champ(|s| s.rul_h),
            health: failure_prob.map(|p| ((1.0 - p) * 1000.0).round() / 10.0),
            alert: matches!((failure_prob, threshold), (Some(p), Some(t)) if p >= t),
            energy_expected_kw: expected,
            energy_actual_kw: actual,
            energy_deviation_kw: deviation,
            energy_waste: matches!((deviation, tolerance), (Some(d), Some(t)) if d > t),
            scores,
        }
    }

    /// The champion failure model's score.
    pub fn failure_model(&self) -> Option<&ModelScore> {
        self.scores
            .iter()
            .find(|s| s.role == Role::Champion && s.failure_prob.is_some())
    }
}

/// Scores feature rows of machines (implemented by the model registry's
/// serving side; shared by every twin, so it must be cheap and lock-light).
pub trait Scorer: Send + Sync + std::fmt::Debug + 'static {
    /// Scores of `row` (computed by `set`) by the models serving the set's
    /// twin type; empty when none serves it.
    fn score(&self, set: &FeatureSet, row: &FeatureRow) -> Vec<ModelScore>;
}
