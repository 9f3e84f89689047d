//! REST API (actix-web, JSON): health, Prometheus metrics, the plant
//! hierarchy with live aggregates, per-asset live state from the twin
//! actors, history from `silver.readings`, SQL and pipelines. Queries run
//! in the bounded query pool, never on the HTTP workers. Errors are JSON
//! `{"error": ..., "status": ...}` with a fitting status code.

mod alarms;
mod assets;
mod data;
mod metrics;
mod mlflow;
mod models;
mod pipelines;
mod reports;
mod sql;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use serde_json::json;

use crate::assets::AssetModel;
use crate::connectors::HealthBoard;
use crate::ingest::IngestStats;
use crate::lake::writer::TableWriter;
use crate::lake::Lakehouse;
use crate::metrics::Registry;
use crate::query::{PoolError, QueryPool, SqlEngine};
use crate::time::now_ms;
use crate::twins::TwinRegistry;

/// Everything the handlers read, but the twins.
pub struct ApiParts {
    pub model: Arc<AssetModel>,
    pub health: Arc<HealthBoard>,
    pub lake: Arc<Lakehouse>,
    pub writers: Vec<TableWriter>,
    pub ingest: Arc<IngestStats>,
    pub started_ms: i64,
    /// SQL over the lake (`POST /api/sql`), with the pool's memory limit.
    pub sql: SqlEngine,
    /// Where queries run: bounded, timed, cancelled when the client leaves.
    pub pool: Arc<QueryPool>,
    /// The configured pipelines (`GET /api/pipelines`).
    pub pipelines: Vec<crate::pipeline::spec::Pipeline>,
    /// The platform's metrics (`GET /metrics`).
    pub registry: Registry,
    /// Live streams (`GET /api/stream`) open at once.
    pub max_streams: usize,
    /// The configured connectors (`GET /api/landing`).
    pub connectors: crate::connectors::Connectors,
    /// The model registry (`/api/models`, the MLflow read API).
    pub model_registry: crate::ml::registry::Registry,
    /// What the twins serve, when they score.
    pub champions: Option<Arc<crate::ml::serve::Champions>>,
    /// Versions loaded for batch scoring.
    pub model_cache:
        parking_lot::Mutex<std::collections::HashMap<(String, u32), Arc<crate::ml::model::Model>>>,
}

/// Everything the handlers read.
pub struct ApiState {
    pub parts: ApiParts,
    pub twins: TwinRegistry,
}

impl std::ops::Deref for ApiState {
    type Target = ApiParts;
    fn deref(&self) -> &ApiParts {
        &self.parts
    }
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
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Conflict(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
        }
    }
    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Busy(_)) {
            r.insert_header(("retry-after", "1"));
        }
        r.json(json!({
            "error": self.to_string(),
            "status": self.status_code().as_u16(),
        }))
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Busy { .. } => ApiError::Busy(e.to_string()),
            PoolError::Timeout(_) | PoolError::Stopped => ApiError::Unavailable(e.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// Run `sql` in the query pool and return its rows as JSON objects. A
/// query over a table in `tables` that does not exist yet (nothing was
/// written to it) answers no rows rather than an error.
async fn rows(
    s: &ApiState,
    tables: &[crate::lake::Table],
    sql: String,
) -> Result<Vec<serde_json::Value>> {
    if tables.iter().any(|t| !s.lake.exists(&t.table_name())) {
        return Ok(Vec::new());
    }
    let engine = s.sql.clone();
    let r = s
        .pool
        .run(async move { engine.query(&sql).await })
        .await
        .map_err(ApiError::from)?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut buf = Vec::new();
    crate::query::format::write(&r, crate::query::format::Format::Json, &mut buf)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A string as an SQL literal (ids come from the validated config; quoting
/// keeps a quote in one from ever reaching the parser as syntax).
fn sql_str(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// A UTC ms time as an SQL timestamp literal.
fn sql_ts(ms: i64) -> String {
    format!("to_timestamp_micros({})", ms.saturating_mul(1000))
}

/// A time parameter (RFC 3339, epoch ms or `now-15m`), or `default`.
fn time_param(name: &str, v: Option<&str>, default: i64) -> Result<i64> {
    match v {
        None => Ok(default),
        Some(t) => crate::time::parse_time(t, now_ms())
            .map_err(|e| ApiError::BadRequest(format!("`{name}`: {e}"))),
    }
}

/// The socket of a request's connection, to notice a client that left.
#[derive(Clone, Copy)]
struct ClientSocket(std::os::fd::RawFd);

impl ClientSocket {
    /// Whether the client closed its side of the connection (an orderly
    /// shutdown reads as end of file; pending bytes or nothing yet do not).
    fn is_closed(self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: recv with MSG_PEEK | MSG_DONTWAIT on a socket the server
        // holds open for the duration of the request; it reads at most one
        // byte into a valid buffer and consumes nothing.
        let n = unsafe {
            libc::recv(
                self.0,
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0
    }

    /// Resolves when the client of `req` has gone away (never, if unknown).
    async fn gone(req: &actix_web::HttpRequest) {
        let Some(sock) = req.conn_data::<ClientSocket>().copied() else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tick.tick().await;
            if sock.is_closed() {
                return;
            }
        }
    }
}
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
            .app_data(web::PayloadConfig::new(1 << 20))
            .configure(routes)
            .default_service(web::to(|| async {
                ApiError::NotFound("no such endpoint; see GET /api".into()).error_response()
            }))
    })
    .on_connect(|conn, ext| {
        use std::os::fd::AsRawFd;
        if let Some(s) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            ext.insert(ClientSocket(s.as_raw_fd()));
        }
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
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/api/plants", web::get().to(assets::plants))
        .route("/api/plants/{id}", web::get().to(assets::plant))
        .route("/api/lines/{id}", web::get().to(assets::line))
        .route("/api/assets", web::get().to(assets::assets))
        .route("/api/assets/{id}", web::get().to(assets::asset))
        .route("/api/assets/{id}/history", web::get().to(assets::history))
        .route("/api/assets/{id}/events", web::get().to(assets::events))
        .route(
            "/api/assets/{id}/alarms/{name}/ack",
            web::post().to(alarms::acknowledge),
        )
        .route("/api/alarms", web::get().to(alarms::alarms))
        .route("/api/plants/{id}/shifts", web::get().to(reports::shifts))
        .route("/api/plants/{id}/oee", web::get().to(reports::oee))
        .route(
            "/api/plants/{id}/shift-report",
            web::get().to(reports::shift_report),
        )
        .route("/api/quarantine", web::get().to(data::quarantine))
        .route("/api/landing", web::get().to(data::landing))
        .route("/api/stream", web::get().to(stream::stream))
        .route("/api/sql", web::post().to(sql::sql))
        .route("/api/pipelines", web::get().to(pipelines::pipelines))
        .route("/api/models", web::get().to(models::list))
        .route("/api/models/{name}", web::get().to(models::get))
        .route(
            "/api/models/{name}/versions/{version}",
            web::get().to(models::version),
        )
        .route(
            "/api/models/{name}/versions/{version}/card",
            web::get().to(models::card),
        )
        .route(
            "/api/models/{name}/predict",
            web::post().to(models::predict),
        )
        .route("/api/models/{name}/drift", web::get().to(models::drift))
        .route("/api/models/{name}/quality", web::get().to(models::quality))
        .service(
            web::scope("/api/2.0/mlflow")
                .route(
                    "/registered-models/search",
                    web::get().to(mlflow::search_models),
                )
                .route("/registered-models/get", web::get().to(mlflow::get_model))
                .route(
                    "/registered-models/alias",
                    web::get().to(mlflow::get_by_alias),
                )
                .route(
                    "/registered-models/get-latest-versions",
                    web::route().to(mlflow::latest_versions),
                )
                .route("/model-versions/get", web::get().to(mlflow::get_version))
                .route(
                    "/model-versions/search",
                    web::get().to(mlflow::search_versions),
                )
                .route("/runs/get", web::get().to(mlflow::get_run))
                .route("/experiments/get", web::get().to(mlflow::get_experiment))
                .default_service(web::to(mlflow::unsupported)),
        );
    crate::ui::routes(cfg);
}

async fn index() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": "ironlake",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": [
            "GET /api/health",
            "GET /metrics",
            "GET /api/plants",
            "GET /api/plants/{id}",
            "GET /api/lines/{id}",
            "GET /api/assets?plant=&line=&kind=&q=",
            "GET /api/assets/{id}",
            "GET /api/assets/{id}/history?signal=&from=&to=&limit=",
            "GET /api/assets/{id}/history?signal=&from=&to=&points=",
            "GET /api/assets/{id}/events?from=&to=&kind=&limit=",
            "POST /api/assets/{id}/alarms/{name}/ack (application/json {\"by\": \"name\", \"comment\": \"...\"})",
            "GET /api/alarms?plant=&line=&asset=&severity=&state=&since=&limit=",
            "GET /api/plants/{id}/oee",
            "GET /api/plants/{id}/shifts?limit=",
            "GET /api/plants/{id}/shift-report?shift=",
            "GET /api/quarantine?plant=&since=",
            "GET /api/stream?plant=&line=&assets= (text/event-stream)",
            "GET /api/pipelines",
            "GET /api/models",
            "GET /api/models/{name}",
            "GET /api/models/{name}/versions/{version|alias}",
            "GET /api/models/{name}/versions/{version|alias}/card",
            "GET /api/models/{name}/drift",
            "GET /api/models/{name}/quality",
            "POST /api/models/{name}/predict?version= (application/json {\"rows\": [{...}]} or {\"columns\": [...], \"data\": [[...]]}, or application/vnd.apache.arrow.stream)",
            "GET /api/2.0/mlflow/... (MLflow registry read API: registered-models/search|get|alias|get-latest-versions, model-versions/get|search, runs/get)",
            "POST /api/sql (application/json {\"sql\": \"SELECT ...\", \"format\": \"json|csv|arrow\", \"max_rows\": 10000}, or application/sql)"
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
        "sql": { "running": s.pool.running() },
        "lake": { "root": s.lake.root().as_str(), "writers": writers },
    }))
}
