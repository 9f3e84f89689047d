//! The twin type file format (`twins/<kind>.toml`): what a kind of machine
//! measures, its default protocol bindings (opaque here: each connector
//! reads its own), state codes, counters, windows and alarm rules, as
//! written. `assets` validates it into a `TwinType`.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

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

/// One signal of a twin type. Keys other than the ones below are protocol
/// bindings, checked against the registered connectors at load.
#[derive(Debug, Clone, Deserialize)]
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
    /// Default bindings per protocol (`modbus = {...}`, `mqtt = {...}`),
    /// checked by the protocol's connector when the config is loaded.
    #[serde(flatten)]
    pub bindings: BTreeMap<String, toml::Value>,
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
    /// No state known: no state signal seen yet, or a code the twin type
    /// does not list.
    Unknown,
    /// The machine's source is disconnected or has sent nothing for
    /// `twin.disconnected_after_s`: its state is not known.
    Disconnected,
}

impl MachineState {
    /// All states, in display order.
    pub const ALL: [MachineState; 6] = [
        MachineState::Running,
        MachineState::Idle,
        MachineState::Down,
        MachineState::Setup,
        MachineState::Unknown,
        MachineState::Disconnected,
    ];

    /// Upper-case name as used in the API and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Running => "RUNNING",
            MachineState::Idle => "IDLE",
            MachineState::Down => "DOWN",
            MachineState::Setup => "SETUP",
            MachineState::Unknown => "UNKNOWN",
            MachineState::Disconnected => "DISCONNECTED",
        }
    }

    /// State by its upper-case name (`silver.asset_events.code`).
    pub fn parse(code: &str) -> Option<MachineState> {
        MachineState::ALL.into_iter().find(|s| s.as_str() == code)
    }

    /// Whether the machine's state is known (not UNKNOWN or DISCONNECTED).
    pub fn is_known(self) -> bool {
        !matches!(self, MachineState::Unknown | MachineState::Disconnected)
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

impl Severity {
    /// Lower-case name as used in the API (and in twin type files).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
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

/// What happens to a payload field no signal of the twin type is bound to
/// (a sensor whose firmware update added a measurement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExtraSignalsMode {
    /// Quarantined as `unknown_signal` (the twin type is the contract).
    #[default]
    Quarantine,
    /// A new signal of the twin, named after the field, up to
    /// `max_extra_signals` per twin type; its readings land in silver like
    /// the declared ones.
    Add,
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
    /// Fields no signal is bound to: `quarantine` (default) or `add`.
    #[serde(default)]
    pub extra_signals: ExtraSignalsMode,
    /// With `extra_signals = "add"`: at most this many added signals per
    /// twin type (default 32); further new fields are quarantined.
    pub max_extra_signals: Option<usize>,
}
