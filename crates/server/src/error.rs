//! One error type for every route: client errors are returned verbatim as RFC 9457
//! `application/problem+json` with the fields at fault; server errors are logged with their cause
//! and answered with an opaque 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cistern_core::FieldError;
use cistern_store::StoreError;
use serde_json::json;

/// An error answered to the client (boxed: errors are the cold path, results stay small).
#[derive(Debug)]
pub struct ApiError(Box<Problem>);

/// The members of a problem+json reply.
#[derive(Debug)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short problem slug (`invalid-payload`, `unauthorized`, …).
    pub kind: &'static str,
    /// Human title.
    pub title: String,
    /// Detail.
    pub detail: String,
    /// Fields at fault.
    pub errors: Vec<FieldError>,
    /// The inbound event that recorded this refusal, when one was recorded.
    pub event_id: Option<String>,
    /// Extra members merged into the body.
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// Seconds to wait before retrying, sent as `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A client error.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self(Box::new(Problem {
            status,
            kind,
            title: title.into(),
            detail: detail.into(),
            errors: Vec::new(),
            event_id: None,
            extra: None,
            retry_after: None,
        }))
    }

    /// 400 with field errors.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "The request is invalid",
            detail,
        );
        e.errors = errors;
        e
    }

    /// 400 for one bad query parameter or field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, message)])
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", what)
    }

    /// 500, logging the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed; the request was not stored. Retry later.",
        )
    }

    /// 429: the caller went over its rate; retry after `seconds`.
    pub fn rate_limited(detail: impl Into<String>, seconds: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            detail,
        );
        e.retry_after = Some(seconds.max(1));
        e
    }

    /// 503: the server sheds load; retry after `seconds`.
    pub fn overloaded(detail: impl Into<String>, seconds: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "The server is busy",
            detail,
        );
        e.retry_after = Some(seconds.max(1));
        e
    }

    /// Attaches the event id.
    pub fn with_event(mut self, id: Option<String>) -> Self {
        self.event_id = id;
        self
    }
}

impl std::ops::Deref for ApiError {
    type Target = Problem;
    fn deref(&self) -> &Problem {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut Problem {
        &mut self.0
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(what) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", what)
            }
            StoreError::Rejected(errors) => {
                let mut e = ApiError::invalid(errors);
                e.status = StatusCode::UNPROCESSABLE_ENTITY;
                e.kind = "rejected";
                e.title = "The request was refused".into();
                e
            }
            // Kept in the events log: the reply names the event, like every other refusal.
            StoreError::RejectedLogged(errors, event_id) => {
                ApiError::from(StoreError::Rejected(errors)).with_event(Some(event_id))
            }
            StoreError::Invalid(msg) => ApiError::field("cursor", msg),
            StoreError::Duplicate(first) => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate",
                "Already received",
                format!("this delivery was already received as event {first}"),
            ),
            StoreError::Backend(msg) => ApiError::internal(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let p = *self.0;
        let mut body = json!({
            "type": format!("https://cistern.dev/problems/{}", p.kind),
            "title": p.title,
            "status": p.status.as_u16(),
            "detail": p.detail,
        });
        if let Some(map) = body.as_object_mut() {
            if !p.errors.is_empty() {
                map.insert("errors".into(), json!(p.errors));
            }
            if let Some(id) = p.event_id {
                map.insert("event_id".into(), json!(id));
            }
            if let Some(extra) = p.extra {
                map.extend(extra);
            }
            if let Some(s) = p.retry_after {
                map.insert("retry_after_seconds".into(), json!(s));
            }
        }
        let mut resp = (p.status, body.to_string()).into_response();
        if let Some(s) = p.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

/// Turns the bare error replies that do not come from a handler — axum's extractor rejections
/// (`text/plain`: a path segment that is not UTF-8, a query string that does not deserialize) and
/// the router's empty 405 — into problem+json like every other error, keeping their headers
/// (`Allow`). Replies that already have a JSON, problem or HTML body pass unchanged.
pub async fn problem_for_bare_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(ctype.is_empty() || ctype.starts_with("text/plain")) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut err = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        ApiError::new(
            status,
            "method-not-allowed",
            reason,
            format!("this route does not take this method; it takes: {allow}"),
        )
    } else {
        let detail = if text.is_empty() {
            reason.to_owned()
        } else {
            text.clone()
        };
        ApiError::new(status, "bad-request", reason, detail)
    };
    // axum names the path parameter or query field at fault between backticks.
    if let Some(field) = text
        .split('`')
        .nth(1)
        .filter(|f| !f.is_empty() && f.len() <= 64)
    {
        err.errors = vec![FieldError::new(field, text.clone())];
    }
    let mut out = err.into_response();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in parts.headers.iter() {
        out.headers_mut().append(k.clone(), v.clone());
    }
    out
}
