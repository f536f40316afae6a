//! Triggers (seed 002).
//!
//! Firing, as Harness's custom webhooks are called: `POST …/api/webhook/custom` (the reply's
//! `data` is the event's correlation id), `…/custom/v2` and `…/custom/{token}/v3` (`data` is
//! `{eventCorrelationId, apiUrl, uiUrl, uiSetupUrl}`), with the `accountIdentifier`,
//! `orgIdentifier`, `projectIdentifier`, `pipelineIdentifier` and `triggerIdentifier` query
//! parameters, under the prefixes `/gateway`, `/pipeline`, `/gateway/pipeline` or none. An API
//! key with the `trigger` scope is needed, except for a trigger created with `auth: none` (the
//! seed's keyless curl) and on the token URL of a trigger that allows it.
//!
//! Following: `GET …/api/webhook/triggerExecutionDetails/{eventCorrelationId}?accountIdentifier=`
//! (and `triggerProcessingDetails?eventId=`). With a key (`read` or `trigger`), any event of the
//! key's tenant; an unknown id answers `eventFound: false`. Without a key, only events fired
//! without one (through a token URL or a keyless trigger): their unguessable id is the
//! capability, as the token was, and names that one event only.
//!
//! Managing (admin): `GET|POST /api/v1/triggers`, `GET|PATCH|DELETE /api/v1/triggers/{id}`,
//! `POST /api/v1/triggers/{id}/rotate-token`, `GET /api/v1/triggers/{id}/events`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cistern_core::FieldError;
use cistern_store::{
    DispatchState, NewTriggerEvent, Scope, Tenant, Trigger, TriggerAuth, TriggerEvent, TriggerKey,
};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::ingest::{json_reply, read_body};
use super::subscriptions::{bool_field, object_body, text_field};
use crate::auth::{authenticate, key_from_headers, Admin, Caller};
use crate::error::ApiError;
use crate::triggers::details::{self, *};
use crate::triggers::{
    build_trigger, issue_token, presets::PresetInput, token_matches, trigger_json, TriggerInput,
};
use crate::AppState;

/// The Harness custom-webhook paths, under each prefix Harness callers use (none, `/gateway`,
/// `/pipeline`, `/gateway/pipeline`); the first of each is the documented one.
pub const FIRE_V1: [&str; 4] = [
    "/gateway/api/webhook/custom",
    "/api/webhook/custom",
    "/pipeline/api/webhook/custom",
    "/gateway/pipeline/api/webhook/custom",
];
/// `custom/v2`.
pub const FIRE_V2: [&str; 4] = [
    "/gateway/pipeline/api/webhook/custom/v2",
    "/api/webhook/custom/v2",
    "/gateway/api/webhook/custom/v2",
    "/pipeline/api/webhook/custom/v2",
];
/// `custom/{token}/v3` (unauthenticated, for triggers that allow a token URL).
pub const FIRE_V3: [&str; 4] = [
    "/gateway/pipeline/api/webhook/custom/{token}/v3",
    "/api/webhook/custom/{token}/v3",
    "/gateway/api/webhook/custom/{token}/v3",
    "/pipeline/api/webhook/custom/{token}/v3",
];
/// `triggerExecutionDetails/{id}`.
pub const EXECUTION_DETAILS: [&str; 4] = [
    "/gateway/pipeline/api/webhook/triggerExecutionDetails/{id}",
    "/api/webhook/triggerExecutionDetails/{id}",
    "/gateway/api/webhook/triggerExecutionDetails/{id}",
    "/pipeline/api/webhook/triggerExecutionDetails/{id}",
];
/// `triggerProcessingDetails`.
pub const PROCESSING_DETAILS: [&str; 4] = [
    "/gateway/pipeline/api/webhook/triggerProcessingDetails",
    "/api/webhook/triggerProcessingDetails",
    "/gateway/api/webhook/triggerProcessingDetails",
    "/pipeline/api/webhook/triggerProcessingDetails",
];

/// Trigger routes.
pub fn router() -> super::Api {
    let mut r = super::Api::new()
        .get("/api/v1/triggers", list)
        .post("/api/v1/triggers", create)
        .get("/api/v1/triggers/{id}", one)
        .patch("/api/v1/triggers/{id}", update)
        .delete("/api/v1/triggers/{id}", remove)
        .post("/api/v1/triggers/{id}/rotate-token", rotate_token)
        .get("/api/v1/triggers/{id}/events", events);
    for i in 0..4 {
        r = r
            .post(FIRE_V1[i], fire_v1)
            .post(FIRE_V2[i], fire_v2)
            .post(FIRE_V3[i], fire_v3)
            .get(EXECUTION_DETAILS[i], execution_details)
            .get(PROCESSING_DETAILS[i], processing_details);
    }
    r
}

// ---- Harness envelopes ---------------------------------------------------------------------

/// The request's id (set by the request-id layer): Harness's `correlationId`.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn success<T: serde::Serialize>(headers: &HeaderMap, data: T) -> Response {
    let envelope = details::Envelope {
        status: "SUCCESS",
        data,
        meta_data: None,
        correlation_id: request_id(headers),
    };
    (StatusCode::OK, Json(envelope)).into_response()
}

/// A refusal: a problem+json body (the field and the rule) that also carries Harness's members:
/// `code` (the status word), `message`, `data` (the event's correlation id when the refusal was
/// recorded, to follow it like any event), `metaData`, `correlationId`.
fn refusal(
    headers: &HeaderMap,
    status: StatusCode,
    word: &'static str,
    errors: Vec<FieldError>,
    detail: String,
    event: Option<&str>,
) -> ApiError {
    let mut e = if errors.is_empty() {
        ApiError::new(
            status,
            "trigger-refused",
            "The trigger was not fired",
            detail.clone(),
        )
    } else {
        let mut e = ApiError::invalid(errors);
        e.status = status;
        e.kind = "trigger-refused";
        e.title = "The trigger was not fired".into();
        e
    };
    let mut extra = Map::new();
    extra.insert("code".into(), json!(word));
    extra.insert("message".into(), json!(detail));
    extra.insert("data".into(), json!(event));
    extra.insert("metaData".into(), Value::Null);
    extra.insert("correlationId".into(), json!(request_id(headers)));
    e.extra = Some(extra);
    e
}

fn auth_failed(headers: &HeaderMap, detail: impl Into<String>) -> ApiError {
    refusal(
        headers,
        StatusCode::UNAUTHORIZED,
        TRIGGER_AUTHENTICATION_FAILED,
        Vec::new(),
        detail.into(),
        None,
    )
}

/// The refusal of a keyless call the trigger does not take: one answer whether the account,
/// the trigger or the token is wrong, or the trigger asks for a key.
fn keyless_refused(headers: &HeaderMap, version: Version) -> ApiError {
    auth_failed(
        headers,
        if version == Version::V3 {
            "the token URL is not valid, or the trigger does not allow calls without an API key (allow_token)"
        } else {
            "no API key: send `X-Api-Key: <key>` (or `Authorization: Bearer <key>`) with a key that has the `trigger` scope (`cistern keys create --name ci --scopes trigger`); a trigger created with `--auth none` takes calls without a key, as does the token URL of one that allows it"
        },
    )
}

// ---- firing --------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
    V3,
}

#[utoipa::path(post, path = "/gateway/api/webhook/custom", tag = "triggers", operation_id = "trigger_custom_webhook",
    summary = "Fire a custom-webhook trigger (Harness v1): stores the event, answers its eventCorrelationId; no key needed for a trigger with `auth: none`",
    params(("accountIdentifier" = String, Query, description = "The account: the tenant slug or id"), ("orgIdentifier" = String, Query, description = "Organization identifier"), ("projectIdentifier" = String, Query, description = "Project identifier"), ("pipelineIdentifier" = String, Query, description = "Pipeline identifier"), ("triggerIdentifier" = String, Query, description = "Trigger identifier")), request_body(content = Object, description = "Any JSON body (`{}` allowed): the payload the target template can use"),
    responses((status = 200, description = "`{status: SUCCESS, data: <eventCorrelationId>, metaData, correlationId}`", body = Object), (status = 404, description = "Unknown identifiers or no enabled trigger (NO_ENABLED_CUSTOM_TRIGGER_FOUND)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 400, description = "Invalid payload or missing identifiers", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key (and the trigger asks for one: it was not created with `auth: none`), or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn fire_v1(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    fire(state, Version::V1, None, q, headers, body).await
}

#[utoipa::path(post, path = "/gateway/pipeline/api/webhook/custom/v2", tag = "triggers", operation_id = "trigger_custom_webhook_v2",
    summary = "Fire a custom-webhook trigger (Harness v2): `data` carries the eventCorrelationId and its URLs",
    params(("accountIdentifier" = String, Query, description = "The account: the tenant slug or id"), ("orgIdentifier" = String, Query, description = "Organization identifier"), ("projectIdentifier" = String, Query, description = "Project identifier"), ("pipelineIdentifier" = String, Query, description = "Pipeline identifier"), ("triggerIdentifier" = String, Query, description = "Trigger identifier")), request_body(content = Object, description = "Any JSON body"),
    responses((status = 200, description = "`{status: SUCCESS, data: {eventCorrelationId, apiUrl, uiUrl, uiSetupUrl}}`", body = Object), (status = 404, description = "Unknown identifiers or no enabled trigger", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key (and the trigger asks for one: it was not created with `auth: none`), or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn fire_v2(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    fire(state, Version::V2, None, q, headers, body).await
}

#[utoipa::path(post, path = "/gateway/pipeline/api/webhook/custom/{token}/v3", tag = "triggers", operation_id = "trigger_custom_webhook_token",
    summary = "Fire a trigger through its secret token URL (no API key; the trigger must allow it)", security(()),
    params(("token" = String, Path, description = "The trigger's secret token")), request_body(content = Object, description = "Any JSON body"),
    responses((status = 200, description = "As v2", body = Object), (status = 404, description = "Unknown token or disabled trigger", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn fire_v3(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    fire(state, Version::V3, Some(token), q, headers, body).await
}

const PARAMS: [&str; 5] = [
    "accountIdentifier",
    "orgIdentifier",
    "projectIdentifier",
    "pipelineIdentifier",
    "triggerIdentifier",
];

fn matches_account(t: &Tenant, account: &str) -> bool {
    account == t.slug || account == t.id
}

async fn fire(
    state: AppState,
    version: Version,
    token: Option<String>,
    q: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let param = |n: &str| {
        q.get(n)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let missing: Vec<FieldError> = PARAMS
        .iter()
        .filter(|n| param(n).is_none())
        .map(|n| FieldError::new(*n, "is required (a query parameter)"))
        .collect();
    if !missing.is_empty() {
        let detail = format!(
            "the query names no {}; the URL is …/api/webhook/custom?accountIdentifier=<tenant>&orgIdentifier=…&projectIdentifier=…&pipelineIdentifier=…&triggerIdentifier=…",
            missing.iter().map(|e| e.field.as_str()).collect::<Vec<_>>().join(", ")
        );
        return Err(refusal(
            &headers,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            missing,
            detail,
            None,
        ));
    }
    let account = param("accountIdentifier").unwrap_or_default();
    let key = TriggerKey {
        org: param("orgIdentifier").unwrap_or_default(),
        project: param("projectIdentifier").unwrap_or_default(),
        pipeline: param("pipelineIdentifier").unwrap_or_default(),
        trigger: param("triggerIdentifier").unwrap_or_default(),
    };

    // Who calls: a key with the trigger scope; or nobody, for a trigger that asks for no key
    // (`auth: none`) or through the token URL of one that allows it (checked below).
    let caller: Option<Caller> = if key_from_headers(&headers).is_some() {
        match authenticate(&state, &headers, Scope::Trigger).await {
            Ok(c) => Some(c),
            Err(f) if f.error.status == StatusCode::FORBIDDEN => {
                return Err(refusal(
                    &headers,
                    StatusCode::FORBIDDEN,
                    TRIGGER_AUTHENTICATION_FAILED,
                    Vec::new(),
                    f.error.detail.clone(),
                    None,
                ));
            }
            Err(f) => return Err(auth_failed(&headers, f.error.detail.clone())),
        }
    } else {
        None
    };
    let tenant = match &caller {
        Some(c) => {
            if !matches_account(&c.tenant, &account) {
                let shown: String = account.chars().take(100).collect();
                return Err(refusal(
                    &headers,
                    StatusCode::NOT_FOUND,
                    NO_ENABLED_CUSTOM_TRIGGER_FOUND_FOR_ACCOUNT,
                    vec![FieldError::new("accountIdentifier", format!("{shown:?} is not this key's account; use your tenant's slug ({:?}) or id", c.tenant.slug))],
                    format!("no enabled custom trigger found for account {shown:?}"),
                    None,
                ));
            }
            c.tenant.clone()
        }
        None => {
            let t = match state.store.tenant_by_slug(&account).await? {
                Some(t) => Some(t),
                None => state.store.tenant_by_id(&account).await?,
            };
            // One answer for every wrong part: a keyless call reveals nothing to a guesser.
            t.ok_or_else(|| keyless_refused(&headers, version))?
        }
    };
    let trigger = state.store.find_trigger(&tenant.id, &key).await?;
    if caller.is_none() {
        let allowed = match (&trigger, &token) {
            (Some(t), Some(token)) => {
                token_matches(t, token) && (t.allow_token || t.auth == TriggerAuth::None)
            }
            (Some(t), None) => t.auth == TriggerAuth::None,
            (None, _) => false,
        };
        if !allowed {
            return Err(keyless_refused(&headers, version));
        }
    } else if let (Some(token), Some(t)) = (&token, &trigger) {
        if !token_matches(t, token) {
            return Err(auth_failed(
                &headers,
                "the token in the URL is not this trigger's",
            ));
        }
    }

    let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
    let now = OffsetDateTime::now_utc();
    // No body is an empty payload (`curl -X POST <url>` fires too).
    let payload_text = if bytes.iter().all(u8::is_ascii_whitespace) {
        "{}".to_owned()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let record = |state_: DispatchState,
                  refusal_word: Option<&'static str>,
                  message: String,
                  t: Option<&Trigger>| NewTriggerEvent {
        id: cistern_store::new_correlation_id(),
        tenant_id: tenant.id.clone(),
        trigger_id: t.map(|t| t.id.clone()),
        key: key.clone(),
        state: state_,
        refusal: refusal_word.map(str::to_owned),
        message: Some(message),
        payload: payload_text.clone(),
        target: t.map(|t| t.target.clone()),
        key_id: caller.as_ref().map(|c| c.key.id.clone()),
        created_at: now,
    };

    let Some(trigger) = trigger else {
        let msg = format!(
            "No enabled custom trigger found: there is no trigger {:?} for pipeline {:?} in org {:?}, project {:?}",
            key.trigger, key.pipeline, key.org, key.project
        );
        let id = keep_refusal(
            &state,
            record(
                DispatchState::Refused,
                Some(NO_ENABLED_CUSTOM_TRIGGER_FOUND),
                msg.clone(),
                None,
            ),
        )
        .await;
        return Err(refusal(
            &headers,
            StatusCode::NOT_FOUND,
            NO_ENABLED_CUSTOM_TRIGGER_FOUND,
            vec![FieldError::new("triggerIdentifier", "no trigger has these identifiers; list them with GET /api/v1/triggers or `cistern triggers list`")],
            msg,
            id.as_deref(),
        ));
    };
    if !trigger.enabled {
        let msg = format!(
            "No enabled custom trigger found: the trigger {:?} is disabled; enable it (`cistern triggers enable {}`)",
            key.trigger, trigger.id
        );
        let id = keep_refusal(
            &state,
            record(
                DispatchState::Refused,
                Some(NO_ENABLED_CUSTOM_TRIGGER_FOUND),
                msg.clone(),
                Some(&trigger),
            ),
        )
        .await;
        return Err(refusal(
            &headers,
            StatusCode::CONFLICT,
            NO_ENABLED_CUSTOM_TRIGGER_FOUND,
            vec![FieldError::new(
                "triggerIdentifier",
                "this trigger is disabled",
            )],
            msg,
            id.as_deref(),
        ));
    }
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        if let Err(e) = cistern_dialects::json::parse(&bytes, "") {
            let msg = format!("Invalid payload: the body must be JSON ({})", e.message);
            let id = keep_refusal(
                &state,
                record(
                    DispatchState::Refused,
                    Some(INVALID_PAYLOAD),
                    msg.clone(),
                    Some(&trigger),
                ),
            )
            .await;
            return Err(refusal(
                &headers,
                StatusCode::BAD_REQUEST,
                INVALID_PAYLOAD,
                vec![e],
                msg,
                id.as_deref(),
            ));
        }
    }
    let event = record(
        DispatchState::Pending,
        None,
        cistern_store::triggers::QUEUED_MESSAGE.to_owned(),
        Some(&trigger),
    );
    state.store.create_trigger_event(&event).await?;
    tracing::info!(event = %event.id, trigger = %trigger.id, "trigger fired");
    match version {
        Version::V1 => Ok(success(&headers, event.id)),
        Version::V2 | Version::V3 => {
            let base = &state.delivery.public_url;
            Ok(success(
                &headers,
                Fired {
                    api_url: format!("{base}/gateway/pipeline/api/webhook/triggerExecutionDetails/{}?accountIdentifier={}", event.id, account),
                    ui_url: format!("{base}/admin/triggers#{}", trigger.id),
                    ui_setup_url: format!("{base}/api/v1/triggers/{}", trigger.id),
                    event_correlation_id: event.id,
                },
            ))
        }
    }
}

/// `data` of the v2 and v3 replies.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Fired {
    event_correlation_id: String,
    api_url: String,
    ui_url: String,
    ui_setup_url: String,
}

/// Records a refused call (so it can be followed like any event); its id, when recorded.
async fn keep_refusal(state: &AppState, e: NewTriggerEvent) -> Option<String> {
    match state.store.create_trigger_event(&e).await {
        Ok(()) => Some(e.id),
        Err(err) => {
            tracing::error!(error = %err, "could not record a refused trigger call");
            None
        }
    }
}

// ---- following -----------------------------------------------------------------------------

/// The event `id` if the caller may read it: `Ok(None)` answers `eventFound: false`.
async fn readable_event(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    account: &str,
) -> Result<Option<TriggerEvent>, ApiError> {
    let found = if cistern_store::is_correlation_id(id) {
        state.store.trigger_event(id).await?
    } else {
        None
    };
    if key_from_headers(headers).is_some() {
        let caller = match authenticate(state, headers, Scope::Read).await {
            Ok(c) => c,
            Err(f) if f.error.status == StatusCode::FORBIDDEN => {
                authenticate(state, headers, Scope::Trigger)
                    .await
                    .map_err(|_| f.error)?
            }
            Err(f) => return Err(f.error),
        };
        return Ok(found.filter(|e| {
            e.tenant_id == caller.tenant.id && matches_account(&caller.tenant, account)
        }));
    }
    // No key: only an event fired through a token URL, named with its own account.
    if let Some(e) = found.filter(|e| e.key_id.is_none()) {
        if let Some(t) = state.store.tenant_by_id(&e.tenant_id).await? {
            if matches_account(&t, account) {
                return Ok(Some(e));
            }
        }
    }
    Err(ApiError::unauthorized(
        "no API key: send `X-Api-Key: <key>` (a key with the read or trigger scope); only events fired through a token URL can be read without one",
    ))
}

fn account_param(q: &HashMap<String, String>) -> Result<String, ApiError> {
    q.get("accountIdentifier")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::field(
                "accountIdentifier",
                "is required (a query parameter): your tenant's slug or id",
            )
        })
}

#[utoipa::path(get, path = "/gateway/pipeline/api/webhook/triggerExecutionDetails/{id}", tag = "triggers", operation_id = "trigger_execution_details",
    summary = "What happened to a trigger event, and the status of the pipeline execution it started",
    params(("id" = String, Path, description = "The eventCorrelationId"), ("accountIdentifier" = Option<String>, Query, description = "The account")),
    responses((status = 200, description = "`webhookProcessingDetails` and `executionDetails.pipelineExecutionSummary`; `eventFound: false` for an unknown id", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn execution_details(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let account = account_param(&q)?;
    let data = match readable_event(&state, &headers, &id, &account).await? {
        Some(e) => details::ExecutionData {
            webhook_processing_details: details::processing_details(&e, &account),
            execution_details: details::execution_details(
                &e,
                OffsetDateTime::now_utc(),
                state.delivery.trigger_expire_after,
                &state.delivery.public_url,
            ),
        },
        None => details::ExecutionData {
            webhook_processing_details: details::not_found(&id, &account),
            execution_details: None,
        },
    };
    Ok(success(&headers, data))
}

#[utoipa::path(get, path = "/gateway/pipeline/api/webhook/triggerProcessingDetails", tag = "triggers", operation_id = "trigger_processing_details",
    summary = "What happened to a trigger event (by `eventId`)",
    params(("eventId" = String, Query, description = "The eventCorrelationId"), ("accountIdentifier" = Option<String>, Query, description = "The account")),
    responses((status = 200, description = "The processing details; `eventFound: false` for an unknown id", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn processing_details(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let account = account_param(&q)?;
    let id = q
        .get("eventId")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::field(
                "eventId",
                "is required (a query parameter): the eventCorrelationId",
            )
        })?;
    let data = match readable_event(&state, &headers, &id, &account).await? {
        Some(e) => details::processing_details(&e, &account),
        None => details::not_found(&id, &account),
    };
    Ok(success(&headers, data))
}

// ---- managing ------------------------------------------------------------------------------

const KNOWN_FIELDS: [&str; 18] = [
    "org",
    "project",
    "pipeline",
    "trigger",
    "url",
    "method",
    "headers",
    "body",
    "preset",
    "repo",
    "workflow",
    "ref",
    "project_id",
    "token_secret",
    "allow_token",
    "enabled",
    "api_url",
    "auth",
];

/// `auth`: `key` (the default) or `none`.
fn auth_field(m: &Map<String, Value>) -> Result<Option<TriggerAuth>, ApiError> {
    match text_field(m, "auth")? {
        None => Ok(None),
        Some(s) => TriggerAuth::parse(&s).map(Some).ok_or_else(|| {
            ApiError::field(
                "auth",
                format!("{s:?} is not accepted; auth is \"key\" (calls need an API key with the trigger scope, the default) or \"none\" (anyone with the webhook URL fires it, as in the seed's curl)"),
            )
        }),
    }
}

fn unknown_fields(m: &Map<String, Value>) -> Result<(), ApiError> {
    let unknown: Vec<FieldError> = m
        .keys()
        .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                k.as_str(),
                format!("unknown field; fields: {}", KNOWN_FIELDS.join(", ")),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(unknown))
    }
}

/// `headers`: a list of `"Name: value"` strings or `{"name", "value"}` objects.
fn headers_field(m: &Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    let bad = || {
        ApiError::field(
            "headers",
            "must be a list of \"Name: value\" strings or {\"name\", \"value\"} objects",
        )
    };
    match m.get("headers") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|h| match h {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) => match (
                    o.get("name").and_then(Value::as_str),
                    o.get("value").and_then(Value::as_str),
                ) {
                    (Some(n), Some(v)) => Ok(format!("{n}: {v}")),
                    _ => Err(bad()),
                },
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

fn preset_field(m: &Map<String, Value>) -> Result<Option<PresetInput>, ApiError> {
    let Some(kind) = text_field(m, "preset")?.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    Ok(Some(PresetInput {
        kind,
        url: None,
        repo: text_field(m, "repo")?,
        workflow: text_field(m, "workflow")?,
        project_id: text_field(m, "project_id")?,
        git_ref: text_field(m, "ref")?,
        token_secret: text_field(m, "token_secret")?,
    }))
}

fn show(state: &AppState, caller: &Caller, t: &Trigger, token: Option<&str>) -> Value {
    trigger_json(t, &state.delivery.public_url, &caller.tenant.slug, token)
}

#[utoipa::path(get, path = "/api/v1/triggers", tag = "triggers", operation_id = "list_triggers", summary = "The tenant's triggers",
    responses((status = 200, description = "`{triggers: [...]}`", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = state
        .store
        .list_triggers(&caller.tenant.id)
        .await?
        .iter()
        .map(|t| show(&state, &caller, t, None))
        .collect();
    Ok(Json(json!({ "triggers": items })))
}

#[utoipa::path(post, path = "/api/v1/triggers", tag = "triggers", operation_id = "create_trigger", summary = "Create a trigger (identifiers, target or preset, flags)",
    request_body(content = Object, description = "`org`, `project`, `pipeline`, `trigger`, and `target` {method, url, headers, body} or `preset`"),
    responses((status = 201, description = "The trigger", body = Object), (status = 400, description = "A field breaks its rule", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 409, description = "Same identifiers as another trigger", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let m = object_body(&headers, body, state.config.max_admin_body_bytes).await?;
    unknown_fields(&m)?;
    let input = TriggerInput {
        org: text_field(&m, "org")?.unwrap_or_default(),
        project: text_field(&m, "project")?.unwrap_or_default(),
        pipeline: text_field(&m, "pipeline")?.unwrap_or_default(),
        trigger: text_field(&m, "trigger")?.unwrap_or_default(),
        url: text_field(&m, "url")?.or(text_field(&m, "api_url")?),
        method: text_field(&m, "method")?,
        headers: headers_field(&m)?.unwrap_or_default(),
        body: text_field(&m, "body")?,
        preset: preset_field(&m)?,
        allow_token: bool_field(&m, "allow_token")?.unwrap_or(false),
        auth: auth_field(&m)?.unwrap_or_default(),
        enabled: bool_field(&m, "enabled")?.unwrap_or(true),
    };
    let mut t = build_trigger(
        state.store.as_ref(),
        &caller.tenant.id,
        input,
        &state.delivery.targets,
        None,
    )
    .await?;
    let token = issue_token(&mut t);
    state.store.create_trigger(&t).await?;
    Ok(json_reply(
        StatusCode::CREATED,
        show(&state, &caller, &t, Some(&token)),
    ))
}

async fn found(state: &AppState, tenant_id: &str, id: &str) -> Result<Trigger, ApiError> {
    state
        .store
        .get_trigger(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no trigger {id:?}")))
}

#[utoipa::path(get, path = "/api/v1/triggers/{id}", tag = "triggers", operation_id = "get_trigger", summary = "One trigger",
    params(("id" = String, Path, description = "Trigger id")),
    responses((status = 200, description = "The trigger", body = Object), (status = 404, description = "No trigger of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn one(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = found(&state, &caller.tenant.id, &id).await?;
    Ok(Json(show(&state, &caller, &t, None)))
}

/// `PATCH`: any creation field. A preset rebuilds the target; otherwise `url`, `method`,
/// `headers` (the whole list) and `body` (null removes it) replace the current ones.
#[utoipa::path(patch, path = "/api/v1/triggers/{id}", tag = "triggers", operation_id = "update_trigger", summary = "Change a trigger",
    params(("id" = String, Path, description = "Trigger id")), request_body(content = Object, description = "The fields to change"),
    responses((status = 200, description = "The trigger", body = Object), (status = 404, description = "No trigger of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let current = found(&state, &caller.tenant.id, &id).await?;
    let m = object_body(&headers, body, state.config.max_admin_body_bytes).await?;
    unknown_fields(&m)?;
    let preset = preset_field(&m)?;
    let text_or = |key: &str, now: &str| -> Result<String, ApiError> {
        Ok(text_field(&m, key)?.unwrap_or_else(|| now.to_owned()))
    };
    let input = TriggerInput {
        org: text_or("org", &current.key.org)?,
        project: text_or("project", &current.key.project)?,
        pipeline: text_or("pipeline", &current.key.pipeline)?,
        trigger: text_or("trigger", &current.key.trigger)?,
        url: match text_field(&m, "url")?.or(text_field(&m, "api_url")?) {
            Some(u) => Some(u),
            None if preset.is_some() => None,
            None => Some(current.target.url.clone()),
        },
        method: text_field(&m, "method")?
            .or_else(|| preset.is_none().then(|| current.target.method.clone())),
        headers: match headers_field(&m)? {
            Some(h) => h,
            None if preset.is_some() => Vec::new(),
            None => current
                .target
                .headers
                .iter()
                .map(|h| format!("{}: {}", h.name, h.value))
                .collect(),
        },
        body: if m.contains_key("body") {
            Some(text_field(&m, "body")?.unwrap_or_default())
        } else if preset.is_some() {
            None
        } else {
            Some(current.target.body.clone().unwrap_or_default())
        },
        preset,
        allow_token: bool_field(&m, "allow_token")?.unwrap_or(current.allow_token),
        auth: auth_field(&m)?.unwrap_or(current.auth),
        enabled: bool_field(&m, "enabled")?.unwrap_or(current.enabled),
    };
    let next = build_trigger(
        state.store.as_ref(),
        &caller.tenant.id,
        input,
        &state.delivery.targets,
        Some(&current),
    )
    .await?;
    if !state.store.update_trigger(&next).await? {
        return Err(ApiError::not_found(format!("no trigger {id:?}")));
    }
    Ok(Json(show(&state, &caller, &next, None)))
}

#[utoipa::path(delete, path = "/api/v1/triggers/{id}", tag = "triggers", operation_id = "delete_trigger", summary = "Delete a trigger (its events stay)",
    params(("id" = String, Path, description = "Trigger id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No trigger of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .store
        .delete_trigger(&caller.tenant.id, &id, OffsetDateTime::now_utc())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no trigger {id:?}")))
    }
}

#[utoipa::path(post, path = "/api/v1/triggers/{id}/rotate-token", tag = "triggers", operation_id = "rotate_trigger_token", summary = "Give a trigger a new token URL; the old token is refused at once",
    params(("id" = String, Path, description = "Trigger id")),
    responses((status = 200, description = "The trigger with its new `token_url` (shown this once)", body = Object), (status = 404, description = "No trigger of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut t = found(&state, &caller.tenant.id, &id).await?;
    let token = issue_token(&mut t);
    let now = OffsetDateTime::now_utc();
    if !state
        .store
        .set_trigger_token(&caller.tenant.id, &id, &t.token_hash, now)
        .await?
    {
        return Err(ApiError::not_found(format!("no trigger {id:?}")));
    }
    t.updated_at = now;
    tracing::info!(trigger = %id, "trigger token rotated");
    Ok(Json(show(&state, &caller, &t, Some(&token))))
}

/// An event as the native API shows it.
pub fn event_json(e: &TriggerEvent, now: OffsetDateTime, state: &AppState) -> Value {
    let (status, message, _) = details::processing_status(e);
    let rfc = |t: Option<OffsetDateTime>| t.map(crate::delivery::format::rfc3339);
    json!({
        "id": e.id,
        "trigger_id": e.trigger_id,
        "org": e.key.org,
        "project": e.key.project,
        "pipeline": e.key.pipeline,
        "trigger": e.key.trigger,
        "status": status,
        "message": message,
        "dispatch": e.state,
        "pipeline_status": details::pipeline_status(e, now, state.delivery.trigger_expire_after),
        "run_id": e.run.as_ref().map(|r| r.id.clone()),
        "attempts": e.attempts,
        "last_status_code": e.last_status_code,
        "last_error": e.last_error,
        "next_attempt_at": rfc(e.next_attempt_at),
        "dispatched_at": rfc(e.dispatched_at),
        "created_at": crate::delivery::format::rfc3339(e.created_at),
        "fired_with_key": e.key_id.is_some(),
    })
}

#[utoipa::path(get, path = "/api/v1/triggers/{id}/events", tag = "triggers", operation_id = "list_trigger_events", summary = "A trigger's latest events",
    params(("id" = String, Path, description = "Trigger id")),
    responses((status = 200, description = "The events, newest first", body = Object), (status = 404, description = "No trigger of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    found(&state, &caller.tenant.id, &id).await?;
    let limit = super::query::Params(q).page()?.limit;
    let now = OffsetDateTime::now_utc();
    let items: Vec<Value> = state
        .store
        .list_trigger_events(&caller.tenant.id, Some(&id), limit)
        .await?
        .iter()
        .map(|e| event_json(e, now, &state))
        .collect();
    Ok(Json(json!({ "events": items })))
}
