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
    responses((status = 200, description = "The database answers: {\"status\": \"ready\", \"database\": \"sqlite\"}", body = Object), (status = 503, description = "The database does not answer", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            format!("database unreachable: {e}"),
        )
    })?;
    Ok(Json(
        json!({"status": "ready", "database": state.store.backend()}),
    ))
}
