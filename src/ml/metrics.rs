//! Model quality measures: classification (precision, recall, F1, ROC AUC,
//! PR AUC as average precision), regression (RMSE, MAE and the asymmetric
//! PHM'08 score for remaining useful life), and the alert view of a failure
//! model (lead times, failures caught, false alerts), which is what a plant
//! feels.

use serde::{Deserialize, Serialize};

/// Threshold metrics of a binary classifier.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub r#fn: u64,
}

impl Confusion {
    pub fn at(scores: &[f64], labels: &[bool], threshold: f64) -> Confusion {
        let mut c = Confusion::default();
        for (s, &l) in scores.iter().zip(labels) {
            match (*s >= threshold, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.r#fn += 1,
            }
        }
        c
    }
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.r#fn)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Indices sorted by descending score (ties stay together).
fn by_score(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// Area under the ROC curve (ties counted half); NaN without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    // Mann-Whitney U with average ranks.
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum += avg;
            }
        }
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Average precision (the step-wise area under the precision-recall curve).
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    let idx = by_score(scores);
    let (mut tp, mut fp, mut ap) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        let mut new_tp = 0.0;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                new_tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        tp += new_tp;
        ap += (new_tp / pos) * (tp / (tp + fp));
        i = j;
    }
    ap
}

/// Regression errors.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct RegressionMetrics {
    pub n: u64,
    pub rmse: f64,
    pub mae: f64,
    /// PHM'08 score: sum of exp(-d/13)-1 for early (d<0) and exp(d/10)-1 for
    /// late predictions (d = predicted - true): late costs more.
    pub phm: f64,
    /// PHM score per prediction (comparable across test sizes).
    pub phm_mean: f64,
}

pub fn regression(pred: &[f64], truth: &[f64]) -> RegressionMetrics {
    let n = pred.len().min(truth.len());
    if n == 0 {
        return RegressionMetrics::default();
    }
    let (mut se, mut ae, mut phm) = (0.0, 0.0, 0.0);
    for (p, t) in pred.iter().zip(truth) {
        let d = p - t;
        se += d * d;
        ae += d.abs();
        phm += if d < 0.0 {
            (-d / 13.0).exp() - 1.0
        } else {
            (d / 10.0).exp() - 1.0
        };
    }
    RegressionMetrics {
        n: n as u64,
        rmse: (se / n as f64).sqrt(),
        mae: ae / n as f64,
        phm,
        phm_mean: phm / n as f64,
    }
}

/// Quantiles (nearest rank) of a sample: p0, p10, p50, p90, p100.
pub fn quantiles(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return Vec::new();
    }
    s.sort_by(f64::total_cmp);
    [0.0, 0.1, 0.5, 0.9, 1.0]
        .iter()
        .map(|q| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_average_precision_match_hand_computed_cases() {
        let s = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4];
        let l = [true, false, true, false, true, false];
        // Pairs (pos, neg) ordered right: 0.9>all 3, 0.7>0.6,0.4, 0.55>0.4 → 6 of 9.
        assert!((roc_auc(&s, &l) - 6.0 / 9.0).abs() < 1e-12);
        // AP = (1/3)(1/1 + 2/3 + 3/5).
        let ap = (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0;
        assert!((pr_auc(&s, &l) - ap).abs() < 1e-12);
        // Perfect and reversed rankings.
        assert_eq!(roc_auc(&[0.9, 0.1], &[true, false]), 1.0);
        assert_eq!(roc_auc(&[0.1, 0.9], &[true, false]), 0.0);
        // Ties count half.
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), 0.5);
        assert!(roc_auc(&[0.5], &[true]).is_nan());
        let c = Confusion::at(&s, &l, 0.6);
        assert_eq!((c.tp, c.fp, c.tn, c.r#fn), (2, 2, 1, 1));
        assert_eq!(c.precision(), 0.5);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn phm_punishes_late_more_than_early() {
        let early = regression(&[90.0], &[100.0]);
        let late = regression(&[110.0], &[100.0]);
        assert_eq!(early.rmse, late.rmse);
        assert!(late.phm > early.phm, "{} vs {}", late.phm, early.phm);
        assert!((late.phm - (1.0f64.exp() - 1.0)).abs() < 1e-12);
        assert_eq!(quantiles(&[3.0, 1.0, 2.0]), vec![1.0, 1.0, 2.0, 3.0, 3.0]);
    }
}
