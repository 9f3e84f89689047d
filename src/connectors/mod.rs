//! Connectors: one folder per protocol (`modbus/`, `mqtt/`, ...) holding its
//! configuration, bindings, runtime and tests, registered in one line of
//! [`PROTOCOLS`].
//!
//! A protocol reads its own keys: the platform's `[<protocol>]` section,
//! each machine's `source` table and the twin types' per-signal default
//! bindings (`<protocol> = {...}`); [`Connectors::resolve`] checks all of
//! them when the configuration is loaded, so `ironlake check` reports a bad
//! register address before anything connects.
//!
//! A running connector ([`Source`]) reads from a PLC or broker, stamps the
//! ingest time, maps what it received to `(asset, signal)` through the
//! bindings, and hands one [`Envelope`] per received message or register
//! poll to the ingest stage: the raw payload (for bronze) plus what could be
//! decoded from it, and, where the protocol acknowledges, an [`Ack`] the
//! ingest stage gives back once the message is durable in its journal. It
//! never validates ranges or writes tables.

pub mod files;
pub mod json;
pub mod kafka;
pub mod modbus;
pub mod mqtt;
pub mod opcua;

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::assets::{AssetIdx, AssetModel, SignalDef, SignalIdx};
use crate::config::{ConfigError, PlatformFile, PLATFORM_KEYS};
use crate::time::now_ms;

/// Plant recorded for messages that belong to no known asset.
pub const UNASSIGNED_PLANT: &str = "unassigned";

/// Errors of running connectors, naming the endpoint and what failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{connector}: {message}")]
    Start { connector: String, message: String },
    #[error("{connector}: {source}")]
    Io {
        connector: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{endpoint}: cannot resolve the host: {message}")]
    Resolve { endpoint: String, message: String },
    #[error("{endpoint}: cannot connect: {message}")]
    Connect { endpoint: String, message: String },
    #[error("{endpoint}: {what} timed out")]
    Timeout { endpoint: String, what: String },
    #[error("{endpoint}: {what} failed: {message}")]
    Read {
        endpoint: String,
        what: String,
        message: String,
    },
}

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
    /// The source marked the value uncertain (OPC UA `Uncertain*` status):
    /// it lands in silver with quality `UNCERTAIN`.
    pub uncertain: bool,
}

/// Decodes a payload later, in the ingest stage: a connector that hands
/// over raw messages keeps its own task light (reading the network and
/// acknowledging), and the shards decode in parallel.
pub trait PayloadDecoder: Send + Sync + std::fmt::Debug {
    /// What can be made of `payload`, received at `received_ms`.
    fn decode(&self, payload: &[u8], received_ms: i64, limits: &DecodeLimits) -> Decoded;
}

/// What could be made of a received payload.
#[derive(Debug, Clone)]
pub enum Decoded {
    Values(Vec<SignalValue>),
    /// Some values were decoded; the rest of the payload could not be used
    /// (too many fields, a Modbus block the device refused): the values go
    /// on, the rest is quarantined with `code` and `reason`.
    Partial {
        values: Vec<SignalValue>,
        code: &'static str,
        reason: String,
    },
    /// The payload as a whole could not be used; the reason is kept in bronze
    /// (`parse_error`) and quarantine.
    Error {
        code: &'static str,
        reason: String,
    },
    /// Not decoded yet: the ingest stage decodes it with this decoder
    /// before anything else.
    Deferred(Arc<dyn PayloadDecoder>),
}

impl PartialEq for Decoded {
    fn eq(&self, other: &Decoded) -> bool {
        match (self, other) {
            (Decoded::Values(a), Decoded::Values(b)) => a == b,
            (
                Decoded::Partial {
                    values: a,
                    code: ca,
                    reason: ra,
                },
                Decoded::Partial {
                    values: b,
                    code: cb,
                    reason: rb,
                },
            ) => a == b && ca == cb && ra == rb,
            (
                Decoded::Error {
                    code: ca,
                    reason: ra,
                },
                Decoded::Error {
                    code: cb,
                    reason: rb,
                },
            ) => ca == cb && ra == rb,
            _ => false,
        }
    }
}

impl Decoded {
    /// The decoded values (none for an error or a payload not decoded yet).
    pub fn values(&self) -> &[SignalValue] {
        match self {
            Decoded::Values(v) | Decoded::Partial { values: v, .. } => v,
            Decoded::Error { .. } | Decoded::Deferred(_) => &[],
        }
    }
}

/// Acknowledges one received message to its source once the ingest stage
/// holds it durably (journaled). Dropping it without [`Ack::done`] leaves
/// the message unacknowledged, so the source delivers it again.
#[derive(Debug)]
pub struct Ack {
    seq: u64,
    to: mpsc::UnboundedSender<u64>,
}

impl Ack {
    /// A token for the message numbered `seq` of a connection.
    pub fn new(seq: u64, to: mpsc::UnboundedSender<u64>) -> Ack {
        Ack { seq, to }
    }

    /// The message is durable: acknowledge it.
    pub fn done(self) {
        let _ = self.to.send(self.seq);
    }
}

/// One received message or register poll.
#[derive(Debug)]
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
    /// Given back once the envelope is durable (protocols that acknowledge).
    pub ack: Option<Ack>,
}

impl Envelope {
    /// Decode a deferred payload now (a no-op for one already decoded).
    pub fn decode(&mut self, limits: &DecodeLimits) {
        if let Decoded::Deferred(d) = &self.decoded {
            let d = d.clone();
            self.decoded = d.decode(self.payload.as_bytes(), self.received_ms, limits);
        }
    }

    /// Bytes this envelope holds in memory (for queue bounds).
    pub fn weight(&self) -> usize {
        let values = match &self.decoded {
            Decoded::Values(v) | Decoded::Partial { values: v, .. } => {
                v.len() * std::mem::size_of::<SignalValue>()
            }
            Decoded::Error { reason, .. } => reason.len(),
            Decoded::Deferred(_) => self.payload.len() * 4,
        };
        self.payload.len() + values + 128
    }
}

/// Limits every connector applies before decoding a message.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest payload decoded; larger ones are rejected (`payload_too_large`).
    pub max_payload: usize,
    /// Most values taken from one message; the rest are rejected (`too_many_fields`).
    pub max_fields: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_payload: 1 << 20,
            max_fields: 1000,
        }
    }
}

/// Payload text kept with a rejected message: at most this many bytes.
pub const KEPT_PAYLOAD_BYTES: usize = 64 * 1024;

/// The first [`KEPT_PAYLOAD_BYTES`] of a payload as text (lossy UTF-8), with
/// a note of how much was cut.
pub fn kept_payload(payload: &[u8]) -> String {
    if payload.len() <= KEPT_PAYLOAD_BYTES {
        return String::from_utf8_lossy(payload).into_owned();
    }
    let mut s = String::from_utf8_lossy(&payload[..KEPT_PAYLOAD_BYTES]).into_owned();
    s.push_str(&format!(
        "… [{} of {} bytes kept]",
        KEPT_PAYLOAD_BYTES,
        payload.len()
    ));
    s
}

/// Connection status of an asset's source, as shown by `GET /api/assets/{id}`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SourceStatus {
    pub protocol: String,
    pub endpoint: String,
    pub connected: bool,
    /// Last change of `connected` (UTC ms).
    pub since_ms: Option<i64>,
    /// Last message or successful poll (UTC ms).
    pub last_message_ms: Option<i64>,
    pub last_error: Option<String>,
    pub reconnects: u64,
    /// The source sends a value only when it changes (OPC UA
    /// subscriptions): an old value is current while connected.
    pub by_exception: bool,
}

/// Source status of every asset, written by connectors, read by the API,
/// the twins (to tell a disconnected machine) and `/metrics`.
pub struct HealthBoard {
    slots: Vec<RwLock<SourceStatus>>,
    /// Connection losses of every connector, by protocol.
    reconnects: HashMap<String, AtomicU64>,
}

impl HealthBoard {
    /// One slot per asset of the model.
    pub fn new(model: &AssetModel, connectors: &Connectors) -> Self {
        HealthBoard {
            slots: model
                .assets
                .iter()
                .map(|a| {
                    RwLock::new(SourceStatus {
                        protocol: a.source.protocol.clone(),
                        endpoint: connectors.endpoint(a.idx),
                        ..Default::default()
                    })
                })
                .collect(),
            reconnects: PROTOCOLS
                .iter()
                .map(|p| (p.name().to_string(), AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Record a connect or disconnect.
    pub fn set_connected(&self, asset: AssetIdx, connected: bool, error: Option<String>) {
        if let Some(slot) = self.slots.get(asset as usize) {
            let mut s = slot.write();
            if s.connected != connected || s.since_ms.is_none() {
                s.since_ms = Some(now_ms());
                if connected && s.last_message_ms.is_some() {
                    s.reconnects += 1;
                }
            }
            s.connected = connected;
            if error.is_some() || connected {
                s.last_error = error;
            }
        }
    }

    /// Mark an asset's source as reporting by exception.
    pub fn set_by_exception(&self, asset: AssetIdx) {
        if let Some(slot) = self.slots.get(asset as usize) {
            slot.write().by_exception = true;
        }
    }

    /// Count one lost connection of a connector of `protocol`.
    pub fn count_reconnect(&self, protocol: &str) {
        if let Some(c) = self.reconnects.get(protocol) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connection losses per protocol.
    pub fn reconnects(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .reconnects
            .iter()
            .map(|(k, c)| (k.clone(), c.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
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

    /// Whether an asset's connector reports its source connected.
    pub fn is_connected(&self, asset: AssetIdx) -> bool {
        self.slots
            .get(asset as usize)
            .is_some_and(|s| s.read().connected)
    }
}

/// An envelope in an ingest queue, holding its share of the queue's byte
/// budget until the ingest stage is done with it.
#[derive(Debug)]
pub struct Queued {
    pub env: Envelope,
    _bytes: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Queued {
    /// An envelope outside any byte budget (tests, replays).
    pub fn unbudgeted(env: Envelope) -> Queued {
        Queued { env, _bytes: None }
    }
}

/// Where connectors deliver envelopes: the ingest stage's queues, one per
/// shard, bounded in messages and in bytes. A full queue makes the
/// connector wait (back-pressure up to the PLC or broker, which stops
/// getting acknowledgements).
#[derive(Clone)]
pub struct IngestSink {
    shards: Arc<[(mpsc::Sender<Queued>, Arc<tokio::sync::Semaphore>)]>,
    route: Arc<dyn Fn(Option<AssetIdx>) -> usize + Send + Sync>,
    budget_kib: u32,
    files: Option<mpsc::Sender<FileChunk>>,
}

/// A reading of a file, mapped to its asset and signal.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkReading {
    pub asset: AssetIdx,
    pub signal: SignalIdx,
    pub ts_ms: i64,
    pub value: RawValue,
}

/// Something of a file that is not a reading and must be quarantined: a
/// line that could not be parsed, a row for no known asset, a value for no
/// signal, a value rescued from its column.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkIssue {
    /// The asset the row named (known or not).
    pub asset: Option<String>,
    pub signal: Option<String>,
    pub code: &'static str,
    pub reason: String,
    /// The line, row or value concerned (JSON or text).
    pub payload: String,
    /// Byte offset (text files) or row number (Parquet) in the file.
    pub offset: u64,
}

/// How far the ingest stage took a chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkReport {
    pub rows: u64,
    pub readings: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    /// Tables that already held the chunk (a restart after a crash) and
    /// were not written again.
    pub skipped_tables: u32,
}

/// A slice of a landing-folder file, read and mapped by the files
/// connector, for the ingest stage's bulk path: it lands as one commit per
/// table, each carrying the application transaction
/// `landing:<source>` = `position`, so a restart never writes it twice.
#[derive(Debug)]
pub struct FileChunk {
    /// The landing source's name.
    pub source: Arc<str>,
    /// Grows by one per chunk of the source; never reused.
    pub position: u64,
    /// The file (path as listed) and where the slice begins.
    pub file: Arc<str>,
    pub start: u64,
    pub received_ms: i64,
    /// Where the rows land as read: `bronze.landing_<source>` or `bronze.<table>`.
    pub bronze: crate::lake::TableName,
    /// The rows as read (the source's schema, `_rescued_data` in rescue
    /// mode); the ingest stage adds the file name and ingest time.
    pub raw: Vec<deltalake::arrow::array::RecordBatch>,
    /// Telemetry layouts: the readings.
    pub readings: Vec<ChunkReading>,
    /// Layout `table`: `silver.<table>` and its rows (rescued rows left out).
    pub table: Option<crate::lake::TableName>,
    pub table_rows: Vec<deltalake::arrow::array::RecordBatch>,
    pub issues: Vec<ChunkIssue>,
    /// Readings at or after this time (UTC ms) also go to the twins.
    pub twins_from_ms: i64,
    /// Readings older than this (ms before `received_ms`) are quarantined.
    pub max_past_ms: i64,
    /// Answered once every table holds the chunk (or with why not).
    pub done: tokio::sync::oneshot::Sender<Result<ChunkReport, String>>,
}

impl IngestSink {
    /// A sink over the shard queues; `route` names the shard of an asset;
    /// each queue holds at most `budget_bytes` of envelopes.
    pub fn new(
        shards: Vec<mpsc::Sender<Queued>>,
        route: Arc<dyn Fn(Option<AssetIdx>) -> usize + Send + Sync>,
        budget_bytes: usize,
    ) -> Self {
        let budget_kib = (budget_bytes / 1024).clamp(1, u32::MAX as usize >> 4) as u32;
        IngestSink {
            shards: shards
                .into_iter()
                .map(|s| {
                    (
                        s,
                        Arc::new(tokio::sync::Semaphore::new(budget_kib as usize)),
                    )
                })
                .collect(),
            route,
            budget_kib,
            files: None,
        }
    }

    /// A sink that also takes landing-folder chunks (the ingest stage's bulk path).
    pub fn with_files(mut self, tx: mpsc::Sender<FileChunk>) -> Self {
        self.files = Some(tx);
        self
    }

    /// Hand a file chunk to the bulk path, waiting while it is busy.
    /// Returns false when there is none or the platform is stopping.
    pub async fn send_chunk(&self, chunk: FileChunk) -> bool {
        match &self.files {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        }
    }

    /// Deliver an envelope, waiting while its shard's queue is full (in
    /// messages or bytes). Returns false once the platform is shutting down.
    pub async fn send(&self, env: Envelope) -> bool {
        let shard = (self.route)(env.asset).min(self.shards.len().saturating_sub(1));
        let (tx, budget) = &self.shards[shard];
        // A message larger than the whole budget takes all of it.
        let kib = ((env.weight() / 1024) as u32).clamp(1, self.budget_kib);
        let Ok(permit) = budget.clone().acquire_many_owned(kib).await else {
            return false;
        };
        tx.send(Queued {
            env,
            _bytes: Some(permit),
        })
        .await
        .is_ok()
    }
}

/// What a running connector is given.
#[derive(Clone)]
pub struct SourceContext {
    pub sink: IngestSink,
    pub health: Arc<HealthBoard>,
    pub shutdown: CancellationToken,
    pub limits: DecodeLimits,
    /// A directory where a connector may keep small state across runs
    /// (beside the ingest journal); created by the platform.
    pub state_dir: std::path::PathBuf,
}

/// A running connector: reads from its protocol until cancelled.
pub trait Source: Send {
    /// Name used in logs.
    fn name(&self) -> String;
    /// Run until `cx.shutdown` fires, delivering envelopes to `cx.sink` and
    /// connection status to `cx.health`. Must never panic on bad input or
    /// lost peers; a connector that ends early is restarted by the platform.
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, ()>;
    /// A fresh connector like this one, for a restart.
    fn respawn(&self) -> Option<Box<dyn Source>>;
}

/// A protocol ironlake speaks: reads its configuration and builds its connectors.
pub trait Protocol: Sync {
    /// The name in configs (`protocol = "modbus"`, `[mqtt]`).
    fn name(&self) -> &'static str;
    /// Check a twin type's default binding of `signal` (`<name> = {...}`).
    fn check_signal(&self, signal: &SignalDef, binding: &toml::Value) -> Result<(), String>;
    /// Resolve the platform's `[<name>]` section and every machine bound to
    /// this protocol. Errors name the file and key.
    fn resolve(
        &self,
        section: Option<&toml::Value>,
        platform_file: &str,
        model: &AssetModel,
        machines: &[AssetIdx],
    ) -> Result<Box<dyn Connector>, ConfigError>;
}

/// A protocol's resolved configuration: what runs for it.
pub trait Connector: Send + Sync {
    /// The protocol's name.
    fn protocol(&self) -> &'static str;
    /// Human-readable endpoint of an asset (`modbus://h:p/unit`, `mqtt:topic`).
    fn endpoint(&self, asset: AssetIdx) -> Option<String>;
    /// Start what the connectors need first (e.g. an embedded broker).
    fn start_services(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// The running connectors (e.g. one poller per PLC).
    fn sources(&self) -> Vec<Box<dyn Source>>;
    /// For callers that know the protocol (the simulator).
    fn as_any(&self) -> &dyn Any;
}

/// Every protocol, registered here and nowhere else.
pub static PROTOCOLS: &[&dyn Protocol] = &[
    &files::Files,
    &kafka::Kafka,
    &modbus::Modbus,
    &mqtt::Mqtt,
    &opcua::Opcua,
];

/// The resolved connectors of a configuration.
#[derive(Clone)]
pub struct Connectors {
    list: Vec<Arc<dyn Connector>>,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.list.iter().map(|c| c.protocol()).collect();
        write!(f, "Connectors({names:?})")
    }
}

fn protocol(name: &str) -> Option<&'static dyn Protocol> {
    PROTOCOLS.iter().copied().find(|p| p.name() == name)
}

fn known_protocols() -> String {
    PROTOCOLS
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Connectors {
    /// Check and resolve every protocol key of a configuration: platform
    /// sections, machine sources, twin type signal bindings.
    pub fn resolve(
        model: &AssetModel,
        platform: &PlatformFile,
        platform_file: &str,
    ) -> Result<Connectors, ConfigError> {
        for key in platform.connectors.keys() {
            if protocol(key).is_none() {
                return Err(ConfigError::invalid(
                    platform_file,
                    key,
                    format!(
                        "unknown key (keys: {}; connector sections: {})",
                        PLATFORM_KEYS.join(", "),
                        known_protocols()
                    ),
                ));
            }
        }
        let mut kinds: Vec<_> = model.twin_types.values().collect();
        kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
        for t in kinds {
            for (i, s) in t.signals.iter().enumerate() {
                for (key, v) in &s.bindings {
                    let Some(p) = protocol(key) else {
                        return Err(ConfigError::invalid(
                            &t.file,
                            &format!("signals[{i}].{key}"),
                            format!(
                                "unknown key (signal keys: name, unit, type, min, max, description; protocols: {})",
                                known_protocols()
                            ),
                        ));
                    };
                    p.check_signal(s, v).map_err(|m| {
                        ConfigError::invalid(&t.file, &format!("signals[{i}].{key}"), m)
                    })?;
                }
            }
        }
        let mut machines: HashMap<&str, Vec<AssetIdx>> = HashMap::new();
        for a in &model.assets {
            if protocol(&a.source.protocol).is_none() {
                return Err(ConfigError::invalid(
                    &a.source.file,
                    &format!("{}.protocol", a.source.key),
                    format!(
                        "unknown protocol `{}` (protocols: {})",
                        a.source.protocol,
                        known_protocols()
                    ),
                ));
            }
            machines
                .entry(a.source.protocol.as_str())
                .or_default()
                .push(a.idx);
        }
        let used: BTreeSet<&str> = machines
            .keys()
            .copied()
            .chain(platform.connectors.keys().map(String::as_str))
            .collect();
        let mut list: Vec<Arc<dyn Connector>> = Vec::new();
        for name in used {
            let p = protocol(name).expect("checked above");
            let ms = machines.get(name).map(Vec::as_slice).unwrap_or_default();
            let c = p.resolve(platform.connector(name), platform_file, model, ms)?;
            list.push(Arc::from(c));
        }
        Ok(Connectors { list })
    }

    /// The endpoint of an asset's source.
    pub fn endpoint(&self, asset: AssetIdx) -> String {
        self.list
            .iter()
            .find_map(|c| c.endpoint(asset))
            .unwrap_or_default()
    }

    /// The connector of a protocol, as its own type.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.list
            .iter()
            .find_map(|c| c.as_any().downcast_ref::<T>())
    }

    /// Start every connector's services (embedded brokers).
    pub fn start_services(&self) -> Result<(), ConnectorError> {
        for c in &self.list {
            c.start_services()?;
        }
        Ok(())
    }

    /// Every running connector, with the protocol it speaks.
    pub fn sources(&self) -> Vec<(&'static str, Box<dyn Source>)> {
        self.list
            .iter()
            .flat_map(|c| c.sources().into_iter().map(move |s| (c.protocol(), s)))
            .collect()
    }
}

/// FNV-1a: a hash that never changes between versions or runs (routing of
/// assets to shards, of topics to MQTT sessions).
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
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

/// A table from an optional TOML value (a missing section is empty).
pub fn section_table(v: Option<&toml::Value>) -> toml::Table {
    v.and_then(|v| v.as_table()).cloned().unwrap_or_default()
}

/// Deserialize a protocol's value (a binding, a section), with the error
/// as a sentence.
pub fn parse_value<T: serde::de::DeserializeOwned>(v: toml::Value) -> Result<T, String> {
    v.try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

/// Deserialize a protocol's table, with the error naming `file` and `key`.
pub fn parse_table<T: serde::de::DeserializeOwned>(
    table: toml::Table,
    file: &str,
    key: &str,
) -> Result<T, ConfigError> {
    parse_value(toml::Value::Table(table)).map_err(|m| ConfigError::invalid(file, key, m))
}
