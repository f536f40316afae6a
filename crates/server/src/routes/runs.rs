//! Reading runs: `GET /api/v1/runs` (filters, cursor pagination) and `GET /api/v1/runs/{id}`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use cistern_store::RunFilter;
use serde_json::{json, Value};

use super::query::Params;
use crate::auth::Reader;
use crate::error::ApiError;
use crate::AppState;

/// Run routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/api/v1/runs", list)
        .get("/api/v1/runs/{id}", one)
}

#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    summary = "Runs, newest first",
    params(("pipeline" = Option<String>, Query, description = "Pipeline full name or name"), ("result" = Option<String>, Query, description = "A result word"), ("branch" = Option<String>, Query, description = "Branch"), ("instance" = Option<String>, Query, description = "Instance GUID"), ("since" = Option<String>, Query, description = "RFC 3339, a date, or epoch ms"), ("until" = Option<String>, Query, description = "RFC 3339, a date, or epoch ms"), ("limit" = Option<u32>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "From next_cursor"), ("format" = Option<String>, Query, description = "csv for CSV")),
    responses((status = 200, description = "{\"runs\": [...], \"next_cursor\": ...} (or CSV with format=csv)", body = Object), (status = 400, description = "A bad filter, limit or cursor, named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn list(
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

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    operation_id = "get_run",
    summary = "One run with stages, steps, logs and commits",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, description = "The run", body = Object), (status = 404, description = "No run of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn one(
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
