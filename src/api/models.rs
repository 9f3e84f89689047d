//! The model registry over REST: registered models and versions with
//! their runs and cards, what the twins serve, and batch scoring
//! (`POST /api/models/{name}/predict`, JSON rows or an Arrow IPC stream).

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, State};
use crate::ml::model::{Model, Task};
use crate::ml::MlError;

impl From<MlError> for ApiError {
    fn from(e: MlError) -> Self {
        match e {
            MlError::NotFound(_) => ApiError::NotFound(e.to_string()),
            MlError::Invalid(_) | MlError::Data(_) => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

/// `GET /api/models`: every registered model, and what the twins serve.
pub async fn list(s: State) -> Result<HttpResponse, ApiError> {
    let reg = s.model_registry.clone();
    let all = web::block(move || reg.list())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let served = s.champions.as_ref().map(|c| c.served()).unwrap_or_default();
    let problems = s
        .champions
        .as_ref()
        .map(|c| c.problems.read().clone())
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({
        "registry": s.model_registry.root().display().to_string(),
        "models": all,
        "served": served,
        "not_served": problems,
    })))
}

/// `GET /api/models/{name}`.
pub async fn get(s: State, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(s.model_registry.get(&name)?))
}

/// `GET /api/models/{name}/versions/{version}` (a number or an alias): the
/// version with its training run.
pub async fn version(
    s: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, which) = path.into_inner();
    let r = &s.model_registry;
    let v = r.resolve(&name, &which)?;
    let m = r.get(&name)?;
    let run = r.run(&name, v)?;
    Ok(HttpResponse::Ok().json(json!({
        "name": name,
        "version": m.version(v),
        "aliases": m.aliases.iter().filter(|(_, x)| **x == v).map(|(a, _)| a).collect::<Vec<_>>(),
        "run": run,
    })))
}

/// `GET /api/models/{name}/versions/{version}/card` (Markdown).
pub async fn card(s: State, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (name, which) = path.into_inner();
    let v = s.model_registry.resolve(&name, &which)?;
    Ok(HttpResponse::Ok()
        .content_type("text/markdown; charset=utf-8")
        .body(s.model_registry.card(&name, v)?))
}

/// `GET /api/models/{name}/drift`: the latest drift check of the model
/// (every feature and `_prediction`, per twin type and per machine), worst first.
pub async fn drift(s: State, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    s.model_registry.get(&name)?;
    let n = super::sql_str(&name);
    let rows = super::rows(
        &s,
        &[crate::lake::Table::GoldDrift],
        format!(
            "SELECT ts, window_start, scope, asset_id, twin_type, version, feature, n, psi, ks, js, status \
             FROM gold.drift WHERE model = {n} AND ts = (SELECT max(ts) FROM gold.drift WHERE model = {n}) \
             ORDER BY psi DESC"
        ),
    )
    .await?;
    let alerts = rows.iter().filter(|r| r["status"] == "ALERT").count();
    Ok(HttpResponse::Ok().json(json!({
        "model": name.as_str(),
        "checked": rows.first().map(|r| r["ts"].clone()),
        "alerts": alerts,
        "rows": rows,
    })))
}

/// `GET /api/models/{name}/quality`: the quality of its past live
/// predictions once labels are known (`gold.model_quality`), per day, and
/// per version and role over all those days: a challenger beside the
/// champion on the same machines and days.
pub async fn quality(s: State, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    s.model_registry.get(&name)?;
    let n = super::sql_str(&name);
    let t = [crate::lake::Table::GoldModelQuality];
    let days = super::rows(
        &s,
        &t,
        format!(
            "SELECT CAST(day AS VARCHAR) AS day, version, role, rows, positives, flagged, precision, recall, \
             alerts, true_alerts, failures, caught, alert_precision, alert_recall, computed_at \
             FROM gold.model_quality WHERE model = {n} ORDER BY day, version, role"
        ),
    )
    .await?;
    let summary = super::rows(
        &s,
        &t,
        format!(
            "SELECT version, role, count(*) AS days, sum(rows) AS rows, sum(positives) AS positives, \
             sum(flagged) AS flagged, sum(alerts) AS alerts, sum(true_alerts) AS true_alerts, \
             sum(failures) AS failures, sum(caught) AS caught, \
             CASE WHEN sum(alerts) > 0 THEN CAST(sum(true_alerts) AS DOUBLE) / sum(alerts) END AS alert_precision, \
             CASE WHEN sum(failures) > 0 THEN CAST(sum(caught) AS DOUBLE) / sum(failures) END AS alert_recall \
             FROM gold.model_quality WHERE model = {n} GROUP BY version, role ORDER BY version, role"
        ),
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "model": name.as_str(),
        "summary": summary,
        "days": days,
    })))
}

#[derive(Deserialize)]
pub struct PredictQuery {
    /// A version number or alias (default: champion).
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PredictBody {
    /// `{"rows": [{"feature": value, ...}, ...]}`
    Rows {
        rows: Vec<HashMap<String, Option<f64>>>,
    },
    /// `{"columns": [...], "data": [[...], ...]}`
    Columns {
        columns: Vec<String>,
        data: Vec<Vec<Option<f64>>>,
    },
}

/// Most rows one request scores.
const MAX_ROWS: usize = 5_000_000;

/// A loaded version (cached: a forest is parsed once).
async fn loaded(s: &State, name: &str, which: &str) -> Result<(u32, Arc<Model>), ApiError> {
    let v = s.model_registry.resolve(name, which)?;
    let key = (name.to_string(), v);
    if let Some(m) = s.model_cache.lock().get(&key) {
        return Ok((v, m.clone()));
    }
    let (reg, n) = (s.model_registry.clone(), name.to_string());
    let m = Arc::new(
        web::block(move || reg.load(&n, v))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??,
    );
    let mut c = s.model_cache.lock();
    if c.len() > 16 {
        c.clear();
    }
    c.insert(key, m.clone());
    Ok((v, m))
}

/// Named columns of numbers (a missing value is `None`).
type Columns = (Vec<String>, Vec<Vec<Option<f64>>>);

/// Columns of an Arrow IPC stream as numbers, by name.
fn arrow_columns(body: &[u8]) -> Result<Columns, ApiError> {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{DataType, Float64Type};
    let bad = |e: String| ApiError::BadRequest(format!("Arrow IPC stream: {e}"));
    let reader =
        deltalake::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
            .map_err(|e| bad(e.to_string()))?;
    let schema = reader.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut cols: Vec<Vec<Option<f64>>> = vec![Vec::new(); names.len()];
    for b in reader {
        let b = b.map_err(|e| bad(e.to_string()))?;
        for (i, c) in b.columns().iter().enumerate() {
            let c = deltalake::arrow::compute::cast(c, &DataType::Float64)
                .map_err(|e| bad(format!("column `{}`: {e}", names[i])))?;
            let c = c.as_primitive::<Float64Type>();
            cols[i].extend((0..c.len()).map(|r| (!c.is_null(r)).then(|| c.value(r))));
        }
    }
    Ok((names, cols))
}

/// `POST /api/models/{name}/predict?version=`: score rows sent as JSON
/// (`{"rows": [{...}]}` or `{"columns": [...], "data": [[...]]}`) or as an
/// Arrow IPC stream (`application/vnd.apache.arrow.stream`). A feature the
/// rows lack is filled with the training median and named in `missing`.
pub async fn predict(
    s: State,
    req: HttpRequest,
    name: web::Path<String>,
    q: web::Query<PredictQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let which = q.version.clone().unwrap_or_else(|| "champion".into());
    let (v, m) = loaded(&s, &name, &which).await?;
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let (names, cols): Columns = if ct.starts_with("application/vnd.apache.arrow") {
        arrow_columns(&body)?
    } else if ct.starts_with("application/json") {
        let b: PredictBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "body: {e} (send {{\"rows\": [{{\"feature\": value}}]}} or {{\"columns\": [...], \"data\": [[...]]}})"
            ))
        })?;
        match b {
            PredictBody::Rows { rows } => {
                // The model's features that any row names.
                let names: Vec<String> = m
                    .features
                    .iter()
                    .filter(|f| rows.iter().any(|r| r.contains_key(f.as_str())))
                    .cloned()
                    .collect();
                let cols = names
                    .iter()
                    .map(|f| rows.iter().map(|r| r.get(f).copied().flatten()).collect())
                    .collect();
                (names, cols)
            }
            PredictBody::Columns { columns, data } => {
                let mut cols = vec![Vec::with_capacity(data.len()); columns.len()];
                for (r, row) in data.iter().enumerate() {
                    if row.len() != columns.len() {
                        return Err(ApiError::BadRequest(format!(
                            "data[{r}] has {} values for {} columns",
                            row.len(),
                            columns.len()
                        )));
                    }
                    for (c, v) in row.iter().enumerate() {
                        cols[c].push(*v);
                    }
                }
                (columns, cols)
            }
        }
    } else {
        return Err(ApiError::UnsupportedMedia(format!(
            "content type `{ct}`: send application/json or application/vnd.apache.arrow.stream"
        )));
    };
    let n = cols.first().map(|c| c.len()).unwrap_or(0);
    if n > MAX_ROWS {
        return Err(ApiError::TooLarge(format!(
            "{n} rows: at most {MAX_ROWS} per request"
        )));
    }
    let at: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let missing: Vec<&String> = m
        .features
        .iter()
        .filter(|f| !at.contains_key(f.as_str()))
        .collect();
    if missing.len() == m.features.len() {
        return Err(ApiError::BadRequest(format!(
            "none of the model's features in the rows (it reads: {})",
            m.features.join(", ")
        )));
    }
    let m2 = m.clone();
    let idx: Vec<Option<usize>> = m
        .features
        .iter()
        .map(|f| at.get(f.as_str()).copied())
        .collect();
    #[allow(clippy::needless_range_loop)]
    let scores = web::block(move || {
        let k = m2.features.len();
        let mut x = Vec::with_capacity(n * k);
        for r in 0..n {
            for (c, i) in idx.iter().enumerate() {
                let v = i.and_then(|i| cols[i][r]).filter(|v| v.is_finite());
                x.push(v.unwrap_or(m2.impute[c]));
            }
        }
        let mut out = vec![0.0; n];
        m2.score_matrix(&x, &mut out);
        out
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut doc = json!({
        "model": name.as_str(),
        "version": v,
        "task": m.task.as_str(),
        "target": m.target,
        "rows": n,
        "missing": missing,
    });
    match m.task {
        Task::Classification => {
            doc["threshold"] = json!(m.threshold);
            doc["alerts"] = json!(scores
                .iter()
                .filter(|&&p| m.threshold.is_some_and(|t| p >= t))
                .count());
            doc["predictions"] = json!(scores);
        }
        Task::Regression => doc["predictions"] = json!(scores),
    }
    Ok(HttpResponse::Ok().json(doc))
}
