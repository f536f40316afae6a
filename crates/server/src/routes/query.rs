//! Query-string parsing with errors that name the parameter and the rule.

use std::collections::HashMap;

use cistern_core::RunResult;
use cistern_store::PageRequest;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size.
pub const MAX_LIMIT: usize = 500;

/// The query parameters of a request.
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// A non-empty text parameter.
    pub fn text(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// `limit` and `cursor`.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.text("limit") {
            None => DEFAULT_LIMIT,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::field(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT}, got {s:?}"),
                    ))
                }
            },
        };
        Ok(PageRequest {
            limit,
            cursor: self.text("cursor"),
        })
    }

    /// A time: RFC 3339, a date (`2024-03-28`), or epoch milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<OffsetDateTime>, ApiError> {
        let Some(s) = self.text(name) else {
            return Ok(None);
        };
        if let Ok(t) = OffsetDateTime::parse(&s, &Rfc3339) {
            return Ok(Some(t));
        }
        let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
        if let Ok(d) = Date::parse(&s, &date_fmt) {
            return Ok(Some(d.midnight().assume_utc()));
        }
        if let Ok(ms) = s.parse::<i64>() {
            return Ok(Some(cistern_core::from_millis(ms)));
        }
        Err(ApiError::field(
            name,
            format!("{s:?} is not a time; use RFC 3339 (2024-03-28T05:25:45Z), a date (2024-03-28) or epoch milliseconds"),
        ))
    }

    /// A result word.
    pub fn result(&self, name: &str) -> Result<Option<RunResult>, ApiError> {
        let Some(s) = self.text(name) else {
            return Ok(None);
        };
        RunResult::from_word(&s).map(Some).ok_or_else(|| {
            ApiError::field(
                name,
                format!("unknown result {s:?}; {}", RunResult::accepted_words()),
            )
        })
    }
}

/// RFC 3339 text of a time.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Refuses a request whose path or query string holds a NUL character (`%00`): no id, name or
/// filter can contain one, and PostgreSQL cannot even compare text holding it. Checked once for
/// every route, before routing.
pub async fn refuse_nul_in_uri(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    let uri = req.uri();
    if has_nul(uri.path()) {
        return ApiError::field(
            "path",
            "the URL path holds a NUL character (%00); no id or name contains one",
        )
        .into_response();
    }
    if let Some(q) = uri.query().filter(|q| has_nul(q)) {
        let name = url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
            .map(|(k, _)| k.replace('\0', "\u{FFFD}"))
            .unwrap_or_else(|| "query".to_owned());
        return ApiError::field(
            &name,
            "holds a NUL character (%00); no id, name or filter contains one",
        )
        .into_response();
    }
    next.run(req).await
}
