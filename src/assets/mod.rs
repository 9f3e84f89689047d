//! The asset model: the ISA-95 hierarchy (plant/site -> area -> line -> machine),
//! twin types, and each machine's source binding, resolved and validated.
//!
//! Built once at start-up from the plant config and the twin types; read-only
//! afterwards and shared by connectors, twins, the lake and the API. It never
//! opens a connection.

pub mod features;
mod types;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

pub use crate::config::ConfigError as AssetError;
use crate::config::{MachineConfig, PlantFile};
pub use types::*;

/// Dense index of an asset in the [`AssetModel`] (hot paths use it instead of strings).
pub type AssetIdx = u32;
/// Index of a signal inside its twin type.
pub type SignalIdx = u16;

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub Arc<str>);
        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str { &self.0 }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self { Self(Arc::from(s)) }
        }
    };
}
string_id!(
    /// Identifier of a machine (asset), unique across the installation.
    AssetId
);
string_id!(
    /// Identifier of a plant (ISA-95 site).
    PlantId
);
string_id!(
    /// Identifier of a production line.
    LineId
);

/// A plant (site).
#[derive(Debug, Clone, Serialize)]
pub struct Plant {
    pub id: PlantId,
    pub name: String,
    pub timezone: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub areas: Vec<Area>,
    /// The floor plan, when the plant file draws one.
    pub floor: Option<crate::config::FloorConfig>,
    /// Shifts: (minutes after local midnight, name), sorted.
    pub shifts: Vec<(u32, String)>,
}

impl Plant {
    /// The plant's shift calendar in its time zone.
    pub fn shift_calendar(&self) -> crate::timeseries::LocalShifts {
        let tz = crate::config::parse_timezone(&self.timezone).unwrap_or(chrono_tz::UTC);
        // Validated when the model was built: non-empty and distinct.
        crate::timeseries::LocalShifts::new(tz, self.shifts.clone()).unwrap_or_else(|_| {
            crate::timeseries::LocalShifts::new(tz, default_shifts()).expect("default shifts")
        })
    }
}

/// Three 8-hour shifts: early 06:00, late 14:00, night 22:00.
pub fn default_shifts() -> Vec<(u32, String)> {
    vec![
        (360, "early".into()),
        (840, "late".into()),
        (1320, "night".into()),
    ]
}

/// An area of a plant.
#[derive(Debug, Clone, Serialize)]
pub struct Area {
    pub id: String,
    pub name: String,
}

/// A production line.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub id: LineId,
    pub name: String,
    pub plant: PlantId,
    pub area: String,
    /// Machines of the line, by index.
    #[serde(skip)]
    pub assets: Vec<AssetIdx>,
}

/// Where a machine's signals come from, as configured: the protocol and
/// its keys. The protocol's connector reads and checks the keys when the
/// configuration is loaded; the asset model never interprets them.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Protocol name (`modbus`, `mqtt`, ...).
    pub protocol: String,
    /// The machine's `source` table without `protocol`.
    pub table: toml::Table,
    /// Plant file and key of the table (for error messages).
    pub file: String,
    pub key: String,
}

/// A machine: one twin actor.
#[derive(Debug, Clone)]
pub struct Asset {
    pub idx: AssetIdx,
    pub id: AssetId,
    pub name: String,
    pub plant: PlantId,
    pub area: String,
    pub line: LineId,
    pub twin: Arc<TwinType>,
    pub source: SourceSpec,
    /// Position on the plant's floor map (metres).
    pub pos: Option<[f64; 2]>,
}

/// The whole installation, validated.
#[derive(Debug, Default, Clone)]
pub struct AssetModel {
    pub plants: Vec<Plant>,
    pub lines: Vec<Line>,
    pub assets: Vec<Asset>,
    pub twin_types: HashMap<String, Arc<TwinType>>,
    asset_index: HashMap<Arc<str>, AssetIdx>,
    line_index: HashMap<Arc<str>, usize>,
    plant_index: HashMap<Arc<str>, usize>,
}

/// Validate twin type files into twin types by kind.
pub fn twin_types(
    files: Vec<(String, crate::config::TwinTypeDef)>,
) -> Result<HashMap<String, Arc<TwinType>>, AssetError> {
    twin_types_with_features(files, Vec::new())
}

/// Twin types with their feature sets (`models/features/*.toml`).
pub fn twin_types_with_features(
    files: Vec<(String, crate::config::TwinTypeDef)>,
    features: Vec<(String, crate::config::features::FeatureSetDef)>,
) -> Result<HashMap<String, Arc<TwinType>>, AssetError> {
    let mut out: HashMap<String, TwinType> = HashMap::new();
    for (file, def) in files {
        let t = TwinType::from_def(def, &file)?;
        if out.contains_key(&t.kind) {
            return Err(AssetError::invalid(
                &file,
                "kind",
                format!("twin type `{}` is defined twice", t.kind),
            ));
        }
        out.insert(t.kind.clone(), t);
    }
    features::attach(&mut out, features)?;
    Ok(out.into_iter().map(|(k, t)| (k, Arc::new(t))).collect())
}

impl AssetModel {
    /// Resolve plant files against twin types. Each plant file comes with its path
    /// (for error messages).
    pub fn build(
        twin_types: HashMap<String, Arc<TwinType>>,
        plant_files: Vec<(String, PlantFile)>,
    ) -> Result<Self, AssetError> {
        let mut model = AssetModel {
            twin_types,
            ..Default::default()
        };
        for (file, pf) in plant_files {
            model.add_plant(&file, pf)?;
        }
        Ok(model)
    }

    fn add_plant(&mut self, file: &str, pf: PlantFile) -> Result<(), AssetError> {
        let err = |key: String, message: String| AssetError::Invalid {
            file: file.to_string(),
            key,
            message,
        };
        valid_id(&pf.plant.id).map_err(|m| err("plant.id".into(), m))?;
        if self.plant_index.contains_key(pf.plant.id.as_str()) {
            return Err(err(
                "plant.id".into(),
                format!("plant `{}` is defined twice", pf.plant.id),
            ));
        }
        if chrono_tz_known(&pf.plant.timezone).is_err() {
            return Err(err(
                "plant.timezone".into(),
                format!(
                    "`{}` is not an IANA time zone like `Europe/Berlin` or `UTC`",
                    pf.plant.timezone
                ),
            ));
        }
        let plant_id = PlantId::from(pf.plant.id.as_str());
        let mut areas = Vec::new();
        for (i, a) in pf.areas.iter().enumerate() {
            valid_id(&a.id).map_err(|m| err(format!("areas[{i}].id"), m))?;
            if areas.iter().any(|x: &Area| x.id == a.id) {
                return Err(err(
                    format!("areas[{i}].id"),
                    format!("area `{}` is defined twice", a.id),
                ));
            }
            areas.push(Area {
                id: a.id.clone(),
                name: a.name.clone().unwrap_or_else(|| a.id.clone()),
            });
        }
        let first_line = self.lines.len();
        for (i, l) in pf.lines.iter().enumerate() {
            valid_id(&l.id).map_err(|m| err(format!("lines[{i}].id"), m))?;
            if self.line_index.contains_key(l.id.as_str()) {
                return Err(err(
                    format!("lines[{i}].id"),
                    format!("line `{}` is defined twice", l.id),
                ));
            }
            if !areas.iter().any(|a| a.id == l.area) {
                return Err(err(
                    format!("lines[{i}].area"),
                    format!("unknown area `{}` (declare it under [[areas]])", l.area),
                ));
            }
            self.line_index
                .insert(Arc::from(l.id.as_str()), self.lines.len());
            self.lines.push(Line {
                id: LineId::from(l.id.as_str()),
                name: l.name.clone().unwrap_or_else(|| l.id.clone()),
                plant: plant_id.clone(),
                area: l.area.clone(),
                assets: Vec::new(),
            });
        }
        for (i, m) in pf.machines.iter().enumerate() {
            let asset = self.resolve_machine(file, i, m, &plant_id, first_line)?;
            let li = self.line_index[asset.line.as_str()];
            self.lines[li].assets.push(asset.idx);
            self.asset_index.insert(asset.id.0.clone(), asset.idx);
            self.assets.push(asset);
        }
        if let Some(f) = &pf.floor {
            if f.outline.len() < 3 || f.outline.iter().flatten().any(|v| !v.is_finite()) {
                return Err(err(
                    "floor.outline".into(),
                    "the floor outline needs at least three [x, y] corners (finite numbers, metres)"
                        .into(),
                ));
            }
            if let Some((i, _)) = f.zones.iter().enumerate().find(|(_, z)| {
                z.rect.iter().any(|v| !v.is_finite()) || z.rect[2] <= 0.0 || z.rect[3] <= 0.0
            }) {
                return Err(err(
                    format!("floor.zones[{i}].rect"),
                    "a zone is [x, y, width, height] with a positive width and height".into(),
                ));
            }
        }
        let mut shifts = Vec::new();
        for (i, sh) in pf.shifts.iter().enumerate() {
            let Some(m) = crate::timeseries::LocalShifts::parse_time_of_day(&sh.start) else {
                return Err(err(
                    format!("shifts[{i}].start"),
                    format!("`{}` is not a time of day HH:MM", sh.start),
                ));
            };
            if shifts.iter().any(|(s, _)| *s == m) {
                return Err(err(
                    format!("shifts[{i}].start"),
                    format!("two shifts start at {}", sh.start),
                ));
            }
            shifts.push((m, sh.name.clone()));
        }
        if shifts.is_empty() {
            shifts = default_shifts();
        }
        shifts.sort();
        self.plant_index
            .insert(plant_id.0.clone(), self.plants.len());
        self.plants.push(Plant {
            shifts,
            id: plant_id,
            name: pf.plant.name.clone().unwrap_or_else(|| pf.plant.id.clone()),
            timezone: pf.plant.timezone.clone(),
            lat: pf.plant.lat,
            lon: pf.plant.lon,
            areas,
            floor: pf.floor.clone(),
        });
        Ok(())
    }

    fn resolve_machine(
        &self,
        file: &str,
        i: usize,
        m: &MachineConfig,
        plant: &PlantId,
        first_line: usize,
    ) -> Result<Asset, AssetError> {
        let err = |key: String, message: String| AssetError::Invalid {
            file: file.to_string(),
            key,
            message,
        };
        let key = |k: &str| format!("machines[{i}].{k}");
        valid_id(&m.id).map_err(|msg| err(key("id"), msg))?;
        if self.asset_index.contains_key(m.id.as_str()) {
            return Err(err(
                key("id"),
                format!("machine `{}` is defined twice", m.id),
            ));
        }
        let line_pos = self
            .line_index
            .get(m.line.as_str())
            .copied()
            .filter(|&p| p >= first_line)
            .ok_or_else(|| {
                err(
                    key("line"),
                    format!("unknown line `{}` in this plant", m.line),
                )
            })?;
        let line = &self.lines[line_pos];
        let twin = self.twin_types.get(&m.kind).cloned().ok_or_else(|| {
            let mut known: Vec<_> = self.twin_types.keys().cloned().collect();
            known.sort();
            err(
                key("type"),
                format!(
                    "unknown twin type `{}` (known: {})",
                    m.kind,
                    known.join(", ")
                ),
            )
        })?;
        let mut table = m.source.clone();
        let protocol = match table.remove("protocol") {
            Some(toml::Value::String(p)) if !p.is_empty() => p,
            _ => {
                return Err(err(
                    key("source.protocol"),
                    "missing: the protocol the machine speaks (e.g. \"modbus\" or \"mqtt\")".into(),
                ))
            }
        };
        let source = SourceSpec {
            protocol,
            table,
            file: file.to_string(),
            key: key("source"),
        };
        let pos = match (m.x, m.y) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => Some([x, y]),
            (None, None) => None,
            _ => {
                return Err(err(
                    key("x"),
                    "a machine's position needs both `x` and `y` (finite numbers, metres)".into(),
                ))
            }
        };
        Ok(Asset {
            pos,
            idx: self.assets.len() as AssetIdx,
            id: AssetId::from(m.id.as_str()),
            name: m.name.clone().unwrap_or_else(|| m.id.clone()),
            plant: plant.clone(),
            area: line.area.clone(),
            line: line.id.clone(),
            twin,
            source,
        })
    }

    /// Asset by id.
    pub fn asset(&self, id: &str) -> Option<&Asset> {
        self.asset_index.get(id).map(|&i| &self.assets[i as usize])
    }
    /// Line by id.
    pub fn line(&self, id: &str) -> Option<&Line> {
        self.line_index.get(id).map(|&i| &self.lines[i])
    }
    /// Plant by id.
    pub fn plant(&self, id: &str) -> Option<&Plant> {
        self.plant_index.get(id).map(|&i| &self.plants[i])
    }
    /// Lines of a plant.
    pub fn lines_of<'a>(&'a self, plant: &'a str) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines.iter().filter(move |l| l.plant.as_str() == plant)
    }
}

/// Ids are used in topics, paths and partition values: keep them to a safe alphabet.
fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "`{id}` may contain only letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

fn chrono_tz_known(tz: &str) -> Result<(), ()> {
    crate::config::parse_timezone(tz).map(|_| ()).ok_or(())
}
