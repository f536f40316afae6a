//! Harness SEI custom CI/CD endpoint (seed 000): `POST /v1/custom-cicd` and its aliases.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cistern_dialects::{sei, Inbound as Parsed, ParseOptions};
use cistern_store::{EventStatus, NewInstance, Scope, WriteOp, WriteOutcome};
use serde_json::json;

use super::ingest::{json_reply, parse_with, read_body, rejection_error, write_runs, Inbound};
use crate::auth::authenticate;
use crate::error::ApiError;
use crate::AppState;

/// The SEI routes, under the paths senders already use.
pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for path in [
        "/v1/custom-cicd",
        "/sei/api/v1/custom-cicd",
        "/gratis/sei/api/v1/custom-cicd",
        "/prod1/sei/api/v1/custom-cicd",
        "/gateway/sei/api/v1/custom-cicd",
    ] {
        r = r.route(path, post(custom_cicd));
    }
    r
}

const ENDPOINT: &str = "/v1/custom-cicd";

async fn custom_cicd(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
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
            }) => json_reply(
                StatusCode::CREATED,
                json!({
                    "id": inst.guid,
                    "instance_guid": inst.guid,
                    "guid": inst.guid,
                    "name": inst.name,
                    "type": inst.kind,
                    "integration_id": inst.integration_id,
                    "event_id": event_id,
                }),
            ),
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
