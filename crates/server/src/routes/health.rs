//! Liveness and readiness.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

/// `/healthz` and `/readyz`.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "The process is up: {\"status\": \"ok\"}", body = Object))
)]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    summary = "Readiness",
    security(()),
    responses((status = 200, description = "The database answers within 2 s: {\"status\": \"ready\", \"database\": \"sqlite\", \"pool\": {\"size\", \"idle\", \"in_use\"}}", body = Object), (status = 503, description = "The database does not answer, or no pooled connection can be had within 2 s", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let not_ready = |detail: String| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            detail,
        )
    };
    // A query needs a pooled connection: when none can be had within the bound (all held, or
    // lost), the hub cannot answer reads and must not say it is ready.
    match tokio::time::timeout(READY_BOUND, state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(not_ready(format!("database unreachable: {e}"))),
        Err(_) => {
            let s = state.store.stats();
            return Err(not_ready(format!(
                "no database connection could be had within {} ms ({} of {} pool connections in use)",
                READY_BOUND.as_millis(),
                s.pool_size.saturating_sub(s.pool_idle),
                s.pool_size
            )));
        }
    }
    let s = state.store.stats();
    Ok(Json(json!({
        "status": "ready",
        "database": state.store.backend(),
        "pool": {"size": s.pool_size, "idle": s.pool_idle, "in_use": s.pool_size.saturating_sub(s.pool_idle)},
    })))
}

/// How long `/readyz` waits for a database connection and an answer before it reports not ready.
const READY_BOUND: std::time::Duration = std::time::Duration::from_secs(2);
