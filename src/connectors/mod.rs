//! Connectors: one module per protocol behind one [`Source`] trait.
//!
//! A connector reads from a PLC or broker, stamps the ingest time, maps what it
//! received to `(asset, signal)` through the twin type's bindings, and emits one
//! [`Envelope`] per received message or register poll: the raw payload (for
//! bronze) plus what could be decoded from it. It never validates ranges or
//! writes tables; that is the ingest stage's job, the same for every protocol.

pub mod files;
pub mod modbus;
pub mod mqtt;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::assets::{AssetIdx, AssetModel, SignalIdx, SourceBinding};
use crate::config::MqttConfig;

/// Plant recorded for messages that belong to no known asset.
pub const UNASSIGNED_PLANT: &str = "unassigned";

/// A value as received, before the twin type's typing and range checks.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Num(f64),
    Bool(bool),
    Text(Box<str>),
    Null,
}

/// Which signal a decoded value belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalRef {
    /// A signal of the asset's twin type.
    Known(SignalIdx),
    /// A field the binding does not know (quarantined as `unknown_signal`).
    Unknown(Box<str>),
}

/// One decoded value with its source timestamp (UTC ms).
#[derive(Debug, Clone, PartialEq)]
pub struct SignalValue {
    pub signal: SignalRef,
    pub ts_ms: i64,
    pub value: RawValue,
}

/// What could be made of a received payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Values(Vec<SignalValue>),
    /// The payload as a whole could not be used; the reason is kept in bronze
    /// (`parse_error`) and quarantine.
    Error {
        code: &'static str,
        reason: String,
    },
}

/// One received message or register poll.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// When ironlake received it (UTC ms).
    pub received_ms: i64,
    /// Connector endpoint it came from (`modbus://h:p/u`, `mqtt:topic`).
    pub source: Arc<str>,
    /// The asset it maps to, if any.
    pub asset: Option<AssetIdx>,
    /// The raw payload as text (lossy for binary payloads).
    pub payload: String,
    pub decoded: Decoded,
}

/// Connection status of an asset's source, as shown by `GET /api/assets/{id}`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SourceStatus {
    pub protocol: &'static str,
    pub endpoint: String,
    pub connected: bool,
    /// Last change of `connected` (UTC ms).
    pub since_ms: Option<i64>,
    /// Last message or successful poll (UTC ms).
    pub last_message_ms: Option<i64>,
    pub last_error: Option<String>,
    pub reconnects: u64,
}

/// Source status of every asset, written by connectors, read by the API.
pub struct HealthBoard {
    slots: Vec<RwLock<SourceStatus>>,
}

impl HealthBoard {
    /// One slot per asset of the model.
    pub fn new(model: &AssetModel) -> Self {
        HealthBoard {
            slots: model
                .assets
                .iter()
                .map(|a| {
                    RwLock::new(SourceStatus {
                        protocol: a.source.protocol(),
                        endpoint: a.source.endpoint(),
                        ..Default::default()
                    })
                })
                .collect(),
        }
    }

    /// Record a connect or disconnect.
    pub fn set_connected(&self, asset: AssetIdx, connected: bool, error: Option<String>) {
        if let Some(slot) = self.slots.get(asset as usize) {
            let mut s = slot.write();
            if s.connected != connected || s.since_ms.is_none() {
                s.since_ms = Some(now_ms());
                if connected && s.since_ms.is_some() && s.last_message_ms.is_some() {
                    s.reconnects += 1;
                }
            }
            s.connected = connected;
            if error.is_some() || connected {
                s.last_error = error;
            }
        }
    }

    /// Record that data arrived.
    pub fn touch(&self, asset: AssetIdx, at_ms: i64) {
        if let Some(slot) = self.slots.get(asset as usize) {
            slot.write().last_message_ms = Some(at_ms);
        }
    }

    /// Current status of an asset's source.
    pub fn get(&self, asset: AssetIdx) -> Option<SourceStatus> {
        self.slots.get(asset as usize).map(|s| s.read().clone())
    }
}

/// Where connectors deliver envelopes: one bounded queue per ingest shard.
/// A full queue makes the connector wait (back-pressure up to the PLC/broker).
#[derive(Clone)]
pub struct IngestSink {
    shards: Arc<[mpsc::Sender<Envelope>]>,
}

impl IngestSink {
    /// Sink over the given shard queues.
    pub fn new(shards: Vec<mpsc::Sender<Envelope>>) -> Self {
        IngestSink {
            shards: shards.into(),
        }
    }

    /// Shard that owns an asset (unknown assets go to shard 0).
    pub fn shard_of(&self, asset: Option<AssetIdx>) -> usize {
        asset.map_or(0, |a| a as usize % self.shards.len())
    }

    /// Deliver an envelope, waiting while the shard is full. Returns false once
    /// the platform is shutting down.
    pub async fn send(&self, env: Envelope) -> bool {
        let shard = self.shard_of(env.asset);
        self.shards[shard].send(env).await.is_ok()
    }
}

/// A running connector: reads from its protocol until cancelled.
pub trait Source: Send {
    /// Name used in logs.
    fn name(&self) -> String;
    /// Run until `shutdown` fires, delivering envelopes to `sink` and connection
    /// status to `health`. Must never panic on bad input or lost peers.
    fn run(
        self: Box<Self>,
        sink: IngestSink,
        health: Arc<HealthBoard>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()>;
}

/// Build every connector the model needs: one Modbus poller per machine on
/// Modbus, one MQTT client for all machines on MQTT.
pub fn build_sources(model: &Arc<AssetModel>, mqtt: &MqttConfig) -> Vec<Box<dyn Source>> {
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    let mut any_mqtt = false;
    for a in &model.assets {
        match &a.source {
            SourceBinding::Modbus(m) => out.push(Box::new(modbus::ModbusPoller::new(
                a.idx,
                a.id.to_string(),
                m.clone(),
            ))),
            SourceBinding::Mqtt(_) => any_mqtt = true,
        }
    }
    if any_mqtt {
        out.push(Box::new(mqtt::MqttSubscriber::new(
            model.clone(),
            mqtt.clone(),
        )));
    }
    out
}

/// Current UTC time in milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Exponential reconnect back-off: 250 ms doubling to 10 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// Delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(10));
        d
    }
    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(250);
    }
}
