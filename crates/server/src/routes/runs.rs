//! Reading runs: `GET /api/v1/runs` (filters, cursor pagination) and `GET /api/v1/runs/{id}`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use cistern_store::RunFilter;
use serde_json::{json, Value};

use super::query::Params;
use crate::auth::Reader;
use crate::error::ApiError;
use crate::AppState;

/// Run routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs", get(list))
        .route("/api/v1/runs/{id}", get(one))
}

async fn list(
    State(state): State<AppState>,
    Reader(caller): Reader,
    headers: axum::http::HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let q = Params(q);
    let csv = super::metrics::wants_csv(&q, &headers)?;
    let filter = RunFilter {
        pipeline: q.text("pipeline"),
        result: q.result("result")?,
        branch: q.text("branch"),
        instance: q.text("instance"),
        since: q.time("since")?,
        until: q.time("until")?,
    };
    let page = q.page()?;
    let found = state
        .store
        .list_runs(&caller.tenant.id, &filter, &page)
        .await?;
    if csv {
        return Ok(runs_csv(&found));
    }
    let runs: Vec<Value> = found
        .items
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            // The list is a summary: stages (and their logs) come with the run itself.
            if let Some(m) = v.as_object_mut() {
                m.remove("stages");
                m.remove("log");
            }
            v
        })
        .collect();
    Ok(Json(json!({"runs": runs, "next_cursor": found.next_cursor})).into_response())
}

async fn one(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.get_run(&caller.tenant.id, &id).await? {
        Some(run) => Ok(Json(serde_json::to_value(run).map_err(ApiError::internal)?)),
        None => Err(ApiError::not_found(format!("no run with id {id:?}"))),
    }
}

/// The run list as CSV (the next page's cursor in `X-Next-Cursor`).
fn runs_csv(found: &cistern_store::Page<cistern_core::Run>) -> axum::response::Response {
    let rows = found
        .items
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.pipeline.full_name.clone(),
                r.pipeline.project.clone().unwrap_or_default(),
                r.result.as_str().to_owned(),
                super::query::rfc3339(r.started_at),
                r.finished_at.map(super::query::rfc3339).unwrap_or_default(),
                r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                r.branch.clone().unwrap_or_default(),
                r.build_number.map(|b| b.to_string()).unwrap_or_default(),
                r.execution_id.clone().unwrap_or_default(),
                r.cd.to_string(),
                r.environment.clone().unwrap_or_default(),
                r.instance.guid.clone(),
                r.source.clone(),
            ]
        })
        .collect();
    let mut resp = super::metrics::csv_reply(
        &[
            "id",
            "pipeline",
            "project",
            "result",
            "started_at",
            "finished_at",
            "duration_ms",
            "branch",
            "build_number",
            "execution_id",
            "cd",
            "environment",
            "instance",
            "source",
        ],
        rows,
    );
    if let Some(c) = &found.next_cursor {
        if let Ok(v) = axum::http::HeaderValue::from_str(c) {
            resp.headers_mut().insert("x-next-cursor", v);
        }
    }
    resp
}
