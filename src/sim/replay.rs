//! Replay for commissioning (`ironlake simulate --replay`): recorded bronze
//! rows played back as live PLC traffic on the protocols they came from, at
//! a chosen speed, so a new twin type, alarm rule or pipeline can be tried
//! on last week's real data.
//!
//! * `mqtt:<topic>` rows are published again on their topic to the
//!   config's broker (QoS 1), their `ts` field moved to now (`shift_time`).
//! * `modbus://host:port/unit` rows: the register words each poll read are
//!   served by a Modbus server on the address the config gives the machine
//!   (else the recorded one), changing as the recording did.
//! * `kafka:<key>` rows are produced again with their key to the config's
//!   first Kafka topic.
//!
//! Rows are read a minute of recording at a time (ordered by ingest time),
//! so a long range never sits in memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::Int64Type;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::modbus_server::{serve, Bank};
use crate::lake::Lakehouse;
use crate::platform::Config;
use crate::query::SqlEngine;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOpts {
    /// A bronze table of the lakehouse (`bronze.raw_events`).
    pub table: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Recording seconds per real second.
    pub speed: f64,
    /// Move JSON payloads' `ts` fields to the replay's time.
    pub shift_time: bool,
}

/// What a replay sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub mqtt: u64,
    pub modbus: u64,
    pub kafka: u64,
    pub skipped: u64,
}

/// Why a replay cannot run.
#[derive(Debug, thiserror::Error)]
#[error("replay: {0}")]
pub struct ReplayError(pub String);

/// Recording minutes read per query.
const WINDOW_MS: i64 = 60_000;

/// A Modbus server fed by recorded polls.
struct Plc {
    bank: Arc<RwLock<Bank>>,
    _up: watch::Sender<bool>,
}

fn write_words(bank: &mut Bank, payload: &str) {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(payload)
    else {
        return;
    };
    for (k, v) in m {
        let Some((table, start)) = k.split_once(':') else {
            continue;
        };
        let (Ok(start), Some(ws)) = (start.parse::<usize>(), v.as_array()) else {
            continue;
        };
        let words: Vec<u16> = ws
            .iter()
            .filter_map(|w| w.as_u64())
            .map(|w| w as u16)
            .collect();
        match table {
            "holding" | "input" => {
                let t = if table == "holding" {
                    &mut bank.holding
                } else {
                    &mut bank.input
                };
                if t.len() < start + words.len() {
                    t.resize(start + words.len(), 0);
                }
                t[start..start + words.len()].copy_from_slice(&words);
            }
            "coil" => {
                if bank.coils.len() < start + words.len() {
                    bank.coils.resize(start + words.len(), false);
                }
                for (i, w) in words.iter().enumerate() {
                    bank.coils[start + i] = *w != 0;
                }
            }
            _ => {}
        }
    }
}

fn addr_of(endpoint: &str) -> Option<SocketAddr> {
    let rest = endpoint.strip_prefix("modbus://")?;
    let hostport = rest.split('/').next()?;
    let (h, p) = hostport.rsplit_once(':')?;
    let h = if h == "localhost" { "127.0.0.1" } else { h };
    format!("{h}:{p}").parse().ok()
}

/// Move a JSON payload's `ts_field` (epoch number in `unit_ms` per unit,
/// or RFC 3339) by `shift_ms`.
fn shift_ts(payload: &str, field: &str, unit_ms: f64, shift_ms: i64) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(payload) else {
        return payload.to_string();
    };
    let mut cur = &mut v;
    let parts: Vec<&str> = field.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        match cur.get_mut(*p) {
            Some(x) => cur = x,
            None => return payload.to_string(),
        }
    }
    let Some(t) = cur.get_mut(*parts.last().unwrap_or(&"ts")) else {
        return payload.to_string();
    };
    match t {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                let moved = x + shift_ms as f64 / unit_ms;
                *t = if n.is_f64() {
                    serde_json::json!(moved)
                } else {
                    serde_json::json!(moved.round() as i64)
                };
            }
        }
        serde_json::Value::String(s) => {
            if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
                let ms = d.timestamp_millis() + shift_ms;
                *t = serde_json::Value::String(crate::time::rfc3339(ms));
            }
        }
        _ => {}
    }
    v.to_string()
}

/// Replay `o` from `lake` to the endpoints of `config` until done or `stop`.
pub async fn replay(
    config: Config,
    lake: Arc<Lakehouse>,
    o: ReplayOpts,
    stop: CancellationToken,
) -> Result<ReplayReport, ReplayError> {
    let name = crate::lake::TableName::parse(&o.table)
        .map_err(|e| ReplayError(format!("`{}`: {}", o.table, e.message)))?;
    if !lake.exists(&name) {
        return Err(ReplayError(format!("no table {name} in {}", lake.root())));
    }
    if o.speed.is_nan() || o.speed <= 0.0 {
        return Err(ReplayError("speed must be above 0".into()));
    }
    let config = &config;
    let sql = SqlEngine::new(lake.clone());
    let model = config.model.clone();
    // MQTT: the config's broker.
    let mqtt_cfg = crate::connectors::mqtt::MqttConfig::from_platform(&config.platform).ok();
    let mqtt_bindings = config
        .connectors
        .get::<crate::connectors::mqtt::MqttConnector>();
    let mut mqtt: Option<rumqttc::AsyncClient> = None;
    let mut mqtt_loop = None;
    // Kafka: the config's first topic.
    let kafka_cfg = config
        .connectors
        .get::<crate::connectors::kafka::KafkaConnector>()
        .map(|k| k.cfg.clone());
    let mut kafka: Option<rdkafka::producer::FutureProducer> = None;
    let mut plcs: HashMap<String, Plc> = HashMap::new();
    let mut report = ReplayReport::default();
    let started = tokio::time::Instant::now();
    let now0 = crate::time::now_ms();
    let mut first: Option<i64> = None;
    let mut t = o.from_ms;
    while t < o.to_ms && !stop.is_cancelled() {
        let end = (t + WINDOW_MS).min(o.to_ms);
        let q = format!(
            "SELECT CAST(ingest_ts AS BIGINT) AS t, source, asset_id, payload FROM {name} \
             WHERE ingest_ts >= {} AND ingest_ts < {} AND date >= {} AND date <= {} \
             AND parse_error IS NULL ORDER BY ingest_ts",
            crate::time::timestamp_literal(t),
            crate::time::timestamp_literal(end),
            crate::time::date_literal(t),
            crate::time::date_literal(end)
        );
        let rows = sql
            .query(&q)
            .await
            .map_err(|e| ReplayError(e.to_string()))?
            .batches;
        for b in &rows {
            let ts = b.column(0).as_primitive::<Int64Type>();
            let src =
                crate::lake::read::string_column(b, 1).map_err(|e| ReplayError(e.to_string()))?;
            let asset =
                crate::lake::read::string_column(b, 2).map_err(|e| ReplayError(e.to_string()))?;
            let payload =
                crate::lake::read::string_column(b, 3).map_err(|e| ReplayError(e.to_string()))?;
            for i in 0..b.num_rows() {
                let rec_ms = ts.value(i) / 1000;
                let f = *first.get_or_insert(rec_ms);
                let due =
                    Duration::from_secs_f64(((rec_ms - f) as f64 / 1000.0 / o.speed).max(0.0));
                tokio::select! {
                    _ = tokio::time::sleep_until(started + due) => {}
                    _ = stop.cancelled() => return Ok(report),
                }
                let shift = now0 + (rec_ms - f) - rec_ms;
                let source = src.value(i);
                let asset_id = (!asset.is_null(i)).then(|| asset.value(i));
                let body = payload.value(i);
                if let Some(topic) = source.strip_prefix("mqtt:") {
                    let Some(mc) = &mqtt_cfg else {
                        report.skipped += 1;
                        continue;
                    };
                    if mqtt.is_none() {
                        let mut opts = rumqttc::MqttOptions::new(
                            format!("ironlake-replay-{}", std::process::id()),
                            mc.host.clone(),
                            mc.port,
                        );
                        opts.set_keep_alive(Duration::from_secs(10));
                        opts.set_max_packet_size(16 << 20, 16 << 20);
                        let (c, mut el) = rumqttc::AsyncClient::new(opts, 4096);
                        let s2 = stop.clone();
                        mqtt_loop = Some(tokio::spawn(async move {
                            loop {
                                tokio::select! {
                                    r = el.poll() => if r.is_err() {
                                        tokio::time::sleep(Duration::from_millis(250)).await;
                                    },
                                    _ = s2.cancelled() => return,
                                }
                            }
                        }));
                        mqtt = Some(c);
                    }
                    let text = match (o.shift_time, asset_id.and_then(|a| model.asset(a))) {
                        (true, Some(a)) => {
                            let b = mqtt_bindings.and_then(|m| m.binding(a.idx));
                            match b.and_then(|b| b.ts_field.clone().map(|f| (f, b.ts_unit))) {
                                Some((f, unit)) => {
                                    use crate::connectors::json::TsUnit;
                                    let unit_ms = match unit {
                                        TsUnit::S => 1000.0,
                                        TsUnit::Ms => 1.0,
                                        TsUnit::Us => 0.001,
                                        TsUnit::Ns => 0.000_001,
                                    };
                                    shift_ts(body, &f, unit_ms, shift)
                                }
                                None => body.to_string(),
                            }
                        }
                        _ => body.to_string(),
                    };
                    if let Some(c) = &mqtt {
                        if c.publish(topic, rumqttc::QoS::AtLeastOnce, false, text.into_bytes())
                            .await
                            .is_ok()
                        {
                            report.mqtt += 1;
                        }
                    }
                } else if source.starts_with("modbus://") {
                    let endpoint = asset_id
                        .and_then(|a| model.asset(a))
                        .map(|a| config.connectors.endpoint(a.idx))
                        .filter(|e| e.starts_with("modbus://"))
                        .unwrap_or_else(|| source.to_string());
                    let Some(addr) = addr_of(&endpoint) else {
                        report.skipped += 1;
                        continue;
                    };
                    let plc = plcs.entry(endpoint.clone()).or_insert_with(|| {
                        let bank = Arc::new(RwLock::new(Bank::default()));
                        let (up, rx) = watch::channel(true);
                        tokio::spawn(serve(addr, bank.clone(), rx));
                        info!(%addr, "replaying recorded registers");
                        Plc { bank, _up: up }
                    });
                    write_words(&mut plc.bank.write(), body);
                    report.modbus += 1;
                } else if let Some(key) = source.strip_prefix("kafka:") {
                    let Some(kc) = &kafka_cfg else {
                        report.skipped += 1;
                        continue;
                    };
                    if kafka.is_none() {
                        kafka = rdkafka::ClientConfig::new()
                            .set("bootstrap.servers", &kc.brokers)
                            .create()
                            .map_err(|e| warn!(error = %e, "replay: no kafka producer"))
                            .ok();
                    }
                    let (Some(p), Some(topic)) = (&kafka, kc.topics.first()) else {
                        report.skipped += 1;
                        continue;
                    };
                    let text = if o.shift_time {
                        shift_ts(body, "ts", 1.0, shift)
                    } else {
                        body.to_string()
                    };
                    let r = p
                        .send(
                            rdkafka::producer::FutureRecord::to(topic)
                                .key(key)
                                .payload(&text),
                            Duration::from_secs(10),
                        )
                        .await;
                    if r.is_ok() {
                        report.kafka += 1;
                    } else {
                        report.skipped += 1;
                    }
                } else {
                    report.skipped += 1;
                }
            }
        }
        t = end;
    }
    // Give the last publishes a moment to leave.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(j) = mqtt_loop {
        j.abort();
    }
    drop(plcs);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_words_fill_the_bank() {
        let mut b = Bank::default();
        write_words(
            &mut b,
            r#"{"holding:0":[1,2,3],"input:10":[7],"coil:2":[1,0]}"#,
        );
        assert_eq!(b.holding, vec![1, 2, 3]);
        assert_eq!(b.input[10], 7);
        assert_eq!(b.coils, vec![false, false, true, false]);
        assert_eq!(
            addr_of("modbus://127.0.0.1:15021/1"),
            "127.0.0.1:15021".parse().ok()
        );
    }

    #[test]
    fn timestamps_move_to_the_replay() {
        assert_eq!(
            shift_ts(r#"{"ts":1000,"a":{"b":1}}"#, "ts", 1.0, 500),
            r#"{"a":{"b":1},"ts":1500}"#
        );
        assert_eq!(
            shift_ts(r#"{"m":{"t":10}}"#, "m.t", 1000.0, 2000),
            r#"{"m":{"t":12}}"#
        );
        assert_eq!(shift_ts("not json", "ts", 1.0, 5), "not json");
    }
}
