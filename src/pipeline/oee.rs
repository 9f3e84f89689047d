//! Overall equipment effectiveness per machine and shift, from state change
//! events and cumulative part counters (the gold OEE job and `bench W5`).
//!
//! * availability = running time / planned time (time in every planned
//!   state, i.e. not OFF or a planned stop, and not time whose state is
//!   unknown: a disconnected PLC is neither running nor a loss, it is
//!   reported as `unknown_ms` of its own);
//! * performance = ideal time for the parts made / running time, where each
//!   counter increment is weighted by the ideal cycle time of what was being
//!   made then (null without running time);
//! * quality = good / (good + reject) (null without parts);
//! * oee = their product (null if any is null).
//!
//! A (machine, shift) row exists when the machine had planned or running
//! time in that shift; counter increments in a shift without state time are
//! not counted (no row to carry them).

use deltalake::arrow::array::Float64Array;

use crate::assets::MachineState;
use crate::timeseries::rolling::f64_array;
use crate::timeseries::shifts::{counter_deltas, state_durations, ShiftCalendar};
use crate::timeseries::{RowOrder, TsError};

/// State class of a running machine. Classes `1..n_classes` are planned
/// but not running time (e.g. idle, down, setup), kept apart as the losses.
pub const RUNNING: u8 = 0;
/// A planned, not running class (for callers that need only one).
pub const PLANNED: u8 = 1;
/// A state that is not planned production time (OFF, planned stop).
pub const UNPLANNED: u8 = u8::MAX;
/// Time whose state is not known (UNKNOWN, DISCONNECTED): tracked, never planned.
pub const UNKNOWN: u8 = 4;

/// The state classes of a computation: `n` classes, of which `unknown` (if
/// any) is tracked but not planned time.
#[derive(Debug, Clone, Copy)]
pub struct Classes {
    pub n: usize,
    pub unknown: Option<u8>,
}

/// The classes of the machine states: RUNNING, IDLE, DOWN, SETUP and unknown.
pub const CLASSES: Classes = Classes {
    n: 5,
    unknown: Some(UNKNOWN),
};

/// The OEE class of a machine state (`None`: a code that is no state, such
/// as OFF, which is not planned time). The one mapping every gold job uses.
pub fn class_of(state: Option<MachineState>) -> u8 {
    match state {
        Some(MachineState::Running) => RUNNING,
        Some(MachineState::Idle) => 1,
        Some(MachineState::Down) => 2,
        Some(MachineState::Setup) => 3,
        Some(MachineState::Unknown | MachineState::Disconnected) => UNKNOWN,
        None => UNPLANNED,
    }
}

/// State change events: key, time, state class per row.
pub struct StateEvents<'a> {
    pub keys: &'a [u32],
    pub ts: &'a [i64],
    pub class: &'a [u8],
}

/// Part counter samples: key, time, cumulative good and reject counts, and
/// the ideal cycle time (ms per part) in force at each sample.
pub struct CounterSamples<'a> {
    pub keys: &'a [u32],
    pub ts: &'a [i64],
    pub good: &'a [i64],
    pub reject: &'a [i64],
    pub ideal_cycle_ms: IdealCycle<'a>,
}

/// Ideal cycle time: one for all, or one per counter row.
pub enum IdealCycle<'a> {
    Constant(f64),
    PerRow(&'a [f64]),
}

/// OEE rows, one per (key, shift) with state time.
#[derive(Debug)]
pub struct OeeShifts {
    pub key: Vec<u32>,
    pub shift_start: Vec<i64>,
    pub shift_end: Vec<i64>,
    pub planned_ms: Vec<i64>,
    pub running_ms: Vec<i64>,
    /// Time in the unknown class (0 without one).
    pub unknown_ms: Vec<i64>,
    /// Time per state class (`state_ms[class][row]`).
    pub state_ms: Vec<Vec<i64>>,
    /// Ideal time for the parts made (ms).
    pub ideal_ms: Vec<f64>,
    pub good: Vec<i64>,
    pub reject: Vec<i64>,
    pub availability: Float64Array,
    pub performance: Float64Array,
    pub quality: Float64Array,
    pub oee: Float64Array,
}

/// Compute OEE per key and shift.
pub fn oee_per_shift(
    states: &StateEvents<'_>,
    counts: &CounterSamples<'_>,
    classes: Classes,
    n_keys: usize,
    calendar: &dyn ShiftCalendar,
) -> Result<OeeShifts, TsError> {
    let s_order = RowOrder::for_rows(states.keys, n_keys, states.ts);
    let d = state_durations(
        states.keys,
        states.ts,
        states.class,
        classes.n.max(1),
        n_keys,
        &s_order,
        calendar,
    )?;
    let c_order = RowOrder::for_rows(counts.keys, n_keys, counts.ts);
    let dg = counter_deltas(counts.keys, counts.good, None, n_keys, &c_order)?;
    let dr = counter_deltas(counts.keys, counts.reject, None, n_keys, &c_order)?;
    let rows = d.len();
    let (mut good, mut reject, mut ideal) = (vec![0i64; rows], vec![0i64; rows], vec![0f64; rows]);
    for i in 0..counts.keys.len() {
        let (start, _) = calendar.shift_at(counts.ts[i]);
        let Some(r) = d.row(counts.keys[i], start) else {
            continue;
        };
        good[r] += dg[i];
        reject[r] += dr[i];
        let cycle = match counts.ideal_cycle_ms {
            IdealCycle::Constant(c) => c,
            IdealCycle::PerRow(v) => v[i],
        };
        ideal[r] += (dg[i] + dr[i]) as f64 * cycle;
    }
    let running = d.ms[RUNNING as usize].clone();
    let unknown = classes.unknown.map(|u| u as usize);
    let planned: Vec<i64> = (0..rows)
        .map(|r| {
            d.ms.iter()
                .enumerate()
                .filter(|(c, _)| Some(*c) != unknown)
                .map(|(_, v)| v[r])
                .sum()
        })
        .collect();
    let unknown_ms: Vec<i64> = match unknown {
        Some(u) => d.ms[u].clone(),
        None => vec![0; rows],
    };
    let mut cols: [(Vec<f64>, Vec<bool>); 4] = Default::default();
    for r in 0..rows {
        let parts = good[r] + reject[r];
        let a = (planned[r] > 0).then(|| running[r] as f64 / planned[r] as f64);
        // An unknown ideal cycle time (NaN) gives no performance.
        let p = (running[r] > 0 && !ideal[r].is_nan()).then(|| ideal[r] / running[r] as f64);
        let q = (parts > 0).then(|| good[r] as f64 / parts as f64);
        let o = match (a, p, q) {
            (Some(a), Some(p), Some(q)) => Some(a * p * q),
            _ => None,
        };
        for (c, v) in cols.iter_mut().zip([a, p, q, o]) {
            c.0.push(v.unwrap_or(0.0));
            c.1.push(v.is_some());
        }
    }
    let [a, p, q, o] = cols;
    Ok(OeeShifts {
        key: d.key.clone(),
        shift_start: d.shift_start.clone(),
        shift_end: d.shift_end.clone(),
        planned_ms: planned,
        running_ms: running,
        unknown_ms,
        state_ms: d.ms.clone(),
        ideal_ms: ideal,
        good,
        reject,
        availability: f64_array(a.0, a.1),
        performance: f64_array(p.0, p.1),
        quality: f64_array(q.0, q.1),
        oee: f64_array(o.0, o.1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeseries::FixedShifts;
    use deltalake::arrow::array::Array;

    const MIN: i64 = 60_000;

    /// A hand-computed shift: 8 h planned, 6 h running, 600 parts ideal at 30 s
    /// (=> 5 h ideal), 570 good + 30 rejects.
    #[test]
    fn hand_computed_shift() {
        let h = 60 * MIN;
        // 00:00 RUNNING, 02:00 DOWN, 04:00 RUNNING, 08:00 end.
        let st = StateEvents {
            keys: &[0, 0, 0, 0],
            ts: &[0, 2 * h, 4 * h, 8 * h],
            class: &[RUNNING, PLANNED, RUNNING, RUNNING],
        };
        // Counters from 1000 good / 10 rejects; a PLC restart at 05:00.
        let ct = CounterSamples {
            keys: &[0, 0, 0, 0],
            ts: &[0, 3 * h, 5 * h, 8 * h - 1],
            good: &[1000, 1300, 100, 370],
            reject: &[10, 25, 5, 15],
            ideal_cycle_ms: IdealCycle::Constant(30_000.0),
        };
        let cal = FixedShifts {
            length_ms: 8 * h,
            origin_ms: 0,
        };
        let two = Classes {
            n: 2,
            unknown: None,
        };
        let o = oee_per_shift(&st, &ct, two, 1, &cal).unwrap();
        assert_eq!(o.key.len(), 1);
        assert_eq!(o.state_ms[PLANNED as usize][0], 2 * h);
        assert_eq!((o.planned_ms[0], o.running_ms[0]), (8 * h, 6 * h));
        // good: 300 + 100 (restart) + 270 = 670; reject: 15 + 5 + 10 = 30.
        assert_eq!((o.good[0], o.reject[0]), (670, 30));
        assert_eq!(o.availability.value(0), 0.75);
        let perf = 700.0 * 30_000.0 / (6 * h) as f64;
        assert!((o.performance.value(0) - perf).abs() < 1e-12);
        assert!((o.quality.value(0) - 670.0 / 700.0).abs() < 1e-12);
        assert!((o.oee.value(0) - 0.75 * perf * 670.0 / 700.0).abs() < 1e-12);
        // No parts and no running time: nulls, not zeros.
        let idle = StateEvents {
            keys: &[0, 0],
            ts: &[0, h],
            class: &[PLANNED, PLANNED],
        };
        let none = CounterSamples {
            keys: &[],
            ts: &[],
            good: &[],
            reject: &[],
            ideal_cycle_ms: IdealCycle::Constant(1.0),
        };
        let o = oee_per_shift(&idle, &none, two, 1, &cal).unwrap();
        assert!(o.performance.is_null(0) && o.quality.is_null(0) && o.oee.is_null(0));
        assert_eq!(o.availability.value(0), 0.0);
    }

    /// A PLC outage after RUNNING is unknown time: neither running nor a
    /// loss, so availability is running time over the known planned time.
    #[test]
    fn disconnected_time_is_unknown_not_running() {
        let h = 60 * MIN;
        let st = StateEvents {
            keys: &[0, 0, 0, 0],
            ts: &[0, 2 * h, 5 * h, 8 * h],
            class: &[
                RUNNING,
                class_of(Some(MachineState::Disconnected)),
                class_of(Some(MachineState::Idle)),
                RUNNING,
            ],
        };
        let none = CounterSamples {
            keys: &[],
            ts: &[],
            good: &[],
            reject: &[],
            ideal_cycle_ms: IdealCycle::Constant(1.0),
        };
        let cal = FixedShifts {
            length_ms: 8 * h,
            origin_ms: 0,
        };
        let o = oee_per_shift(&st, &none, CLASSES, 1, &cal).unwrap();
        assert_eq!(o.unknown_ms[0], 3 * h);
        assert_eq!(o.running_ms[0], 2 * h);
        assert_eq!(
            o.planned_ms[0],
            5 * h,
            "2 h running + 3 h idle; the outage is not planned time"
        );
        assert_eq!(o.availability.value(0), 0.4);
    }
}
