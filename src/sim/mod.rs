//! Simulator mode: simulated PLCs that speak the real protocols on loopback,
//! for commissioning and the demo. Each machine of the scenario's plants gets
//! physics (shifts, states, parts, degradation) and is served over its own
//! binding: a Modbus TCP server, an OPC UA server per cell (endpoint), or
//! JSON published to MQTT. Faults from the
//! scenario are injected on schedule. Deterministic for a given `--seed`.

pub mod history;
pub mod modbus_server;
pub mod opcua_server;
pub mod physics;
pub mod replay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::assets::AssetModel;
use crate::config::{parse_toml, ConfigError, PlantFile, PlatformFile, EMBEDDED};
use crate::connectors::modbus::{ModbusConnector, ModbusSource};
use crate::connectors::mqtt::MqttConnector;
use crate::connectors::opcua::address::Address;
use crate::connectors::opcua::OpcuaConnector;
use crate::connectors::Connectors;
use modbus_server::Bank;
use physics::{MachineSim, Overrides, ShiftPlan};

/// Kinds of injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The Modbus server goes away (connections closed, port refused).
    PlcDown,
    /// A signal keeps its value.
    StuckSensor,
    /// A signal reports `value` (outside its valid range) once.
    OutOfRange,
    /// An MQTT machine publishes a payload that is not JSON.
    MalformedPayload,
    /// An MQTT machine sends a string where a number belongs.
    WrongType,
    /// An MQTT machine sends a field no signal is bound to.
    UnknownSignal,
    /// The machine fails (degradation jumps to 1).
    Failure,
}

/// One fault of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub machine: String,
    pub kind: FaultKind,
    /// Real seconds after start.
    pub at_s: f64,
    /// How long it lasts (plc_down, stuck_sensor), real seconds.
    #[serde(default)]
    pub duration_s: f64,
    /// Repeat every N real seconds (0 = once).
    #[serde(default)]
    pub every_s: f64,
    pub signal: Option<String>,
    pub value: Option<f64>,
}

/// Where simulated MQTT machines publish.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMqtt {
    pub host: String,
    pub port: u16,
}

/// A scenario file (`simulators/*.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Plant files whose machines are simulated (relative to the scenario).
    pub plants: Vec<String>,
    /// Twin type directory (relative to the scenario).
    pub twins: String,
    /// Real milliseconds between updates.
    #[serde(default = "d_tick")]
    pub tick_ms: u64,
    /// Simulated seconds per real second (shifts and wear run this much faster).
    #[serde(default = "d_scale")]
    pub time_scale: f64,
    pub mqtt: SimMqtt,
    #[serde(default)]
    pub shifts: ShiftPlan,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

fn d_tick() -> u64 {
    1000
}
fn d_scale() -> f64 {
    60.0
}

/// A scenario with its machines resolved.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: ScenarioFile,
    pub model: Arc<AssetModel>,
    /// The machines' bindings, resolved as the platform resolves them.
    pub connectors: Connectors,
}

impl Scenario {
    /// Load a scenario from disk.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        let sf: ScenarioFile = parse_toml(&text, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let twins =
            crate::assets::twin_types(crate::config::twin_type_files(&base.join(&sf.twins))?)?;
        let mut plants = Vec::new();
        for p in &sf.plants {
            let pp = base.join(p);
            let pf = pp.display().to_string();
            let text = std::fs::read_to_string(&pp).map_err(|source| ConfigError::Io {
                file: pf.clone(),
                source,
            })?;
            plants.push((pf.clone(), parse_toml::<PlantFile>(&text, &pf)?));
        }
        Self::build(sf, twins, plants, &file)
    }

    /// The demo scenario compiled into the binary.
    pub fn embedded_demo() -> Result<Self, ConfigError> {
        let file = "embedded:simulators/demo.toml";
        let text = EMBEDDED.get("simulators/demo.toml").unwrap_or_default();
        let sf: ScenarioFile = parse_toml(text, file)?;
        let twins = crate::assets::twin_types(crate::config::embedded_twin_type_files()?)?;
        let mut plants = Vec::new();
        for p in &sf.plants {
            let key = format!("simulators/{p}");
            let text = EMBEDDED.get(&key).ok_or_else(|| ConfigError::Invalid {
                file: file.into(),
                key: "plants".into(),
                message: format!("`{p}` is not in the binary"),
            })?;
            plants.push((key.clone(), parse_toml::<PlantFile>(text, &key)?));
        }
        Self::build(sf, twins, plants, file)
    }

    /// A scenario over a platform's configuration (tests, benchmarks).
    pub fn from_config(sf: ScenarioFile, config: &crate::platform::Config) -> Self {
        Scenario {
            file: sf,
            model: config.model.clone(),
            connectors: config.connectors.clone(),
        }
    }

    fn build(
        sf: ScenarioFile,
        twins: HashMap<String, Arc<crate::assets::TwinType>>,
        plants: Vec<(String, PlantFile)>,
        file: &str,
    ) -> Result<Self, ConfigError> {
        let model = AssetModel::build(twins, plants)?;
        let connectors = Connectors::resolve(&model, &PlatformFile::embedded_default()?, file)?;
        for (i, f) in sf.faults.iter().enumerate() {
            let bad = |m: String| ConfigError::Invalid {
                file: file.into(),
                key: format!("faults[{i}]"),
                message: m,
            };
            let a = model
                .asset(&f.machine)
                .ok_or_else(|| bad(format!("unknown machine `{}`", f.machine)))?;
            if let Some(s) = &f.signal {
                if a.twin.signal(s).is_none() {
                    return Err(bad(format!("machine `{}` has no signal `{s}`", f.machine)));
                }
            }
            let mqtt_only = matches!(
                f.kind,
                FaultKind::MalformedPayload | FaultKind::WrongType | FaultKind::UnknownSignal
            );
            if mqtt_only && a.source.protocol != "mqtt" {
                return Err(bad(format!(
                    "{:?} needs an MQTT machine; `{}` is on {}",
                    f.kind, f.machine, a.source.protocol
                )));
            }
            if f.kind == FaultKind::PlcDown && a.source.protocol != "modbus" {
                return Err(bad(format!(
                    "plc_down needs a Modbus machine; `{}` is on MQTT",
                    f.machine
                )));
            }
            if matches!(
                f.kind,
                FaultKind::StuckSensor | FaultKind::OutOfRange | FaultKind::WrongType
            ) && f.signal.is_none()
            {
                return Err(bad("this fault needs `signal`".into()));
            }
            if f.kind == FaultKind::OutOfRange && f.value.is_none() {
                return Err(bad("out_of_range needs `value`".into()));
            }
        }
        if sf.tick_ms == 0 || sf.time_scale.is_nan() || sf.time_scale <= 0.0 {
            return Err(ConfigError::Invalid {
                file: file.into(),
                key: "tick_ms".into(),
                message: "tick_ms and time_scale must be above 0".into(),
            });
        }
        Ok(Scenario {
            file: sf,
            model: Arc::new(model),
            connectors,
        })
    }
}

/// Handle to a running simulator.
pub struct Simulator {
    stop: CancellationToken,
    task: JoinHandle<()>,
    plc_switches: HashMap<String, watch::Sender<bool>>,
    plc_tasks: Vec<JoinHandle<()>>,
    cells: Vec<Arc<opcua_server::CellServer>>,
}

struct SimMachine {
    idx: usize,
    sim: MachineSim,
    bank: Option<(Arc<RwLock<Bank>>, ModbusSource)>,
    mqtt: Option<SimTopic>,
    /// Cell server and the machine's index on it.
    opcua: Option<(usize, usize)>,
}

/// Browse-path segments of an address the simulator can create (absolute
/// paths from `/Objects`, or relative ones); none for NodeIds.
fn sim_path(a: &Address, absolute_from_objects: bool) -> Option<Vec<String>> {
    match a {
        Address::Path { absolute, segments } if *absolute == absolute_from_objects => {
            let mut v: Vec<String> = segments.iter().map(|s| s.name.clone()).collect();
            if absolute_from_objects {
                if v.first().map(String::as_str) != Some("Objects") {
                    return None;
                }
                v.remove(0);
            }
            Some(v)
        }
        _ => None,
    }
}

/// Start one OPC UA server per endpoint of the scenario's OPC UA machines;
/// returns the servers and, per asset, (server, machine on it).
async fn start_cells(
    sc: &Scenario,
) -> std::io::Result<(
    Vec<Arc<opcua_server::CellServer>>,
    HashMap<usize, (usize, usize)>,
)> {
    let mut cells = Vec::new();
    let mut at = HashMap::new();
    let Some(c) = sc.connectors.get::<OpcuaConnector>() else {
        return Ok((cells, at));
    };
    for plan in c.servers() {
        if plan.machines.is_empty() {
            continue;
        }
        let url = url::Url::parse(&plan.endpoint.url)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", plan.endpoint.url)))?;
        let host = url.host_str().unwrap_or("127.0.0.1").to_string();
        let port = url.port().unwrap_or(4840);
        let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("cannot resolve {host}")))?;
        let mut served = Vec::new();
        for (mi, m) in plan.machines.iter().enumerate() {
            let asset = &sc.model.assets[m.asset as usize];
            let object_path = m
                .node
                .as_ref()
                .and_then(|n| sim_path(n, true))
                .unwrap_or_else(|| vec!["Machines".into(), asset.id.to_string()]);
            let mut signals = Vec::new();
            for s in &m.signals {
                match sim_path(&s.address, false) {
                    Some(p) if !p.is_empty() => signals.push((s.signal as usize, p)),
                    _ => {
                        warn!(machine = %asset.id, signal = %s.name, "the simulator serves relative browse paths only; signal left out")
                    }
                }
            }
            at.insert(m.asset as usize, (cells.len(), mi));
            served.push(opcua_server::ServedMachine {
                asset,
                object_path,
                signals,
            });
        }
        let safe: String = plan
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let pki = std::env::temp_dir().join(format!("ironlake-sim-pki-{safe}-{port}"));
        let cell = opcua_server::CellServer::start(addr, &plan.name, &served, &pki).await?;
        info!(url = %cell.url, machines = served.len(), "simulated OPC UA cell listening");
        cells.push(Arc::new(cell));
    }
    Ok((cells, at))
}

/// Where and how an MQTT machine publishes.
struct SimTopic {
    topic: String,
    fields: Vec<(String, u16)>,
    ts_field: Option<String>,
}

impl Simulator {
    /// Start the scenario. Modbus machines listen on their configured ports;
    /// MQTT machines publish to the scenario's broker.
    pub async fn start(sc: &Scenario, seed: u64) -> std::io::Result<Self> {
        let model = sc.model.clone();
        let mut machines = Vec::new();
        let mut plc_switches = HashMap::new();
        let mut plc_tasks = Vec::new();
        let mut any_mqtt = false;
        let (cells, cell_of) = start_cells(sc).await?;
        for a in &model.assets {
            let sim = MachineSim::new(
                a.twin.clone(),
                seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(a.idx as u64 + 1)),
            );
            let mut m = SimMachine {
                idx: a.idx as usize,
                sim,
                bank: None,
                mqtt: None,
                opcua: cell_of.get(&(a.idx as usize)).copied(),
            };
            let modbus = sc
                .connectors
                .get::<ModbusConnector>()
                .and_then(|c| c.source(a.idx));
            let mqtt = sc
                .connectors
                .get::<MqttConnector>()
                .and_then(|c| Some((c.topic(a.idx)?, c.binding(a.idx)?)));
            match (modbus, mqtt) {
                (Some(src), _) => {
                    let addr: SocketAddr = tokio::net::lookup_host((src.host.as_str(), src.port))
                        .await?
                        .next()
                        .ok_or_else(|| {
                            std::io::Error::other(format!("cannot resolve {}", src.host))
                        })?;
                    // Bind once up front so a taken port is an error, not a retry loop.
                    drop(std::net::TcpListener::bind(addr).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("simulated PLC of `{}` cannot listen on {addr}: {e}", a.id),
                        )
                    })?);
                    let bank = Arc::new(RwLock::new(Bank::for_map(src)));
                    let (tx, rx) = watch::channel(true);
                    plc_tasks.push(tokio::spawn(modbus_server::serve(addr, bank.clone(), rx)));
                    plc_switches.insert(a.id.to_string(), tx);
                    m.bank = Some((bank, src.clone()));
                }
                (None, Some((topic, b))) => {
                    any_mqtt = true;
                    let mut fields: Vec<(String, u16)> =
                        b.fields.iter().map(|(k, v)| (k.clone(), *v)).collect();
                    fields.sort();
                    m.mqtt = Some(SimTopic {
                        topic: topic.to_string(),
                        fields,
                        ts_field: b.ts_field.clone(),
                    });
                }
                (None, None) => {}
            }
            machines.push(m);
        }
        let mqtt = if any_mqtt {
            let mut o = MqttOptions::new(
                format!("ironlake-sim-{seed}"),
                &sc.file.mqtt.host,
                sc.file.mqtt.port,
            );
            o.set_keep_alive(Duration::from_secs(10));
            o.set_max_packet_size(1024 * 1024, 1024 * 1024);
            Some(AsyncClient::new(o, 1024))
        } else {
            None
        };
        let stop = CancellationToken::new();
        let switches: HashMap<String, watch::Sender<bool>> = plc_switches
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let task = tokio::spawn(run(
            sc.clone(),
            machines,
            mqtt,
            switches,
            cells.clone(),
            stop.clone(),
        ));
        info!(scenario = %sc.file.name, machines = model.assets.len(), "simulator started");
        Ok(Simulator {
            stop,
            task,
            plc_switches,
            plc_tasks,
            cells,
        })
    }

    /// Take a simulated Modbus PLC down (`false`) or bring it back (`true`).
    pub fn set_plc_up(&self, machine: &str, up: bool) -> bool {
        self.plc_switches
            .get(machine)
            .map(|s| s.send(up).is_ok())
            .unwrap_or(false)
    }

    /// Stop publishing and close every simulated PLC.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        drop(self.plc_switches);
        for t in self.plc_tasks {
            t.abort();
            let _ = t.await;
        }
        for c in self.cells {
            if let Ok(c) = Arc::try_unwrap(c) {
                c.stop().await;
            }
        }
    }
}

/// Build the nested JSON payload of an MQTT machine.
fn payload(
    fields: &[(String, u16)],
    values: &[f64],
    ts_ms: i64,
    ts_field: Option<&str>,
    extra: &[(String, serde_json::Value)],
) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    if let Some(t) = ts_field {
        insert_path(&mut root, t, serde_json::json!(ts_ms));
    }
    for (path, sig) in fields {
        if let Some(v) = values.get(*sig as usize) {
            let r = (v * 1000.0).round() / 1000.0;
            insert_path(&mut root, path, serde_json::json!(r));
        }
    }
    for (path, v) in extra {
        insert_path(&mut root, path, v.clone());
    }
    serde_json::Value::Object(root)
}

fn insert_path(
    root: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    v: serde_json::Value,
) {
    let mut cur = root;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_string(), v);
            return;
        }
        let e = cur
            .entry(p.to_string())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !e.is_object() {
            *e = serde_json::Value::Object(Default::default());
        }
        match e {
            serde_json::Value::Object(m) => cur = m,
            _ => return,
        }
    }
}

fn active(f: &Fault, t: f64) -> bool {
    if t < f.at_s {
        return false;
    }
    let since = if f.every_s > 0.0 {
        (t - f.at_s) % f.every_s
    } else {
        t - f.at_s
    };
    since < f.duration_s.max(0.0)
}

/// Whether a one-shot fault fires in the tick `(t - dt, t]`.
fn fires(f: &Fault, t: f64, dt: f64) -> bool {
    if t < f.at_s {
        return false;
    }
    if f.every_s > 0.0 {
        let k = ((t - f.at_s) / f.every_s).floor();
        let at = f.at_s + k * f.every_s;
        at > t - dt
    } else {
        f.at_s > t - dt
    }
}

async fn run(
    sc: Scenario,
    mut machines: Vec<SimMachine>,
    mqtt: Option<(AsyncClient, rumqttc::EventLoop)>,
    plcs: HashMap<String, watch::Sender<bool>>,
    cells: Vec<Arc<opcua_server::CellServer>>,
    stop: CancellationToken,
) {
    let (client, mqtt_task) = match mqtt {
        Some((c, mut el)) => {
            let s = stop.clone();
            let t = tokio::spawn(async move {
                // Warn once per outage, not on every retry.
                let mut warned = false;
                loop {
                    tokio::select! {
                        _ = s.cancelled() => break,
                        ev = el.poll() => match ev {
                            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                                info!("simulator connected to the MQTT broker");
                                warned = false;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                if !warned {
                                    warn!(error = %e, "simulator cannot reach the MQTT broker; retrying every 500 ms");
                                    warned = true;
                                }
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                }
            });
            (Some(c), Some(t))
        }
        None => (None, None),
    };
    let model = sc.model.clone();
    let f = &sc.file;
    let dt_real = f.tick_ms as f64 / 1000.0;
    let dt_sim = dt_real * f.time_scale;
    let mut tick = tokio::time::interval(Duration::from_millis(f.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut t = 0.0f64;
    let mut stuck: HashMap<(usize, usize), f64> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        t += dt_real;
        let now = crate::time::now_ms();
        // PLC up/down faults.
        for fault in f.faults.iter().filter(|x| x.kind == FaultKind::PlcDown) {
            if let Some(sw) = plcs.get(&fault.machine) {
                let want_up = !active(fault, t);
                if *sw.borrow() != want_up {
                    info!(machine = %fault.machine, up = want_up, "fault: simulated PLC {}", if want_up { "back" } else { "gone" });
                    let _ = sw.send(want_up);
                }
            }
        }
        for m in machines.iter_mut() {
            let a = &model.assets[m.idx];
            m.sim.step(&f.shifts, t * f.time_scale, dt_sim, dt_real);
            let mut ov = Overrides::default();
            let mut extra: Vec<(String, serde_json::Value)> = Vec::new();
            let mut raw: Option<Vec<u8>> = None;
            let mut values = m.sim.values(&ov);
            for fault in f.faults.iter().filter(|x| x.machine == a.id.as_str()) {
                let sig = fault
                    .signal
                    .as_deref()
                    .and_then(|s| a.twin.signal(s))
                    .map(|s| s as usize);
                match fault.kind {
                    FaultKind::StuckSensor => {
                        if let Some(s) = sig {
                            if active(fault, t) {
                                let v = *stuck.entry((m.idx, s)).or_insert(values[s]);
                                ov.stuck.push((s, v));
                            } else {
                                stuck.remove(&(m.idx, s));
                            }
                        }
                    }
                    FaultKind::OutOfRange if fires(fault, t, dt_real) => {
                        if let (Some(s), Some(v)) = (sig, fault.value) {
                            ov.stuck.push((s, v));
                        }
                    }
                    FaultKind::Failure if fires(fault, t, dt_real) => m.sim.fail(),
                    FaultKind::MalformedPayload if fires(fault, t, dt_real) => {
                        raw = Some(b"{\"state\": 2, \"spindle\": {\"speed\": 12".to_vec());
                    }
                    FaultKind::WrongType if fires(fault, t, dt_real) => {
                        if let (Some(s), Some(src)) = (sig, &m.mqtt) {
                            if let Some((path, _)) =
                                src.fields.iter().find(|(_, i)| *i as usize == s)
                            {
                                extra.push((path.clone(), serde_json::json!("n/a")));
                            }
                        }
                    }
                    FaultKind::UnknownSignal if fires(fault, t, dt_real) => {
                        extra.push(("coolant_level".into(), serde_json::json!(42.0)));
                    }
                    _ => {}
                }
            }
            for (s, v) in &ov.stuck {
                values[*s] = *v;
            }
            if let Some((bank, src)) = &m.bank {
                bank.write().write(src, &values);
            }
            if let Some((c, i)) = m.opcua {
                cells[c].publish(i, &values, m.sim.state, now);
            }
            if let (Some(c), Some(src)) = (&client, &m.mqtt) {
                let topic = &src.topic;
                let body = match raw.take() {
                    Some(r) => r,
                    None => payload(&src.fields, &values, now, src.ts_field.as_deref(), &extra)
                        .to_string()
                        .into_bytes(),
                };
                if let Err(e) = c.try_publish(topic.clone(), QoS::AtLeastOnce, false, body) {
                    warn!(error = %e, topic = %topic, "simulator publish queue full; sample skipped");
                }
            }
        }
    }
    if let Some(c) = client {
        let _ = c.disconnect().await;
    }
    if let Some(t) = mqtt_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_demo_scenario_is_valid() {
        let sc = Scenario::embedded_demo().unwrap();
        assert_eq!(sc.model.plants.len(), 2);
        assert!(sc.model.assets.len() >= 12);
        assert!(sc.model.lines.len() >= 3);
    }

    #[test]
    fn payload_nests_fields() {
        let p = payload(
            &[("a.b".into(), 0), ("c".into(), 1)],
            &[1.5, 2.0],
            99,
            Some("ts"),
            &[],
        );
        assert_eq!(p, serde_json::json!({"ts": 99, "a": {"b": 1.5}, "c": 2.0}));
    }

    #[test]
    fn fault_schedule() {
        let f = Fault {
            machine: "m".into(),
            kind: FaultKind::PlcDown,
            at_s: 10.0,
            duration_s: 5.0,
            every_s: 0.0,
            signal: None,
            value: None,
        };
        assert!(!active(&f, 9.0) && active(&f, 10.0) && active(&f, 14.9) && !active(&f, 15.0));
        let g = Fault {
            every_s: 20.0,
            ..f.clone()
        };
        assert!(active(&g, 31.0) && !active(&g, 36.0));
        assert!(fires(&g, 10.5, 1.0) && !fires(&g, 11.5, 1.0) && fires(&g, 30.2, 1.0));
    }
}
