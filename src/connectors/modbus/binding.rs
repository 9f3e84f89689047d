//! Resolving Modbus bindings: each machine's register map from its twin
//! type's defaults and its own overrides, checked when the configuration is
//! loaded (coils carry booleans, scales are finite and non-zero, overrides
//! name signals that exist, every machine has at least one register).

use std::any::Any;
use std::collections::HashMap;

use super::config::{ModbusBinding, ModbusSourceConfig, RegisterTable, RegisterType};
use super::ModbusPoller;
use crate::assets::{AssetIdx, AssetModel, SignalDef, SignalIdx};
use crate::config::ConfigError;
use crate::connectors::{parse_table, parse_value, Connector, Protocol, Source};

/// The Modbus TCP protocol.
pub struct Modbus;

/// One machine's resolved Modbus source.
#[derive(Debug, Clone)]
pub struct ModbusSource {
    pub host: String,
    pub port: u16,
    pub unit: u8,
    pub poll_ms: u64,
    pub timeout_ms: u64,
    pub registers: Vec<(SignalIdx, ModbusBinding)>,
}

impl ModbusSource {
    /// `modbus://host:port/unit`.
    pub fn endpoint(&self) -> String {
        format!("modbus://{}:{}/{}", self.host, self.port, self.unit)
    }
}

/// Every Modbus machine, resolved.
#[derive(Debug)]
pub struct ModbusConnector {
    machines: Vec<(AssetIdx, String, ModbusSource)>,
    by_asset: HashMap<AssetIdx, usize>,
    stats: std::sync::Arc<super::ModbusStats>,
}

impl ModbusConnector {
    /// Poll timing of every poller (registered by the platform).
    pub fn stats(&self) -> &std::sync::Arc<super::ModbusStats> {
        &self.stats
    }

    /// The Modbus source of an asset.
    pub fn source(&self, asset: AssetIdx) -> Option<&ModbusSource> {
        self.by_asset.get(&asset).map(|&i| &self.machines[i].2)
    }
}

fn check_binding(b: &ModbusBinding) -> Result<(), String> {
    let coil = b.table == RegisterTable::Coil;
    if coil != (b.register_type == RegisterType::Bool) {
        return Err("coils carry type `bool`, registers carry u16/i16/u32/i32/f32".into());
    }
    if !b.scale.is_finite() || b.scale == 0.0 {
        return Err("`scale` must be a finite, non-zero number".into());
    }
    if !b.offset.is_finite() {
        return Err("`offset` must be a finite number".into());
    }
    if u32::from(b.address) + u32::from(b.register_type.width()) > 65536 {
        return Err(format!(
            "address {} + {} register(s) runs past 65535",
            b.address,
            b.register_type.width()
        ));
    }
    Ok(())
}

fn parse_binding(v: &toml::Value) -> Result<ModbusBinding, String> {
    let b: ModbusBinding = parse_value(v.clone())?;
    check_binding(&b)?;
    Ok(b)
}

impl Protocol for Modbus {
    fn name(&self) -> &'static str {
        "modbus"
    }

    fn check_signal(&self, _signal: &SignalDef, binding: &toml::Value) -> Result<(), String> {
        parse_binding(binding).map(|_| ())
    }

    fn resolve(
        &self,
        section: Option<&toml::Value>,
        platform_file: &str,
        model: &AssetModel,
        machines: &[AssetIdx],
    ) -> Result<Box<dyn Connector>, ConfigError> {
        if section.is_some() {
            return Err(ConfigError::invalid(
                platform_file,
                "modbus",
                "Modbus has no platform settings; each machine's `source` table configures its PLC",
            ));
        }
        let mut out = ModbusConnector {
            machines: Vec::new(),
            by_asset: HashMap::new(),
            stats: Default::default(),
        };
        for &idx in machines {
            let a = &model.assets[idx as usize];
            let (file, key) = (a.source.file.as_str(), a.source.key.as_str());
            let s: ModbusSourceConfig = parse_table(a.source.table.clone(), file, key)?;
            let twin = &a.twin;
            let mut registers = Vec::new();
            for (i, def) in twin.signals.iter().enumerate() {
                let b = match s.registers.get(&def.name) {
                    Some(b) => {
                        check_binding(b).map_err(|m| {
                            ConfigError::invalid(file, &format!("{key}.registers.{}", def.name), m)
                        })?;
                        Some(b.clone())
                    }
                    None => match def.bindings.get("modbus") {
                        Some(v) => Some(parse_binding(v).map_err(|m| {
                            ConfigError::invalid(&twin.file, &format!("signals[{i}].modbus"), m)
                        })?),
                        None => None,
                    },
                };
                if let Some(b) = b {
                    registers.push((i as SignalIdx, b));
                }
            }
            for name in s.registers.keys() {
                if twin.signal(name).is_none() {
                    return Err(ConfigError::invalid(
                        file,
                        &format!("{key}.registers.{name}"),
                        format!("twin type `{}` has no signal `{name}`", twin.kind),
                    ));
                }
            }
            if registers.is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    key,
                    format!(
                        "no signal of twin type `{}` has a Modbus binding",
                        twin.kind
                    ),
                ));
            }
            if s.poll_ms == 0 {
                return Err(ConfigError::invalid(
                    file,
                    &format!("{key}.poll_ms"),
                    "must be above 0",
                ));
            }
            out.by_asset.insert(idx, out.machines.len());
            out.machines.push((
                idx,
                a.id.to_string(),
                ModbusSource {
                    host: s.host,
                    port: s.port,
                    unit: s.unit,
                    poll_ms: s.poll_ms,
                    timeout_ms: s.timeout_ms,
                    registers,
                },
            ));
        }
        Ok(Box::new(out))
    }
}

impl Connector for ModbusConnector {
    fn protocol(&self) -> &'static str {
        "modbus"
    }

    fn endpoint(&self, asset: AssetIdx) -> Option<String> {
        self.source(asset).map(ModbusSource::endpoint)
    }

    fn sources(&self) -> Vec<Box<dyn Source>> {
        self.machines
            .iter()
            .map(|(idx, id, src)| {
                Box::new(ModbusPoller::new(
                    *idx,
                    id.clone(),
                    src.clone(),
                    self.stats.clone(),
                )) as Box<dyn Source>
            })
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
