//! Signed sources: `POST /v1/hooks/{source_id}`. The source's kind says how the sender signs the
//! raw body and which dialect it speaks; the signature is checked (constant-time) against the
//! source's named secret, and its previous value during a rotation's grace period.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cistern_core::signatures;
use cistern_dialects::{Headers, Inbound as Parsed, ParseOptions, Rejection};
use cistern_store::{EventStatus, Scope, Source, StoreError, WriteOp};
use serde_json::json;

use super::ingest::{json_reply, parse_with, read_body, rejection_error, Inbound};
use crate::error::ApiError;
use crate::AppState;

/// Seconds a Standard Webhooks timestamp may differ from now.
const TOLERANCE_S: i64 = 300;

/// Hook routes.
pub fn router() -> super::Api {
    super::Api::new().ingest("hook", "/v1/hooks/{source_id}", hook)
}

fn unauthorized(detail: impl Into<String>) -> ApiError {
    ApiError::unauthorized(detail)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Longest delivery id kept for deduplication (senders use UUIDs or short ids).
const MAX_DELIVERY_ID_BYTES: usize = 256;

/// A delivery id header, refused when it is too long to be one.
fn delivery_id<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    match header(headers, name) {
        Some(v) if v.len() > MAX_DELIVERY_ID_BYTES => Err(ApiError::field(
            name,
            format!(
                "is {} bytes long; a delivery id is at most {MAX_DELIVERY_ID_BYTES} bytes",
                v.len()
            ),
        )),
        other => Ok(other),
    }
}

/// Checks the request's signature for `source`; `Ok(dedupe key)` when it is genuine.
async fn verify(
    state: &AppState,
    source: &Source,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, ApiError> {
    let secrets = match &source.secret_name {
        Some(name) => match crate::secrets::reveal(state.store.as_ref(), &state.master, &source.tenant_id, name).await {
            Ok(Some((current, previous))) => {
                let mut keys = vec![current];
                keys.extend(previous);
                keys
            }
            Ok(None) => {
                return Err(unauthorized(format!(
                    "the source's secret {name:?} no longer exists; set it again (`cistern secrets set {name}=…`)"
                )))
            }
            Err(e) => return Err(ApiError::internal(e)),
        },
        None => Vec::new(),
    };
    let signed_as_sent = "the signature must be computed over the raw request body exactly as sent, with the source's secret";
    match source.kind.as_str() {
        "jobserv" => {
            let Some(sig) = header(headers, "x-jobserv-sig") else {
                return Err(unauthorized("missing X-JobServ-Sig header: JobServ webhooks carry `X-JobServ-Sig: sha256:<hex HMAC-SHA256 of the body>`"));
            };
            // During a rotation a sender may send several space-separated signatures.
            let hexes: Vec<&str> = sig
                .split_whitespace()
                .filter_map(|t| t.strip_prefix("sha256:"))
                .collect();
            if hexes.is_empty() {
                return Err(unauthorized(jobserv_shape_error(sig)));
            }
            if secrets
                .iter()
                .any(|k| hexes.iter().any(|h| signatures::verify_hex(k, body, h)))
            {
                Ok(None)
            } else {
                Err(unauthorized(format!(
                    "X-JobServ-Sig does not match: {signed_as_sent} (secret {:?})",
                    source.secret_name.as_deref().unwrap_or("")
                )))
            }
        }
        "github" => {
            let Some(sig) = header(headers, "x-hub-signature-256") else {
                return Err(unauthorized("missing X-Hub-Signature-256 header: set the webhook's secret in GitHub to the source's secret value"));
            };
            let Some(hex_sig) = sig.strip_prefix("sha256=") else {
                return Err(unauthorized("X-Hub-Signature-256 must be `sha256=<hex>`"));
            };
            if secrets
                .iter()
                .any(|k| signatures::verify_hex(k, body, hex_sig))
            {
                Ok(delivery_id(headers, "x-github-delivery")?
                    .map(|d| format!("github:{}:{d}", source.id)))
            } else {
                Err(unauthorized(format!(
                    "X-Hub-Signature-256 does not match: {signed_as_sent}"
                )))
            }
        }
        "gitlab" => {
            let Some(token) = header(headers, "x-gitlab-token") else {
                return Err(unauthorized("missing X-Gitlab-Token header: set the hook's secret token in GitLab to the source's secret value"));
            };
            if secrets
                .iter()
                .any(|k| signatures::constant_time_eq(k, token.as_bytes()))
            {
                Ok(delivery_id(headers, "x-gitlab-webhook-uuid")?
                    .or(delivery_id(headers, "x-gitlab-event-uuid")?)
                    .map(|d| format!("gitlab:{}:{d}", source.id)))
            } else {
                Err(unauthorized(
                    "X-Gitlab-Token does not match the source's secret",
                ))
            }
        }
        "standard" => verify_standard(source, &secrets, headers, body),
        "cdevents" => {
            if header(headers, "webhook-signature").is_some() && !secrets.is_empty() {
                return verify_standard(source, &secrets, headers, body);
            }
            // CDEvents emitters that cannot sign authenticate with an API key of the tenant.
            match crate::auth::authenticate(state, headers, Scope::Ingest).await {
                Ok(c) if c.tenant.id == source.tenant_id => Ok(delivery_id(headers, "ce-id")?.map(|d| format!("cdevents:{}:{d}", source.id))),
                Ok(_) => Err(ApiError::not_found("no such source")),
                Err(_) => Err(unauthorized(
                    "a cdevents source takes Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature) or an API key with the ingest scope (Authorization: Bearer <key>)",
                )),
            }
        }
        other => Err(ApiError::internal(format!(
            "source of unknown kind {other}"
        ))),
    }
}

fn verify_standard(
    source: &Source,
    secrets: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, ApiError> {
    let (Some(id), Some(ts), Some(sigs)) = (
        header(headers, "webhook-id"),
        header(headers, "webhook-timestamp"),
        header(headers, "webhook-signature"),
    ) else {
        return Err(unauthorized("Standard Webhooks headers are required: webhook-id, webhook-timestamp and webhook-signature (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`)"));
    };
    delivery_id(headers, "webhook-id")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut last = signatures::StandardError::NoMatch;
    for secret in secrets {
        let text = String::from_utf8_lossy(secret);
        let Some(key) = signatures::standard_key(&text) else {
            return Err(ApiError::internal(format!(
                "secret {:?} is not a Standard Webhooks secret (whsec_<base64>)",
                source.secret_name
            )));
        };
        match signatures::standard_verify(&key, id, ts, sigs, body, now, TOLERANCE_S) {
            Ok(()) => return Ok(Some(format!("standard:{}:{id}", source.id))),
            Err(e) => last = e,
        }
    }
    Err(unauthorized(match last {
        signatures::StandardError::BadTimestamp => "webhook-timestamp must be an integer (seconds since the epoch)".to_owned(),
        signatures::StandardError::OutOfWindow { skew } => {
            format!("webhook-timestamp is {skew} s away from the server's clock; at most {TOLERANCE_S} s are accepted (replays are refused)")
        }
        _ => "webhook-signature does not match: sign `<webhook-id>.<webhook-timestamp>.<body>` with HMAC-SHA256 under the source's secret, over the body exactly as sent".to_owned(),
    }))
}

/// Parses a verified body in the source's dialect.
fn parse(
    kind: &str,
    headers: &Headers,
    body: &[u8],
    opts: &ParseOptions,
) -> Result<Vec<Parsed>, Rejection> {
    match kind {
        "jobserv" => cistern_dialects::jobserv::parse(headers, body, opts),
        "github" => cistern_dialects::github::parse(headers, body, opts),
        "gitlab" => cistern_dialects::gitlab::parse(headers, body, opts),
        "cdevents" => cistern_dialects::cdevents::parse(headers, body, opts),
        // A Standard Webhooks source carries CDEvents/CloudEvents or Cistern's own run format (SEI).
        _ => {
            let looks_cloudevents = headers.get("ce-type").is_some()
                || headers
                    .get("content-type")
                    .is_some_and(|c| c.contains("cloudevents"))
                || body.windows(11).any(|w| w == b"specversion")
                || body.windows(9).any(|w| w == b"\"context\"");
            if looks_cloudevents {
                cistern_dialects::cdevents::parse(headers, body, opts)
            } else {
                cistern_dialects::sei::parse(body, opts)
            }
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/hooks/{source_id}",
    tag = "ingest",
    operation_id = "hook",
    summary = "A signed source's webhook (JobServ, GitHub, GitLab, CDEvents, Standard Webhooks)",
    params(("source_id" = String, Path, description = "The source (`cistern sources create`)")),
    request_body(content = Object, description = "The sender's payload, signed as the source's kind says", content_type = "application/json"),
    security(()),
    responses((status = 202, description = "Accepted: {status, event_id, run_ids, ignored}", body = Object), (status = 200, description = "A delivery already received (deduplicated on its delivery id)", body = Object), (status = 400, description = "The body breaks the dialect's rules", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "The signature does not match the source's secret", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 404, description = "No such source", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The source went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn hook(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut dialect = None;
    let resp = handle(state, source_id, headers, body, &mut dialect).await;
    // For the metrics: the source's dialect, and a repeat delivery told apart from an update.
    let duplicate = resp.status() == StatusCode::OK;
    crate::ops::limits::IngestNote {
        dialect,
        outcome: duplicate.then_some("duplicate"),
    }
    .attach(resp)
}

async fn handle(
    state: AppState,
    source_id: String,
    headers: HeaderMap,
    body: Body,
    found: &mut Option<&'static str>,
) -> Response {
    let inbound = Inbound::new("/v1/hooks/{source_id}", "hook", &headers);
    let source = match state.store.source_by_id(&source_id).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return ApiError::not_found(format!(
                "no source {source_id:?}; create one with `cistern sources create`"
            ))
            .into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let tenant = match state.store.tenant_by_id(&source.tenant_id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return ApiError::not_found("the source's tenant no longer exists").into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let dialect: &'static str = match source.kind.as_str() {
        "jobserv" => "jobserv",
        "github" => "github",
        "gitlab" => "gitlab",
        "cdevents" => "cdevents",
        _ => "standard",
    };
    let inbound = Inbound {
        dialect,
        source_id: Some(source.id.clone()),
        ..inbound
    };
    *found = Some(dialect);
    // A signed source has no key: its own id is its bucket.
    if let Err(e) = state
        .limits
        .check(&source.id, || format!("the source {:?}", source.id))
    {
        state.telemetry.rate_limited();
        return e.into_response();
    }
    let bytes = match read_body(&headers, body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return inbound
                .refuse(&state, Some(&tenant), None, &Bytes::new(), None, e)
                .await
                .into_response()
        }
    };
    let request_type = ["x-github-event", "x-gitlab-event", "ce-type"]
        .iter()
        .find_map(|h| header(&headers, h))
        .map(str::to_owned);
    let dedupe = match verify(&state, &source, &headers, &bytes).await {
        Ok(d) => d,
        Err(e) => {
            // Whoever knows the URL can send this: keep a small record, not the body.
            let mut e = inbound
                .refuse_unverified(&state, &tenant, &bytes, request_type, e)
                .await;
            if e.status == StatusCode::UNAUTHORIZED {
                e.title = "The request is not signed by this source's secret".into();
            }
            return e.into_response();
        }
    };
    let hdrs = Headers(
        headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
    );
    let opts = ParseOptions::new(state.config.max_log_bytes);
    let kind = source.kind.clone();
    let items = match parse_with(bytes.clone(), move |b| parse(&kind, &hdrs, b, &opts)).await {
        Ok(items) => items,
        Err(rej) => {
            return inbound
                .refuse(
                    &state,
                    Some(&tenant),
                    None,
                    &bytes,
                    request_type,
                    rejection_error(rej),
                )
                .await
                .into_response()
        }
    };
    let (mut runs, mut incidents, mut commit_times, mut ignored) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for item in items {
        match item {
            Parsed::Run(r) => runs.push(*r),
            Parsed::Incident(i) => incidents.push(i),
            Parsed::CommitTime { sha, at, repo } => commit_times.push((sha, at, repo)),
            Parsed::Ignored(what) => ignored.push(what),
            Parsed::RegisterInstance(_) => {}
        }
    }
    let mut event = inbound.event(
        Some(tenant.id.clone()),
        None,
        &bytes,
        EventStatus::Accepted,
        202,
    );
    event.request_type = request_type;
    event.dedupe_key = dedupe;
    let op = WriteOp::Signals {
        event,
        tenant,
        runs,
        incidents,
        commit_times,
    };
    match state.store.write(op).await {
        Ok(out) => {
            let ids: Vec<&str> = out.runs.iter().map(|r| r.id.as_str()).collect();
            let status = if ids.is_empty() && !ignored.is_empty() {
                "ignored"
            } else {
                "accepted"
            };
            json_reply(
                StatusCode::ACCEPTED,
                json!({"status": status, "event_id": out.event_id, "run_ids": ids, "ignored": ignored}),
            )
        }
        Err(StoreError::Duplicate(first)) => json_reply(
            StatusCode::OK,
            json!({"status": "duplicate", "event_id": first, "run_ids": []}),
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Why an `X-JobServ-Sig` without a `sha256:` value is refused, naming what was sent.
fn jobserv_shape_error(sig: &str) -> String {
    let want = "X-JobServ-Sig must be `sha256:<hex HMAC-SHA256 of the body>`";
    let t = sig.trim();
    if t.starts_with("sha256=") {
        format!("{want}; `sha256=<hex>` is GitHub's X-Hub-Signature-256 style: JobServ separates with a colon")
    } else if !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("{want}; a bare hex value is JobServ's internal SHA-1 request signature, not a webhook signature")
    } else {
        format!("{want}; got a value of another shape")
    }
}
