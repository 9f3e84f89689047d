//! Modbus configuration as written: a machine's `source` table
//! (`protocol = "modbus"`, host, port, unit, poll interval, register
//! overrides) and a signal's register binding (`modbus = {...}` in a twin
//! type or under `source.registers.<signal>`).

use std::collections::BTreeMap;

use serde::Deserialize;

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

/// Modbus TCP source of a machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSourceConfig {
    pub host: String,
    pub port: u16,
    #[serde(default = "default_unit")]
    pub unit: u8,
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Per-signal overrides of the twin type's register map.
    #[serde(default)]
    pub registers: BTreeMap<String, ModbusBinding>,
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    2000
}
