//! MQTT: one client (rumqttc) subscribed with QoS 1 to the configured filters;
//! each JSON message is mapped to its machine by topic and to signals by field
//! path. The client reconnects with back-off and re-subscribes after every
//! reconnect. While the ingest queue is full the event loop is not polled, so
//! acknowledgements stop and the broker holds the messages (back-pressure).
//!
//! Also home of the embedded broker (rumqttd) used by `ironlake demo`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    now_ms, Backoff, Decoded, Envelope, HealthBoard, IngestSink, RawValue, SignalRef, SignalValue,
    Source,
};
use crate::assets::{AssetIdx, AssetModel, SignalIdx, SourceBinding};
use crate::config::{EmbeddedBrokerConfig, MqttConfig};

/// How one topic's payloads are decoded.
#[derive(Debug, Clone)]
pub struct TopicBinding {
    pub asset: AssetIdx,
    pub ts_field: Option<String>,
    /// Dotted field path -> signal.
    pub fields: HashMap<String, SignalIdx>,
}

/// Subscribes to the broker for every MQTT-bound machine.
pub struct MqttSubscriber {
    cfg: MqttConfig,
    topics: HashMap<String, TopicBinding>,
    assets: Vec<AssetIdx>,
}

impl MqttSubscriber {
    /// Build the topic map from the model.
    pub fn new(model: Arc<AssetModel>, cfg: MqttConfig) -> Self {
        let mut topics = HashMap::new();
        let mut assets = Vec::new();
        for a in &model.assets {
            if let SourceBinding::Mqtt(m) = &a.source {
                assets.push(a.idx);
                topics.insert(
                    m.topic.clone(),
                    TopicBinding {
                        asset: a.idx,
                        ts_field: m.ts_field.clone(),
                        fields: m.fields.iter().cloned().collect(),
                    },
                );
            }
        }
        MqttSubscriber {
            cfg,
            topics,
            assets,
        }
    }

    fn filters(&self) -> Vec<String> {
        if self.cfg.subscribe.is_empty() {
            let mut t: Vec<String> = self.topics.keys().cloned().collect();
            t.sort();
            t
        } else {
            self.cfg.subscribe.clone()
        }
    }

    fn envelope(&self, topic: &str, payload: &[u8]) -> Envelope {
        let received = now_ms();
        let text = String::from_utf8_lossy(payload).into_owned();
        let source: Arc<str> = Arc::from(format!("mqtt:{topic}"));
        match self.topics.get(topic) {
            None => Envelope {
                received_ms: received,
                source,
                asset: None,
                payload: text,
                decoded: Decoded::Error {
                    code: "unknown_asset",
                    reason: format!("no machine is bound to topic `{topic}`"),
                },
            },
            Some(b) => Envelope {
                received_ms: received,
                source,
                asset: Some(b.asset),
                decoded: decode_json(payload, b, received),
                payload: text,
            },
        }
    }
}

/// Decode a JSON payload against a topic binding. Every leaf of the document is
/// accounted for: a bound signal, the timestamp, or an unknown signal.
pub fn decode_json(payload: &[u8], b: &TopicBinding, received_ms: i64) -> Decoded {
    let doc: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            return Decoded::Error {
                code: "malformed_payload",
                reason: format!("payload is not valid JSON: {e}"),
            }
        }
    };
    let serde_json::Value::Object(map) = doc else {
        return Decoded::Error {
            code: "malformed_payload",
            reason: "payload must be a JSON object".into(),
        };
    };
    let mut leaves = Vec::new();
    flatten("", &map, &mut leaves);
    let mut ts = received_ms;
    if let Some(tsf) = &b.ts_field {
        if let Some((_, v)) = leaves.iter().find(|(p, _)| p == tsf) {
            match parse_ts(v) {
                Some(t) => ts = t,
                None => {
                    return Decoded::Error {
                        code: "bad_timestamp",
                        reason: format!("field `{tsf}` is not epoch milliseconds or RFC 3339: {v}"),
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(leaves.len());
    for (path, v) in leaves {
        if b.ts_field.as_deref() == Some(path.as_str()) {
            continue;
        }
        let signal = match b.fields.get(&path) {
            Some(i) => SignalRef::Known(*i),
            None => SignalRef::Unknown(path.into_boxed_str()),
        };
        let value = match v {
            serde_json::Value::Number(n) => n.as_f64().map_or(RawValue::Null, RawValue::Num),
            serde_json::Value::Bool(x) => RawValue::Bool(*x),
            serde_json::Value::String(s) => RawValue::Text(s.as_str().into()),
            serde_json::Value::Null => RawValue::Null,
            other => RawValue::Text(other.to_string().into_boxed_str()),
        };
        out.push(SignalValue {
            signal,
            ts_ms: ts,
            value,
        });
    }
    Decoded::Values(out)
}

fn flatten<'a>(
    prefix: &str,
    map: &'a serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, &'a serde_json::Value)>,
) {
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            serde_json::Value::Object(inner) if !inner.is_empty() => flatten(&path, inner, out),
            _ => out.push((path, v)),
        }
    }
}

/// Epoch milliseconds (integer or float) or an RFC 3339 string.
fn parse_ts(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => {
            let f = n.as_f64()?;
            (f.is_finite() && f > 0.0 && f < 1e14).then_some(f as i64)
        }
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis()),
        _ => None,
    }
}

impl Source for MqttSubscriber {
    fn name(&self) -> String {
        format!("mqtt://{}:{}", self.cfg.host, self.cfg.port)
    }

    fn run(
        self: Box<Self>,
        sink: IngestSink,
        health: Arc<HealthBoard>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut opts = MqttOptions::new(&self.cfg.client_id, &self.cfg.host, self.cfg.port);
            opts.set_keep_alive(Duration::from_secs(self.cfg.keep_alive_s.max(5)));
            opts.set_clean_session(true);
            opts.set_max_packet_size(4 * 1024 * 1024, 64 * 1024);
            opts.set_inflight(1000);
            if let (Some(u), Some(p)) = (&self.cfg.username, &self.cfg.password) {
                opts.set_credentials(u, p);
            }
            let (client, mut eventloop) = AsyncClient::new(opts, 64);
            let filters = self.filters();
            let mut backoff = Backoff::default();
            let set_all = |up: bool, err: Option<String>| {
                for a in &self.assets {
                    health.set_connected(*a, up, err.clone());
                }
            };
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!(broker = %self.name(), "mqtt connected; subscribing to {filters:?}");
                        backoff.reset();
                        set_all(true, None);
                        for f in &filters {
                            if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                                warn!(filter = %f, error = %e, "mqtt subscribe failed");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let env = self.envelope(&p.topic, &p.payload);
                        if let Some(a) = env.asset {
                            health.touch(a, env.received_ms);
                        }
                        if !sink.send(env).await {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let msg = format!("broker {}: {e}", self.name());
                        warn!(error = %msg, "mqtt connection lost; reconnecting");
                        set_all(false, Some(msg));
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                }
            }
            let _ = client.try_disconnect();
            set_all(false, Some("connector stopped".into()));
        })
    }
}

/// Start the embedded MQTT broker (rumqttd) on its own threads. It runs until
/// the process exits.
pub fn start_embedded_broker(cfg: &EmbeddedBrokerConfig) -> std::io::Result<SocketAddr> {
    // Fail early and clearly if the port is taken (rumqttd would only log it).
    drop(std::net::TcpListener::bind(cfg.listen).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("embedded MQTT broker cannot listen on {}: {e}", cfg.listen),
        )
    })?);
    let mut v4 = HashMap::new();
    v4.insert(
        "v4".to_string(),
        rumqttd::ServerSettings {
            name: "ironlake-v4".into(),
            listen: cfg.listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: cfg.max_payload,
                max_inflight_count: 1000,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 64 * 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    Ok(cfg.listen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> TopicBinding {
        TopicBinding {
            asset: 3,
            ts_field: Some("ts".into()),
            fields: [
                ("state".to_string(), 0u16),
                ("spindle.speed".to_string(), 1u16),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn decodes_nested_fields_and_timestamp() {
        let d = decode_json(
            br#"{"ts": 1700000000123, "state": 2, "spindle": {"speed": 1200.5}}"#,
            &binding(),
            5,
        );
        let Decoded::Values(v) = d else {
            panic!("{d:?}")
        };
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|x| x.ts_ms == 1_700_000_000_123));
        assert!(v.contains(&SignalValue {
            signal: SignalRef::Known(1),
            ts_ms: 1_700_000_000_123,
            value: RawValue::Num(1200.5)
        }));
    }

    #[test]
    fn reports_unknown_fields_and_keeps_wrong_types_for_validation() {
        let d = decode_json(br#"{"state": "running", "coolant": 3}"#, &binding(), 42);
        let Decoded::Values(v) = d else {
            panic!("{d:?}")
        };
        assert!(v.contains(&SignalValue {
            signal: SignalRef::Known(0),
            ts_ms: 42,
            value: RawValue::Text("running".into())
        }));
        assert!(v.contains(&SignalValue {
            signal: SignalRef::Unknown("coolant".into()),
            ts_ms: 42,
            value: RawValue::Num(3.0)
        }));
    }

    #[test]
    fn malformed_and_bad_timestamps_are_errors_with_reasons() {
        match decode_json(b"{not json", &binding(), 0) {
            Decoded::Error { code, reason } => {
                assert_eq!(code, "malformed_payload");
                assert!(reason.contains("JSON"));
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            decode_json(b"[1,2]", &binding(), 0),
            Decoded::Error {
                code: "malformed_payload",
                ..
            }
        ));
        assert!(matches!(
            decode_json(br#"{"ts": "yesterday"}"#, &binding(), 0),
            Decoded::Error {
                code: "bad_timestamp",
                ..
            }
        ));
        match decode_json(
            br#"{"ts": "2026-01-02T03:04:05Z", "state": 1}"#,
            &binding(),
            0,
        ) {
            Decoded::Values(v) => assert_eq!(v[0].ts_ms, 1_767_323_045_000),
            d => panic!("{d:?}"),
        }
    }
}
