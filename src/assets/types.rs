//! Twin types: what a kind of machine measures, how its signals are bound to
//! protocols by default, and which alarm rules it carries.
//!
//! A twin type is data a plant engineer edits (`twins/*.toml`), never code.
//! This module parses and validates it; it never talks to a PLC.

use std::collections::HashMap;

use serde::Deserialize;

use super::{AssetError, SignalIdx};

/// Value type of a signal as the twin understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// A real number (temperatures, speeds, power).
    Float,
    /// An integer (codes, counts that are not monotonic).
    Int,
    /// A boolean (0/1 on the wire).
    Bool,
    /// A monotonic counter (parts, run hours); resets are detected.
    Counter,
}

/// Modbus register table a signal lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterTable {
    /// Function code 3.
    Holding,
    /// Function code 4.
    Input,
    /// Function code 1.
    Coil,
}

/// Wire encoding of a Modbus value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterType {
    U16,
    I16,
    U32,
    I32,
    F32,
    /// A single coil bit.
    Bool,
}

impl RegisterType {
    /// Number of 16-bit registers the value occupies.
    pub fn width(self) -> u16 {
        match self {
            RegisterType::U16 | RegisterType::I16 | RegisterType::Bool => 1,
            RegisterType::U32 | RegisterType::I32 | RegisterType::F32 => 2,
        }
    }
}

/// Order of the two 16-bit words of a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// High word first (Modbus convention, "ABCD").
    #[default]
    Big,
    /// Low word first ("CDAB"), common on some PLC brands.
    Little,
}

/// Where a signal is found in a Modbus device; `value = raw * scale + offset`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusBinding {
    pub table: RegisterTable,
    pub address: u16,
    #[serde(rename = "type")]
    pub register_type: RegisterType,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default)]
    pub word_order: WordOrder,
}

fn one() -> f64 {
    1.0
}

/// Where a signal is found in an MQTT JSON payload (dotted path, e.g. `spindle.speed`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttBinding {
    pub field: String,
}

/// One signal of a twin type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalDef {
    pub name: String,
    #[serde(default)]
    pub unit: String,
    #[serde(rename = "type")]
    pub kind: SignalKind,
    /// Lowest valid value; below is quarantined as out of range.
    pub min: Option<f64>,
    /// Highest valid value; above is quarantined as out of range.
    pub max: Option<f64>,
    #[serde(default)]
    pub description: String,
    pub modbus: Option<ModbusBinding>,
    pub mqtt: Option<MqttBinding>,
}

impl SignalDef {
    /// Whether `v` lies inside the valid range.
    pub fn in_range(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

/// Machine states every twin knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MachineState {
    Running,
    Idle,
    Down,
    Setup,
    /// No state signal seen yet.
    Unknown,
}

impl MachineState {
    /// All states, in display order.
    pub const ALL: [MachineState; 5] = [
        MachineState::Running,
        MachineState::Idle,
        MachineState::Down,
        MachineState::Setup,
        MachineState::Unknown,
    ];

    /// Upper-case name as used in the API and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Running => "RUNNING",
            MachineState::Idle => "IDLE",
            MachineState::Down => "DOWN",
            MachineState::Setup => "SETUP",
            MachineState::Unknown => "UNKNOWN",
        }
    }
}

/// How the machine state is derived from a signal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDef {
    /// The signal carrying the state code.
    pub signal: String,
    /// Code (as written on the wire) to state.
    pub codes: HashMap<String, MachineState>,
}

/// Which counter signals count parts.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CountersDef {
    pub good: Option<String>,
    pub reject: Option<String>,
}

/// Severity of an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

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

/// Kinds of alarm rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    Threshold,
    Zscore,
    Flatline,
}

/// One alarm rule of a twin type, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRuleDef {
    pub name: String,
    pub signal: String,
    pub kind: AlarmKind,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub message: String,
    /// threshold: raise above this value.
    pub above: Option<f64>,
    /// threshold: raise below this value.
    pub below: Option<f64>,
    /// threshold: clear level (hysteresis).
    pub clear: Option<f64>,
    /// zscore: raise above this |z|.
    pub z: Option<f64>,
    /// zscore: clear at or below this |z| (default 2).
    pub clear_z: Option<f64>,
    /// zscore: readings needed in the window before the rule is armed (default 20).
    pub min_samples: Option<usize>,
    /// flatline: identical readings that make a stuck sensor.
    pub samples: Option<usize>,
}

/// Rolling-window sizes; defaults come from the platform config.
#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WindowDef {
    pub count: Option<usize>,
    pub seconds: Option<f64>,
    pub ema_alpha: Option<f64>,
}

/// A twin type as written in `twins/<kind>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinTypeDef {
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Ideal cycle time per part, seconds (used by OEE performance).
    pub ideal_cycle_s: Option<f64>,
    pub state: Option<StateDef>,
    #[serde(default)]
    pub counters: CountersDef,
    #[serde(default)]
    pub window: WindowDef,
    pub signals: Vec<SignalDef>,
    #[serde(default)]
    pub alarms: Vec<AlarmRuleDef>,
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
            if let Some(m) = &s.modbus {
                let coil = m.table == RegisterTable::Coil;
                let bool_t = m.register_type == RegisterType::Bool;
                if coil != bool_t {
                    return Err(err(
                        format!("signals[{i}].modbus.type"),
                        "coils carry type `bool`, registers carry u16/i16/u32/i32/f32".into(),
                    ));
                }
                if !m.scale.is_finite() || m.scale == 0.0 {
                    return Err(err(
                        format!("signals[{i}].modbus.scale"),
                        "must be a finite, non-zero number".into(),
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
}
