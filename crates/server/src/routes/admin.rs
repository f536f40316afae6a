//! Named secrets and signed sources (admin scope): `PUT|GET|DELETE /api/v1/secrets/{name}`,
//! `GET /api/v1/secrets`, `GET|POST /api/v1/sources`, `GET|DELETE /api/v1/sources/{id}`.
//! Secret values are write-only: no route ever returns one.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cistern_store::{Source, Store};
use serde_json::{json, Value};

use super::ingest::{json_reply, read_body};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::AppState;

/// The source kinds.
pub const SOURCE_KINDS: [&str; 5] = ["jobserv", "github", "gitlab", "cdevents", "standard"];

/// Admin routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/api/v1/secrets", list_secrets)
        .get("/api/v1/secrets/{name}", get_secret)
        .put("/api/v1/secrets/{name}", put_secret)
        .delete("/api/v1/secrets/{name}", delete_secret)
        .get("/api/v1/sources", list_sources)
        .post("/api/v1/sources", create_source)
        .get("/api/v1/sources/{id}", get_source)
        .delete("/api/v1/sources/{id}", delete_source)
}

/// Checks a secret name: 1-128 of letters, digits, `-`, `_`, `.`.
pub fn valid_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "secret name {name:?} must be 1-128 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Stores a secret's value, encrypted (shared with the CLI).
pub async fn set_secret(
    state_store: &dyn Store,
    master: &crate::secrets::MasterKey,
    grace_hours: u64,
    tenant_id: &str,
    name: &str,
    value: &[u8],
) -> Result<bool, ApiError> {
    valid_secret_name(name).map_err(|m| ApiError::field("name", m))?;
    if value.is_empty() {
        return Err(ApiError::field("value", "must not be empty"));
    }
    // A hub started before `cistern secrets rotate-master-key` still holds the old key: what it
    // sealed now could never be read.
    if let Err(e) = master.check(state_store).await {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "Conflict",
            format!("{e}; the master key was rotated since this hub started: restart it"),
        ));
    }
    let (nonce, ct) = master.encrypt(&crate::secrets::context(tenant_id, name), value);
    let grace = time::OffsetDateTime::now_utc() + time::Duration::hours(grace_hours as i64);
    Ok(state_store
        .put_secret(tenant_id, name, &nonce, &ct, grace)
        .await?)
}

#[utoipa::path(
    get,
    path = "/api/v1/secrets",
    tag = "admin",
    operation_id = "list_secrets",
    summary = "Secrets (names and dates, never values)",
    responses((status = 200, description = "{\"secrets\": [...]}", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn list_secrets(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<Value>, ApiError> {
    let items = state.store.list_secrets(&caller.tenant.id).await?;
    Ok(Json(json!({ "secrets": items })))
}

#[utoipa::path(
    get,
    path = "/api/v1/secrets/{name}",
    tag = "admin",
    operation_id = "get_secret",
    summary = "One secret (name and dates)",
    params(("name" = String, Path, description = "Secret name")),
    responses((status = 200, description = "The secret", body = Object), (status = 404, description = "No secret of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn get_secret(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let items = state.store.list_secrets(&caller.tenant.id).await?;
    match items.into_iter().find(|s| s.name == name) {
        Some(s) => Ok(Json(serde_json::to_value(s).map_err(ApiError::internal)?)),
        None => Err(ApiError::not_found(format!("no secret named {name:?}"))),
    }
}

/// `PUT /api/v1/secrets/{name}` with `{"value": "…"}` (or the raw value as a text body).
#[utoipa::path(
    put,
    path = "/api/v1/secrets/{name}",
    tag = "admin",
    operation_id = "put_secret",
    summary = "Set a secret (a rotation keeps the previous value valid for secret_grace_hours)",
    params(("name" = String, Path, description = "1-128 letters, digits, -, _ or .")),
    request_body(content = super::openapi::SecretValue, description = "{\"value\": ...} as JSON, or the raw value as text", content_type = "application/json"),
    responses((status = 201, description = "Created", body = Object), (status = 200, description = "Updated", body = Object), (status = 400, description = "A bad name or an empty value", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_admin_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn put_secret(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&headers, body, state.config.max_admin_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    let value: Vec<u8> = if is_json {
        match cistern_dialects::json::parse(&bytes, "") {
            Ok(Value::Object(m)) => match m.get("value") {
                Some(Value::String(v)) => v.as_bytes().to_vec(),
                _ => return ApiError::field("value", "is required (a string)").into_response(),
            },
            Ok(_) => {
                return ApiError::field("", "the body must be {\"value\": \"…\"}").into_response()
            }
            Err(e) => return ApiError::invalid(vec![e]).into_response(),
        }
    } else {
        bytes.to_vec()
    };
    match set_secret(
        state.store.as_ref(),
        &state.master,
        state.config.secret_grace_hours,
        &caller.tenant.id,
        &name,
        &value,
    )
    .await
    {
        Ok(true) => json_reply(
            StatusCode::CREATED,
            json!({"name": name, "status": "created"}),
        ),
        Ok(false) => json_reply(
            StatusCode::OK,
            json!({"name": name, "status": "updated", "previous_valid_for_hours": state.config.secret_grace_hours}),
        ),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/secrets/{name}",
    tag = "admin",
    operation_id = "delete_secret",
    summary = "Delete a secret",
    params(("name" = String, Path, description = "Secret name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No secret of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn delete_secret(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_secret(&caller.tenant.id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no secret named {name:?}")))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/sources",
    tag = "admin",
    operation_id = "list_sources",
    summary = "Signed sources",
    responses((status = 200, description = "{\"sources\": [...]}", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn list_sources(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = state
        .store
        .list_sources(&caller.tenant.id)
        .await?
        .iter()
        .map(source_json)
        .collect();
    Ok(Json(json!({ "sources": items })))
}

fn source_json(s: &Source) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("path".into(), json!(format!("/v1/hooks/{}", s.id)));
    }
    v
}

/// Creates a source (shared with the CLI): an unguessable id, a known kind, an existing secret.
pub async fn new_source(
    store: &dyn Store,
    tenant_id: &str,
    kind: &str,
    secret: Option<&str>,
    name: Option<&str>,
) -> Result<Source, ApiError> {
    if !SOURCE_KINDS.contains(&kind) {
        return Err(ApiError::field(
            "kind",
            format!(
                "unknown source kind {kind:?}; kinds: {}",
                SOURCE_KINDS.join(", ")
            ),
        ));
    }
    if let Some(s) = secret {
        if store.get_secret(tenant_id, s).await?.is_none() {
            return Err(ApiError::field(
                "secret",
                format!("no secret named {s:?}; set it first (`cistern secrets set {s}=…` or PUT /api/v1/secrets/{s})"),
            ));
        }
    } else if kind != "cdevents" {
        return Err(ApiError::field(
            "secret",
            format!("a {kind} source needs a named secret to verify its signatures"),
        ));
    }
    let mut id = [0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
    let source = Source {
        id: format!("src_{}", hex::encode(id)),
        tenant_id: tenant_id.to_owned(),
        kind: kind.to_owned(),
        name: name.map(str::to_owned).unwrap_or_else(|| kind.to_owned()),
        secret_name: secret.map(str::to_owned),
        created_at: time::OffsetDateTime::now_utc(),
    };
    store.create_source(&source).await?;
    Ok(source)
}

#[utoipa::path(
    post,
    path = "/api/v1/sources",
    tag = "admin",
    operation_id = "create_source",
    summary = "Create a signed source",
    request_body(content = super::openapi::NewSource, content_type = "application/json"),
    responses((status = 201, description = "The source, with its path /v1/hooks/<id>", body = Object), (status = 400, description = "A bad kind or an unknown secret", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_admin_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn create_source(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&headers, body, state.config.max_admin_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let v = match cistern_dialects::json::parse(&bytes, "") {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return ApiError::field(
                "",
                "the body must be an object {\"kind\", \"secret\", \"name\"}",
            )
            .into_response()
        }
        Err(e) => return ApiError::invalid(vec![e]).into_response(),
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let Some(kind) = text("kind") else {
        return ApiError::field(
            "kind",
            format!("is required: one of {}", SOURCE_KINDS.join(", ")),
        )
        .into_response();
    };
    match new_source(
        state.store.as_ref(),
        &caller.tenant.id,
        kind,
        text("secret"),
        text("name"),
    )
    .await
    {
        Ok(s) => json_reply(StatusCode::CREATED, source_json(&s)),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/sources/{id}",
    tag = "admin",
    operation_id = "get_source",
    summary = "One source",
    params(("id" = String, Path, description = "Source id")),
    responses((status = 200, description = "The source", body = Object), (status = 404, description = "No source of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn get_source(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.source_by_id(&id).await? {
        Some(s) if s.tenant_id == caller.tenant.id => Ok(Json(source_json(&s))),
        _ => Err(ApiError::not_found(format!("no source {id:?}"))),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/sources/{id}",
    tag = "admin",
    operation_id = "delete_source",
    summary = "Delete a source",
    params(("id" = String, Path, description = "Source id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No source of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn delete_source(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_source(&caller.tenant.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no source {id:?}")))
    }
}
