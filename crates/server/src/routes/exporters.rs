//! Trace exporters (admin scope): `GET|POST /api/v1/exporters`, `DELETE /api/v1/exporters/{id}`.
//!
//! An exporter is a subscription of the `otlp` format to `run.completed`: each finished run goes
//! to an OTLP/HTTP receiver as a trace, through the same outbox as every notification (durable,
//! retried, its attempts in `GET /api/v1/subscriptions/{id}/deliveries`, its URL checked like a
//! subscription's).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use cistern_core::FieldError;
use cistern_store::{DeliveryFormat, Subscription, TargetHeader};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::ingest::json_reply;
use super::subscriptions::{
    bool_field, build_subscription, object_body, text_field, SubscriptionInput,
};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::AppState;

/// Exporter routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/api/v1/exporters", list)
        .post("/api/v1/exporters", create)
        .delete("/api/v1/exporters/{id}", remove)
}

/// The kinds of exporter.
pub const KINDS: [&str; 1] = ["otlp"];

/// An exporter to create.
#[derive(Serialize, ToSchema)]
pub struct ExporterFields {
    /// `otlp` (OTLP/HTTP protobuf traces).
    pub kind: String,
    /// The receiver's traces endpoint, e.g. `https://otel.example/v1/traces` (http or https;
    /// public addresses unless `allow_private_targets`).
    pub url: String,
    /// Headers added to every request: `{"Name": "value"}`, or a list of `"Name: value"`. A value
    /// may name a secret, `{{secret.NAME}}` (optionally `| base64`), so credentials stay
    /// encrypted.
    pub headers: Option<Value>,
    /// Optional named secret that also signs each request (Standard Webhooks headers).
    pub secret: Option<String>,
    /// Only failed runs.
    pub only_failures: Option<bool>,
    /// Pipeline glob.
    pub pipeline: Option<String>,
    /// Branch glob.
    pub branch: Option<String>,
    /// Project.
    pub project: Option<String>,
}

const FIELDS: [&str; 8] = [
    "kind",
    "url",
    "headers",
    "secret",
    "only_failures",
    "pipeline",
    "branch",
    "project",
];

/// An exporter as the API shows it.
pub fn exporter_json(s: &Subscription) -> Value {
    json!({
        "id": s.id,
        "kind": s.format.as_str(),
        "url": s.url,
        "headers": s.headers.iter().map(|h| format!("{}: {}", h.name, h.value)).collect::<Vec<_>>(),
        "secret": (!s.secret_name.is_empty()).then_some(&s.secret_name),
        "only_failures": s.only_failures,
        "pipeline": s.pipeline,
        "branch": s.branch,
        "project": s.project,
        "enabled": s.enabled,
        "disabled_reason": s.disabled_reason,
        "created_at": crate::delivery::format::rfc3339(s.created_at),
        "deliveries": format!("/api/v1/subscriptions/{}/deliveries", s.id),
    })
}

/// Reads `headers`: an object of name → value, or a list of `"Name: value"` lines.
pub(super) fn headers_field(m: &Map<String, Value>) -> Result<Vec<TargetHeader>, ApiError> {
    let bad = || {
        ApiError::field(
            "headers",
            "must be an object of header name to value, or a list of \"Name: value\"",
        )
    };
    match m.get("headers") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| {
                Ok(TargetHeader {
                    name: k.clone(),
                    value: v.as_str().ok_or_else(bad)?.to_owned(),
                })
            })
            .collect(),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            let mut errors = Vec::new();
            for (i, v) in a.iter().enumerate() {
                match v.as_str().map(crate::delivery::headers::parse_line) {
                    Some(Ok(h)) => out.push(h),
                    Some(Err(e)) => errors.push(FieldError::new(format!("headers[{i}]"), e)),
                    None => errors.push(FieldError::new(
                        format!("headers[{i}]"),
                        "must be a string \"Name: value\"",
                    )),
                }
            }
            if errors.is_empty() {
                Ok(out)
            } else {
                Err(ApiError::invalid(errors))
            }
        }
        Some(_) => Err(bad()),
    }
}

/// Checks an exporter's fields and builds its subscription (shared with the CLI).
pub async fn build_exporter(
    store: &dyn cistern_store::Store,
    tenant_id: &str,
    kind: &str,
    mut input: SubscriptionInput,
    targets: &crate::delivery::target::TargetPolicy,
) -> Result<Subscription, ApiError> {
    let kind = kind.trim().to_ascii_lowercase();
    if !KINDS.contains(&kind.as_str()) {
        return Err(ApiError::field(
            "kind",
            format!("unknown kind {kind:?}; kinds: {}", KINDS.join(", ")),
        ));
    }
    input.format = Some(DeliveryFormat::Otlp.as_str().into());
    input.events = Some(vec!["run.completed".into()]);
    let mut sub = build_subscription(store, tenant_id, input, targets, None).await?;
    sub.id = format!("exp_{}", uuid::Uuid::now_v7().simple());
    Ok(sub)
}

#[utoipa::path(
    get,
    path = "/api/v1/exporters",
    tag = "exporters",
    operation_id = "list_exporters",
    summary = "Trace exporters",
    responses((status = 200, description = "{\"exporters\": [...]}", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = state
        .store
        .list_subscriptions(&caller.tenant.id)
        .await?
        .iter()
        .filter(|s| s.format == DeliveryFormat::Otlp)
        .map(exporter_json)
        .collect();
    Ok(Json(json!({ "exporters": items })))
}

#[utoipa::path(
    post,
    path = "/api/v1/exporters",
    tag = "exporters",
    operation_id = "create_exporter",
    summary = "Export finished runs as OpenTelemetry traces",
    request_body(content = ExporterFields, content_type = "application/json"),
    responses((status = 201, description = "The exporter", body = Object), (status = 400, description = "Every broken rule, each field named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_admin_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let m = object_body(&headers, body, state.config.max_admin_body_bytes).await?;
    let unknown: Vec<FieldError> = m
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                k.as_str(),
                format!("unknown field; fields: {}", FIELDS.join(", ")),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(unknown));
    }
    let kind = text_field(&m, "kind")?.ok_or_else(|| {
        ApiError::field("kind", format!("is required; kinds: {}", KINDS.join(", ")))
    })?;
    let input = SubscriptionInput {
        url: text_field(&m, "url")?.unwrap_or_default(),
        secret: text_field(&m, "secret")?.unwrap_or_default(),
        only_failures: bool_field(&m, "only_failures")?.unwrap_or(false),
        pipeline: text_field(&m, "pipeline")?,
        branch: text_field(&m, "branch")?,
        project: text_field(&m, "project")?,
        headers: headers_field(&m)?,
        ..Default::default()
    };
    let sub = build_exporter(
        state.store.as_ref(),
        &caller.tenant.id,
        &kind,
        input,
        &state.delivery.targets,
    )
    .await?;
    state.store.create_subscription(&sub).await?;
    Ok(json_reply(StatusCode::CREATED, exporter_json(&sub)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/exporters/{id}",
    tag = "exporters",
    operation_id = "delete_exporter",
    summary = "Delete an exporter with its deliveries",
    params(("id" = String, Path, description = "Exporter id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No exporter of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = &caller.tenant.id;
    match state.store.get_subscription(tenant, &id).await? {
        Some(s) if s.format == DeliveryFormat::Otlp => {
            state.store.delete_subscription(tenant, &id).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::not_found(format!("no exporter {id:?}"))),
    }
}
