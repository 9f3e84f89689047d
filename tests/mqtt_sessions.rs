//! ironlake shares its MQTT subscriptions over `mqtt.connections` persistent
//! sessions. Changing that number between runs must lose nothing: messages
//! a broker queued for a session that is no longer used are taken, and that
//! session is then ended, so the broker stops queueing for it. A filter
//! removed from the config is unsubscribed from the session that kept it.

mod common;

use std::time::Duration;

use common::*;
use ironlake::connectors::mqtt::{plan, MqttConfig};
use ironlake::platform::{Platform, Probes};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

const MACHINES: usize = 8;
const PER_MACHINE: i64 = 5;

fn topics() -> Vec<String> {
    (0..MACHINES).map(|i| format!("plant/m{i}/data")).collect()
}

fn cfg(dir: &std::path::Path, port: u16, connections: usize) -> ironlake::platform::Config {
    cfg_with(dir, port, connections, vec![])
}

fn cfg_with(
    dir: &std::path::Path,
    port: u16,
    connections: usize,
    subscribe: Vec<String>,
) -> ironlake::platform::Config {
    let plant = mqtt_presses("plant-s", "line-s", MACHINES);
    let mut p = platform(dir, port, false);
    let mut m = MqttConfig::from_platform(&p).unwrap();
    m.subscribe = subscribe;
    m.connections = connections;
    m.client_id = "ironlake-sessions".into();
    m.write_to(&mut p);
    config(p, &plant)
}

/// Wait until every machine's topic is subscribed.
async fn all_connected(addr: std::net::SocketAddr) {
    eventually(30, "every machine subscribed", || async {
        let (_, h) = get(addr, "/api/health").await;
        (h["sources"]["connected"].as_u64() == Some(MACHINES as u64)).then_some(())
    })
    .await;
}

/// Publish `PER_MACHINE` QoS 1 messages per machine and wait for every PUBACK.
async fn publish_all(port: u16, t0: i64) {
    let mut o = MqttOptions::new("s-pub", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut ev) = AsyncClient::new(o, 256);
    let total = MACHINES * PER_MACHINE as usize;
    for (i, t) in topics().iter().enumerate() {
        for k in 0..PER_MACHINE {
            let ts = t0 + i as i64 * 1000 + k * 10;
            client
                .publish(
                    t.clone(),
                    QoS::AtLeastOnce,
                    false,
                    format!("{{\"ts\": {ts}, \"state\": {}}}", 1 + k % 2),
                )
                .await
                .unwrap();
        }
    }
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while acked < total {
            if let Event::Incoming(Packet::PubAck(_)) = ev.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("the broker acknowledged every message");
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !matches!(
            ev.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
}

/// Whether the broker still holds a session under `client_id` (connects
/// with `clean_session = false`, then ends the probe's own session).
async fn session_present(port: u16, client_id: &str) -> bool {
    let connect = |clean: bool| {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(clean);
        AsyncClient::new(o, 8)
    };
    let (client, mut ev) = connect(false);
    let present = loop {
        if let Event::Incoming(Packet::ConnAck(a)) = ev.poll().await.unwrap() {
            break a.session_present;
        }
    };
    let _ = client.disconnect().await;
    while !matches!(
        ev.poll().await,
        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
    ) {}
    // The probe made a session if there was none: end it.
    let (client, mut ev) = connect(true);
    while !matches!(
        ev.poll().await,
        Ok(Event::Incoming(Packet::ConnAck(_))) | Err(_)
    ) {}
    let _ = client.disconnect().await;
    while !matches!(
        ev.poll().await,
        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
    ) {}
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fewer_connections_after_a_restart_lose_nothing_queued() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let Some((mut broker, port)) = mosquitto_ready(dir.path()).await else {
        return;
    };
    let lake_dir = dir.path().join("lake");
    // The machines' topics really are spread over several of the 4 sessions.
    let parts = plan::partition(&topics(), 4);
    let used: Vec<usize> = (0..4).filter(|&k| !parts[k].is_empty()).collect();
    assert!(used.len() >= 2 && used.iter().any(|&k| k > 0), "{parts:?}");

    // First run: 4 connections subscribe; the broker keeps their sessions.
    let first = Platform::start(cfg(&lake_dir, port, 4), Probes::default())
        .await
        .unwrap();
    let addr = first.http_addr;
    all_connected(addr).await;
    first.stop().await;

    // While ironlake is down, the machines publish: Mosquitto queues each
    // message under the session whose subscription it matches.
    let t0 = ironlake::time::now_ms() - 60_000;
    publish_all(port, t0).await;

    // Second run with one connection: its own session holds only some of
    // the topics; the rest wait in sessions 1..3.
    let second = Platform::start(cfg(&lake_dir, port, 1), Probes::default())
        .await
        .unwrap();
    let lake = second.lake.clone();
    let want = MACHINES as i64 * PER_MACHINE;
    let states = "SELECT count(*) FROM silver.readings WHERE signal = 'state'";
    wait_count(&lake, 60, "every queued message in silver", states, want).await;
    // Published after the restart, to the one session left.
    let addr = second.http_addr;
    publish_all(port, t0 + 30_000).await;
    wait_count(&lake, 30, "new messages arrive too", states, 2 * want).await;
    let (_, h) = get(addr, "/api/health").await;
    assert_eq!(h["sources"]["connected"].as_u64(), Some(MACHINES as u64));
    // A retired session is ended once it has been quiet for 2 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    second.stop().await;

    // Exactly once, per machine.
    let distinct = count(
        &lake,
        "SELECT count(*) FROM (SELECT DISTINCT asset_id, ts FROM silver.readings WHERE signal = 'state')",
    )
    .await;
    let rows = count(&lake, states).await;
    assert_eq!((rows, distinct), (2 * want, 2 * want));
    let per_machine = count(
        &lake,
        "SELECT count(DISTINCT asset_id) FROM silver.readings WHERE signal = 'state'",
    )
    .await;
    assert_eq!(per_machine, MACHINES as i64);

    // The unused sessions are gone from the broker; the one in use stays.
    for k in 1..4 {
        let id = plan::client_id("ironlake-sessions", k);
        assert!(
            !session_present(port, &id).await,
            "session {id} was not ended"
        );
    }
    assert!(session_present(port, "ironlake-sessions").await);
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filter_removed_from_the_config_is_unsubscribed() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let Some((mut broker, port)) = mosquitto_ready(dir.path()).await else {
        return;
    };
    let lake_dir = dir.path().join("lake");
    let filters = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // First run: the machines' filter and one more.
    let cfg1 = cfg_with(&lake_dir, port, 1, filters(&["plant/#", "extra/#"]));
    let first = Platform::start(cfg1, Probes::default()).await.unwrap();
    let addr = first.http_addr;
    all_connected(addr).await;
    first.stop().await;

    // Second run without `extra/#`.
    let cfg2 = cfg_with(&lake_dir, port, 1, filters(&["plant/#"]));
    let second = Platform::start(cfg2, Probes::default()).await.unwrap();
    let lake = second.lake.clone();
    let states = "SELECT count(*) FROM silver.readings WHERE signal = 'state'";
    let want = MACHINES as i64 * PER_MACHINE;
    publish_all(port, ironlake::time::now_ms() - 60_000).await;
    wait_count(&lake, 30, "the machines' messages", states, want).await;
    // Nothing subscribes `extra/#` any more: the broker drops this message.
    let mut o = MqttOptions::new("s-extra", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut ev) = AsyncClient::new(o, 8);
    client
        .publish("extra/x", QoS::AtLeastOnce, false, "{\"ts\": 1}")
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = ev.poll().await.unwrap() {
            break;
        }
    }
    // Published after it to the same session: once these are in, the
    // message on `extra/x` would have been too.
    publish_all(port, ironlake::time::now_ms() - 30_000).await;
    wait_count(&lake, 30, "the messages after it", states, 2 * want).await;
    second.flush().await.unwrap();
    let unknown = count(
        &lake,
        "SELECT count(*) FROM silver.quarantine WHERE expectation = 'unknown_asset'",
    )
    .await;
    assert_eq!(unknown, 0, "a message on the removed filter still arrived");
    second.stop().await;
    broker.kill();
}
