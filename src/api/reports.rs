//! Shift reports from the gold tables: OEE per line and machine with its
//! losses, downtime by reason, energy per shift and per good part. What a
//! plant manager reads instead of writing SQL; the twin browser's shift
//! report and overview draw exactly these answers.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{rows, sql_str, sql_ts, time_param, ApiError, ApiState, Result, State};
use crate::assets::Plant;
use crate::lake::Table;
use crate::time::now_ms;

fn find_plant<'a>(s: &'a ApiState, id: &str) -> Result<&'a Plant> {
    s.model
        .plant(id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown plant `{id}`")))
}

/// The shift of `plant` containing `ts`: `{start, end, name, current}`.
fn shift_of(p: &Plant, ts: i64) -> Value {
    let cal = p.shift_calendar();
    let (start, end, name) = cal.shift(ts);
    let now = now_ms();
    json!({"start": start, "end": end, "name": name, "current": start <= now && now < end})
}

const OEE_COLS: &str = "plant, line, CAST(shift_start AS BIGINT) / 1000 AS shift_start, \
     CAST(shift_end AS BIGINT) / 1000 AS shift_end, shift, planned_ms, running_ms, idle_ms, \
     down_ms, setup_ms, unknown_ms, good, reject, ideal_ms, availability, performance, quality, \
     oee, CAST(computed_at AS BIGINT) / 1000 AS computed_at";

#[derive(Deserialize)]
pub(super) struct ShiftsParams {
    limit: Option<usize>,
}

/// `GET /api/plants/{id}/shifts`: the current shift and the shifts that
/// have OEE rows, newest first.
pub(super) async fn shifts(
    s: State,
    id: web::Path<String>,
    q: web::Query<ShiftsParams>,
) -> Result<HttpResponse> {
    let p = find_plant(&s, &id)?;
    let limit = q.limit.unwrap_or(30).clamp(1, 1000);
    let sql = format!(
        "SELECT CAST(shift_start AS BIGINT) / 1000 AS start, CAST(shift_end AS BIGINT) / 1000 AS end, \
         shift AS name, count(*) AS machines FROM gold.oee_shift WHERE plant = {} \
         GROUP BY shift_start, shift_end, shift ORDER BY shift_start DESC LIMIT {limit}",
        sql_str(p.id.as_str())
    );
    let with_rows = rows(&s, &[Table::GoldOeeShift], sql).await?;
    Ok(HttpResponse::Ok().json(json!({
        "plant": p.id, "timezone": p.timezone, "current": shift_of(p, now_ms()), "shifts": with_rows,
    })))
}

/// `GET /api/plants/{id}/oee`: OEE of every line and of the plant in the
/// current and the previous shift (`null` where no gold row exists yet).
pub(super) async fn oee(s: State, id: web::Path<String>) -> Result<HttpResponse> {
    let p = find_plant(&s, &id)?;
    let cur = shift_of(p, now_ms());
    let cur_start = cur["start"].as_i64().unwrap_or_default();
    let prev = shift_of(p, cur_start - 1);
    let prev_start = prev["start"].as_i64().unwrap_or_default();
    let sql = format!(
        "SELECT level, {OEE_COLS} FROM gold.oee_rollup WHERE plant = {} AND shift_start IN ({}, {})",
        sql_str(p.id.as_str()),
        sql_ts(cur_start),
        sql_ts(prev_start)
    );
    let all = rows(&s, &[Table::GoldOeeRollup], sql).await?;
    let pick = |start: i64| -> Value {
        let of = |level: &str| -> Vec<&Value> {
            all.iter()
                .filter(|r| r["level"] == level && r["shift_start"].as_i64() == Some(start))
                .collect()
        };
        json!({
            "plant": of("plant").first().copied().cloned(),
            "lines": of("line"),
        })
    };
    Ok(HttpResponse::Ok().json(json!({
        "plant": p.id,
        "current": {"shift": cur, "oee": pick(cur_start)},
        "previous": {"shift": prev, "oee": pick(prev_start)},
    })))
}

#[derive(Deserialize)]
pub(super) struct ReportParams {
    shift: Option<String>,
}

/// `GET /api/plants/{id}/shift-report?shift=TIME`: the shift containing
/// TIME (default: now).
pub(super) async fn shift_report(
    s: State,
    id: web::Path<String>,
    q: web::Query<ReportParams>,
) -> Result<HttpResponse> {
    let p = find_plant(&s, &id)?;
    let at = time_param("shift", q.shift.as_deref(), now_ms())?;
    let shift = shift_of(p, at);
    let start = shift["start"].as_i64().unwrap_or_default();
    let plant = sql_str(p.id.as_str());
    let at_shift = format!("plant = {plant} AND shift_start = {}", sql_ts(start));
    let machines = rows(
        &s,
        &[Table::GoldOeeShift],
        format!(
            "SELECT asset_id, {OEE_COLS}, speed_loss_ms, avg_cycle_s, ideal_cycle_s \
             FROM gold.oee_shift WHERE {at_shift} ORDER BY line, asset_id"
        ),
    )
    .await?;
    let rollup = rows(
        &s,
        &[Table::GoldOeeRollup],
        format!("SELECT level, {OEE_COLS} FROM gold.oee_rollup WHERE {at_shift} ORDER BY line"),
    )
    .await?;
    let downtime = rows(
        &s,
        &[Table::GoldDowntimeEvents],
        format!(
            "SELECT reason, state, line, count(*) AS events, sum(duration_ms) AS duration_ms, \
             sum(CASE WHEN open THEN 1 ELSE 0 END) AS open_events \
             FROM gold.downtime_events WHERE {at_shift} \
             GROUP BY reason, state, line ORDER BY duration_ms DESC"
        ),
    )
    .await?;
    let energy = rows(
        &s,
        &[Table::GoldEnergyShift],
        format!(
            "SELECT asset_id, line, kwh, idle_kwh, good, kwh_per_good_part, samples \
             FROM gold.energy_shift WHERE {at_shift} ORDER BY line, asset_id"
        ),
    )
    .await?;
    let (lines, plant_row): (Vec<&Value>, Vec<&Value>) =
        rollup.iter().partition(|r| r["level"] == "line");
    let computed_at = machines
        .iter()
        .filter_map(|r| r["computed_at"].as_i64())
        .max();
    Ok(HttpResponse::Ok().json(json!({
        "plant": p.id, "plant_name": p.name, "timezone": p.timezone, "shift": shift,
        "computed_at": computed_at,
        "total": plant_row.first(),
        "lines": lines,
        "machines": machines,
        "downtime": downtime,
        "energy": energy,
    })))
}
