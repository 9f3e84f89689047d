//! The `[edge]` section of the file `ironlake edge --config FILE` reads
//! (a platform file: its plants and twin types say which PLCs to read).
//!
//! ```toml
//! plants = ["plants/hall-3.toml"]    # machines with Modbus sources
//! [edge]
//! buffer_dir = "edge-buffer"
//! buffer_max_mib = 1024
//! [edge.uplink]
//! protocol = "mqtt"                  # or "kafka"
//! host = "broker.plant.local"
//! port = 1883
//! topic = "ironlake/{plant}/{line}/{asset}"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::EdgeError;

fn default_buffer_dir() -> PathBuf {
    PathBuf::from("edge-buffer")
}
fn default_max_mib() -> u64 {
    1024
}
fn default_topic() -> String {
    "ironlake/{plant}/{line}/{asset}".into()
}
fn default_port() -> u16 {
    1883
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_client_id() -> String {
    "ironlake-edge".into()
}
fn default_batch() -> usize {
    256
}

/// Where the gateway publishes.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case", deny_unknown_fields)]
pub enum UplinkConfig {
    /// MQTT, QoS 1; one topic per machine from `topic` (`{plant}`,
    /// `{line}`, `{asset}` replaced).
    Mqtt {
        #[serde(default = "default_host")]
        host: String,
        #[serde(default = "default_port")]
        port: u16,
        #[serde(default = "default_client_id")]
        client_id: String,
        #[serde(default = "default_topic")]
        topic: String,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
    },
    /// Kafka, `acks=all`, idempotent; messages keyed by machine id.
    Kafka {
        brokers: String,
        topic: String,
        #[serde(default)]
        properties: std::collections::BTreeMap<String, String>,
    },
}

/// `[edge]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The disk buffer (relative to the config file).
    #[serde(default = "default_buffer_dir")]
    pub buffer_dir: PathBuf,
    /// Bytes the buffer may hold before the PLCs wait (or the oldest go).
    #[serde(default = "default_max_mib")]
    pub buffer_max_mib: u64,
    /// Drop the oldest records when the buffer is full instead of making
    /// the PLC readers wait.
    #[serde(default)]
    pub evict_oldest: bool,
    /// Messages a second while draining a backlog (0: as fast as the uplink takes them).
    #[serde(default)]
    pub drain_rate: u64,
    /// Messages published per round trip (in flight at once).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// `GET /metrics` here (Prometheus text); none: no endpoint.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    pub uplink: UplinkConfig,
}

impl EdgeConfig {
    /// The `[edge]` section of a platform file, paths made absolute.
    pub fn from_section(v: Option<&toml::Value>, file: &str) -> Result<EdgeConfig, EdgeError> {
        let bad = |message: String| EdgeError::Config {
            file: file.to_string(),
            message,
        };
        let v = v.ok_or_else(|| bad("no [edge] section (see the README: Edge gateway)".into()))?;
        let mut c: EdgeConfig = v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("[edge]: {}", e.message())))?;
        if c.buffer_max_mib == 0 {
            return Err(bad("edge.buffer_max_mib must be at least 1".into()));
        }
        if c.batch == 0 || c.batch > 10_000 {
            return Err(bad("edge.batch must be between 1 and 10000".into()));
        }
        if c.buffer_dir.is_relative() && !file.starts_with("embedded:") {
            let base = Path::new(file).parent().unwrap_or(Path::new("."));
            c.buffer_dir = base.join(&c.buffer_dir);
        }
        Ok(c)
    }
}
