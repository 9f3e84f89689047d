//! The machine twin actor: hosts a [`TwinCore`], takes reading batches from
//! ingestion, tells its line when state, alarms or counters change, writes
//! asset events and periodic checkpoints, and answers snapshot queries.
//!
//! It never blocks: lake output goes through a bounded channel with try-send,
//! and whatever does not fit waits in a small outbox for the next turn.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::core::{AssetSnapshot, Changes, TwinCore, TypedReading};
use super::line::{ChildStatus, LineTwin};
use super::{TwinOutput, TwinShared};
use crate::assets::SignalIdx;
use crate::connectors::now_ms;
use crate::lake::rows::{AssetEventRow, AssetStateRow};

/// A batch of validated readings for one machine (plus signals whose latest
/// value was rejected, to show them as `BAD`).
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "()")]
pub struct Ingest {
    pub readings: Vec<TypedReading>,
    pub rejected: Vec<(SignalIdx, &'static str)>,
}

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

/// Checkpoint now and hand back the row plus events not yet delivered (used at
/// shutdown, so the caller can write them and wait for the commit).
#[derive(Message)]
#[rtype(result = "(AssetStateRow, Vec<AssetEventRow>)")]
pub struct FinalCheckpoint;

/// Restart the twin from its last checkpoint (operator action; also what the
/// supervisor does after a failure).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart;

/// The actor.
pub struct MachineTwin {
    core: TwinCore,
    /// The last checkpoint written (JSON), the restart point.
    last_checkpoint: Option<String>,
    line: Option<Addr<LineTwin>>,
    shared: Arc<TwinShared>,
    outbox: Vec<AssetEventRow>,
    pending_state: Option<AssetStateRow>,
    last_line_update_ms: i64,
    pending_line_update: bool,
}

impl MachineTwin {
    /// A twin, optionally restored from checkpoint JSON.
    pub fn new(
        mut core: TwinCore,
        checkpoint: Option<String>,
        line: Option<Addr<LineTwin>>,
        shared: Arc<TwinShared>,
    ) -> Self {
        if let Some(cp) = &checkpoint {
            if let Err(e) = core.restore_json(cp) {
                warn!(asset = %core.id.id, error = %e, "ignoring unreadable checkpoint");
            }
        }
        MachineTwin {
            core,
            last_checkpoint: checkpoint,
            line,
            shared,
            outbox: Vec::new(),
            pending_state: None,
            last_line_update_ms: 0,
            pending_line_update: true,
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
            self.last_line_update_ms = now;
            self.pending_line_update = false;
        } else {
            self.pending_line_update = true;
        }
    }

    fn drain_outbox(&mut self) {
        if let Some(row) = self.pending_state.take() {
            if let Err(mpsc::error::TrySendError::Full(TwinOutput::State(r))) =
                self.shared.out.try_send(TwinOutput::State(row))
            {
                self.pending_state = Some(r);
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

    fn checkpoint(&mut self) {
        let row = self.core.checkpoint_row(now_ms());
        self.last_checkpoint = Some(row.stats.clone());
        self.pending_state = Some(row);
        self.drain_outbox();
    }

    fn restart_from_checkpoint(&mut self) {
        let fresh = TwinCore::new(self.core.id.clone(), &self.shared.cfg);
        self.core = fresh;
        if let Some(cp) = &self.last_checkpoint {
            if let Err(e) = self.core.restore_json(cp) {
                warn!(asset = %self.core.id.id, error = %e, "restart without checkpoint");
            }
        }
        self.pending_line_update = true;
    }
}

impl Actor for MachineTwin {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.shared.cfg.mailbox);
        let every = Duration::from_secs(self.shared.cfg.checkpoint_interval_s);
        ctx.run_interval(every, |act, _| act.checkpoint());
        // Deliver outbox leftovers and throttled line updates even when idle.
        ctx.run_interval(Duration::from_millis(500), |act, _| {
            act.drain_outbox();
            if act.pending_line_update {
                act.notify_line(true);
            }
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

    fn handle(&mut self, msg: Ingest, ctx: &mut Self::Context) {
        for (sig, reason) in &msg.rejected {
            self.core.mark_rejected(*sig, reason);
        }
        if msg.readings.is_empty() {
            return;
        }
        let ch: Changes = self.core.apply(&msg.readings, &mut self.outbox);
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
        if !self.outbox.is_empty() {
            self.drain_outbox();
        }
    }
}

impl Handler<GetSnapshot> for MachineTwin {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
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

impl Handler<FinalCheckpoint> for MachineTwin {
    type Result = MessageResult<FinalCheckpoint>;

    fn handle(&mut self, _: FinalCheckpoint, _: &mut Self::Context) -> Self::Result {
        let row = self.core.checkpoint_row(now_ms());
        self.last_checkpoint = Some(row.stats.clone());
        self.pending_state = None;
        MessageResult((row, std::mem::take(&mut self.outbox)))
    }
}

impl Handler<Restart> for MachineTwin {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Self::Context) {
        // Stopping hands the actor to its supervisor, which calls `restarting`.
        ctx.stop();
    }
}
