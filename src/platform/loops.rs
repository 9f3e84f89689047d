//! The platform's long-running tasks: supervisors of ingest shards and
//! connectors, twin checkpoint rounds, pipeline updates and compaction.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::catch;
use crate::connectors::{Queued, Source, SourceContext};
use crate::ingest::{CheckpointLedger, IngestStats, Shard};
use crate::lake::writer::TableWriter;
use crate::lake::{Lakehouse, Table};
use crate::twins::{self, TakeCheckpoint, TwinRegistry};

/// Run a shard: replay its journal, then take envelopes until every sender
/// is gone. A shard that fails is rebuilt from its journal (what the
/// writers and twins already have is not handed to them again) and goes on.
/// Returns the shard for its final trim.
pub async fn supervise_shard(
    mut shard: Shard,
    mut rx: mpsc::Receiver<Queued>,
    stats: Arc<IngestStats>,
) -> Option<Shard> {
    if let Err(p) = catch(shard.replay()).await {
        error!(shard = shard.id(), panic = %p, "journal replay failed; retrying from the writers' positions");
        stats.shard_restarts.inc();
        if catch(shard.recover()).await.is_err() {
            return None;
        }
    }
    let mut restarts = 0u32;
    loop {
        match catch(shard.run(&mut rx)).await {
            Ok(()) => return Some(shard),
            Err(p) => {
                restarts += 1;
                stats.shard_restarts.inc();
                error!(shard = shard.id(), panic = %p, restarts, "ingest shard failed; restarting it from its journal");
                tokio::time::sleep(Duration::from_millis(200 * restarts.min(25) as u64)).await;
                if let Err(p) = catch(shard.recover()).await {
                    error!(shard = shard.id(), panic = %p, "ingest shard cannot recover; its queue stops (the journal keeps what was acknowledged)");
                    return None;
                }
            }
        }
    }
}

/// Run a connector; if it ends (or fails) before shutdown, start a fresh one
/// after a pause. Connectors keep their bindings; their state (sessions,
/// connections) is rebuilt.
pub async fn supervise_connector(src: Box<dyn Source>, cx: SourceContext) {
    let name = src.name();
    let mut src = Some(src);
    let mut restarts = 0u32;
    loop {
        let Some(s) = src.take() else { return };
        let respawn = s.respawn();
        let r = catch(s.run(cx.clone())).await;
        if cx.shutdown.is_cancelled() {
            return;
        }
        restarts += 1;
        match r {
            Ok(()) => {
                warn!(connector = %name, restarts, "connector stopped on its own; restarting it")
            }
            Err(p) => {
                error!(connector = %name, panic = %p, restarts, "connector failed; restarting it")
            }
        }
        src = respawn;
        tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(restarts.min(10) as u64)) => {}
        }
    }
}

/// Twins checkpointed per commit: a round of 100,000 twins holds about
/// 40 MB of checkpoint JSON at once instead of 800 MB (plus its Arrow
/// batch and Parquet pages), in 20 commits.
const CHECKPOINT_CHUNK: usize = 5_000;

/// One checkpoint of every twin, `CHECKPOINT_CHUNK` twins at a time: the
/// rows and pending events written and committed, then the journal
/// positions they cover recorded in `ledger`.
pub async fn checkpoint_round(
    twins: &TwinRegistry,
    events: &TableWriter,
    states: &TableWriter,
    ledger: &CheckpointLedger,
) -> bool {
    let mut all_ok = true;
    for (c, chunk) in twins.machines.chunks(CHECKPOINT_CHUNK).enumerate() {
        let replies = futures::future::join_all(chunk.iter().map(|a| a.send(TakeCheckpoint))).await;
        let (mut rows, mut evs, mut covered) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in replies.into_iter().enumerate() {
            if let Ok((row, mut ev, lsn)) = r {
                rows.push(row);
                evs.append(&mut ev);
                covered.push(((c * CHECKPOINT_CHUNK + i) as u32, lsn));
            }
        }
        twins::write_rows(events, states, &mut evs, &mut rows).await;
        let ok = events.flush().await.is_ok() && states.flush().await.is_ok();
        if ok {
            for (a, lsn) in covered {
                ledger.set(a, lsn);
            }
        } else {
            warn!("twin checkpoints did not commit; retried next round");
            all_ok = false;
        }
    }
    all_ok
}

/// Checkpoint every twin each `every`, until `stop`; `full_round_ms` is
/// set to the start of each round that committed every twin.
pub async fn checkpoint_loop(
    twins: TwinRegistry,
    events: TableWriter,
    states: TableWriter,
    ledger: Arc<CheckpointLedger>,
    every: Duration,
    full_round_ms: Arc<AtomicI64>,
    stop: CancellationToken,
) {
    every_until(every, stop, || async {
        let start = crate::time::now_ms();
        if checkpoint_round(&twins, &events, &states, &ledger).await {
            full_round_ms.store(start, Ordering::Relaxed);
        }
    })
    .await
}

/// How much of `gold.asset_state`'s history to keep (`twin.checkpoint_keep_days`).
pub struct CheckpointRetention {
    pub keep_days: u32,
    /// The configured assets (each checkpointed by every full round).
    pub current: Arc<HashSet<String>>,
    /// Start of the newest round that committed every twin (0: none yet).
    pub full_round_ms: Arc<AtomicI64>,
}

impl CheckpointRetention {
    /// Drop the days before `keep_days` ago once a full round has committed
    /// since (so every configured twin has a newer checkpoint).
    async fn apply(&self, lake: &Lakehouse) {
        let cutoff_ms = (crate::time::day_of(crate::time::now_ms()) as i64 - self.keep_days as i64)
            * 86_400_000;
        if self.keep_days == 0 || self.full_round_ms.load(Ordering::Relaxed) < cutoff_ms {
            return;
        }
        match lake.prune_checkpoints(self.keep_days, &self.current).await {
            Ok(r) if r.files_removed > 0 => info!(
                files = r.files_removed,
                rows = r.rows_removed,
                kept_days = r.days_kept_for_removed_assets,
                "dropped checkpoint history older than {} days",
                self.keep_days
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "checkpoint retention failed; will retry"),
        }
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

/// Table maintenance each `every`, until `stop`: drop old checkpoint
/// history (`retention`), compact every table, then (with
/// `vacuum_hours` > 0) delete the files no version of the last
/// `vacuum_hours` needs. Writers commit small files every second;
/// compaction keeps reads fast, vacuum keeps the disk from filling with
/// what compaction and retention replaced. It runs beside the writers:
/// appends and compaction do not conflict in Delta (only compaction
/// removes files, and only files it rewrote), nor do appends to today and
/// the removal of old days.
pub async fn compaction_loop(
    lake: Arc<Lakehouse>,
    target_bytes: u64,
    every: Duration,
    retention: Option<CheckpointRetention>,
    vacuum_hours: u64,
    stop: CancellationToken,
) {
    every_until(every, stop.clone(), || async {
        if let Some(r) = &retention {
            r.apply(&lake).await;
        }
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
            if vacuum_hours > 0 {
                match lake.vacuum(t.name(), vacuum_hours, false).await {
                    Ok(r) if !r.files_deleted.is_empty() => info!(
                        table = t.name(),
                        files = r.files_deleted.len(),
                        "vacuumed files no version of the last {vacuum_hours} h needs"
                    ),
                    Ok(_) => {}
                    Err(e) => warn!(table = t.name(), error = %e, "vacuum failed; will retry"),
                }
            }
        }
    })
    .await
}

/// Run every enabled pipeline each `every`, until `stop`.
pub async fn pipeline_loop(
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
