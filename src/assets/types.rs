//! Twin types: what a kind of machine measures, how its signals are bound to
//! protocols by default, and which alarm rules it carries.
//!
//! A twin type is data a plant engineer edits (`twins/*.toml`), never code.
//! This module parses and validates it; it never talks to a PLC.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::config::twin_type::*;

use super::{AssetError, SignalIdx};

/// The condition of an alarm rule.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmCondition {
    /// Raise when the value goes above `above` (or below `below`); clear when it
    /// comes back past `clear` (hysteresis).
    Threshold {
        above: Option<f64>,
        below: Option<f64>,
        clear: f64,
    },
    /// Raise when the value is more than `z` standard deviations from the mean
    /// of the count window; clear below `clear_z`.
    Zscore {
        z: f64,
        clear_z: f64,
        min_samples: usize,
    },
    /// Raise when the value has not changed over `samples` readings (stuck sensor).
    Flatline { samples: usize },
}

/// A resolved alarm rule: its signal as an index.
#[derive(Debug, Clone)]
pub struct AlarmRule {
    pub name: String,
    pub signal: SignalIdx,
    pub severity: Severity,
    pub message: String,
    pub condition: AlarmCondition,
}

/// A validated twin type, with names resolved to indices.
#[derive(Debug, Clone)]
pub struct TwinType {
    pub kind: String,
    pub name: String,
    pub description: String,
    pub ideal_cycle_s: Option<f64>,
    pub signals: Vec<SignalDef>,
    pub signal_index: HashMap<String, SignalIdx>,
    /// State signal and its code table (code as integer).
    pub state: Option<(SignalIdx, HashMap<i64, MachineState>)>,
    pub good_counter: Option<SignalIdx>,
    pub reject_counter: Option<SignalIdx>,
    pub alarms: Vec<AlarmRule>,
    pub window: WindowDef,
    /// The file it was read from (for error messages about its bindings).
    pub file: String,
    /// Signals added at run time from fields no signal is bound to
    /// (`extra_signals = "add"`), shared by every machine of the type.
    pub extra: Arc<ExtraSignals>,
    /// What its predictive models see (`models/features/<kind>.toml`).
    pub features: Option<Arc<super::features::FeatureSet>>,
}

/// Signals a twin type does not declare, met in its machines' payloads
/// (`extra_signals = "add"`): numbered after the declared ones in the order
/// first seen, up to a limit. Their names are the fields' names with any
/// character other than letters, digits and `_` made `_`.
pub struct ExtraSignals {
    pub add: bool,
    pub max: usize,
    /// Declared signals (extra indexes start here).
    base: usize,
    inner: parking_lot::RwLock<ExtraInner>,
}

#[derive(Default)]
struct ExtraInner {
    defs: Vec<Arc<SignalDef>>,
    index: HashMap<String, SignalIdx>,
}

impl std::fmt::Debug for ExtraSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraSignals")
            .field("add", &self.add)
            .field("max", &self.max)
            .field("added", &self.inner.read().defs.len())
            .finish()
    }
}

/// The signal name an extra field gets.
pub fn extra_signal_name(field: &str) -> String {
    field
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl ExtraSignals {
    /// A registry after `base` declared signals.
    pub fn new(add: bool, max: usize, base: usize) -> ExtraSignals {
        ExtraSignals {
            add,
            max,
            base,
            inner: Default::default(),
        }
    }

    /// The extra signal for `field` (its name made by
    /// [`extra_signal_name`]), added on first sight with `kind`; the reason
    /// when it cannot be (adding is off, the limit is reached, or the name
    /// is a declared signal's).
    pub fn get_or_add(
        &self,
        field: &str,
        kind: SignalKind,
        declared: &HashMap<String, SignalIdx>,
    ) -> Result<(SignalIdx, Arc<SignalDef>), String> {
        if !self.add {
            return Err("the twin type takes no extra signals".into());
        }
        let name = extra_signal_name(field);
        if name.is_empty() {
            return Err("an empty field name".into());
        }
        if let Some(&i) = self.inner.read().index.get(&name) {
            let d = self.inner.read().defs[i as usize - self.base].clone();
            return Ok((i, d));
        }
        if declared.contains_key(&name) {
            return Err(format!(
                "field `{field}` would become `{name}`, a declared signal bound to another field"
            ));
        }
        let mut g = self.inner.write();
        if let Some(&i) = g.index.get(&name) {
            return Ok((i, g.defs[i as usize - self.base].clone()));
        }
        if g.defs.len() >= self.max || self.base + g.defs.len() >= SignalIdx::MAX as usize {
            return Err(format!(
                "the twin type already has {} extra signals (max_extra_signals)",
                g.defs.len()
            ));
        }
        let i = (self.base + g.defs.len()) as SignalIdx;
        let def = Arc::new(SignalDef {
            name: name.clone(),
            unit: String::new(),
            kind,
            min: None,
            max: None,
            description: format!("added at run time from payload field `{field}`"),
            bindings: Default::default(),
        });
        g.defs.push(def.clone());
        g.index.insert(name, i);
        Ok((i, def))
    }

    /// The extra signal numbered `idx`.
    pub fn def(&self, idx: SignalIdx) -> Option<Arc<SignalDef>> {
        let k = (idx as usize).checked_sub(self.base)?;
        self.inner.read().defs.get(k).cloned()
    }

    /// Every extra signal so far, in index order.
    pub fn defs(&self) -> Vec<Arc<SignalDef>> {
        self.inner.read().defs.clone()
    }

    /// The index of an extra signal by name.
    pub fn index(&self, name: &str) -> Option<SignalIdx> {
        self.inner.read().index.get(name).copied()
    }
}

impl TwinType {
    /// Validate a parsed definition. `file` is used in error messages.
    pub fn from_def(def: TwinTypeDef, file: &str) -> Result<Self, AssetError> {
        let err = |key: String, message: String| AssetError::Invalid {
            file: file.to_string(),
            key,
            message,
        };
        if def.kind.trim().is_empty() {
            return Err(err("kind".into(), "must not be empty".into()));
        }
        if def.signals.is_empty() {
            return Err(err(
                "signals".into(),
                "a twin type needs at least one signal".into(),
            ));
        }
        let mut signal_index = HashMap::new();
        for (i, s) in def.signals.iter().enumerate() {
            let key = format!("signals[{i}].name");
            if s.name.trim().is_empty() {
                return Err(err(key, "must not be empty".into()));
            }
            if signal_index
                .insert(s.name.clone(), i as SignalIdx)
                .is_some()
            {
                return Err(err(key, format!("duplicate signal `{}`", s.name)));
            }
            if let (Some(lo), Some(hi)) = (s.min, s.max) {
                if lo > hi {
                    return Err(err(
                        format!("signals[{i}].min"),
                        format!("min {lo} is above max {hi}"),
                    ));
                }
            }
        }
        let lookup = |name: &str, key: &str| -> Result<SignalIdx, AssetError> {
            signal_index
                .get(name)
                .copied()
                .ok_or_else(|| err(key.to_string(), format!("unknown signal `{name}`")))
        };
        let state = match &def.state {
            None => None,
            Some(sd) => {
                let idx = lookup(&sd.signal, "state.signal")?;
                let mut codes = HashMap::new();
                for (code, st) in &sd.codes {
                    let c: i64 = code.trim().parse().map_err(|_| {
                        err(
                            format!("state.codes.{code}"),
                            "state codes must be integers".into(),
                        )
                    })?;
                    codes.insert(c, *st);
                }
                Some((idx, codes))
            }
        };
        let good_counter = def
            .counters
            .good
            .as_deref()
            .map(|n| lookup(n, "counters.good"))
            .transpose()?;
        let reject_counter = def
            .counters
            .reject
            .as_deref()
            .map(|n| lookup(n, "counters.reject"))
            .transpose()?;
        let mut alarms = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, a) in def.alarms.iter().enumerate() {
            if !names.insert(a.name.clone()) {
                return Err(err(
                    format!("alarms[{i}].name"),
                    format!("duplicate alarm `{}`", a.name),
                ));
            }
            let signal = lookup(&a.signal, &format!("alarms[{i}].signal"))?;
            let key = |k: &str| format!("alarms[{i}].{k}");
            let condition = match a.kind {
                AlarmKind::Threshold => {
                    let clear = a.clear.ok_or_else(|| {
                        err(
                            key("clear"),
                            "a threshold alarm needs a `clear` level".into(),
                        )
                    })?;
                    match (a.above, a.below) {
                        (Some(hi), None) if clear <= hi => {}
                        (None, Some(lo)) if clear >= lo => {}
                        (Some(_), None) | (None, Some(_)) => return Err(err(
                            key("clear"),
                            "the clear level must lie on the normal side of the limit (hysteresis)"
                                .into(),
                        )),
                        _ => {
                            return Err(err(
                                format!("alarms[{i}]"),
                                "a threshold alarm needs exactly one of `above` or `below`".into(),
                            ))
                        }
                    }
                    AlarmCondition::Threshold {
                        above: a.above,
                        below: a.below,
                        clear,
                    }
                }
                AlarmKind::Zscore => {
                    let z =
                        a.z.ok_or_else(|| err(key("z"), "a zscore alarm needs `z`".into()))?;
                    let clear_z = a.clear_z.unwrap_or(2.0);
                    let min_samples = a.min_samples.unwrap_or(20);
                    if !(z > 0.0 && clear_z >= 0.0 && clear_z < z) || min_samples < 2 {
                        return Err(err(
                            key("z"),
                            "need z > clear_z >= 0 and min_samples >= 2".into(),
                        ));
                    }
                    AlarmCondition::Zscore {
                        z,
                        clear_z,
                        min_samples,
                    }
                }
                AlarmKind::Flatline => {
                    let samples = a.samples.ok_or_else(|| {
                        err(key("samples"), "a flatline alarm needs `samples`".into())
                    })?;
                    if samples < 2 {
                        return Err(err(key("samples"), "must be at least 2".into()));
                    }
                    AlarmCondition::Flatline { samples }
                }
            };
            alarms.push(AlarmRule {
                name: a.name.clone(),
                signal,
                severity: a.severity,
                message: a.message.clone(),
                condition,
            });
        }
        if let Some(c) = def.window.count {
            if c < 2 {
                return Err(err("window.count".into(), "must be at least 2".into()));
            }
        }
        let declared = def.signals.len();
        let extra = Arc::new(ExtraSignals::new(
            def.extra_signals == ExtraSignalsMode::Add,
            def.max_extra_signals.unwrap_or(32),
            declared,
        ));
        Ok(TwinType {
            kind: def.kind,
            name: def.name,
            description: def.description,
            ideal_cycle_s: def.ideal_cycle_s,
            signals: def.signals,
            signal_index,
            state,
            good_counter,
            reject_counter,
            alarms,
            window: def.window,
            file: file.to_string(),
            extra,
            features: None,
        })
    }

    /// Parse and validate a twin type from TOML text.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, AssetError> {
        let def: TwinTypeDef = toml::from_str(text).map_err(|e| AssetError::Parse {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        Self::from_def(def, file)
    }

    /// Index of a signal by name.
    pub fn signal(&self, name: &str) -> Option<SignalIdx> {
        self.signal_index.get(name).copied()
    }

    /// A signal by index: a declared one, or one added at run time.
    pub fn signal_def(&self, idx: SignalIdx) -> Option<Cow<'_, SignalDef>> {
        match self.signals.get(idx as usize) {
            Some(d) => Some(Cow::Borrowed(d)),
            None => self.extra.def(idx).map(|d| Cow::Owned((*d).clone())),
        }
    }

    /// The index of a field's signal: the declared one of that name, or
    /// (with `extra_signals = "add"`) an extra one, added on first sight.
    pub fn signal_or_extra(&self, field: &str, kind: SignalKind) -> Option<SignalIdx> {
        self.signal(field).or_else(|| {
            self.extra
                .get_or_add(field, kind, &self.signal_index)
                .ok()
                .map(|(i, _)| i)
        })
    }
}
