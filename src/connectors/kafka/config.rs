//! Kafka configuration as written: the platform's `[kafka]` section (the
//! cluster, the consumer group, the topics) and a machine's `source` table
//! (`protocol = "kafka"`, its message key, JSON field overrides).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::connectors::json::TsUnit;

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_group() -> String {
    "ironlake".into()
}
fn default_client_id() -> String {
    "ironlake".into()
}
fn default_reset() -> String {
    "earliest".into()
}
fn default_session_ms() -> u64 {
    10_000
}
fn default_commit_ms() -> u64 {
    500
}
fn default_revoke_wait_ms() -> u64 {
    10_000
}

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,host:port`).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Consumer group: instances with the same group share the partitions.
    #[serde(default = "default_group")]
    pub group_id: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Topics consumed; messages are keyed by machine id.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Where a group without committed offsets starts: `earliest` or `latest`.
    #[serde(default = "default_reset")]
    pub auto_offset_reset: String,
    #[serde(default = "default_session_ms")]
    pub session_timeout_ms: u64,
    /// How often offsets of journaled messages are committed.
    #[serde(default = "default_commit_ms")]
    pub commit_interval_ms: u64,
    /// On a rebalance, how long the partitions given away wait for their
    /// messages in flight to be journaled (and committed) before they go.
    #[serde(default = "default_revoke_wait_ms")]
    pub revoke_wait_ms: u64,
    /// Further librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            group_id: default_group(),
            client_id: default_client_id(),
            topics: Vec::new(),
            auto_offset_reset: default_reset(),
            session_timeout_ms: default_session_ms(),
            commit_interval_ms: default_commit_ms(),
            revoke_wait_ms: default_revoke_wait_ms(),
            properties: BTreeMap::new(),
        }
    }
}

fn default_ts_field() -> Option<String> {
    Some("ts".into())
}

/// Kafka source of a machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// The message key its messages carry (default: the machine's id).
    #[serde(default)]
    pub key: Option<String>,
    /// Dotted path of the source timestamp (epoch number in `ts_unit`, or
    /// RFC 3339); absent from a payload: the ingest time.
    #[serde(default = "default_ts_field")]
    pub ts_field: Option<String>,
    #[serde(default)]
    pub ts_unit: TsUnit,
    /// Per-signal overrides of the twin type's JSON field paths.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// A signal's field binding in a twin type (`kafka = { field = "..." }`);
/// without one the signal's `mqtt` binding is used: the same JSON layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaBinding {
    pub field: String,
}
