//! Replay for commissioning: a recording (bronze of one platform, fed by a
//! simulated Modbus PLC and an MQTT publisher) played back as live traffic
//! into a second platform: the MQTT messages arrive again one for one (with
//! their time moved to now), the Modbus PLC answers with the recorded
//! register values.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use ironlake::platform::{Platform, Probes};
use ironlake::sim::replay::{replay, ReplayOpts};

async fn values(lake: &ironlake::lake::Lakehouse, asset: &str) -> BTreeSet<String> {
    let b = query(
        lake,
        &format!("SELECT DISTINCT CAST(value AS VARCHAR) FROM silver.readings WHERE asset_id = '{asset}' AND signal = 'force'"),
    )
    .await;
    strings(&b, 0).into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorded_mqtt_and_modbus_traffic_plays_back_into_another_platform() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let plc = free_port();
    let plant_toml = plant(
        "plant-r",
        "line-r",
        &[
            ("rm1", "press", modbus(plc, 100)),
            ("rm2", "press", mqtt("test/rm2")),
        ],
    );
    // The recording.
    let b1 = free_port();
    let cfg1 = config(platform(&dir.path().join("lake1"), b1, true), &plant_toml);
    let p1 = Platform::start(cfg1.clone(), Probes::default())
        .await
        .unwrap();
    let sim = ironlake::sim::Simulator::start(
        &ironlake::sim::Scenario::from_config(scenario(b1, 100), &cfg1),
        4,
    )
    .await
    .unwrap();
    let lake1 = p1.lake.clone();
    for a in ["rm1", "rm2"] {
        wait_count(
            &lake1,
            60,
            "recorded readings",
            &format!("SELECT count(*) FROM silver.readings WHERE asset_id = '{a}'"),
            200,
        )
        .await;
    }
    sim.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    p1.stop().await;
    let mqtt_rows = count(
        &lake1,
        "SELECT count(*) FROM bronze.raw_events WHERE source LIKE 'mqtt:%' AND parse_error IS NULL",
    )
    .await;
    let modbus_rows = count(&lake1, "SELECT count(*) FROM bronze.raw_events WHERE source LIKE 'modbus:%' AND parse_error IS NULL").await;
    let rm2_recorded = count(
        &lake1,
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'rm2'",
    )
    .await;
    assert!(mqtt_rows > 0 && modbus_rows > 0);

    // The second platform, with the same machines on its own broker.
    let b2 = free_port();
    let cfg2 = config(platform(&dir.path().join("lake2"), b2, true), &plant_toml);
    let p2 = Platform::start(cfg2.clone(), Probes::default())
        .await
        .unwrap();
    let now = ironlake::time::now_ms();
    // Half speed: the second platform's Modbus poller finds the replayed PLC
    // (it retries with back-off while nothing listens yet).
    let run = tokio::spawn(replay(
        cfg2.clone(),
        lake1.clone(),
        ReplayOpts {
            table: "bronze.raw_events".into(),
            from_ms: now - 3_600_000,
            to_ms: now + 1000,
            speed: 0.5,
            shift_time: true,
        },
        tokio_util::sync::CancellationToken::new(),
    ));
    let lake2 = p2.lake.clone();
    wait_count(
        &lake2,
        60,
        "the replayed PLC polled",
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'rm1'",
        1,
    )
    .await;
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.mqtt as i64, mqtt_rows, "{report:?}");
    assert_eq!(report.modbus as i64, modbus_rows, "{report:?}");
    wait_count(
        &lake2,
        60,
        "the replayed MQTT readings",
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'rm2'",
        rm2_recorded,
    )
    .await;
    // Moved to now: nothing older than the replay's start.
    assert_eq!(
        count(
            &lake2,
            &format!(
                "SELECT count(*) FROM silver.readings WHERE asset_id = 'rm2' AND ts < {}",
                ironlake::time::timestamp_literal(now - 5_000)
            )
        )
        .await,
        0
    );
    // The Modbus PLC answered with recorded values only.
    let replayed = values(&lake2, "rm1").await;
    assert!(!replayed.is_empty(), "the replayed PLC was polled");
    let recorded = values(&lake1, "rm1").await;
    assert!(
        replayed.is_subset(&recorded),
        "{replayed:?} not in {recorded:?}"
    );
    p2.stop().await;
}
