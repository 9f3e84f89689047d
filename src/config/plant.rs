//! The plant file format (`config/plants/*.toml`): one site with its areas,
//! lines, machines (each with its twin type and source) and shift pattern.
//! `assets` resolves it into the asset model; each machine's `source` table
//! is read by the connector of its `protocol`.

use serde::Deserialize;

/// `[plant]` of a plant file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantHeader {
    pub id: String,
    pub name: Option<String>,
    #[serde(default = "utc")]
    pub timezone: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

fn utc() -> String {
    "UTC".into()
}

/// `[[areas]]` of a plant file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaConfig {
    pub id: String,
    pub name: Option<String>,
}

/// `[[lines]]` of a plant file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub id: String,
    pub name: Option<String>,
    pub area: String,
}

/// `[[machines]]` of a plant file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub id: String,
    pub name: Option<String>,
    pub line: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Position on the plant's floor map, in metres from the floor plan's
    /// origin (both or neither).
    pub x: Option<f64>,
    pub y: Option<f64>,
    /// Where its signals come from: `protocol = "modbus" | "mqtt" | ...` and
    /// that protocol's keys, read by its connector.
    pub source: toml::Table,
}

/// A plant file (`config/plants/*.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantFile {
    pub plant: PlantHeader,
    #[serde(default)]
    pub areas: Vec<AreaConfig>,
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    #[serde(default)]
    pub machines: Vec<MachineConfig>,
    /// Shift pattern in the plant's time zone (default: 06:00, 14:00, 22:00).
    #[serde(default)]
    pub shifts: Vec<ShiftConfig>,
    /// The floor plan the map draws machines on.
    pub floor: Option<FloorConfig>,
}

/// `[floor]` of a plant file: the building's outline (metres, x to the
/// right, y downwards on the map) and named zones drawn inside it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FloorConfig {
    /// Polygon of the building, at least three `[x, y]` corners.
    pub outline: Vec<[f64; 2]>,
    /// Areas drawn as labelled rectangles (`[x, y, width, height]`).
    #[serde(default)]
    pub zones: Vec<FloorZone>,
}

/// A labelled rectangle on the floor plan.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FloorZone {
    pub name: String,
    pub rect: [f64; 4],
}

/// `[[shifts]]` of a plant file: a shift starting every day at a local time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    pub name: String,
    /// Local start time, `HH:MM`.
    pub start: String,
}
