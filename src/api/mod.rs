//! REST API (actix-web, JSON): health, the plant hierarchy with live
//! aggregates, per-asset live state from the twin actors, and history from
//! `silver.readings`. Errors are JSON `{"error": ..., "status": ...}` with a
//! fitting status code.

mod time;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::assets::{Asset, AssetModel};
use crate::connectors::{now_ms, HealthBoard};
use crate::lake::read::HistoryQuery;
use crate::lake::writer::TableWriter;
use crate::lake::Lakehouse;
use crate::pipeline::IngestStats;
use crate::query::format::{self, Format};
use crate::query::{QueryError, SqlEngine};
use crate::twins::{Aggregate, GetAggregate, GetSnapshot, GetSummary, TwinRegistry};
pub use time::parse_time;

/// Everything the handlers read.
pub struct ApiState {
    pub model: Arc<AssetModel>,
    pub twins: TwinRegistry,
    pub health: Arc<HealthBoard>,
    pub lake: Arc<Lakehouse>,
    pub writers: Vec<TableWriter>,
    pub ingest: Arc<IngestStats>,
    pub started_ms: i64,
    /// SQL over the lake (`POST /api/sql`).
    pub sql: SqlEngine,
    /// The platform's multi-threaded runtime: queries run there, not on
    /// the HTTP workers' single-threaded loops.
    pub runtime: tokio::runtime::Handle,
    /// The configured pipelines (`GET /api/pipelines`).
    pub pipelines: Vec<crate::pipeline::spec::Pipeline>,
}

/// An API error: status plus message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({
            "error": self.to_string(),
            "status": self.status_code().as_u16(),
        }))
    }
}

type Result<T> = std::result::Result<T, ApiError>;
type State = web::Data<ApiState>;

/// Bind the HTTP server for `state` on `addr` (port 0 picks a free port) and
/// return the running server with its bound address.
pub fn bind(
    state: ApiState,
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let data = web::Data::new(state);
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ApiError::BadRequest(format!("bad query parameter: {e}")).into()
            }))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::BadRequest(format!("bad path: {e}")).into()),
            )
            .configure(routes)
            .default_service(web::to(|| async {
                ApiError::NotFound("no such endpoint; see GET /api".into()).error_response()
            }))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)?
    .run();
    Ok((srv, local))
}

/// The routes (also used by tests with `actix_web::test`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api", web::get().to(index))
        .route("/api/health", web::get().to(health))
        .route("/api/plants", web::get().to(plants))
        .route("/api/plants/{id}", web::get().to(plant))
        .route("/api/lines/{id}", web::get().to(line))
        .route("/api/assets", web::get().to(assets))
        .route("/api/assets/{id}", web::get().to(asset))
        .route("/api/assets/{id}/history", web::get().to(history))
        .route("/api/sql", web::post().to(sql))
        .route("/api/pipelines", web::get().to(pipelines));
}

async fn index() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": "ironlake",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": [
            "GET /api/health",
            "GET /api/plants",
            "GET /api/plants/{id}",
            "GET /api/lines/{id}",
            "GET /api/assets?plant=&line=&kind=",
            "GET /api/assets/{id}",
            "GET /api/assets/{id}/history?signal=&from=&to=&limit=",
            "GET /api/pipelines",
            "POST /api/sql {\"sql\": \"SELECT ...\", \"format\": \"json|csv|arrow\", \"max_rows\": 10000}"
        ]
    }))
}

async fn health(s: State) -> HttpResponse {
    let (mut up, mut down) = (0, 0);
    for a in &s.model.assets {
        match s.health.get(a.idx) {
            Some(st) if st.connected => up += 1,
            _ => down += 1,
        }
    }
    let writers: Vec<_> = s.writers.iter().map(|w| w.status()).collect();
    let failing = writers.iter().any(|w| w.last_error.is_some());
    HttpResponse::Ok().json(json!({
        "status": if failing { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "started": s.started_ms,
        "uptime_s": (now_ms() - s.started_ms) as f64 / 1000.0,
        "plants": s.model.plants.len(),
        "lines": s.model.lines.len(),
        "assets": s.model.assets.len(),
        "sources": { "connected": up, "disconnected": down },
        "ingest": s.ingest.status(),
        "lake": { "root": s.lake.root().as_str(), "writers": writers },
    }))
}

/// Ask a line or plant twin (`what`) for its aggregate.
async fn aggregate<A>(addr: Option<&actix::Addr<A>>, what: &str, id: &str) -> Result<Aggregate>
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
        lines: s
            .model
            .lines_of(p.id.as_str())
            .map(|l| l.id.as_str())
            .collect(),
        aggregate: aggregate_of_plant(s, p.id.as_str()).await?,
    })
}

async fn plants(s: State) -> Result<HttpResponse> {
    let mut out = Vec::new();
    for p in &s.model.plants {
        out.push(plant_view(&s, p).await?);
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn plant(s: State, id: web::Path<String>) -> Result<HttpResponse> {
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
                "protocol": a.source.protocol(),
                "connected": src.map(|x| x.connected).unwrap_or(false),
            })
        })
        .collect()
}

async fn line(s: State, id: web::Path<String>) -> Result<HttpResponse> {
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
struct AssetFilter {
    plant: Option<String>,
    line: Option<String>,
    kind: Option<String>,
}

async fn assets(s: State, q: web::Query<AssetFilter>) -> Result<HttpResponse> {
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
    let sel: Vec<&Asset> = s
        .model
        .assets
        .iter()
        .filter(|a| q.plant.as_deref().is_none_or(|p| a.plant.as_str() == p))
        .filter(|a| q.line.as_deref().is_none_or(|l| a.line.as_str() == l))
        .filter(|a| q.kind.as_deref().is_none_or(|k| a.twin.kind == k))
        .collect();
    Ok(HttpResponse::Ok().json(summaries(&s, &sel).await))
}

fn find_asset<'a>(s: &'a ApiState, id: &str) -> Result<&'a Asset> {
    s.model
        .asset(id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown asset `{id}`")))
}

async fn asset(s: State, id: web::Path<String>) -> Result<HttpResponse> {
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
struct HistoryParams {
    signal: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// Default and largest `limit` of a history query.
const HISTORY_DEFAULT_LIMIT: usize = 1000;
const HISTORY_MAX_LIMIT: usize = 100_000;

async fn history(
    s: State,
    id: web::Path<String>,
    q: web::Query<HistoryParams>,
) -> Result<HttpResponse> {
    let a = find_asset(&s, &id)?;
    if let Some(sig) = &q.signal {
        if a.twin.signal(sig).is_none() {
            let names: Vec<&str> = a.twin.signals.iter().map(|x| x.name.as_str()).collect();
            return Err(ApiError::BadRequest(format!(
                "asset `{id}` has no signal `{sig}` (signals: {})",
                names.join(", ")
            )));
        }
    }
    let now = now_ms();
    let to = match &q.to {
        Some(t) => parse_time(t, now).map_err(|e| ApiError::BadRequest(format!("`to`: {e}")))?,
        None => now,
    };
    let from = match &q.from {
        Some(t) => parse_time(t, now).map_err(|e| ApiError::BadRequest(format!("`from`: {e}")))?,
        None => to - 3_600_000,
    };
    if from > to {
        return Err(ApiError::BadRequest("`from` is after `to`".into()));
    }
    let limit = match &q.limit {
        None => HISTORY_DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=HISTORY_MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "`limit` must be an integer from 1 to {HISTORY_MAX_LIMIT}, got `{l}`"
                )))
            }
        },
    };
    let query = HistoryQuery {
        plant: a.plant.as_str(),
        asset_id: a.id.as_str(),
        signal: q.signal.as_deref(),
        from_ms: from,
        to_ms: to,
        limit,
    };
    let (points, truncated) = s
        .lake
        .history(&query)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({
        "asset": a.id, "signal": q.signal, "from": from, "to": to, "limit": limit,
        "truncated": truncated, "count": points.len(), "points": points,
    })))
}

/// Body of `POST /api/sql` (or the query itself as `text/plain`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    max_rows: Option<usize>,
}

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
const SQL_DEFAULT_ROWS: usize = 10_000;
const SQL_MAX_ROWS: usize = 1_000_000;

/// `POST /api/sql`: one read-only query. JSON (default): `{"columns":
/// [{"name","type"}], "rows": [{..}], "row_count", "truncated",
/// "elapsed_ms"}`; `format: "arrow"` or `Accept: application/vnd.apache.arrow.stream`:
/// an Arrow IPC stream; `"csv"`: CSV with a header. Bad SQL is a 400 with the
/// parser's or planner's message.
async fn sql(s: State, req: actix_web::HttpRequest, body: web::Bytes) -> Result<HttpResponse> {
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("body is not UTF-8".into()))?;
    let is_json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let r: SqlRequest = if is_json {
        serde_json::from_str(text).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
    } else {
        SqlRequest {
            sql: text.to_string(),
            format: None,
            max_rows: None,
        }
    };
    let wants_arrow = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    let fmt = r.format.unwrap_or(if wants_arrow {
        Format::Arrow
    } else {
        Format::Json
    });
    if !matches!(fmt, Format::Json | Format::Csv | Format::Arrow) {
        return Err(ApiError::BadRequest(
            "format must be json, csv or arrow".into(),
        ));
    }
    let max_rows = r.max_rows.unwrap_or(SQL_DEFAULT_ROWS).min(SQL_MAX_ROWS);
    let engine = s.sql.clone();
    let started = std::time::Instant::now();
    let result = s
        .runtime
        .spawn(async move { engine.query_limited(&r.sql, max_rows).await })
        .await
        .map_err(|e| ApiError::Internal(format!("query task: {e}")))?
        .map_err(|e: QueryError| {
            if e.is_user_error() {
                ApiError::BadRequest(e.to_string())
            } else {
                ApiError::Internal(e.to_string())
            }
        })?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (result, truncated) = result;
    let mut buf = Vec::new();
    let ferr = |e: format::FormatError| ApiError::Internal(e.to_string());
    match fmt {
        Format::Arrow => {
            format::write(&result, Format::Arrow, &mut buf).map_err(ferr)?;
            Ok(HttpResponse::Ok()
                .content_type(ARROW_STREAM)
                .insert_header(("x-ironlake-truncated", truncated.to_string()))
                .body(buf))
        }
        Format::Csv => {
            format::write(&result, Format::Csv, &mut buf).map_err(ferr)?;
            Ok(HttpResponse::Ok()
                .content_type("text/csv")
                .insert_header(("x-ironlake-truncated", truncated.to_string()))
                .body(buf))
        }
        _ => {
            format::write(&result, Format::Json, &mut buf).map_err(ferr)?;
            let columns: Vec<_> = result
                .schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect();
            let rows = if buf.is_empty() { b"[]".to_vec() } else { buf };
            let mut out = format!(
                "{{\"columns\":{},\"row_count\":{},\"truncated\":{},\"elapsed_ms\":{:.1},\"rows\":",
                serde_json::Value::Array(columns),
                result.rows(),
                truncated,
                elapsed_ms
            )
            .into_bytes();
            out.extend_from_slice(&rows);
            out.push(b'}');
            Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(out))
        }
    }
}

/// `GET /api/pipelines`: every configured pipeline with its latest recorded
/// update from `system.pipeline_runs` (null before the first).
async fn pipelines(s: State) -> Result<HttpResponse> {
    let engine = s.sql.clone();
    let q = "SELECT pipeline, status, started, finished, rows_in, rows_out, rows_dropped, rows_warned, \
             expectations, source_versions, target_version, message FROM ( \
               SELECT *, row_number() OVER (PARTITION BY pipeline ORDER BY started DESC) AS rn \
               FROM system.pipeline_runs) WHERE rn = 1";
    let has_runs = s.lake.table_exists("system", "pipeline_runs");
    let last: HashMap<String, serde_json::Value> = if has_runs {
        let r = s
            .runtime
            .spawn(async move { engine.query(q).await })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut buf = Vec::new();
        format::write(&r, Format::Json, &mut buf).map_err(|e| ApiError::Internal(e.to_string()))?;
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(if buf.is_empty() { b"[]" } else { &buf })
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        rows.into_iter()
            .filter_map(|mut v| {
                let name = v.get("pipeline")?.as_str()?.to_string();
                for k in ["expectations", "source_versions"] {
                    if let Some(t) = v.get(k).and_then(|x| x.as_str()) {
                        let parsed = serde_json::from_str(t).unwrap_or(serde_json::Value::Null);
                        v[k] = parsed;
                    }
                }
                Some((name, v))
            })
            .collect()
    } else {
        HashMap::new()
    };
    let out: Vec<_> = s
        .pipelines
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "kind": p.kind,
                "description": p.description,
                "sources": p.sources(),
                "target": p.target,
                "enabled": p.enabled,
                "expectations": p.expectations,
                "last_run": last.get(&p.name),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}
