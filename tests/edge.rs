//! The edge gateway end to end: simulated Modbus PLCs read by `ironlake
//! edge`, published to a real broker (Mosquitto) and taken by the
//! platform's MQTT connector. The broker is cut while the PLCs keep
//! producing, the gateway is restarted once in the middle of the outage,
//! the broker comes back: every reading the gateway buffered is in silver
//! exactly once.

mod common;

use std::time::Duration;

use common::*;
use ironlake::edge::{Edge, EdgeConfig};
use ironlake::platform::{Platform, Probes};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buffered_through_a_broker_outage_and_a_gateway_restart_every_reading_once() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = mosquitto() else { return };
    let (broker, mq_port) = mosquitto_up(&bin, dir.path());
    wait_port(mq_port).await;
    let mut broker = Some(broker);

    // The gateway's view: two presses on Modbus PLCs.
    let (plc1, plc2) = (free_port(), free_port());
    let edge_plant = plant(
        "plant-e",
        "line-e",
        &[
            ("press-e1", "press", modbus(plc1, 50)),
            ("press-e2", "press", modbus(plc2, 50)),
        ],
    );
    let mut ep = platform(&dir.path().join("edge-lake"), free_port(), false);
    ep.connectors.remove("mqtt");
    let buffer_dir = dir.path().join("edge-buffer");
    let edge_toml: toml::Value = toml::from_str(&format!(
        "buffer_dir = \"{}\"\nbatch = 64\n[uplink]\nprotocol = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {mq_port}\nclient_id = \"edge-test\"\ntopic = \"edge/{{plant}}/{{asset}}\"\n",
        buffer_dir.display()
    ))
    .unwrap();
    let edge_cfg = config(ep, &edge_plant);
    let edge_section = EdgeConfig::from_section(Some(&edge_toml), "test-edge.toml").unwrap();

    // The platform's view: the same presses over MQTT.
    let plat_plant = plant(
        "plant-e",
        "line-e",
        &[
            ("press-e1", "press", mqtt("edge/plant-e/press-e1")),
            ("press-e2", "press", mqtt("edge/plant-e/press-e2")),
        ],
    );
    let mut pp = platform(&dir.path().join("lake"), mq_port, false);
    let mut m = ironlake::connectors::mqtt::MqttConfig::from_platform(&pp).unwrap();
    m.subscribe = vec!["edge/#".into()];
    m.client_id = "ironlake-edge-test".into();
    m.write_to(&mut pp);
    let platform = Platform::start(config(pp, &plat_plant), Probes::default())
        .await
        .unwrap();
    let lake = platform.lake.clone();

    let sim = ironlake::sim::Simulator::start(
        &ironlake::sim::Scenario::from_config(scenario(free_port(), 50), &edge_cfg),
        3,
    )
    .await
    .unwrap();
    let gw = Edge::start(edge_cfg.clone(), edge_section.clone())
        .await
        .unwrap();
    wait_count(
        &lake,
        60,
        "readings through the gateway",
        "SELECT count(*) FROM silver.readings",
        50,
    )
    .await;

    // The broker goes away; the PLCs keep producing into the buffer.
    broker.take().unwrap().terminate();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        gw.pending_bytes() > 0,
        "the gateway buffers while the uplink is down"
    );
    // Counted once the gateway has stopped: a poll may land in the buffer
    // until then.
    let stats = gw.stats.clone();
    gw.stop().await;
    let first = stats.readings.load(std::sync::atomic::Ordering::Relaxed);
    // Restarted in the middle of the outage: it finds its buffer.
    let gw = Edge::start(edge_cfg.clone(), edge_section.clone())
        .await
        .unwrap();
    assert!(gw.pending_bytes() > 0, "the buffer survived the restart");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The broker is back.
    let _broker = mosquitto_on(&bin, dir.path(), mq_port);
    wait_port(mq_port).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sim.stop().await;
    let gw_ref = &gw;
    eventually(60, "the gateway drained its buffer", || async move {
        (gw_ref.pending_bytes() == 0).then_some(())
    })
    .await;
    let stats = gw.stats.clone();
    gw.stop().await;
    let second = stats.readings.load(std::sync::atomic::Ordering::Relaxed);
    let published = stats.published.load(std::sync::atomic::Ordering::Relaxed);
    assert!(published > 0);
    let m = stats.prometheus();
    assert!(m.contains("ironlake_edge_buffered_total"), "{m}");
    let total = (first + second) as i64;
    wait_count(
        &lake,
        60,
        "every buffered reading in silver",
        "SELECT count(*) FROM silver.readings",
        total,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.readings").await,
        total,
        "every reading once"
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM (SELECT DISTINCT asset_id, signal, ts FROM silver.readings)"
        )
        .await,
        total
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.quarantine").await,
        0
    );
    platform.stop().await;
}

/// Protocol conversion: the gateway reads a mill over OPC UA (the
/// simulator's cell server) and a press over Modbus and publishes both in
/// one JSON layout; the platform takes them from its MQTT broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_reads_opcua_and_modbus_into_one_mqtt_layout() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mq = free_port();
    let (cell, plc) = (free_port(), free_port());
    let edge_plant = plant(
        "plant-g",
        "line-g",
        &[
            (
                "mill-g1",
                "cnc_mill",
                format!("{{ protocol = \"opcua\", endpoint = \"opc.tcp://127.0.0.1:{cell}/\", node = \"/Objects/Machines/mill-g1\" }}"),
            ),
            ("press-g1", "press", modbus(plc, 100)),
        ],
    );
    let mut ep = platform(&dir.path().join("edge-lake"), free_port(), false);
    ep.connectors.remove("mqtt");
    let edge_toml: toml::Value = toml::from_str(&format!(
        "buffer_dir = \"{}\"\n[uplink]\nprotocol = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {mq}\nclient_id = \"edge-g\"\ntopic = \"edge/{{plant}}/{{asset}}\"\n",
        dir.path().join("edge-buffer").display()
    ))
    .unwrap();
    let edge_cfg = config(ep, &edge_plant);
    let edge_section = EdgeConfig::from_section(Some(&edge_toml), "test-edge.toml").unwrap();

    let plat_plant = plant(
        "plant-g",
        "line-g",
        &[
            ("mill-g1", "cnc_mill", mqtt("edge/plant-g/mill-g1")),
            ("press-g1", "press", mqtt("edge/plant-g/press-g1")),
        ],
    );
    let mut pp = platform(&dir.path().join("lake"), mq, true);
    let mut m = ironlake::connectors::mqtt::MqttConfig::from_platform(&pp).unwrap();
    m.subscribe = vec!["edge/#".into()];
    m.write_to(&mut pp);
    let platform = Platform::start(config(pp, &plat_plant), Probes::default())
        .await
        .unwrap();
    let lake = platform.lake.clone();
    let sim = ironlake::sim::Simulator::start(
        &ironlake::sim::Scenario::from_config(scenario(free_port(), 100), &edge_cfg),
        5,
    )
    .await
    .unwrap();
    let gw = Edge::start(edge_cfg, edge_section).await.unwrap();
    for (asset, n) in [("mill-g1", 9), ("press-g1", 3)] {
        wait_count(
            &lake,
            60,
            &format!("{asset}'s signals through the gateway"),
            &format!("SELECT count(*) FROM (SELECT DISTINCT signal FROM silver.readings WHERE asset_id = '{asset}')"),
            n,
        )
        .await;
    }
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.quarantine").await,
        0,
        "one layout the platform reads without rejects"
    );
    gw.stop().await;
    sim.stop().await;
    platform.stop().await;
}
