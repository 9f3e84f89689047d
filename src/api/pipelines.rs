//! `GET /api/pipelines`: the configured pipelines with their latest runs.

use std::collections::HashMap;

use actix_web::HttpResponse;
use serde_json::json;

use super::{rows, Result, State};

/// `GET /api/pipelines`: every configured pipeline with its latest recorded
/// update from `system.pipeline_runs` (null before the first).
pub(super) async fn pipelines(s: State) -> Result<HttpResponse> {
    let q = "SELECT pipeline, status, started, finished, rows_in, rows_out, rows_dropped, rows_warned, \
             expectations, source_versions, target_version, message FROM ( \
               SELECT *, row_number() OVER (PARTITION BY pipeline ORDER BY started DESC) AS rn \
               FROM system.pipeline_runs) WHERE rn = 1";
    let runs = rows(&s, &[crate::lake::Table::SystemPipelineRuns], q.into()).await?;
    let last: HashMap<String, serde_json::Value> = runs
        .into_iter()
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
        .collect();
    let out: Vec<_> = s
        .pipelines
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "kind": p.kind,
                "description": p.description,
                "sources": p.sources().iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "target": p.target,
                "enabled": p.enabled,
                "expectations": p.expectations,
                "last_run": last.get(&p.name),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}
