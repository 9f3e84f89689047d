//! The feature engine: one machine's readings in, one feature row per
//! closed time bucket out. The same engine runs inside the twin (live) and
//! in the `features` gold job over `silver.readings` (offline), so the two
//! cannot drift apart: given the same readings in the same order they give
//! bit-identical rows (a test holds both paths to that).
//!
//! **Buckets.** Time is cut into `bucket_s` buckets (UTC, from the epoch). A
//! bucket closes when the first reading of a later bucket arrives; its row
//! then holds every feature evaluated over the windows ending at the
//! bucket's end. Buckets without readings give no row, but they count in
//! the windows (a window is time, not a number of rows) and state time
//! accrues through them. A reading older than the open bucket (late) is not
//! taken (counted in `late`): the lake's offline pass, which sees it in
//! order, may then differ for that bucket.
//!
//! **State.** Per bucket: mergeable moments per signal (count, mean and M2
//! by Welford, min, max, and the sums of a least-squares line), counter
//! increments (resets tolerated like the twins' part counters), time per
//! machine state, transitions into DOWN, energy (sample and hold of `power`,
//! gaps over 5 minutes integrate nothing) and good parts. Windows combine
//! the buckets they span (Chan's formula for the variance). Memory is one
//! small record per bucket of the longest window per kind of feature.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::assets::features::FeatureSet;
use crate::assets::{MachineState, SignalIdx, TwinType};
use crate::config::features::Stat;
use crate::timeseries::counter_step;

/// A power sample further from the previous one than this integrates nothing.
const POWER_GAP_MS: i64 = 300_000;

/// Mergeable statistics of one signal over a bucket or a window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    /// Least-squares sums, t in hours from the bucket's start.
    st: f64,
    stt: f64,
    stv: f64,
    sv: f64,
}

impl Moments {
    fn push(&mut self, t_h: f64, v: f64) {
        self.n += 1;
        let d = v - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (v - self.mean);
        if self.n == 1 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.st += t_h;
        self.stt += t_h * t_h;
        self.stv += t_h * v;
        self.sv += v;
    }

    /// `other` (whose times start `shift_h` hours after this one's origin) merged in.
    fn merge(&mut self, o: &Moments, shift_h: f64) {
        if o.n == 0 {
            return;
        }
        let (st, stt, stv) = (
            o.st + o.n as f64 * shift_h,
            o.stt + 2.0 * shift_h * o.st + o.n as f64 * shift_h * shift_h,
            o.stv + shift_h * o.sv,
        );
        if self.n == 0 {
            *self = Moments { st, stt, stv, ..*o };
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.mean += d * o.n as f64 / n as f64;
        self.m2 += o.m2 + d * d * (self.n as f64) * (o.n as f64) / n as f64;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.st += st;
        self.stt += stt;
        self.stv += stv;
        self.sv += o.sv;
        self.n = n;
    }

    fn slope(&self) -> Option<f64> {
        let n = self.n as f64;
        let den = n * self.stt - self.st * self.st;
        (self.n >= 2 && den > 1e-12).then(|| (n * self.stv - self.st * self.sv) / den)
    }
}

/// What one bucket holds besides the moments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Totals {
    start: i64,
    /// Counter increments per `rate` slot.
    increments: Vec<f64>,
    /// Milliseconds per machine state (`MachineState::ALL` order).
    state_ms: [i64; 6],
    downs: u32,
    kwh: f64,
    good: f64,
}

/// Per signal slot: where moments are kept, and which signal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
struct Counter {
    last: Option<f64>,
    drop: Option<f64>,
}

/// The engine's state (what a checkpoint keeps).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct EngineState {
    /// Feature set version the state was built with.
    version: u32,
    /// Start of the open bucket.
    open: Option<i64>,
    /// Readings taken in the open bucket.
    open_readings: u64,
    cur_moments: Vec<Moments>,
    cur: Totals,
    /// Closed buckets, newest last: (start, moments per slot).
    moments: VecDeque<(i64, Vec<Moments>)>,
    totals: VecDeque<Totals>,
    /// Per `last` feature: newest value.
    last: Vec<Option<f64>>,
    /// Per `ema` feature: (time, value).
    ema: Vec<Option<(i64, f64)>>,
    counters: Vec<Counter>,
    good_counter: Counter,
    state: Option<MachineState>,
    /// State time is accounted up to here.
    state_at: Option<i64>,
    last_repair: Option<i64>,
    power: Option<(i64, f64)>,
    /// Readings older than the open bucket, not taken.
    pub late: u64,
}

/// What a twin checkpoint keeps of its features.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub state: EngineState,
    pub last: Option<FeatureRow>,
}

/// One feature row: the bucket's end and a value per feature (in the set's order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    pub bucket_end: i64,
    pub values: Vec<Option<f64>>,
}

/// Where each feature reads from.
#[derive(Debug, Clone)]
struct Plan {
    /// Signal -> moments slot.
    moment_slot: Vec<Option<usize>>,
    moment_signals: usize,
    /// Signal -> counter (`rate`) slot.
    rate_slot: Vec<Option<usize>>,
    rate_signals: usize,
    /// Signal -> `last` features reading it (feature index, slot).
    last_of: Vec<Vec<usize>>,
    /// Signal -> `ema` features reading it (slot).
    ema_of: Vec<Vec<usize>>,
    /// Per feature: its `last`/`ema` slot.
    slot: Vec<usize>,
    /// Per `ema` slot: its time constant (ms).
    ema_tau: Vec<f64>,
    n_last: usize,
    n_ema: usize,
    /// Buckets kept for moments and for totals.
    keep_moments: usize,
    keep_totals: usize,
}

impl Plan {
    fn new(set: &FeatureSet, signals: usize) -> Plan {
        let mut p = Plan {
            moment_slot: vec![None; signals],
            moment_signals: 0,
            rate_slot: vec![None; signals],
            rate_signals: 0,
            last_of: vec![Vec::new(); signals],
            ema_of: vec![Vec::new(); signals],
            slot: vec![0; set.features.len()],
            ema_tau: Vec::new(),
            n_last: 0,
            n_ema: 0,
            keep_moments: 1,
            keep_totals: 1,
        };
        for (fi, f) in set.features.iter().enumerate() {
            let s = f.signal.map(|s| s as usize);
            match f.stat {
                Stat::Mean | Stat::Std | Stat::Min | Stat::Max | Stat::Count | Stat::Slope => {
                    let s = s.unwrap_or(0);
                    if p.moment_slot[s].is_none() {
                        p.moment_slot[s] = Some(p.moment_signals);
                        p.moment_signals += 1;
                    }
                    p.keep_moments = p.keep_moments.max(f.buckets as usize);
                }
                Stat::Rate => {
                    let s = s.unwrap_or(0);
                    if p.rate_slot[s].is_none() {
                        p.rate_slot[s] = Some(p.rate_signals);
                        p.rate_signals += 1;
                    }
                    p.keep_totals = p.keep_totals.max(f.buckets as usize);
                }
                Stat::Last => {
                    p.slot[fi] = p.n_last;
                    p.last_of[s.unwrap_or(0)].push(p.n_last);
                    p.n_last += 1;
                }
                Stat::Ema => {
                    p.slot[fi] = p.n_ema;
                    p.ema_of[s.unwrap_or(0)].push(p.n_ema);
                    p.ema_tau.push(f.tau_ms);
                    p.n_ema += 1;
                }
                Stat::TimeInState | Stat::Downs | Stat::EnergyPerPart => {
                    p.keep_totals = p.keep_totals.max(f.buckets as usize);
                }
                Stat::TimeSinceRepair => {}
            }
        }
        p
    }
}

fn state_index(s: MachineState) -> usize {
    MachineState::ALL.iter().position(|x| *x == s).unwrap_or(4)
}

/// One machine's feature engine.
#[derive(Debug, Clone)]
pub struct FeatureEngine {
    set: Arc<FeatureSet>,
    twin: Arc<TwinType>,
    plan: Plan,
    st: EngineState,
}

impl FeatureEngine {
    /// An engine for a machine of `twin` (which has a feature set).
    pub fn new(twin: Arc<TwinType>) -> Option<FeatureEngine> {
        let set = twin.features.clone()?;
        let plan = Plan::new(&set, twin.signals.len());
        let mut e = FeatureEngine {
            set,
            twin,
            plan,
            st: EngineState::default(),
        };
        e.reset();
        Some(e)
    }

    fn reset(&mut self) {
        let p = &self.plan;
        self.st = EngineState {
            version: self.set.version,
            cur_moments: vec![Moments::default(); p.moment_signals],
            cur: Totals {
                increments: vec![0.0; p.rate_signals],
                ..Default::default()
            },
            last: vec![None; p.n_last],
            ema: vec![None; p.n_ema],
            counters: vec![Counter::default(); p.rate_signals],
            // Exactly what the windows keep (a closed bucket is pushed
            // before the oldest goes): no doubling of the rings.
            moments: VecDeque::with_capacity(p.keep_moments + 1),
            totals: VecDeque::with_capacity(p.keep_totals + 1),
            ..Default::default()
        };
    }

    /// The feature set it computes.
    pub fn set(&self) -> &Arc<FeatureSet> {
        &self.set
    }

    /// Its state, for a checkpoint.
    pub fn state(&self) -> &EngineState {
        &self.st
    }

    /// Take a checkpointed state; false (and ignored) when it was built by
    /// another version of the feature set.
    pub fn restore(&mut self, st: EngineState) -> bool {
        let fits = st.version == self.set.version
            && st.cur_moments.len() == self.plan.moment_signals
            && st.last.len() == self.plan.n_last
            && st.ema.len() == self.plan.n_ema
            && st.counters.len() == self.plan.rate_signals;
        if fits {
            self.st = st;
            self.st.moments.reserve_exact(1);
            self.st.totals.reserve_exact(1);
        }
        fits
    }

    fn bucket_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.set.bucket_ms) * self.set.bucket_ms
    }

    /// Account state time up to `t`.
    fn accrue(&mut self, t: i64) {
        if let (Some(s), Some(at)) = (self.st.state, self.st.state_at) {
            if t > at {
                self.st.cur.state_ms[state_index(s)] += t - at;
            }
        }
        if self.st.state_at.is_some_and(|at| t > at) {
            self.st.state_at = Some(t);
        }
    }

    /// Close the open bucket and the empty ones up to `next` (a bucket
    /// start); the closed bucket's row when it had readings.
    fn close_until(&mut self, next: i64) -> Option<FeatureRow> {
        let open = self.st.open?;
        let bms = self.set.bucket_ms;
        let mut row = None;
        let mut b = open;
        let had = self.st.open_readings > 0;
        self.st.open_readings = 0;
        while b < next {
            let end = b + bms;
            self.accrue(end);
            let moments = std::mem::replace(
                &mut self.st.cur_moments,
                vec![Moments::default(); self.plan.moment_signals],
            );
            let mut totals = std::mem::replace(
                &mut self.st.cur,
                Totals {
                    increments: vec![0.0; self.plan.rate_signals],
                    ..Default::default()
                },
            );
            totals.start = b;
            self.st.moments.push_back((b, moments));
            while self.st.moments.len() > self.plan.keep_moments {
                self.st.moments.pop_front();
            }
            self.st.totals.push_back(totals);
            while self.st.totals.len() > self.plan.keep_totals {
                self.st.totals.pop_front();
            }
            if b == open && had {
                row = Some(self.evaluate(end));
            }
            b = end;
            // A gap longer than every window: nothing of the past remains.
            if next - b > bms * (self.plan.keep_moments.max(self.plan.keep_totals) as i64) {
                let skip =
                    (next - b) / bms - self.plan.keep_moments.max(self.plan.keep_totals) as i64;
                if skip > 0 {
                    let jump = b + skip * bms;
                    self.accrue(jump);
                    b = jump;
                }
            }
        }
        self.st.open = Some(next);
        self.st.cur.start = next;
        row
    }

    /// Take one reading (in time order); the row of the bucket it closed, if any.
    pub fn push(&mut self, signal: SignalIdx, ts: i64, value: f64) -> Option<FeatureRow> {
        if !value.is_finite() {
            return None;
        }
        let b = self.bucket_of(ts);
        let row = match self.st.open {
            None => {
                self.st.open = Some(b);
                self.st.cur.start = b;
                None
            }
            Some(open) if b < open => {
                self.st.late += 1;
                return None;
            }
            Some(open) if b > open => self.close_until(b),
            Some(_) => None,
        };
        // The reading counts in the open bucket.
        self.st.open_readings += 1;
        let s = signal as usize;
        let t_h = (ts - b) as f64 / self.set.ms_per_hour;
        if let Some(slot) = self.plan.moment_slot.get(s).copied().flatten() {
            self.st.cur_moments[slot].push(t_h, value);
        }
        if let Some(slot) = self.plan.rate_slot.get(s).copied().flatten() {
            let c = &mut self.st.counters[slot];
            let inc = counter_step(&mut c.last, &mut c.drop, value);
            self.st.cur.increments[slot] += inc;
        }
        if let Some(slots) = self.plan.last_of.get(s) {
            for &k in slots {
                self.st.last[k] = Some(value);
            }
        }
        if let Some(slots) = self.plan.ema_of.get(s) {
            for &k in slots {
                let tau = self.plan.ema_tau[k];
                self.st.ema[k] = Some(match self.st.ema[k] {
                    None => (ts, value),
                    Some((t0, e)) => {
                        let dt = (ts - t0).max(0) as f64;
                        let a = 1.0 - (-dt / tau).exp();
                        (ts.max(t0), e + a * (value - e))
                    }
                });
            }
        }
        if self.twin.good_counter == Some(signal) {
            let c = &mut self.st.good_counter;
            let inc = counter_step(&mut c.last, &mut c.drop, value);
            self.st.cur.good += inc;
        }
        if self.set.power == Some(signal) {
            if let Some((t0, p0)) = self.st.power {
                if ts > t0 && ts - t0 <= POWER_GAP_MS {
                    self.st.cur.kwh += p0 * (ts - t0) as f64 / self.set.ms_per_hour;
                }
            }
            if self.st.power.is_none_or(|(t0, _)| ts >= t0) {
                self.st.power = Some((ts, value));
            }
        }
        if let Some((sidx, codes)) = &self.twin.state {
            if *sidx == signal {
                let new = codes
                    .get(&(value.round() as i64))
                    .copied()
                    .unwrap_or(MachineState::Unknown);
                if self.st.state_at.is_none() {
                    self.st.state_at = Some(ts);
                }
                self.accrue(ts);
                if self.st.state != Some(new) {
                    if new == MachineState::Down {
                        self.st.cur.downs += 1;
                    }
                    if self.st.state == Some(MachineState::Down) {
                        self.st.last_repair = Some(ts);
                    }
                    self.st.state = Some(new);
                }
            }
        }
        row
    }

    /// Every feature over the windows ending at `end` (the newest closed bucket's end).
    fn evaluate(&self, end: i64) -> FeatureRow {
        let bms = self.set.bucket_ms;
        let mut values = Vec::with_capacity(self.set.features.len());
        for (fi, f) in self.set.features.iter().enumerate() {
            let window_ms = f.buckets as i64 * bms;
            let from = end - window_ms;
            let hours = window_ms as f64 / self.set.ms_per_hour;
            let totals = || self.st.totals.iter().filter(move |t| t.start >= from);
            let v = match f.stat {
                Stat::Mean | Stat::Std | Stat::Min | Stat::Max | Stat::Count | Stat::Slope => {
                    let slot = f
                        .signal
                        .and_then(|s| self.plan.moment_slot[s as usize])
                        .unwrap_or(0);
                    let mut m = Moments::default();
                    for (start, ms) in self.st.moments.iter().filter(|(s, _)| *s >= from) {
                        m.merge(&ms[slot], (start - from) as f64 / self.set.ms_per_hour);
                    }
                    match f.stat {
                        Stat::Count => Some(m.n as f64),
                        _ if m.n == 0 => None,
                        Stat::Mean => Some(m.mean),
                        Stat::Std => Some((m.m2 / m.n as f64).max(0.0).sqrt()),
                        Stat::Min => Some(m.min),
                        Stat::Max => Some(m.max),
                        _ => m.slope(),
                    }
                }
                Stat::Last => self.st.last[self.plan.slot[fi]],
                Stat::Ema => self.st.ema[self.plan.slot[fi]].map(|(_, e)| e),
                Stat::Rate => {
                    let slot = f
                        .signal
                        .and_then(|s| self.plan.rate_slot[s as usize])
                        .unwrap_or(0);
                    Some(totals().map(|t| t.increments[slot]).sum::<f64>() / hours)
                }
                Stat::TimeInState => {
                    let k = state_index(f.state.unwrap_or(MachineState::Running));
                    let ms: i64 = totals().map(|t| t.state_ms[k]).sum();
                    Some(ms as f64 / window_ms as f64)
                }
                Stat::Downs => Some(totals().map(|t| t.downs as f64).sum()),
                Stat::TimeSinceRepair => Some(match self.st.last_repair {
                    Some(r) if r > from => (end - r) as f64 / self.set.ms_per_hour,
                    _ => hours,
                }),
                Stat::EnergyPerPart => {
                    let (kwh, good) =
                        totals().fold((0.0, 0.0), |(k, g), t| (k + t.kwh, g + t.good));
                    (good > 0.0).then(|| kwh / good)
                }
            };
            values.push(v.filter(|x| x.is_finite()));
        }
        FeatureRow {
            bucket_end: end,
            values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Config;

    /// The mill with its built-in feature set on a real plant's clock
    /// (time_scale 1, 5-minute buckets), the windows these tests compute by hand.
    fn mill() -> Arc<TwinType> {
        let text = crate::config::EMBEDDED
            .get("models/features/cnc_mill.toml")
            .unwrap()
            .replace("time_scale = 60", "time_scale = 1")
            .replace("bucket_s = 600", "bucket_s = 300")
            // The energy features span one bucket.
            .replace("window_s = 600\n", "window_s = 300\n");
        let def: crate::config::features::FeatureSetDef =
            crate::config::parse_toml(&text, "cnc_mill.toml").unwrap();
        let mut t = (*Config::embedded_twin_types().unwrap()["cnc_mill"]).clone();
        t.features = None;
        let mut types = std::collections::HashMap::from([("cnc_mill".to_string(), t)]);
        crate::assets::features::attach(&mut types, vec![("cnc_mill.toml".into(), def)]).unwrap();
        Arc::new(types.remove("cnc_mill").unwrap())
    }

    fn idx(t: &TwinType, name: &str) -> SignalIdx {
        t.signal(name).unwrap()
    }

    fn feature(row: &FeatureRow, set: &FeatureSet, name: &str) -> Option<f64> {
        let i = set.features.iter().position(|f| f.name == name).unwrap();
        row.values[i]
    }

    #[test]
    fn windows_match_a_direct_computation() {
        let t = mill();
        let mut e = FeatureEngine::new(t.clone()).unwrap();
        let set = e.set().clone();
        let vib = idx(&t, "vibration");
        let state = idx(&t, "state");
        let code = |st: MachineState| {
            let (_, codes) = t.state.as_ref().unwrap();
            *codes.iter().find(|(_, s)| **s == st).unwrap().0 as f64
        };
        let (running, down) = (code(MachineState::Running), code(MachineState::Down));
        // A bucket boundary (a multiple of 300 s).
        let t0 = 1_800_000_000_000;
        let mut rows = Vec::new();
        let mut vals: Vec<(i64, f64)> = Vec::new();
        // 3 hours of 1 Hz vibration rising linearly; RUNNING, a DOWN at 1 h for 10 min.
        e.push(state, t0, running);
        for k in 0..(3 * 3600) {
            let ts = t0 + k * 1000;
            let v = 1.0 + k as f64 / 3600.0;
            vals.push((ts, v));
            if k == 3600 {
                rows.extend(e.push(state, ts, down));
            }
            if k == 4200 {
                rows.extend(e.push(state, ts, running));
            }
            rows.extend(e.push(vib, ts, v));
        }
        // The bucket ending at 3 h (closed by the last readings? no: push one more).
        rows.extend(e.push(vib, t0 + 3 * 3600 * 1000, 4.0));
        let last = rows.last().unwrap();
        assert_eq!(last.bucket_end, t0 + 3 * 3_600_000);
        let in_window: Vec<f64> = vals
            .iter()
            .filter(|(ts, _)| *ts >= last.bucket_end - 3_600_000 && *ts < last.bucket_end)
            .map(|x| x.1)
            .collect();
        let mean = in_window.iter().sum::<f64>() / in_window.len() as f64;
        let var =
            in_window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / in_window.len() as f64;
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
        assert!(close(
            feature(last, &set, "vibration_mean_1h").unwrap(),
            mean
        ));
        assert!(close(
            feature(last, &set, "vibration_std_1h").unwrap(),
            var.sqrt()
        ));
        assert_eq!(
            feature(last, &set, "vibration_max_1h"),
            in_window.last().copied()
        );
        // Rising by 1 per hour.
        assert!(close(
            feature(last, &set, "vibration_slope_4h").unwrap(),
            1.0
        ));
        assert_eq!(feature(last, &set, "downs_24h"), Some(1.0));
        // Repaired at 70 min: 110 minutes before the end of the 3 h bucket.
        assert!(close(
            feature(last, &set, "hours_since_repair").unwrap(),
            110.0 / 60.0
        ));
        // Of the last 8 h, 3 h were observed: 170 min RUNNING.
        assert!(close(
            feature(last, &set, "running_share_8h").unwrap(),
            170.0 / 480.0
        ));
        // A late reading is not taken.
        assert!(e.push(vib, t0, 1.0).is_none());
        assert_eq!(e.state().late, 1);
    }

    #[test]
    fn a_restored_state_continues_identically() {
        let t = mill();
        let vib = idx(&t, "vibration");
        let t0 = 1_800_000_000_000;
        let feed = |e: &mut FeatureEngine, from: i64, to: i64| {
            let mut rows = Vec::new();
            for k in from..to {
                rows.extend(e.push(vib, t0 + k * 7000, (k % 13) as f64 * 0.1));
            }
            rows
        };
        let mut a = FeatureEngine::new(t.clone()).unwrap();
        let all = feed(&mut a, 0, 5000);
        let mut b = FeatureEngine::new(t.clone()).unwrap();
        let mut rows = feed(&mut b, 0, 2000);
        let bytes = postcard::to_stdvec(b.state()).unwrap();
        let mut c = FeatureEngine::new(t.clone()).unwrap();
        assert!(c.restore(postcard::from_bytes(&bytes).unwrap()));
        rows.extend(feed(&mut c, 2000, 5000));
        assert_eq!(rows, all);
    }

    /// A day and more of 1 Hz data from every signal of the mill: the state
    /// (what a checkpoint holds, and about what the twin keeps in memory)
    /// stays bounded by the longest windows, not by the data.
    #[test]
    fn the_state_is_bounded_by_the_windows() {
        let t = mill();
        let mut e = FeatureEngine::new(t.clone()).unwrap();
        let t0 = 1_800_000_000_000;
        let n = t.signals.len() as SignalIdx;
        let mut size_at = Vec::new();
        for k in 0..(50 * 3600) {
            for s in 0..n {
                e.push(s, t0 + k * 1000, ((k + s as i64) % 17) as f64);
            }
            if k == 25 * 3600 || k == 50 * 3600 - 1 {
                size_at.push(postcard::to_stdvec(e.state()).unwrap().len());
            }
        }
        eprintln!("feature state after 25 h and 50 h: {size_at:?} bytes");
        assert_eq!(
            e.state().totals.len(),
            288,
            "a day of buckets for downs_24h"
        );
        assert_eq!(e.state().moments.len(), 48, "4 h of buckets for the slopes");
        // The rings never grow past what they keep.
        assert!(e.state().totals.capacity() < 300 && e.state().moments.capacity() < 60);
        assert!(size_at[1] <= size_at[0] + 64, "{size_at:?}");
        assert!(size_at[1] < 64 << 10, "{size_at:?}");
    }
}
