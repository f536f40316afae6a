//! The local relay: the hub's ingestion endpoints, answered by the satellite. A request is
//! checked as the hub would check it (a bad payload is refused now, with the fields named,
//! rather than accepted and refused later where its sender cannot see it), written to the spool
//! and fsynced, and only then acknowledged; the forwarder takes it from there.
//!
//! Replies: 202 `{"status": "queued", "spool_id": …}` (the Jenkins plugin's endpoints answer
//! its envelope, 200), 400 with the hub's field errors, 503 with `Retry-After` when the spool
//! is full. A SEI instance registration must hand back the hub's GUID, so it is passed to the
//! hub at once instead of queued.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cistern_core::FieldError;
use cistern_dialects::{allstacks, propelo, sei, Inbound, ParseOptions, Rejection};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::forward::{Answer, HubClient};
use super::spool::{Header, Spool, SpoolError};
use super::Status;

/// Largest request accepted (multipart bodies carry a zip of failure logs).
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// Log cap used when checking payloads (the hub applies its own when it stores them).
const CHECK_LOG_BYTES: usize = 1 << 20;
/// What the relay tells senders to wait when the spool is full.
const FULL_RETRY_AFTER_SECONDS: u64 = 60;

/// What the relay's handlers share.
#[derive(Clone)]
pub struct RelayState {
    /// The spool.
    pub spool: Arc<Spool>,
    /// Wakes the forwarder.
    pub wake: Arc<Notify>,
    /// The hub (for registrations, which cannot wait).
    pub hub: Arc<HubClient>,
    /// Health, for `/status`.
    pub status: Arc<Status>,
    /// The key senders must present, when set.
    pub relay_key: Option<String>,
}

#[derive(Clone, Copy)]
enum Dialect {
    Sei,
    Propelo,
    PropeloMultipart,
    Allstacks,
    Signed,
}

/// The relay's routes: the hub's ingestion paths, `/healthz` and `/status`.
pub fn router(state: RelayState) -> Router {
    let mut r = Router::new();
    for path in [
        "/v1/custom-cicd",
        "/sei/api/v1/custom-cicd",
        "/gratis/sei/api/v1/custom-cicd",
        "/prod1/sei/api/v1/custom-cicd",
        "/gateway/sei/api/v1/custom-cicd",
    ] {
        r = r.route(
            path,
            post(|s: State<RelayState>, u: Uri, h: HeaderMap, b: Bytes| {
                accept(s, u, h, b, Dialect::Sei)
            }),
        );
    }
    r.route(
        "/v1/generic-requests",
        post(|s: State<RelayState>, u: Uri, h: HeaderMap, b: Bytes| {
            accept(s, u, h, b, Dialect::Propelo)
        }),
    )
    .route(
        "/v1/generic-requests/multipart",
        post(|s: State<RelayState>, u: Uri, h: HeaderMap, b: Bytes| {
            accept(s, u, h, b, Dialect::PropeloMultipart)
        }),
    )
    .route(
        "/webhook/company/{company_id}/cicd_job",
        post(|s: State<RelayState>, u: Uri, h: HeaderMap, b: Bytes| {
            accept(s, u, h, b, Dialect::Allstacks)
        }),
    )
    .route(
        "/v1/hooks/{source_id}",
        post(|s: State<RelayState>, u: Uri, h: HeaderMap, b: Bytes| {
            accept(s, u, h, b, Dialect::Signed)
        }),
    )
    .route("/healthz", get(|| async { "ok" }))
    .route("/status", get(status))
    .fallback(|m: axum::http::Method, u: Uri| async move {
        problem(
            StatusCode::NOT_FOUND,
            "Not found",
            format!(
                "the satellite relays POST /v1/custom-cicd, /v1/generic-requests(/multipart), /webhook/company/{{company_id}}/cicd_job and /v1/hooks/{{source_id}}; not {m} {}",
                u.path()
            ),
            Vec::new(),
        )
    })
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .with_state(state)
}

async fn status(State(st): State<RelayState>) -> Json<Value> {
    Json(st.status.report(&st.spool.usage()))
}

fn problem(status: StatusCode, title: &str, detail: String, errors: Vec<FieldError>) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "errors": errors,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn refused(rej: Rejection) -> Response {
    let errors = match rej {
        Rejection::Malformed(e) => vec![e],
        Rejection::Invalid(v) => v,
    };
    let detail = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    problem(
        StatusCode::BAD_REQUEST,
        "The payload breaks the field rules",
        detail,
        errors,
    )
}

/// Headers passed on to the hub: the content type and what signed sources sign with; never the
/// sender's credentials (the satellite posts with its own key).
fn kept_headers(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k == "content-type"
                || ((k.starts_with("x-") || k.starts_with("webhook-") || k.starts_with("ce-"))
                    && k != "x-api-key"
                    && k != "x-forwarded-for")
        })
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// The key a sender presents: `Authorization: ApiKey|Apikey|Bearer|Token <key>`, a bare
/// `Authorization: <key>`, or `X-Api-Key`.
fn presented_key(h: &HeaderMap) -> Option<String> {
    if let Some(k) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim().to_owned());
    }
    let auth = h.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    Some(match auth.split_once(char::is_whitespace) {
        Some((_, key)) => key.trim().to_owned(),
        None => auth.to_owned(),
    })
}

/// Constant-time comparison (`Mac::verify_slice`), so the time taken says nothing about the key.
fn same_key(a: &str, b: &str) -> bool {
    cistern_core::signatures::constant_time_eq(a.as_bytes(), b.as_bytes())
}

async fn accept(
    State(st): State<RelayState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Response {
    // Signed sources prove themselves to the hub with their signature; everything else must
    // show the relay key when one is set.
    if let (Some(want), false) = (&st.relay_key, matches!(dialect, Dialect::Signed)) {
        if !presented_key(&headers).is_some_and(|k| same_key(&k, want)) {
            return problem(
                StatusCode::UNAUTHORIZED,
                "Authentication required",
                "this satellite takes requests with its relay key (satellite.relay_key): send `Authorization: ApiKey <key>` (or Bearer, or X-Api-Key)".into(),
                Vec::new(),
            );
        }
    }
    let opts = ParseOptions::new(CHECK_LOG_BYTES);
    let mut request_type = None;
    match dialect {
        Dialect::Sei => match sei::parse(&body, &opts) {
            Err(rej) => return refused(rej),
            Ok(items)
                if items
                    .iter()
                    .any(|i| matches!(i, Inbound::RegisterInstance(_))) =>
            {
                return register(&st, &uri, &headers, body).await;
            }
            Ok(_) => {}
        },
        Dialect::Propelo => match propelo::parse(&body, &opts) {
            Err(rej) => return refused(rej),
            Ok(req) => request_type = Some(req.request_type),
        },
        Dialect::Allstacks => {
            if let Err(rej) = allstacks::parse(&body, &opts) {
                return refused(rej);
            }
        }
        // The hub checks signatures and multipart forms; the relay keeps them byte for byte.
        Dialect::PropeloMultipart | Dialect::Signed => {}
    }
    let endpoint = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned());
    let entry = Header {
        v: 1,
        endpoint: endpoint.clone(),
        headers: kept_headers(&headers),
        accepted_at_ms: crate::report::now_ms(),
        origin: "relay".into(),
    };
    let spool = st.spool.clone();
    let put = tokio::task::spawn_blocking(move || spool.put(&entry, &body)).await;
    let seq = match put {
        Ok(Ok(seq)) => seq,
        Ok(Err(e @ SpoolError::Full { .. })) => {
            tracing::warn!(error = %e, endpoint, "refusing a request: the spool is full");
            st.status.error(e.to_string());
            let mut resp = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "The satellite's spool is full",
                e.to_string(),
                Vec::new(),
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                FULL_RETRY_AFTER_SECONDS
                    .to_string()
                    .parse()
                    .expect("digits"),
            );
            return resp;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, endpoint, "cannot spool a request");
            st.status.error(e.to_string());
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The satellite cannot store the request",
                e.to_string(),
                Vec::new(),
            );
        }
        Err(e) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The satellite cannot store the request",
                e.to_string(),
                Vec::new(),
            )
        }
    };
    st.wake.notify_one();
    st.status.check_usage(&st.spool.usage());
    let spool_id = format!("{seq}");
    match dialect {
        // The Jenkins plugin reads its envelope; run ids come when the hub has the run.
        Dialect::Propelo | Dialect::PropeloMultipart => {
            let rt = request_type.unwrap_or_else(|| "JenkinsPluginJobRunComplete".into());
            let payload = if rt == "JenkinsHeartbeat" {
                // What the hub answers a heartbeat, so the plugin keeps its schedule.
                json!({"success": true, "server_version": env!("CARGO_PKG_VERSION"),
                       "configuration": {"heartbeat_duration": 60}, "queued": true})
            } else {
                json!({"run_ids": [], "queued": true, "spool_id": spool_id})
            };
            (
                StatusCode::OK,
                Json(json!({"response_type": rt, "payload": payload.to_string()})),
            )
                .into_response()
        }
        _ => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "queued",
                "spool_id": spool_id,
                "detail": format!("stored by the satellite; it goes to {} in order", st.hub.base()),
            })),
        )
            .into_response(),
    }
}

/// Passes an instance registration to the hub and hands back its answer (the GUID).
async fn register(st: &RelayState, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    let endpoint = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/v1/custom-cicd");
    match st
        .hub
        .post(endpoint, &kept_headers(headers), body.to_vec())
        .await
    {
        Answer::Taken { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Answer::Refused { status, message } => problem(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            "The hub refused the registration",
            message,
            Vec::new(),
        ),
        Answer::Later { reason, .. } => problem(
            StatusCode::BAD_GATEWAY,
            "The hub cannot be reached",
            format!("an instance registration needs the hub's answer (its GUID) and cannot be queued: {reason}"),
            Vec::new(),
        ),
    }
}
