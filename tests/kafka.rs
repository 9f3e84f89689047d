//! Kafka end to end against a real Kafka-protocol broker (Tansu, started on
//! loopback): keyed JSON messages become silver readings and live twins;
//! messages without a key, with a key for no machine or with bad JSON are
//! quarantined with their reason; offsets are committed only once the
//! journal holds the messages, so a restart reads on from there: every
//! reading once, across restarts.

mod common;

use std::time::Duration;

use common::*;
use ironlake::platform::{Platform, Probes};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

fn presses(ids: &[&str]) -> String {
    let m: Vec<(&str, &str, String)> = ids
        .iter()
        .map(|id| (*id, "press", "{ protocol = \"kafka\" }".to_string()))
        .collect();
    plant("plant-k", "line-k", &m)
}

async fn start(lake: &std::path::Path, port: u16, plant_toml: &str) -> Platform {
    let mut p = platform(lake, free_port(), false);
    p.connectors.remove("mqtt");
    let section: toml::Table = toml::from_str(&format!(
        "brokers = \"127.0.0.1:{port}\"\ngroup_id = \"ironlake-test\"\ntopics = [\"telemetry\"]\nsession_timeout_ms = 6000\ncommit_interval_ms = 100\n"
    ))
    .unwrap();
    p.connectors
        .insert("kafka".into(), toml::Value::Table(section));
    Platform::start(config(p, plant_toml), Probes::default())
        .await
        .unwrap()
}

fn producer(port: u16) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

async fn send(p: &FutureProducer, key: Option<&str>, payload: &str) {
    let mut r = FutureRecord::<str, str>::to("telemetry").payload(payload);
    if let Some(k) = key {
        r = r.key(k);
    }
    p.send(r, Duration::from_secs(10)).await.expect("produced");
}

/// `n` messages per machine, one a second from `t0`, in the twin type's
/// MQTT layout (3 signals each).
async fn publish(p: &FutureProducer, ids: &[&str], n: i64, t0: i64) -> i64 {
    for i in 0..n {
        for id in ids {
            let body = format!(
                "{{\"ts\":{},\"press\":{{\"force_kn\":{}}},\"hydraulics\":{{\"oil_temp\":41.5}},\"power_kw\":12.5}}",
                t0 + i * 1000,
                100 + i
            );
            send(p, Some(id), &body).await;
        }
    }
    p.flush(Duration::from_secs(10)).unwrap();
    n * ids.len() as i64 * 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_json_from_kafka_lands_once_across_restarts() {
    init_logs();
    let Some(bin) = tansu() else { return };
    let (_broker, port) = tansu_up(&bin).await;
    tansu_topic(&bin, port, "telemetry", 4);
    let dir = tempfile::tempdir().unwrap();
    let ids = ["k1", "k2", "k3", "k4", "k5"];
    let plant_toml = presses(&ids);
    let prod = producer(port);

    // Messages waiting before ironlake starts, and bad ones among them.
    let t0 = ironlake::time::now_ms() - 600_000;
    let mut want = publish(&prod, &ids, 40, t0).await;
    send(&prod, None, "{\"ts\":1,\"force\":1}").await;
    send(&prod, Some("ghost"), "{\"force\":1}").await;
    send(&prod, Some("k1"), "{\"force\": 1,").await;
    prod.flush(Duration::from_secs(10)).unwrap();

    let platform = start(&dir.path().join("lake"), port, &plant_toml).await;
    let lake = platform.lake.clone();
    let addr = platform.http_addr;
    wait_count(
        &lake,
        90,
        "the first batch in silver",
        "SELECT count(*) FROM silver.readings",
        want,
    )
    .await;
    for (code, n) in [
        ("missing_key", 1),
        ("unknown_asset", 1),
        ("malformed_payload", 1),
    ] {
        wait_count(
            &lake,
            30,
            code,
            &format!("SELECT count(*) FROM silver.quarantine WHERE expectation = '{code}'"),
            n,
        )
        .await;
    }
    // Live: the twin shows the newest value.
    let t1 = ironlake::time::now_ms() - 1000;
    send(
        &prod,
        Some("k3"),
        &format!("{{\"ts\":{t1},\"press\":{{\"force_kn\":777.5}}}}"),
    )
    .await;
    want += 1;
    eventually(30, "k3's twin shows the newest force", || async move {
        let (_, v) = get(addr, "/api/assets/k3").await;
        (signals(&v).get("force").and_then(|f| f["value"].as_f64()) == Some(777.5)).then_some(())
    })
    .await;
    wait_count(
        &lake,
        30,
        "the live message in silver",
        "SELECT count(*) FROM silver.readings",
        want,
    )
    .await;
    let m = eventually(30, "offsets committed and lag exported", || async move {
        let m = metrics_text(addr).await.unwrap_or_default();
        (m.contains("ironlake_kafka_committed_offset{")
            && m.contains("ironlake_kafka_messages_total{topic=\"telemetry\"}"))
        .then_some(m)
    })
    .await;
    assert!(
        m.contains("ironlake_kafka_messages_total{topic=\"telemetry\"} 204"),
        "{m}"
    );
    platform.stop().await;

    // More while ironlake is down; after the restart, only those are new.
    let t2 = ironlake::time::now_ms() - 300_000;
    want += publish(&prod, &ids, 10, t2).await;
    let platform = start(&dir.path().join("lake"), port, &plant_toml).await;
    let lake = platform.lake.clone();
    wait_count(
        &lake,
        90,
        "the second batch in silver",
        "SELECT count(*) FROM silver.readings",
        want,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.readings").await,
        want,
        "nothing twice"
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM bronze.raw_events WHERE source LIKE 'kafka:%'"
        )
        .await,
        204 + 50,
        "every message in bronze once"
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.quarantine").await,
        3
    );
    platform.stop().await;
}
