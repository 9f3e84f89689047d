//! `gold.energy_shift`: energy per machine and shift from the `power`
//! signal (sample-and-hold integration, gaps integrate nothing), the part of
//! it spent while not RUNNING (backward as-of join with the states), kWh
//! per good part, and what the energy baseline model expected: the
//! expected kWh of the shift and the kWh wasted (buckets whose power was
//! over the expected by more than the model's tolerance, as the twins
//! scored them into `gold.predictions`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

use super::inputs::EnergyScore;
use super::inputs::{energy_scores, plant_data, plant_oee, signal_readings, us, ShiftInputs};
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
        &[
            Table::SilverAssetEvents,
            Table::SilverReadings,
            Table::GoldPredictions,
        ]
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

/// Expected and wasted kWh of `asset`'s shift starting at `start`, from
/// its energy baseline scores (`None` when the model scored no bucket of it).
fn expected_in(
    scores: &HashMap<String, Vec<EnergyScore>>,
    model: &crate::assets::AssetModel,
    asset: &str,
    cal: &impl ShiftCalendar,
    start: i64,
) -> (Option<f64>, Option<f64>) {
    let (Some(v), Some(set)) = (
        scores.get(asset),
        model.asset(asset).and_then(|a| a.twin.features.clone()),
    ) else {
        return (None, None);
    };
    // kWh like the integration above: kW x timestamp hours of a bucket.
    let h = set.bucket_ms as f64 / 3_600_000.0;
    let (mut e, mut w, mut any) = (0.0, 0.0, false);
    // A bucket belongs to the shift its first instant falls in.
    for s in v
        .iter()
        .filter(|s| cal.shift_at(s.ts - set.bucket_ms).0 == start)
    {
        any = true;
        e += s.expected_kw * h;
        let over = s.actual_kw - s.expected_kw;
        if over > s.tolerance_kw {
            w += over * h;
        }
    }
    if any {
        (Some(e), Some(w))
    } else {
        (None, None)
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
    let scores = energy_scores(cx, from).await?;
    let (mut plant_c, mut line_c, mut asset_c, mut start_c, mut end_c, mut shift_c) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut kwh_c, mut idle_c, mut good_c, mut per_c, mut n_c) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut exp_c, mut waste_c) = (vec![], vec![]);
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
            let (e, w) = expected_in(&scores, model, &name, &cal, start);
            exp_c.push(e);
            waste_c.push(w);
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
        Arc::new(Float64Array::from(exp_c)),
        Arc::new(Float64Array::from(waste_c)),
    ];
    Ok(RecordBatch::try_new(
        Table::GoldEnergyShift.arrow_schema(),
        cols,
    )?)
}
