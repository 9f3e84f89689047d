//! `gold.energy_shift`: energy per machine and shift from the `power`
//! signal (sample-and-hold integration, gaps integrate nothing), the part of
//! it spent while not RUNNING (backward as-of join with the states), and
//! kWh per good part.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

use super::inputs::{plant_data, plant_oee, signal_readings, us, ShiftInputs};
use super::{GoldContext, GoldError, GoldJob};
use crate::lake::Table;
use crate::pipeline::oee;
use crate::timeseries::{integrate_hold, RowOrder, ShiftCalendar};

/// A step longer than this is a gap in the power signal (integrates nothing).
const POWER_GAP_MS: i64 = 300_000;
/// The signal integrated (kW).
const POWER_SIGNAL: &str = "power";

/// The energy job.
pub struct EnergyShift;

#[async_trait]
impl GoldJob for EnergyShift {
    fn kind(&self) -> &'static str {
        "energy_shift"
    }
    fn target(&self) -> Table {
        Table::GoldEnergyShift
    }
    fn sources(&self) -> &'static [Table] {
        &[Table::SilverAssetEvents, Table::SilverReadings]
    }
    fn replace_key(&self) -> Option<&'static str> {
        Some("shift_start")
    }
    async fn compute(
        &self,
        cx: &GoldContext<'_>,
        from: Option<i64>,
        now_ms: i64,
    ) -> Result<RecordBatch, GoldError> {
        energy_shift(cx, from, now_ms).await
    }
}

/// `gold.energy_shift` rows for shifts starting at or after `from`.
async fn energy_shift(
    cx: &GoldContext<'_>,
    from: Option<i64>,
    now_ms: i64,
) -> Result<RecordBatch, GoldError> {
    let model = cx.model;
    let inp = ShiftInputs::read(cx, from, now_ms).await?;
    let power = signal_readings(cx, POWER_SIGNAL, from).await?;
    let (mut plant_c, mut line_c, mut asset_c, mut start_c, mut end_c, mut shift_c) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut kwh_c, mut idle_c, mut good_c, mut per_c, mut n_c) =
        (vec![], vec![], vec![], vec![], vec![]);
    for plant in &model.plants {
        let cal = plant.shift_calendar();
        let d = plant_data(&inp, model, plant.id.as_str());
        // Good parts per shift, from the OEE computation of the same window.
        let mut good_by_shift: HashMap<(u32, i64), i64> = HashMap::new();
        if !d.c_keys.is_empty() {
            let o = plant_oee(&d, &cal)?;
            for r in 0..o.key.len() {
                good_by_shift.insert((o.key[r], o.shift_start[r]), o.good[r]);
            }
        }
        // Power rows of this plant, keyed in the same code space as the states.
        let mut interner = d.assets;
        let (mut pk, mut pt, mut pv) = (vec![], vec![], vec![]);
        for i in 0..power.asset.len() {
            if model
                .asset(&power.asset[i])
                .is_some_and(|a| a.plant.as_str() == plant.id.as_str())
            {
                pk.push(interner.code(&power.asset[i]));
                pt.push(power.ts[i]);
                pv.push(power.value[i]);
            }
        }
        if pk.is_empty() {
            continue;
        }
        let n = interner.len();
        let order = RowOrder::for_rows(&pk, n, &pt);
        let power = Float64Array::from(pv);
        let e = integrate_hold(&pk, &pt, &power, n, &order, POWER_GAP_MS, 3_600_000.0)?;
        // The machine's state at each power sample: backward as-of join.
        let m = crate::timeseries::asof_join(
            &pk,
            &pt,
            &d.s_keys,
            &d.s_ts,
            n,
            crate::timeseries::AsofDirection::Backward,
            None,
        )?;
        let mut acc: HashMap<(u32, i64), (i64, f64, f64, i64)> = HashMap::new();
        for i in 0..pk.len() {
            let (start, end) = cal.shift_at(pt[i]);
            let en = e.value(i);
            let running = m[i] != u32::MAX && d.s_class[m[i] as usize] == oee::RUNNING;
            let a = acc.entry((pk[i], start)).or_insert((end, 0.0, 0.0, 0));
            a.1 += en;
            if !running {
                a.2 += en;
            }
            a.3 += 1;
        }
        let mut keys: Vec<_> = acc.into_iter().collect();
        keys.sort_by_key(|((k, s), _)| (*k, *s));
        for ((k, start), (end, kwh, idle, samples)) in keys {
            if from.is_some_and(|f| start < f) {
                continue;
            }
            let name = interner.names()[k as usize].clone();
            let good = good_by_shift.get(&(k, start)).copied().unwrap_or(0);
            plant_c.push(plant.id.as_str().to_string());
            line_c.push(
                model
                    .asset(&name)
                    .map_or(String::new(), |a| a.line.as_str().to_string()),
            );
            asset_c.push(name);
            start_c.push(start);
            end_c.push(end);
            shift_c.push(cal.shift(start).2.to_string());
            kwh_c.push(kwh);
            idle_c.push(idle);
            good_c.push(good);
            per_c.push((good > 0).then(|| kwh / good as f64));
            n_c.push(samples);
        }
    }
    let n = plant_c.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(plant_c)),
        Arc::new(StringArray::from(line_c)),
        Arc::new(StringArray::from(asset_c)),
        Arc::new(us(&start_c)),
        Arc::new(us(&end_c)),
        Arc::new(StringArray::from(shift_c)),
        Arc::new(Float64Array::from(kwh_c)),
        Arc::new(Float64Array::from(idle_c)),
        Arc::new(Int64Array::from(good_c)),
        Arc::new(Float64Array::from(per_c)),
        Arc::new(Int64Array::from(n_c)),
        Arc::new(us(&vec![now_ms; n])),
    ];
    Ok(RecordBatch::try_new(
        Table::GoldEnergyShift.arrow_schema(),
        cols,
    )?)
}
