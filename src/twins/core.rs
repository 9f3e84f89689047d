//! The state of one machine twin, independent of the actor that hosts it:
//! applies typed readings (windows, state, counters, alarms), produces asset
//! events, snapshots for the API, and checkpoints that survive restarts.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::alarm::{self, AlarmAck, AlarmState, Transition};
use super::window::{SignalWindow, WindowStats};
use crate::assets::{Asset, AssetIdx, MachineState, Severity, SignalIdx, SignalKind, TwinType};
use crate::config::TwinConfig;
use crate::lake::rows::{AssetEventRow, AssetStateRow};

pub use crate::ingest::TypedReading;

/// Identity of the twin, shared with its rows.
#[derive(Debug, Clone)]
pub struct TwinIdentity {
    pub idx: AssetIdx,
    pub id: Arc<str>,
    pub name: String,
    pub plant: Arc<str>,
    pub line: Arc<str>,
    pub area: String,
    pub twin: Arc<TwinType>,
}

impl TwinIdentity {
    /// From the asset model.
    pub fn of(a: &Asset) -> Self {
        TwinIdentity {
            idx: a.idx,
            id: a.id.0.clone(),
            name: a.name.clone(),
            plant: a.plant.0.clone(),
            line: a.line.0.clone(),
            area: a.area.clone(),
            twin: a.twin.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignalLive {
    window: SignalWindow,
    /// Reason the last value was rejected, until a good one arrives.
    rejected: Option<String>,
}

/// Part counters, tolerant of PLC counter resets and single bad values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    /// Last counter values reported by the PLC.
    pub good_parts: Option<f64>,
    pub rejected_parts: Option<f64>,
    /// Parts counted by this twin (sum of increments, across counter resets).
    pub good_total: f64,
    pub reject_total: f64,
    /// A value below the last one, not yet told apart: a reset if the next
    /// value stays below the last, a glitch if it comes back.
    #[serde(default)]
    pub good_drop: Option<f64>,
    #[serde(default)]
    pub reject_drop: Option<f64>,
}

pub use crate::timeseries::counter_step;

/// What changed in one update, for the line twin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Changes {
    pub state: bool,
    pub alarms: bool,
    pub counters: bool,
    /// The models scored a new feature row.
    pub prediction: bool,
}

impl Changes {
    /// Whether anything the line aggregates or the live stream shows changed.
    pub fn any(&self) -> bool {
        self.state || self.alarms || self.counters || self.prediction
    }
}

/// The full live state of one machine.
#[derive(Debug, Clone)]
pub struct TwinCore {
    pub id: TwinIdentity,
    signals: Vec<SignalLive>,
    pub state: MachineState,
    pub state_since_ms: Option<i64>,
    pub counters: Counters,
    alarms: Vec<AlarmState>,
    pub readings_total: u64,
    pub last_update_ms: Option<i64>,
    stale_after_ms: i64,
    /// Window sizes of the twin's signals (count, seconds, EMA alpha), for
    /// signals added at run time.
    window_params: (usize, f64, f64),
    /// The source reports by exception (OPC UA subscriptions): a value
    /// that did not change is not sent again, so it is current while the
    /// source is connected, never STALE by age.
    pub by_exception: bool,
    /// Journal position of the newest reading applied (what a checkpoint covers).
    pub applied_lsn: u64,
    /// Readings applied later than a newer one of their signal.
    pub late_total: u64,
    /// Suppress events at or before this time (replay of what is already in
    /// `silver.asset_events`).
    events_until: Option<i64>,
    /// The ingest journal `applied_lsn` refers to.
    pub journal: Arc<str>,
    /// The twin type's features, computed as readings arrive.
    features: Option<Box<super::features::FeatureEngine>>,
    /// The newest feature row (of the last closed bucket).
    pub last_features: Option<super::features::FeatureRow>,
    /// Scores feature rows as they close (the platform's models).
    pub scorer: Option<Arc<dyn super::scoring::Scorer>>,
    /// What the models said of the newest feature row.
    pub prediction: Option<super::scoring::Prediction>,
    /// The predicted-failure alert, while the champion is over its threshold.
    predicted_alarm: Option<ActiveAlarm>,
    /// `gold.predictions` rows not yet handed to the collector.
    pub pending_predictions: Vec<crate::lake::rows::PredictionRow>,
}

/// Name of the alarm a failure model raises.
pub const PREDICTED_FAILURE: &str = "predicted_failure";

/// Checkpoint format (JSON in `gold.asset_state.stats`). Signals and alarms are
/// stored by name so a twin type that gained signals still restores.
/// Taking one borrows the twin's state (no copy of its windows).
#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpoint<'a> {
    pub format: u32,
    pub ts_ms: i64,
    pub state: MachineState,
    pub state_since_ms: Option<i64>,
    pub counters: Counters,
    pub readings_total: u64,
    pub last_update_ms: Option<i64>,
    signals: Vec<(Cow<'a, str>, Cow<'a, SignalLive>)>,
    alarms: Vec<(Cow<'a, str>, Cow<'a, AlarmState>)>,
    /// The ingest journal this checkpoint's position refers to, and the position.
    #[serde(default)]
    pub journal: String,
    #[serde(default)]
    pub lsn: u64,
    /// The feature engine's state (postcard, base64: floats kept exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
}

/// Per-signal view in the API.
#[derive(Debug, Clone, Serialize)]
pub struct SignalSnapshot {
    pub name: String,
    pub unit: String,
    pub value: Option<f64>,
    pub ts: Option<i64>,
    /// `GOOD`, `STALE` (no update within `stale_after_s`), `BAD` (last value
    /// rejected), or `NONE` (never received).
    pub quality: &'static str,
    pub rejected_reason: Option<String>,
    pub ema: Option<f64>,
    pub rate_hz: Option<f64>,
    pub count_window: WindowStats,
    pub time_window: WindowStats,
    pub time_window_s: f64,
}

/// An active alarm in the API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActiveAlarm {
    pub name: String,
    pub signal: String,
    pub severity: Severity,
    pub since: i64,
    pub value: f64,
    pub message: String,
    /// The acknowledgement, once an operator gave one.
    pub acknowledged: Option<AlarmAck>,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AckError {
    #[error("asset `{asset}` has no alarm rule `{name}` (rules: {rules})")]
    UnknownRule {
        asset: String,
        name: String,
        rules: String,
    },
    #[error("alarm `{name}` of asset `{asset}` is not active")]
    NotActive { asset: String, name: String },
}

/// The twin as `GET /api/assets/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AssetSnapshot {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub plant: String,
    pub area: String,
    pub line: String,
    pub state: MachineState,
    pub state_since: Option<i64>,
    pub counters: Counters,
    pub alarms: Vec<ActiveAlarm>,
    pub signals: Vec<SignalSnapshot>,
    pub readings_total: u64,
    pub last_update: Option<i64>,
    /// The newest feature row, when the twin type has a feature set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturesSnapshot>,
    /// The models' view of the newest feature row, when a model serves it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<super::scoring::Prediction>,
}

/// The features of the last closed bucket, as the API shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeaturesSnapshot {
    /// The feature set's version.
    pub version: u32,
    /// End of the bucket they describe (UTC ms).
    pub bucket_end: i64,
    pub values: std::collections::BTreeMap<String, Option<f64>>,
}

impl TwinCore {
    /// A fresh twin.
    pub fn new(id: TwinIdentity, cfg: &TwinConfig) -> Self {
        let w = id.twin.window;
        let count = w.count.unwrap_or(cfg.count_window);
        let secs = w.seconds.unwrap_or(cfg.time_window_s);
        let alpha = w.ema_alpha.unwrap_or(cfg.ema_alpha);
        let signals = id
            .twin
            .signals
            .iter()
            .map(|_| SignalLive {
                window: SignalWindow::new(count, secs, alpha),
                rejected: None,
            })
            .collect();
        let alarms = vec![AlarmState::default(); id.twin.alarms.len()];
        let id_twin = id.twin.clone();
        TwinCore {
            id,
            signals,
            state: MachineState::Unknown,
            state_since_ms: None,
            counters: Counters::default(),
            alarms,
            readings_total: 0,
            last_update_ms: None,
            stale_after_ms: (cfg.stale_after_s * 1000.0) as i64,
            window_params: (count, secs, alpha),
            by_exception: false,
            applied_lsn: 0,
            late_total: 0,
            events_until: None,
            journal: Arc::from(""),
            features: super::features::FeatureEngine::new(id_twin).map(Box::new),
            last_features: None,
            scorer: None,
            prediction: None,
            predicted_alarm: None,
            pending_predictions: Vec::new(),
        }
    }

    /// Score a feature row that just closed: keep the prediction, queue its
    /// `gold.predictions` rows, raise or clear the predicted-failure alarm.
    fn score_features(
        &mut self,
        row: &super::features::FeatureRow,
        events: &mut Vec<AssetEventRow>,
    ) {
        let (Some(scorer), Some(engine)) = (self.scorer.as_ref(), self.features.as_deref()) else {
            return;
        };
        let scores = scorer.score(engine.set(), row);
        if scores.is_empty() {
            self.prediction = None;
            return;
        }
        let now = crate::time::now_ms();
        // A replay after a restart re-scores buckets whose rows (like their
        // events) were written before: only new buckets are recorded.
        let record = self.emits(row.bucket_end);
        for sc in scores.iter().filter(|_| record) {
            self.pending_predictions
                .push(crate::lake::rows::PredictionRow {
                    ts_ms: row.bucket_end,
                    plant: self.id.plant.clone(),
                    line: self.id.line.clone(),
                    asset_id: self.id.id.clone(),
                    twin_type: self.id.twin.kind.clone(),
                    model: sc.model.clone(),
                    version: sc.version as i32,
                    role: sc.role.as_str(),
                    failure_prob: sc.failure_prob,
                    threshold: sc.threshold,
                    alert: match (sc.failure_prob, sc.expected_kw, sc.actual_kw, sc.threshold) {
                        (Some(p), _, _, Some(t)) => Some(p >= t),
                        (None, Some(e), Some(a), Some(t)) => Some(a - e > t),
                        _ => None,
                    },
                    rul_h: sc.rul_h,
                    reasons: (!sc.reasons.is_empty())
                        .then(|| serde_json::to_string(&sc.reasons).unwrap_or_default()),
                    inputs: sc
                        .inputs
                        .as_ref()
                        .and_then(|x| serde_json::to_string(x).ok()),
                    scored_at_ms: now,
                    expected_kw: sc.expected_kw,
                    actual_kw: sc.actual_kw,
                });
        }
        // A queue the collector cannot take (lake down) stays bounded.
        if self.pending_predictions.len() > 4096 {
            let cut = self.pending_predictions.len() - 4096;
            self.pending_predictions.drain(..cut);
        }
        let p = super::scoring::Prediction::of(row.bucket_end, scores);
        let ts = row.bucket_end;
        match (p.alert, self.predicted_alarm.is_some()) {
            (true, false) => {
                let (msg, model) = failure_message(&p);
                self.predicted_alarm = Some(ActiveAlarm {
                    name: PREDICTED_FAILURE.into(),
                    signal: model,
                    severity: Severity::Warning,
                    since: ts,
                    value: p.failure_prob.unwrap_or(0.0),
                    message: msg.clone(),
                    acknowledged: None,
                });
                if self.emits(ts) {
                    events.push(self.event(
                        ts,
                        "alarm_raised",
                        PREDICTED_FAILURE.into(),
                        p.failure_prob,
                        Some(msg),
                    ));
                }
            }
            (false, true) => {
                self.predicted_alarm = None;
                if self.emits(ts) {
                    events.push(self.event(
                        ts,
                        "alarm_cleared",
                        PREDICTED_FAILURE.into(),
                        p.failure_prob,
                        None,
                    ));
                }
            }
            (true, true) => {
                // Still predicted: the alarm keeps its start, and says what
                // predicts it now (another model version after a promotion,
                // the newest probability).
                if let Some(a) = self.predicted_alarm.as_mut() {
                    let (msg, model) = failure_message(&p);
                    a.value = p.failure_prob.unwrap_or(a.value);
                    a.message = msg;
                    a.signal = model;
                }
            }
            (false, false) => {}
        }
        self.prediction = Some(p);
    }

    /// Whether an event at `ts` is new (not replayed into `silver.asset_events` again).
    fn emits(&self, ts: i64) -> bool {
        self.events_until.is_none_or(|u| ts > u)
    }

    fn event(
        &self,
        ts: i64,
        kind: &'static str,
        code: String,
        value: Option<f64>,
        message: Option<String>,
    ) -> AssetEventRow {
        AssetEventRow {
            ts_ms: ts,
            plant: self.id.plant.clone(),
            line: self.id.line.clone(),
            asset_id: self.id.id.clone(),
            kind,
            code,
            value,
            message,
        }
    }

    /// Apply a batch from the ingest stage: its readings in order, its
    /// journal position, and (for a replay) the events already written.
    pub fn apply_batch(
        &mut self,
        b: &crate::ingest::TwinBatch,
        events: &mut Vec<AssetEventRow>,
    ) -> Changes {
        self.events_until = if b.replay { b.events_until } else { None };
        let ch = self.apply(&b.readings, events);
        self.events_until = None;
        self.applied_lsn = self.applied_lsn.max(b.lsn);
        ch
    }

    /// Apply readings in order; asset events are appended to `events`.
    ///
    /// Readings are applied by source time: one older than the newest
    /// reading of its signal (late, or redelivered) updates the windows but
    /// not the current state, alarms or part counters.
    pub fn apply(&mut self, readings: &[TypedReading], events: &mut Vec<AssetEventRow>) -> Changes {
        let mut ch = Changes::default();
        let twin = self.id.twin.clone();
        // The first reading newer than everything before (the source is
        // back, whatever it sent).
        let mut fresh: Option<i64> = None;
        for r in readings {
            if r.signal as usize >= self.signals.len() {
                // A signal added at run time (`extra_signals = "add"`).
                if twin.extra.def(r.signal).is_none() {
                    continue;
                }
                self.grow_signals(r.signal);
            }
            if r.signal as usize >= self.signals.len() {
                continue;
            }
            if let Some(f) = self.features.as_deref_mut() {
                if let Some(row) = f.push(r.signal, r.ts_ms, r.value) {
                    let before = self.predicted_alarm.is_some();
                    self.score_features(&row, events);
                    ch.alarms |= before != self.predicted_alarm.is_some();
                    ch.prediction |= self.prediction.is_some();
                    self.last_features = Some(row);
                }
            }
            let Some(live) = self.signals.get_mut(r.signal as usize) else {
                continue;
            };
            live.rejected = None;
            let late = live.window.last.is_some_and(|(t, _)| r.ts_ms < t);
            if !late && self.last_update_ms.is_none_or(|t| r.ts_ms > t) {
                fresh.get_or_insert(r.ts_ms);
            }
            if late {
                live.window.push(r.ts_ms, r.value);
                self.readings_total += 1;
                self.late_total += 1;
                continue;
            }
            // Alarms see the window before the value is added.
            let same_run = match live.window.last {
                Some((_, lv)) if lv == r.value => live.window.same_run + 1,
                _ => 1,
            };
            for (ri, rule) in twin.alarms.iter().enumerate() {
                if rule.signal != r.signal {
                    continue;
                }
                let live = &self.signals[r.signal as usize];
                if let Some(t) = alarm::evaluate(
                    rule,
                    &mut self.alarms[ri],
                    &live.window,
                    same_run,
                    r.ts_ms,
                    r.value,
                ) {
                    ch.alarms = true;
                    let (kind, msg) = match t {
                        Transition::Raised => (
                            "alarm_raised",
                            Some(if rule.message.is_empty() {
                                rule.name.clone()
                            } else {
                                rule.message.clone()
                            }),
                        ),
                        Transition::Cleared => ("alarm_cleared", None),
                    };
                    if self.emits(r.ts_ms) {
                        events.push(self.event(
                            r.ts_ms,
                            kind,
                            rule.name.clone(),
                            Some(r.value),
                            msg,
                        ));
                    }
                }
            }
            self.signals[r.signal as usize]
                .window
                .push(r.ts_ms, r.value);
            // Machine state.
            if let Some((sidx, codes)) = &twin.state {
                if *sidx == r.signal {
                    let st = codes
                        .get(&(r.value.round() as i64))
                        .copied()
                        .unwrap_or(MachineState::Unknown);
                    if st != self.state {
                        self.set_state(st, r.ts_ms, Some(r.value), events);
                        ch.state = true;
                    }
                }
            }
            // Part counters.
            let counter = if twin.good_counter == Some(r.signal) {
                Some(true)
            } else if twin.reject_counter == Some(r.signal) {
                Some(false)
            } else {
                None
            };
            if let Some(good) = counter {
                let c = &mut self.counters;
                let (last, drop, total, name) = if good {
                    (
                        &mut c.good_parts,
                        &mut c.good_drop,
                        &mut c.good_total,
                        "good_parts",
                    )
                } else {
                    (
                        &mut c.rejected_parts,
                        &mut c.reject_drop,
                        &mut c.reject_total,
                        "rejected_parts",
                    )
                };
                let inc = counter_step(last, drop, r.value);
                if inc > 0.0 {
                    *total += inc;
                    ch.counters = true;
                    if self.emits(r.ts_ms) {
                        let ev = self.event(r.ts_ms, "counter", name.into(), Some(inc), None);
                        events.push(ev);
                    }
                }
            }
            self.readings_total += 1;
            self.last_update_ms = Some(self.last_update_ms.map_or(r.ts_ms, |t| t.max(r.ts_ms)));
        }
        // Data flows again but no state reading came with it (a source that
        // reports by exception sends the state only when it changes): the
        // machine is reachable and its state is not known.
        if let (MachineState::Disconnected, Some(ts)) = (self.state, fresh) {
            self.set_state(MachineState::Unknown, ts, None, events);
            ch.state = true;
        }
        ch
    }

    fn set_state(
        &mut self,
        st: MachineState,
        ts: i64,
        value: Option<f64>,
        events: &mut Vec<AssetEventRow>,
    ) {
        let prev = self.state;
        self.state = st;
        self.state_since_ms = Some(ts);
        if self.emits(ts) {
            events.push(self.event(
                ts,
                "state",
                st.as_str().into(),
                value,
                Some(format!("from {}", prev.as_str())),
            ));
        }
    }

    /// Tell the twin whether its source is connected, at wall-clock `now_ms`:
    /// a machine whose source is disconnected, or sent nothing for
    /// `silent_after_ms`, goes to `DISCONNECTED` from just after its last
    /// reading (the last moment its state was known). Returns whether the
    /// state changed.
    pub fn check_connection(
        &mut self,
        connected: bool,
        last_received_ms: Option<i64>,
        now_ms: i64,
        silent_after_ms: i64,
        events: &mut Vec<AssetEventRow>,
    ) -> bool {
        if !self.state.is_known() && self.state != MachineState::Unknown {
            return false;
        }
        if self.state == MachineState::Unknown && self.last_update_ms.is_none() {
            return false;
        }
        let silent = last_received_ms.is_none_or(|t| now_ms - t > silent_after_ms);
        if connected && !silent {
            return false;
        }
        if self.state == MachineState::Disconnected {
            return false;
        }
        let at = self.last_update_ms.map_or(now_ms, |t| t + 1).min(now_ms);
        self.set_state(MachineState::Disconnected, at, None, events);
        true
    }

    /// Mark signals whose latest value was rejected by validation.
    pub fn mark_rejected(&mut self, signal: SignalIdx, reason: &str) {
        if let Some(s) = self.signals.get_mut(signal as usize) {
            s.rejected = Some(reason.to_string());
        }
    }

    /// Whether the internal state is numerically sound.
    pub fn is_sound(&self) -> bool {
        self.signals.iter().all(|s| s.window.is_sound())
    }

    /// Active alarms.
    pub fn active_alarms(&self) -> Vec<ActiveAlarm> {
        let twin = &self.id.twin;
        self.alarms
            .iter()
            .zip(&twin.alarms)
            .filter(|(st, _)| st.active)
            .map(|(st, rule)| ActiveAlarm {
                name: rule.name.clone(),
                signal: twin.signals[rule.signal as usize].name.clone(),
                severity: rule.severity,
                since: st.since_ms.unwrap_or_default(),
                value: st.value.unwrap_or_default(),
                message: rule.message.clone(),
                acknowledged: st.ack.clone(),
            })
            .chain(self.predicted_alarm.clone())
            .collect()
    }

    /// Acknowledge the active alarm `name` at wall-clock `now_ms`: recorded
    /// on the alarm (until it clears) and as an `alarm_ack` event whose
    /// message is `{"by", "comment", "raised"}` JSON. A second
    /// acknowledgement replaces the first (and is recorded too).
    pub fn acknowledge(
        &mut self,
        name: &str,
        by: &str,
        comment: Option<&str>,
        now_ms: i64,
        events: &mut Vec<AssetEventRow>,
    ) -> Result<ActiveAlarm, AckError> {
        let twin = self.id.twin.clone();
        let Some(ri) = twin.alarms.iter().position(|r| r.name == name) else {
            return Err(AckError::UnknownRule {
                asset: self.id.id.to_string(),
                name: name.to_string(),
                rules: twin
                    .alarms
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let st = &mut self.alarms[ri];
        if !st.active {
            return Err(AckError::NotActive {
                asset: self.id.id.to_string(),
                name: name.to_string(),
            });
        }
        let ack = AlarmAck {
            by: by.to_string(),
            at: now_ms,
            comment: comment.map(str::to_string),
        };
        st.ack = Some(ack.clone());
        let raised = st.since_ms;
        let msg = serde_json::json!({"by": by, "comment": comment, "raised": raised}).to_string();
        events.push(self.event(now_ms, "alarm_ack", name.to_string(), None, Some(msg)));
        Ok(self
            .active_alarms()
            .into_iter()
            .find(|a| a.name == name)
            .expect("the alarm is active"))
    }

    /// Number of active alarms and of critical ones.
    pub fn alarm_counts(&self) -> (u32, u32) {
        let twin = &self.id.twin;
        let (a, c) = self
            .alarms
            .iter()
            .zip(&twin.alarms)
            .filter(|(s, _)| s.active)
            .fold((0, 0), |(a, c), (_, r)| {
                (a + 1, c + (r.severity == Severity::Critical) as u32)
            });
        (a + self.predicted_alarm.is_some() as u32, c)
    }

    /// Room for signals up to `idx` (added at run time).
    fn grow_signals(&mut self, idx: SignalIdx) {
        let (count, secs, alpha) = self.window_params;
        while self.signals.len() <= idx as usize {
            self.signals.push(SignalLive {
                window: SignalWindow::new(count, secs, alpha),
                rejected: None,
            });
        }
    }

    /// The API view at wall-clock time `now_ms`.
    pub fn snapshot(&self, now_ms: i64) -> AssetSnapshot {
        let twin = &self.id.twin;
        let signals = self
            .signals
            .iter()
            .enumerate()
            .filter_map(|(i, live)| Some((twin.signal_def(i as SignalIdx)?, live)))
            .map(|(def, live)| {
                let w = &live.window;
                let quality = match (w.last, &live.rejected) {
                    (_, Some(_)) => "BAD",
                    (None, None) => "NONE",
                    (Some((ts, _)), None)
                        if !self.by_exception && now_ms - ts > self.stale_after_ms =>
                    {
                        "STALE"
                    }
                    _ => "GOOD",
                };
                SignalSnapshot {
                    name: def.name.clone(),
                    unit: def.unit.clone(),
                    value: w.last.map(|(_, v)| v),
                    ts: w.last.map(|(t, _)| t),
                    quality,
                    rejected_reason: live.rejected.clone(),
                    ema: w.ema,
                    rate_hz: w.rate_hz(),
                    count_window: w.count_stats(),
                    time_window: w.time_stats(),
                    time_window_s: w.span_s(),
                }
            })
            .collect();
        AssetSnapshot {
            id: self.id.id.to_string(),
            name: self.id.name.clone(),
            kind: twin.kind.clone(),
            plant: self.id.plant.to_string(),
            area: self.id.area.clone(),
            line: self.id.line.to_string(),
            state: self.state,
            state_since: self.state_since_ms,
            counters: self.counters.clone(),
            alarms: self.active_alarms(),
            signals,
            readings_total: self.readings_total,
            last_update: self.last_update_ms,
            features: self.features_snapshot(),
            prediction: self.prediction.clone(),
        }
    }

    /// The newest feature row by name.
    pub fn features_snapshot(&self) -> Option<FeaturesSnapshot> {
        let (engine, row) = (self.features.as_deref()?, self.last_features.as_ref()?);
        let set = engine.set();
        Some(FeaturesSnapshot {
            version: set.version,
            bucket_end: row.bucket_end,
            values: set
                .features
                .iter()
                .zip(&row.values)
                .map(|(f, v)| (f.name.clone(), *v))
                .collect(),
        })
    }

    /// A checkpoint of the full state.
    pub fn checkpoint(&self, now_ms: i64) -> Checkpoint<'_> {
        let twin = &self.id.twin;
        Checkpoint {
            format: 1,
            ts_ms: now_ms,
            state: self.state,
            state_since_ms: self.state_since_ms,
            counters: self.counters.clone(),
            readings_total: self.readings_total,
            last_update_ms: self.last_update_ms,
            signals: self
                .signals
                .iter()
                .enumerate()
                .filter_map(|(i, live)| {
                    let name = match twin.signals.get(i) {
                        Some(d) => Cow::Borrowed(d.name.as_str()),
                        None => Cow::Owned(twin.extra.def(i as SignalIdx)?.name.clone()),
                    };
                    Some((name, Cow::Borrowed(live)))
                })
                .collect(),
            alarms: twin
                .alarms
                .iter()
                .map(|r| Cow::Borrowed(r.name.as_str()))
                .zip(self.alarms.iter().map(Cow::Borrowed))
                .collect(),
            journal: self.journal.to_string(),
            lsn: self.applied_lsn,
            features: self.features.as_deref().and_then(|f| {
                use base64::Engine as _;
                let st = super::features::Saved {
                    state: f.state().clone(),
                    last: self.last_features.clone(),
                };
                postcard::to_stdvec(&st)
                    .ok()
                    .map(|b| base64::engine::general_purpose::STANDARD_NO_PAD.encode(b))
            }),
        }
    }

    /// The `gold.asset_state` row of a checkpoint.
    pub fn checkpoint_row(&self, now_ms: i64) -> AssetStateRow {
        let cp = self.checkpoint(now_ms);
        let (active, _) = self.alarm_counts();
        AssetStateRow {
            ts_ms: now_ms,
            plant: self.id.plant.clone(),
            line: self.id.line.clone(),
            asset_id: self.id.id.clone(),
            state: self.state.as_str(),
            health: self.prediction.as_ref().and_then(|p| p.health),
            failure_prob: self.prediction.as_ref().and_then(|p| p.failure_prob),
            rul_h: self.prediction.as_ref().and_then(|p| p.rul_h),
            energy_expected_kw: self.prediction.as_ref().and_then(|p| p.energy_expected_kw),
            energy_deviation_kw: self.prediction.as_ref().and_then(|p| p.energy_deviation_kw),
            lat: None,
            lon: None,
            zone: None,
            good_parts: self.counters.good_total.round() as i64,
            rejected_parts: self.counters.reject_total.round() as i64,
            active_alarms: active as i32,
            // Serializing plain data cannot fail.
            stats: serde_json::to_string(&cp).unwrap_or_default(),
        }
    }

    /// Restore from a checkpoint; signals and alarms are matched by name.
    pub fn restore(&mut self, cp: Checkpoint) {
        // A position in another journal means nothing here.
        self.applied_lsn = if *cp.journal == *self.journal {
            cp.lsn
        } else {
            0
        };
        self.state = cp.state;
        self.state_since_ms = cp.state_since_ms;
        self.counters = cp.counters;
        self.readings_total = cp.readings_total;
        self.last_update_ms = cp.last_update_ms;
        let twin = self.id.twin.clone();
        for (name, live) in cp.signals {
            if let Some(i) = twin.signal(&name) {
                self.signals[i as usize] = live.into_owned();
            } else if let Ok((i, _)) =
                twin.extra
                    .get_or_add(&name, SignalKind::Float, &twin.signal_index)
            {
                // A signal added at run time before the restart.
                self.grow_signals(i);
                self.signals[i as usize] = live.into_owned();
            }
        }
        for (name, st) in cp.alarms {
            if let Some(i) = twin.alarms.iter().position(|r| *r.name == *name) {
                self.alarms[i] = st.into_owned();
            }
        }
        if let (Some(f), Some(text)) = (self.features.as_deref_mut(), cp.features) {
            use base64::Engine as _;
            let saved = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text)
                .ok()
                .and_then(|b| postcard::from_bytes::<super::features::Saved>(&b).ok());
            if let Some(saved) = saved {
                if f.restore(saved.state) {
                    self.last_features = saved.last;
                }
            }
        }
    }

    /// Restore from checkpoint JSON; returns an error text when it does not parse.
    pub fn restore_json(&mut self, json: &str) -> Result<(), String> {
        let cp: Checkpoint =
            serde_json::from_str(json).map_err(|e| format!("checkpoint of {}: {e}", self.id.id))?;
        self.restore(cp);
        Ok(())
    }
}

/// The message of a predicted-failure alarm and the model raising it.
fn failure_message(p: &super::scoring::Prediction) -> (String, String) {
    let fm = p.failure_model().cloned();
    let reasons = fm
        .as_ref()
        .map(|m| {
            m.reasons
                .iter()
                .map(|(f, d)| format!("{f} {d:+.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let msg = format!(
        "failure predicted by {} v{}: probability {:.2} >= {:.2} within {} h{}",
        fm.as_ref().map(|m| m.model.as_str()).unwrap_or("?"),
        fm.as_ref().map(|m| m.version).unwrap_or(0),
        p.failure_prob.unwrap_or(0.0),
        fm.as_ref().and_then(|m| m.threshold).unwrap_or(0.0),
        fm.as_ref().and_then(|m| m.horizon_h).unwrap_or(0.0),
        if reasons.is_empty() {
            String::new()
        } else {
            format!("; top features: {reasons}")
        }
    );
    (msg, fm.map(|m| m.model).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press() -> TwinCore {
        let twins =
            crate::assets::twin_types(crate::config::embedded_twin_type_files().unwrap()).unwrap();
        let plant: crate::config::PlantFile = crate::config::parse_toml(
            "[plant]\nid = \"p\"\n[[areas]]\nid = \"a\"\n[[lines]]\nid = \"l\"\narea = \"a\"\n\
             [[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"t\" }\n",
            "p.toml",
        )
        .unwrap();
        let model =
            crate::assets::AssetModel::build(twins, vec![("p.toml".into(), plant)]).unwrap();
        let cfg = crate::config::PlatformFile::embedded_default()
            .unwrap()
            .twin;
        TwinCore::new(TwinIdentity::of(&model.assets[0]), &cfg)
    }

    fn r(core: &TwinCore, signal: &str, ts: i64, v: f64) -> TypedReading {
        TypedReading {
            signal: core.id.twin.signal(signal).unwrap(),
            ts_ms: ts,
            value: v,
            ingest_ms: ts,
        }
    }

    #[test]
    fn late_readings_fill_windows_but_change_no_state_or_counter() {
        let mut t = press();
        let mut ev = Vec::new();
        let batch = [
            r(&t, "state", 1000, 2.0),
            r(&t, "good_parts", 1000, 10.0),
            r(&t, "good_parts", 2000, 15.0),
        ];
        t.apply(&batch, &mut ev);
        assert_eq!(t.state, MachineState::Running);
        assert_eq!(t.counters.good_total, 5.0);
        // Late: DOWN and a lower counter, both older than the newest.
        let late = [r(&t, "state", 500, 0.0), r(&t, "good_parts", 1500, 3.0)];
        let ch = t.apply(&late, &mut ev);
        assert!(!ch.state && !ch.counters);
        assert_eq!(t.state, MachineState::Running);
        assert_eq!(t.counters.good_total, 5.0);
        assert_eq!((t.late_total, t.readings_total), (2, 5));
        // A glitch (one low value, then back up) counts nothing extra.
        t.apply(&[r(&t, "good_parts", 3000, 2.0)], &mut ev);
        t.apply(&[r(&t, "good_parts", 4000, 16.0)], &mut ev);
        assert_eq!(t.counters.good_total, 6.0);
        // A reset (low twice) counts from zero.
        t.apply(&[r(&t, "good_parts", 5000, 1.0)], &mut ev);
        t.apply(&[r(&t, "good_parts", 6000, 4.0)], &mut ev);
        assert_eq!(t.counters.good_total, 10.0);
    }

    #[test]
    fn an_acknowledgement_lasts_while_the_alarm_is_active_and_survives_a_checkpoint() {
        let mut t = press();
        let mut ev = Vec::new();
        let nope = t.acknowledge("oil_overtemperature", "Dana", None, 500, &mut ev);
        assert!(matches!(nope, Err(AckError::NotActive { .. })), "{nope:?}");
        assert!(matches!(
            t.acknowledge("no_such_rule", "Dana", None, 500, &mut ev),
            Err(AckError::UnknownRule { .. })
        ));
        t.apply(&[r(&t, "oil_temp", 1000, 80.0)], &mut ev);
        ev.clear();
        let a = t
            .acknowledge("oil_overtemperature", "Dana", Some("fan"), 2000, &mut ev)
            .unwrap();
        let ack = a.acknowledged.unwrap();
        assert_eq!(
            (ack.by.as_str(), ack.at, ack.comment.as_deref()),
            ("Dana", 2000, Some("fan"))
        );
        assert_eq!(
            (ev[0].kind, ev[0].code.as_str(), ev[0].ts_ms),
            ("alarm_ack", "oil_overtemperature", 2000)
        );
        let msg: serde_json::Value =
            serde_json::from_str(ev[0].message.as_deref().unwrap()).unwrap();
        assert_eq!(msg["raised"], 1000);
        // A restart from a checkpoint keeps it.
        let json = serde_json::to_string(&t.checkpoint(3000)).unwrap();
        let mut back = press();
        back.restore_json(&json).unwrap();
        assert_eq!(
            back.active_alarms()[0].acknowledged.as_ref().unwrap().by,
            "Dana"
        );
        // Cleared, then raised again: a new alarm, not acknowledged.
        t.apply(&[r(&t, "oil_temp", 4000, 50.0)], &mut ev);
        t.apply(&[r(&t, "oil_temp", 5000, 80.0)], &mut ev);
        assert!(t.active_alarms()[0].acknowledged.is_none());
    }

    #[test]
    fn a_silent_or_disconnected_source_is_a_state() {
        let mut t = press();
        let mut ev = Vec::new();
        // Nothing known yet: nothing to disconnect.
        assert!(!t.check_connection(false, None, 10_000, 30_000, &mut ev));
        t.apply(&[r(&t, "state", 1000, 2.0)], &mut ev);
        ev.clear();
        assert!(!t.check_connection(true, Some(5_000), 10_000, 30_000, &mut ev));
        // Silent for longer than allowed: DISCONNECTED from just after the last reading.
        assert!(t.check_connection(true, Some(5_000), 40_000, 30_000, &mut ev));
        assert_eq!(t.state, MachineState::Disconnected);
        assert_eq!((ev[0].code.as_str(), ev[0].ts_ms), ("DISCONNECTED", 1001));
        assert!(!t.check_connection(false, Some(5_000), 50_000, 30_000, &mut ev));
        // The next state reading brings it back.
        t.apply(&[r(&t, "state", 60_000, 1.0)], &mut ev);
        assert_eq!(t.state, MachineState::Idle);
    }

    #[test]
    fn data_without_a_state_after_a_disconnection_is_unknown() {
        let mut t = press();
        let mut ev = Vec::new();
        t.apply(&[r(&t, "state", 1000, 2.0)], &mut ev);
        assert!(t.check_connection(false, Some(1_000), 2_000, 30_000, &mut ev));
        assert_eq!(t.state, MachineState::Disconnected);
        ev.clear();
        // A late reading from before the outage changes nothing.
        t.apply(&[r(&t, "force", 900, 10.0)], &mut ev);
        assert_eq!(t.state, MachineState::Disconnected);
        // Back, with other signals only: reachable, state not known.
        t.apply(&[r(&t, "force", 70_000, 10.0)], &mut ev);
        assert_eq!(t.state, MachineState::Unknown);
        assert_eq!((ev[0].code.as_str(), ev[0].ts_ms), ("UNKNOWN", 70_000));
        // With its state in the same batch: straight to that state.
        assert!(t.check_connection(false, Some(70_000), 80_000, 30_000, &mut ev));
        ev.clear();
        let back = [r(&t, "force", 90_000, 1.0), r(&t, "state", 90_000, 1.0)];
        t.apply(&back, &mut ev);
        assert_eq!(t.state, MachineState::Idle);
        let codes: Vec<&str> = ev.iter().map(|e| e.code.as_str()).collect();
        assert_eq!(codes, ["IDLE"]);
    }
}
