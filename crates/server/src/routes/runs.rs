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
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = Params(q);
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
    Ok(Json(
        json!({"runs": runs, "next_cursor": found.next_cursor}),
    ))
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
