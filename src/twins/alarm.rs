//! Alarm rules from the twin type, evaluated on every reading: threshold with
//! hysteresis, z-score against the count window, and flatline (stuck sensor).
//! A rule is either active or not; transitions are what the twin reports.

use serde::{Deserialize, Serialize};

use super::window::SignalWindow;
use crate::assets::{AlarmCondition, AlarmRule};

/// Live state of one rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AlarmState {
    pub active: bool,
    /// When it was raised (UTC ms).
    pub since_ms: Option<i64>,
    /// Value that raised it.
    pub value: Option<f64>,
    /// Who acknowledged it, while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<AlarmAck>,
}

/// An operator's acknowledgement of an active alarm.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlarmAck {
    /// The name the operator gave.
    pub by: String,
    /// When (UTC ms).
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What a reading did to a rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    Raised,
    Cleared,
}

/// Evaluate `rule` for a new value `v` at `ts`. `window` is the signal's window
/// *before* `v` was added (so an outlier does not dilute its own z-score), and
/// `same_run` is the run of identical values *including* `v`.
pub fn evaluate(
    rule: &AlarmRule,
    st: &mut AlarmState,
    window: &SignalWindow,
    same_run: usize,
    ts: i64,
    v: f64,
) -> Option<Transition> {
    let (raise, clear) = match &rule.condition {
        AlarmCondition::Threshold {
            above,
            below,
            clear,
        } => match (above, below) {
            (Some(hi), _) => (v > *hi, v <= *clear),
            (None, Some(lo)) => (v < *lo, v >= *clear),
            (None, None) => (false, true),
        },
        AlarmCondition::Zscore {
            z,
            clear_z,
            min_samples,
        } => {
            let (n, mean, std) = window.mean_std();
            match (mean, std) {
                (Some(m), Some(s)) if n >= *min_samples && s > 1e-9 => {
                    let zv = ((v - m) / s).abs();
                    (zv > *z, zv <= *clear_z)
                }
                _ => (false, !st.active),
            }
        }
        AlarmCondition::Flatline { samples } => (same_run >= *samples, same_run < 2),
    };
    if !st.active && raise {
        st.active = true;
        st.since_ms = Some(ts);
        st.value = Some(v);
        Some(Transition::Raised)
    } else if st.active && clear && !raise {
        *st = AlarmState::default();
        Some(Transition::Cleared)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Severity;

    fn rule(c: AlarmCondition) -> AlarmRule {
        AlarmRule {
            name: "r".into(),
            signal: 0,
            severity: Severity::Warning,
            message: String::new(),
            condition: c,
        }
    }

    #[test]
    fn threshold_has_hysteresis() {
        let r = rule(AlarmCondition::Threshold {
            above: Some(10.0),
            below: None,
            clear: 8.0,
        });
        let w = SignalWindow::new(10, 10.0, 0.5);
        let mut st = AlarmState::default();
        let seq = [
            (9.0, None),
            (10.5, Some(Transition::Raised)),
            (9.0, None),
            (11.0, None),
            (7.9, Some(Transition::Cleared)),
            (9.5, None),
        ];
        for (i, (v, want)) in seq.into_iter().enumerate() {
            assert_eq!(
                evaluate(&r, &mut st, &w, 1, i as i64, v),
                want,
                "step {i} value {v}"
            );
        }
    }

    #[test]
    fn low_threshold_clears_above_its_clear_level() {
        let r = rule(AlarmCondition::Threshold {
            above: None,
            below: Some(5.0),
            clear: 6.0,
        });
        let w = SignalWindow::new(10, 10.0, 0.5);
        let mut st = AlarmState::default();
        assert_eq!(
            evaluate(&r, &mut st, &w, 1, 0, 4.0),
            Some(Transition::Raised)
        );
        assert_eq!(evaluate(&r, &mut st, &w, 1, 1, 5.5), None);
        assert_eq!(
            evaluate(&r, &mut st, &w, 1, 2, 6.5),
            Some(Transition::Cleared)
        );
    }

    #[test]
    fn zscore_raises_on_outlier_only_after_enough_samples() {
        let r = rule(AlarmCondition::Zscore {
            z: 4.0,
            clear_z: 2.0,
            min_samples: 20,
        });
        let mut w = SignalWindow::new(50, 100.0, 0.5);
        let mut st = AlarmState::default();
        for i in 0..10 {
            w.push(i, 10.0 + (i % 3) as f64 * 0.1);
        }
        assert_eq!(
            evaluate(&r, &mut st, &w, 1, 10, 50.0),
            None,
            "too few samples"
        );
        for i in 10..40 {
            w.push(i, 10.0 + (i % 3) as f64 * 0.1);
        }
        assert_eq!(
            evaluate(&r, &mut st, &w, 1, 40, 50.0),
            Some(Transition::Raised)
        );
        assert_eq!(
            evaluate(&r, &mut st, &w, 1, 41, 10.1),
            Some(Transition::Cleared)
        );
    }

    #[test]
    fn flatline_detects_stuck_values() {
        let r = rule(AlarmCondition::Flatline { samples: 5 });
        let w = SignalWindow::new(10, 10.0, 0.5);
        let mut st = AlarmState::default();
        assert_eq!(evaluate(&r, &mut st, &w, 4, 0, 1.0), None);
        assert_eq!(
            evaluate(&r, &mut st, &w, 5, 1, 1.0),
            Some(Transition::Raised)
        );
        assert_eq!(
            evaluate(&r, &mut st, &w, 1, 2, 2.0),
            Some(Transition::Cleared)
        );
    }
}
