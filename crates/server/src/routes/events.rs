//! The inbound events log: `GET /api/v1/events?status=rejected&since=…&until=…&source=…` and
//! `GET /api/v1/events/{id}`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use cistern_store::{EventFilter, EventStatus};
use serde_json::{json, Value};

use super::query::Params;
use crate::auth::Reader;
use crate::error::ApiError;
use crate::AppState;

/// Bytes of body shown per event in lists (the full kept body is at `/api/v1/events/{id}`).
const LIST_BODY_PREVIEW: usize = 4096;

/// Event routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/api/v1/events", list)
        .get("/api/v1/events/{id}", one)
}

#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    operation_id = "list_events",
    summary = "The raw inbound log, newest first",
    params(("status" = Option<String>, Query, description = "accepted, rejected or all"), ("limit" = Option<u32>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "From next_cursor")),
    responses((status = 200, description = "{\"events\": [...], \"next_cursor\": ...}", body = Object), (status = 400, description = "A bad status, limit or cursor", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = Params(q);
    let status = match q.text("status").as_deref() {
        None | Some("all") => None,
        Some("rejected") => Some(EventStatus::Rejected),
        Some("accepted") => Some(EventStatus::Accepted),
        Some(other) => {
            return Err(ApiError::field(
                "status",
                format!("must be accepted, rejected or all, got {other:?}"),
            ))
        }
    };
    let filter = EventFilter {
        status,
        source_id: q.text("source"),
        since: q.time("since")?,
        until: q.time("until")?,
    };
    if let (Some(a), Some(b)) = (filter.since, filter.until) {
        if b <= a {
            return Err(ApiError::field("until", "must be after since"));
        }
    }
    let page = q.page()?;
    let mut found = state
        .store
        .list_events(&caller.tenant.id, &filter, &page)
        .await?;
    for ev in &mut found.items {
        if let Some(body) = &mut ev.body {
            if body.len() > LIST_BODY_PREVIEW {
                let mut cut = LIST_BODY_PREVIEW;
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                body.truncate(cut);
                ev.body_truncated = true;
            }
        }
    }
    Ok(Json(
        json!({"events": found.items, "next_cursor": found.next_cursor}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/events/{id}",
    tag = "events",
    operation_id = "get_event",
    summary = "One inbound event with its kept body",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, description = "The event", body = Object), (status = 404, description = "No event of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn one(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.get_event(&caller.tenant.id, &id).await? {
        Some(ev) => Ok(Json(serde_json::to_value(ev).map_err(ApiError::internal)?)),
        None => Err(ApiError::not_found(format!("no event with id {id:?}"))),
    }
}
