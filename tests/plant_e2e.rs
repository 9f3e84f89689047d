//! End to end on loopback: simulated PLCs (real Modbus TCP servers, real MQTT
//! through the embedded broker) -> connectors -> twins -> REST, and -> bronze /
//! silver / quarantine Delta tables.

mod common;

use common::*;
use ironlake::platform::{Platform, Probes};
use ironlake::sim::{Scenario, Simulator};
use rumqttc::{AsyncClient, MqttOptions, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modbus_plc_to_twin_rest_and_silver_with_reconnect() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, mq) = (free_port(), free_port(), free_port());
    let plant = plant(
        "plant-t",
        "line-1",
        &[
            ("mill-1", "cnc_mill", modbus(p1, 200)),
            ("conv-1", "conveyor", modbus(p2, 200)),
        ],
    );
    let cfg = config(platform(dir.path(), mq, false), &plant);
    let sim = Simulator::start(&Scenario::from_config(scenario(mq, 200), &cfg), 7)
        .await
        .unwrap();
    let platform = Platform::start(cfg, Probes::default()).await.unwrap();
    let addr = platform.http_addr;

    // Live values with window statistics.
    let first = eventually(30, "mill-1 has 5+ vibration readings", || async {
        let (s, body) = get(addr, "/api/assets/mill-1").await;
        assert_eq!(s, 200);
        let sig = signals(&body);
        (sig["vibration"]["count_window"]["count"]
            .as_u64()
            .unwrap_or(0)
            >= 5)
            .then_some(body)
    })
    .await;
    let sig = signals(&first);
    let vib = &sig["vibration"];
    assert_eq!(vib["unit"], "mm/s");
    assert_eq!(vib["quality"], "GOOD");
    assert!(
        vib["count_window"]["mean"].is_f64() && vib["count_window"]["std"].is_f64(),
        "{vib}"
    );
    assert!(vib["time_window"]["max"].as_f64() >= vib["time_window"]["min"].as_f64());
    assert!(vib["ema"].is_f64());
    assert_ne!(first["state"], "UNKNOWN");
    assert_eq!(first["source"]["connected"], true);
    assert_eq!(first["source"]["protocol"], "modbus");
    // Values change over time (noise and physics), and readings keep coming.
    let later = eventually(30, "power changes", || {
        let v0 = sig["power"]["value"].as_f64();
        async move {
            let (_, body) = get(addr, "/api/assets/mill-1").await;
            (signals(&body)["power"]["value"].as_f64() != v0).then_some(body)
        }
    })
    .await;
    assert!(later["readings_total"].as_u64() > first["readings_total"].as_u64());

    // Hierarchy and aggregates.
    let (s, line) = get(addr, "/api/lines/line-1").await;
    assert_eq!(s, 200);
    assert_eq!(line["aggregate"]["machines"], 2);
    assert_eq!(line["machines"].as_array().unwrap().len(), 2);
    let (_, plants) = get(addr, "/api/plants").await;
    assert_eq!(plants[0]["id"], "plant-t");
    let (s, pl) = get(addr, "/api/plants/plant-t").await;
    assert_eq!(s, 200);
    assert_eq!(pl["lines"][0]["id"], "line-1");
    let (_, mills) = get(addr, "/api/assets?kind=cnc_mill").await;
    assert_eq!(mills.as_array().unwrap().len(), 1);
    let (_, health) = get(addr, "/api/health").await;
    assert_eq!(health["status"], "ok");

    // Errors are JSON with fitting codes.
    let (s, e) = get(addr, "/api/assets/nope").await;
    assert_eq!((s, e["status"].as_u64()), (404, Some(404)));
    assert!(e["error"].as_str().unwrap().contains("nope"));
    assert_eq!(get(addr, "/api/lines/nope").await.0, 404);
    assert_eq!(get(addr, "/api/plants/nope").await.0, 404);
    assert_eq!(get(addr, "/api/assets?kind=robot").await.0, 400);
    assert_eq!(get(addr, "/api/assets/mill-1/history?limit=0").await.0, 400);
    assert_eq!(
        get(addr, "/api/assets/mill-1/history?from=yesterday")
            .await
            .0,
        400
    );
    let (s, e) = get(addr, "/api/assets/mill-1/history?signal=coolant").await;
    assert_eq!(s, 400);
    assert!(
        e["error"].as_str().unwrap().contains("spindle_speed"),
        "lists the signals: {e}"
    );

    // History from silver.
    let hist = eventually(30, "history of vibration", || async {
        let (s, h) = get(
            addr,
            "/api/assets/mill-1/history?signal=vibration&from=now-10m&limit=5",
        )
        .await;
        assert_eq!(s, 200);
        (h["count"].as_u64() == Some(5) && h["truncated"] == true).then_some(h)
    })
    .await;
    let pts = hist["points"].as_array().unwrap();
    assert!(
        pts.windows(2)
            .all(|w| w[0]["ts"].as_i64() <= w[1]["ts"].as_i64()),
        "oldest first"
    );
    assert!(pts
        .iter()
        .all(|p| p["signal"] == "vibration" && p["quality"] == "GOOD"));

    // Poll timing is visible: polls, missed cycles, how late polls start.
    let m = metrics_text(addr).await.expect("GET /metrics");
    for needle in [
        "ironlake_modbus_missed_polls_total ",
        "ironlake_modbus_poll_lateness_seconds_bucket",
    ] {
        assert!(m.contains(needle), "/metrics lacks `{needle}`:\n{m}");
    }
    let polls: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("ironlake_modbus_polls_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(polls > 5, "modbus polls counted: {polls}");

    // The PLC goes away: the source shows disconnected; it comes back: data resumes.
    assert!(sim.set_plc_up("mill-1", false));
    let down = eventually(30, "mill-1 source disconnected", || async {
        let (_, b) = get(addr, "/api/assets/mill-1").await;
        (b["source"]["connected"] == false).then_some(b)
    })
    .await;
    assert!(
        down["source"]["last_error"].is_string(),
        "{}",
        down["source"]
    );
    // The other machine is unaffected.
    let conv0 = get(addr, "/api/assets/conv-1").await.1["readings_total"]
        .as_u64()
        .unwrap();
    eventually(20, "conv-1 keeps flowing", || async {
        (get(addr, "/api/assets/conv-1").await.1["readings_total"]
            .as_u64()
            .unwrap()
            > conv0)
            .then_some(())
    })
    .await;
    let before = get(addr, "/api/assets/mill-1").await.1["readings_total"]
        .as_u64()
        .unwrap();
    assert!(sim.set_plc_up("mill-1", true));
    eventually(30, "mill-1 reconnects and data resumes", || async {
        let (_, b) = get(addr, "/api/assets/mill-1").await;
        (b["source"]["connected"] == true && b["readings_total"].as_u64().unwrap() > before + 5)
            .then_some(())
    })
    .await;

    sim.stop().await;
    let lake = platform.lake.clone();
    platform.stop().await;

    // Silver holds the rows, without duplicates.
    let n = count(
        &lake,
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'mill-1'",
    )
    .await;
    assert!(n > 50, "silver rows: {n}");
    let dups = count(
        &lake,
        "SELECT count(*) FROM (SELECT asset_id, signal, ts FROM silver.readings GROUP BY asset_id, signal, ts HAVING count(*) > 1)",
    )
    .await;
    assert_eq!(dups, 0);
    let bronze = count(
        &lake,
        "SELECT count(*) FROM bronze.raw_events WHERE asset_id = 'mill-1'",
    )
    .await;
    assert!(bronze > 5, "one bronze row per poll: {bronze}");
    let states = count(
        &lake,
        "SELECT count(*) FROM silver.asset_events WHERE kind = 'state'",
    )
    .await;
    assert!(states >= 2, "state changes recorded: {states}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_through_embedded_broker_with_bad_payloads_quarantined() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mq = free_port();
    let plant = plant(
        "plant-m",
        "press-line",
        &[
            ("press-1", "press", mqtt("test/press-line/press-1")),
            ("press-2", "press", mqtt("test/press-line/press-2")),
        ],
    );
    let cfg = config(platform(dir.path(), mq, true), &plant);
    let sc = Scenario::from_config(scenario(mq, 200), &cfg);
    let platform = Platform::start(cfg, Probes::default()).await.unwrap();
    let addr = platform.http_addr;
    let sim = Simulator::start(&sc, 11).await.unwrap();

    eventually(30, "press-1 live over MQTT", || async {
        let (_, b) = get(addr, "/api/assets/press-1").await;
        (signals(&b)["force"]["count_window"]["count"]
            .as_u64()
            .unwrap_or(0)
            >= 3)
            .then_some(())
    })
    .await;

    // A misbehaving publisher on the same broker.
    let mut o = MqttOptions::new("bad-publisher", "127.0.0.1", mq);
    o.set_keep_alive(std::time::Duration::from_secs(5));
    let (c, mut el) = AsyncClient::new(o, 64);
    let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let now = chrono::Utc::now().timestamp_millis();
    let t = "test/press-line/press-2";
    for (topic, body) in [
        (t, "{\"state\": 2, \"press\": {\"force_kn\": 12".to_string()),
        (
            t,
            format!("{{\"ts\": {now}, \"press\": {{\"force_kn\": \"heavy\"}}}}"),
        ),
        (
            t,
            format!(
                "{{\"ts\": {}, \"hydraulics\": {{\"oil_temp\": 999.0}}}}",
                now + 1
            ),
        ),
        (t, format!("{{\"ts\": {}, \"coolant_level\": 3}}", now + 2)),
        ("test/unknown/robot-9", "{\"x\": 1}".to_string()),
        (t, "[1, 2, 3]".to_string()),
    ] {
        c.publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }

    let lake = platform.lake.clone();
    let expected = [
        "malformed_payload",
        "wrong_type",
        "out_of_range",
        "unknown_signal",
        "unknown_asset",
    ];
    eventually(30, "every bad payload quarantined with its reason", || {
        let lake = lake.clone();
        async move {
            let b = query(&lake, "SELECT DISTINCT expectation FROM silver.quarantine").await;
            let got = strings(&b, 0);
            expected
                .iter()
                .all(|e| got.iter().any(|g| g == e))
                .then_some(())
        }
    })
    .await;
    // Reasons say what is wrong.
    let b = query(
        &lake,
        "SELECT reason, signal, payload FROM silver.quarantine WHERE expectation = 'out_of_range'",
    )
    .await;
    let reason = strings(&b, 0).remove(0);
    assert!(
        reason.contains("999") && reason.contains("oil_temp"),
        "{reason}"
    );
    // Bronze keeps the unparseable messages with parse_error.
    let parse_errors = count(
        &lake,
        "SELECT count(*) FROM bronze.raw_events WHERE parse_error IS NOT NULL",
    )
    .await;
    assert!(
        parse_errors >= 3,
        "malformed, non-object and unknown-topic messages: {parse_errors}"
    );
    let unassigned = count(
        &lake,
        "SELECT count(*) FROM bronze.raw_events WHERE plant = 'unassigned'",
    )
    .await;
    assert!(unassigned >= 1);

    // Good data keeps flowing for both machines, and a good value in a bad message got through.
    let r0 = get(addr, "/api/assets/press-2").await.1["readings_total"]
        .as_u64()
        .unwrap();
    eventually(20, "press-2 keeps receiving good data", || async {
        (get(addr, "/api/assets/press-2").await.1["readings_total"]
            .as_u64()
            .unwrap()
            > r0 + 10)
            .then_some(())
    })
    .await;
    let (_, h) = get(addr, "/api/health").await;
    assert!(h["ingest"]["quarantined"].as_u64().unwrap() >= 6, "{h}");
    assert_eq!(h["sources"]["connected"], 2);

    // Back-pressure and losses are visible in Prometheus metrics.
    let m = metrics_text(addr).await.expect("GET /metrics");
    for needle in [
        "ironlake_ingest_received_total ",
        "ironlake_journal_written_bytes_total ",
        "ironlake_ingest_readings_total ",
        "ironlake_ingest_duplicates_total ",
        "ironlake_ingest_quarantined_total{reason=\"wrong_type\"} 1",
        "ironlake_ingest_quarantined_total{reason=\"unknown_asset\"} 1",
        "ironlake_journal_pending_bytes{shard=\"0\"}",
        "ironlake_journal_age_seconds{shard=\"0\"}",
        "ironlake_ingest_queue_depth{shard=",
        "ironlake_ingest_ack_latency_seconds_bucket",
        "ironlake_commit_latency_seconds_bucket{table=\"silver.readings\"",
        "ironlake_table_rows_committed_total{table=\"silver.readings\"}",
        "ironlake_table_pending_rows{table=\"bronze.raw_events\"}",
        "ironlake_twin_mailbox_depth{stat=\"max\"}",
        "ironlake_sources{connected=\"true\",protocol=\"mqtt\"} 2",
        "ironlake_connector_reconnects_total{protocol=\"mqtt\"}",
        "ironlake_readings_lost_total 0",
        "ironlake_sql_running 0",
    ] {
        assert!(m.contains(needle), "/metrics lacks `{needle}`:\n{m}");
    }

    drop(c);
    pump.abort();
    sim.stop().await;
    platform.stop().await;
    let dups = count(
        &lake,
        "SELECT count(*) FROM (SELECT asset_id, signal, ts FROM silver.readings GROUP BY asset_id, signal, ts HAVING count(*) > 1)",
    )
    .await;
    assert_eq!(dups, 0);
    assert!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'press-1'"
        )
        .await
            > 20
    );
}

/// A thousand MQTT machines with `mqtt.subscribe = []`: every machine's topic
/// is subscribed (the broker granted it) over the default eight connections
/// and shows as connected, and data published on every topic arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_mqtt_machines_are_all_subscribed() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mq = free_port();
    let plant = mqtt_presses("plant-k", "line-k", 1000);
    let mut p = platform(dir.path(), mq, true);
    let mut m = ironlake::connectors::mqtt::MqttConfig::from_platform(&p).unwrap();
    m.subscribe = vec![];
    m.write_to(&mut p);
    let cfg = config(p, &plant);
    let platform = Platform::start(cfg, Probes::default()).await.unwrap();
    let addr = platform.http_addr;
    eventually(30, "all 1000 machines connected", || async {
        let (_, h) = get(addr, "/api/health").await;
        (h["sources"]["connected"].as_u64() == Some(1000)).then_some(())
    })
    .await;
    let mut o = MqttOptions::new("k-pub", "127.0.0.1", mq);
    o.set_keep_alive(std::time::Duration::from_secs(10));
    let (client, mut ev) = AsyncClient::new(o, 100);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    assert_eq!(m.connections, 8, "the default");
    let now = ironlake::time::now_ms();
    for i in 0..1000 {
        client
            .publish(
                format!("plant/m{i}/data"),
                QoS::AtLeastOnce,
                false,
                format!("{{\"ts\": {now}, \"state\": 2}}"),
            )
            .await
            .unwrap();
    }
    for id in ["m0", "m999"] {
        eventually(20, "data on the first and the last topic", || async move {
            let (_, b) = get(addr, &format!("/api/assets/{id}")).await;
            (b["state"] == "RUNNING").then_some(())
        })
        .await;
    }
    wait_count(
        &platform.lake,
        30,
        "a reading from every machine in silver",
        "SELECT count(DISTINCT asset_id) FROM silver.readings WHERE signal = 'state'",
        1000,
    )
    .await;
    platform.stop().await;
}
