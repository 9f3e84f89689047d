//! Modbus TCP: poll a machine's holding/input registers and coils at a fixed
//! interval (tokio-modbus client), decode them with the register map, and
//! reconnect with back-off when the device refuses or disappears.
//!
//! A poll is handed over once the ingest stage has journaled it; Modbus has
//! no acknowledgement, so what was journaled survives a crash and what was
//! not is simply the next poll.

pub mod binding;
pub mod codec;
pub mod config;

pub use binding::{Modbus, ModbusConnector, ModbusSource};
pub use config::{ModbusBinding, RegisterTable, RegisterType, WordOrder};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{timeout, MissedTickBehavior};
use tokio_modbus::client::{tcp, Context, Reader};
use tokio_modbus::Slave;
use tracing::{debug, info, warn, Instrument};

use super::{
    Backoff, ConnectorError, Decoded, Envelope, RawValue, SignalRef, SignalValue, Source,
    SourceContext,
};
use crate::assets::AssetIdx;
use crate::time::now_ms;
use codec::Block;

/// Poll timing of every Modbus poller, exported by `/metrics`.
pub struct ModbusStats {
    /// Polls started.
    pub polls: crate::metrics::IntCounter,
    /// Polls started more than a whole period late (a cycle was missed).
    pub missed: crate::metrics::IntCounter,
    /// How late each poll started after its scheduled time.
    pub lateness: crate::metrics::Histogram,
    /// Lateness samples (ms) for `bench modbus`; none in normal runs.
    pub probe: parking_lot::Mutex<Option<Arc<crate::metrics::LatencyProbe>>>,
}

impl ModbusStats {
    fn new() -> Self {
        ModbusStats {
            polls: crate::metrics::IntCounter::new(
                "ironlake_modbus_polls_total",
                "Modbus polls started",
            )
            .expect("valid counter"),
            missed: crate::metrics::IntCounter::new(
                "ironlake_modbus_missed_polls_total",
                "Modbus polls that started more than one poll period late (a cycle was missed)",
            )
            .expect("valid counter"),
            lateness: crate::metrics::latency_histogram(
                "ironlake_modbus_poll_lateness_seconds",
                "How late each Modbus poll started after its scheduled time",
            ),
            probe: parking_lot::Mutex::new(None),
        }
    }

    /// Register every counter (a second registration is ignored).
    pub fn register(&self, r: &crate::metrics::Registry) {
        let _ = r.register(Box::new(self.polls.clone()));
        let _ = r.register(Box::new(self.missed.clone()));
        let _ = r.register(Box::new(self.lateness.clone()));
    }
}

impl std::fmt::Debug for ModbusStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusStats")
            .field("polls", &self.polls.get())
            .field("missed", &self.missed.get())
            .finish()
    }
}

impl Default for ModbusStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls one machine's PLC.
#[derive(Clone)]
pub struct ModbusPoller {
    asset: AssetIdx,
    asset_id: String,
    cfg: ModbusSource,
    plan: Vec<Block>,
    endpoint: Arc<str>,
    stats: Arc<ModbusStats>,
}

impl ModbusPoller {
    /// A poller for one asset.
    pub fn new(
        asset: AssetIdx,
        asset_id: String,
        cfg: ModbusSource,
        stats: Arc<ModbusStats>,
    ) -> Self {
        let plan = codec::plan(&cfg.registers);
        let endpoint = Arc::from(format!("modbus://{}:{}/{}", cfg.host, cfg.port, cfg.unit));
        ModbusPoller {
            asset,
            asset_id,
            cfg,
            plan,
            endpoint,
            stats,
        }
    }

    async fn connect(&self) -> Result<Context, ConnectorError> {
        let endpoint = self.endpoint.to_string();
        let addr = format!("{}:{}", self.cfg.host, self.cfg.port);
        let sa: SocketAddr = tokio::net::lookup_host(&addr)
            .await
            .map_err(|e| ConnectorError::Resolve {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            })?
            .next()
            .ok_or_else(|| ConnectorError::Resolve {
                endpoint: endpoint.clone(),
                message: "no address".into(),
            })?;
        match timeout(self.timeout(), tcp::connect_slave(sa, Slave(self.cfg.unit))).await {
            Ok(Ok(ctx)) => Ok(ctx),
            Ok(Err(e)) => Err(ConnectorError::Connect {
                endpoint,
                message: e.to_string(),
            }),
            Err(_) => Err(ConnectorError::Timeout {
                endpoint,
                what: "connecting".into(),
            }),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms.max(1))
    }

    /// Read every block once. `Err` means the connection is lost; a Modbus
    /// exception is returned as a decoded error (the device answered).
    async fn poll_once(&self, ctx: &mut Context) -> Result<Envelope, ConnectorError> {
        let mut words: BTreeMap<(u8, u16), u16> = BTreeMap::new();
        let mut payload = serde_json::Map::new();
        let mut exception: Option<String> = None;
        for blk in &self.plan {
            let res = match blk.table {
                RegisterTable::Holding => {
                    timeout(
                        self.timeout(),
                        ctx.read_holding_registers(blk.start, blk.count),
                    )
                    .await
                }
                RegisterTable::Input => {
                    timeout(
                        self.timeout(),
                        ctx.read_input_registers(blk.start, blk.count),
                    )
                    .await
                }
                RegisterTable::Coil => {
                    timeout(self.timeout(), ctx.read_coils(blk.start, blk.count))
                        .await
                        .map(|r| r.map(|r| r.map(|c| c.into_iter().map(u16::from).collect())))
                }
            };
            let table_name = table_name(blk.table);
            let what = || format!("reading {table_name} {}+{}", blk.start, blk.count);
            match res {
                Err(_) => {
                    return Err(ConnectorError::Timeout {
                        endpoint: self.endpoint.to_string(),
                        what: what(),
                    })
                }
                Ok(Err(e)) => {
                    return Err(ConnectorError::Read {
                        endpoint: self.endpoint.to_string(),
                        what: what(),
                        message: e.to_string(),
                    })
                }
                Ok(Ok(Err(exc))) => {
                    exception = Some(format!(
                        "modbus exception {exc:?} reading {table_name} {}+{}",
                        blk.start, blk.count
                    ));
                }
                Ok(Ok(Ok(ws))) => {
                    let t = table_key(blk.table);
                    for (i, w) in ws.iter().enumerate() {
                        words.insert((t, blk.start + i as u16), *w);
                    }
                    payload.insert(format!("{table_name}:{}", blk.start), serde_json::json!(ws));
                }
            }
        }
        let received = now_ms();
        let mut values = Vec::with_capacity(self.cfg.registers.len());
        for (sig, b) in &self.cfg.registers {
            let t = table_key(b.table);
            let ws: Option<Vec<u16>> = (0..b.register_type.width())
                .map(|i| words.get(&(t, b.address + i)).copied())
                .collect();
            if let Some(ws) = ws {
                if let Some(raw) = codec::decode_words(&ws, b.register_type, b.word_order) {
                    values.push(SignalValue {
                        signal: SignalRef::Known(*sig),
                        ts_ms: received,
                        value: RawValue::Num(codec::scale(b, raw)),
                        uncertain: false,
                    });
                }
            }
        }
        let decoded = match (exception, values.is_empty()) {
            (Some(reason), true) => Decoded::Error {
                code: "device_exception",
                reason,
            },
            (Some(reason), false) => {
                // Partial poll: what was read goes on; the refused block is
                // quarantined with the device's exception.
                payload.insert("error".into(), serde_json::Value::String(reason.clone()));
                Decoded::Partial {
                    values,
                    code: "device_exception",
                    reason,
                }
            }
            (None, _) => Decoded::Values(values),
        };
        Ok(Envelope {
            received_ms: received,
            source: self.endpoint.clone(),
            asset: Some(self.asset),
            payload: serde_json::Value::Object(payload).to_string(),
            decoded,
            ack: None,
        })
    }
}

fn table_name(t: RegisterTable) -> &'static str {
    match t {
        RegisterTable::Holding => "holding",
        RegisterTable::Input => "input",
        RegisterTable::Coil => "coil",
    }
}

fn table_key(t: RegisterTable) -> u8 {
    match t {
        RegisterTable::Holding => 0,
        RegisterTable::Input => 1,
        RegisterTable::Coil => 2,
    }
}

impl Source for ModbusPoller {
    fn name(&self) -> String {
        format!("{} ({})", self.endpoint, self.asset_id)
    }

    fn respawn(&self) -> Option<Box<dyn Source>> {
        Some(Box::new(self.clone()))
    }

    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, ()> {
        let SourceContext {
            sink,
            health,
            shutdown,
            ..
        } = cx;
        let span = tracing::info_span!("connector", connector = "modbus", asset = %self.asset_id);
        Box::pin(
            async move {
                let mut backoff = Backoff::default();
                'outer: while !shutdown.is_cancelled() {
                    let mut ctx = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        r = self.connect() => match r {
                            Ok(c) => c,
                            Err(e) => {
                                debug!(error = %e, "modbus connect failed");
                                health.set_connected(self.asset, false, Some(e.to_string()));
                                tokio::select! {
                                    _ = shutdown.cancelled() => break,
                                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                                }
                            }
                        }
                    };
                    info!(endpoint = %self.endpoint, "modbus connected");
                    health.set_connected(self.asset, true, None);
                    backoff.reset();
                    let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_ms));
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    let period = Duration::from_millis(self.cfg.poll_ms.max(1));
                    loop {
                        let due = tokio::select! {
                            _ = shutdown.cancelled() => break 'outer,
                            d = tick.tick() => d,
                        };
                        let late = tokio::time::Instant::now().saturating_duration_since(due);
                        self.stats.polls.inc();
                        self.stats.lateness.observe(late.as_secs_f64());
                        if late > period {
                            self.stats.missed.inc();
                        }
                        if let Some(p) = self.stats.probe.lock().as_ref() {
                            p.record(late.as_secs_f64() * 1000.0);
                        }
                        match self.poll_once(&mut ctx).await {
                            Ok(env) => {
                                health.touch(self.asset, env.received_ms);
                                if !sink.send(env).await {
                                    break 'outer;
                                }
                            }
                            Err(e) => {
                                warn!(error = %e, "modbus device lost; reconnecting");
                                health.set_connected(self.asset, false, Some(e.to_string()));
                                health.count_reconnect("modbus");
                                break;
                            }
                        }
                    }
                }
                health.set_connected(self.asset, false, Some("connector stopped".into()));
            }
            .instrument(span),
        )
    }
}
