//! A trained model as it is stored (`model.json` of a registered version)
//! and scored: the features it reads by name, how missing values are
//! filled, the algorithm's parameters in ironlake's own format (no training
//! code needed to load it), the alert threshold chosen on validation, and
//! the healthy baseline used to explain a score (top contributing features).

use serde::{Deserialize, Serialize};

use super::forest::Forest;

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A probability (0..1) that the label is true.
    Classification,
    /// A number (remaining useful life in plant hours, kW, ...).
    Regression,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }
}

/// The fitted function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Algorithm {
    /// Random forest (mean of regression trees; for a classifier, the
    /// trees are fit to 0/1 so leaves hold class shares).
    Forest(Forest),
    /// Logistic regression on standardised features.
    Logistic {
        mean: Vec<f64>,
        std: Vec<f64>,
        coef: Vec<f64>,
        intercept: f64,
    },
    /// Linear regression on standardised features (robust: rows far over
    /// the fit, such as wasted energy, are trimmed while fitting).
    Linear {
        mean: Vec<f64>,
        std: Vec<f64>,
        coef: Vec<f64>,
        intercept: f64,
    },
    /// Always the same value (a baseline).
    Constant { value: f64 },
}

impl Algorithm {
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::Forest(_) => "random_forest",
            Algorithm::Logistic { .. } => "logistic_regression",
            Algorithm::Linear { .. } => "linear_regression",
            Algorithm::Constant { .. } => "constant",
        }
    }

    #[inline]
    fn score(&self, x: &[f64]) -> f64 {
        match self {
            Algorithm::Forest(f) => f.predict_row(x),
            Algorithm::Logistic {
                mean,
                std,
                coef,
                intercept,
            } => 1.0 / (1.0 + (-linear(mean, std, coef, *intercept, x)).exp()),
            Algorithm::Linear {
                mean,
                std,
                coef,
                intercept,
            } => linear(mean, std, coef, *intercept, x),
            Algorithm::Constant { value } => *value,
        }
    }
}

/// `intercept + sum coef * (x - mean) / std` (logistic and linear models).
#[inline]
fn linear(mean: &[f64], std: &[f64], coef: &[f64], intercept: f64, x: &[f64]) -> f64 {
    let mut z = intercept;
    for i in 0..coef.len() {
        z += coef[i] * (x[i] - mean[i]) / std[i];
    }
    z
}

/// A stored model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Model {
    /// Artifact format (bumped when this struct changes meaning).
    pub format: u32,
    pub name: String,
    pub task: Task,
    /// What it predicts (`failure_within_24h`, `rul_h`, a column name).
    pub target: String,
    /// Input features, in the order the algorithm reads them.
    pub features: Vec<String>,
    /// Value used for a missing feature (the training median).
    pub impute: Vec<f64>,
    /// Typical healthy value of each feature (median of negative training
    /// rows, or of all rows for a regressor): explanations compare to it.
    pub baseline: Vec<f64>,
    pub algorithm: Algorithm,
    /// Alert threshold (classification), chosen on the validation period.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Twin type the model serves (built-in features), if any.
    #[serde(default)]
    pub twin_type: Option<String>,
    /// Version of the twin type's feature definitions it was trained on.
    #[serde(default)]
    pub features_version: Option<u32>,
    /// Label horizon (failure within this many plant hours).
    #[serde(default)]
    pub horizon_h: Option<f64>,
    /// Training distributions of the inputs and the scores (drift monitoring).
    #[serde(default)]
    pub baseline_profile: Option<super::drift::Baseline>,
}

/// Current artifact format.
pub const FORMAT: u32 = 1;

impl Model {
    /// Fill missing or non-finite values with the training medians.
    pub fn prepare(&self, x: &[Option<f64>], out: &mut Vec<f64>) {
        out.clear();
        out.extend(
            x.iter()
                .zip(&self.impute)
                .map(|(v, m)| v.filter(|v| v.is_finite()).unwrap_or(*m)),
        );
    }

    /// Score one prepared row.
    #[inline]
    pub fn score(&self, x: &[f64]) -> f64 {
        self.algorithm.score(x)
    }

    /// Score a row-major matrix (prepared) into `out`.
    pub fn score_matrix(&self, x: &[f64], out: &mut [f64]) {
        let k = self.features.len();
        match &self.algorithm {
            Algorithm::Forest(f) => f.predict_into(x, k, out),
            a => {
                for (r, o) in out.iter_mut().enumerate() {
                    *o = a.score(&x[r * k..(r + 1) * k]);
                }
            }
        }
    }

    /// The features that move this row's score most away from a healthy
    /// machine's: each feature in turn set to its baseline, the change in
    /// score is its contribution (largest first, at most `top`).
    pub fn contributions(&self, x: &[f64], top: usize) -> Vec<(String, f64)> {
        let base = self.score(x);
        let mut tmp = x.to_vec();
        let mut out: Vec<(String, f64)> = Vec::with_capacity(self.features.len());
        for i in 0..x.len() {
            let keep = tmp[i];
            tmp[i] = self.baseline[i];
            let d = base - self.score(&tmp);
            tmp[i] = keep;
            out.push((self.features[i].clone(), d));
        }
        out.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        out.retain(|(_, d)| *d != 0.0);
        out.truncate(top);
        out
    }

    /// Check the artifact is internally consistent (after loading a file).
    pub fn validate(&self) -> Result<(), String> {
        let k = self.features.len();
        if self.format != FORMAT {
            return Err(format!(
                "artifact format {} (this ironlake reads {FORMAT})",
                self.format
            ));
        }
        if k == 0 || self.impute.len() != k || self.baseline.len() != k {
            return Err("features, impute and baseline differ in length".into());
        }
        match &self.algorithm {
            Algorithm::Forest(f) => {
                for t in &f.trees {
                    let n = t.left.len();
                    let ok = t.feature.len() == n
                        && t.threshold.len() == n
                        && t.right.len() == n
                        && t.value.len() == n
                        && t.left
                            .iter()
                            .zip(&t.right)
                            .zip(&t.feature)
                            .all(|((l, r), f)| {
                                *l == super::forest::LEAF
                                    || ((*l as usize) < n && (*r as usize) < n && (*f as usize) < k)
                            });
                    if !ok {
                        return Err("a tree's arrays are inconsistent".into());
                    }
                }
            }
            Algorithm::Logistic {
                mean, std, coef, ..
            }
            | Algorithm::Linear {
                mean, std, coef, ..
            } => {
                if mean.len() != k || std.len() != k || coef.len() != k {
                    return Err("logistic parameters differ in length from the features".into());
                }
            }
            Algorithm::Constant { .. } => {}
        }
        Ok(())
    }
}
