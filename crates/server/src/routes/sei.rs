//! Harness SEI custom CI/CD endpoint (seed 000): `POST /v1/custom-cicd` and its aliases.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cistern_dialects::{sei, Inbound as Parsed, ParseOptions};
use cistern_store::{EventStatus, NewInstance, Scope, WriteOp, WriteOutcome};
use serde_json::json;

use super::ingest::{json_reply, parse_with, read_body, rejection_error, write_runs, Inbound};
use crate::auth::authenticate;
use crate::error::ApiError;
use crate::AppState;

/// The SEI routes, under the paths senders already use.
pub fn router() -> super::Api {
    let mut r = super::Api::new();
    for path in PATHS {
        r = r.ingest("sei", path, custom_cicd);
    }
    r
}

/// The endpoint and its aliases under the prefixes senders use.
pub const PATHS: [&str; 5] = [
    "/v1/custom-cicd",
    "/sei/api/v1/custom-cicd",
    "/gratis/sei/api/v1/custom-cicd",
    "/prod1/sei/api/v1/custom-cicd",
    "/gateway/sei/api/v1/custom-cicd",
];

const ENDPOINT: &str = "/v1/custom-cicd";

#[utoipa::path(
    post,
    path = "/v1/custom-cicd",
    tag = "ingest",
    operation_id = "custom_cicd",
    summary = "Report a job run (Harness SEI custom CI/CD), or register an instance",
    request_body(content = super::openapi::SeiRun, content_type = "application/json"),
    responses((status = 201, description = "A new run (or a registered instance)", body = super::openapi::RunWritten), (status = 200, description = "A known run, updated", body = super::openapi::RunWritten), (status = 400, description = "Malformed JSON or broken field rules, each field named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the tenant's rules (an unregistered instance of a strict tenant)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 409, description = "Registration: the GUID is taken", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn custom_cicd(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let inbound = Inbound::new(ENDPOINT, "sei", &headers);
    let caller = match authenticate(&state, &headers, Scope::Ingest).await {
        Ok(c) => c,
        Err(f) => return inbound.refuse_auth(&state, f).await.into_response(),
    };
    let tenant = caller.tenant.clone();
    let key_id = Some(caller.key.id.clone());
    let bytes = match read_body(&headers, body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let partial = axum::body::Bytes::new();
            return inbound
                .refuse(&state, Some(&tenant), key_id, &partial, None, e)
                .await
                .into_response();
        }
    };
    let opts = ParseOptions::new(state.config.max_log_bytes);
    let items = match parse_with(bytes.clone(), move |b| sei::parse(b, &opts)).await {
        Ok(items) => items,
        Err(rej) => {
            return inbound
                .refuse(
                    &state,
                    Some(&tenant),
                    key_id,
                    &bytes,
                    None,
                    rejection_error(rej),
                )
                .await
                .into_response()
        }
    };
    let mut runs = Vec::with_capacity(items.len());
    let mut registration = None;
    for item in items {
        match item {
            Parsed::Run(r) => runs.push(*r),
            Parsed::RegisterInstance(reg) => registration = Some(reg),
            // The SEI parser yields runs and registrations only.
            _ => {}
        }
    }
    if let Some(reg) = registration {
        let event = inbound.event(
            Some(tenant.id.clone()),
            key_id,
            &bytes,
            EventStatus::Accepted,
            201,
        );
        let op = WriteOp::RegisterInstance {
            event,
            tenant_id: tenant.id.clone(),
            instance: NewInstance {
                guid: reg.guid,
                integration_id: reg.integration_id,
                name: reg.name,
                kind: reg.kind,
                url: reg.url,
            },
        };
        return match state.store.write(op).await {
            Ok(WriteOutcome {
                instance: Some(inst),
                event_id,
                ..
            }) => crate::ops::limits::IngestNote {
                dialect: None,
                outcome: Some("registered"),
            }
            .attach(json_reply(
                super::catalog::registration_status(&inst, inbound.received_at),
                json!({
                    "id": inst.guid,
                    "instance_guid": inst.guid,
                    "guid": inst.guid,
                    "name": inst.name,
                    "type": inst.kind,
                    "integration_id": inst.integration_id,
                    "event_id": event_id,
                }),
            )),
            Ok(_) => ApiError::internal("a registration returned no instance").into_response(),
            Err(e) => ApiError::from(e).into_response(),
        };
    }
    let event = inbound.event(
        Some(tenant.id.clone()),
        key_id,
        &bytes,
        EventStatus::Accepted,
        201,
    );
    write_runs(&state, event, tenant, runs)
        .await
        .unwrap_or_else(|e| ApiError::from(e).into_response())
}
