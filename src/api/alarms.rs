//! Alarms across plants and their acknowledgement.
//!
//! Active alarms come from the machine twins (the live truth, with their
//! acknowledgements); cleared ones from `silver.asset_events`, where each
//! raise, acknowledgement and clear is recorded.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use futures::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{rows, sql_str, sql_ts, time_param, ApiError, ApiState, Result, State};
use crate::assets::Asset;
use crate::lake::Table;
use crate::time::now_ms;
use crate::twins::{AckError, Acknowledge, GetAlarms};

/// Longest operator name and comment taken.
const MAX_BY: usize = 80;
const MAX_COMMENT: usize = 1000;

#[derive(Deserialize)]
pub(super) struct AckBody {
    by: Option<String>,
    comment: Option<String>,
}

fn clean(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `POST /api/assets/{id}/alarms/{name}/ack` with `{"by": "...", "comment": "..."}`.
pub(super) async fn acknowledge(
    s: State,
    path: web::Path<(String, String)>,
    body: Option<web::Json<AckBody>>,
) -> Result<HttpResponse> {
    let (id, name) = path.into_inner();
    let a = s
        .model
        .asset(&id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown asset `{id}`")))?;
    let body = body.ok_or_else(|| {
        ApiError::BadRequest(
            "send a JSON body {\"by\": \"your name\", \"comment\": \"optional\"}".into(),
        )
    })?;
    let by = clean(body.by.as_deref().unwrap_or_default());
    if by.is_empty() || by.chars().count() > MAX_BY {
        return Err(ApiError::BadRequest(format!(
            "`by`: the name of who acknowledges, 1 to {MAX_BY} characters"
        )));
    }
    let comment = body
        .comment
        .as_deref()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT)
    {
        return Err(ApiError::BadRequest(format!(
            "`comment`: at most {MAX_COMMENT} characters"
        )));
    }
    let r = s.twins.machines[a.idx as usize]
        .send(Acknowledge {
            alarm: name,
            by,
            comment,
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("twin `{id}`: {e}")))?;
    match r {
        Ok(alarm) => Ok(HttpResponse::Ok().json(json!({"asset": a.id, "alarm": alarm}))),
        Err(e @ AckError::UnknownRule { .. }) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ AckError::NotActive { .. }) => Err(ApiError::Conflict(e.to_string())),
    }
}

#[derive(Deserialize)]
pub(super) struct AlarmFilter {
    plant: Option<String>,
    line: Option<String>,
    asset: Option<String>,
    severity: Option<String>,
    state: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    }
}

/// `GET /api/alarms`: `state` is `active` (default), `unacknowledged`,
/// `acknowledged`, `cleared` (since `since`, default `now-24h`) or `all`.
pub(super) async fn alarms(s: State, q: web::Query<AlarmFilter>) -> Result<HttpResponse> {
    let state = q.state.as_deref().unwrap_or("active");
    if !["active", "unacknowledged", "acknowledged", "cleared", "all"].contains(&state) {
        return Err(ApiError::BadRequest(format!(
            "`state` is one of active, unacknowledged, acknowledged, cleared, all; got `{state}`"
        )));
    }
    let severity = q.severity.as_deref().filter(|x| !x.is_empty());
    if let Some(sv) = severity {
        if !["info", "warning", "critical"].contains(&sv) {
            return Err(ApiError::BadRequest(format!(
                "`severity` is one of info, warning, critical; got `{sv}`"
            )));
        }
    }
    let plant = q.plant.as_deref().filter(|x| !x.is_empty());
    let line = q.line.as_deref().filter(|x| !x.is_empty());
    let asset = q.asset.as_deref().filter(|x| !x.is_empty());
    if let Some(p) = plant {
        s.model
            .plant(p)
            .ok_or_else(|| ApiError::NotFound(format!("unknown plant `{p}`")))?;
    }
    if let Some(l) = line {
        s.model
            .line(l)
            .ok_or_else(|| ApiError::NotFound(format!("unknown line `{l}`")))?;
    }
    if let Some(a) = asset {
        s.model
            .asset(a)
            .ok_or_else(|| ApiError::NotFound(format!("unknown asset `{a}`")))?;
    }
    let since = time_param("since", q.since.as_deref(), now_ms() - 24 * 3_600_000)?;
    let limit = q.limit.unwrap_or(500).clamp(1, 10_000);
    let sel: Vec<&Asset> = s
        .model
        .assets
        .iter()
        .filter(|a| plant.is_none_or(|p| a.plant.as_str() == p))
        .filter(|a| line.is_none_or(|l| a.line.as_str() == l))
        .filter(|a| asset.is_none_or(|x| a.id.as_str() == x))
        .collect();

    let mut out: Vec<Value> = Vec::new();
    if state != "cleared" {
        let active = join_all(
            sel.iter()
                .map(|a| s.twins.machines[a.idx as usize].send(GetAlarms)),
        )
        .await;
        for (a, r) in sel.iter().zip(active) {
            for al in r.unwrap_or_default() {
                let acked = al.acknowledged.is_some();
                if (state == "unacknowledged" && acked) || (state == "acknowledged" && !acked) {
                    continue;
                }
                let sv = al.severity.as_str();
                if severity.is_some_and(|x| x != sv) {
                    continue;
                }
                out.push(json!({
                    "asset": a.id, "asset_name": a.name, "plant": a.plant, "line": a.line,
                    "name": al.name, "signal": al.signal, "severity": sv, "state": "active",
                    "raised": al.since, "cleared": null, "value": al.value, "message": al.message,
                    "acknowledged": al.acknowledged,
                }));
            }
        }
        out.sort_by(|a, b| {
            let r = |v: &Value| severity_rank(v["severity"].as_str().unwrap_or(""));
            r(a).cmp(&r(b))
                .then(b["raised"].as_i64().cmp(&a["raised"].as_i64()))
        });
    }
    if state == "cleared" || state == "all" {
        let mut cleared = cleared_alarms(&s, &sel, since, plant).await?;
        cleared.retain(|v| severity.is_none_or(|x| v["severity"] == x));
        out.extend(cleared);
    }
    let truncated = out.len() > limit;
    out.truncate(limit);
    Ok(HttpResponse::Ok().json(json!({
        "state": state, "since": since, "count": out.len(), "truncated": truncated, "alarms": out,
    })))
}

/// Alarms raised and cleared since `since`, newest clear first.
async fn cleared_alarms(
    s: &ApiState,
    sel: &[&Asset],
    since: i64,
    plant: Option<&str>,
) -> Result<Vec<Value>> {
    let by_id: HashMap<&str, &Asset> = sel.iter().map(|a| (a.id.as_str(), *a)).collect();
    let mut sql = format!(
        "SELECT asset_id, kind, code, CAST(ts AS BIGINT) / 1000 AS ts, value, message \
         FROM silver.asset_events WHERE kind IN ('alarm_raised', 'alarm_ack', 'alarm_cleared') \
         AND ts >= {} AND date >= CAST({} AS DATE)",
        sql_ts(since),
        sql_ts(since - 86_400_000),
    );
    if let Some(p) = plant {
        sql.push_str(&format!(" AND plant = {}", sql_str(p)));
    }
    sql.push_str(" ORDER BY ts, asset_id, code");
    let events = rows(s, &[Table::SilverAssetEvents], sql).await?;
    // An acknowledgement names the raise it answers (`raised`): matched by
    // that, not by order, since acknowledgements carry wall-clock time and
    // raises and clears the source's time.
    let mut acks: HashMap<(String, String, i64), Value> = HashMap::new();
    for e in &events {
        if e["kind"] != "alarm_ack" {
            continue;
        }
        let m: Value = e["message"]
            .as_str()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or(Value::Null);
        if let (Some(id), Some(code), Some(raised)) = (
            e["asset_id"].as_str(),
            e["code"].as_str(),
            m["raised"].as_i64(),
        ) {
            acks.insert(
                (id.to_string(), code.to_string(), raised),
                json!({"by": m["by"], "comment": m["comment"], "at": e["ts"]}),
            );
        }
    }
    // Open alarm per (asset, rule): (raised at, value, message).
    let mut open: HashMap<(String, String), (Option<i64>, Value, Value)> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let (Some(id), Some(kind), Some(code)) = (
            e["asset_id"].as_str(),
            e["kind"].as_str(),
            e["code"].as_str(),
        ) else {
            continue;
        };
        let Some(a) = by_id.get(id) else { continue };
        let key = (id.to_string(), code.to_string());
        let ts = e["ts"].as_i64();
        match kind {
            "alarm_raised" => {
                open.insert(key, (ts, e["value"].clone(), e["message"].clone()));
            }
            "alarm_cleared" => {
                let (raised, value, message) =
                    open.remove(&key)
                        .unwrap_or((None, Value::Null, Value::Null));
                let ack = raised
                    .and_then(|r| acks.get(&(key.0.clone(), key.1.clone(), r)))
                    .cloned()
                    .unwrap_or(Value::Null);
                let rule = a.twin.alarms.iter().find(|r| r.name == code);
                out.push(json!({
                    "asset": a.id, "asset_name": a.name, "plant": a.plant, "line": a.line,
                    "name": code,
                    "signal": rule.map(|r| a.twin.signals[r.signal as usize].name.clone()),
                    "severity": rule.map(|r| r.severity.as_str()),
                    "state": "cleared", "raised": raised, "cleared": ts, "value": value,
                    "message": message, "acknowledged": ack,
                }));
            }
            _ => {}
        }
    }
    out.sort_by_key(|v| v["cleared"].as_i64());
    out.reverse();
    Ok(out)
}
