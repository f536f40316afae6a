//! API keys (admin): `GET|POST /api/v1/keys`, `POST /api/v1/keys/{id}/rotate`,
//! `DELETE /api/v1/keys/{id}`. A created or rotated key is in that reply only; lists show the
//! prefix and the state (`active`, `grace`, `rotated`, `revoked`), never the key.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::ingest::{json_reply, read_body};
use super::subscriptions::text_field;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::keys;
use crate::AppState;

/// Key routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/api/v1/keys", list)
        .post("/api/v1/keys", create)
        .post("/api/v1/keys/{id}/rotate", rotate)
        .delete("/api/v1/keys/{id}", revoke)
}

/// A JSON object body; an empty body is an empty object.
async fn optional_object(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_body(headers, body, state.config.max_admin_body_bytes).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match cistern_dialects::json::parse(&bytes, "") {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::field("", "the body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(vec![e])),
    }
}

fn unknown_fields(m: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::field(
            k,
            format!("unknown field; fields: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "admin", operation_id = "list_keys", summary = "The tenant's API keys (never the keys themselves) with their state",
    responses((status = 200, description = "`{keys: [{id, name, prefix, scopes, created_at, revoked_at, state, rotated_at, expires_at, replaced_by}]}`", body = Object), (status = 401, description = "No key, or an unknown, revoked or rotated one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<Value>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let items: Vec<Value> = keys::list(state.store.as_ref(), &caller.tenant.id)
        .await?
        .iter()
        .map(|(k, r)| keys::key_json(k, r.as_ref(), now))
        .collect();
    Ok(Json(json!({ "keys": items })))
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "admin", operation_id = "create_key", summary = "Create an API key (shown in this reply only)",
    request_body(content = Object, description = "`{name, scopes}`: scopes a list (or a comma-separated text) of ingest, read, admin, trigger"),
    responses((status = 201, description = "The key's record and `key`, the key itself (shown once)", body = Object), (status = 400, description = "A field breaks its rule", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown, revoked or rotated one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let m = optional_object(&state, &headers, body).await?;
    unknown_fields(&m, &["name", "scopes"])?;
    let name = text_field(&m, "name")?.unwrap_or_default();
    let scopes = match m.get("scopes") {
        Some(Value::String(s)) => keys::parse_scopes("scopes", s.split(',')),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            keys::parse_scopes("scopes", a.iter().filter_map(Value::as_str))
        }
        None | Some(Value::Null) => Err(cistern_core::FieldError::new(
            "scopes",
            "is required: a list of ingest, read, admin, trigger",
        )),
        Some(_) => Err(cistern_core::FieldError::new(
            "scopes",
            "must be a list of scope names (ingest, read, admin, trigger)",
        )),
    }
    .map_err(|e| ApiError::invalid(vec![e]))?;
    let issued = keys::create(state.store.as_ref(), &caller.tenant.id, &name, scopes).await?;
    tracing::info!(key = %issued.info.prefix, by = %caller.key.prefix, "API key created");
    let mut v = keys::key_json(&issued.info, None, OffsetDateTime::now_utc());
    v["key"] = json!(issued.secret);
    Ok(json_reply(StatusCode::CREATED, v))
}

#[utoipa::path(post, path = "/api/v1/keys/{id}/rotate", tag = "admin", operation_id = "rotate_key", summary = "Rotate an API key: a new key (shown once) replaces it; the old one works until the grace ends",
    params(("id" = String, Path, description = "Key id")), request_body(content = Object, description = "Optional `{grace}`: how long the old key keeps working (`24h` by default; `0s` ends it now; at most `30d`)"),
    responses((status = 200, description = "The new key's record, `key` (the new key, shown once), and `replaces` {id, expires_at}", body = Object), (status = 404, description = "No key of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 409, description = "The key is revoked or already rotated", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 400, description = "A field breaks its rule", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown, revoked or rotated one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let m = optional_object(&state, &headers, body).await?;
    unknown_fields(&m, &["grace"])?;
    let grace = match text_field(&m, "grace")? {
        Some(g) => keys::parse_grace("grace", &g).map_err(|e| ApiError::invalid(vec![e]))?,
        None => keys::DEFAULT_GRACE,
    };
    let old = state
        .store
        .list_api_keys(&caller.tenant.id)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no key {id:?}")))?;
    let now = OffsetDateTime::now_utc();
    let (issued, rotation) =
        keys::rotate(state.store.as_ref(), &caller.tenant.id, &old, grace, now).await?;
    state.keys.forget_key(&old.id);
    tracing::info!(old = %old.prefix, new = %issued.info.prefix, by = %caller.key.prefix, "API key rotated");
    let mut v = keys::key_json(&issued.info, None, now);
    v["key"] = json!(issued.secret);
    v["replaces"] = json!({
        "id": old.id,
        "expires_at": crate::delivery::format::rfc3339(rotation.expires_at),
    });
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "admin", operation_id = "revoke_key", summary = "Revoke an API key (it is refused at once)",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No key of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown, revoked or rotated one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json")))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // By id only: a name could be another key's.
    let exists = state
        .store
        .list_api_keys(&caller.tenant.id)
        .await?
        .iter()
        .any(|k| k.id == id);
    if !exists {
        return Err(ApiError::not_found(format!("no key {id:?}")));
    }
    state.store.revoke_api_key(&caller.tenant.id, &id).await?;
    state.keys.forget_key(&id);
    tracing::info!(key = %id, by = %caller.key.prefix, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
