//! Sensor firmware updates: payloads that gain fields. A twin type with
//! `extra_signals = "add"` turns each new numeric or boolean field into a
//! signal of the twin (named after the field) whose readings land in
//! silver like the declared ones, over MQTT and from landing-folder files,
//! up to `max_extra_signals`; beyond it, or with text values, the field is
//! quarantined with the reason. The added signal survives a restart of
//! the platform (its checkpoint). A twin type without the key keeps
//! quarantining new fields as `unknown_signal`.

mod common;

use std::sync::Arc;

use common::*;
use ironlake::assets::TwinType;
use ironlake::platform::{Config, Platform, Probes};
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// The built-in press type, under another kind, taking up to 2 extra signals.
fn open_press() -> TwinType {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/twins/press.toml"))
        .unwrap()
        .replace(
            "kind = \"press\"",
            "kind = \"open_press\"\nextra_signals = \"add\"\nmax_extra_signals = 2",
        );
    TwinType::from_toml(&text, "open_press.toml").unwrap()
}

async fn start(lake: &std::path::Path, mq: u16, landing: &std::path::Path) -> Platform {
    let mut p = platform(lake, mq, true);
    let t: toml::Table = toml::from_str(&format!(
        "[[files.sources]]\nname = \"hist\"\npath = \"{}\"\nlayout = \"long\"\nasset = \"machine\"\nsignal = \"signal\"\nvalue = \"value\"\nts = \"ts\"\nsettle_ms = 200\npoll_ms = 100\n",
        landing.display()
    ))
    .unwrap();
    p.connectors
        .insert("files".into(), t.get("files").cloned().unwrap());
    let plant_toml = plant(
        "plant-f",
        "line-f",
        &[
            ("open-1", "open_press", mqtt("test/open-1")),
            ("closed-1", "press", mqtt("test/closed-1")),
        ],
    );
    let pf = ironlake::config::parse_toml(&plant_toml, "test-plant.toml").unwrap();
    let mut twins = Config::embedded_twin_types().unwrap();
    twins.insert("open_press".into(), Arc::new(open_press()));
    let cfg = Config::from_parts(p, twins, vec![("test-plant.toml".into(), pf)]).unwrap();
    Platform::start(cfg, Probes::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_payload_fields_become_signals_when_the_twin_type_allows_it() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    let mq = free_port();
    let platform = start(&lake_dir, mq, &landing).await;
    let addr = platform.http_addr;
    let lake = platform.lake.clone();

    let mut o = MqttOptions::new("firmware-test", "127.0.0.1", mq);
    o.set_keep_alive(std::time::Duration::from_secs(5));
    let (c, mut el) = AsyncClient::new(o, 64);
    let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let now = ironlake::time::now_ms();
    // Until the platform's subscription is up, a message may find no
    // subscriber: send the first one until the twin has it (duplicates of
    // it are dropped by the exact dedup).
    let first = format!(
        "{{\"ts\": {}, \"press\": {{\"force_kn\": 100}}}}",
        now - 3000
    );
    let cref = &c;
    eventually(30, "the platform subscribed", || {
        let first = first.clone();
        async move {
            cref.publish("test/open-1", QoS::AtLeastOnce, false, first)
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let (_, v) = get(addr, "/api/assets/open-1").await;
            (signals(&v).get("force").and_then(|x| x["value"].as_f64()) == Some(100.0))
                .then_some(())
        }
    })
    .await;
    // Before the update: the declared fields only. After: a new number, a
    // new boolean, a text field, and a third new number (over the limit of 2).
    for (i, body) in [
        first.clone(),
        format!(
            "{{\"ts\": {}, \"press\": {{\"force_kn\": 101}}, \"coolant\": {{\"level\": 42.5}}, \"door_open\": false, \"firmware\": \"2.1.0\"}}",
            now - 2000
        ),
        format!(
            "{{\"ts\": {}, \"press\": {{\"force_kn\": 102}}, \"coolant\": {{\"level\": 41.0}}, \"door_open\": true, \"vib_rms\": 0.7}}",
            now - 1000
        ),
    ]
    .into_iter()
    .enumerate()
    {
        c.publish("test/open-1", QoS::AtLeastOnce, false, body.clone())
            .await
            .unwrap();
        // The same payloads to a press without extra signals.
        if i > 0 {
            c.publish("test/closed-1", QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
        }
    }

    wait_count(
        &lake,
        30,
        "the new fields' readings in silver",
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'open-1' AND signal IN ('coolant_level', 'door_open')",
        4,
    )
    .await;
    let b = query(
        &lake,
        "SELECT signal, value FROM silver.readings WHERE asset_id = 'open-1' AND signal = 'coolant_level' ORDER BY ts",
    )
    .await;
    assert_eq!(strings(&b, 0), vec!["coolant_level", "coolant_level"]);
    // The twin lists them, with their newest values.
    let v = eventually(30, "the twin shows the added signals", || async move {
        let (_, v) = get(addr, "/api/assets/open-1").await;
        let s = signals(&v);
        (s.get("coolant_level").and_then(|x| x["value"].as_f64()) == Some(41.0)
            && s.get("door_open").and_then(|x| x["value"].as_f64()) == Some(1.0))
        .then_some(v)
    })
    .await;
    assert_eq!(signals(&v)["force"]["value"].as_f64(), Some(102.0));
    // History works for an added signal.
    let (code, h) = get(
        addr,
        "/api/assets/open-1/history?signal=coolant_level&from=now-1h",
    )
    .await;
    assert_eq!(code, 200, "{h}");
    // Text, and a third new field beyond max_extra_signals: quarantined with why.
    wait_count(
        &lake,
        30,
        "the text field and the field over the limit quarantined",
        "SELECT count(*) FROM silver.quarantine WHERE asset_id = 'open-1' AND expectation = 'unknown_signal'",
        2,
    )
    .await;
    let q = query(
        &lake,
        "SELECT signal, reason FROM silver.quarantine WHERE asset_id = 'open-1' ORDER BY signal",
    )
    .await;
    let (sigs, reasons) = (strings(&q, 0), strings(&q, 1));
    assert_eq!(sigs, vec!["firmware", "vib_rms"], "{reasons:?}");
    assert!(reasons[0].contains("number or boolean"), "{}", reasons[0]);
    assert!(reasons[1].contains("max_extra_signals"), "{}", reasons[1]);
    // The press without the key: every new field quarantined, nothing added.
    wait_count(
        &lake,
        30,
        "the closed press quarantines the new fields",
        "SELECT count(*) FROM silver.quarantine WHERE asset_id = 'closed-1' AND expectation = 'unknown_signal'",
        6,
    )
    .await;
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'closed-1' AND signal NOT IN ('force')"
        )
        .await,
        0
    );

    // A landing-folder file with the added signal and the declared ones.
    let t0 = now - 10_000;
    std::fs::write(
        landing.join("backfill.jsonl"),
        format!(
            "{{\"machine\":\"open-1\",\"signal\":\"coolant_level\",\"ts\":{t0},\"value\":40.0}}\n\
             {{\"machine\":\"open-1\",\"signal\":\"force\",\"ts\":{t0},\"value\":99.0}}\n"
        ),
    )
    .unwrap();
    wait_count(
        &lake,
        30,
        "the file's added-signal reading in silver",
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'open-1' AND signal = 'coolant_level'",
        3,
    )
    .await;

    // Restart: the added signal is back on the twin from its checkpoint.
    c.disconnect().await.ok();
    pump.abort();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    platform.stop().await;
    let platform = start(&lake_dir, free_port(), &landing).await;
    let addr = platform.http_addr;
    let (_, v) = get(addr, "/api/assets/open-1").await;
    assert_eq!(
        signals(&v)
            .get("coolant_level")
            .and_then(|x| x["value"].as_f64()),
        Some(41.0),
        "{v}"
    );
    platform.stop().await;
}
