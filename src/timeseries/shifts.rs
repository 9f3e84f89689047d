//! Accounting per shift: time spent in each machine state and counter
//! increments, bucketed by the shift they fall in.
//!
//! State rows are change events: row i holds its state over `[ts_i,
//! ts_{i+1})` of the same key; a key's last row opens no interval and
//! zero-length intervals add nothing (a repeated-state heartbeat just splits
//! an interval). Intervals are cut at shift boundaries, which come from a
//! [`ShiftCalendar`], so a local-time calendar with a daylight-saving change
//! (a 7 h or 9 h night shift) is handled the same way as fixed 8 h shifts.
//!
//! Cumulative PLC counters are turned into increments that survive a PLC
//! restart: a counter that drops is read as the count since the restart.

use foldhash::{HashMap, HashMapExt};

use super::keys::NULL_KEY;
use super::order::RowOrder;
use super::{same_len, TsError};

/// The shift that contains an instant.
pub trait ShiftCalendar {
    /// `[start, end)` of the shift containing `ts_ms` (UTC ms), `start <= ts_ms < end`.
    fn shift_at(&self, ts_ms: i64) -> (i64, i64);
}

/// Shifts of a fixed length aligned to an origin (e.g. 8 h from 00:00 UTC).
#[derive(Debug, Clone, Copy)]
pub struct FixedShifts {
    pub length_ms: i64,
    pub origin_ms: i64,
}

impl ShiftCalendar for FixedShifts {
    fn shift_at(&self, ts_ms: i64) -> (i64, i64) {
        let k = (ts_ms - self.origin_ms).div_euclid(self.length_ms);
        let start = self.origin_ms + k * self.length_ms;
        (start, start + self.length_ms)
    }
}

/// A plant's shift pattern in local time: shifts start at fixed local
/// times every day (e.g. 06:00, 14:00, 22:00 in Europe/Berlin). On the night
/// of a daylight-saving change the shift spanning it is an hour shorter or
/// longer, as it is on the shop floor. A start time that does not exist that
/// day (inside the spring-forward gap) moves to the first valid instant.
#[derive(Debug, Clone)]
pub struct LocalShifts {
    tz: chrono_tz::Tz,
    /// (minutes after local midnight, name), sorted.
    starts: Vec<(u32, String)>,
    cache: std::cell::Cell<(i64, i64, usize)>,
}

impl LocalShifts {
    /// Shifts starting at `starts` (minutes after local midnight, name).
    pub fn new(tz: chrono_tz::Tz, mut starts: Vec<(u32, String)>) -> Result<LocalShifts, TsError> {
        if starts.is_empty() {
            return Err(TsError::Param(
                "a shift calendar needs at least one shift".into(),
            ));
        }
        starts.sort();
        if starts.windows(2).any(|w| w[0].0 == w[1].0) || starts.iter().any(|s| s.0 >= 24 * 60) {
            return Err(TsError::Param(
                "shift start times must be distinct times of day".into(),
            ));
        }
        Ok(LocalShifts {
            tz,
            starts,
            cache: std::cell::Cell::new((0, 0, 0)),
        })
    }

    /// Parse `HH:MM`.
    pub fn parse_time_of_day(s: &str) -> Option<u32> {
        let (h, m) = s.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    }

    /// The shift containing `ts_ms`: (start, end, name).
    pub fn shift(&self, ts_ms: i64) -> (i64, i64, &str) {
        let (a, b, i) = self.cache.get();
        if a <= ts_ms && ts_ms < b {
            return (a, b, &self.starts[i].1);
        }
        use chrono::{Duration, TimeZone};
        let local = self
            .tz
            .timestamp_millis_opt(ts_ms)
            .single()
            .map(|d| d.naive_local().date())
            .unwrap_or_default();
        // Every start of the day before, the day, and the day after.
        let mut cands: Vec<(i64, usize)> = Vec::with_capacity(self.starts.len() * 3);
        for d in [local - Duration::days(1), local, local + Duration::days(1)] {
            for (i, (mins, _)) in self.starts.iter().enumerate() {
                let naive = d.and_hms_opt(mins / 60, mins % 60, 0).unwrap_or_default();
                let mut at = self.tz.from_local_datetime(&naive).earliest();
                let mut step = naive;
                while at.is_none() {
                    step += Duration::minutes(15);
                    at = self.tz.from_local_datetime(&step).earliest();
                }
                if let Some(at) = at {
                    cands.push((at.timestamp_millis(), i));
                }
            }
        }
        cands.sort();
        let k = cands.partition_point(|c| c.0 <= ts_ms).saturating_sub(1);
        let (start, i) = cands[k];
        let end = cands.get(k + 1).map_or(start + 8 * 3_600_000, |c| c.0);
        self.cache.set((start, end, i));
        (start, end, &self.starts[i].1)
    }
}

impl ShiftCalendar for LocalShifts {
    fn shift_at(&self, ts_ms: i64) -> (i64, i64) {
        let (a, b, _) = self.shift(ts_ms);
        (a, b)
    }
}

/// Milliseconds per (key, shift) and state class.
#[derive(Debug, Default)]
pub struct ShiftDurations {
    pub key: Vec<u32>,
    pub shift_start: Vec<i64>,
    pub shift_end: Vec<i64>,
    /// `ms[class][row]`.
    pub ms: Vec<Vec<i64>>,
    index: HashMap<(u32, i64), usize>,
}

impl ShiftDurations {
    /// Row of a (key, shift start), if it has time.
    pub fn row(&self, key: u32, shift_start: i64) -> Option<usize> {
        self.index.get(&(key, shift_start)).copied()
    }

    /// Number of (key, shift) rows.
    pub fn len(&self) -> usize {
        self.key.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    fn slot(&mut self, key: u32, (start, end): (i64, i64)) -> usize {
        let n = self.key.len();
        *self.index.entry((key, start)).or_insert_with(|| {
            self.key.push(key);
            self.shift_start.push(start);
            self.shift_end.push(end);
            self.ms.iter_mut().for_each(|c| c.push(0));
            n
        })
    }
}

/// Time per state class, key and shift. `class[i]` is the state class of
/// row i (`0..n_classes`; `u8::MAX` = a state that counts nowhere, e.g. OFF).
#[allow(clippy::too_many_arguments)]
pub fn state_durations(
    keys: &[u32],
    ts: &[i64],
    class: &[u8],
    n_classes: usize,
    n_keys: usize,
    order: &RowOrder,
    calendar: &dyn ShiftCalendar,
) -> Result<ShiftDurations, TsError> {
    same_len("state key/ts/class", &[keys.len(), ts.len(), class.len()])?;
    if let Some(&c) = class
        .iter()
        .find(|&&c| c != u8::MAX && c as usize >= n_classes)
    {
        return Err(TsError::Param(format!("state class {c} >= {n_classes}")));
    }
    let mut out = ShiftDurations {
        ms: vec![Vec::new(); n_classes],
        index: HashMap::new(),
        ..Default::default()
    };
    let mut prev: Vec<Option<(i64, u8)>> = vec![None; n_keys];
    order.for_each(|i| {
        let k = keys[i];
        if k == NULL_KEY {
            return;
        }
        if let Some((mut a, c)) = prev[k as usize] {
            let b = ts[i];
            while a < b {
                let shift = calendar.shift_at(a);
                let end = shift.1.min(b);
                if c != u8::MAX {
                    let s = out.slot(k, shift);
                    out.ms[c as usize][s] += end - a;
                }
                a = end;
            }
        }
        prev[k as usize] = Some((ts[i], class[i]));
    });
    Ok(out)
}

/// Increments of a cumulative counter per key: 0 for a key's first row,
/// `c_i - c_{i-1}` when the counter rose or stayed, `c_i` when it dropped (a
/// PLC restart: the value is the count since). A null reading gives 0 and
/// leaves the previous value in place.
pub fn counter_deltas(
    keys: &[u32],
    counter: &[i64],
    valid: Option<&[bool]>,
    n_keys: usize,
    order: &RowOrder,
) -> Result<Vec<i64>, TsError> {
    deltas_with(
        keys,
        counter,
        valid,
        n_keys,
        order,
        |last: &mut Option<i64>, c| {
            let d = match *last {
                Some(p) if c >= p => c - p,
                Some(_) => c,
                None => 0,
            };
            *last = Some(c);
            d
        },
    )
}

/// The increment a new counter value `v` makes, given the last value and a
/// pending drop. A drop below the last value is held until the next value
/// tells a PLC reset (the counter stays below: the parts since the reset
/// count) from a glitch (it comes back: nothing counts twice). The first
/// value sets the baseline and counts nothing.
pub fn counter_step(last: &mut Option<f64>, drop: &mut Option<f64>, v: f64) -> f64 {
    let Some(prev) = *last else {
        *last = Some(v);
        return 0.0;
    };
    if v >= prev {
        // At or above the last value: a pending drop was a glitch.
        *drop = None;
        *last = Some(v);
        return v - prev;
    }
    match drop.take() {
        // The second value in a row below the last: a reset, counting from zero.
        Some(_) => {
            *last = Some(v);
            v
        }
        None => {
            *drop = Some(v);
            0.0
        }
    }
}

/// Increments of a cumulative counter per key with [`counter_step`]: PLC
/// resets count from zero, a single value below the last (a glitch) counts
/// nothing. A null reading gives 0 and changes nothing.
pub fn counter_deltas_tolerant(
    keys: &[u32],
    counter: &[i64],
    valid: Option<&[bool]>,
    n_keys: usize,
    order: &RowOrder,
) -> Result<Vec<i64>, TsError> {
    deltas_with(
        keys,
        counter,
        valid,
        n_keys,
        order,
        |(last, drop): &mut (Option<f64>, Option<f64>), c| {
            counter_step(last, drop, c as f64).round() as i64
        },
    )
}

/// Per-key increments of a counter, in `order`, with `step` turning a
/// key's state and a new value into its increment.
fn deltas_with<S: Clone + Default>(
    keys: &[u32],
    counter: &[i64],
    valid: Option<&[bool]>,
    n_keys: usize,
    order: &RowOrder,
    mut step: impl FnMut(&mut S, i64) -> i64,
) -> Result<Vec<i64>, TsError> {
    let n = same_len("counter key/value", &[keys.len(), counter.len()])?;
    let mut out = vec![0i64; n];
    let mut state: Vec<S> = vec![S::default(); n_keys];
    order.for_each(|i| {
        let k = keys[i];
        if k == NULL_KEY || valid.is_some_and(|v| !v[i]) {
            return;
        }
        out[i] = step(&mut state[k as usize], counter[i]);
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    #[test]
    fn resets_are_told_from_glitches() {
        let keys = vec![0; 8];
        // 100, a glitch to 3, back to 105; a reset to 2, then 4 and 9.
        let c = vec![100, 3, 105, 106, 2, 4, 9, 9];
        let d = counter_deltas_tolerant(&keys, &c, None, 1, &RowOrder::Natural(8)).unwrap();
        assert_eq!(d, vec![0, 0, 5, 1, 0, 4, 5, 0]);
        assert_eq!(d.iter().sum::<i64>(), 5 + 1 + 9);
    }

    proptest! {
        /// A monotone counter with one glitch somewhere counts exactly its
        /// rise; with a reset, its rise before plus its value after.
        #[test]
        fn glitches_count_nothing_and_resets_count_from_zero(
            steps in proptest::collection::vec(0i64..5, 2..60),
            at in 1usize..59,
            glitch in any::<bool>(),
        ) {
            let mut c: Vec<i64> = steps.iter().scan(1000, |acc, s| { *acc += s; Some(*acc) }).collect();
            let at = at.min(c.len() - 1);
            let rise = c[c.len() - 1] - c[0];
            let want = if glitch {
                // One low value in the middle; the next is at or above the last.
                if at + 1 < c.len() { c[at] = 7; }
                rise
            } else {
                // A reset at `at`: from then on the counter restarts at 0.
                let base = c[at] - 1;
                let before = c[at - 1] - c[0];
                for v in c.iter_mut().skip(at) { *v -= base; }
                if at + 1 < c.len() { before + c[c.len() - 1] } else { before }
            };
            let keys = vec![0; c.len()];
            let d = counter_deltas_tolerant(&keys, &c, None, 1, &RowOrder::Natural(c.len())).unwrap();
            prop_assert_eq!(d.iter().sum::<i64>(), want, "{:?} -> {:?}", c, d);
        }
    }

    #[test]
    fn intervals_split_at_shift_boundaries() {
        // Key 0: RUNNING (0) from 06:00, IDLE (1) from 09:00, heartbeat IDLE at 10:00, end 17:00.
        let keys = vec![0, 0, 0, 0];
        let ts = vec![6 * H, 9 * H, 10 * H, 17 * H];
        let class = vec![0, 1, 1, 1];
        let cal = FixedShifts {
            length_ms: 8 * H,
            origin_ms: 0,
        };
        let d = state_durations(&keys, &ts, &class, 2, 1, &RowOrder::Natural(4), &cal).unwrap();
        let s0 = d.row(0, 0).unwrap();
        let s1 = d.row(0, 8 * H).unwrap();
        let s2 = d.row(0, 16 * H).unwrap();
        assert_eq!((d.ms[0][s0], d.ms[1][s0]), (2 * H, 0));
        assert_eq!((d.ms[0][s1], d.ms[1][s1]), (H, 7 * H));
        assert_eq!((d.ms[0][s2], d.ms[1][s2]), (0, H));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn local_shifts_follow_the_time_zone_and_dst() {
        let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let cal = LocalShifts::new(
            tz,
            vec![
                (6 * 60, "early".into()),
                (14 * 60, "late".into()),
                (22 * 60, "night".into()),
            ],
        )
        .unwrap();
        // 2026-03-28 23:00 UTC = 2026-03-29 00:00 CET: inside the night shift
        // that started 2026-03-28 22:00 CET (21:00 UTC); clocks jump at 02:00,
        // so it ends 06:00 CEST = 04:00 UTC: 7 hours.
        let t = 1_774_738_800_000;
        let (a, b, name) = cal.shift(t);
        assert_eq!(name, "night");
        assert_eq!(a, t - 2 * H);
        assert_eq!(b - a, 7 * H);
        // A summer early shift: 06:00 CEST = 04:00 UTC.
        let (a, b, name) = cal.shift(1_782_894_000_000); // 2026-07-01 08:20 UTC
        assert_eq!((name, (b - a) / H), ("early", 8));
        assert_eq!(a % (24 * H), 4 * H);
        assert!(LocalShifts::new(tz, vec![]).is_err());
        assert_eq!(LocalShifts::parse_time_of_day("22:30"), Some(1350));
        assert_eq!(LocalShifts::parse_time_of_day("24:00"), None);
    }

    #[test]
    fn counters_survive_resets() {
        let keys = vec![0, 1, 0, 0, 0];
        let c = vec![100, 5, 110, 3, 7];
        let d = counter_deltas(&keys, &c, None, 2, &RowOrder::Natural(5)).unwrap();
        assert_eq!(d, vec![0, 0, 10, 3, 4]);
    }
}
