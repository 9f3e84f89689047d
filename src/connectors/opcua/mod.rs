//! OPC UA (async-opcua client): one session per server, one subscription
//! with a monitored item per bound signal, values pushed by the server at
//! the sampling and publishing intervals asked for.
//!
//! - Security: the policies None, Basic256Sha256, Aes128_Sha256_RsaOaep and
//!   Aes256_Sha256_RsaPss with Sign or SignAndEncrypt; ironlake's
//!   certificate is created in the certificate store on first start and a
//!   server's certificate must be in its `trusted/` folder (unknown ones
//!   land in `rejected/`). Anonymous, user/password and X.509 identities.
//! - Addresses: NodeIds with namespace URIs (`nsu=...;s=...`) or browse
//!   paths from the machine's object ([`address`]), resolved on every new
//!   session, so a server that renumbers its namespaces on restart is
//!   followed.
//! - Quality: a value whose status is Bad is quarantined (`bad_status`, with
//!   the status name); Uncertain lands with quality `UNCERTAIN`; the
//!   source timestamp is the reading's time.
//! - Firmware updates: a machine whose twin type has `extra_signals = "add"`
//!   has its object browsed when the subscription is made and every
//!   `discover_s`; numeric and boolean variables no signal is bound to are
//!   subscribed as extra signals (named like `opcua browse --twin-type`
//!   would name them), up to `max_extra_signals`.
//! - Back-pressure: values go from the subscription's callback to the
//!   ingest stage through a bounded queue; when it is full the session's
//!   event loop waits (the server keeps queueing, and values it had to drop
//!   are counted from the status's overflow bit in
//!   `ironlake_opcua_queue_overflows_total`).
//! - Connection: the session is kept alive, re-activated after a network
//!   drop (the server keeps its queues) or re-created after a server
//!   restart with its subscription; while it is down the machines are
//!   disconnected (their twins show `DISCONNECTED`: the gap is visible).

pub mod address;
pub mod browse;
pub mod client;
pub mod config;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use opcua::client::{
    MonitoredItemMap, OnSubscriptionNotificationCore, Session, SessionConnectMode,
    SessionPollResult,
};
use opcua::types::{
    AttributeId, DataChangeNotification, DataValue, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, NotificationMessage, ReadValueId, TimestampsToReturn, Variant,
};
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

use super::{
    parse_table, parse_value, Backoff, Connector, Decoded, Envelope, HealthBoard, Protocol,
    RawValue, SignalRef, SignalValue, Source, SourceContext,
};
use crate::assets::{AssetIdx, AssetModel, SignalDef, SignalIdx};
use crate::config::ConfigError;
use crate::metrics::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use crate::time::now_ms;
use address::{Address, Resolver};
use client::{ClientSettings, EndpointSpec};
use config::{Mode, OpcuaBinding, OpcuaSection, OpcuaSourceConfig, Policy, ServerConfig};

/// The OPC UA protocol.
pub struct Opcua;

/// One bound signal of a machine.
#[derive(Debug, Clone)]
pub struct SignalPlan {
    pub signal: SignalIdx,
    pub name: Arc<str>,
    pub address: Address,
    pub sampling_ms: f64,
}

/// One machine on a server.
#[derive(Debug, Clone)]
pub struct MachinePlan {
    pub asset: AssetIdx,
    pub id: String,
    /// The machine's object (relative signal paths start there).
    pub node: Option<Address>,
    pub signals: Vec<SignalPlan>,
    /// Extra signals to discover under `node` at most (0: none; the twin
    /// type takes no extra signals).
    pub discover: usize,
    /// Every declared signal of the twin type (a variable named like one is
    /// not an extra signal).
    pub declared: Arc<[String]>,
}

/// One server and the machines read from it.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    pub name: String,
    pub endpoint: EndpointSpec,
    pub publishing_ms: u64,
    pub queue_size: u32,
    /// Values per publish response at most.
    pub max_notifications: u32,
    /// Seconds between browses for new variables (0: at subscription only).
    pub discover_s: u64,
    pub machines: Vec<MachinePlan>,
}

/// Every OPC UA server and machine, resolved.
#[derive(Debug)]
pub struct OpcuaConnector {
    /// Certificate store as configured (relative to the platform file), or
    /// none: `<journal_dir>/connectors/opcua/pki`.
    pki_dir: Option<PathBuf>,
    settings: ClientSettings,
    servers: Vec<Arc<ServerPlan>>,
    by_asset: HashMap<AssetIdx, usize>,
    stats: Arc<OpcuaStats>,
}

impl OpcuaConnector {
    /// The servers and their machines.
    pub fn servers(&self) -> &[Arc<ServerPlan>] {
        &self.servers
    }

    /// The connector's counters (registered by the platform).
    pub fn stats(&self) -> &Arc<OpcuaStats> {
        &self.stats
    }
}

/// Counters of the OPC UA client, by server.
#[derive(Debug)]
pub struct OpcuaStats {
    /// Values the server reported with the overflow bit: its queue for the
    /// item was full and older values were dropped (raise `queue_size`).
    pub overflows: IntCounterVec,
    /// Monitored items, declared and discovered.
    pub monitored: IntGaugeVec,
    /// Variables found after commissioning and subscribed as extra signals.
    pub discovered: IntCounterVec,
}

impl OpcuaStats {
    fn new() -> Self {
        OpcuaStats {
            overflows: IntCounterVec::new(
                Opts::new(
                    "ironlake_opcua_queue_overflows_total",
                    "OPC UA values the server marked with the overflow bit (its queue for the item was full; raise queue_size)",
                ),
                &["server"],
            )
            .expect("valid counter"),
            monitored: IntGaugeVec::new(
                Opts::new(
                    "ironlake_opcua_monitored_items",
                    "OPC UA monitored items of the subscription, declared and discovered",
                ),
                &["server"],
            )
            .expect("valid gauge"),
            discovered: IntCounterVec::new(
                Opts::new(
                    "ironlake_opcua_discovered_variables_total",
                    "OPC UA variables found after commissioning and subscribed as extra signals",
                ),
                &["server"],
            )
            .expect("valid counter"),
        }
    }

    /// Register every counter (a second registration is ignored).
    pub fn register(&self, r: &Registry) {
        let _ = r.register(Box::new(self.overflows.clone()));
        let _ = r.register(Box::new(self.monitored.clone()));
        let _ = r.register(Box::new(self.discovered.clone()));
    }
}

fn parse_binding(v: &toml::Value) -> Result<OpcuaBinding, String> {
    let b: OpcuaBinding = parse_value(v.clone())?;
    let a = b.address()?;
    Address::parse(a, &BTreeMap::new())?;
    if let Some(s) = b.sampling_ms {
        if !(s.is_finite() && s >= 0.0) {
            return Err("`sampling_ms` must be a number of milliseconds, 0 or more".into());
        }
    }
    Ok(b)
}

fn endpoint_spec(s: &ServerConfig, file: &str, key: &str) -> Result<EndpointSpec, ConfigError> {
    if !s.endpoint.starts_with("opc.tcp://") {
        return Err(ConfigError::invalid(
            file,
            &format!("{key}.endpoint"),
            format!("`{}` is not an opc.tcp:// URL", s.endpoint),
        ));
    }
    let policy = match &s.security_policy {
        None => Policy::None,
        Some(p) => Policy::parse(p).ok_or_else(|| {
            ConfigError::invalid(
                file,
                &format!("{key}.security_policy"),
                format!("unknown policy `{p}` (None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss)"),
            )
        })?,
    };
    let mode = match &s.security_mode {
        None if policy == Policy::None => Mode::None,
        None => Mode::SignAndEncrypt,
        Some(m) => Mode::parse(m).ok_or_else(|| {
            ConfigError::invalid(
                file,
                &format!("{key}.security_mode"),
                format!("unknown mode `{m}` (None, Sign, SignAndEncrypt)"),
            )
        })?,
    };
    if (policy == Policy::None) != (mode == Mode::None) {
        return Err(ConfigError::invalid(
            file,
            &format!("{key}.security_mode"),
            format!(
                "security policy {} goes with mode {}",
                policy.name(),
                if policy == Policy::None {
                    "None"
                } else {
                    "Sign or SignAndEncrypt"
                }
            ),
        ));
    }
    let id = &s.identity;
    if id.user.is_some() && (id.cert.is_some() || id.key.is_some()) {
        return Err(ConfigError::invalid(
            file,
            &format!("{key}.identity"),
            "either `user` (with a password) or `cert` and `key`, not both",
        ));
    }
    if s.publishing_ms == 0 {
        return Err(ConfigError::invalid(
            file,
            &format!("{key}.publishing_ms"),
            "must be above 0",
        ));
    }
    Ok(EndpointSpec {
        url: s.endpoint.clone(),
        policy,
        mode,
        identity: id.clone(),
        timeout_ms: s.timeout_ms,
    })
}

impl Protocol for Opcua {
    fn name(&self) -> &'static str {
        "opcua"
    }

    fn check_signal(&self, _signal: &SignalDef, binding: &toml::Value) -> Result<(), String> {
        parse_binding(binding).map(|_| ())
    }

    fn resolve(
        &self,
        section: Option<&toml::Value>,
        platform_file: &str,
        model: &AssetModel,
        machines: &[AssetIdx],
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let sec: OpcuaSection = parse_table(super::section_table(section), platform_file, "opcua")?;
        let base = std::path::Path::new(platform_file)
            .parent()
            .map(|p| p.to_path_buf())
            .filter(|_| !platform_file.starts_with("embedded:"))
            .unwrap_or_default();
        let mut settings = ClientSettings::new(PathBuf::new());
        if let Some(n) = &sec.application_name {
            settings.application_name = n.clone();
        }
        if let Some(u) = &sec.application_uri {
            settings.application_uri = u.clone();
        }
        settings.trust_server_certs = sec.trust_server_certs;
        let mut servers: Vec<ServerPlan> = Vec::new();
        let mut named: HashMap<String, usize> = HashMap::new();
        for (name, s) in &sec.servers {
            let key = format!("opcua.servers.{name}");
            let endpoint = endpoint_spec(s, platform_file, &key)?;
            named.insert(name.clone(), servers.len());
            servers.push(ServerPlan {
                name: name.clone(),
                endpoint,
                publishing_ms: s.publishing_ms,
                queue_size: s.queue_size.max(1),
                max_notifications: s.max_notifications_per_publish,
                discover_s: s.discover_s,
                machines: Vec::new(),
            });
        }
        let sampling: Vec<f64> = sec.servers.values().map(|s| s.sampling_ms).collect();
        let mut by_asset = HashMap::new();
        for &idx in machines {
            let a = &model.assets[idx as usize];
            let (file, key) = (a.source.file.as_str(), a.source.key.as_str());
            let s: OpcuaSourceConfig = parse_table(a.source.table.clone(), file, key)?;
            let si = match (&s.server, &s.endpoint) {
                (Some(n), None) => *named.get(n).ok_or_else(|| {
                    ConfigError::invalid(
                        file,
                        &format!("{key}.server"),
                        format!(
                            "no server `{n}` in [opcua.servers] (servers: {})",
                            sec.servers.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?,
                (None, Some(url)) => match named.get(url) {
                    Some(&i) => i,
                    None => {
                        let cfg: ServerConfig = parse_value(toml::Value::Table(
                            [("endpoint".to_string(), toml::Value::String(url.clone()))]
                                .into_iter()
                                .collect(),
                        ))
                        .map_err(|m| ConfigError::invalid(file, key, m))?;
                        let endpoint = endpoint_spec(&cfg, file, key)?;
                        named.insert(url.clone(), servers.len());
                        servers.push(ServerPlan {
                            name: url.clone(),
                            endpoint,
                            publishing_ms: cfg.publishing_ms,
                            queue_size: cfg.queue_size.max(1),
                            max_notifications: cfg.max_notifications_per_publish,
                            discover_s: cfg.discover_s,
                            machines: Vec::new(),
                        });
                        servers.len() - 1
                    }
                },
                _ => {
                    return Err(ConfigError::invalid(
                        file,
                        key,
                        "an OPC UA source names its `server` (from [opcua.servers]) or its `endpoint`, one of the two",
                    ))
                }
            };
            let default_sampling = sampling.get(si).copied().unwrap_or(100.0);
            let node = s
                .node
                .as_deref()
                .map(|n| Address::parse(n, &sec.namespaces))
                .transpose()
                .map_err(|m| ConfigError::invalid(file, &format!("{key}.node"), m))?;
            let twin = &a.twin;
            let mut signals = Vec::new();
            for (i, def) in twin.signals.iter().enumerate() {
                let (text, samp) = match s.nodes.get(&def.name) {
                    Some(n) => (n.clone(), None),
                    None => match def.bindings.get("opcua") {
                        Some(v) => {
                            let b = parse_binding(v).map_err(|m| {
                                ConfigError::invalid(&twin.file, &format!("signals[{i}].opcua"), m)
                            })?;
                            (
                                b.address().map(str::to_string).unwrap_or_default(),
                                b.sampling_ms,
                            )
                        }
                        None => continue,
                    },
                };
                let address = Address::parse(&text, &sec.namespaces).map_err(|m| {
                    ConfigError::invalid(file, &format!("{key}.nodes.{}", def.name), m)
                })?;
                if matches!(
                    address,
                    Address::Path {
                        absolute: false,
                        ..
                    }
                ) && node.is_none()
                {
                    return Err(ConfigError::invalid(
                        file,
                        &format!("{key}.node"),
                        format!(
                            "signal `{}` has the relative path `{text}`: give the machine's object as `node`",
                            def.name
                        ),
                    ));
                }
                signals.push(SignalPlan {
                    signal: i as SignalIdx,
                    name: Arc::from(def.name.as_str()),
                    address,
                    sampling_ms: samp.unwrap_or(default_sampling),
                });
            }
            for name in s.nodes.keys() {
                if twin.signal(name).is_none() {
                    return Err(ConfigError::invalid(
                        file,
                        &format!("{key}.nodes.{name}"),
                        format!("twin type `{}` has no signal `{name}`", twin.kind),
                    ));
                }
            }
            if signals.is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    key,
                    format!(
                        "no signal of twin type `{}` has an OPC UA binding (add `opcua = {{ path = \"...\" }}` to its signals or `nodes` here)",
                        twin.kind
                    ),
                ));
            }
            by_asset.insert(idx, si);
            let discover = if twin.extra.add && node.is_some() {
                twin.extra.max
            } else {
                0
            };
            servers[si].machines.push(MachinePlan {
                asset: idx,
                id: a.id.to_string(),
                node,
                signals,
                discover,
                declared: twin.signals.iter().map(|d| d.name.clone()).collect(),
            });
        }
        Ok(Box::new(OpcuaConnector {
            pki_dir: sec.pki_dir.as_ref().map(|p| base.join(p)),
            settings,
            servers: servers.into_iter().map(Arc::new).collect(),
            by_asset,
            stats: Arc::new(OpcuaStats::new()),
        }))
    }
}

impl Connector for OpcuaConnector {
    fn protocol(&self) -> &'static str {
        "opcua"
    }

    fn endpoint(&self, asset: AssetIdx) -> Option<String> {
        self.by_asset
            .get(&asset)
            .map(|&i| self.servers[i].endpoint.url.clone())
    }

    fn sources(&self) -> Vec<Box<dyn Source>> {
        self.servers
            .iter()
            .filter(|s| !s.machines.is_empty())
            .map(|s| {
                Box::new(ServerSource {
                    plan: s.clone(),
                    settings: self.settings.clone(),
                    pki_dir: self.pki_dir.clone(),
                    stats: self.stats.clone(),
                }) as Box<dyn Source>
            })
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Reads every machine of one server.
#[derive(Clone)]
pub struct ServerSource {
    plan: Arc<ServerPlan>,
    settings: ClientSettings,
    pki_dir: Option<PathBuf>,
    stats: Arc<OpcuaStats>,
}

/// What a monitored item feeds (its client handle is its index + 1).
#[derive(Debug)]
struct Item {
    machine: usize,
    signal: SignalIdx,
    name: Arc<str>,
    node: NodeId,
    /// Discovered after commissioning: an extra signal named `name`.
    extra: bool,
}

/// The subscription's items; discovery appends (handles never change).
type Items = Arc<parking_lot::RwLock<Vec<Item>>>;

/// Envelopes between the subscription's callback and the ingest stage.
const HANDOFF: usize = 256;

/// Turns the server's notifications into envelopes, one per machine and
/// publish, handed to the connector's task.
struct Notify {
    items: Items,
    machines: Arc<[(AssetIdx, Arc<str>)]>,
    tx: mpsc::Sender<Envelope>,
    overflows: IntCounter,
}

/// An OPC UA value as ironlake reads it.
pub fn raw_value(v: &Variant) -> RawValue {
    match v {
        Variant::Empty => RawValue::Null,
        Variant::Boolean(b) => RawValue::Bool(*b),
        Variant::String(s) => RawValue::Text(s.as_ref().into()),
        Variant::LocalizedText(t) => RawValue::Text(t.text.as_ref().into()),
        other => match other.as_f64() {
            Some(x) => RawValue::Num(x),
            None => RawValue::Text(other.to_string().into_boxed_str()),
        },
    }
}

fn ts_of(dv: &DataValue, received: i64) -> i64 {
    dv.source_timestamp
        .as_ref()
        .or(dv.server_timestamp.as_ref())
        .map(|t| t.as_chrono().timestamp_millis())
        .filter(|&t| t > 0)
        .unwrap_or(received)
}

fn json_value(v: &RawValue) -> serde_json::Value {
    match v {
        RawValue::Num(x) => serde_json::Number::from_f64(*x)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        RawValue::Bool(b) => serde_json::Value::Bool(*b),
        RawValue::Text(t) => serde_json::Value::String(t.to_string()),
        RawValue::Null => serde_json::Value::Null,
    }
}

impl Notify {
    /// Hand an envelope over; when the queue is full, wait for the ingest
    /// stage (the session's event loop stops reading publish responses and
    /// the server keeps the values queued).
    fn hand_off(&self, env: Envelope) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match self.tx.try_send(env) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(env)) => {
                let multi = Handle::try_current()
                    .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
                if multi {
                    tokio::task::block_in_place(|| {
                        let _ = self.tx.blocking_send(env);
                    });
                } else {
                    // A single-threaded runtime cannot wait here: queue it.
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(env).await;
                    });
                }
            }
        }
    }

    fn data_changes(&self, changes: Vec<(u32, DataValue)>) {
        let received = now_ms();
        let items = self.items.read();
        // Per machine: its values and the bronze payload.
        let mut per: BTreeMap<usize, (Vec<SignalValue>, Vec<serde_json::Value>)> = BTreeMap::new();
        let mut out = Vec::new();
        for (handle, dv) in changes {
            let Some(item) = (handle as usize).checked_sub(1).and_then(|i| items.get(i)) else {
                continue;
            };
            let status = dv.status();
            if status.overflow() {
                self.overflows.inc();
            }
            let value = dv.value.as_ref().map(raw_value).unwrap_or(RawValue::Null);
            let ts = ts_of(&dv, received);
            let (asset, source) = &self.machines[item.machine];
            if status.is_bad() {
                let payload = serde_json::json!({
                    "signal": &*item.name, "node": item.node.to_string(),
                    "ts": ts, "value": json_value(&value), "status": status.to_string(),
                });
                out.push(Envelope {
                    received_ms: received,
                    source: source.clone(),
                    asset: Some(*asset),
                    payload: payload.to_string(),
                    decoded: Decoded::Error {
                        code: "bad_status",
                        reason: format!(
                            "signal `{}` ({}): the server marks its value {status}",
                            item.name, item.node
                        ),
                    },
                    ack: None,
                });
                continue;
            }
            let e = per.entry(item.machine).or_default();
            e.1.push(serde_json::json!([
                &*item.name,
                ts,
                json_value(&value),
                if status.is_uncertain() {
                    status.to_string()
                } else {
                    "Good".to_string()
                }
            ]));
            e.0.push(SignalValue {
                signal: if item.extra {
                    SignalRef::Unknown(item.name.as_ref().into())
                } else {
                    SignalRef::Known(item.signal)
                },
                ts_ms: ts,
                value,
                uncertain: status.is_uncertain(),
            });
        }
        drop(items);
        for (m, (values, payload)) in per {
            let (asset, source) = &self.machines[m];
            out.push(Envelope {
                received_ms: received,
                source: source.clone(),
                asset: Some(*asset),
                payload: serde_json::Value::Array(payload).to_string(),
                decoded: Decoded::Values(values),
                ack: None,
            });
        }
        for env in out {
            self.hand_off(env);
        }
    }
}

impl OnSubscriptionNotificationCore for Notify {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        let mut changes = Vec::new();
        for obj in notification.notification_data.into_iter().flatten() {
            if let Some(dc) = obj.into_inner_as::<DataChangeNotification>() {
                for n in dc.monitored_items.into_iter().flatten() {
                    changes.push((n.client_handle, n.value));
                }
            }
        }
        if !changes.is_empty() {
            self.data_changes(changes);
        }
    }
}

/// Aborts a task when dropped (the session's event loop of a session given up).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A subscription made on a session: its id and the namespaces its node
/// ids were resolved with.
struct Subscribed {
    id: u32,
    namespaces: Vec<String>,
    items: Items,
}

impl ServerSource {
    fn set_all(&self, health: &HealthBoard, up: bool, err: Option<String>) {
        for m in &self.plan.machines {
            health.set_connected(m.asset, up, err.clone());
        }
    }

    /// The request to monitor item `index` (client handle `index + 1`).
    fn monitor(&self, index: usize, node: &NodeId, sampling_ms: f64) -> MonitoredItemCreateRequest {
        MonitoredItemCreateRequest {
            item_to_monitor: ReadValueId {
                node_id: node.clone(),
                attribute_id: AttributeId::Value as u32,
                ..Default::default()
            },
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                client_handle: index as u32 + 1,
                sampling_interval: sampling_ms,
                queue_size: self.plan.queue_size,
                discard_oldest: true,
                ..Default::default()
            },
        }
    }

    /// Resolve every address, quarantine what cannot be found, and
    /// subscribe to the rest.
    async fn subscribe(
        &self,
        session: &Arc<Session>,
        tx: &mpsc::Sender<Envelope>,
    ) -> Result<Subscribed, String> {
        let mut resolver = Resolver::new(session).await?;
        let sources: Arc<[(AssetIdx, Arc<str>)]> = self
            .plan
            .machines
            .iter()
            .map(|m| {
                (
                    m.asset,
                    Arc::from(format!("{}#{}", self.plan.endpoint.url, m.id)),
                )
            })
            .collect();
        let mut items: Vec<Item> = Vec::new();
        let mut sampling: Vec<f64> = Vec::new();
        let mut missing: Vec<(usize, Arc<str>, String, String)> = Vec::new();
        for (mi, m) in self.plan.machines.iter().enumerate() {
            let base = match &m.node {
                Some(a) => match resolver.resolve(a, None).await {
                    Ok(n) => Some(n),
                    Err(e) => {
                        for s in &m.signals {
                            missing.push((
                                mi,
                                s.name.clone(),
                                s.address.to_string(),
                                format!("the machine's node `{a}`: {e}"),
                            ));
                        }
                        continue;
                    }
                },
                None => None,
            };
            for s in &m.signals {
                match resolver.resolve(&s.address, base.as_ref()).await {
                    Ok(node) => {
                        items.push(Item {
                            machine: mi,
                            signal: s.signal,
                            name: s.name.clone(),
                            node,
                            extra: false,
                        });
                        sampling.push(s.sampling_ms);
                    }
                    Err(e) => missing.push((mi, s.name.clone(), s.address.to_string(), e)),
                }
            }
        }
        let requests: Vec<MonitoredItemCreateRequest> = items
            .iter()
            .zip(&sampling)
            .enumerate()
            .map(|(i, (it, &samp))| self.monitor(i, &it.node, samp))
            .collect();
        let items: Items = Arc::new(parking_lot::RwLock::new(items));
        let notify = Notify {
            items: items.clone(),
            machines: sources.clone(),
            tx: tx.clone(),
            overflows: self
                .stats
                .overflows
                .with_label_values(&[self.plan.name.as_str()]),
        };
        let publishing = Duration::from_millis(self.plan.publishing_ms);
        // Keep-alive every ~2 s of silence, lifetime 3 keep-alives.
        let keep_alive = (2000 / self.plan.publishing_ms.max(1)).clamp(1, 1000) as u32;
        // At most this many values per publish response: servers limit the
        // size of a message (a few hundred KB by default); more go in the
        // next response.
        let id = session
            .create_subscription(
                publishing,
                keep_alive * 3,
                keep_alive,
                self.plan.max_notifications,
                0,
                true,
                notify,
            )
            .await
            .map_err(|e| format!("creating the subscription: {e}"))?;
        let mut refused = 0;
        for chunk in requests.chunks(1000) {
            let created = session
                .create_monitored_items(id, TimestampsToReturn::Both, chunk.to_vec())
                .await
                .map_err(|e| format!("creating monitored items: {e}"))?;
            for (req, r) in chunk.iter().zip(created) {
                if r.result.status_code.is_bad() {
                    refused += 1;
                    let items = items.read();
                    let it = &items[req.requested_parameters.client_handle as usize - 1];
                    missing.push((
                        it.machine,
                        it.name.clone(),
                        it.node.to_string(),
                        format!("the server refused to monitor it: {}", r.result.status_code),
                    ));
                }
            }
        }
        // What cannot be read is quarantined with its reason, once per session.
        for (mi, signal, addr, why) in &missing {
            let (asset, source) = &sources[*mi];
            warn!(machine = %self.plan.machines[*mi].id, signal = %signal, address = %addr, reason = %why, "OPC UA binding not found");
            let _ = tx.try_send(Envelope {
                received_ms: now_ms(),
                source: source.clone(),
                asset: Some(*asset),
                payload: serde_json::json!({"signal": &**signal, "address": addr}).to_string(),
                decoded: Decoded::Error {
                    code: "node_not_found",
                    reason: format!("signal `{signal}` at `{addr}`: {why}"),
                },
                ack: None,
            });
        }
        let monitored = items.read().len() - refused;
        self.stats
            .monitored
            .with_label_values(&[self.plan.name.as_str()])
            .set(monitored as i64);
        info!(
            server = %self.plan.name,
            monitored,
            missing = missing.len(),
            "OPC UA subscription created"
        );
        Ok(Subscribed {
            id,
            namespaces: resolver.namespaces().to_vec(),
            items,
        })
    }

    /// Browse the objects of machines that take extra signals for numeric
    /// and boolean variables not yet monitored, and monitor them (a
    /// firmware update brought them). Returns how many were added.
    async fn discover(&self, session: &Arc<Session>, sub: &Subscribed) -> Result<usize, String> {
        if self.plan.machines.iter().all(|m| m.discover == 0) {
            return Ok(0);
        }
        let mut resolver = Resolver::new(session).await?;
        let (known, mut extras): (std::collections::HashSet<(usize, NodeId)>, Vec<usize>) = {
            let g = sub.items.read();
            let mut extras = vec![0usize; self.plan.machines.len()];
            for it in g.iter().filter(|it| it.extra) {
                extras[it.machine] += 1;
            }
            (
                g.iter().map(|it| (it.machine, it.node.clone())).collect(),
                extras,
            )
        };
        let mut added: Vec<(Item, f64)> = Vec::new();
        for (mi, m) in self.plan.machines.iter().enumerate() {
            let Some(a) = m.node.as_ref().filter(|_| m.discover > 0) else {
                continue;
            };
            // A machine the server does not have was quarantined already.
            let Ok(root) = resolver.resolve(a, None).await else {
                continue;
            };
            for found in browse::measurements(&mut resolver, &root).await? {
                if extras[mi] >= m.discover {
                    break;
                }
                if known.contains(&(mi, found.node.clone()))
                    || m.declared.contains(&found.name)
                    || added
                        .iter()
                        .any(|(it, _)| it.machine == mi && *it.name == *found.name)
                {
                    continue;
                }
                info!(machine = %m.id, signal = %found.name, node = %found.node, "OPC UA variable found after commissioning; subscribing it as an extra signal");
                extras[mi] += 1;
                let sampling = m.signals.first().map_or(100.0, |s| s.sampling_ms);
                added.push((
                    Item {
                        machine: mi,
                        signal: 0,
                        name: Arc::from(found.name.as_str()),
                        node: found.node,
                        extra: true,
                    },
                    sampling,
                ));
            }
        }
        if added.is_empty() {
            return Ok(0);
        }
        let n = added.len();
        let requests: Vec<MonitoredItemCreateRequest> = {
            let mut g = sub.items.write();
            let first = g.len();
            let mut reqs = Vec::with_capacity(n);
            for (k, (it, sampling)) in added.into_iter().enumerate() {
                reqs.push(self.monitor(first + k, &it.node, sampling));
                g.push(it);
            }
            reqs
        };
        let created = session
            .create_monitored_items(sub.id, TimestampsToReturn::Both, requests)
            .await
            .map_err(|e| format!("monitoring discovered variables: {e}"))?;
        let ok = created
            .iter()
            .filter(|r| !r.result.status_code.is_bad())
            .count();
        if ok < n {
            warn!(
                refused = n - ok,
                "the server refused to monitor some discovered variables"
            );
        }
        let name = self.plan.name.as_str();
        self.stats
            .discovered
            .with_label_values(&[name])
            .inc_by(ok as u64);
        self.stats
            .monitored
            .with_label_values(&[name])
            .add(ok as i64);
        Ok(ok)
    }
}

impl Source for ServerSource {
    fn name(&self) -> String {
        format!(
            "opcua {} ({} machines)",
            self.plan.endpoint.url,
            self.plan.machines.len()
        )
    }

    fn respawn(&self) -> Option<Box<dyn Source>> {
        Some(Box::new(self.clone()))
    }

    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, ()> {
        let span = tracing::info_span!("connector", connector = "opcua", server = %self.plan.name);
        Box::pin(
            async move {
                let mut me = *self;
                if me.pki_dir.is_none() {
                    me.pki_dir = Some(cx.state_dir.join("opcua").join("pki"));
                }
                me.settings.pki_dir = me.pki_dir.clone().unwrap_or_default();
                me.serve(cx).await
            }
            .instrument(span),
        )
    }
}

impl ServerSource {
    async fn serve(self, cx: SourceContext) {
        let SourceContext {
            sink,
            health,
            shutdown,
            ..
        } = cx;
        let (tx, mut rx) = mpsc::channel::<Envelope>(HANDOFF);
        // Forward what the subscription delivers, with back-pressure from
        // the ingest queues.
        let fwd = {
            let sink = sink.clone();
            let health = health.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                while let Some(env) = rx.recv().await {
                    if let Some(a) = env.asset {
                        health.touch(a, env.received_ms);
                    }
                    if !sink.send(env).await {
                        shutdown.cancel();
                        break;
                    }
                }
            })
        };
        for m in &self.plan.machines {
            health.set_by_exception(m.asset);
        }
        let mut backoff = Backoff::default();
        'outer: while !shutdown.is_cancelled() {
            let (session, events) = match client::connect(&self.settings, &self.plan.endpoint).await
            {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "OPC UA server unreachable");
                    self.set_all(&health, false, Some(e));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    }
                }
            };
            let (pump, mut ev_rx) = client::pump(events);
            let _pump_guard = AbortOnDrop(pump);
            let mut subscribed: Option<Subscribed> = None;
            let mut need_setup = false;
            let mut connected = false;
            let mut retry_at: Option<tokio::time::Instant> = None;
            let mut discover_at: Option<tokio::time::Instant> = None;
            let discover_every =
                (self.plan.discover_s > 0).then(|| Duration::from_secs(self.plan.discover_s));
            loop {
                let wake = retry_at
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
                        break 'outer;
                    }
                    _ = tokio::time::sleep_until(wake), if retry_at.is_some() => {
                        retry_at = None;
                    }
                    _ = tokio::time::sleep_until(discover_at.unwrap_or_else(tokio::time::Instant::now)),
                        if discover_at.is_some() && connected && !need_setup => {
                        discover_at = discover_every.map(|d| tokio::time::Instant::now() + d);
                        if let Some(sub) = &subscribed {
                            if let Err(e) = self.discover(&session, sub).await {
                                warn!(error = %e, "browsing for new OPC UA variables failed; trying again later");
                            }
                        }
                    }
                    ev = ev_rx.recv() => match ev {
                        None => continue 'outer,
                        Some(Err(code)) => {
                            warn!(status = %code, "OPC UA session ended; starting over");
                            self.set_all(&health, false, Some(format!("session ended: {code}")));
                            tokio::select! {
                                _ = shutdown.cancelled() => break 'outer,
                                _ = tokio::time::sleep(backoff.next_delay()) => continue 'outer,
                            }
                        }
                        Some(Ok(SessionPollResult::ConnectionLost(code))) => {
                            warn!(status = %code, "OPC UA connection lost; reconnecting");
                            connected = false;
                            self.set_all(&health, false, Some(format!("connection lost: {code}")));
                            health.count_reconnect("opcua");
                        }
                        Some(Ok(SessionPollResult::ReconnectFailed(code))) => {
                            let mut msg = format!("cannot connect: {code}");
                            if let Some(h) = client::hint(code, &self.settings, &self.plan.endpoint) {
                                msg.push_str("; ");
                                msg.push_str(&h);
                            }
                            self.set_all(&health, false, Some(msg));
                        }
                        Some(Ok(SessionPollResult::Reconnected(mode))) => {
                            backoff.reset();
                            connected = true;
                            match (&mode, &subscribed) {
                                (_, None) => need_setup = true,
                                (SessionConnectMode::NewSession(_), Some(s)) => {
                                    // A new session (a server restart): the library
                                    // recreated the subscription; if the server
                                    // renumbered its namespaces, resolve again.
                                    if let Ok(r) = Resolver::new(&session).await {
                                        if r.namespaces() != s.namespaces.as_slice() {
                                            info!("the server's namespaces changed; resolving the bindings again");
                                            let _ = session.delete_subscription(s.id).await;
                                            subscribed = None;
                                            need_setup = true;
                                        }
                                    }
                                    info!("OPC UA session re-created");
                                }
                                (SessionConnectMode::ReactivatedSession(_), Some(_)) => {
                                    info!("OPC UA session re-activated");
                                }
                            }
                            if !need_setup {
                                self.set_all(&health, true, None);
                            }
                        }
                        Some(Ok(SessionPollResult::SessionActivity(_))) if connected && !need_setup => {
                            // Keep-alives: the values that did not change are current.
                            let now = now_ms();
                            for m in &self.plan.machines {
                                health.touch(m.asset, now);
                            }
                        }
                        Some(Ok(_)) => {}
                    }
                }
                if need_setup && connected && retry_at.is_none() {
                    match self.subscribe(&session, &tx).await {
                        Ok(s) => {
                            if let Err(e) = self.discover(&session, &s).await {
                                warn!(error = %e, "browsing for new OPC UA variables failed; trying again later");
                            }
                            discover_at = discover_every.map(|d| tokio::time::Instant::now() + d);
                            subscribed = Some(s);
                            need_setup = false;
                            self.set_all(&health, true, None);
                        }
                        Err(e) => {
                            warn!(error = %e, "OPC UA subscription failed; retrying");
                            self.set_all(&health, false, Some(e));
                            retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                        }
                    }
                }
            }
        }
        self.set_all(&health, false, Some("connector stopped".into()));
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), fwd).await;
    }
}
