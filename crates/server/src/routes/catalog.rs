//! Pipelines and CI/CD instances: `GET /api/v1/pipelines`, `GET|POST /api/v1/instances`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cistern_dialects::fields::Obj;
use cistern_store::{EventRecord, EventStatus, NewInstance, Scope, WriteOp, WriteOutcome};
use serde_json::{json, Value};

use super::ingest::{json_reply, read_body, rejection_error};
use crate::auth::{authenticate, Reader};
use crate::error::ApiError;
use crate::AppState;

/// Catalog routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/api/v1/pipelines", pipelines)
        .get("/api/v1/instances", instances)
        .ingest("native", "/api/v1/instances", register)
}

#[utoipa::path(
    get,
    path = "/api/v1/pipelines",
    tag = "runs",
    operation_id = "list_pipelines",
    summary = "Pipelines with their run count and last result",
    responses((status = 200, description = "{\"pipelines\": [...]}", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn pipelines(
    State(state): State<AppState>,
    Reader(caller): Reader,
) -> Result<Json<Value>, ApiError> {
    let items = state.store.list_pipelines(&caller.tenant.id).await?;
    Ok(Json(json!({ "pipelines": items })))
}

#[utoipa::path(
    get,
    path = "/api/v1/instances",
    tag = "runs",
    operation_id = "list_instances",
    summary = "CI/CD instances",
    responses((status = 200, description = "{\"instances\": [...]}", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn instances(
    State(state): State<AppState>,
    Reader(caller): Reader,
) -> Result<Json<Value>, ApiError> {
    let items = state.store.list_instances(&caller.tenant.id).await?;
    Ok(Json(json!({ "instances": items })))
}

/// `POST /api/v1/instances` `{"integration_id", "name", "type", "url"?}`: registers an instance.
#[utoipa::path(
    post,
    path = "/api/v1/instances",
    tag = "runs",
    operation_id = "register_instance",
    summary = "Register a CI/CD instance and get its GUID",
    request_body(content = super::openapi::InstanceRegistration, content_type = "application/json"),
    responses((status = 201, description = "The instance, with instance_guid", body = Object), (status = 400, description = "Broken field rules, each named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 409, description = "The GUID is taken", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_admin_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match authenticate(&state, &headers, Scope::Ingest).await {
        Ok(c) => c,
        Err(f) => return f.error.into_response(),
    };
    let bytes = match read_body(&headers, body, state.config.max_admin_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let parsed = cistern_dialects::json::parse(&bytes, "")
        .map_err(cistern_dialects::Rejection::Malformed)
        .and_then(|v| match v {
            Value::Object(m) => cistern_dialects::sei::parse_registration(&Obj::new(&m, "")),
            other => Err(cistern_dialects::Rejection::Invalid(vec![
                cistern_core::FieldError::new(
                    "",
                    format!(
                        "the body must be a JSON object, got {}",
                        cistern_dialects::fields::type_name(&other)
                    ),
                ),
            ])),
        });
    let reg = match parsed {
        Ok(r) => r,
        Err(rej) => return rejection_error(rej).into_response(),
    };
    let received_at = time::OffsetDateTime::now_utc();
    let event = EventRecord {
        tenant_id: Some(caller.tenant.id.clone()),
        endpoint: "/api/v1/instances".into(),
        dialect: "native".into(),
        request_type: None,
        content_type: None,
        body: Arc::from(bytes.as_ref()),
        received_at,
        status: EventStatus::Accepted,
        http_status: 201,
        errors: Vec::new(),
        key_id: Some(caller.key.id.clone()),
        source_id: None,
        dedupe_key: None,
    };
    let op = WriteOp::RegisterInstance {
        event,
        tenant_id: caller.tenant.id.clone(),
        instance: NewInstance {
            guid: reg.guid,
            integration_id: reg.integration_id,
            name: reg.name,
            kind: reg.kind,
            url: reg.url,
        },
    };
    match state.store.write(op).await {
        Ok(WriteOutcome {
            instance: Some(inst),
            ..
        }) => {
            let mut v = serde_json::to_value(&inst).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("instance_guid".into(), json!(inst.guid));
            }
            json_reply(registration_status(&inst, received_at), v)
        }
        Ok(_) => ApiError::internal("a registration returned no instance").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// 201 for an instance this registration created, 200 for the one a registration of the same
/// instance (same integration id, name and type) made before: a new instance is created at the
/// registration's own time.
pub(crate) fn registration_status(
    inst: &cistern_store::Instance,
    received_at: time::OffsetDateTime,
) -> StatusCode {
    if cistern_core::to_millis(inst.created_at) < cistern_core::to_millis(received_at) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}
