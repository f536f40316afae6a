//! What every inbound endpoint shares: bounded body reading, the raw event record, recording
//! refusals in the events log, and parsing off the async threads when bodies are large.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cistern_dialects::Rejection;
use cistern_store::{EventRecord, EventStatus, Tenant, WriteOp};
use time::OffsetDateTime;

use crate::auth::AuthFailure;
use crate::error::ApiError;
use crate::AppState;

/// Most bytes of an unverified sender's body kept in the events log.
pub const UNVERIFIED_BODY_PREFIX: usize = 1024;

/// Bodies larger than this are parsed on the blocking pool.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// The inbound request being handled.
pub struct Inbound {
    /// Route (`/v1/custom-cicd`).
    pub endpoint: &'static str,
    /// Dialect name.
    pub dialect: &'static str,
    /// Content-Type of the request.
    pub content_type: Option<String>,
    /// When it arrived.
    pub received_at: OffsetDateTime,
    /// The signed source it came through (its events, refused ones included, say so).
    pub source_id: Option<String>,
}

impl Inbound {
    /// Starts handling a request.
    pub fn new(endpoint: &'static str, dialect: &'static str, headers: &HeaderMap) -> Self {
        Self {
            endpoint,
            dialect,
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            received_at: OffsetDateTime::now_utc(),
            source_id: None,
        }
    }

    /// The event record of this request.
    pub fn event(
        &self,
        tenant_id: Option<String>,
        key_id: Option<String>,
        body: &Bytes,
        status: EventStatus,
        http_status: u16,
    ) -> EventRecord {
        EventRecord {
            tenant_id,
            endpoint: self.endpoint.to_owned(),
            dialect: self.dialect.to_owned(),
            request_type: None,
            content_type: self.content_type.clone(),
            body: Arc::from(body.as_ref()),
            received_at: self.received_at,
            status,
            http_status,
            errors: Vec::new(),
            key_id,
            source_id: self.source_id.clone(),
            dedupe_key: None,
        }
    }

    /// Answers a refusal, first recording it in the tenant's events log when the tenant is known
    /// (an unknown caller's requests are only logged, so strangers cannot fill the database).
    pub async fn refuse(
        &self,
        state: &AppState,
        tenant: Option<&Tenant>,
        key_id: Option<String>,
        body: &Bytes,
        request_type: Option<String>,
        error: ApiError,
    ) -> ApiError {
        self.record_refusal(state, tenant, key_id, body, request_type, error, Vec::new())
            .await
    }

    /// Answers the refusal of a request whose sender is not verified (a signed source's hook
    /// with a bad or missing signature): anyone who knows the URL can send one, so the tenant's
    /// events log keeps a small record of it — time, source, reason, the body's size and its
    /// first [`UNVERIFIED_BODY_PREFIX`] bytes — never the body itself.
    pub async fn refuse_unverified(
        &self,
        state: &AppState,
        tenant: &Tenant,
        body: &Bytes,
        request_type: Option<String>,
        error: ApiError,
    ) -> ApiError {
        let kept = body.slice(..body.len().min(UNVERIFIED_BODY_PREFIX));
        let note = (body.len() > kept.len()).then(|| {
            cistern_core::FieldError::new(
                "body",
                format!(
                    "{} bytes from an unverified sender; only the first {} are kept",
                    body.len(),
                    kept.len()
                ),
            )
        });
        self.record_refusal(
            state,
            Some(tenant),
            None,
            &kept,
            request_type,
            error,
            note.into_iter().collect(),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_refusal(
        &self,
        state: &AppState,
        tenant: Option<&Tenant>,
        key_id: Option<String>,
        body: &Bytes,
        request_type: Option<String>,
        error: ApiError,
        notes: Vec<cistern_core::FieldError>,
    ) -> ApiError {
        let Some(tenant) = tenant else {
            tracing::info!(endpoint = self.endpoint, status = error.status.as_u16(), reason = %error.detail, "refused an unauthenticated request");
            return error;
        };
        let mut ev = self.event(
            Some(tenant.id.clone()),
            key_id,
            body,
            EventStatus::Rejected,
            error.status.as_u16(),
        );
        ev.request_type = request_type;
        ev.errors = if error.errors.is_empty() {
            vec![cistern_core::FieldError::new("", error.detail.clone())]
        } else {
            error.errors.clone()
        };
        ev.errors.extend(notes);
        match state.store.write(WriteOp::Reject { event: ev }).await {
            Ok(out) => error.with_event(Some(out.event_id)),
            Err(e) => {
                tracing::error!(error = %e, "could not record a rejected event");
                error
            }
        }
    }

    /// Refuses after a failed authentication.
    pub async fn refuse_auth(&self, state: &AppState, f: AuthFailure) -> ApiError {
        self.refuse(
            state,
            f.tenant.as_ref(),
            f.key_id,
            &Bytes::new(),
            None,
            f.error,
        )
        .await
    }
}

/// Most bytes of a refused body read and thrown away before the 413 is sent.
const DRAIN_BYTES: u64 = 32 * 1024 * 1024;
/// Longest time spent throwing a refused body away.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the whole body, refusing (413) beyond `limit` bytes, whether the `Content-Length` says
/// so up front or a body sent without one grows past it.
///
/// A refused body is read on and thrown away (up to [`DRAIN_BYTES`], for at most
/// [`DRAIN_TIME`]) before answering: a server that answers and closes while the client is still
/// sending resets the connection, and the client then loses the 413 that says why.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The body is too large",
            format!("the request body exceeds this route's limit of {limit} bytes (max_body_bytes for reports, max_admin_body_bytes for admin and JSON routes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if let Some(len) = declared.filter(|len| *len > limit as u64) {
        if len <= DRAIN_BYTES {
            drain(&mut stream).await;
        }
        return Err(too_large());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::field("", format!("could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            drain(&mut stream).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads and drops what is left of a refused body, within the drain bounds.
async fn drain(stream: &mut axum::body::BodyDataStream) {
    use futures::StreamExt;
    let mut read: u64 = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Runs a parser, on the blocking pool when the body is large.
pub async fn parse_with<T, F>(body: Bytes, parse: F) -> Result<T, Rejection>
where
    T: Send + 'static,
    F: FnOnce(&[u8]) -> Result<T, Rejection> + Send + 'static,
{
    if body.len() <= INLINE_PARSE_BYTES {
        return parse(&body);
    }
    parse_blocking(body, parse).await
}

/// Runs a parser on the blocking pool, whatever the size of the body: for work that small
/// input can make long (inflating a zip).
pub async fn parse_blocking<T, F>(body: Bytes, parse: F) -> Result<T, Rejection>
where
    T: Send + 'static,
    F: FnOnce(&[u8]) -> Result<T, Rejection> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || parse(&body)).await {
        Ok(r) => r,
        Err(e) => Err(Rejection::Malformed(cistern_core::FieldError::new(
            "",
            format!("the parser failed: {e}"),
        ))),
    }
}

/// The problem for a parser's rejection.
pub fn rejection_error(rej: Rejection) -> ApiError {
    match rej {
        Rejection::Malformed(e) => {
            let mut err = ApiError::invalid(vec![e]);
            err.kind = "malformed-json";
            err.title = "The body is not valid JSON".into();
            err
        }
        Rejection::Invalid(errors) => {
            let mut err = ApiError::invalid(errors);
            err.kind = "invalid-payload";
            err.title = "The payload breaks the field rules".into();
            err
        }
    }
}

/// A JSON reply with a status.
pub fn json_reply(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// The warnings of the runs of one request (see [`cistern_dialects::warnings`]), each run's
/// fields prefixed with `runs[i].` when the request carried several.
pub fn run_warnings(runs: &[cistern_core::RunReport]) -> Vec<cistern_core::FieldError> {
    let many = runs.len() > 1;
    runs.iter()
        .enumerate()
        .flat_map(|(i, r)| {
            cistern_dialects::warnings::duration_warnings(r)
                .into_iter()
                .map(move |mut w| {
                    if many {
                        w.field = format!("runs[{i}].{}", w.field);
                    }
                    w
                })
        })
        .collect()
}

/// Writes the runs of an accepted request and answers as the run dialects do:
/// `{"id", "status", "event_id"}`, 201 `created` or 200 `updated` (the first run decides), with
/// `warnings: [{field, message}]` when a run was accepted with some (kept in the events log too).
pub async fn write_runs(
    state: &AppState,
    mut event: EventRecord,
    tenant: Tenant,
    runs: Vec<cistern_core::RunReport>,
) -> Result<Response, cistern_store::StoreError> {
    let warnings = run_warnings(&runs);
    event.errors.extend(warnings.iter().cloned());
    let out = state
        .store
        .write(WriteOp::Runs {
            event,
            tenant,
            runs,
        })
        .await?;
    let Some(run) = out.runs.first() else {
        return Ok(ApiError::internal("a run write returned no run").into_response());
    };
    let (status, word) = if run.created {
        (StatusCode::CREATED, "created")
    } else {
        (StatusCode::OK, "updated")
    };
    let mut reply = serde_json::json!({"id": run.id, "status": word, "event_id": out.event_id});
    if !warnings.is_empty() {
        reply["warnings"] = serde_json::json!(warnings);
    }
    Ok(json_reply(status, reply))
}
