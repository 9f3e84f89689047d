//! The read side of the MLflow REST API (`/api/2.0/mlflow/...`) over the
//! model registry, so the `mlflow` Python client (and anything speaking
//! the same protocol) can list and inspect ironlake's models: search and
//! get registered models, get and search model versions (also by alias and
//! latest per stage), get runs with their metrics and parameters. Writes
//! go through `ironlake train` / `ironlake models`, not through MLflow.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, State};
use crate::ml::registry::{RegisteredModel, Registry, Version};

/// MLflow's error shape.
fn mlflow_error(status: u16, code: &str, message: String) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .json(json!({"error_code": code, "message": message}))
}

fn from_err(e: crate::ml::MlError) -> HttpResponse {
    match e {
        crate::ml::MlError::NotFound(m) => mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", m),
        e => mlflow_error(500, "INTERNAL_ERROR", e.to_string()),
    }
}

fn version_json(m: &RegisteredModel, v: &Version) -> Value {
    let aliases: Vec<&String> = m
        .aliases
        .iter()
        .filter(|(_, x)| **x == v.version)
        .map(|(a, _)| a)
        .collect();
    json!({
        "name": m.name,
        "version": v.version.to_string(),
        "creation_timestamp": v.created_ms,
        "last_updated_timestamp": m.updated_ms,
        "current_stage": v.stage.as_str(),
        "description": "",
        "source": format!("models:/{}/{}", m.name, v.version),
        "run_id": v.run_id,
        "status": "READY",
        "aliases": aliases,
        "tags": [
            {"key": "algorithm", "value": v.algorithm},
            {"key": "features_version", "value": v.features_version.map(|x| x.to_string()).unwrap_or_default()},
        ],
    })
}

fn model_json(m: &RegisteredModel) -> Value {
    // Latest version per stage, as MLflow reports them.
    let mut latest: Vec<&Version> = Vec::new();
    for v in &m.versions {
        match latest.iter_mut().find(|l| l.stage == v.stage) {
            Some(l) if l.version < v.version => *l = v,
            Some(_) => {}
            None => latest.push(v),
        }
    }
    json!({
        "name": m.name,
        "creation_timestamp": m.created_ms,
        "last_updated_timestamp": m.updated_ms,
        "description": m.description,
        "latest_versions": latest.iter().map(|v| version_json(m, v)).collect::<Vec<_>>(),
        "aliases": m.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v.to_string()})).collect::<Vec<_>>(),
        "tags": [
            {"key": "task", "value": m.task},
            {"key": "target", "value": m.target},
            {"key": "twin_type", "value": m.twin_type.clone().unwrap_or_default()},
        ],
    })
}

async fn all(reg: &Registry) -> Result<Vec<RegisteredModel>, HttpResponse> {
    let r = reg.clone();
    web::block(move || r.list())
        .await
        .map_err(|e| mlflow_error(500, "INTERNAL_ERROR", e.to_string()))?
        .map_err(from_err)
}

/// The quoted value of a condition (`'x'` or `"x"`).
fn quoted(c: &str) -> String {
    c.split_once('\'')
        .and_then(|(_, r)| r.rsplit_once('\''))
        .or_else(|| c.split_once('"').and_then(|(_, r)| r.rsplit_once('"')))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

/// One `name = 'x'` / `name LIKE 'x%'` / `name ILIKE ...` condition.
fn name_matches(cond: &str, name: &str) -> bool {
    let lower = cond.to_ascii_lowercase();
    let value = quoted(cond);
    if lower.contains(" like ") || lower.contains(" ilike ") {
        let pat = value.replace('%', "");
        let (n, p) = if lower.contains(" ilike ") {
            (name.to_ascii_lowercase(), pat.to_ascii_lowercase())
        } else {
            (name.to_string(), pat)
        };
        match (value.starts_with('%'), value.ends_with('%')) {
            (true, true) => n.contains(&p),
            (false, true) => n.starts_with(&p),
            (true, false) => n.ends_with(&p),
            (false, false) => n == p,
        }
    } else if lower.contains("!=") {
        name != value
    } else {
        name == value
    }
}

/// A search filter as the clients send it: conditions joined by AND. Name
/// conditions are applied; tag conditions are met when they exclude a tag
/// ironlake never sets (`tags.x != 'y'`, what MLflow 3 adds to leave out
/// prompts) and not met when they require one.
fn name_filter(filter: Option<&str>) -> impl Fn(&str) -> bool {
    let f = filter.unwrap_or("").trim().to_string();
    let conds: Vec<String> = {
        let mut out = Vec::new();
        let mut rest = f.as_str();
        loop {
            let lower = rest.to_ascii_lowercase();
            match lower.find(" and ") {
                Some(i) => {
                    out.push(rest[..i].trim().to_string());
                    rest = &rest[i + 5..];
                }
                None => {
                    if !rest.trim().is_empty() {
                        out.push(rest.trim().to_string());
                    }
                    break;
                }
            }
        }
        out
    };
    move |name: &str| {
        conds.iter().all(|c| {
            let l = c.trim_start_matches('(').to_ascii_lowercase();
            if l.starts_with("name") {
                name_matches(c, name)
            } else {
                l.contains("!=") || l.contains(" not ")
            }
        })
    }
}

#[derive(Deserialize)]
pub struct Search {
    filter: Option<String>,
    max_results: Option<usize>,
}

/// `GET /api/2.0/mlflow/registered-models/search`
pub async fn search_models(s: State, q: web::Query<Search>) -> HttpResponse {
    let models = match all(&s.model_registry).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let keep = name_filter(q.filter.as_deref());
    let out: Vec<Value> = models
        .iter()
        .filter(|m| keep(&m.name))
        .take(q.max_results.unwrap_or(1000))
        .map(model_json)
        .collect();
    HttpResponse::Ok().json(json!({"registered_models": out}))
}

#[derive(Deserialize)]
pub struct ByName {
    name: String,
}

/// `GET /api/2.0/mlflow/registered-models/get`
pub async fn get_model(s: State, q: web::Query<ByName>) -> HttpResponse {
    match s.model_registry.get(&q.name) {
        Ok(m) => HttpResponse::Ok().json(json!({"registered_model": model_json(&m)})),
        Err(e) => from_err(e),
    }
}

#[derive(Deserialize)]
pub struct ByVersion {
    name: String,
    version: String,
}

/// `GET /api/2.0/mlflow/model-versions/get`
pub async fn get_version(s: State, q: web::Query<ByVersion>) -> HttpResponse {
    let m = match s.model_registry.get(&q.name) {
        Ok(m) => m,
        Err(e) => return from_err(e),
    };
    match q.version.parse::<u32>().ok().and_then(|v| m.version(v)) {
        Some(v) => HttpResponse::Ok().json(json!({"model_version": version_json(&m, v)})),
        None => mlflow_error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            format!("model `{}` has no version {}", q.name, q.version),
        ),
    }
}

#[derive(Deserialize)]
pub struct ByAlias {
    name: String,
    alias: String,
}

/// `GET /api/2.0/mlflow/registered-models/alias`
pub async fn get_by_alias(s: State, q: web::Query<ByAlias>) -> HttpResponse {
    let m = match s.model_registry.get(&q.name) {
        Ok(m) => m,
        Err(e) => return from_err(e),
    };
    match m.alias(&q.alias).and_then(|v| m.version(v)) {
        Some(v) => HttpResponse::Ok().json(json!({"model_version": version_json(&m, v)})),
        None => mlflow_error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            format!("model `{}` has no alias `{}`", q.name, q.alias),
        ),
    }
}

/// `GET /api/2.0/mlflow/model-versions/search`
pub async fn search_versions(s: State, q: web::Query<Search>) -> HttpResponse {
    let models = match all(&s.model_registry).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let keep = name_filter(q.filter.as_deref());
    let out: Vec<Value> = models
        .iter()
        .filter(|m| keep(&m.name))
        .flat_map(|m| m.versions.iter().rev().map(move |v| version_json(m, v)))
        .take(q.max_results.unwrap_or(10_000))
        .collect();
    HttpResponse::Ok().json(json!({"model_versions": out}))
}

#[derive(Deserialize)]
pub struct Latest {
    name: String,
    #[serde(default)]
    stages: Vec<String>,
}

/// `POST|GET /api/2.0/mlflow/registered-models/get-latest-versions`
pub async fn latest_versions(
    s: State,
    body: Option<web::Json<Latest>>,
    q: Option<web::Query<ByName>>,
) -> HttpResponse {
    let (name, stages) = match (body, q) {
        (Some(b), _) => (b.name.clone(), b.stages.clone()),
        (None, Some(q)) => (q.name.clone(), Vec::new()),
        (None, None) => {
            return mlflow_error(400, "INVALID_PARAMETER_VALUE", "name is required".into())
        }
    };
    let m = match s.model_registry.get(&name) {
        Ok(m) => m,
        Err(e) => return from_err(e),
    };
    let mj = model_json(&m);
    let out: Vec<Value> = mj["latest_versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| {
            stages.is_empty()
                || stages.iter().any(|st| {
                    v["current_stage"]
                        .as_str()
                        .is_some_and(|c| c.eq_ignore_ascii_case(st))
                })
        })
        .collect();
    HttpResponse::Ok().json(json!({"model_versions": out}))
}

#[derive(Deserialize)]
pub struct ByRun {
    run_id: Option<String>,
    run_uuid: Option<String>,
}

/// `GET /api/2.0/mlflow/runs/get`: a training run with its metrics, its
/// parameters and the tables it read (as dataset inputs and tags).
pub async fn get_run(s: State, q: web::Query<ByRun>) -> HttpResponse {
    let Some(id) = q.run_id.clone().or_else(|| q.run_uuid.clone()) else {
        return mlflow_error(400, "INVALID_PARAMETER_VALUE", "run_id is required".into());
    };
    let models = match all(&s.model_registry).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some((m, v)) = models
        .iter()
        .find_map(|m| m.versions.iter().find(|v| v.run_id == id).map(|v| (m, v)))
    else {
        return mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", format!("run `{id}`"));
    };
    let run = match s.model_registry.run(&m.name, v.version) {
        Ok(r) => r,
        Err(e) => return from_err(e),
    };
    let ts = run.started_ms;
    let metrics: Vec<Value> = run
        .metrics
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| json!({"key": k, "value": v, "timestamp": ts, "step": 0}))
        .collect();
    let params_v = serde_json::to_value(&run.params).unwrap_or(Value::Null);
    let mut params: Vec<Value> = params_v
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        v => v.to_string(),
                    };
                    json!({"key": k, "value": s})
                })
                .collect()
        })
        .unwrap_or_default();
    params.push(json!({"key": "algorithm", "value": run.algorithm}));
    params.push(json!({"key": "features", "value": run.features.join(",")}));
    let sources: Vec<String> = run
        .sources
        .iter()
        .map(|(t, v)| {
            format!(
                "{t}@{}",
                v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
            )
        })
        .collect();
    HttpResponse::Ok().json(json!({"run": {
        "info": {
            "run_id": run.run_id,
            "run_uuid": run.run_id,
            "run_name": format!("{} v{}", m.name, v.version),
            "experiment_id": "0",
            "status": "FINISHED",
            "start_time": ts,
            "end_time": ts + (run.duration_s * 1000.0) as i64,
            "artifact_uri": format!("{}/{}/v{}", s.model_registry.root().display(), m.name, v.version),
            "lifecycle_stage": "active",
        },
        "data": {
            "metrics": metrics,
            "params": params,
            "tags": [
                {"key": "mlflow.runName", "value": format!("{} v{}", m.name, v.version)},
                {"key": "ironlake.model", "value": m.name},
                {"key": "ironlake.sources", "value": sources.join(", ")},
            ],
        },
        "inputs": {
            "dataset_inputs": run.sources.iter().map(|(t, v)| json!({
                "tags": [],
                "dataset": {
                    "name": t,
                    "digest": v.map(|v| format!("v{v}")).unwrap_or_default(),
                    "source_type": "delta_table",
                    "source": json!({"table": t, "version": v}).to_string(),
                },
            })).collect::<Vec<_>>(),
        },
    }}))
}

/// `GET /api/2.0/mlflow/experiments/get`: the one experiment training runs belong to.
pub async fn get_experiment() -> HttpResponse {
    HttpResponse::Ok().json(json!({"experiment": {
        "experiment_id": "0",
        "name": "ironlake",
        "lifecycle_stage": "active",
        "artifact_location": "",
    }}))
}

/// Unknown MLflow endpoints: MLflow's "not implemented" error.
pub async fn unsupported() -> Result<HttpResponse, ApiError> {
    Ok(mlflow_error(
        501,
        "NOT_IMPLEMENTED",
        "ironlake serves the read side of the MLflow registry (search/get models, versions, runs); \
         train and promote with `ironlake train` and `ironlake models`"
            .into(),
    ))
}
