//! Twin actors (actix): one per machine, one per line, one per plant.
//!
//! Machine twins run on a few arbiters (actor threads) under supervisors that
//! restart a failed twin from its last checkpoint. Lines and plants aggregate
//! what their children push. Twins never do I/O themselves: asset events and
//! checkpoints leave through one bounded channel to a collector task that
//! batches them into the lake.

pub mod alarm;
pub mod asset;
pub mod core;
pub mod features;
pub mod line;
pub mod live;
pub mod scoring;
pub mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

pub use self::core::{AckError, ActiveAlarm, AssetSnapshot, TwinCore, TwinIdentity, TypedReading};
use crate::assets::AssetModel;
use crate::config::TwinConfig;
use crate::lake::rows::{
    asset_state_batch, events_batch, predictions_batch, AssetEventRow, AssetStateRow, PredictionRow,
};
use crate::lake::writer::TableWriter;
use crate::metrics::LatencyProbe;
pub use asset::{
    Acknowledge, AssetSummary, GetAlarms, GetSnapshot, GetSummary, Ingest, MachineTwin, Restart,
    TakeCheckpoint,
};
pub use line::{Aggregate, GetAggregate, LineTwin, PlantTwin};

/// What twins emit towards the lake.
#[derive(Debug)]
pub enum TwinOutput {
    Events(Vec<AssetEventRow>),
    State(Box<AssetStateRow>),
    Predictions(Vec<PredictionRow>),
}

/// Read-only context shared by all machine twins.
pub struct TwinShared {
    pub cfg: TwinConfig,
    pub out: mpsc::Sender<TwinOutput>,
    /// When set, records `apply time - source time` (REST visibility delay).
    pub visibility: Option<Arc<LatencyProbe>>,
    /// Connection status of every source (a disconnected source makes its
    /// machine DISCONNECTED at once).
    pub health: Option<Arc<crate::connectors::HealthBoard>>,
    /// The ingest journal that checkpoint positions refer to.
    pub journal_id: Arc<str>,
    /// Where live events go (`GET /api/stream`).
    pub live: Arc<live::LiveHub>,
    /// Scores the twins' feature rows (the model registry's champions).
    pub scorer: Option<Arc<dyn scoring::Scorer>>,
    /// Where a restarted twin finds its last durable checkpoint (none: it
    /// restarts empty).
    pub checkpoints: Option<CheckpointSource>,
}

/// `(plant, asset id)` -> the asset's newest checkpoint JSON in
/// `gold.asset_state`. A twin keeps no copy of its last checkpoint in
/// memory (about 8 KB for a machine of 10 signals, 800 MB for 100,000):
/// a restart, which is rare, reads it back.
pub type CheckpointSource = Arc<
    dyn Fn(
            Arc<str>,
            Arc<str>,
        ) -> futures::future::BoxFuture<'static, Result<Option<String>, String>>
        + Send
        + Sync,
>;

/// Addresses of every twin.
#[derive(Clone)]
pub struct TwinRegistry {
    /// The live feed the twins publish to.
    pub live: Arc<live::LiveHub>,
    /// Machine twins by asset index.
    pub machines: Arc<Vec<Addr<MachineTwin>>>,
    /// Reading batches in each machine twin's mailbox.
    pub mailboxes: Arc<Vec<AtomicU32>>,
    pub lines: Arc<HashMap<String, Addr<LineTwin>>>,
    pub plants: Arc<HashMap<String, Addr<PlantTwin>>>,
}

impl TwinRegistry {
    /// Reading batches waiting in mailboxes: (most in one, total).
    pub fn mailbox_depth(&self) -> (u32, u64) {
        self.mailboxes.iter().fold((0, 0), |(m, t), d| {
            let d = d.load(Ordering::Relaxed);
            (m.max(d), t + d as u64)
        })
    }
}

#[async_trait::async_trait]
impl crate::ingest::TwinFeed for TwinRegistry {
    async fn deliver(
        &self,
        asset: crate::assets::AssetIdx,
        batch: crate::ingest::TwinBatch,
    ) -> bool {
        let Some(addr) = self.machines.get(asset as usize) else {
            return false;
        };
        let depth = &self.mailboxes[asset as usize];
        depth.fetch_add(1, Ordering::Relaxed);
        let ok = match addr.try_send(Ingest(batch)) {
            Ok(()) => true,
            Err(SendError::Full(msg)) => addr.send(msg).await.is_ok(),
            Err(SendError::Closed(_)) => false,
        };
        if !ok {
            depth.fetch_sub(1, Ordering::Relaxed);
        }
        ok
    }
}

/// Start all twins. Must be called inside a running actix `System`. The
/// arbiters are returned so the caller decides when they stop.
pub fn spawn_all(
    model: &AssetModel,
    shared: Arc<TwinShared>,
    mut checkpoints: HashMap<String, String>,
) -> (TwinRegistry, Vec<Arbiter>) {
    let arbiters: Vec<Arbiter> = (0..shared.cfg.arbiters.max(1))
        .map(|_| Arbiter::new())
        .collect();
    let mut plants = HashMap::new();
    for p in &model.plants {
        let lines = model
            .lines_of(p.id.as_str())
            .map(|l| (l.id.to_string(), l.assets.len()));
        plants.insert(p.id.to_string(), PlantTwin::new(lines).start());
    }
    let mut lines = HashMap::new();
    for l in &model.lines {
        let plant = plants.get(l.plant.as_str()).cloned();
        lines.insert(
            l.id.to_string(),
            LineTwin::new(l.id.to_string(), l.assets.len(), plant).start(),
        );
    }
    let mut machines = Vec::with_capacity(model.assets.len());
    let mailboxes: Arc<Vec<AtomicU32>> =
        Arc::new((0..model.assets.len()).map(|_| AtomicU32::new(0)).collect());
    for a in &model.assets {
        let arb = &arbiters[a.idx as usize % arbiters.len()];
        let mut core = TwinCore::new(TwinIdentity::of(a), &shared.cfg);
        core.journal = shared.journal_id.clone();
        core.scorer = shared.scorer.clone();
        let cp = checkpoints.remove(a.id.as_str());
        let line = lines.get(a.line.as_str()).cloned();
        let sh = shared.clone();
        let mb = mailboxes.clone();
        machines.push(Supervisor::start_in_arbiter(&arb.handle(), move |_| {
            MachineTwin::new(core, cp, line, sh, mb)
        }));
    }
    (
        TwinRegistry {
            live: shared.live.clone(),
            machines: Arc::new(machines),
            mailboxes,
            lines: Arc::new(lines),
            plants: Arc::new(plants),
        },
        arbiters,
    )
}

/// Collect twin output into lake batches until `stop` fires or every sender is gone.
pub fn spawn_collector(
    mut rx: mpsc::Receiver<TwinOutput>,
    stop: tokio_util::sync::CancellationToken,
    events: TableWriter,
    states: TableWriter,
    predictions: Option<TableWriter>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ev: Vec<AssetEventRow> = Vec::new();
        let mut st: Vec<AssetStateRow> = Vec::new();
        let mut pr: Vec<PredictionRow> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            // (stream ended, time to write)
            let (done, due) = tokio::select! {
                m = rx.recv() => match m {
                    Some(TwinOutput::Events(mut r)) => { ev.append(&mut r); (false, false) }
                    Some(TwinOutput::State(r)) => { st.push(*r); (false, false) }
                    Some(TwinOutput::Predictions(mut r)) => { pr.append(&mut r); (false, false) }
                    None => (true, true),
                },
                _ = tick.tick() => (false, true),
                _ = stop.cancelled() => {
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            TwinOutput::Events(mut r) => ev.append(&mut r),
                            TwinOutput::State(r) => st.push(*r),
                            TwinOutput::Predictions(mut r) => pr.append(&mut r),
                        }
                    }
                    (true, true)
                }
            };
            if due || ev.len() >= 4096 || st.len() >= 1024 || pr.len() >= 4096 {
                write_rows(&events, &states, &mut ev, &mut st).await;
                if !pr.is_empty() {
                    match (&predictions, predictions_batch(&pr)) {
                        (Some(w), Ok(b)) => {
                            w.append(b).await;
                        }
                        (None, _) => {}
                        (_, Err(e)) => warn!(error = %e, "cannot build predictions batch"),
                    }
                    pr.clear();
                }
            }
            if done {
                break;
            }
        }
    })
}

/// Append collected rows to their writers (waits when the writers are saturated).
pub async fn write_rows(
    events: &TableWriter,
    states: &TableWriter,
    ev: &mut Vec<AssetEventRow>,
    st: &mut Vec<AssetStateRow>,
) {
    if !ev.is_empty() {
        match events_batch(ev) {
            Ok(b) => {
                events.append(b).await;
            }
            Err(e) => warn!(error = %e, "cannot build asset events batch"),
        }
        ev.clear();
    }
    if !st.is_empty() {
        match asset_state_batch(st) {
            Ok(b) => {
                states.append(b).await;
            }
            Err(e) => warn!(error = %e, "cannot build asset state batch"),
        }
        st.clear();
    }
}
