//! `gold.downtime_events`: every stop of every machine with its duration
//! and reason.
//!
//! A stop is a maximal stretch of one non-running known state (DOWN, IDLE,
//! SETUP) between state changes; repeated-state heartbeats do not split it,
//! and time whose state is not known (UNKNOWN, DISCONNECTED) is no stop.
//! Its reason is the alarm the machine raised closest before the stop began
//! (within 10 minutes, or up to 1 minute after: PLCs often report the alarm
//! just after the state), found with the as-of join kernel; otherwise
//! `unspecified`. A stop still going on at the newest data is `open`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};

use super::inputs::{alarms_raised, horizon, state_events, us, Rows};
use super::{GoldContext, GoldError, GoldJob};
use crate::assets::MachineState;
use crate::lake::Table;
use crate::timeseries::{asof_join, AsofDirection, KeyInterner};

/// How far before a stop an alarm still explains it.
const REASON_BEFORE_MS: i64 = 600_000;
/// How far after the stop began an alarm still explains it.
const REASON_AFTER_MS: i64 = 60_000;

/// The downtime job.
pub struct DowntimeEvents;

#[async_trait]
impl GoldJob for DowntimeEvents {
    fn kind(&self) -> &'static str {
        "downtime"
    }
    fn target(&self) -> Table {
        Table::GoldDowntimeEvents
    }
    fn sources(&self) -> &'static [Table] {
        &[Table::SilverAssetEvents, Table::SilverReadings]
    }
    fn replace_key(&self) -> Option<&'static str> {
        Some("start")
    }
    async fn compute(
        &self,
        cx: &GoldContext<'_>,
        from: Option<i64>,
        now_ms: i64,
    ) -> Result<RecordBatch, GoldError> {
        downtime_events(cx, from, now_ms).await
    }
}

/// One machine's state stretches: (start, end, state, open).
pub(super) fn stretches(
    states: &Rows,
    idx: &[usize],
    horizon: Option<i64>,
) -> Vec<(i64, i64, String, bool)> {
    let mut out: Vec<(i64, i64, String, bool)> = Vec::new();
    for (j, &i) in idx.iter().enumerate() {
        let state = &states.text[i];
        let start = states.ts[i];
        let (end, open) = match idx.get(j + 1) {
            Some(&n) => (states.ts[n], false),
            None => (horizon.unwrap_or(start).max(start), true),
        };
        match out.last_mut() {
            Some(last) if &last.2 == state && last.1 == start => {
                last.1 = end;
                last.3 = open;
            }
            _ => out.push((start, end, state.clone(), open)),
        }
    }
    out
}

/// Per asset, the indexes of its state rows in time order.
pub(super) fn by_asset(states: &Rows) -> HashMap<String, Vec<usize>> {
    let mut m: HashMap<String, Vec<usize>> = HashMap::new();
    for i in 0..states.asset.len() {
        m.entry(states.asset[i].clone()).or_default().push(i);
    }
    for v in m.values_mut() {
        v.sort_by_key(|&i| states.ts[i]);
    }
    m
}

/// `gold.downtime_events` rows for stops starting at or after `from`.
async fn downtime_events(
    cx: &GoldContext<'_>,
    from: Option<i64>,
    now_ms: i64,
) -> Result<RecordBatch, GoldError> {
    let model = cx.model;
    let states = state_events(cx, from).await?;
    let alarms = alarms_raised(cx, from.map(|f| f - REASON_BEFORE_MS)).await?;
    let horizon = horizon(cx, from, now_ms).await?;
    // Stops of every asset.
    let mut stops: Vec<(String, i64, i64, String, bool)> = Vec::new();
    for (asset, idx) in by_asset(&states) {
        for (a, b, state, open) in stretches(&states, &idx, horizon.get(&asset).copied()) {
            let stop = MachineState::parse(&state)
                .is_some_and(|s| s.is_known() && s != MachineState::Running);
            if stop && from.is_none_or(|f| a >= f) {
                stops.push((asset.clone(), a, b, state, open));
            }
        }
    }
    stops.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    // Reason: the nearest alarm raised before the stop (plus a grace after).
    let mut keys = KeyInterner::new();
    let sk: Vec<u32> = stops.iter().map(|s| keys.code(&s.0)).collect();
    let st: Vec<i64> = stops.iter().map(|s| s.1 + REASON_AFTER_MS).collect();
    let ak: Vec<u32> = alarms.asset.iter().map(|a| keys.code(a)).collect();
    let m = asof_join(
        &sk,
        &st,
        &ak,
        &alarms.ts,
        keys.len(),
        AsofDirection::Backward,
        Some(REASON_BEFORE_MS + REASON_AFTER_MS),
    )?;
    let mut c: [Vec<String>; 6] = Default::default();
    let (mut start, mut end, mut dur, mut shift_start, mut open) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (i, (asset, a, b, state, is_open)) in stops.into_iter().enumerate() {
        let Some(meta) = model.asset(&asset) else {
            continue;
        };
        let plant = model.plant(meta.plant.as_str());
        let (ss, shift_name) = plant.map_or((a, String::new()), |p| {
            let cal = p.shift_calendar();
            let (s, _, n) = cal.shift(a);
            (s, n.to_string())
        });
        let reason = if m[i] == u32::MAX {
            "unspecified".to_string()
        } else {
            alarms.text[m[i] as usize].clone()
        };
        c[0].push(meta.plant.as_str().to_string());
        c[1].push(meta.line.as_str().to_string());
        c[2].push(asset);
        c[3].push(state);
        c[4].push(reason);
        c[5].push(shift_name);
        start.push(a);
        end.push(b);
        dur.push(b - a);
        shift_start.push(ss);
        open.push(is_open);
    }
    let n = start.len();
    let [plant, line, asset, state, reason, shift] = c;
    let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        s(plant),
        s(line),
        s(asset),
        Arc::new(us(&start)),
        Arc::new(us(&end)),
        Arc::new(Int64Array::from(dur)),
        s(state),
        s(reason),
        Arc::new(us(&shift_start)),
        s(shift),
        Arc::new(BooleanArray::from(open)),
        Arc::new(us(&vec![now_ms; n])),
    ];
    Ok(RecordBatch::try_new(
        Table::GoldDowntimeEvents.arrow_schema(),
        cols,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_do_not_split_a_stop_and_the_last_stays_open() {
        let r = Rows {
            asset: vec!["m".into(); 4],
            ts: vec![0, 10, 20, 30],
            text: vec![
                "DOWN".into(),
                "DOWN".into(),
                "RUNNING".into(),
                "IDLE".into(),
            ],
            value: vec![0.0; 4],
        };
        let s = stretches(&r, &[0, 1, 2, 3], Some(45));
        assert_eq!(
            s,
            vec![
                (0, 20, "DOWN".to_string(), false),
                (20, 30, "RUNNING".to_string(), false),
                (30, 45, "IDLE".to_string(), true)
            ]
        );
    }
}
