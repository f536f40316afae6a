//! The Jenkins Job Reporter's endpoints (seed 001): `POST /v1/generic-requests` (JSON envelope)
//! and `POST /v1/generic-requests/multipart` (part `json` with the envelope, optional part `file`
//! with a zip of failure logs). Replies are shaped as the plugin parses them:
//! `{"response_type": …, "payload": "<JSON string>"}`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cistern_core::FieldError;
use cistern_dialects::logzip::{attach_logs, LogZip, ZipLimits};
use cistern_dialects::propelo::{self, PropeloItem};
use cistern_dialects::{ParseOptions, Rejection};
use cistern_store::{EventStatus, Scope, WriteOp};
use serde_json::{json, Value};

use super::ingest::{parse_blocking, parse_with, read_body, rejection_error, Inbound};
use crate::auth::authenticate;
use crate::error::ApiError;
use crate::AppState;

/// Heartbeat interval the plugin is told to use, in seconds.
const HEARTBEAT_SECONDS: u64 = 60;

/// Generic-request routes.
pub fn router() -> super::Api {
    super::Api::new()
        .ingest("jenkins", "/v1/generic-requests", json_request)
        .ingest(
            "jenkins",
            "/v1/generic-requests/multipart",
            multipart_request,
        )
}

#[utoipa::path(
    post,
    path = "/v1/generic-requests",
    tag = "ingest",
    operation_id = "generic_request",
    summary = "Jenkins Job Reporter: a job run, heartbeat or error report",
    request_body(content = super::openapi::PluginEnvelope, content_type = "application/json"),
    responses((status = 200, description = "Stored; the plugin's envelope with the run ids", body = super::openapi::PluginReply), (status = 400, description = "Refused; the plugin's envelope with the error, and the problem members", body = super::openapi::PluginReply), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn json_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, headers, body, false).await
}

#[utoipa::path(
    post,
    path = "/v1/generic-requests/multipart",
    tag = "ingest",
    operation_id = "generic_request_multipart",
    summary = "Jenkins Job Reporter: a job run with a zip of its failure logs",
    request_body(content = super::openapi::PluginForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Stored; the plugin's envelope with the run ids", body = super::openapi::PluginReply), (status = 400, description = "Refused; the plugin's envelope with the error, and the problem members", body = super::openapi::PluginReply), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn multipart_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, headers, body, true).await
}

/// The plugin's reply envelope.
fn envelope(status: StatusCode, request_type: &str, payload: Value) -> Response {
    let body = json!({"response_type": request_type, "payload": payload.to_string()});
    (status, axum::Json(body)).into_response()
}

/// A refusal in the plugin's envelope, with the problem details beside it.
fn refusal(mut err: ApiError, request_type: &str) -> Response {
    let message = if err.errors.is_empty() {
        err.detail.clone()
    } else {
        err.errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut extra = serde_json::Map::new();
    extra.insert("response_type".into(), json!(request_type));
    extra.insert(
        "payload".into(),
        json!(json!({"run_ids": [], "error": message}).to_string()),
    );
    err.extra = Some(extra);
    err.into_response()
}

async fn handle(state: AppState, headers: HeaderMap, body: Body, multipart: bool) -> Response {
    let endpoint = if multipart {
        "/v1/generic-requests/multipart"
    } else {
        "/v1/generic-requests"
    };
    let inbound = Inbound::new(endpoint, "propelo", &headers);
    let caller = match authenticate(&state, &headers, Scope::Ingest).await {
        Ok(c) => c,
        Err(f) => return refusal(inbound.refuse_auth(&state, f).await, "unknown"),
    };
    let tenant = caller.tenant.clone();
    let key_id = Some(caller.key.id.clone());
    let raw = match read_body(&headers, body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return refusal(
                inbound
                    .refuse(&state, Some(&tenant), key_id, &Bytes::new(), None, e)
                    .await,
                "unknown",
            )
        }
    };
    let (envelope_bytes, zip_bytes) = if multipart {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match cistern_dialects::multipart::split(content_type, raw.clone()) {
            Ok(form) => (form.json, form.file),
            Err(e) => {
                let e = ApiError::invalid(vec![e]);
                return refusal(
                    inbound
                        .refuse(&state, Some(&tenant), key_id, &raw, None, e)
                        .await,
                    "unknown",
                );
            }
        }
    } else {
        (raw.clone(), None)
    };
    let opts = ParseOptions::new(state.config.max_log_bytes);
    let cap = state.config.max_log_bytes;
    let limits = ZipLimits {
        max_total_bytes: state.config.max_zip_inflated_bytes,
        ..ZipLimits::default()
    };
    // A small zip can inflate to hundreds of MB: any zip is read on the blocking pool, so the
    // runtime keeps answering (a small envelope alone is parsed inline).
    let has_zip = zip_bytes.is_some();
    let parse = move |b: &[u8]| {
        let mut req = propelo::parse(b, &opts)?;
        let mut missing = Vec::new();
        if let (PropeloItem::JobRun(run), Some(zip)) = (&mut req.item, zip_bytes) {
            let mut zip =
                LogZip::open(zip.to_vec(), limits).map_err(|e| Rejection::Invalid(vec![e]))?;
            missing = attach_logs(run, &mut zip, cap).map_err(|e| Rejection::Invalid(vec![e]))?;
        }
        Ok((req, missing))
    };
    let parsed = if has_zip {
        parse_blocking(envelope_bytes.clone(), parse).await
    } else {
        parse_with(envelope_bytes.clone(), parse).await
    };
    // The events log keeps the envelope (the zip is only the logs, already attached to the run).
    let (req, missing) = match parsed {
        Ok(p) => p,
        Err(rej) => {
            // Only a refused envelope is read a second time, for its request type (the reply
            // names it); an accepted one is parsed once.
            let request_type =
                propelo::request_type_of(&envelope_bytes).unwrap_or_else(|| "unknown".to_owned());
            let err = inbound
                .refuse(
                    &state,
                    Some(&tenant),
                    key_id,
                    &envelope_bytes,
                    Some(request_type.clone()),
                    rejection_error(rej),
                )
                .await;
            return refusal(err, &request_type);
        }
    };
    let mut event = inbound.event(
        Some(tenant.id.clone()),
        key_id,
        &envelope_bytes,
        EventStatus::Accepted,
        200,
    );
    event.request_type = Some(req.request_type.clone());
    match req.item {
        PropeloItem::JobRun(run) => {
            if !missing.is_empty() {
                event.errors = missing
                    .iter()
                    .map(|m| {
                        FieldError::new(
                            "file",
                            format!("log {m:?} named by the run is not in the zip"),
                        )
                    })
                    .collect();
            }
            let warnings = super::ingest::run_warnings(std::slice::from_ref(&*run));
            event.errors.extend(warnings.iter().cloned());
            match state
                .store
                .write(WriteOp::Runs {
                    event,
                    tenant,
                    runs: vec![*run],
                })
                .await
            {
                Ok(out) => {
                    let ids: Vec<&str> = out.runs.iter().map(|r| r.id.as_str()).collect();
                    let error = if missing.is_empty() {
                        Value::Null
                    } else {
                        json!(format!("logs not found in the zip: {}", missing.join(", ")))
                    };
                    let mut payload = json!({"run_ids": ids, "error": error});
                    if !warnings.is_empty() {
                        payload["warnings"] = json!(warnings);
                    }
                    let created = out.runs.first().is_some_and(|r| r.created);
                    crate::ops::limits::IngestNote {
                        dialect: None,
                        outcome: Some(if created { "created" } else { "updated" }),
                    }
                    .attach(envelope(
                        StatusCode::OK,
                        &req.request_type,
                        payload,
                    ))
                }
                Err(e) => refusal(ApiError::from(e), &req.request_type),
            }
        }
        PropeloItem::Heartbeat(hb) => {
            match state
                .store
                .write(WriteOp::Heartbeat {
                    event,
                    tenant,
                    heartbeat: heartbeat_record(hb),
                })
                .await
            {
                Ok(_) => crate::ops::limits::IngestNote {
                    dialect: None,
                    outcome: Some("heartbeat"),
                }
                .attach(envelope(
                    StatusCode::OK,
                    &req.request_type,
                    json!({
                        "success": true,
                        "server_version": env!("CARGO_PKG_VERSION"),
                        "configuration": {"heartbeat_duration": HEARTBEAT_SECONDS},
                    }),
                )),
                Err(e) => refusal(ApiError::from(e), &req.request_type),
            }
        }
        PropeloItem::JobConfigChange(change) => {
            // The plugin reads the reply as a job-run reply: `run_ids`, none here.
            match state
                .store
                .write(WriteOp::JobConfigChange {
                    event,
                    tenant,
                    change: *change,
                })
                .await
            {
                Ok(out) => crate::ops::limits::IngestNote {
                    dialect: None,
                    outcome: Some("config_change"),
                }
                .attach(envelope(
                    StatusCode::OK,
                    &req.request_type,
                    json!({"run_ids": [], "event_id": out.event_id}),
                )),
                Err(e) => refusal(ApiError::from(e), &req.request_type),
            }
        }
        PropeloItem::PluginErrorReport(_) => {
            // Kept in the events log (the body is the report) for the user to read.
            match state
                .store
                .write(WriteOp::Runs {
                    event,
                    tenant,
                    runs: Vec::new(),
                })
                .await
            {
                Ok(out) => crate::ops::limits::IngestNote {
                    dialect: None,
                    outcome: Some("error_report"),
                }
                .attach(envelope(
                    StatusCode::OK,
                    &req.request_type,
                    json!({"success": true, "event_id": out.event_id}),
                )),
                Err(e) => refusal(ApiError::from(e), &req.request_type),
            }
        }
    }
}

fn heartbeat_record(hb: propelo::Heartbeat) -> cistern_store::HeartbeatRecord {
    cistern_store::HeartbeatRecord {
        instance_guid: hb.instance_guid,
        name: hb.name,
        url: hb.url,
        kind: Some("jenkins".into()),
        at: hb.at,
        details: hb.details,
    }
}
