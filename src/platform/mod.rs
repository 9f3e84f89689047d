//! Wiring of one running ironlake: lake writers, the ingest journal and
//! shards (replaying what the journal holds beyond the tables), twin
//! actors, connectors, the query pool, background jobs and the REST API,
//! started in dependency order and stopped in reverse so that nothing in
//! flight is lost.
//!
//! Threads: the caller's tokio runtime runs connectors, ingest shards and
//! writers; the query pool runs SQL, pipelines and compaction on threads of
//! its own at a lower priority; a dedicated thread runs the actix system
//! (twin arbiters and HTTP workers).
//!
//! Failures: a connector that stops early and an ingest shard that fails
//! are restarted (a shard from its journal), each counted in `/metrics`.

mod config;
mod journal;
pub mod loops;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use journal::JournalMeta;

use crate::assets::AssetIdx;
use crate::connectors::{DecodeLimits, HealthBoard, IngestSink, SourceContext};
use crate::ingest::validate::TimePolicy;
use crate::ingest::{
    CheckpointLedger, IngestStats, IngestWriters, ReplayMarks, Shard, ShardSetup, TwinFeed,
};
use crate::lake::writer::{TableWriter, WriterOptions};
use crate::lake::{LakeError, Lakehouse, Table};
use crate::metrics::{LatencyProbe, Registry};
use crate::query::QueryPool;
use crate::time::{now_ms, DAY_MS};
use crate::twins::{self, TwinOutput, TwinRegistry, TwinShared};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("actor system: {0}")]
    Actors(String),
    #[error(transparent)]
    Connector(#[from] crate::connectors::ConnectorError),
    #[error(transparent)]
    Journal(#[from] crate::ingest::journal::JournalError),
}

/// Optional instrumentation (used by `ironlake bench`).
#[derive(Default, Clone)]
pub struct Probes {
    /// Source time -> applied in the twin (visible to REST).
    pub visibility: Option<Arc<LatencyProbe>>,
    /// Source time -> committed in silver.
    pub silver_commit: Option<Arc<LatencyProbe>>,
    /// Source time -> durable in the journal (acknowledged to the broker).
    pub acked: Option<Arc<LatencyProbe>>,
    /// Source time -> received by ironlake (the broker's share of the delay).
    pub received: Option<Arc<LatencyProbe>>,
}

/// How long a stopping platform waits for each stage before it leaves the
/// rest to the journal.
const STOP_STAGE: Duration = Duration::from_secs(15);

/// A running platform.
pub struct Platform {
    /// Address the REST API listens on.
    pub http_addr: SocketAddr,
    pub lake: Arc<Lakehouse>,
    pub twins: TwinRegistry,
    pub health: Arc<HealthBoard>,
    pub ingest: Arc<IngestStats>,
    pub config: Config,
    /// The journal's identity.
    pub journal: JournalMeta,
    /// Every metric of this platform (`GET /metrics`).
    pub registry: Registry,
    writers: Vec<TableWriter>,
    writer_joins: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    shard_stop: CancellationToken,
    connector_joins: Vec<JoinHandle<()>>,
    landing_join: Option<JoinHandle<()>>,
    sink: Option<IngestSink>,
    shard_joins: Vec<JoinHandle<Option<Shard>>>,
    ledger: Arc<CheckpointLedger>,
    collector_stop: CancellationToken,
    collector: Option<JoinHandle<()>>,
    http: actix_web::dev::ServerHandle,
    actor_thread: Option<std::thread::JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    pool: Option<Arc<QueryPool>>,
}

impl Platform {
    /// Start everything described by `config`.
    pub async fn start(config: Config, probes: Probes) -> Result<Self, PlatformError> {
        let p = &config.platform;
        config.connectors.start_services()?;
        let lake = Arc::new(Lakehouse::open(&p.lake.root)?);
        lake.ensure_all().await?;
        let register: Vec<crate::lake::rows::AssetRow> = config
            .model
            .assets
            .iter()
            .map(|a| crate::lake::rows::AssetRow {
                asset_id: a.id.to_string(),
                name: a.name.clone(),
                plant: a.plant.to_string(),
                area: a.area.clone(),
                line: a.line.to_string(),
                twin_type: a.twin.kind.clone(),
                protocol: a.source.protocol.clone(),
                signals: a.twin.signals.len() as i32,
                x_m: a.pos.map(|p| p[0]),
                y_m: a.pos.map(|p| p[1]),
            })
            .collect();
        match lake.sync_register(&register).await {
            Ok(true) => info!(
                assets = register.len(),
                "asset register written to silver.assets"
            ),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot write the asset register (silver.assets)"),
        }
        let pool = Arc::new(QueryPool::new(&p.sql)?);
        let registry = Registry::new();

        // The journal, and what each table already holds of it.
        let jdir = journal::journal_dir(&p.ingest.journal_dir, &lake);
        let mut journals = journal::Journals::open(
            &jdir,
            p.ingest.effective_shards(),
            p.ingest.journal_segment_mib << 20,
        )?;
        let n_shards = journals.meta.shards;
        let app_prefix = journals.app_prefix();
        let mut writers = HashMap::new();
        let mut writer_joins = Vec::new();
        let latency = crate::metrics::HistogramVec::new(
            crate::metrics::HistogramOpts::new(
                "ironlake_commit_latency_seconds",
                "From the first buffered row to its Delta commit, per table",
            )
            .buckets(crate::metrics::LATENCY_BUCKETS.to_vec()),
            &["table"],
        )
        .expect("valid histogram");
        let _ = registry.register(Box::new(latency.clone()));
        for t in Table::ALL {
            let journaled = matches!(
                t,
                Table::BronzeRawEvents | Table::SilverReadings | Table::SilverQuarantine
            );
            let opts = WriterOptions {
                commit_latency: (t == Table::SilverReadings)
                    .then(|| probes.silver_commit.clone())
                    .flatten(),
                streams: if journaled { n_shards } else { 0 },
                app_prefix: app_prefix.clone(),
                latency: Some(latency.with_label_values(&[t.name()])),
            };
            let (w, j) = TableWriter::start(&lake, t, &p.lake, opts).await?;
            writers.insert(t, w);
            writer_joins.push(j);
        }
        let w = |t: Table| writers[&t].clone();

        // Twin checkpoints: where each twin resumes and what it covers.
        let ids: Vec<&str> = config.model.assets.iter().map(|a| a.id.as_str()).collect();
        let checkpoints = match lake.latest_checkpoints(&ids).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read checkpoints; twins start empty");
                HashMap::new()
            }
        };
        let model = config.model.clone();
        let mut twin_marks: HashMap<AssetIdx, u64> = HashMap::new();
        // Only the journal position is read here (the twins parse the rest
        // on their own threads).
        #[derive(serde::Deserialize)]
        struct Mark {
            #[serde(default)]
            journal: String,
            #[serde(default)]
            lsn: u64,
        }
        for (id, json) in &checkpoints {
            if let (Some(a), Ok(cp)) = (model.asset(id), serde_json::from_str::<Mark>(json)) {
                if cp.journal == journals.meta.id {
                    twin_marks.insert(a.idx, cp.lsn);
                }
            }
        }
        let ledger = Arc::new(CheckpointLedger::new(
            (0..model.assets.len() as AssetIdx)
                .map(|a| twin_marks.get(&a).copied().unwrap_or(0))
                .collect(),
        ));
        let max_past_ms = p.ingest.max_past_days as i64 * DAY_MS;
        let max_future_ms = p.ingest.max_future_skew_s as i64 * 1000;
        let seeds = match journal::saved_watermarks(&jdir, &model) {
            Some(s) => s,
            None => {
                journal::watermarks_from_silver(&lake, &model, max_past_ms, max_future_ms).await
            }
        };
        let events_until: HashMap<AssetIdx, i64> = if journals.pending_bytes() > 0 {
            lake.newest_ts(
                Table::SilverAssetEvents,
                &["asset_id"],
                now_ms() - max_past_ms,
                i64::MAX / 1000,
            )
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, t)| Some((model.asset(&k[0])?.idx, t)))
            .collect()
        } else {
            HashMap::new()
        };
        info!(
            checkpoints = checkpoints.len(),
            journal = %jdir.display(),
            pending_bytes = journals.pending_bytes(),
            "lakehouse ready at {}",
            lake.root()
        );

        let (out_tx, out_rx) = mpsc::channel::<TwinOutput>(4096);
        let collector_stop = CancellationToken::new();
        let collector = twins::spawn_collector(
            out_rx,
            collector_stop.clone(),
            w(Table::SilverAssetEvents),
            w(Table::GoldAssetState),
            Some(w(Table::GoldPredictions)),
        );
        // The models the twins serve (hot-swapped when the registry changes).
        let champions = p.models.serve.then(|| {
            let reg = crate::ml::registry::Registry::open(&p.models.registry);
            match reg.install_builtin() {
                Ok(0) => {}
                Ok(n) => info!(registry = %p.models.registry, files = n, "model registry started with the built-in champions"),
                Err(e) => warn!(error = %e, "cannot install the built-in champions"),
            }
            let c = crate::ml::serve::Champions::load(reg, &config.model);
            info!(registry = %p.models.registry, served = c.served().len(), "models");
            c.clone().spawn_watch(
                config.model.clone(),
                std::time::Duration::from_secs(p.models.reload_s.max(1)),
                collector_stop.clone(),
            );
            if p.models.drift_interval_s > 0 {
                crate::ml::drift::spawn_schedule(
                    lake.clone(),
                    crate::ml::registry::Registry::open(&p.models.registry),
                    config.model.clone(),
                    crate::ml::drift::Monitor {
                        every: std::time::Duration::from_secs(p.models.drift_interval_s),
                        window_ms: p.models.drift_window_s as i64 * 1000,
                        quality_days: p.models.quality_days as i64,
                    },
                    collector_stop.clone(),
                );
            }
            c
        });
        let health = Arc::new(HealthBoard::new(&config.model, &config.connectors));
        let shared = Arc::new(TwinShared {
            cfg: p.twin.clone(),
            out: out_tx,
            visibility: probes.visibility.clone(),
            health: Some(health.clone()),
            journal_id: Arc::from(journals.meta.id.as_str()),
            live: Arc::new(twins::live::LiveHub::new(
                config.model.assets.len(),
                p.http.live_buffer,
            )),
            scorer: champions
                .clone()
                .map(|c| c as Arc<dyn crate::twins::scoring::Scorer>),
            checkpoints: Some({
                let (lake, handle) = (lake.clone(), pool.handle().clone());
                Arc::new(move |plant: Arc<str>, asset: Arc<str>| {
                    let lake = lake.clone();
                    let job = handle.spawn(async move {
                        lake.latest_checkpoint(&plant, &asset)
                            .await
                            .map_err(|e| e.to_string())
                    });
                    Box::pin(async move { job.await.map_err(|e| e.to_string())? })
                })
            }),
        });

        let ingest = Arc::new(IngestStats::new());
        let _ = ingest.register(&registry);
        let all_writers: Vec<TableWriter> = Table::ALL.iter().map(|t| w(*t)).collect();

        // The actix system: twins and HTTP.
        let (tx, rx) = std::sync::mpsc::channel();
        let http_listen = p.http.listen;
        let sql = crate::query::SqlEngine::in_pool(lake.clone(), &pool);
        let api = crate::api::ApiParts {
            model: model.clone(),
            health: health.clone(),
            sql: sql.clone(),
            pool: pool.clone(),
            pipelines: config.pipelines.clone(),
            lake: lake.clone(),
            writers: all_writers.clone(),
            ingest: ingest.clone(),
            registry: registry.clone(),
            connectors: config.connectors.clone(),
            started_ms: now_ms(),
            max_streams: p.http.max_streams,
            model_registry: crate::ml::registry::Registry::open(&p.models.registry),
            champions: champions.clone(),
            model_cache: Default::default(),
        };
        let actor_model = model.clone();
        let actor_thread = std::thread::Builder::new()
            .name("ironlake-actors".into())
            .spawn(move || {
                let sys = actix::System::new();
                sys.block_on(async move {
                    let (registry, arbiters) = twins::spawn_all(&actor_model, shared, checkpoints);
                    let state = crate::api::ApiState {
                        parts: api,
                        twins: registry.clone(),
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

        // Ingest shards: replay, then run, supervised.
        let feed: Arc<dyn TwinFeed> = Arc::new(twins.clone());
        let iw = IngestWriters {
            bronze: w(Table::BronzeRawEvents),
            silver: w(Table::SilverReadings),
            quarantine: w(Table::SilverQuarantine),
        };
        let shard_stop = CancellationToken::new();
        let mut senders = Vec::new();
        let mut shard_joins = Vec::new();
        // Assets go to shards by a hash of their id: adding or removing a
        // machine does not move the others (their journal streams and
        // duplicate filters stay where they are).
        let shard_of: Arc<Vec<usize>> = Arc::new(
            model
                .assets
                .iter()
                .map(|a| crate::connectors::stable_hash(a.id.as_str()) as usize % n_shards)
                .collect(),
        );
        let route = {
            let shard_of = shard_of.clone();
            move |a: Option<AssetIdx>| {
                a.and_then(|a| shard_of.get(a as usize).copied())
                    .unwrap_or(0)
            }
        };
        for (i, jr) in journals.streams.drain(..).enumerate() {
            let (stx, srx) = mpsc::channel(p.ingest.queue);
            senders.push(stx);
            let mark = |w: &TableWriter| {
                w.marks(i)
                    .map_or(0, |m| m.durable.load(std::sync::atomic::Ordering::Relaxed))
            };
            let shard = Shard::new(ShardSetup {
                id: i,
                model: model.clone(),
                feed: feed.clone(),
                writers: iw.clone(),
                stats: ingest.clone(),
                journal: jr,
                lake: lake.clone(),
                time: TimePolicy {
                    max_future_ms,
                    max_past_ms,
                },
                dedup_recent: p
                    .ingest
                    .dedup_per_signal(model.assets.iter().map(|a| a.twin.signals.len()).sum()),
                ledger: ledger.clone(),
                seeds: seeds
                    .iter()
                    .filter(|((a, _), _)| route(Some(*a)) == i)
                    .map(|(k, v)| (*k, *v))
                    .collect(),
                replay: ReplayMarks {
                    bronze: mark(&iw.bronze),
                    silver: mark(&iw.silver),
                    quarantine: mark(&iw.quarantine),
                    twins: twin_marks
                        .iter()
                        .filter(|(a, _)| route(Some(**a)) == i)
                        .map(|(a, l)| (*a, *l))
                        .collect(),
                    events_until: events_until.clone(),
                },
                stop: shard_stop.clone(),
                ack_probe: probes.acked.clone(),
                received_probe: probes.received.clone(),
                limits: DecodeLimits {
                    max_payload: p.ingest.max_payload_kib << 10,
                    max_fields: p.ingest.max_fields,
                },
            });
            shard_joins.push(tokio::spawn(loops::supervise_shard(
                shard,
                srx,
                ingest.clone(),
            )));
        }
        let mut sink = IngestSink::new(senders, Arc::new(route), p.ingest.queue_mib << 20);
        if let Some(k) = config
            .connectors
            .get::<crate::connectors::kafka::KafkaConnector>()
        {
            k.stats().register(&registry);
        }
        if let Some(m) = config
            .connectors
            .get::<crate::connectors::modbus::ModbusConnector>()
        {
            m.stats().register(&registry);
        }
        if let Some(o) = config
            .connectors
            .get::<crate::connectors::opcua::OpcuaConnector>()
        {
            o.stats().register(&registry);
        }
        // The landing folder's bulk path.
        let mut landing_join = None;
        let shutdown = CancellationToken::new();
        if let Some(files) = config
            .connectors
            .get::<crate::connectors::files::FilesConnector>()
        {
            files.stats().register(&registry);
            let (ftx, frx) = mpsc::channel(2);
            sink = sink.with_files(ftx);
            let (slot_base, slots, marks) =
                crate::ingest::landing::LandingStage::slots_of(&model, &seeds);
            let stage = crate::ingest::landing::LandingStage {
                model: model.clone(),
                lake: lake.clone(),
                feed: feed.clone(),
                stats: ingest.clone(),
                time: TimePolicy {
                    max_future_ms,
                    max_past_ms,
                },
                stop: shutdown.clone(),
                marks: parking_lot::Mutex::new(marks),
                slot_base,
                slots,
            };
            landing_join = Some(pool.handle().spawn(stage.run(frx)));
        }

        // Connectors, supervised.
        let mut connector_joins = Vec::new();
        let limits = DecodeLimits {
            max_payload: p.ingest.max_payload_kib << 10,
            max_fields: p.ingest.max_fields,
        };
        let state_dir = jdir.join("connectors");
        std::fs::create_dir_all(&state_dir)?;
        let cx = SourceContext {
            sink: sink.clone(),
            health: health.clone(),
            shutdown: shutdown.clone(),
            limits,
            state_dir,
        };
        for (_, src) in config.connectors.sources() {
            info!(connector = %src.name(), "starting connector");
            connector_joins.push(tokio::spawn(loops::supervise_connector(src, cx.clone())));
        }

        // Background work.
        let mut background = Vec::new();
        // The SQL engine opens every table's snapshot now, on the query
        // pool, so that dashboards' first queries find them in memory.
        {
            let (sql, stop) = (sql.clone(), shutdown.clone());
            background.push(pool.handle().spawn(async move {
                let t0 = std::time::Instant::now();
                tokio::select! {
                    n = sql.warm_snapshots() => info!(
                        tables = n,
                        ms = t0.elapsed().as_millis() as u64,
                        "SQL snapshots of the lakehouse's tables loaded"
                    ),
                    _ = stop.cancelled() => {}
                }
            }));
        }
        let full_round_ms = Arc::new(std::sync::atomic::AtomicI64::new(0));
        background.push(tokio::spawn(loops::checkpoint_loop(
            twins.clone(),
            w(Table::SilverAssetEvents),
            w(Table::GoldAssetState),
            ledger.clone(),
            Duration::from_secs(p.twin.checkpoint_interval_s),
            full_round_ms.clone(),
            shutdown.clone(),
        )));
        if p.pipelines.interval_s > 0 && config.pipelines.iter().any(|p| p.enabled) {
            let runner =
                crate::pipeline::run::Runner::new(lake.clone(), model.clone(), p.pipelines.clone())
                    .in_pool(&pool);
            background.push(pool.handle().spawn(loops::pipeline_loop(
                runner,
                config.pipelines.clone(),
                Duration::from_secs(p.pipelines.interval_s),
                shutdown.clone(),
            )));
        }
        if p.lake.compact_interval_s > 0 {
            background.push(pool.handle().spawn(loops::compaction_loop(
                lake.clone(),
                p.lake.target_file_mb << 20,
                Duration::from_secs(p.lake.compact_interval_s),
                Some(loops::CheckpointRetention {
                    keep_days: p.twin.checkpoint_keep_days,
                    current: Arc::new(model.assets.iter().map(|a| a.id.to_string()).collect()),
                    full_round_ms,
                }),
                p.lake.vacuum_retention_hours,
                shutdown.clone(),
            )));
        }

        Ok(Platform {
            http_addr,
            lake,
            twins,
            health,
            ingest,
            journal: journals.meta.clone(),
            registry,
            config,
            writers: all_writers,
            writer_joins,
            shutdown,
            shard_stop,
            connector_joins,
            landing_join,
            sink: Some(sink),
            shard_joins,
            ledger,
            collector_stop,
            collector: Some(collector),
            http,
            actor_thread: Some(actor_thread),
            background,
            pool: Some(pool),
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

    /// Stop in order: connectors (acknowledging what is durable), ingest
    /// (drained), twins (final checkpoint), writers (final commit), the
    /// journal (trimmed to what the tables hold), HTTP, actors and the
    /// query pool. Each stage has a bounded time: what does not make it
    /// (a storage outage) stays in the journal and is replayed at the next
    /// start.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for j in self.background.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), j).await;
        }
        for j in self.connector_joins.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(8), j).await;
        }
        self.sink = None;
        if let Some(j) = self.landing_join.take() {
            if tokio::time::timeout(STOP_STAGE, j).await.is_err() {
                warn!("a landing slice did not commit in time; it is read again at the next start");
            }
        }
        let mut shards = Vec::new();
        let deadline = tokio::time::Instant::now() + STOP_STAGE;
        for j in self.shard_joins.drain(..) {
            match tokio::time::timeout_at(deadline, j).await {
                Ok(Ok(Some(s))) => shards.push(s),
                Ok(_) => {}
                Err(_) => {
                    warn!("an ingest shard did not finish in time; the journal keeps its data")
                }
            }
        }
        self.shard_stop.cancel();
        // Final checkpoint of every twin, written directly.
        if let (Some(ew), Some(sw)) = (
            self.writer(Table::SilverAssetEvents).cloned(),
            self.writer(Table::GoldAssetState).cloned(),
        ) {
            let round = loops::checkpoint_round(&self.twins, &ew, &sw, &self.ledger);
            if tokio::time::timeout(STOP_STAGE, round).await.is_err() {
                warn!("final twin checkpoints did not commit in time; the journal keeps what they need");
            }
        }
        self.collector_stop.cancel();
        if let Some(c) = self.collector.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
        for w in self.writers.drain(..) {
            w.close().await;
        }
        for j in self.writer_joins.drain(..) {
            let _ = j.await;
        }
        for s in shards.iter_mut() {
            s.final_trim();
        }
        // Open live streams end now rather than at the server's shutdown timeout.
        self.twins.live.close();
        self.http.stop(true).await;
        if let Some(t) = self.actor_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(p) = self.pool.take() {
            if let Ok(p) = Arc::try_unwrap(p) {
                let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
            }
        }
        info!("platform stopped");
    }
}

/// Catch a panic of a future as an error message.
pub(crate) async fn catch<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    std::panic::AssertUnwindSafe(f)
        .catch_unwind()
        .await
        .map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into())
        })
}
