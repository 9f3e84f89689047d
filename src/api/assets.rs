//! Per-asset REST: the plant hierarchy with live aggregates from the line
//! and plant twins, live state from the machine twins, and history from
//! `silver.readings` (run in the query pool).

use actix_web::{web, HttpResponse};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{rows, sql_str, sql_ts, time_param, ApiError, ApiState, Result, State};
use crate::assets::Asset;
use crate::lake::read::HistoryQuery;
use crate::time::now_ms;
use crate::twins::{Aggregate, GetAggregate, GetSnapshot, GetSummary};

/// Ask a line or plant twin (`what`) for its aggregate.
pub(super) async fn aggregate<A>(
    addr: Option<&actix::Addr<A>>,
    what: &str,
    id: &str,
) -> Result<Aggregate>
where
    A: actix::Actor + actix::Handler<GetAggregate>,
    A::Context: actix::dev::ToEnvelope<A, GetAggregate>,
{
    let addr = addr.ok_or_else(|| ApiError::NotFound(format!("unknown {what} `{id}`")))?;
    addr.send(GetAggregate)
        .await
        .map_err(|e| ApiError::Unavailable(format!("{what} twin `{id}`: {e}")))
}

async fn aggregate_of_line(s: &ApiState, id: &str) -> Result<Aggregate> {
    aggregate(s.twins.lines.get(id), "line", id).await
}

async fn aggregate_of_plant(s: &ApiState, id: &str) -> Result<Aggregate> {
    aggregate(s.twins.plants.get(id), "plant", id).await
}

#[derive(Serialize)]
struct PlantView<'a> {
    id: &'a str,
    name: &'a str,
    timezone: &'a str,
    lat: Option<f64>,
    lon: Option<f64>,
    areas: &'a [crate::assets::Area],
    floor: Option<&'a crate::config::FloorConfig>,
    lines: Vec<&'a str>,
    aggregate: Aggregate,
}

async fn plant_view<'a>(s: &'a ApiState, p: &'a crate::assets::Plant) -> Result<PlantView<'a>> {
    Ok(PlantView {
        id: p.id.as_str(),
        name: &p.name,
        timezone: &p.timezone,
        lat: p.lat,
        lon: p.lon,
        areas: &p.areas,
        floor: p.floor.as_ref(),
        lines: s
            .model
            .lines_of(p.id.as_str())
            .map(|l| l.id.as_str())
            .collect(),
        aggregate: aggregate_of_plant(s, p.id.as_str()).await?,
    })
}

pub(super) async fn plants(s: State) -> Result<HttpResponse> {
    let mut out = Vec::new();
    for p in &s.model.plants {
        out.push(plant_view(&s, p).await?);
    }
    Ok(HttpResponse::Ok().json(out))
}

pub(super) async fn plant(s: State, id: web::Path<String>) -> Result<HttpResponse> {
    let p = s
        .model
        .plant(&id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown plant `{id}`")))?;
    let view = plant_view(&s, p).await?;
    let mut lines = Vec::new();
    for l in s.model.lines_of(p.id.as_str()) {
        lines.push(json!({
            "id": l.id, "name": l.name, "area": l.area,
            "aggregate": aggregate_of_line(&s, l.id.as_str()).await?,
        }));
    }
    let mut v = serde_json::to_value(view).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["lines"] = serde_json::Value::Array(lines);
    Ok(HttpResponse::Ok().json(v))
}

async fn summaries(s: &ApiState, assets: &[&Asset]) -> Vec<serde_json::Value> {
    let sums = join_all(
        assets
            .iter()
            .map(|a| s.twins.machines[a.idx as usize].send(GetSummary)),
    )
    .await;
    assets
        .iter()
        .zip(sums)
        .map(|(a, sum)| {
            let src = s.health.get(a.idx);
            let (state, alarms, last) = match &sum {
                Ok(x) => (x.state.as_str(), x.active_alarms, x.last_update),
                Err(_) => ("UNKNOWN", 0, None),
            };
            json!({
                "id": a.id, "name": a.name, "kind": a.twin.kind, "plant": a.plant, "area": a.area, "line": a.line,
                "state": state, "active_alarms": alarms, "last_update": last,
                "protocol": a.source.protocol,
                "connected": src.map(|x| x.connected).unwrap_or(false),
                "pos": a.pos,
            })
        })
        .collect()
}

pub(super) async fn line(s: State, id: web::Path<String>) -> Result<HttpResponse> {
    let l = s
        .model
        .line(&id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown line `{id}`")))?;
    let assets: Vec<&Asset> = l
        .assets
        .iter()
        .map(|&i| &s.model.assets[i as usize])
        .collect();
    let machines = summaries(&s, &assets).await;
    Ok(HttpResponse::Ok().json(json!({
        "id": l.id, "name": l.name, "plant": l.plant, "area": l.area,
        "aggregate": aggregate_of_line(&s, &id).await?,
        "machines": machines,
    })))
}

#[derive(Deserialize)]
pub(super) struct AssetFilter {
    plant: Option<String>,
    line: Option<String>,
    kind: Option<String>,
    /// Id or name contains this (any case).
    q: Option<String>,
}

pub(super) async fn assets(s: State, q: web::Query<AssetFilter>) -> Result<HttpResponse> {
    if let Some(p) = &q.plant {
        s.model
            .plant(p)
            .ok_or_else(|| ApiError::NotFound(format!("unknown plant `{p}`")))?;
    }
    if let Some(l) = &q.line {
        s.model
            .line(l)
            .ok_or_else(|| ApiError::NotFound(format!("unknown line `{l}`")))?;
    }
    if let Some(k) = &q.kind {
        if !s.model.twin_types.contains_key(k) {
            return Err(ApiError::BadRequest(format!("unknown kind `{k}`")));
        }
    }
    let needle =
        q.q.as_deref()
            .map(|n| n.trim().to_lowercase())
            .filter(|n| !n.is_empty());
    let sel: Vec<&Asset> = s
        .model
        .assets
        .iter()
        .filter(|a| q.plant.as_deref().is_none_or(|p| a.plant.as_str() == p))
        .filter(|a| q.line.as_deref().is_none_or(|l| a.line.as_str() == l))
        .filter(|a| q.kind.as_deref().is_none_or(|k| a.twin.kind == k))
        .filter(|a| {
            needle.as_deref().is_none_or(|n| {
                a.id.as_str().to_lowercase().contains(n) || a.name.to_lowercase().contains(n)
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(summaries(&s, &sel).await))
}

fn find_asset<'a>(s: &'a ApiState, id: &str) -> Result<&'a Asset> {
    s.model
        .asset(id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown asset `{id}`")))
}

pub(super) async fn asset(s: State, id: web::Path<String>) -> Result<HttpResponse> {
    let a = find_asset(&s, &id)?;
    let snap = s.twins.machines[a.idx as usize]
        .send(GetSnapshot)
        .await
        .map_err(|e| ApiError::Unavailable(format!("twin `{id}`: {e}")))?;
    let mut v = serde_json::to_value(snap).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["source"] =
        serde_json::to_value(s.health.get(a.idx)).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
pub(super) struct HistoryParams {
    signal: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    /// Buckets wanted (downsampled on the server; needs `signal`).
    points: Option<String>,
}

/// Most buckets one downsampled history query returns.
const HISTORY_MAX_POINTS: i64 = 5000;

/// A count parameter: an integer from 1 to `max`.
fn count_param(name: &str, v: &str, max: usize) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "`{name}` must be an integer from 1 to {max}, got `{v}`"
        ))),
    }
}

/// Default and largest `limit` of a history query.
const HISTORY_DEFAULT_LIMIT: usize = 1000;
const HISTORY_MAX_LIMIT: usize = 100_000;

pub(super) async fn history(
    s: State,
    id: web::Path<String>,
    q: web::Query<HistoryParams>,
) -> Result<HttpResponse> {
    let a = find_asset(&s, &id)?;
    if let Some(sig) = &q.signal {
        if a.twin.signal(sig).is_none() && a.twin.extra.index(sig).is_none() {
            let names: Vec<&str> = a.twin.signals.iter().map(|x| x.name.as_str()).collect();
            return Err(ApiError::BadRequest(format!(
                "asset `{id}` has no signal `{sig}` (signals: {})",
                names.join(", ")
            )));
        }
    }
    let to = time_param("to", q.to.as_deref(), now_ms())?;
    let from = time_param("from", q.from.as_deref(), to - 3_600_000)?;
    if from > to {
        return Err(ApiError::BadRequest("`from` is after `to`".into()));
    }
    let mut query = HistoryQuery {
        plant: a.plant.to_string(),
        asset_id: a.id.to_string(),
        signal: q.signal.clone(),
        from_ms: from,
        to_ms: to,
        limit: 0,
    };
    if let Some(p) = &q.points {
        let n = count_param("points", p, HISTORY_MAX_POINTS as usize)? as i64;
        let Some(signal) = &q.signal else {
            return Err(ApiError::BadRequest(
                "`points` needs a `signal` (one series is downsampled at a time)".into(),
            ));
        };
        let bucket_ms = ((to - from) / n).max(1);
        let lake = s.lake.clone();
        let b = s
            .pool
            .run(async move { lake.history_buckets(&query, bucket_ms).await })
            .await
            .map_err(ApiError::from)?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let unit = a
            .twin
            .signal(signal)
            .map(|i| a.twin.signals[i as usize].unit.clone());
        return Ok(HttpResponse::Ok().json(json!({
            "asset": a.id, "signal": signal, "unit": unit, "from": from, "to": to,
            "bucket_ms": bucket_ms, "count": b.ts.len(), "buckets": b,
        })));
    }
    let limit = match &q.limit {
        None => HISTORY_DEFAULT_LIMIT,
        Some(l) => count_param("limit", l, HISTORY_MAX_LIMIT)?,
    };
    query.limit = limit;
    let lake = s.lake.clone();
    let (points, truncated) = s
        .pool
        .run(async move { lake.history(&query).await })
        .await
        .map_err(ApiError::from)?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({
        "asset": a.id, "signal": q.signal, "from": from, "to": to, "limit": limit,
        "truncated": truncated, "count": points.len(), "points": points,
    })))
}

#[derive(Deserialize)]
pub(super) struct EventParams {
    from: Option<String>,
    to: Option<String>,
    /// Comma-separated kinds (`state`, `alarm_raised`, `alarm_ack`,
    /// `alarm_cleared`, `counter`); default all.
    kind: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/assets/{id}/events`: the asset's events from
/// `silver.asset_events` in `[from, to]` (default the last 8 hours), oldest
/// first, plus `state_before`: the state event in force at `from` (what a
/// state timeline starts with).
pub(super) async fn events(
    s: State,
    id: web::Path<String>,
    q: web::Query<EventParams>,
) -> Result<HttpResponse> {
    let a = find_asset(&s, &id)?;
    let to = time_param("to", q.to.as_deref(), now_ms())?;
    let from = time_param("from", q.from.as_deref(), to - 8 * 3_600_000)?;
    if from > to {
        return Err(ApiError::BadRequest("`from` is after `to`".into()));
    }
    let limit = q.limit.unwrap_or(5000).clamp(1, 100_000);
    const KINDS: [&str; 5] = [
        "state",
        "alarm_raised",
        "alarm_ack",
        "alarm_cleared",
        "counter",
    ];
    let mut kinds = Vec::new();
    for k in q
        .kind
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
    {
        if k.is_empty() {
            continue;
        }
        if !KINDS.contains(&k) {
            return Err(ApiError::BadRequest(format!(
                "unknown event kind `{k}` (kinds: {})",
                KINDS.join(", ")
            )));
        }
        kinds.push(sql_str(k));
    }
    let base = format!(
        "plant = {} AND asset_id = {}",
        sql_str(a.plant.as_str()),
        sql_str(a.id.as_str())
    );
    let cols = "CAST(ts AS BIGINT) / 1000 AS ts, kind, code, value, message";
    let mut sql = format!(
        "SELECT {cols} FROM silver.asset_events WHERE {base} AND ts >= {} AND ts <= {} \
         AND date >= CAST({} AS DATE) AND date <= CAST({} AS DATE)",
        sql_ts(from),
        sql_ts(to),
        sql_ts(from),
        sql_ts(to)
    );
    if !kinds.is_empty() {
        sql.push_str(&format!(" AND kind IN ({})", kinds.join(", ")));
    }
    sql.push_str(&format!(" ORDER BY ts LIMIT {}", limit + 1));
    let t = [crate::lake::Table::SilverAssetEvents];
    let mut ev = rows(&s, &t, sql).await?;
    let truncated = ev.len() > limit;
    ev.truncate(limit);
    let before = rows(
        &s,
        &t,
        format!(
            "SELECT {cols} FROM silver.asset_events WHERE {base} AND kind = 'state' AND ts < {} \
             AND date >= CAST({} AS DATE) ORDER BY ts DESC LIMIT 1",
            sql_ts(from),
            sql_ts(from - 7 * 86_400_000)
        ),
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "asset": a.id, "from": from, "to": to, "truncated": truncated, "count": ev.len(),
        "state_before": before.into_iter().next(), "events": ev,
    })))
}
