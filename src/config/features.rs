//! Feature set files (`models/features/<twin type>.toml`): what the
//! predictive models see of a machine, computed the same way live (inside
//! the twin) and offline (`gold.features` from the lake).
//!
//! ```toml
//! twin_type = "cnc_mill"
//! version = 1                 # bump when a definition changes meaning
//! bucket_s = 300              # one feature row per machine every 5 minutes
//! time_scale = 1              # plant seconds per timestamp second (demo: 60)
//!
//! [[features]]
//! name = "vibration_mean_1h"
//! stat = "mean"               # see `Stat`
//! signal = "vibration"
//! window_s = 3600             # a multiple of bucket_s
//!
//! [energy]                    # the energy baseline `<twin type>_energy`
//! target = "power_mean_10m"   # a feature of the power signal (kW)
//! inputs = ["running_share_10m", "spindle_load_mean_10m"]
//! ```

use serde::Deserialize;

/// What a feature computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    /// Mean of a signal's readings in the window.
    Mean,
    /// Population standard deviation of the readings in the window.
    Std,
    Min,
    Max,
    /// Readings in the window.
    Count,
    /// Least-squares slope of the readings over time, per hour.
    Slope,
    /// The newest value at the end of the bucket.
    Last,
    /// Exponential moving average with `half_life_s` (irregular sampling:
    /// the weight of the past decays with elapsed time).
    Ema,
    /// Increments of a counter signal per hour over the window (resets tolerated).
    Rate,
    /// Share (0..1) of the window spent in `state`.
    TimeInState,
    /// Transitions into `DOWN` in the window.
    Downs,
    /// Hours since the machine last left `DOWN` (a repair), at most the window.
    TimeSinceRepair,
    /// kWh of the `power` signal (sample and hold) per good part over the window.
    EnergyPerPart,
}

/// One `[[features]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDef {
    pub name: String,
    pub stat: Stat,
    /// The signal (window statistics, `last`, `ema`, `rate`).
    #[serde(default)]
    pub signal: Option<String>,
    /// Window length (a multiple of `bucket_s`); default one bucket.
    #[serde(default)]
    pub window_s: Option<u64>,
    /// `ema`: half-life.
    #[serde(default)]
    pub half_life_s: Option<f64>,
    /// `time_in_state`: RUNNING, IDLE, DOWN, SETUP, ...
    #[serde(default)]
    pub state: Option<String>,
}

/// A feature set file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSetDef {
    pub twin_type: String,
    pub version: u32,
    #[serde(default = "default_bucket")]
    pub bucket_s: u64,
    /// Plant seconds per second of the readings' timestamps. Windows,
    /// buckets, half-lives and "per hour" figures are in plant time; a real
    /// plant keeps 1, the demo simulator (whose wear and shifts run 60x)
    /// sets 60.
    #[serde(default = "default_scale")]
    pub time_scale: f64,
    pub features: Vec<FeatureDef>,
    /// The energy baseline: expected power from state, load and product.
    #[serde(default)]
    pub energy: Option<EnergyDef>,
}

/// `[energy]`: what the energy baseline model (`<twin type>_energy`)
/// predicts and from which features.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyDef {
    /// The feature it predicts: mean power (kW) over one bucket.
    pub target: String,
    /// What explains the power: state shares, load, a product or recipe
    /// code. Never a feature of the power signal itself.
    pub inputs: Vec<String>,
}

fn default_scale() -> f64 {
    1.0
}

fn default_bucket() -> u64 {
    300
}
