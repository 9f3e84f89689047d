//! `POST /api/sql`: one read-only query over the lake, run in the bounded
//! query pool.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Result, State};
use crate::query::format::{self, Format};
use crate::query::QueryError;

/// Body of `POST /api/sql` as `application/json` (or the query itself as
/// `application/sql`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    max_rows: Option<usize>,
    /// A shorter timeout than `sql.timeout_s`, in seconds.
    #[serde(default)]
    timeout_s: Option<u64>,
}

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
const SQL_DEFAULT_ROWS: usize = 10_000;
const SQL_MAX_ROWS: usize = 1_000_000;

/// `POST /api/sql`: one read-only query. JSON (default): `{"columns":
/// [{"name","type"}], "rows": [{..}], "row_count", "truncated",
/// "elapsed_ms"}`; `format: "arrow"` or `Accept: application/vnd.apache.arrow.stream`:
/// an Arrow IPC stream; `"csv"`: CSV with a header. Bad SQL is a 400 with the
/// parser's or planner's message; a query over the pool's limits is a 413
/// (memory) or a 503 (timeout, too many at once).
///
/// Only `application/json` and `application/sql` bodies are taken: a web
/// page in an operator's browser cannot send either without the server's
/// consent (CORS preflight), so it cannot send queries in the operator's
/// name.
pub(super) async fn sql(
    s: State,
    req: actix_web::HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let ctype = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let is_json = match ctype.as_str() {
        "application/json" => true,
        "application/sql" => false,
        other => {
            return Err(ApiError::UnsupportedMedia(format!(
                "send the query as application/json ({{\"sql\": \"...\"}}) or application/sql, not `{}`",
                if other.is_empty() { "no content type" } else { other }
            )))
        }
    };
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("body is not UTF-8".into()))?;
    let r: SqlRequest = if is_json {
        serde_json::from_str(text).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
    } else {
        SqlRequest {
            sql: text.to_string(),
            format: None,
            max_rows: None,
            timeout_s: None,
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
    let timeout = r.timeout_s.map(std::time::Duration::from_secs);
    let run = s.pool.run_within(
        async move { engine.query_limited(&r.sql, max_rows).await },
        timeout,
    );
    // A client that leaves cancels its query (dropping `run` aborts it).
    let result = tokio::select! {
        r = run => r,
        _ = super::ClientSocket::gone(&req) => {
            return Err(ApiError::BadRequest("the client closed the connection".into()));
        }
    }
    .map_err(ApiError::from)?
        .map_err(|e: QueryError| {
            if e.is_resources_exhausted() {
                ApiError::TooLarge(format!(
                    "the query needs more memory than the SQL pool allows (sql.memory_mb): add filters, aggregate, or lower max_rows ({e})"
                ))
            } else if e.is_user_error() {
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
