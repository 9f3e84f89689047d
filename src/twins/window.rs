//! Rolling windows of one signal, updated in O(1) per reading.
//!
//! * count window: the last `N` readings;
//! * time window: readings whose source time lies within `W` seconds of the
//!   newest one (bounded to [`MAX_TIME_ENTRIES`] entries);
//! * EMA, last value, and the length of the current run of identical values
//!   (for stuck-sensor detection).
//!
//! Mean and variance come from running sums of values *shifted* by a reference
//! (the mean when the sums were last rebuilt), which avoids the catastrophic
//! cancellation of `Σx² - (Σx)²/n` on signals with a large offset. The sums are
//! rebuilt from the buffer every `capacity` evictions so rounding cannot drift.
//! Min and max are computed by a scan when a snapshot is asked for (rare), which
//! keeps updates cheap and memory small.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

/// Upper bound on time-window entries per signal (memory guard for fast signals).
pub const MAX_TIME_ENTRIES: usize = 4096;

/// Where each new window grows its buffer, spread over windows: see
/// [`SignalWindow::grow_at`].
static NEXT_GROWTH: AtomicU8 = AtomicU8::new(0);

fn growth_slot() -> u8 {
    NEXT_GROWTH.fetch_add(1, Ordering::Relaxed) % 7
}

/// Running shifted sums over a sliding set of values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Sums {
    k: f64,
    s1: f64,
    s2: f64,
    evictions: usize,
}

impl Sums {
    fn add(&mut self, x: f64) {
        let d = x - self.k;
        self.s1 += d;
        self.s2 += d * d;
    }
    fn remove(&mut self, x: f64) {
        let d = x - self.k;
        self.s1 -= d;
        self.s2 -= d * d;
        self.evictions += 1;
    }
    fn rebuild<'a>(&mut self, values: impl Iterator<Item = &'a f64> + Clone) {
        let (mut n, mut sum) = (0usize, 0.0);
        for v in values.clone() {
            n += 1;
            sum += v;
        }
        self.k = if n > 0 { sum / n as f64 } else { 0.0 };
        self.s1 = 0.0;
        self.s2 = 0.0;
        for v in values {
            self.add(*v);
        }
        self.evictions = 0;
    }
    fn mean(&self, n: usize) -> Option<f64> {
        (n > 0).then(|| self.k + self.s1 / n as f64)
    }
    /// Sample standard deviation (n-1).
    fn std(&self, n: usize) -> Option<f64> {
        if n < 2 {
            return (n == 1).then_some(0.0);
        }
        let nf = n as f64;
        let var = (self.s2 - self.s1 * self.s1 / nf) / (nf - 1.0);
        Some(var.max(0.0).sqrt())
    }
}

/// Statistics of one window, as shown in the API.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct WindowStats {
    pub count: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

fn min_max<'a>(it: impl Iterator<Item = &'a f64>) -> (Option<f64>, Option<f64>) {
    it.fold((None, None), |(lo, hi), &v| {
        (
            Some(lo.map_or(v, |l: f64| l.min(v))),
            Some(hi.map_or(v, |h: f64| h.max(v))),
        )
    })
}

/// `ts` of a buffered reading that is not in the time window (it came
/// later than the window reached, or before a restore).
const NO_TIME: i64 = i64::MIN;

/// The rolling state of one signal.
///
/// Both windows live in one buffer of readings in arrival order: the newest
/// `cap` are the count window; from `tstart` on, those with a time are the
/// time window. At a steady rate both windows mostly hold the same readings,
/// which are then stored once (16 bytes each): with a million signals in
/// one process (100,000 machines of 10 signals) that halves the windows.
///
/// A checkpoint keeps everything but the time window's readings (up to
/// [`MAX_TIME_ENTRIES`] per signal: at 30 Hz, 1,000 machines of 10 signals
/// would write ~300 MB per checkpoint round). After a restore the time
/// window refills from the readings replayed and received, within one span;
/// the count window (which the alarm rules use), EMA, last value and runs
/// are restored exactly.
#[derive(Debug, Clone)]
pub struct SignalWindow {
    cap: usize,
    span_ms: i64,
    alpha: f64,
    buf: VecDeque<(i64, f64)>,
    sums: Sums,
    /// Where the time window starts in `buf`, and how many readings it holds.
    tstart: usize,
    tlen: usize,
    tsums: Sums,
    newest_ts: i64,
    pub ema: Option<f64>,
    pub last: Option<(i64, f64)>,
    /// Readings seen in total.
    pub total: u64,
    /// Consecutive readings with the same value as the last one.
    pub same_run: usize,
    /// While filling, the buffer grows (doubles) once it is (9 + grow_at)/16
    /// full, `grow_at` 0 to 6: the equal windows of a plant's signals,
    /// started together at the same rate, would otherwise all double at the
    /// same reading (at 100 Hz, 10,000 signals copied and faulted in 330 MB
    /// within a second on the twins' threads); spread, the same growth
    /// takes several seconds.
    grow_at: u8,
}

/// The checkpoint form of a window (the count window's values, not the
/// time window's readings); the field names are those checkpoints always had.
#[derive(Serialize)]
struct WindowOut<'a> {
    cap: usize,
    span_ms: i64,
    alpha: f64,
    values: CountValues<'a>,
    sums: &'a Sums,
    newest_ts: i64,
    ema: Option<f64>,
    last: Option<(i64, f64)>,
    total: u64,
    same_run: usize,
}

struct CountValues<'a>(&'a SignalWindow);

impl Serialize for CountValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.count_window().map(|(_, v)| v))
    }
}

#[derive(Deserialize)]
struct WindowIn {
    cap: usize,
    span_ms: i64,
    alpha: f64,
    values: VecDeque<f64>,
    sums: Sums,
    newest_ts: i64,
    ema: Option<f64>,
    last: Option<(i64, f64)>,
    total: u64,
    same_run: usize,
}

impl Serialize for SignalWindow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WindowOut {
            cap: self.cap,
            span_ms: self.span_ms,
            alpha: self.alpha,
            values: CountValues(self),
            sums: &self.sums,
            newest_ts: self.newest_ts,
            ema: self.ema,
            last: self.last,
            total: self.total,
            same_run: self.same_run,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SignalWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WindowIn::deserialize(d)?;
        let cap = w.cap.max(2);
        let skip = w.values.len().saturating_sub(cap);
        let buf: VecDeque<(i64, f64)> = w
            .values
            .into_iter()
            .skip(skip)
            .map(|v| (NO_TIME, v))
            .collect();
        Ok(SignalWindow {
            cap,
            span_ms: w.span_ms,
            alpha: w.alpha,
            tstart: buf.len(),
            buf,
            sums: w.sums,
            tlen: 0,
            tsums: Sums::default(),
            newest_ts: w.newest_ts,
            ema: w.ema,
            last: w.last,
            total: w.total,
            same_run: w.same_run,
            grow_at: growth_slot(),
        })
    }
}

impl SignalWindow {
    /// A window of `count` readings and `seconds` of time with EMA factor `alpha`.
    pub fn new(count: usize, seconds: f64, alpha: f64) -> Self {
        SignalWindow {
            cap: count.max(2),
            span_ms: (seconds * 1000.0) as i64,
            alpha,
            buf: VecDeque::new(),
            sums: Sums::default(),
            tstart: 0,
            tlen: 0,
            tsums: Sums::default(),
            newest_ts: i64::MIN,
            ema: None,
            last: None,
            total: 0,
            same_run: 0,
            grow_at: growth_slot(),
        }
    }

    /// Grow a buffer of `room` before it is full (see `grow_at`) if the
    /// time window, still filling its span, will outgrow it anyway; never
    /// past what can be held. A window that already covers its span keeps
    /// its buffer (no memory spent ahead).
    fn grow_early(&mut self, room: usize) {
        let Some(&(oldest, _)) = self.buf.get(self.tstart) else {
            return;
        };
        let covered = self.newest_ts.saturating_sub(oldest);
        // Readings the full span will hold at the rate so far: tlen * span / covered.
        if oldest == NO_TIME
            || covered <= 0
            || (self.tlen as i128) * (self.span_ms as i128) <= (room as i128) * (covered as i128)
        {
            return;
        }
        let want = (room * 2).min(self.most_held());
        self.buf.reserve_exact(want - self.buf.len());
    }

    /// Most readings the buffer ever holds at once: a full time window (and
    /// the reading that pushes one out) or the count window, whichever is
    /// larger.
    fn most_held(&self) -> usize {
        MAX_TIME_ENTRIES.max(self.cap) + 2
    }

    /// The readings of the count window, oldest first.
    fn count_window(&self) -> std::collections::vec_deque::Iter<'_, (i64, f64)> {
        self.buf.range(self.buf.len().saturating_sub(self.cap)..)
    }

    /// The readings of the time window, in arrival order.
    fn time_window(&self) -> impl Iterator<Item = &(i64, f64)> + Clone {
        self.buf.range(self.tstart..).filter(|(t, _)| *t != NO_TIME)
    }

    /// Add a reading. Readings older than the time window are counted in the
    /// count window and EMA but not in the time window.
    pub fn push(&mut self, ts_ms: i64, v: f64) {
        if ts_ms > self.newest_ts {
            self.newest_ts = ts_ms;
        }
        let cutoff = self.newest_ts.saturating_sub(self.span_ms);
        let timed = ts_ms > cutoff && ts_ms != NO_TIME;
        // Count window: the reading `cap` back leaves it.
        let n = self.buf.len();
        if n == 0 {
            self.sums.k = v;
        }
        if n >= self.cap {
            let old = self.buf[n - self.cap].1;
            self.sums.remove(old);
        }
        let (len, room) = (self.buf.len(), self.buf.capacity());
        if len > self.cap
            && len * 16 >= room * (9 + self.grow_at as usize)
            && room < self.most_held()
        {
            self.grow_early(room);
        }
        self.buf.push_back((if timed { ts_ms } else { NO_TIME }, v));
        self.sums.add(v);
        if self.sums.evictions >= self.cap {
            let mut sums = std::mem::take(&mut self.sums);
            sums.rebuild(self.count_window().map(|(_, v)| v));
            self.sums = sums;
        }
        // Time window.
        if timed {
            if self.tlen == 0 {
                self.tsums.k = v;
            }
            self.tsums.add(v);
            self.tlen += 1;
        }
        while let Some(&(t, old)) = self.buf.get(self.tstart) {
            if t == NO_TIME {
                self.tstart += 1;
            } else if t <= cutoff || self.tlen > MAX_TIME_ENTRIES {
                self.tsums.remove(old);
                self.tlen -= 1;
                self.tstart += 1;
            } else {
                break;
            }
        }
        if self.tsums.evictions >= self.cap.max(64) {
            let mut tsums = std::mem::take(&mut self.tsums);
            tsums.rebuild(self.time_window().map(|(_, v)| v));
            self.tsums = tsums;
            // After a burst, give back what the buffer no longer needs.
            if self.buf.capacity() > 4 * self.buf.len().max(16) {
                self.buf.shrink_to(2 * self.buf.len());
            }
        }
        // Readings in neither window leave the buffer.
        let drop = self.tstart.min(self.buf.len().saturating_sub(self.cap));
        if drop > 0 {
            self.buf.drain(..drop);
            self.tstart -= drop;
        }
        // EMA, last, runs.
        self.ema = Some(match self.ema {
            None => v,
            Some(e) => e + self.alpha * (v - e),
        });
        match self.last {
            Some((_, lv)) if lv == v => self.same_run += 1,
            _ => self.same_run = 1,
        }
        if self.last.is_none_or(|(lt, _)| ts_ms >= lt) {
            self.last = Some((ts_ms, v));
        }
        self.total += 1;
    }

    /// Mean and standard deviation of the count window (cheap; used by z-score rules).
    pub fn mean_std(&self) -> (usize, Option<f64>, Option<f64>) {
        let n = self.buf.len().min(self.cap);
        (n, self.sums.mean(n), self.sums.std(n))
    }

    /// Statistics of the count window.
    pub fn count_stats(&self) -> WindowStats {
        let n = self.buf.len().min(self.cap);
        let (min, max) = min_max(self.count_window().map(|(_, v)| v));
        WindowStats {
            count: n,
            mean: self.sums.mean(n),
            std: self.sums.std(n),
            min,
            max,
        }
    }

    /// Statistics of the time window.
    pub fn time_stats(&self) -> WindowStats {
        let n = self.tlen;
        let (min, max) = min_max(self.time_window().map(|(_, v)| v));
        WindowStats {
            count: n,
            mean: self.tsums.mean(n),
            std: self.tsums.std(n),
            min,
            max,
        }
    }

    /// Readings per second over the time window.
    pub fn rate_hz(&self) -> Option<f64> {
        let first = self.time_window().next()?;
        let last = self.buf.iter().rev().find(|(t, _)| *t != NO_TIME)?;
        let dt = (last.0 - first.0) as f64 / 1000.0;
        (dt > 0.0).then(|| (self.tlen - 1) as f64 / dt)
    }

    /// Bytes of readings the windows hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() * std::mem::size_of::<(i64, f64)>()
    }

    /// Window length in seconds.
    pub fn span_s(&self) -> f64 {
        self.span_ms as f64 / 1000.0
    }

    /// Whether the running sums are still finite (a corrupted state is restarted).
    pub fn is_sound(&self) -> bool {
        self.sums.s1.is_finite()
            && self.sums.s2.is_finite()
            && self.tsums.s1.is_finite()
            && self.tsums.s2.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(vals: &[f64]) -> (f64, f64, f64, f64) {
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let min = vals.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (mean, var.sqrt(), min, max)
    }

    #[test]
    fn count_window_matches_naive_over_many_evictions() {
        let mut w = SignalWindow::new(50, 3600.0, 0.1);
        let mut all = Vec::new();
        let mut x: u64 = 7;
        for i in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Large offset, small spread: the case naive sums get wrong.
            let v = 1.0e6 + ((x >> 33) % 1000) as f64 / 100.0;
            w.push(i * 10, v);
            all.push(v);
        }
        let tail = &all[all.len() - 50..];
        let (mean, std, min, max) = naive(tail);
        let s = w.count_stats();
        assert_eq!(s.count, 50);
        assert!(
            (s.mean.unwrap() - mean).abs() < 1e-6,
            "{:?} vs {mean}",
            s.mean
        );
        assert!((s.std.unwrap() - std).abs() < 1e-6, "{:?} vs {std}", s.std);
        assert_eq!((s.min.unwrap(), s.max.unwrap()), (min, max));
    }

    /// Fast signals started together: their buffers grow at different
    /// readings (not all at once), never past what the windows can hold
    /// (a plain doubling took a 4,097-reading buffer to 8,192), and the
    /// windows' answers do not depend on it.
    #[test]
    fn fast_windows_grow_apart_and_stay_bounded() {
        let mut ws: Vec<SignalWindow> = (0..14).map(|_| SignalWindow::new(60, 60.0, 0.1)).collect();
        let mut grew_at: Vec<Vec<usize>> = vec![Vec::new(); ws.len()];
        for i in 0..7_000usize {
            for (w, g) in ws.iter_mut().zip(grew_at.iter_mut()) {
                let before = w.buf.capacity();
                w.push(i as i64 * 10, (i % 97) as f64);
                if w.buf.capacity() != before {
                    g.push(i);
                }
            }
        }
        let most = MAX_TIME_ENTRIES + 60 + 2;
        for w in &ws {
            assert!(
                w.buf.capacity() <= most + 64,
                "capacity {}",
                w.buf.capacity()
            );
            let t = w.time_stats();
            assert_eq!(t.count, MAX_TIME_ENTRIES);
            assert_eq!(w.count_stats().count, 60);
            assert_eq!(t.mean, ws[0].time_stats().mean);
        }
        // The step past 2,048 readings happens at several different readings.
        let steps: std::collections::HashSet<usize> = grew_at
            .iter()
            .map(|g| *g.iter().find(|&&i| i >= 1024).unwrap())
            .collect();
        assert!(steps.len() >= 5, "grew at {steps:?}");
    }

    #[test]
    fn time_window_keeps_only_recent_readings() {
        let mut w = SignalWindow::new(1000, 10.0, 0.5);
        for i in 0..100 {
            w.push(i * 1000, i as f64);
        }
        // Newest ts 99 s: the window (89 s, 99 s] holds 90..=99.
        let s = w.time_stats();
        assert_eq!(s.count, 10);
        assert_eq!(s.min, Some(90.0));
        assert_eq!(s.max, Some(99.0));
        assert!((s.mean.unwrap() - 94.5).abs() < 1e-9);
        assert!((w.rate_hz().unwrap() - 1.0).abs() < 1e-9);
        // A reading older than the window counts only in the count window.
        w.push(5_000, -1.0);
        assert_eq!(w.time_stats().count, 10);
        assert_eq!(w.count_stats().min, Some(-1.0));
        assert_eq!(w.last, Some((99_000, 99.0)));
    }

    #[test]
    fn ema_and_same_run() {
        let mut w = SignalWindow::new(10, 10.0, 0.5);
        w.push(0, 10.0);
        w.push(1, 20.0);
        assert_eq!(w.ema, Some(15.0));
        w.push(2, 20.0);
        w.push(3, 20.0);
        assert_eq!(w.same_run, 3);
        w.push(4, 21.0);
        assert_eq!(w.same_run, 1);
    }

    #[test]
    fn survives_a_checkpoint_round_trip() {
        let mut w = SignalWindow::new(5, 10.0, 0.3);
        for i in 0..12 {
            w.push(i * 100, (i * i) as f64);
        }
        let json = serde_json::to_string(&w).unwrap();
        let mut back: SignalWindow = serde_json::from_str(&json).unwrap();
        assert_eq!(back.count_stats(), w.count_stats());
        assert_eq!(back.mean_std(), w.mean_std());
        assert_eq!(
            (back.ema, back.last, back.total, back.same_run),
            (w.ema, w.last, w.total, w.same_run)
        );
        // The time window's readings are not in the checkpoint: it refills.
        assert_eq!(back.time_stats().count, 0);
        back.push(1_200, 5.0);
        assert_eq!(back.time_stats().count, 1);
        assert_eq!(back.count_stats().count, 5);
    }

    /// The two windows as separate buffers (how they were kept before one
    /// buffer held both): the reference the shared buffer must agree with.
    struct TwoBuffers {
        cap: usize,
        span: i64,
        newest: i64,
        values: VecDeque<f64>,
        times: VecDeque<(i64, f64)>,
    }

    impl TwoBuffers {
        fn push(&mut self, ts: i64, v: f64) {
            if self.values.len() == self.cap {
                self.values.pop_front();
            }
            self.values.push_back(v);
            self.newest = self.newest.max(ts);
            let cutoff = self.newest - self.span;
            if ts > cutoff {
                self.times.push_back((ts, v));
            }
            while let Some(&(t, _)) = self.times.front() {
                if t <= cutoff || self.times.len() > MAX_TIME_ENTRIES {
                    self.times.pop_front();
                } else {
                    break;
                }
            }
        }
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
            (a, b) => a == b,
        }
    }

    proptest::proptest! {
        /// Random steps forward and back in time, bursts and gaps: both
        /// windows' statistics as the separate buffers give them.
        #[test]
        fn one_buffer_agrees_with_two(
            steps in proptest::collection::vec((-3_000i64..5_000, -50.0f64..50.0), 1..600),
            cap in 2usize..40,
            span_s in 1u32..20,
        ) {
            let mut w = SignalWindow::new(cap, span_s as f64, 0.3);
            let mut r = TwoBuffers { cap, span: span_s as i64 * 1000, newest: i64::MIN, values: VecDeque::new(), times: VecDeque::new() };
            let mut ts = 1_000_000i64;
            for (dt, v) in steps {
                ts += dt;
                w.push(ts, v);
                r.push(ts, v);
                let c = w.count_stats();
                let vals: Vec<f64> = r.values.iter().copied().collect();
                proptest::prop_assert_eq!(c.count, vals.len());
                proptest::prop_assert_eq!(c.min, vals.iter().copied().reduce(f64::min));
                proptest::prop_assert_eq!(c.max, vals.iter().copied().reduce(f64::max));
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                proptest::prop_assert!(close(c.mean, Some(mean)), "{:?} vs {}", c.mean, mean);
                let t = w.time_stats();
                let tv: Vec<f64> = r.times.iter().map(|x| x.1).collect();
                proptest::prop_assert_eq!(t.count, tv.len());
                proptest::prop_assert_eq!(t.min, tv.iter().copied().reduce(f64::min));
                proptest::prop_assert_eq!(t.max, tv.iter().copied().reduce(f64::max));
                if !tv.is_empty() {
                    let tm = tv.iter().sum::<f64>() / tv.len() as f64;
                    proptest::prop_assert!(close(t.mean, Some(tm)), "{:?} vs {}", t.mean, tm);
                }
                let rate = match (r.times.front(), r.times.back()) {
                    (Some(f), Some(l)) if l.0 > f.0 => Some((r.times.len() - 1) as f64 / ((l.0 - f.0) as f64 / 1000.0)),
                    _ => None,
                };
                proptest::prop_assert!(close(w.rate_hz(), rate));
            }
        }
    }

    #[test]
    fn a_steady_signal_is_stored_once() {
        // 1 Hz with a 60-reading and a 60 s window: both windows are the
        // same readings, held once.
        let mut w = SignalWindow::new(60, 60.0, 0.2);
        for i in 0..10_000 {
            w.push(i * 1000, (i % 97) as f64);
        }
        assert_eq!(w.count_stats().count, 60);
        assert_eq!(w.time_stats().count, 60);
        assert!(w.heap_bytes() <= 64 * 16, "{} bytes", w.heap_bytes());
        // After a burst of 30 Hz the buffer gives its memory back.
        for i in 0..3_000 {
            w.push(10_000_000 + i * 33, 1.0);
        }
        assert!(w.time_stats().count > 1000);
        for i in 0..1_000 {
            w.push(10_200_000 + i * 1000, 2.0);
        }
        assert!(w.heap_bytes() <= 256 * 16, "{} bytes", w.heap_bytes());
    }

    #[test]
    fn a_checkpoint_stays_small_for_fast_signals() {
        let mut w = SignalWindow::new(60, 60.0, 0.2);
        for i in 0..10_000 {
            w.push(i * 33, (i % 977) as f64 * 0.1);
        }
        assert!(w.time_stats().count > 1000);
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.len() < 2_000, "{} bytes", json.len());
    }
}
