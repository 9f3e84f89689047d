//! Data health: what validation set aside, by reason.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{rows, sql_str, sql_ts, time_param, ApiError, Result, State};
use crate::lake::Table;
use crate::time::now_ms;

#[derive(Deserialize)]
pub(super) struct QuarantineParams {
    plant: Option<String>,
    since: Option<String>,
}

/// `GET /api/quarantine?plant=&since=`: rows quarantined since `since`
/// (default `now-1h`) by plant and expectation (the reason's kind:
/// `out_of_range`, `malformed_payload`, ...), most first, with the newest
/// time and the newest reason and payload as an example.
pub(super) async fn quarantine(s: State, q: web::Query<QuarantineParams>) -> Result<HttpResponse> {
    let since = time_param("since", q.since.as_deref(), now_ms() - 3_600_000)?;
    let mut filter = format!(
        "ingest_ts >= {} AND date >= CAST({} AS DATE)",
        sql_ts(since),
        sql_ts(since - 86_400_000)
    );
    if let Some(p) = q.plant.as_deref().filter(|p| !p.is_empty()) {
        s.model
            .plant(p)
            .ok_or_else(|| ApiError::NotFound(format!("unknown plant `{p}`")))?;
        filter.push_str(&format!(" AND plant = {}", sql_str(p)));
    }
    let sql = format!(
        "SELECT plant, expectation, count(*) AS rows, \
         CAST(max(ingest_ts) AS BIGINT) / 1000 AS last, \
         last_value(reason ORDER BY ingest_ts) AS example_reason, \
         last_value(payload ORDER BY ingest_ts) AS example \
         FROM silver.quarantine WHERE {filter} \
         GROUP BY plant, expectation ORDER BY rows DESC LIMIT 500"
    );
    let groups = rows(&s, &[Table::SilverQuarantine], sql).await?;
    let total: i64 = groups.iter().filter_map(|g| g["rows"].as_i64()).sum();
    Ok(HttpResponse::Ok().json(json!({"since": since, "rows": total, "reasons": groups})))
}

/// `GET /api/landing`: every landing folder source with its state, schema
/// (version and columns), files done and pending, rows and last error.
pub(super) async fn landing(s: State) -> Result<HttpResponse> {
    let sources = s
        .connectors
        .get::<crate::connectors::files::FilesConnector>()
        .map(|f| f.status())
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({ "sources": sources })))
}
