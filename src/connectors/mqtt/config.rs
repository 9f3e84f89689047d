//! MQTT configuration as written: the platform's `[mqtt]` section (the
//! broker, the session, the embedded broker), a machine's `source` table
//! (`protocol = "mqtt"`, topic, timestamp field and unit, field overrides)
//! and a signal's binding (`mqtt = { field = "spindle.speed" }`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use crate::connectors::json::TsUnit;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, PlatformFile};

/// `[mqtt.embedded]`: the embedded broker (rumqttd).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Largest accepted payload in bytes.
    pub max_payload: usize,
    /// Memory (MiB) the broker keeps of routed messages, shared among
    /// ironlake's subscription filters (oldest dropped first).
    pub memory_mib: u64,
}

/// `[mqtt]`: the broker ironlake subscribes to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Client id of ironlake's persistent session; keep it stable, the
    /// broker keeps the messages ironlake has not acknowledged under it.
    pub client_id: String,
    /// Topic filters to subscribe to; messages on topics bound to no machine are
    /// quarantined (`unknown_asset`). Empty: subscribe to each machine's topic.
    pub subscribe: Vec<String>,
    /// Connections (persistent sessions) sharing the filters, 1 to 16:
    /// brokers let only a few unacknowledged messages be in flight per
    /// connection.
    pub connections: usize,
    pub keep_alive_s: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub embedded: Option<EmbeddedBrokerConfig>,
}

impl MqttConfig {
    /// The `[mqtt]` section of a platform file (defaults filled in).
    pub fn from_platform(p: &PlatformFile) -> Result<MqttConfig, ConfigError> {
        let t = crate::connectors::section_table(p.connector("mqtt"));
        crate::connectors::parse_table(t, "platform", "mqtt")
    }

    /// Write this section into a platform file (for programs that assemble
    /// a config in code).
    pub fn write_to(&self, p: &mut PlatformFile) {
        if let Ok(v) = toml::Value::try_from(self) {
            p.connectors.insert("mqtt".into(), v);
        }
    }
}

/// MQTT source of a machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    pub topic: String,
    /// Dotted path of the source timestamp in the payload (epoch number in
    /// `ts_unit`, or RFC 3339); absent: the ingest time.
    #[serde(default = "default_ts_field")]
    pub ts_field: Option<String>,
    /// Unit of numeric timestamps: `s`, `ms` (default), `us` or `ns`.
    #[serde(default)]
    pub ts_unit: TsUnit,
    /// Per-signal overrides of the twin type's JSON field paths.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

fn default_ts_field() -> Option<String> {
    Some("ts".into())
}

/// Where a signal is found in an MQTT JSON payload (dotted path, e.g. `spindle.speed`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttBinding {
    pub field: String,
}
