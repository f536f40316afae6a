//! Operating the hub: Prometheus metrics at `/metrics` (when `metrics_listen = "main"`) and the
//! OpenAPI document at `/api/openapi.json`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Ops routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/metrics", metrics_on_main)
        .get("/api/openapi.json", openapi)
}

/// `GET /metrics` on the main listener.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "OpenMetrics text: HTTP answers and latency by route, inbound reports by dialect and outcome, the writer's batch sizes and queue, the database pool, delivery attempts and the outbox depth. Served here when `metrics_listen = \"main\"` (the default); 404 when they are served on a listener of their own or off.",
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String),
        (status = 404, description = "Metrics are not served on this listener", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics_on_main(State(state): State<AppState>) -> Response {
    match state.config.metrics_listen.trim() {
        "main" => metrics(State(state)).await,
        "off" => ApiError::not_found("metrics are off (metrics_listen = \"off\")").into_response(),
        addr => ApiError::not_found(format!(
            "metrics are served on their own listener, http://{addr}/metrics (metrics_listen)"
        ))
        .into_response(),
    }
}

/// The metrics, wherever they are served.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.telemetry.render(state.store.as_ref()).await {
        Ok(text) => {
            let mut resp = text.into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            resp
        }
        Err(e) => ApiError::internal(format!("encoding metrics: {e}")).into_response(),
    }
}

/// `GET /api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    summary = "This document",
    description = "The OpenAPI 3.1 document of every API route, generated from the code.",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOC.get_or_init(|| super::openapi::document().to_json().unwrap_or_default());
    let mut resp = text.clone().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
