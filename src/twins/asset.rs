//! The machine twin actor: hosts a [`TwinCore`], takes reading batches from
//! ingestion, tells its line when state, alarms or counters change, writes
//! asset events, hands out checkpoints when the platform asks (every
//! `twin.checkpoint_interval_s`, and at shutdown), watches its source's
//! connection, and answers snapshot queries.
//!
//! It never blocks: lake output goes through a bounded channel with try-send,
//! and whatever does not fit waits in a small outbox for the next turn.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::core::{AckError, ActiveAlarm, AssetSnapshot, Changes, TwinCore};
use super::line::{ChildStatus, LineTwin};
use super::live::LiveKind;
use super::{TwinOutput, TwinShared};
use crate::ingest::TwinBatch;
use crate::lake::rows::{AssetEventRow, AssetStateRow};
use crate::time::now_ms;

/// A batch of validated readings for one machine (plus signals whose latest
/// value was rejected, to show them as `BAD`).
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "()")]
pub struct Ingest(pub TwinBatch);

/// Ask for the live state.
#[derive(Message)]
#[rtype(result = "AssetSnapshot")]
pub struct GetSnapshot;

/// Ask for the few fields lists show (cheap: no window statistics).
#[derive(Message)]
#[rtype(result = "AssetSummary")]
pub struct GetSummary;

/// What `GET /api/assets` and `GET /api/lines/{id}` show per machine.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AssetSummary {
    pub state: crate::assets::MachineState,
    pub active_alarms: u32,
    pub last_update: Option<i64>,
}

/// Checkpoint now and hand back the row plus events not yet delivered, so
/// the caller writes them and knows when the checkpoint is durable (the
/// row's `stats` carries the journal position it covers).
#[derive(Message)]
#[rtype(result = "(AssetStateRow, Vec<AssetEventRow>, u64)")]
pub struct TakeCheckpoint;

/// Acknowledge an active alarm (operator action from the REST API).
#[derive(Message)]
#[rtype(result = "Result<ActiveAlarm, AckError>")]
pub struct Acknowledge {
    pub alarm: String,
    pub by: String,
    pub comment: Option<String>,
}

/// Ask for the active alarms.
#[derive(Message)]
#[rtype(result = "Vec<ActiveAlarm>")]
pub struct GetAlarms;

/// Restart the twin from its last checkpoint (operator action; also what the
/// supervisor does after a failure).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart;

/// The actor.
pub struct MachineTwin {
    core: TwinCore,
    /// Restarted: read the last durable checkpoint back before taking
    /// any message.
    restore_pending: bool,
    line: Option<Addr<LineTwin>>,
    shared: Arc<TwinShared>,
    outbox: Vec<AssetEventRow>,
    last_line_update_ms: i64,
    pending_line_update: bool,
    /// Wall-clock time readings last arrived.
    last_received_ms: Option<i64>,
    /// Reading batches in every twin's mailbox (this one's at `core.id.idx`).
    mailboxes: Arc<Vec<std::sync::atomic::AtomicU32>>,
    /// Signal values changed since they were last published.
    values_dirty: bool,
    /// When values were last published (at most twice a second).
    last_values_ms: i64,
}

impl MachineTwin {
    /// A twin, optionally restored from checkpoint JSON.
    pub fn new(
        mut core: TwinCore,
        checkpoint: Option<String>,
        line: Option<Addr<LineTwin>>,
        shared: Arc<TwinShared>,
        mailboxes: Arc<Vec<std::sync::atomic::AtomicU32>>,
    ) -> Self {
        if let Some(cp) = &checkpoint {
            if let Err(e) = core.restore_json(cp) {
                warn!(asset = %core.id.id, error = %e, "ignoring unreadable checkpoint");
            }
        }
        MachineTwin {
            core,
            restore_pending: false,
            line,
            shared,
            outbox: Vec::new(),
            last_line_update_ms: 0,
            pending_line_update: true,
            last_received_ms: None,
            mailboxes,
            values_dirty: true,
            last_values_ms: 0,
        }
    }

    fn status(&self) -> ChildStatus {
        let (alarms, critical) = self.core.alarm_counts();
        ChildStatus {
            asset: self.core.id.idx,
            state: self.core.state,
            alarms,
            critical,
            good: self.core.counters.good_total,
            reject: self.core.counters.reject_total,
        }
    }

    fn notify_line(&mut self, force: bool) {
        let now = now_ms();
        // State and alarm changes go at once; counter-only changes at most twice a second.
        if force || now - self.last_line_update_ms >= 500 {
            if let Some(l) = &self.line {
                l.do_send(self.status());
            }
            self.publish_asset();
            self.last_line_update_ms = now;
            self.pending_line_update = false;
        } else {
            self.pending_line_update = true;
        }
    }

    /// Tell live subscribers the state, alarms and counters.
    fn publish_asset(&self) {
        let hub = &self.shared.live;
        if !hub.active() {
            return;
        }
        let c = &self.core;
        let connected = self
            .shared
            .health
            .as_ref()
            .is_none_or(|h| h.is_connected(c.id.idx));
        let v = serde_json::json!({
            "id": c.id.id.as_ref(),
            "ts": now_ms(),
            "state": c.state,
            "state_since": c.state_since_ms,
            "alarms": c.active_alarms(),
            "good_parts": c.counters.good_total,
            "rejected_parts": c.counters.reject_total,
            "last_update": c.last_update_ms,
            "connected": connected,
            "health": c.prediction.as_ref().and_then(|p| p.health),
            "failure_prob": c.prediction.as_ref().and_then(|p| p.failure_prob),
            "rul_h": c.prediction.as_ref().and_then(|p| p.rul_h),
            "energy_expected_kw": c.prediction.as_ref().and_then(|p| p.energy_expected_kw),
            "energy_deviation_kw": c.prediction.as_ref().and_then(|p| p.energy_deviation_kw),
        });
        if let Ok(json) = serde_json::to_vec(&v) {
            hub.publish(c.id.idx, LiveKind::Asset, json);
        }
    }

    /// Tell the subscribers that asked for them the signal values: at once
    /// when the last publication is 500 ms old, else at the next tick (so
    /// at most twice a second, and a change waits at most 500 ms).
    fn publish_values(&mut self) {
        // Cheapest first: this runs after every reading batch.
        if !self.values_dirty || !self.shared.live.wants_values(self.core.id.idx) {
            return;
        }
        let now = now_ms();
        if now - self.last_values_ms < 500 {
            return;
        }
        self.values_dirty = false;
        self.last_values_ms = now;
        self.core.by_exception = self.by_exception();
        let snap = self.core.snapshot(now);
        let v = serde_json::json!({
            "id": snap.id, "ts": now, "readings_total": snap.readings_total,
            "last_update": snap.last_update, "signals": snap.signals,
        });
        if let Ok(json) = serde_json::to_vec(&v) {
            self.shared
                .live
                .publish(self.core.id.idx, LiveKind::Values, json);
        }
    }

    fn drain_outbox(&mut self) {
        if !self.core.pending_predictions.is_empty() {
            let rows = std::mem::take(&mut self.core.pending_predictions);
            if let Err(mpsc::error::TrySendError::Full(TwinOutput::Predictions(r))) =
                self.shared.out.try_send(TwinOutput::Predictions(rows))
            {
                self.core.pending_predictions = r;
            }
        }
        if !self.outbox.is_empty() {
            let rows = std::mem::take(&mut self.outbox);
            if let Err(mpsc::error::TrySendError::Full(TwinOutput::Events(r))) =
                self.shared.out.try_send(TwinOutput::Events(rows))
            {
                self.outbox = r;
            }
        }
    }

    /// Whether the source reports by exception (values current while connected).
    fn by_exception(&self) -> bool {
        self.shared
            .health
            .as_ref()
            .and_then(|h| h.get(self.core.id.idx))
            .is_some_and(|s| s.by_exception)
    }

    /// Whether the source is gone or silent: the state becomes DISCONNECTED.
    fn watch_connection(&mut self) {
        let connected = self
            .shared
            .health
            .as_ref()
            .is_none_or(|h| h.is_connected(self.core.id.idx));
        let silent_ms = (self.shared.cfg.disconnected_after_s * 1000.0) as i64;
        // A source that reports by exception proves it is alive by its
        // keep-alives, not by changed values.
        let last = if self.by_exception() {
            let alive = self
                .shared
                .health
                .as_ref()
                .and_then(|h| h.get(self.core.id.idx))
                .and_then(|s| s.last_message_ms);
            self.last_received_ms.max(alive)
        } else {
            self.last_received_ms
        };
        if self
            .core
            .check_connection(connected, last, now_ms(), silent_ms, &mut self.outbox)
        {
            self.notify_line(true);
            self.drain_outbox();
        }
    }

    fn restart_from_checkpoint(&mut self) {
        let mut fresh = TwinCore::new(self.core.id.clone(), &self.shared.cfg);
        fresh.journal = self.shared.journal_id.clone();
        fresh.scorer = self.shared.scorer.clone();
        self.core = fresh;
        self.restore_pending = true;
        self.pending_line_update = true;
    }

    /// Read the last durable checkpoint back (after a restart); messages
    /// wait in the mailbox meanwhile.
    fn restore(&mut self, ctx: &mut Context<Self>) {
        self.restore_pending = false;
        let Some(source) = self.shared.checkpoints.clone() else {
            warn!(asset = %self.core.id.id, "restart without checkpoint (no lakehouse to read it from)");
            return;
        };
        let load = source(self.core.id.plant.clone(), self.core.id.id.clone());
        ctx.wait(load.into_actor(self).map(|res, act, _| match res {
            Ok(Some(cp)) => {
                if let Err(e) = act.core.restore_json(&cp) {
                    warn!(asset = %act.core.id.id, error = %e, "restart without checkpoint");
                }
            }
            Ok(None) => warn!(asset = %act.core.id.id, "restart without checkpoint (none written yet)"),
            Err(e) => {
                warn!(asset = %act.core.id.id, error = %e, "restart without checkpoint (cannot read it)")
            }
        }));
    }
}

impl Actor for MachineTwin {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.shared.cfg.mailbox);
        if self.restore_pending {
            self.restore(ctx);
        }
        // Deliver outbox leftovers and throttled line updates even when
        // idle, and notice a source that went away.
        ctx.run_interval(Duration::from_millis(500), |act, _| {
            act.watch_connection();
            act.drain_outbox();
            if act.pending_line_update {
                act.notify_line(true);
            }
            act.publish_values();
        });
        self.notify_line(true);
    }
}

impl Supervised for MachineTwin {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        warn!(asset = %self.core.id.id, "twin restarting from its last checkpoint");
        self.restart_from_checkpoint();
    }
}

impl Handler<Ingest> for MachineTwin {
    type Result = ();

    fn handle(&mut self, Ingest(msg): Ingest, ctx: &mut Self::Context) {
        if let Some(d) = self.mailboxes.get(self.core.id.idx as usize) {
            let _ = d.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |v| v.checked_sub(1),
            );
        }
        for (sig, reason) in &msg.rejected {
            self.core.mark_rejected(*sig, reason);
        }
        if msg.readings.is_empty() {
            self.core.applied_lsn = self.core.applied_lsn.max(msg.lsn);
            return;
        }
        if !msg.replay {
            self.last_received_ms = Some(now_ms());
        }
        self.values_dirty = true;
        let ch: Changes = self.core.apply_batch(&msg, &mut self.outbox);
        if let Some(p) = &self.shared.visibility {
            let now = now_ms();
            if let Some(r) = msg.readings.last() {
                p.record((now - r.ts_ms) as f64);
            }
        }
        if !self.core.is_sound() {
            error!(asset = %self.core.id.id, "twin state is corrupt (non-finite sums); stopping for restart");
            ctx.stop();
            return;
        }
        if ch.any() {
            self.notify_line(ch.state || ch.alarms);
        }
        if !self.outbox.is_empty() || !self.core.pending_predictions.is_empty() {
            self.drain_outbox();
        }
        self.publish_values();
    }
}

impl Handler<GetSnapshot> for MachineTwin {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        self.core.by_exception = self.by_exception();
        MessageResult(self.core.snapshot(now_ms()))
    }
}

impl Handler<GetSummary> for MachineTwin {
    type Result = MessageResult<GetSummary>;

    fn handle(&mut self, _: GetSummary, _: &mut Self::Context) -> Self::Result {
        MessageResult(AssetSummary {
            state: self.core.state,
            active_alarms: self.core.alarm_counts().0,
            last_update: self.core.last_update_ms,
        })
    }
}

impl Handler<Acknowledge> for MachineTwin {
    type Result = MessageResult<Acknowledge>;

    fn handle(&mut self, m: Acknowledge, _: &mut Self::Context) -> Self::Result {
        let r = self.core.acknowledge(
            &m.alarm,
            &m.by,
            m.comment.as_deref(),
            now_ms(),
            &mut self.outbox,
        );
        if r.is_ok() {
            self.drain_outbox();
            self.publish_asset();
        }
        MessageResult(r)
    }
}

impl Handler<GetAlarms> for MachineTwin {
    type Result = MessageResult<GetAlarms>;

    fn handle(&mut self, _: GetAlarms, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.active_alarms())
    }
}

impl Handler<TakeCheckpoint> for MachineTwin {
    type Result = MessageResult<TakeCheckpoint>;

    fn handle(&mut self, _: TakeCheckpoint, _: &mut Self::Context) -> Self::Result {
        let row = self.core.checkpoint_row(now_ms());
        MessageResult((row, std::mem::take(&mut self.outbox), self.core.applied_lsn))
    }
}

impl Handler<Restart> for MachineTwin {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Self::Context) {
        // Stopping hands the actor to its supervisor, which calls `restarting`.
        ctx.stop();
    }
}
