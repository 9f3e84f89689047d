//! Crashes lose nothing and double nothing: `ironlake run` is killed with
//! SIGKILL at random moments while data flows, and restarted; at the end
//! every reading a broker or PLC handed over is in `silver.readings` exactly
//! once (and in bronze), and every twin has applied every reading exactly
//! once (its checkpointed reading count equals its silver rows).
//!
//! MQTT goes through an external Mosquitto (persistence on, unlimited
//! queues for offline sessions); Modbus polls come from a simulated PLC.
//! Both run on loopback.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

const SIGNALS: [&str; 3] = ["a", "b", "c"];

/// A twin type of three float signals.
fn write_twin(dir: &Path) {
    let mut t = String::from("kind = \"gauge3\"\n");
    for (i, s) in SIGNALS.iter().enumerate() {
        t += &format!(
            "[[signals]]\nname = \"{s}\"\ntype = \"float\"\nmin = -1e9\nmax = 1e9\nmqtt = {{ field = \"{s}\" }}\nmodbus = {{ table = \"holding\", address = {}, type = \"u16\" }}\n",
            i
        );
    }
    std::fs::create_dir_all(dir.join("twins")).unwrap();
    std::fs::write(dir.join("twins/gauge3.toml"), t).unwrap();
}

/// A platform file for `ironlake run` (only what differs from the defaults).
fn write_platform(dir: &Path, lake: &Path, mqtt_port: u16, machines: &str) {
    let text = format!(
        "plants = [\"plant.toml\"]\ntwins = \"twins\"\n\
         [lake]\nroot = \"{}\"\nflush_interval_ms = 200\ncompact_interval_s = 0\n\
         [twin]\ncheckpoint_interval_s = 1\n\
         [pipelines]\ninterval_s = 0\n\
         [mqtt]\nport = {mqtt_port}\nclient_id = \"ironlake-crash\"\nsubscribe = []\n\
         [mqtt.embedded]\nenabled = false\n",
        lake.display()
    );
    std::fs::write(dir.join("ironlake.toml"), text).unwrap();
    std::fs::write(
        dir.join("plant.toml"),
        format!("[plant]\nid = \"p\"\n[[areas]]\nid = \"a\"\n[[lines]]\nid = \"l\"\narea = \"a\"\n{machines}"),
    )
    .unwrap();
}

/// `ironlake run` on a free HTTP port, logging into `log`.
fn start(config: &Path, log: &Path) -> (Child, u16) {
    let port = free_port();
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ironlake"))
        .args(["run", "--config"])
        .arg(config)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .env("IRONLAKE_LOG", "warn,ironlake=info")
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("ironlake runs");
    (child, port)
}

fn sigterm(child: &mut Child) {
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// Wait for a child with a deadline.
async fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ironlake did not stop within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exactly once: as many silver rows as distinct keys, and as published.
async fn assert_exactly_once(
    lake: &ironlake::lake::Lakehouse,
    expected: &HashSet<(String, String, i64)>,
) {
    let rows = count(lake, "SELECT count(*) FROM silver.readings").await;
    let distinct = count(
        lake,
        "SELECT count(*) FROM (SELECT DISTINCT asset_id, signal, ts FROM silver.readings)",
    )
    .await;
    assert_eq!(rows, distinct, "no (asset, signal, ts) twice in silver");
    let batches = query(
        lake,
        "SELECT asset_id, signal, CAST(ts AS BIGINT) / 1000 FROM silver.readings",
    )
    .await;
    let mut got = HashSet::new();
    for b in &batches {
        let assets = ironlake::lake::read::string_column(b, 0).unwrap();
        let signals = ironlake::lake::read::string_column(b, 1).unwrap();
        let ts = b
            .column(2)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            got.insert((
                assets.value(i).to_string(),
                signals.value(i).to_string(),
                ts.value(i),
            ));
        }
    }
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "silver differs from what was handed over: {} missing (e.g. {missing:?}), {} extra (e.g. {extra:?})",
        expected.difference(&got).count(),
        got.difference(expected).count()
    );
}

/// Every twin applied every reading once: its last checkpoint's reading
/// count equals its rows in silver.
async fn assert_twins_exact(lake: &ironlake::lake::Lakehouse) {
    let cps = lake.latest_checkpoints(&[]).await.unwrap();
    assert!(!cps.is_empty());
    for (asset, json) in cps {
        let cp: serde_json::Value = serde_json::from_str(&json).unwrap();
        let n = count(
            lake,
            &format!("SELECT count(*) FROM silver.readings WHERE asset_id = '{asset}'"),
        )
        .await;
        assert_eq!(
            cp["readings_total"].as_i64(),
            Some(n),
            "twin {asset}: readings applied vs silver rows"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_through_mosquitto_survives_kill_9() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let Some((mut broker, mq)) = mosquitto_ready(dir.path()).await else {
        return;
    };
    let lake_dir = dir.path().join("lake");
    write_twin(dir.path());
    let machines: String = (0..12)
        .map(|m| format!("[[machines]]\nid = \"g{m}\"\nline = \"l\"\ntype = \"gauge3\"\nsource = {{ protocol = \"mqtt\", topic = \"crash/g{m}\" }}\n"))
        .collect();
    write_platform(dir.path(), &lake_dir, mq, &machines);
    let config = dir.path().join("ironlake.toml");
    let log = dir.path().join("ironlake.log");

    // The first start creates ironlake's persistent session.
    let (mut run, mut port) = start(&config, &log);
    wait_port(port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A QoS 1 publisher: every message the broker acknowledged is "handed over".
    let mut o = MqttOptions::new("crash-publisher", "127.0.0.1", mq);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_inflight(200);
    let (client, mut ev) = AsyncClient::new(o, 1000);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let a2 = acked.clone();
    let pump = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    a2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (CRASH_SEED={seed} to repeat)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let base = ironlake::time::now_ms();
    let mut expected = HashSet::new();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for k in 0..400i64 {
                for m in 0..12 {
                    let ts = base + k * 5;
                    let body = format!("{{\"ts\": {ts}, \"a\": {k}, \"b\": {m}, \"c\": 0.5}}");
                    client
                        .publish(format!("crash/g{m}"), QoS::AtLeastOnce, false, body)
                        .await
                        .unwrap();
                    sent.push((format!("g{m}"), ts));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    // Kill ironlake with SIGKILL at random moments while the data flows.
    let mut kills = 0;
    while !publisher.is_finished() && kills < 5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        run.kill().unwrap();
        run.wait().unwrap();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        let (r, p) = start(&config, &log);
        run = r;
        port = p;
        wait_port(p).await;
    }
    let sent = publisher.await.unwrap();
    eventually(30, "the broker acknowledged every message", || {
        let acked = acked.clone();
        let n = sent.len() as u64;
        async move { (acked.load(std::sync::atomic::Ordering::Relaxed) >= n).then_some(()) }
    })
    .await;
    for (asset, ts) in &sent {
        for s in SIGNALS {
            expected.insert((asset.clone(), s.to_string(), *ts));
        }
    }
    // Let the last run take everything, then stop it the clean way.
    let lake = ironlake::lake::Lakehouse::open(&lake_dir.display().to_string()).unwrap();
    let want = expected.len() as i64;
    eventually(60, "every reading committed", || {
        let lake = lake.clone();
        async move { (count(&lake, "SELECT count(*) FROM silver.readings").await >= want).then_some(()) }
    })
    .await;
    let (_, metrics) = get_text(&format!("127.0.0.1:{port}"), "/metrics").await;
    sigterm(&mut run);
    let status = wait_exit(&mut run, 30).await;
    assert!(status.success(), "a clean stop exits 0: {status}");
    let _ = client.disconnect().await;
    let _ = pump.await;
    broker.kill();

    assert!(kills >= 3, "killed {kills} times");
    assert_exactly_once(&lake, &expected).await;
    // Every message is in bronze (at least once: redeliveries are received messages too).
    let bronze = count(
        &lake,
        "SELECT count(DISTINCT payload) FROM bronze.raw_events",
    )
    .await;
    assert_eq!(bronze, sent.len() as i64, "every message in bronze");
    assert_twins_exact(&lake).await;
    let m = metrics.expect("GET /metrics answers");
    assert!(
        m.lines().any(|l| l == "ironlake_readings_lost_total 0"),
        "no reading lost:\n{m}"
    );
    // A clean stop leaves nothing to replay.
    let j = ironlake::ingest::journal::Journal::open(&lake_dir.join("_journal/shard-0"), 64 << 20)
        .unwrap()
        .0;
    assert_eq!(
        j.pending_bytes(),
        0,
        "the journal is empty after a clean stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modbus_polls_journaled_before_a_kill_are_written_after_it() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    write_twin(dir.path());
    let plc = free_port();
    write_platform(
        dir.path(),
        &lake_dir,
        free_port(),
        &format!("[[machines]]\nid = \"plc1\"\nline = \"l\"\ntype = \"gauge3\"\nsource = {{ protocol = \"modbus\", host = \"127.0.0.1\", port = {plc}, poll_ms = 50 }}\n"),
    );
    // A simulated PLC for the machine.
    let cfg = ironlake::platform::Config::load(&dir.path().join("ironlake.toml")).unwrap();
    let sim = ironlake::sim::Simulator::start(
        &ironlake::sim::Scenario::from_config(scenario(free_port(), 50), &cfg),
        1,
    )
    .await
    .unwrap();
    let config = dir.path().join("ironlake.toml");
    let log = dir.path().join("ironlake.log");
    let (mut run, port) = start(&config, &log);
    wait_port(port).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.kill().unwrap();
    run.wait().unwrap();

    // What the journal holds now (the readings of every poll it took).
    let model = cfg.model.clone();
    let mut journaled = HashSet::new();
    let jdir = lake_dir.join("_journal");
    for e in std::fs::read_dir(&jdir).unwrap().flatten() {
        if !e.file_name().to_string_lossy().starts_with("shard-") {
            continue;
        }
        let (j, _) = ironlake::ingest::journal::Journal::open(&e.path(), 64 << 20).unwrap();
        for r in j.replay(0) {
            let (_, bytes) = r.unwrap();
            let rec = ironlake::ingest::record::decode(&bytes, &model).unwrap();
            for v in rec.decoded.values() {
                if let ironlake::connectors::SignalRef::Known(i) = v.signal {
                    let a = model.asset(rec.asset_id.as_deref().unwrap()).unwrap();
                    journaled.insert((
                        a.id.to_string(),
                        a.twin.signals[i as usize].name.clone(),
                        v.ts_ms,
                    ));
                }
            }
        }
    }
    assert!(
        journaled.len() > 30,
        "polls were journaled: {}",
        journaled.len()
    );
    sim.stop().await;

    // Restart without the PLC: the journal alone brings what it held.
    let (mut run, port) = start(&config, &log);
    wait_port(port).await;
    let lake = ironlake::lake::Lakehouse::open(&lake_dir.display().to_string()).unwrap();
    let want = journaled.len() as i64;
    eventually(30, "the journaled polls are in silver", || {
        let lake = lake.clone();
        async move { (count(&lake, "SELECT count(*) FROM silver.readings").await >= want).then_some(()) }
    })
    .await;
    sigterm(&mut run);
    assert!(wait_exit(&mut run, 30).await.success());
    assert_exactly_once(&lake, &journaled).await;
}

/// GET a text document (e.g. `/metrics`); `None` when unreachable.
async fn get_text(addr: &str, path: &str) -> (u16, Option<String>) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        match agent.get(&url).call() {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().ok()),
            Err(_) => (0, None),
        }
    })
    .await
    .unwrap()
}

/// Readings in a journal stream, resolved against a model.
fn journaled(jdir: &Path, model: &ironlake::assets::AssetModel) -> HashSet<(String, String, i64)> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir(jdir).unwrap().flatten() {
        if !e.file_name().to_string_lossy().starts_with("shard-") {
            continue;
        }
        let (j, _) = ironlake::ingest::journal::Journal::open(&e.path(), 64 << 20).unwrap();
        for r in j.replay(j.trimmed()) {
            let (_, bytes) = r.unwrap();
            let rec = ironlake::ingest::record::decode(&bytes, model).unwrap();
            for v in rec.decoded.values() {
                if let ironlake::connectors::SignalRef::Known(i) = v.signal {
                    let a = model.asset(rec.asset_id.as_deref().unwrap()).unwrap();
                    out.insert((
                        a.id.to_string(),
                        a.twin.signals[i as usize].name.clone(),
                        v.ts_ms,
                    ));
                }
            }
        }
    }
    out
}

/// Keys of every row in silver.
async fn silver_keys(lake: &ironlake::lake::Lakehouse) -> HashSet<(String, String, i64)> {
    let batches = query(
        lake,
        "SELECT asset_id, signal, CAST(ts AS BIGINT) / 1000 FROM silver.readings",
    )
    .await;
    let mut out = HashSet::new();
    for b in &batches {
        let a = ironlake::lake::read::string_column(b, 0).unwrap();
        let s = ironlake::lake::read::string_column(b, 1).unwrap();
        let t = b
            .column(2)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            out.insert((a.value(i).to_string(), s.value(i).to_string(), t.value(i)));
        }
    }
    out
}

/// Stopping while the lake is unreachable ends (bounded), and what could
/// not be committed comes from the journal at the next start, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_during_a_storage_outage_leaves_the_rest_to_the_journal() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let plc = free_port();
    let plant = plant(
        "plant-o",
        "line-o",
        &[("press-o", "press", modbus(plc, 50))],
    );
    let cfg = config(platform(dir.path(), free_port(), false), &plant);
    let sim = ironlake::sim::Simulator::start(
        &ironlake::sim::Scenario::from_config(scenario(free_port(), 50), &cfg),
        2,
    )
    .await
    .unwrap();
    let p = ironlake::platform::Platform::start(cfg.clone(), ironlake::platform::Probes::default())
        .await
        .unwrap();
    let lake = p.lake.clone();
    eventually(30, "readings committed", || {
        let lake = lake.clone();
        async move { (count(&lake, "SELECT count(*) FROM silver.readings").await > 20).then_some(()) }
    })
    .await;
    // The silver table's storage goes away while polls keep coming.
    let table = lake
        .table_path(ironlake::lake::Table::SilverReadings)
        .unwrap();
    let log = table.join("_delta_log");
    std::fs::rename(&log, table.join("_delta_log.away")).unwrap();
    std::fs::write(&log, b"gone").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.stop().await;
    tokio::time::timeout(Duration::from_secs(180), p.stop())
        .await
        .expect("the platform stops even without its storage");
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(table.join("_delta_log.away"), &log).unwrap();

    let mut expected = silver_keys(&lake).await;
    let tail = journaled(&dir.path().join("_journal"), &cfg.model);
    assert!(
        !tail.is_empty(),
        "the journal kept what the lake did not take"
    );
    expected.extend(tail);
    // Restart with the PLC gone: the journal alone brings the rest.
    let p = ironlake::platform::Platform::start(cfg.clone(), ironlake::platform::Probes::default())
        .await
        .unwrap();
    let want = expected.len() as i64;
    eventually(30, "the journal's readings are in silver", || {
        let lake = lake.clone();
        async move { (count(&lake, "SELECT count(*) FROM silver.readings").await >= want).then_some(()) }
    })
    .await;
    p.stop().await;
    assert_exactly_once(&lake, &expected).await;
}
