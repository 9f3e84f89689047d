//! Resolving MQTT bindings: the broker settings, and per machine its topic
//! and the JSON field path of each signal (twin type default, or the
//! machine's override).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use super::config::{MqttBinding, MqttConfig, MqttSourceConfig};
use super::MqttSubscriber;
use crate::assets::{AssetIdx, AssetModel, SignalDef};
use crate::config::ConfigError;
use crate::connectors::{
    parse_table, parse_value, section_table, Connector, ConnectorError, Protocol, Source,
};

/// The MQTT protocol.
pub struct Mqtt;

/// How one topic's payloads are decoded.
pub type TopicBinding = crate::connectors::json::JsonBinding;

/// The broker settings and every MQTT machine, resolved.
#[derive(Debug)]
pub struct MqttConnector {
    pub cfg: MqttConfig,
    pub topics: Arc<HashMap<String, Arc<TopicBinding>>>,
    by_asset: HashMap<AssetIdx, String>,
}

impl MqttConnector {
    /// How many topic filters ironlake subscribes to: the configured ones,
    /// or one per machine topic.
    pub fn planned_filters(&self) -> usize {
        if self.cfg.subscribe.is_empty() {
            self.topics.len()
        } else {
            self.cfg.subscribe.len()
        }
    }

    /// The topic of an asset.
    pub fn topic(&self, asset: AssetIdx) -> Option<&str> {
        self.by_asset.get(&asset).map(String::as_str)
    }

    /// The binding of an asset's topic.
    pub fn binding(&self, asset: AssetIdx) -> Option<&TopicBinding> {
        self.topic(asset)
            .and_then(|t| self.topics.get(t))
            .map(|b| &**b)
    }
}

fn parse_binding(v: &toml::Value) -> Result<MqttBinding, String> {
    let b: MqttBinding = parse_value(v.clone())?;
    if b.field.is_empty() || b.field.split('.').any(str::is_empty) {
        return Err(format!("field path `{}` has an empty part", b.field));
    }
    Ok(b)
}

impl Protocol for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt"
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
        let cfg: MqttConfig = parse_table(section_table(section), platform_file, "mqtt")?;
        if cfg.client_id.is_empty() {
            return Err(ConfigError::invalid(
                platform_file,
                "mqtt.client_id",
                "must not be empty (the broker keeps ironlake's session under it)",
            ));
        }
        if !(1..=super::plan::MAX_CONNECTIONS).contains(&cfg.connections) {
            return Err(ConfigError::invalid(
                platform_file,
                "mqtt.connections",
                format!(
                    "must be between 1 and {} (got {})",
                    super::plan::MAX_CONNECTIONS,
                    cfg.connections
                ),
            ));
        }
        if let Some(b) = cfg.embedded.as_ref().filter(|b| b.enabled) {
            if !(1..=1 << 20).contains(&b.memory_mib) {
                return Err(ConfigError::invalid(
                    platform_file,
                    "mqtt.embedded.memory_mib",
                    format!("must be between 1 and 1048576 (got {})", b.memory_mib),
                ));
            }
        }
        for (i, f) in cfg.subscribe.iter().enumerate() {
            if !valid_filter(f) {
                return Err(ConfigError::invalid(
                    platform_file,
                    &format!("mqtt.subscribe[{i}]"),
                    format!("`{f}` is not an MQTT topic filter"),
                ));
            }
        }
        let mut topics = HashMap::new();
        let mut by_asset = HashMap::new();
        for &idx in machines {
            let a = &model.assets[idx as usize];
            let (file, key) = (a.source.file.as_str(), a.source.key.as_str());
            let s: MqttSourceConfig = parse_table(a.source.table.clone(), file, key)?;
            if s.topic.is_empty() || s.topic.contains(['+', '#']) {
                return Err(ConfigError::invalid(
                    file,
                    &format!("{key}.topic"),
                    "a machine's topic must be a concrete topic without wildcards",
                ));
            }
            let fields = crate::connectors::json::field_paths(
                &a.twin,
                &s.fields,
                &["mqtt"],
                // A signal without an `mqtt` binding is read from a field
                // named like it, as Kafka does and the edge gateway writes.
                true,
                |_, v| parse_binding(v).map(|b| b.field),
                file,
                key,
            )?;
            if !cfg.subscribe.is_empty()
                && !cfg.subscribe.iter().any(|f| filter_matches(f, &s.topic))
            {
                return Err(ConfigError::invalid(
                    file,
                    &format!("{key}.topic"),
                    format!(
                        "topic `{}` is covered by no filter of mqtt.subscribe ({}) in {platform_file}: \
                         add a filter for it, or leave mqtt.subscribe empty to subscribe to each machine's topic",
                        s.topic,
                        cfg.subscribe.join(", ")
                    ),
                ));
            }
            if topics.contains_key(&s.topic) {
                return Err(ConfigError::invalid(
                    file,
                    &format!("{key}.topic"),
                    format!("topic `{}` is bound to two machines", s.topic),
                ));
            }
            by_asset.insert(idx, s.topic.clone());
            let source: Arc<str> = Arc::from(format!("mqtt:{}", s.topic));
            topics.insert(
                s.topic,
                Arc::new(TopicBinding {
                    asset: idx,
                    ts_field: s.ts_field,
                    ts_unit: s.ts_unit,
                    fields,
                    source,
                }),
            );
        }
        Ok(Box::new(MqttConnector {
            cfg,
            topics: Arc::new(topics),
            by_asset,
        }))
    }
}

/// Whether `f` is a valid MQTT topic filter (`#` only last, `+` a whole level).
pub fn valid_filter(f: &str) -> bool {
    if f.is_empty() || f.len() > 65535 || f.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == levels.len() - 1,
        "+" => true,
        l => !l.contains(['#', '+']),
    })
}

/// Whether `topic` matches the filter `f`.
pub fn filter_matches(f: &str, topic: &str) -> bool {
    let mut fl = f.split('/');
    let mut tl = topic.split('/');
    loop {
        match (fl.next(), tl.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Connector for MqttConnector {
    fn protocol(&self) -> &'static str {
        "mqtt"
    }

    fn endpoint(&self, asset: AssetIdx) -> Option<String> {
        self.topic(asset).map(|t| format!("mqtt:{t}"))
    }

    fn start_services(&self) -> Result<(), ConnectorError> {
        if let Some(b) = self.cfg.embedded.as_ref().filter(|b| b.enabled) {
            let addr = super::broker::start_embedded_broker(b, self.planned_filters()).map_err(
                |source| ConnectorError::Io {
                    connector: "embedded MQTT broker".into(),
                    source,
                },
            )?;
            tracing::info!(%addr, "embedded MQTT broker listening");
        }
        Ok(())
    }

    fn sources(&self) -> Vec<Box<dyn Source>> {
        if self.topics.is_empty() {
            // No machine speaks MQTT: nothing to subscribe for.
            return Vec::new();
        }
        MqttSubscriber::sessions(self.cfg.clone(), self.topics.clone())
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn Source>)
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(valid_filter("a/+/c") && valid_filter("#") && valid_filter("a/#"));
        assert!(!valid_filter("a/#/c") && !valid_filter("a+/b") && !valid_filter(""));
        assert!(filter_matches("ironlake/#", "ironlake/a/b"));
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(!filter_matches("a/+/c", "a/b/d"));
        assert!(!filter_matches("a/b", "a/b/c"));
        assert!(filter_matches("a/b", "a/b"));
    }
}
