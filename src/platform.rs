//! Wiring of one running ironlake: embedded broker, lake writers, twin actors,
//! ingest shards, connectors and the REST API, started in dependency order and
//! stopped in reverse so that nothing in flight is lost.
//!
//! Threads: the caller's tokio runtime runs connectors, ingest and writers; a
//! dedicated thread runs the actix system (twin arbiters and HTTP workers).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::AsArray;

use crate::lake::read::string_column;
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::assets::{AssetIdx, SignalIdx};
use crate::config::Config;
use crate::connectors::{self, mqtt, HealthBoard, IngestSink};
use crate::lake::writer::{TableWriter, WriterOptions};
use crate::lake::{LakeError, Lakehouse, Table};
use crate::metrics::LatencyProbe;
use crate::pipeline::ingest::IngestWriters;
use crate::pipeline::{IngestStats, Shard};
use crate::twins::{self, FinalCheckpoint, TwinOutput, TwinRegistry, TwinShared};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("actor system: {0}")]
    Actors(String),
}

/// Optional instrumentation (used by `ironlake bench`).
#[derive(Default, Clone)]
pub struct Probes {
    /// Source time -> applied in the twin (visible to REST).
    pub visibility: Option<Arc<LatencyProbe>>,
    /// Source time -> committed in silver.
    pub silver_commit: Option<Arc<LatencyProbe>>,
}

/// A running platform.
pub struct Platform {
    /// Address the REST API listens on.
    pub http_addr: SocketAddr,
    pub lake: Arc<Lakehouse>,
    pub twins: TwinRegistry,
    pub health: Arc<HealthBoard>,
    pub ingest: Arc<IngestStats>,
    pub config: Config,
    writers: Vec<TableWriter>,
    writer_joins: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    connector_joins: Vec<JoinHandle<()>>,
    sink: Option<IngestSink>,
    shard_joins: Vec<JoinHandle<()>>,
    collector_stop: CancellationToken,
    collector: Option<JoinHandle<()>>,
    http: actix_web::dev::ServerHandle,
    actor_thread: Option<std::thread::JoinHandle<()>>,
    pipelines: Option<JoinHandle<()>>,
    compaction: Option<JoinHandle<()>>,
}

impl Platform {
    /// Start everything described by `config`.
    pub async fn start(config: Config, probes: Probes) -> Result<Self, PlatformError> {
        let p = &config.platform;
        if let Some(b) = p.mqtt.embedded.as_ref().filter(|b| b.enabled) {
            let addr = mqtt::start_embedded_broker(b)?;
            info!(%addr, "embedded MQTT broker listening");
        }
        let lake = Arc::new(Lakehouse::open(&p.lake.root)?);
        lake.ensure_all().await?;
        let checkpoints = match lake.latest_checkpoints().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read checkpoints; twins start empty");
                HashMap::new()
            }
        };
        let floors = Arc::new(dedup_floors(&lake, &config).await);
        info!(
            checkpoints = checkpoints.len(),
            "lakehouse ready at {}",
            lake.root()
        );

        let mut writers = HashMap::new();
        let mut writer_joins = Vec::new();
        for t in Table::ALL {
            let opts = WriterOptions {
                commit_latency: if t == Table::SilverReadings {
                    probes.silver_commit.clone()
                } else {
                    None
                },
            };
            let (w, j) = TableWriter::start(&lake, t, &p.lake, opts).await?;
            writers.insert(t, w);
            writer_joins.push(j);
        }
        let w = |t: Table| writers[&t].clone();

        let (out_tx, out_rx) = mpsc::channel::<TwinOutput>(4096);
        let collector_stop = CancellationToken::new();
        let collector = twins::spawn_collector(
            out_rx,
            collector_stop.clone(),
            w(Table::SilverAssetEvents),
            w(Table::GoldAssetState),
        );
        let shared = Arc::new(TwinShared {
            cfg: p.twin.clone(),
            out: out_tx,
            visibility: probes.visibility.clone(),
        });

        let health = Arc::new(HealthBoard::new(&config.model));
        let ingest = Arc::new(IngestStats::default());
        let all_writers: Vec<TableWriter> = Table::ALL.iter().map(|t| w(*t)).collect();

        // The actix system: twins and HTTP.
        let (tx, rx) = std::sync::mpsc::channel();
        let model = config.model.clone();
        let http_listen = p.http.listen;
        let api_parts = (
            health.clone(),
            lake.clone(),
            all_writers.clone(),
            ingest.clone(),
            tokio::runtime::Handle::current(),
            config.pipelines.clone(),
        );
        let actor_thread = std::thread::Builder::new()
            .name("ironlake-actors".into())
            .spawn(move || {
                let sys = actix::System::new();
                sys.block_on(async move {
                    let (registry, arbiters) = twins::spawn_all(&model, shared, &checkpoints);
                    let (health, lake, writers, ingest, runtime, pipelines) = api_parts;
                    let state = crate::api::ApiState {
                        model: model.clone(),
                        twins: registry.clone(),
                        health,
                        sql: crate::query::SqlEngine::new(lake.clone()),
                        runtime,
                        pipelines,
                        lake,
                        writers,
                        ingest,
                        started_ms: connectors::now_ms(),
                    };
                    match crate::api::bind(state, http_listen, 2) {
                        Ok((srv, addr)) => {
                            let _ = tx.send(Ok((registry, srv.handle(), addr)));
                            if let Err(e) = srv.await {
                                warn!(error = %e, "HTTP server ended with an error");
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("cannot listen on {http_listen}: {e}")));
                        }
                    }
                    for a in arbiters {
                        a.stop();
                    }
                });
            })?;
        let (twins, http, http_addr) = tokio::task::spawn_blocking(move || rx.recv())
            .await
            .map_err(|e| PlatformError::Actors(e.to_string()))?
            .map_err(|e| PlatformError::Actors(e.to_string()))?
            .map_err(PlatformError::Actors)?;
        info!(%http_addr, "REST API listening");

        // Ingest shards.
        let mut senders = Vec::new();
        let mut shard_joins = Vec::new();
        let iw = IngestWriters {
            bronze: w(Table::BronzeRawEvents),
            silver: w(Table::SilverReadings),
            quarantine: w(Table::SilverQuarantine),
        };
        for _ in 0..p.ingest.shards {
            let (stx, srx) = mpsc::channel(p.ingest.queue);
            senders.push(stx);
            let shard = Shard::new(
                config.model.clone(),
                srx,
                twins.machines.clone(),
                iw.clone(),
                ingest.clone(),
                floors.clone(),
            );
            shard_joins.push(tokio::spawn(shard.run()));
        }
        let sink = IngestSink::new(senders);

        // Connectors.
        let shutdown = CancellationToken::new();
        let mut connector_joins = Vec::new();
        for src in connectors::build_sources(&config.model, &p.mqtt) {
            info!(connector = %src.name(), "starting connector");
            connector_joins.push(tokio::spawn(src.run(
                sink.clone(),
                health.clone(),
                shutdown.clone(),
            )));
        }

        // Pipelines in the background.
        let pipelines = (p.pipelines.interval_s > 0 && config.pipelines.iter().any(|p| p.enabled))
            .then(|| {
                let runner = crate::pipeline::run::Runner::new(
                    lake.clone(),
                    config.model.clone(),
                    p.pipelines.clone(),
                );
                tokio::spawn(pipeline_loop(
                    runner,
                    config.pipelines.clone(),
                    Duration::from_secs(p.pipelines.interval_s),
                    shutdown.clone(),
                ))
            });

        // Compaction of the ingest tables in the background.
        let compaction = (p.lake.compact_interval_s > 0).then(|| {
            tokio::spawn(compaction_loop(
                lake.clone(),
                p.lake.target_file_mb << 20,
                Duration::from_secs(p.lake.compact_interval_s),
                shutdown.clone(),
            ))
        });

        Ok(Platform {
            compaction,
            pipelines,
            http_addr,
            lake,
            twins,
            health,
            ingest,
            config,
            writers: all_writers,
            writer_joins,
            shutdown,
            connector_joins,
            sink: Some(sink),
            shard_joins,
            collector_stop,
            collector: Some(collector),
            http,
            actor_thread: Some(actor_thread),
        })
    }

    /// A sink that feeds envelopes into this platform's ingest stage (for
    /// embedding ironlake or driving it from a custom source).
    pub fn sink(&self) -> Option<IngestSink> {
        self.sink.clone()
    }

    /// Writer of a table (for status and explicit flushes).
    pub fn writer(&self, t: Table) -> Option<&TableWriter> {
        self.writers.iter().find(|w| w.table() == t)
    }

    /// Commit everything buffered in every writer now.
    pub async fn flush(&self) -> Result<(), String> {
        for w in &self.writers {
            w.flush().await?;
        }
        Ok(())
    }

    /// Stop in order: connectors, ingest (drained), twins (final checkpoint),
    /// writers (final commit), HTTP and actors.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(j) = self.compaction.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), j).await;
        }
        if let Some(j) = self.pipelines.take() {
            // An update in flight finishes its commit (or leaves nothing).
            let _ = tokio::time::timeout(Duration::from_secs(30), j).await;
        }
        for j in self.connector_joins.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), j).await;
        }
        self.sink = None;
        for j in self.shard_joins.drain(..) {
            let _ = j.await;
        }
        // Final checkpoint of every twin, written directly.
        let replies =
            futures::future::join_all(self.twins.machines.iter().map(|a| a.send(FinalCheckpoint)))
                .await;
        let (mut states, mut events) = (Vec::new(), Vec::new());
        for (row, mut ev) in replies.into_iter().flatten() {
            states.push(row);
            events.append(&mut ev);
        }
        self.collector_stop.cancel();
        if let Some(c) = self.collector.take() {
            let _ = c.await;
        }
        if let (Some(ew), Some(sw)) = (
            self.writer(Table::SilverAssetEvents).cloned(),
            self.writer(Table::GoldAssetState).cloned(),
        ) {
            twins::write_rows(&ew, &sw, &mut events, &mut states).await;
        }
        for w in self.writers.drain(..) {
            w.close().await;
        }
        for j in self.writer_joins.drain(..) {
            let _ = j.await;
        }
        self.http.stop(true).await;
        if let Some(t) = self.actor_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        info!("platform stopped");
    }
}

/// Run `round` every `every` (the first time one interval after start)
/// until `stop`; a round in progress finishes (rounds check `stop` between
/// their items).
async fn every_until<F, Fut>(every: Duration, stop: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        round().await;
    }
}

/// Compact every ingest table each `every`, until `stop`. Writers commit
/// small files every second; compaction keeps reads fast. It runs beside
/// the writers: appends and compaction do not conflict in Delta (only
/// compaction removes files, and only files it rewrote).
async fn compaction_loop(
    lake: Arc<Lakehouse>,
    target_bytes: u64,
    every: Duration,
    stop: CancellationToken,
) {
    every_until(every, stop.clone(), || async {
        for t in Table::ALL {
            if stop.is_cancelled() {
                return;
            }
            match lake.optimize(t.name(), target_bytes).await {
                Ok(r) if r.files_removed > 0 => {
                    info!(
                        table = t.name(),
                        files = r.files_removed,
                        into = r.files_added,
                        "compacted"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(table = t.name(), error = %e, "compaction failed; will retry"),
            }
        }
    })
    .await
}

/// Run every enabled pipeline each `every`, until `stop`.
async fn pipeline_loop(
    runner: crate::pipeline::run::Runner,
    pipelines: Vec<crate::pipeline::spec::Pipeline>,
    every: Duration,
    stop: CancellationToken,
) {
    every_until(every, stop.clone(), || async {
        for p in pipelines.iter().filter(|p| p.enabled) {
            if stop.is_cancelled() {
                return;
            }
            let r = runner.run(p, Default::default(), None).await;
            if r.status == crate::pipeline::run::Status::Ok {
                info!(pipeline = %r.pipeline, rows_in = r.rows_in, rows_out = r.rows_out, dropped = r.rows_dropped, "pipeline updated");
            }
        }
    })
    .await
}

/// Newest committed silver timestamp per (asset, signal) over the last two
/// days, so redelivered readings after a restart are recognised as duplicates.
async fn dedup_floors(lake: &Lakehouse, config: &Config) -> HashMap<(AssetIdx, SignalIdx), i64> {
    let since = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d");
    let sql = format!(
        "SELECT asset_id, signal, max(ts) FROM silver.readings WHERE date >= DATE '{since}' GROUP BY asset_id, signal"
    );
    let mut out = HashMap::new();
    match crate::query::SqlEngine::new(Arc::new(lake.clone()))
        .query(&sql)
        .await
    {
        Ok(result) => {
            for b in result.batches {
                let (Ok(a), Ok(s)) = (string_column(&b, 0), string_column(&b, 1)) else {
                    continue;
                };
                let t = b.column(2).as_primitive::<TimestampMicrosecondType>();
                for i in 0..b.num_rows() {
                    if let Some(asset) = config.model.asset(a.value(i)) {
                        if let Some(sig) = asset.twin.signal(s.value(i)) {
                            out.insert((asset.idx, sig), t.value(i) / 1000);
                        }
                    }
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot read silver watermarks; duplicate filter starts empty"),
    }
    out
}
