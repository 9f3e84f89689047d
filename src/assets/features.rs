//! Feature sets resolved against their twin types: signal names become
//! indexes, windows become bucket counts, and every mistake is an error
//! naming the file and key. The computation is `twins::features`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{AssetError, MachineState, SignalIdx, SignalKind, TwinType};
use crate::config::features::{FeatureSetDef, Stat};

/// Windows are at most a week.
const MAX_WINDOW_S: u64 = 7 * 86_400;

/// One resolved feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: String,
    pub stat: Stat,
    /// The signal it reads (`None` for state and energy features).
    pub signal: Option<SignalIdx>,
    /// Window in buckets (at least 1).
    pub buckets: u32,
    /// `ema`: time constant in ms (half-life / ln 2).
    pub tau_ms: f64,
    /// `time_in_state`.
    pub state: Option<MachineState>,
}

/// A twin type's feature set.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    pub twin_type: String,
    pub version: u32,
    /// Length of a bucket in timestamp milliseconds (plant time / scale).
    pub bucket_ms: i64,
    /// Timestamp milliseconds per plant hour (rates, slopes, hours).
    pub ms_per_hour: f64,
    /// Plant seconds per timestamp second.
    pub time_scale: f64,
    pub features: Vec<Feature>,
    /// The file it was read from.
    pub file: String,
    /// Buckets the longest window spans.
    pub max_buckets: u32,
    /// The `power` signal (energy per part).
    pub power: Option<SignalIdx>,
    /// The energy baseline's target and inputs (`[energy]`).
    pub energy: Option<EnergySpec>,
}

/// What the energy baseline model predicts (feature indexes into the set).
#[derive(Debug, Clone, PartialEq)]
pub struct EnergySpec {
    /// Mean power over one bucket (kW).
    pub target: usize,
    pub inputs: Vec<usize>,
}

impl FeatureSet {
    /// Check a definition against its twin type.
    pub fn resolve(def: FeatureSetDef, twin: &TwinType, file: &str) -> Result<Self, AssetError> {
        let bad = |key: String, m: String| AssetError::invalid(file, &key, m);
        if def.bucket_s < 10 || def.bucket_s > 86_400 {
            return Err(bad(
                "bucket_s".into(),
                "between 10 and 86400 seconds".into(),
            ));
        }
        if !(def.time_scale.is_finite() && (1.0..=3600.0).contains(&def.time_scale)) {
            return Err(bad(
                "time_scale".into(),
                format!("{}: between 1 and 3600", def.time_scale),
            ));
        }
        let scale = def.time_scale;
        if def.features.is_empty() {
            return Err(bad("features".into(), "list at least one feature".into()));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(def.features.len());
        for (i, f) in def.features.iter().enumerate() {
            let key = |k: &str| format!("features[{i}].{k}");
            let valid = !f.name.is_empty()
                && f.name.len() <= 64
                && f.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(bad(
                    key("name"),
                    format!("`{}`: lower case letters, digits and `_`", f.name),
                ));
            }
            if let Some(j) = seen.insert(&f.name, i) {
                return Err(bad(
                    key("name"),
                    format!("`{}` is also features[{j}]", f.name),
                ));
            }
            let window_s = f.window_s.unwrap_or(def.bucket_s);
            if window_s == 0 || window_s % def.bucket_s != 0 || window_s > MAX_WINDOW_S {
                return Err(bad(
                    key("window_s"),
                    format!(
                        "{window_s}: a multiple of bucket_s ({}) up to {MAX_WINDOW_S}",
                        def.bucket_s
                    ),
                ));
            }
            let needs_signal = matches!(
                f.stat,
                Stat::Mean
                    | Stat::Std
                    | Stat::Min
                    | Stat::Max
                    | Stat::Count
                    | Stat::Slope
                    | Stat::Last
                    | Stat::Ema
                    | Stat::Rate
            );
            let signal = match (&f.signal, needs_signal) {
                (Some(s), true) => Some(twin.signal(s).ok_or_else(|| {
                    bad(
                        key("signal"),
                        format!("twin type `{}` has no signal `{s}`", twin.kind),
                    )
                })?),
                (None, true) => {
                    return Err(bad(key("signal"), format!("{:?} needs a signal", f.stat)))
                }
                (Some(_), false) => {
                    return Err(bad(key("signal"), format!("{:?} reads no signal", f.stat)))
                }
                (None, false) => None,
            };
            if let Some(s) = signal {
                let kind = twin.signals[s as usize].kind;
                if f.stat == Stat::Rate && kind != SignalKind::Counter {
                    return Err(bad(
                        key("stat"),
                        format!(
                            "`rate` needs a counter signal (`{}` is not)",
                            twin.signals[s as usize].name
                        ),
                    ));
                }
            }
            let state = match (f.stat, &f.state) {
                (Stat::TimeInState, Some(s)) => Some(
                    MachineState::ALL
                        .into_iter()
                        .find(|m| m.as_str().eq_ignore_ascii_case(s))
                        .ok_or_else(|| {
                            bad(key("state"), format!("`{s}` is not a machine state"))
                        })?,
                ),
                (Stat::TimeInState, None) => {
                    return Err(bad(key("state"), "time_in_state needs a state".into()))
                }
                (_, Some(_)) => return Err(bad(key("state"), "only for time_in_state".into())),
                (_, None) => None,
            };
            if matches!(
                f.stat,
                Stat::TimeInState | Stat::Downs | Stat::TimeSinceRepair
            ) && twin.state.is_none()
            {
                return Err(bad(
                    key("stat"),
                    format!("twin type `{}` has no state signal", twin.kind),
                ));
            }
            if f.stat == Stat::EnergyPerPart
                && (twin.signal("power").is_none() || twin.good_counter.is_none())
            {
                return Err(bad(
                    key("stat"),
                    "energy_per_part needs a `power` signal and a good-part counter".into(),
                ));
            }
            let tau_ms = match (f.stat, f.half_life_s) {
                (Stat::Ema, Some(h)) if h > 0.0 && h.is_finite() => {
                    h * 1000.0 / std::f64::consts::LN_2 / scale
                }
                (Stat::Ema, _) => {
                    return Err(bad(
                        key("half_life_s"),
                        "ema needs a positive half_life_s".into(),
                    ))
                }
                (_, Some(_)) => return Err(bad(key("half_life_s"), "only for ema".into())),
                _ => 0.0,
            };
            out.push(Feature {
                name: f.name.clone(),
                stat: f.stat,
                signal,
                buckets: (window_s / def.bucket_s) as u32,
                tau_ms,
                state,
            });
        }
        let energy = match &def.energy {
            None => None,
            Some(e) => Some(resolve_energy(e, &out, twin, file)?),
        };
        Ok(FeatureSet {
            twin_type: def.twin_type,
            version: def.version,
            bucket_ms: ((def.bucket_s as f64 * 1000.0 / scale).round() as i64).max(1),
            ms_per_hour: 3_600_000.0 / scale,
            time_scale: scale,
            max_buckets: out.iter().map(|f| f.buckets).max().unwrap_or(1),
            features: out,
            file: file.to_string(),
            power: twin.signal("power"),
            energy,
        })
    }

    /// Names of the energy baseline's inputs and target.
    pub fn energy_names(&self) -> Option<(Vec<&str>, &str)> {
        self.energy.as_ref().map(|e| {
            (
                e.inputs
                    .iter()
                    .map(|&i| self.features[i].name.as_str())
                    .collect(),
                self.features[e.target].name.as_str(),
            )
        })
    }

    /// The feature names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.features.iter().map(|f| f.name.as_str()).collect()
    }
}

/// Check `[energy]`: the target is one bucket's mean of the `power`
/// signal; no input reads power (that would predict power from itself).
fn resolve_energy(
    e: &crate::config::features::EnergyDef,
    feats: &[Feature],
    twin: &TwinType,
    file: &str,
) -> Result<EnergySpec, AssetError> {
    let find = |key: &str, n: &str| {
        feats.iter().position(|f| f.name == n).ok_or_else(|| {
            AssetError::invalid(file, key, format!("`{n}` is not a feature of this set"))
        })
    };
    let power = twin.signal("power");
    let reads_power =
        |f: &Feature| (f.signal.is_some() && f.signal == power) || f.stat == Stat::EnergyPerPart;
    let target = find("energy.target", &e.target)?;
    let t = &feats[target];
    if power.is_none() || t.signal != power || t.stat != Stat::Mean || t.buckets != 1 {
        return Err(AssetError::invalid(
            file,
            "energy.target",
            format!(
                "`{}` must be the mean of the `power` signal over one bucket (stat = \"mean\", \
                 signal = \"power\", window_s = bucket_s)",
                e.target
            ),
        ));
    }
    if e.inputs.is_empty() {
        return Err(AssetError::invalid(
            file,
            "energy.inputs",
            "list at least one input feature",
        ));
    }
    let mut inputs = Vec::with_capacity(e.inputs.len());
    for (i, n) in e.inputs.iter().enumerate() {
        let key = format!("energy.inputs[{i}]");
        let c = find(&key, n)?;
        if reads_power(&feats[c]) {
            return Err(AssetError::invalid(
                file,
                &key,
                format!(
                    "`{n}` reads the power signal: the baseline would predict power from itself"
                ),
            ));
        }
        if inputs.contains(&c) {
            return Err(AssetError::invalid(
                file,
                &key,
                format!("`{n}` is listed twice"),
            ));
        }
        inputs.push(c);
    }
    Ok(EnergySpec { target, inputs })
}

/// Attach feature set files to their twin types (a file naming a twin
/// type that does not exist, or a second file for one, is an error).
pub fn attach(
    types: &mut HashMap<String, TwinType>,
    files: Vec<(String, FeatureSetDef)>,
) -> Result<(), AssetError> {
    for (file, def) in files {
        let Some(t) = types.get_mut(&def.twin_type) else {
            let mut known: Vec<_> = types.keys().cloned().collect();
            known.sort();
            return Err(AssetError::invalid(
                &file,
                "twin_type",
                format!(
                    "no twin type `{}` (there are: {})",
                    def.twin_type,
                    known.join(", ")
                ),
            ));
        };
        if let Some(other) = &t.features {
            return Err(AssetError::invalid(
                &file,
                "twin_type",
                format!("`{}` already has the feature set of {}", t.kind, other.file),
            ));
        }
        let set = FeatureSet::resolve(def, t, &file)?;
        t.features = Some(Arc::new(set));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twins() -> HashMap<String, TwinType> {
        crate::config::embedded_twin_type_files()
            .unwrap()
            .into_iter()
            .map(|(f, d)| {
                let t = TwinType::from_def(d, &f).unwrap();
                (t.kind.clone(), t)
            })
            .collect()
    }

    fn attach_text(text: &str) -> Result<(), String> {
        let def: FeatureSetDef =
            crate::config::parse_toml(text, "f.toml").map_err(|e| e.to_string())?;
        attach(&mut twins(), vec![("f.toml".into(), def)]).map_err(|e| e.to_string())
    }

    #[test]
    fn the_built_in_sets_resolve_and_mistakes_name_their_key() {
        let mut t = twins();
        attach(&mut t, crate::config::embedded_feature_files().unwrap()).unwrap();
        let mill = t["cnc_mill"].features.clone().unwrap();
        assert_eq!(mill.bucket_ms, 10_000, "600 plant s at 60x");
        assert_eq!(mill.ms_per_hour, 60_000.0);
        assert_eq!(mill.max_buckets, 288, "48 plant hours of 10-minute buckets");
        let head =
            "twin_type = \"press\"\nversion = 1\nbucket_s = 60\n[[features]]\nname = \"x\"\n";
        for (body, want) in [
            ("stat = \"mean\"\nsignal = \"nope\"", "features[0].signal"),
            (
                "stat = \"mean\"\nsignal = \"force\"\nwindow_s = 90",
                "features[0].window_s",
            ),
            ("stat = \"mean\"", "needs a signal"),
            ("stat = \"rate\"\nsignal = \"force\"", "counter"),
            ("stat = \"ema\"\nsignal = \"force\"", "half_life_s"),
            (
                "stat = \"time_in_state\"\nstate = \"BUSY\"",
                "not a machine state",
            ),
            ("stat = \"median\"\nsignal = \"force\"", "unknown variant"),
        ] {
            let e = attach_text(&format!("{head}{body}\n")).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        let e = attach_text(
            "twin_type = \"lathe\"\nversion = 1\n[[features]]\nname = \"x\"\nstat = \"downs\"\n",
        )
        .unwrap_err();
        assert!(e.contains("no twin type `lathe`"), "{e}");
    }
}
