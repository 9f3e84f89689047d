//! Hostile input cannot stop ingestion or corrupt silver: huge messages,
//! thousands of unknown fields, deep nesting, a 1 MiB string, timestamps in
//! 2099, 1970 and microseconds, non-finite numbers, a clock that steps back,
//! redeliveries after newer readings, late readings (within and beyond what
//! dedup remembers). Another machine keeps flowing the whole time; every
//! rejection is quarantined with its reason; silver stays exact; the
//! twin's state and counters stay right.

mod common;

use std::time::Duration;

use common::*;
use ironlake::platform::{Platform, Probes};
use rumqttc::{AsyncClient, MqttOptions, QoS};

fn msg(ts: i64, state: i64, good: i64) -> String {
    format!(
        "{{\"ts\": {ts}, \"state\": {state}, \"press\": {{\"force_kn\": 100.5}}, \"counters\": {{\"good\": {good}}}}}"
    )
}

async fn quarantined(lake: &ironlake::lake::Lakehouse, reason: &str) -> i64 {
    count(
        lake,
        &format!("SELECT count(*) FROM silver.quarantine WHERE asset_id = 'victim' AND expectation = '{reason}'"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_messages_are_quarantined_while_others_flow() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mq = free_port();
    let plant = plant(
        "plant-h",
        "line-h",
        &[
            ("victim", "press", mqtt("test/h/victim")),
            ("bystander", "press", mqtt("test/h/bystander")),
        ],
    );
    let mut p = platform(dir.path(), mq, true);
    // Forget quickly, so late repeats go the lookup path too.
    p.ingest.dedup_recent = 8;
    let cfg = config(p, &plant);
    let platform = Platform::start(cfg, Probes::default()).await.unwrap();
    let addr = platform.http_addr;
    let lake = platform.lake.clone();

    let mut o = MqttOptions::new("hostile-pub", "127.0.0.1", mq);
    o.set_max_packet_size(16 << 20, 16 << 20);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut ev) = AsyncClient::new(o, 1000);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = ironlake::time::now_ms();
    let t0 = now - 60_000;

    // The bystander publishes throughout.
    let by = client.clone();
    let bystander = tokio::spawn(async move {
        for k in 0..150i64 {
            by.publish(
                "test/h/bystander",
                QoS::AtLeastOnce,
                false,
                msg(t0 + k * 100, 2, k),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let publish = |body: String| {
        let c = client.clone();
        async move {
            c.publish("test/h/victim", QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
        }
    };
    // Normal readings: RUNNING, counter 10..=109, 100 of them.
    for k in 0..100i64 {
        publish(msg(t0 + k * 100, 2, 10 + k)).await;
    }
    // A multi-MiB message with thousands of unknown fields.
    let mut huge = String::from("{\"ts\": 1");
    for i in 0..7000 {
        huge += &format!(", \"unknown_{i}\": \"{}\"", "x".repeat(500));
    }
    huge.push('}');
    assert!(huge.len() > 3 << 20, "{}", huge.len());
    publish(huge).await;
    // Under the size limit but 3000 unknown fields: the first 1000 are taken.
    let mut many = format!("{{\"ts\": {}, \"state\": 2", t0 + 100_000);
    for i in 0..3000 {
        many += &format!(", \"f{i}\": {i}");
    }
    many.push('}');
    publish(many).await;
    // Deeply nested JSON.
    publish(format!(
        "{}{}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    ))
    .await;
    // A 900 KiB string where a number belongs.
    publish(format!(
        "{{\"ts\": {}, \"press\": {{\"force_kn\": \"{}\"}}}}",
        t0 + 100_100,
        "9".repeat(900 << 10)
    ))
    .await;
    // Timestamps in 2099, in 1970, and in microseconds.
    publish(msg(4_070_908_800_000, 2, 500)).await;
    publish(msg(0, 2, 500)).await;
    publish(msg(now * 1000, 2, 500)).await;
    // Non-finite numbers are not JSON; as strings they are the wrong type.
    publish(format!(
        "{{\"ts\": {}, \"press\": {{\"force_kn\": NaN}}}}",
        t0 + 100_200
    ))
    .await;
    publish(format!(
        "{{\"ts\": {}, \"press\": {{\"force_kn\": 1e999}}}}",
        t0 + 100_300
    ))
    .await;
    publish(format!(
        "{{\"ts\": {}, \"press\": {{\"force_kn\": \"Infinity\"}}}}",
        t0 + 100_400
    ))
    .await;
    // The clock steps back 5 s: new readings, older than the newest. The
    // state says DOWN and the counter is lower: neither may count.
    for k in 0..5i64 {
        publish(msg(t0 + 4_950 + k * 100, 0, 3)).await;
    }
    // Redeliveries of the first readings, after 100 newer ones.
    for k in 0..3i64 {
        publish(msg(t0 + k * 100, 2, 10 + k)).await;
    }
    // A late reading from an hour ago (new), and the same again (a repeat).
    publish(msg(now - 3_600_000, 2, 1)).await;
    publish(msg(now - 3_600_000, 2, 1)).await;
    bystander.await.unwrap();

    // Good data kept flowing for the bystander the whole time.
    eventually(30, "every bystander reading committed", || {
        let lake = lake.clone();
        async move {
            (count(
                &lake,
                "SELECT count(*) FROM silver.readings WHERE asset_id = 'bystander'",
            )
            .await
                == 150 * 3)
                .then_some(())
        }
    })
    .await;
    eventually(30, "the victim's rejections quarantined", || {
        let lake = lake.clone();
        async move { (quarantined(&lake, "ancient_timestamp").await > 0).then_some(()) }
    })
    .await;
    platform.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    platform.flush().await.unwrap();

    // Each rejection with its reason.
    assert_eq!(quarantined(&lake, "payload_too_large").await, 1);
    assert_eq!(quarantined(&lake, "too_many_fields").await, 1);
    assert_eq!(
        quarantined(&lake, "unknown_signal").await,
        1000 - 1,
        "the first 1000 fields (one is `state`)"
    );
    assert!(
        quarantined(&lake, "malformed_payload").await >= 3,
        "nesting, NaN, 1e999"
    );
    // future: 2099 and microseconds (3 signals each); ancient: 1970 (3 signals).
    assert_eq!(quarantined(&lake, "future_timestamp").await, 6);
    assert_eq!(quarantined(&lake, "ancient_timestamp").await, 3);
    assert_eq!(
        quarantined(&lake, "wrong_type").await,
        2,
        "the long string and \"Infinity\""
    );
    // A rejected value is stored as that value, small, not the whole message.
    let biggest = query(
        &lake,
        "SELECT max(length(payload)) FROM silver.quarantine WHERE expectation IN ('unknown_signal', 'wrong_type')",
    )
    .await;
    let biggest = ironlake::lake::read::scalar_i64(&biggest).unwrap_or(0);
    assert!(
        biggest <= 2048,
        "a rejected value's row holds the value, not the message: {biggest} bytes"
    );
    let too_large = query(
        &lake,
        "SELECT max(length(payload)) FROM silver.quarantine WHERE expectation = 'payload_too_large'",
    )
    .await;
    assert!(ironlake::lake::read::scalar_i64(&too_large).unwrap_or(0) < 100_000);

    // Silver is exact: no (asset, signal, ts) twice, and every new reading in.
    let rows = count(
        &lake,
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'victim'",
    )
    .await;
    let distinct = count(
        &lake,
        "SELECT count(*) FROM (SELECT DISTINCT signal, ts FROM silver.readings WHERE asset_id = 'victim')",
    )
    .await;
    assert_eq!(rows, distinct, "no duplicate in silver");
    // 100 normal x 3 signals, `state` of the many-fields message, 5 steps
    // back x 3, the late reading x 3 (its repeat and the redeliveries are
    // duplicates).
    assert_eq!(rows, 300 + 1 + 15 + 3);
    let late = count(
        &lake,
        &format!(
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'victim' AND ts = {}",
            ironlake::time::timestamp_literal(now - 3_600_000)
        ),
    )
    .await;
    assert_eq!(late, 3, "a late reading that is new is kept, however late");

    // The twin: still RUNNING (late DOWN readings do not flip it) and 99
    // parts (10 -> 109; late lower counter values and the hour-old 1 are no reset).
    let (_, b) = get(addr, "/api/assets/victim").await;
    assert_eq!(b["state"], "RUNNING", "{b}");
    assert_eq!(
        b["counters"]["good_total"].as_f64(),
        Some(99.0),
        "{}",
        b["counters"]
    );
    let (_, h) = get(addr, "/api/health").await;
    assert_eq!(h["ingest"]["readings_lost"], 0);
    platform.stop().await;
}
