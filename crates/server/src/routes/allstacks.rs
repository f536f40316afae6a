//! Allstacks custom CD jobs (seed 003): `POST /webhook/company/{company_id}/cicd_job`.
//!
//! `company_id` is the caller's tenant, by slug or id: a key only ever writes to its own tenant,
//! and any other company is answered 404 whether it exists or not.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cistern_dialects::{allstacks, Inbound as Parsed, ParseOptions};
use cistern_store::{EventStatus, Scope};

use super::ingest::{parse_with, read_body, rejection_error, write_runs, Inbound};
use crate::auth::authenticate;
use crate::error::ApiError;
use crate::AppState;

const ENDPOINT: &str = "/webhook/company/{company_id}/cicd_job";

/// The Allstacks route, under the path its senders already use.
pub fn router() -> super::Api {
    super::Api::new().ingest("allstacks", ENDPOINT, cicd_job)
}

#[utoipa::path(
    post,
    path = "/webhook/company/{company_id}/cicd_job",
    tag = "ingest",
    operation_id = "allstacks_cicd_job",
    summary = "Report a deployment (Allstacks custom CD job)",
    params(("company_id" = String, Path, description = "The key's tenant: its slug or id")),
    request_body(content = super::openapi::AllstacksJob, content_type = "application/json"),
    responses((status = 201, description = "A new run", body = super::openapi::RunWritten), (status = 200, description = "A known run, updated", body = super::openapi::RunWritten), (status = 400, description = "Malformed JSON or broken field rules, each field named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the tenant's rules (an unregistered instance of a strict tenant)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 404, description = "Not the key's company", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn cicd_job(
    State(state): State<AppState>,
    Path(company_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let inbound = Inbound::new(ENDPOINT, "allstacks", &headers);
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
    // The refusal goes to the caller's own events log (so a misconfigured company id is easy to
    // see there), never to the named company's.
    if company_id != tenant.slug && company_id != tenant.id {
        let shown: String = company_id.chars().take(100).collect();
        let err = ApiError::not_found(format!(
            "no company \"{shown}\" for this API key; its company is \"{}\" (POST /webhook/company/{}/cicd_job)",
            tenant.slug, tenant.slug
        ));
        return inbound
            .refuse(&state, Some(&tenant), key_id, &bytes, None, err)
            .await
            .into_response();
    }
    let opts = ParseOptions::new(state.config.max_log_bytes);
    let items = match parse_with(bytes.clone(), move |b| allstacks::parse(b, &opts)).await {
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
    let runs: Vec<_> = items
        .into_iter()
        .filter_map(|item| match item {
            Parsed::Run(r) => Some(*r),
            _ => None,
        })
        .collect();
    let event = inbound.event(
        Some(tenant.id.clone()),
        key_id,
        &bytes,
        EventStatus::Accepted,
        201,
    );
    match write_runs(&state, event, tenant, runs).await {
        Ok(reply) => reply,
        Err(mut e @ cistern_store::StoreError::Rejected(_))
        | Err(mut e @ cistern_store::StoreError::RejectedLogged(..)) => {
            // The instance of an Allstacks job is its CD service.
            if let cistern_store::StoreError::Rejected(errors)
            | cistern_store::StoreError::RejectedLogged(errors, _) = &mut e
            {
                for f in errors.iter_mut() {
                    if f.field == "instance_guid" {
                        f.field = "service_id".into();
                    }
                }
            }
            ApiError::from(e).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
