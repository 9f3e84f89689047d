//! The edge gateway (`ironlake edge --config FILE`): runs on a box beside
//! the PLCs, reads them with the same connectors as the platform (Modbus
//! today), converts every poll or message into one JSON layout (the twin
//! type's MQTT field paths plus `ts`), and publishes it to the plant's MQTT
//! broker or Kafka cluster, where the platform's MQTT or Kafka connector
//! takes it like any other message.
//!
//! **Disk buffer.** Every message is appended to a journal on disk (the
//! ingest journal's format: CRC-checked records, group commit) before it is
//! published, and the journal is trimmed only up to what the uplink
//! acknowledged (MQTT QoS 1 `PUBACK`, Kafka delivery with `acks=all`). While
//! the uplink is down the buffer grows up to `edge.buffer_max_mib`; then the
//! PLCs are read no further (back-pressure, counted) unless
//! `edge.evict_oldest` is set, which drops the oldest records instead
//! (counted). A restart of the gateway publishes what the buffer holds from
//! the acknowledged position on, in order; at most the messages in flight
//! when it stopped are sent twice, and the platform keeps readings once.
//! Draining can be paced (`edge.drain_rate`, messages a second).

pub mod config;
mod uplink;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::config::{EdgeConfig, UplinkConfig};
use crate::assets::AssetModel;
use crate::connectors::{
    DecodeLimits, Decoded, HealthBoard, IngestSink, Queued, SignalRef, SourceContext,
};
use crate::ingest::journal::Journal;
use crate::platform::Config;

/// Errors of the gateway.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    #[error(transparent)]
    Journal(#[from] crate::ingest::journal::JournalError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Counters of a running gateway (also at `GET /metrics` of `edge.metrics_listen`).
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Messages written to the disk buffer.
    pub buffered: AtomicU64,
    /// Readings in them.
    pub readings: AtomicU64,
    /// Messages acknowledged by the uplink.
    pub published: AtomicU64,
    /// Bytes dropped from the buffer's oldest end (`evict_oldest`).
    pub evicted_bytes: AtomicU64,
    /// Times the buffer was full and the PLCs waited.
    pub full_waits: AtomicU64,
    /// Messages that decoded to nothing usable (kept out of the buffer).
    pub rejected: AtomicU64,
    /// Buffer bytes not yet acknowledged.
    pub pending_bytes: AtomicU64,
    pub uplink_connected: AtomicU64,
    pub uplink_errors: AtomicU64,
}

impl EdgeStats {
    /// Prometheus text.
    pub fn prometheus(&self) -> String {
        let l = |n: &str, h: &str, t: &str, v: &AtomicU64| {
            format!(
                "# HELP {n} {h}\n# TYPE {n} {t}\n{n} {}\n",
                v.load(Ordering::Relaxed)
            )
        };
        [
            l(
                "ironlake_edge_buffered_total",
                "Messages written to the disk buffer",
                "counter",
                &self.buffered,
            ),
            l(
                "ironlake_edge_readings_total",
                "Readings in the buffered messages",
                "counter",
                &self.readings,
            ),
            l(
                "ironlake_edge_published_total",
                "Messages acknowledged by the uplink",
                "counter",
                &self.published,
            ),
            l(
                "ironlake_edge_evicted_bytes_total",
                "Buffer bytes dropped, oldest first (edge.evict_oldest)",
                "counter",
                &self.evicted_bytes,
            ),
            l(
                "ironlake_edge_buffer_full_total",
                "Times the buffer was full and the PLCs waited",
                "counter",
                &self.full_waits,
            ),
            l(
                "ironlake_edge_rejected_total",
                "Messages from the PLCs with nothing usable in them",
                "counter",
                &self.rejected,
            ),
            l(
                "ironlake_edge_buffer_pending_bytes",
                "Buffer bytes not yet acknowledged by the uplink",
                "gauge",
                &self.pending_bytes,
            ),
            l(
                "ironlake_edge_uplink_connected",
                "1 while the uplink is connected",
                "gauge",
                &self.uplink_connected,
            ),
            l(
                "ironlake_edge_uplink_errors_total",
                "Uplink connection or publish failures",
                "counter",
                &self.uplink_errors,
            ),
        ]
        .concat()
    }
}

/// A message for the uplink, as buffered: the asset and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRecord {
    pub asset: String,
    pub payload: Vec<u8>,
}

impl EdgeRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.asset.len() + self.payload.len());
        out.extend_from_slice(&(self.asset.len() as u32).to_le_bytes());
        out.extend_from_slice(self.asset.as_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    fn decode(b: &[u8]) -> Option<EdgeRecord> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let asset = std::str::from_utf8(b.get(4..4 + n)?).ok()?.to_string();
        Some(EdgeRecord {
            asset,
            payload: b.get(4 + n..)?.to_vec(),
        })
    }
}

/// The one payload layout: `{"ts": <ms>, <field path>: value, ...}`, field
/// paths nested (`press.force_kn` -> `{"press": {"force_kn": ...}}`) as
/// the twin type's MQTT bindings say (else the signal's name; a variable
/// found after commissioning goes by its extra signal's name). One payload
/// per source timestamp (an OPC UA publish can hold several values of a
/// signal); values the server marked Uncertain are listed in
/// `"_uncertain": [paths]`, and an error met reading the machine (a Bad
/// status, a missing node) travels as `"_error": {"code", "reason"}`, so
/// the platform quarantines it with its reason.
pub fn layout(
    model: &AssetModel,
    asset: usize,
    decoded: &Decoded,
    received_ms: i64,
) -> Vec<Vec<u8>> {
    let Some(a) = model.assets.get(asset) else {
        return Vec::new();
    };
    let error = |code: &str, reason: &str| {
        serde_json::json!({
            "ts": received_ms,
            "_error": { "code": code, "reason": reason },
        })
        .to_string()
        .into_bytes()
    };
    let mut out = Vec::new();
    match decoded {
        Decoded::Error { code, reason } => return vec![error(code, reason)],
        Decoded::Partial { code, reason, .. } => out.push(error(code, reason)),
        _ => {}
    }
    let mut by_ts: std::collections::BTreeMap<i64, Vec<&crate::connectors::SignalValue>> =
        std::collections::BTreeMap::new();
    for v in decoded.values() {
        by_ts.entry(v.ts_ms).or_default().push(v);
    }
    for (ts, values) in by_ts {
        // A signal twice at one time: the later value, in its own payload.
        let mut rounds: Vec<Vec<&crate::connectors::SignalValue>> = vec![Vec::new()];
        for v in values {
            match rounds
                .iter_mut()
                .find(|r| r.iter().all(|x| x.signal != v.signal))
            {
                Some(r) => r.push(v),
                None => rounds.push(vec![v]),
            }
        }
        for round in rounds {
            let mut root = serde_json::Map::new();
            root.insert("ts".into(), ts.into());
            let mut uncertain = Vec::new();
            for v in round {
                let path = match &v.signal {
                    SignalRef::Known(i) => {
                        let Some(def) = a.twin.signals.get(*i as usize) else {
                            continue;
                        };
                        def.bindings
                            .get("mqtt")
                            .and_then(|b| b.get("field"))
                            .and_then(|f| f.as_str())
                            .unwrap_or(&def.name)
                            .to_string()
                    }
                    SignalRef::Unknown(name) => name.to_string(),
                };
                if path.is_empty() || path.starts_with('_') || path == "ts" {
                    continue;
                }
                let j = match &v.value {
                    crate::connectors::RawValue::Num(x) => serde_json::Number::from_f64(*x)
                        .map_or(serde_json::Value::Null, serde_json::Value::Number),
                    crate::connectors::RawValue::Bool(b) => serde_json::Value::Bool(*b),
                    crate::connectors::RawValue::Text(t) => {
                        serde_json::Value::String(t.to_string())
                    }
                    crate::connectors::RawValue::Null => serde_json::Value::Null,
                };
                if v.uncertain {
                    uncertain.push(serde_json::Value::String(path.clone()));
                }
                insert_path(&mut root, &path, j);
            }
            if root.len() == 1 {
                continue;
            }
            if !uncertain.is_empty() {
                root.insert("_uncertain".into(), serde_json::Value::Array(uncertain));
            }
            out.push(serde_json::Value::Object(root).to_string().into_bytes());
        }
    }
    out
}

/// Set `path` (dotted) in `root`, making the objects on the way.
fn insert_path(
    root: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    v: serde_json::Value,
) -> Option<()> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let leaf = parts.pop()?;
    let mut m = root;
    for p in parts {
        let e = m
            .entry(p.to_string())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !e.is_object() {
            *e = serde_json::Value::Object(Default::default());
        }
        m = e.as_object_mut()?;
    }
    m.insert(leaf.to_string(), v);
    Some(())
}

/// The buffer shared by the writer (PLCs in) and the publisher (uplink out).
pub(crate) struct Buffer {
    pub(crate) journal: Mutex<Journal>,
    /// Everything up to here is acknowledged by the uplink.
    pub(crate) acked: AtomicU64,
    /// Signalled when records are appended.
    pub(crate) appended: tokio::sync::Notify,
    /// Signalled when records are acknowledged (space freed).
    pub(crate) freed: tokio::sync::Notify,
}

/// A running gateway.
pub struct Edge {
    stop: CancellationToken,
    joins: Vec<tokio::task::JoinHandle<()>>,
    pub stats: Arc<EdgeStats>,
    buffer: Arc<Buffer>,
}

impl Edge {
    /// Start reading the PLCs of `config` and publishing to its uplink.
    pub async fn start(config: Config, edge: EdgeConfig) -> Result<Edge, EdgeError> {
        let model = config.model.clone();
        std::fs::create_dir_all(&edge.buffer_dir)?;
        let (journal, rec) = Journal::open(&edge.buffer_dir, 16 << 20)?;
        if rec.corrupt_records > 0 {
            warn!(
                lost = rec.corrupt_records,
                "edge buffer: damaged records skipped"
            );
        }
        let trimmed = journal.trimmed();
        let stats = Arc::new(EdgeStats::default());
        stats
            .pending_bytes
            .store(journal.pending_bytes(), Ordering::Relaxed);
        let buffer = Arc::new(Buffer {
            journal: Mutex::new(journal),
            acked: AtomicU64::new(trimmed),
            appended: tokio::sync::Notify::new(),
            freed: tokio::sync::Notify::new(),
        });
        let stop = CancellationToken::new();
        let mut joins = Vec::new();
        // PLCs in: the connectors deliver into one queue.
        let (tx, rx) = mpsc::channel::<Queued>(4096);
        let sink = IngestSink::new(vec![tx], Arc::new(|_| 0), 64 << 20);
        let health = Arc::new(HealthBoard::new(&model, &config.connectors));
        let state_dir: PathBuf = edge.buffer_dir.join("connectors");
        std::fs::create_dir_all(&state_dir)?;
        let cx = SourceContext {
            sink,
            health,
            shutdown: stop.clone(),
            limits: DecodeLimits::default(),
            state_dir,
        };
        let sources = config.connectors.sources();
        if sources.is_empty() {
            return Err(EdgeError::Config {
                file: config.origin.clone(),
                message: "no machine has a PLC source to read".into(),
            });
        }
        for (_, src) in sources {
            info!(connector = %src.name(), "edge: reading");
            joins.push(tokio::spawn(crate::platform::loops::supervise_connector(
                src,
                cx.clone(),
            )));
        }
        drop(cx);
        joins.push(tokio::spawn(writer(
            rx,
            buffer.clone(),
            model.clone(),
            edge.clone(),
            stats.clone(),
            stop.clone(),
        )));
        joins.push(tokio::spawn(uplink::publish(
            buffer.clone(),
            model.clone(),
            edge.clone(),
            stats.clone(),
            stop.clone(),
        )));
        if let Some(addr) = edge.metrics_listen {
            let l = tokio::net::TcpListener::bind(addr).await?;
            info!(%addr, "edge metrics at /metrics");
            joins.push(tokio::spawn(serve_metrics(l, stats.clone(), stop.clone())));
        }
        Ok(Edge {
            stop,
            joins,
            stats,
            buffer,
        })
    }

    /// Records in the buffer not yet acknowledged by the uplink.
    pub fn pending_bytes(&self) -> u64 {
        let j = self.buffer.journal.lock();
        j.next_lsn()
            .saturating_sub(self.buffer.acked.load(Ordering::Relaxed))
    }

    /// Stop reading and publishing; the buffer keeps what is not acknowledged.
    pub async fn stop(self) {
        self.stop.cancel();
        for j in self.joins {
            let _ = tokio::time::timeout(Duration::from_secs(10), j).await;
        }
        let acked = self.buffer.acked.load(Ordering::Relaxed);
        let mut j = self.buffer.journal.lock();
        let _ = j.sync();
        let _ = j.trim(acked);
    }
}

/// PLC messages into the buffer, in batches (one sync each).
async fn writer(
    mut rx: mpsc::Receiver<Queued>,
    buffer: Arc<Buffer>,
    model: Arc<AssetModel>,
    edge: EdgeConfig,
    stats: Arc<EdgeStats>,
    stop: CancellationToken,
) {
    let limits = DecodeLimits::default();
    let max = edge.buffer_max_mib << 20;
    let mut batch = Vec::new();
    loop {
        batch.clear();
        // Until every connector is gone (at a stop, after their last poll).
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // Room in the buffer: wait (back-pressure up to the PLC pollers),
        // or drop the oldest when so configured.
        loop {
            let pending = {
                let j = buffer.journal.lock();
                j.next_lsn()
                    .saturating_sub(buffer.acked.load(Ordering::Relaxed))
            };
            if pending < max {
                break;
            }
            if edge.evict_oldest {
                let mut j = buffer.journal.lock();
                let drop_to = buffer.acked.load(Ordering::Relaxed) + (pending - max) + (max / 16);
                let drop_to = drop_to.min(j.next_lsn());
                let before = buffer.acked.fetch_max(drop_to, Ordering::Relaxed);
                stats
                    .evicted_bytes
                    .fetch_add(drop_to.saturating_sub(before), Ordering::Relaxed);
                let _ = j.trim(drop_to);
                warn!(
                    bytes = drop_to.saturating_sub(before),
                    "edge buffer full: oldest records dropped (edge.evict_oldest)"
                );
                break;
            }
            stats.full_waits.fetch_add(1, Ordering::Relaxed);
            warn!(
                pending,
                "edge buffer full: the PLCs wait until the uplink takes some"
            );
            tokio::select! {
                _ = buffer.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
        }
        let mut wrote = false;
        {
            let mut j = buffer.journal.lock();
            for q in &mut batch {
                q.env.decode(&limits);
                let Some(asset) = q.env.asset else {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let payloads = layout(&model, asset as usize, &q.env.decoded, q.env.received_ms);
                if payloads.is_empty() {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                for payload in payloads {
                    let rec = EdgeRecord {
                        asset: model.assets[asset as usize].id.to_string(),
                        payload,
                    };
                    if let Err(e) = j.append(&rec.encode()) {
                        warn!(error = %e, "edge buffer: append failed");
                        continue;
                    }
                    stats.buffered.fetch_add(1, Ordering::Relaxed);
                }
                stats
                    .readings
                    .fetch_add(q.env.decoded.values().len() as u64, Ordering::Relaxed);
                wrote = true;
            }
            if wrote {
                if let Err(e) = j.sync() {
                    warn!(error = %e, "edge buffer: sync failed");
                }
            }
            stats.pending_bytes.store(
                j.next_lsn()
                    .saturating_sub(buffer.acked.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        for q in batch.drain(..) {
            if let Some(a) = q.env.ack {
                a.done();
            }
        }
        if wrote {
            buffer.appended.notify_one();
        }
    }
}

/// A minimal `GET /metrics` endpoint.
async fn serve_metrics(l: tokio::net::TcpListener, stats: Arc<EdgeStats>, stop: CancellationToken) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let conn = tokio::select! {
            c = l.accept() => c,
            _ = stop.cancelled() => return,
        };
        let Ok((mut s, _)) = conn else { continue };
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            let body = stats.prometheus();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = EdgeRecord {
            asset: "press-1".into(),
            payload: br#"{"ts":1}"#.to_vec(),
        };
        assert_eq!(EdgeRecord::decode(&r.encode()), Some(r));
        assert_eq!(EdgeRecord::decode(&[1, 0]), None);
    }

    /// What the gateway writes, the platform's JSON decoder reads back:
    /// every value with its own time, Uncertain flags, extra signals and
    /// errors with their reasons.
    #[test]
    fn the_layout_round_trips_through_the_platforms_decoder() {
        use crate::connectors::json::decode_json;
        use crate::connectors::{DecodeLimits, RawValue, SignalValue};
        // One signal with an MQTT field path, one without (by its name).
        let twin = crate::assets::TwinType::from_toml(
            "kind = \"gw\"\n[[signals]]\nname = \"a\"\ntype = \"float\"\nmqtt = { field = \"x.a\" }\n[[signals]]\nname = \"b\"\ntype = \"float\"\n",
            "gw.toml",
        )
        .unwrap();
        let mut types = Config::embedded_twin_types().unwrap();
        types.insert("gw".into(), Arc::new(twin));
        let plant = "[plant]\nid = \"p\"\n[[areas]]\nid = \"a\"\n[[lines]]\nid = \"l\"\narea = \"a\"\n[[machines]]\nid = \"m1\"\nline = \"l\"\ntype = \"gw\"\nsource = { protocol = \"mqtt\", topic = \"ironlake/m1\" }\n";
        let pf = crate::config::parse_toml(plant, "p.toml").unwrap();
        let cfg = Config::from_parts(
            crate::config::PlatformFile::embedded_default().unwrap(),
            types,
            vec![("p.toml".into(), pf)],
        )
        .unwrap();
        let model = &cfg.model;
        // The platform's own binding of the machine's topic.
        let binding = cfg
            .connectors
            .get::<crate::connectors::mqtt::MqttConnector>()
            .and_then(|m| m.binding(0))
            .unwrap()
            .clone();
        let v = |signal, ts_ms, x: f64, uncertain| SignalValue {
            signal,
            ts_ms,
            value: RawValue::Num(x),
            uncertain,
        };
        let values = vec![
            v(SignalRef::Known(0), 1000, 10.0, false),
            v(SignalRef::Known(0), 1100, 11.0, true),
            v(SignalRef::Known(1), 1000, 5.0, false),
            v(
                SignalRef::Unknown("coolant_level".into()),
                1100,
                80.0,
                false,
            ),
        ];
        let payloads = layout(model, 0, &Decoded::Values(values.clone()), 2000);
        assert_eq!(payloads.len(), 2, "one payload per time");
        let mut back: Vec<SignalValue> = Vec::new();
        for p in &payloads {
            match decode_json(p, &binding, 0, &DecodeLimits::default()) {
                Decoded::Values(v) => back.extend(v),
                d => panic!("{d:?} from {}", String::from_utf8_lossy(p)),
            }
        }
        back.sort_by_key(|x| (x.ts_ms, format!("{:?}", x.signal)));
        let mut want = values;
        want.sort_by_key(|x| (x.ts_ms, format!("{:?}", x.signal)));
        assert_eq!(back, want);
        // A Bad value travels as an error with its reason.
        let bad = Decoded::Error {
            code: "bad_status",
            reason: "signal `a`: BadSensorFailure".into(),
        };
        let p = layout(model, 0, &bad, 2000);
        assert_eq!(
            decode_json(&p[0], &binding, 0, &DecodeLimits::default()),
            bad
        );
    }
}
