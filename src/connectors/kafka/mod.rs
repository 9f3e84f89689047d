//! Kafka (rdkafka over librdkafka): a consumer in the group `kafka.group_id`
//! reads `kafka.topics`, whose messages are keyed by machine id and carry
//! the same JSON as MQTT payloads (the twin type's `kafka` field bindings,
//! else its `mqtt` ones, else a field named like the signal; overridable
//! per machine).
//!
//! **Offsets follow the journal.** Auto-commit is off. A message's offset
//! is committed (every `commit_interval_ms`) only once it and everything
//! before it in its partition is in the ingest journal, so a crash or a
//! restart re-reads what was not journaled and never skips anything. When
//! a rebalance takes partitions away, their messages in flight are waited
//! for (up to `revoke_wait_ms`) and committed before the partitions go, so
//! the instance that takes them over starts where this one stopped.
//!
//! A message without a key, or with a key naming no machine, is
//! quarantined (`missing_key`, `unknown_asset`) like any bad payload. Lag
//! per partition (from librdkafka's statistics) is in `/metrics`.

pub mod config;
pub mod track;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::{Condvar, Mutex};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{info, warn};

use self::config::{KafkaBinding, KafkaConfig, KafkaSourceConfig};
use self::track::Tracker;
use crate::assets::{AssetIdx, AssetModel, SignalDef};
use crate::config::ConfigError;
use crate::connectors::json::JsonBinding;
use crate::connectors::{
    parse_table, parse_value, section_table, Ack, Connector, Decoded, Envelope, Protocol, Source,
    SourceContext,
};
use crate::metrics::{IntCounterVec, IntGaugeVec, Opts, Registry};
use crate::time::now_ms;

/// The Kafka protocol (`[kafka]`, `protocol = "kafka"`).
pub struct Kafka;

fn parse_binding(v: &toml::Value) -> Result<KafkaBinding, String> {
    let b: KafkaBinding = parse_value(v.clone())?;
    if b.field.is_empty() || b.field.split('.').any(str::is_empty) {
        return Err(format!("field path `{}` has an empty part", b.field));
    }
    Ok(b)
}

/// The field path of a twin type's mqtt binding (`mqtt = { field = ... }`).
fn mqtt_field(v: &toml::Value) -> Option<String> {
    v.get("field").and_then(|f| f.as_str()).map(str::to_string)
}

impl Protocol for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
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
        let cfg: KafkaConfig = parse_table(section_table(section), platform_file, "kafka")?;
        let bad =
            |k: &str, m: String| ConfigError::invalid(platform_file, &format!("kafka.{k}"), m);
        if cfg.group_id.is_empty() {
            return Err(bad("group_id", "must not be empty".into()));
        }
        if cfg.topics.is_empty() && !machines.is_empty() {
            return Err(bad(
                "topics",
                "no topic to consume, while machines have `protocol = \"kafka\"`".into(),
            ));
        }
        if !matches!(cfg.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(bad(
                "auto_offset_reset",
                format!("`{}`: earliest or latest", cfg.auto_offset_reset),
            ));
        }
        for k in cfg.properties.keys() {
            if ["enable.auto.commit", "group.id", "bootstrap.servers"].contains(&k.as_str()) {
                return Err(bad(
                    &format!("properties.{k}"),
                    "set by ironlake (offsets are committed once journaled)".into(),
                ));
            }
        }
        let mut keys = HashMap::new();
        let mut by_asset = HashMap::new();
        for &idx in machines {
            let a = &model.assets[idx as usize];
            let (file, key) = (a.source.file.as_str(), a.source.key.as_str());
            let s: KafkaSourceConfig = parse_table(a.source.table.clone(), file, key)?;
            // The Kafka binding, else the MQTT layout, else the signal's name.
            let fields = crate::connectors::json::field_paths(
                &a.twin,
                &s.fields,
                &["kafka", "mqtt"],
                true,
                |b, v| match b {
                    "kafka" => parse_binding(v).map(|b| b.field),
                    _ => mqtt_field(v).ok_or_else(|| "no `field`".to_string()),
                },
                file,
                key,
            )?;
            let mkey = s.key.clone().unwrap_or_else(|| a.id.to_string());
            if keys.contains_key(&mkey) {
                return Err(ConfigError::invalid(
                    file,
                    &format!("{key}.key"),
                    format!("message key `{mkey}` is bound to two machines"),
                ));
            }
            by_asset.insert(idx, mkey.clone());
            keys.insert(
                mkey.clone(),
                Arc::new(JsonBinding {
                    asset: idx,
                    ts_field: s.ts_field,
                    ts_unit: s.ts_unit,
                    fields,
                    source: Arc::from(format!("kafka:{mkey}")),
                }),
            );
        }
        Ok(Box::new(KafkaConnector {
            cfg,
            keys: Arc::new(keys),
            by_asset,
            stats: Arc::new(KafkaStats::new()),
        }))
    }
}

/// Counters of the Kafka consumer.
pub struct KafkaStats {
    pub messages: IntCounterVec,
    pub lag: IntGaugeVec,
    pub committed: IntGaugeVec,
}

impl KafkaStats {
    fn new() -> Self {
        KafkaStats {
            messages: IntCounterVec::new(
                Opts::new(
                    "ironlake_kafka_messages_total",
                    "Kafka messages received, by topic",
                ),
                &["topic"],
            )
            .expect("valid counter"),
            lag: IntGaugeVec::new(
                Opts::new(
                    "ironlake_kafka_consumer_lag",
                    "Messages of a partition not yet committed by ironlake's group (librdkafka statistics)",
                ),
                &["topic", "partition"],
            )
            .expect("valid gauge"),
            committed: IntGaugeVec::new(
                Opts::new(
                    "ironlake_kafka_committed_offset",
                    "Offset committed per partition (everything before it is journaled)",
                ),
                &["topic", "partition"],
            )
            .expect("valid gauge"),
        }
    }

    /// Register every counter (a second registration is ignored).
    pub fn register(&self, r: &Registry) {
        let _ = r.register(Box::new(self.messages.clone()));
        let _ = r.register(Box::new(self.lag.clone()));
        let _ = r.register(Box::new(self.committed.clone()));
    }
}

/// The resolved `[kafka]` section and every Kafka machine.
pub struct KafkaConnector {
    pub cfg: KafkaConfig,
    keys: Arc<HashMap<String, Arc<JsonBinding>>>,
    by_asset: HashMap<AssetIdx, String>,
    stats: Arc<KafkaStats>,
}

impl KafkaConnector {
    /// The consumer's counters (registered by the platform).
    pub fn stats(&self) -> &Arc<KafkaStats> {
        &self.stats
    }
}

impl Connector for KafkaConnector {
    fn protocol(&self) -> &'static str {
        "kafka"
    }

    fn endpoint(&self, asset: AssetIdx) -> Option<String> {
        self.by_asset.get(&asset).map(|k| {
            format!(
                "kafka://{}/{}#{k}",
                self.cfg.brokers,
                self.cfg.topics.join(",")
            )
        })
    }

    fn sources(&self) -> Vec<Box<dyn Source>> {
        if self.cfg.topics.is_empty() {
            return Vec::new();
        }
        vec![Box::new(KafkaSource {
            cfg: self.cfg.clone(),
            keys: self.keys.clone(),
            stats: self.stats.clone(),
        })]
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Shared between the consumer's callbacks and the acknowledgement task.
struct Shared {
    tracker: Mutex<Tracker>,
    /// Signalled whenever messages become durable.
    durable: Condvar,
    revoke_wait: Duration,
    stats: Arc<KafkaStats>,
    /// Every Kafka machine (to show the connection state).
    assets: Vec<AssetIdx>,
    health: Arc<crate::connectors::HealthBoard>,
}

/// librdkafka's callbacks.
struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", fac, "{message}"),
            L::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn stats(&self, s: Statistics) {
        for (t, topic) in &s.topics {
            for (p, part) in &topic.partitions {
                if *p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                self.shared
                    .stats
                    .lag
                    .with_label_values(&[t, &p.to_string()])
                    .set(part.consumer_lag);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "kafka client error");
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        ) {
            for &a in &self.shared.assets {
                self.shared.health.set_connected(
                    a,
                    false,
                    Some(format!("all brokers down: {reason}")),
                );
            }
        }
    }
}

fn parts_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let parts = parts_of(tpl);
        let deadline = std::time::Instant::now() + self.shared.revoke_wait;
        let mut tr = self.shared.tracker.lock();
        while tr.pending_in(&parts) > 0 {
            let now = std::time::Instant::now();
            if now >= deadline {
                warn!(
                    waiting = tr.pending_in(&parts),
                    "partitions given away before all their messages were journaled; the next owner reads those again"
                );
                break;
            }
            self.shared.durable.wait_for(&mut tr, deadline - now);
        }
        let positions = tr.positions(&parts);
        tr.forget(&parts);
        drop(tr);
        let mut commit = TopicPartitionList::new();
        for (t, p, o) in &positions {
            let _ = commit.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        if commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                warn!(error = %e, "commit of partitions given away failed");
            }
        }
        info!(partitions = ?parts, "kafka partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            info!(partitions = ?parts_of(tpl), "kafka partitions assigned");
        }
    }
}

/// The group consumer.
struct KafkaSource {
    cfg: KafkaConfig,
    keys: Arc<HashMap<String, Arc<JsonBinding>>>,
    stats: Arc<KafkaStats>,
}

impl Source for KafkaSource {
    fn name(&self) -> String {
        format!("kafka:{}", self.cfg.topics.join(","))
    }

    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.consume(cx).await })
    }

    fn respawn(&self) -> Option<Box<dyn Source>> {
        Some(Box::new(KafkaSource {
            cfg: self.cfg.clone(),
            keys: self.keys.clone(),
            stats: self.stats.clone(),
        }))
    }
}

impl KafkaSource {
    fn client_config(&self) -> ClientConfig {
        let c = &self.cfg;
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &c.brokers)
            .set("group.id", &c.group_id)
            .set("client.id", &c.client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &c.auto_offset_reset)
            .set("session.timeout.ms", c.session_timeout_ms.to_string())
            .set("statistics.interval.ms", "5000")
            .set("enable.partition.eof", "false");
        for (k, v) in &c.properties {
            cc.set(k, v);
        }
        cc
    }

    async fn consume(self, cx: SourceContext) {
        let assets: Vec<AssetIdx> = self.keys.values().map(|b| b.asset).collect();
        let shared = Arc::new(Shared {
            tracker: Mutex::new(Tracker::default()),
            durable: Condvar::new(),
            revoke_wait: Duration::from_millis(self.cfg.revoke_wait_ms),
            stats: self.stats.clone(),
            assets: assets.clone(),
            health: cx.health.clone(),
        });
        let consumer: StreamConsumer<Context> =
            match self.client_config().create_with_context(Context {
                shared: shared.clone(),
            }) {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "cannot create the kafka consumer");
                    for &a in &assets {
                        cx.health.set_connected(a, false, Some(e.to_string()));
                    }
                    cx.shutdown.cancelled().await;
                    return;
                }
            };
        let topics: Vec<&str> = self.cfg.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            warn!(error = %e, "cannot subscribe to the kafka topics");
            cx.shutdown.cancelled().await;
            return;
        }
        let consumer = Arc::new(consumer);
        // Acknowledgements from the journal, and periodic commits.
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u64>();
        let commit_every = Duration::from_millis(self.cfg.commit_interval_ms.max(10));
        let committer = {
            let (shared, consumer, stop) = (shared.clone(), consumer.clone(), cx.shutdown.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(commit_every);
                loop {
                    tokio::select! {
                        a = ack_rx.recv() => {
                            let Some(seq) = a else { break };
                            let mut tr = shared.tracker.lock();
                            tr.durable(seq);
                            while let Ok(s) = ack_rx.try_recv() {
                                tr.durable(s);
                            }
                            drop(tr);
                            shared.durable.notify_all();
                        }
                        _ = tick.tick() => commit(&consumer, &shared, CommitMode::Async),
                        _ = stop.cancelled() => break,
                    }
                }
                // What the journal holds by now is committed before leaving.
                while let Ok(s) = ack_rx.try_recv() {
                    shared.tracker.lock().durable(s);
                }
                commit(&consumer, &shared, CommitMode::Sync);
            })
        };
        let mut connected = false;
        let mut topic_names: HashMap<String, Arc<str>> = HashMap::new();
        loop {
            let msg = tokio::select! {
                m = consumer.recv() => m,
                _ = cx.shutdown.cancelled() => break,
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let received = now_ms();
            let topic = topic_names
                .entry(m.topic().to_string())
                .or_insert_with(|| Arc::from(m.topic()))
                .clone();
            self.stats.messages.with_label_values(&[&topic]).inc();
            if !connected {
                connected = true;
                for &a in &assets {
                    cx.health.set_connected(a, true, None);
                }
            }
            let payload = m.payload().unwrap_or_default();
            let binding = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(|k| (k, self.keys.get(k)));
            let (asset, decoded, source): (Option<AssetIdx>, Decoded, Arc<str>) = match binding {
                Some((_, Some(b))) => {
                    cx.health.touch(b.asset, received);
                    (
                        Some(b.asset),
                        Decoded::Deferred(b.clone() as Arc<dyn crate::connectors::PayloadDecoder>),
                        b.source.clone(),
                    )
                }
                Some((k, None)) => (
                    None,
                    Decoded::Error {
                        code: "unknown_asset",
                        reason: format!(
                            "message key `{}` names no machine (topic {topic}, partition {}, offset {})",
                            k.chars().take(256).collect::<String>(),
                            m.partition(),
                            m.offset()
                        ),
                    },
                    Arc::from(format!("kafka:{topic}")),
                ),
                None => (
                    None,
                    Decoded::Error {
                        code: "missing_key",
                        reason: format!(
                            "the message has no key (or one that is not UTF-8); ironlake's Kafka topics are keyed by machine id (topic {topic}, partition {}, offset {})",
                            m.partition(),
                            m.offset()
                        ),
                    },
                    Arc::from(format!("kafka:{topic}")),
                ),
            };
            let seq = shared
                .tracker
                .lock()
                .received(&topic, m.partition(), m.offset());
            let env = Envelope {
                received_ms: received,
                source,
                asset,
                payload: String::from_utf8_lossy(payload).into_owned(),
                decoded,
                ack: Some(Ack::new(seq, ack_tx.clone())),
            };
            drop(m);
            if !cx.sink.send(env).await {
                break;
            }
        }
        drop(ack_tx);
        let _ = committer.await;
    }
}

/// Commit every partition whose durable position moved.
fn commit(consumer: &StreamConsumer<Context>, shared: &Shared, mode: CommitMode) {
    let moved = shared.tracker.lock().to_commit();
    if moved.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in &moved {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        shared
            .stats
            .committed
            .with_label_values(&[t.as_ref(), p.to_string().as_str()])
            .set(*o);
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        warn!(error = %e, "kafka offset commit failed (retried at the next interval)");
        shared.tracker.lock().commit_failed(&moved);
    }
}
