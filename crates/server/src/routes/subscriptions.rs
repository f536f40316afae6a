//! Webhook subscriptions and their deliveries (admin scope):
//! `GET|POST /api/v1/subscriptions`, `GET|PATCH|DELETE /api/v1/subscriptions/{id}`,
//! `GET /api/v1/subscriptions/{id}/deliveries`, `POST /api/v1/subscriptions/{id}/replay`,
//! `GET /api/v1/deliveries/{id}`, `POST /api/v1/deliveries/{id}/redeliver`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use cistern_core::glob::Glob;
use cistern_core::FieldError;
use cistern_store::{
    Delivery, DeliveryFilter, DeliveryFormat, DeliveryStatus, EventType, Store, Subscription,
    TargetHeader, ALL_EVENT_TYPES,
};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::ingest::{json_reply, read_body};
use super::query::Params;
use crate::auth::Admin;
use crate::delivery::target;
use crate::error::ApiError;
use crate::AppState;

/// Subscription routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/api/v1/subscriptions", list)
        .post("/api/v1/subscriptions", create)
        .get("/api/v1/subscriptions/{id}", one)
        .patch("/api/v1/subscriptions/{id}", update)
        .delete("/api/v1/subscriptions/{id}", remove)
        .get("/api/v1/subscriptions/{id}/deliveries", deliveries)
        .post("/api/v1/subscriptions/{id}/replay", replay)
        .get("/api/v1/deliveries/{id}", delivery)
        .post("/api/v1/deliveries/{id}/redeliver", redeliver)
}

/// What a user gives to create (or change) a subscription.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionInput {
    /// Target URL.
    pub url: String,
    /// Named secret.
    pub secret: String,
    /// `jobserv` (default), `cdevents` or `native`.
    pub format: Option<String>,
    /// Event names; default `run.completed`.
    pub events: Option<Vec<String>>,
    /// Only failed runs (and incidents).
    pub only_failures: bool,
    /// Pipeline glob.
    pub pipeline: Option<String>,
    /// Branch glob.
    pub branch: Option<String>,
    /// Project.
    pub project: Option<String>,
    /// Headers added to every request (values may name a secret: `{{secret.NAME}}`).
    pub headers: Vec<TargetHeader>,
}

fn blank_to_none(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Checks an input and builds the subscription (shared with the CLI). Every rule broken is
/// reported, each naming its field.
pub async fn build_subscription(
    store: &dyn Store,
    tenant_id: &str,
    input: SubscriptionInput,
    targets: &target::TargetPolicy,
    id: Option<String>,
) -> Result<Subscription, ApiError> {
    let mut errors = Vec::new();
    match targets.check_url(&input.url) {
        Ok(url) => {
            if let Err(e) = targets.check_resolves(&url).await {
                errors.push(FieldError::new("url", e));
            }
        }
        Err(e) => errors.push(FieldError::new("url", e)),
    }
    let format = match input
        .format
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => DeliveryFormat::Jobserv,
        Some(f) => DeliveryFormat::parse(f).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "format",
                format!("unknown format {f:?}; formats: jobserv, cdevents, native, otlp"),
            ));
            DeliveryFormat::Jobserv
        }),
    };
    let secret = input.secret.trim().to_owned();
    if secret.is_empty() {
        // OTLP receivers authenticate by header: signing is optional there.
        if format != DeliveryFormat::Otlp {
            errors.push(FieldError::new(
                "secret",
                "is required: the name of the secret that signs the deliveries",
            ));
        }
    } else if store.get_secret(tenant_id, &secret).await?.is_none() {
        errors.push(FieldError::new(
            "secret",
            format!("no secret named {secret:?}; set it first (`cistern secrets set {secret}=…` or PUT /api/v1/secrets/{secret})"),
        ));
    }
    let (header_errors, header_secrets) = crate::delivery::headers::check(&input.headers);
    errors.extend(header_errors);
    for (field, name) in header_secrets {
        if store.get_secret(tenant_id, &name).await?.is_none() {
            errors.push(FieldError::new(
                field,
                format!("no secret named {name:?}; set it first (`cistern secrets set {name}=…` or PUT /api/v1/secrets/{name})"),
            ));
        }
    }
    let mut events = Vec::new();
    for word in input.events.unwrap_or_default() {
        let word = word.trim();
        if word.is_empty() {
            continue;
        }
        match EventType::parse(word) {
            Some(e) if !events.contains(&e) => events.push(e),
            Some(_) => {}
            None => errors.push(FieldError::new(
                "events",
                format!(
                    "unknown event {word:?}; events: {}",
                    ALL_EVENT_TYPES.map(|e| e.as_str()).join(", ")
                ),
            )),
        }
    }
    if events.is_empty() {
        events.push(EventType::RunCompleted);
    }
    if format == DeliveryFormat::Otlp && events != [EventType::RunCompleted] {
        errors.push(FieldError::new(
            "events",
            "the otlp format sends each finished run as a trace: its only event is run.completed",
        ));
    }
    if format == DeliveryFormat::Jobserv && events.contains(&EventType::IncidentOpened) {
        errors.push(FieldError::new(
            "events",
            "the jobserv format describes builds; incident.opened needs the native or cdevents format",
        ));
    }
    let pipeline = blank_to_none(input.pipeline);
    let branch = blank_to_none(input.branch);
    for (field, glob) in [("pipeline", &pipeline), ("branch", &branch)] {
        if let Some(g) = glob {
            if let Err(e) = Glob::parse(g) {
                errors.push(FieldError::new(field, e));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let now = OffsetDateTime::now_utc();
    Ok(Subscription {
        id: id.unwrap_or_else(|| format!("sub_{}", uuid::Uuid::now_v7().simple())),
        tenant_id: tenant_id.to_owned(),
        url: input.url.trim().to_owned(),
        secret_name: secret,
        format,
        headers: input
            .headers
            .into_iter()
            .map(|h| TargetHeader {
                name: h.name.trim().to_owned(),
                value: h.value.trim().to_owned(),
            })
            .collect(),
        events,
        only_failures: input.only_failures,
        pipeline,
        branch,
        project: blank_to_none(input.project),
        enabled: true,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    })
}

/// A subscription as the API shows it.
pub fn subscription_json(s: &Subscription) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "deliveries".into(),
            json!(format!("/api/v1/subscriptions/{}/deliveries", s.id)),
        );
    }
    v
}

#[utoipa::path(
    get,
    path = "/api/v1/subscriptions",
    tag = "subscriptions",
    operation_id = "list_subscriptions",
    summary = "Subscriptions",
    responses((status = 200, description = "{\"subscriptions\": [...]}", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = state
        .store
        .list_subscriptions(&caller.tenant.id)
        .await?
        .iter()
        .map(subscription_json)
        .collect();
    Ok(Json(json!({ "subscriptions": items })))
}

/// Reads a JSON object body.
pub(super) async fn object_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_body(headers, body, limit).await?;
    match cistern_dialects::json::parse(&bytes, "") {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::field("", "the body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(vec![e])),
    }
}

pub(super) fn text_field(m: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::field(key, "must be a string")),
    }
}

pub(super) fn bool_field(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::field(key, "must be true or false")),
    }
}

fn events_field(m: &Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    match m.get("events") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.split(',').map(str::to_owned).collect())),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::field("events", "must be a list of event names"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::field("events", "must be a list of event names")),
    }
}

const KNOWN_FIELDS: [&str; 10] = [
    "url",
    "headers",
    "secret",
    "format",
    "events",
    "only_failures",
    "pipeline",
    "branch",
    "project",
    "enabled",
];

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

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions",
    tag = "subscriptions",
    operation_id = "create_subscription",
    summary = "Subscribe a URL to events",
    request_body(content = super::openapi::SubscriptionFields, content_type = "application/json"),
    responses((status = 201, description = "The subscription", body = Object), (status = 400, description = "Every broken rule, each field named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_admin_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let m = object_body(&headers, body, state.config.max_admin_body_bytes).await?;
    unknown_fields(&m)?;
    let input = SubscriptionInput {
        url: text_field(&m, "url")?.unwrap_or_default(),
        secret: text_field(&m, "secret")?.unwrap_or_default(),
        format: text_field(&m, "format")?,
        events: events_field(&m)?,
        only_failures: bool_field(&m, "only_failures")?.unwrap_or(false),
        pipeline: text_field(&m, "pipeline")?,
        branch: text_field(&m, "branch")?,
        project: text_field(&m, "project")?,
        headers: super::exporters::headers_field(&m)?,
    };
    let sub = build_subscription(
        state.store.as_ref(),
        &caller.tenant.id,
        input,
        &state.delivery.targets,
        None,
    )
    .await?;
    state.store.create_subscription(&sub).await?;
    Ok(json_reply(StatusCode::CREATED, subscription_json(&sub)))
}

async fn found(state: &AppState, tenant_id: &str, id: &str) -> Result<Subscription, ApiError> {
    state
        .store
        .get_subscription(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no subscription {id:?}")))
}

#[utoipa::path(
    get,
    path = "/api/v1/subscriptions/{id}",
    tag = "subscriptions",
    operation_id = "get_subscription",
    summary = "One subscription",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = Object), (status = 404, description = "No subscription of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn one(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(subscription_json(
        &found(&state, &caller.tenant.id, &id).await?,
    )))
}

/// `PATCH`: any of the creation fields (a null or empty `pipeline`, `branch` or `project`
/// removes that filter), and `enabled` (true resumes the queue).
#[utoipa::path(
    patch,
    path = "/api/v1/subscriptions/{id}",
    tag = "subscriptions",
    operation_id = "update_subscription",
    summary = "Change a subscription, enable or disable it",
    params(("id" = String, Path, description = "Subscription id")),
    request_body(content = super::openapi::SubscriptionFields, content_type = "application/json"),
    responses((status = 200, description = "The subscription", body = Object), (status = 400, description = "Every broken rule, each field named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 404, description = "No subscription of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_admin_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
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
    let keep = |key: &str, now: &Option<String>| -> Result<Option<String>, ApiError> {
        if m.contains_key(key) {
            text_field(&m, key)
        } else {
            Ok(now.clone())
        }
    };
    let input = SubscriptionInput {
        url: text_field(&m, "url")?.unwrap_or_else(|| current.url.clone()),
        secret: text_field(&m, "secret")?.unwrap_or_else(|| current.secret_name.clone()),
        format: Some(text_field(&m, "format")?.unwrap_or_else(|| current.format.as_str().into())),
        events: Some(events_field(&m)?.unwrap_or_else(|| {
            current
                .events
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect()
        })),
        only_failures: bool_field(&m, "only_failures")?.unwrap_or(current.only_failures),
        pipeline: keep("pipeline", &current.pipeline)?,
        branch: keep("branch", &current.branch)?,
        project: keep("project", &current.project)?,
        headers: if m.contains_key("headers") {
            super::exporters::headers_field(&m)?
        } else {
            current.headers.clone()
        },
    };
    let enabled = bool_field(&m, "enabled")?;
    let mut next = build_subscription(
        state.store.as_ref(),
        &caller.tenant.id,
        input,
        &state.delivery.targets,
        Some(current.id.clone()),
    )
    .await?;
    next.created_at = current.created_at;
    state.store.update_subscription(&next).await?;
    if let Some(enabled) = enabled {
        if enabled != current.enabled {
            let reason = (!enabled).then_some("disabled by a user");
            state
                .store
                .set_subscription_enabled(
                    &caller.tenant.id,
                    &id,
                    enabled,
                    reason,
                    OffsetDateTime::now_utc(),
                )
                .await?;
        }
    }
    Ok(Json(subscription_json(
        &found(&state, &caller.tenant.id, &id).await?,
    )))
}

#[utoipa::path(
    delete,
    path = "/api/v1/subscriptions/{id}",
    tag = "subscriptions",
    operation_id = "delete_subscription",
    summary = "Delete a subscription with its deliveries",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No subscription of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .store
        .delete_subscription(&caller.tenant.id, &id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no subscription {id:?}")))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/subscriptions/{id}/deliveries",
    tag = "subscriptions",
    operation_id = "list_deliveries",
    summary = "A subscription's deliveries, newest first",
    params(("id" = String, Path, description = "Subscription id"), ("status" = Option<String>, Query, description = "pending, delivered or failed"), ("limit" = Option<u32>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "From next_cursor")),
    responses((status = 200, description = "{\"deliveries\": [...], \"next_cursor\": ...}", body = Object), (status = 400, description = "A bad status, limit or cursor", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 404, description = "No subscription of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    found(&state, &caller.tenant.id, &id).await?;
    let q = Params(q);
    let status = match q.text("status") {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(&s).ok_or_else(|| {
            ApiError::field(
                "status",
                format!("unknown status {s:?}; statuses: pending, delivered, failed"),
            )
        })?),
    };
    let filter = DeliveryFilter {
        status,
        since: q.time("since")?,
        until: q.time("until")?,
    };
    if let (Some(a), Some(b)) = (filter.since, filter.until) {
        if b <= a {
            return Err(ApiError::field("until", "must be after since"));
        }
    }
    let page = q.page()?;
    let found = state
        .store
        .list_deliveries(&caller.tenant.id, &id, &filter, &page)
        .await?;
    Ok(Json(
        json!({"deliveries": found.items, "next_cursor": found.next_cursor}),
    ))
}

/// `POST …/replay?since=…[&until=…]`: every delivery of the subscription created in the window
/// is sent again (the same `webhook-id`), whatever its state.
#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/{id}/replay",
    tag = "subscriptions",
    operation_id = "replay_subscription",
    summary = "Send again every delivery created in a window",
    params(("id" = String, Path, description = "Subscription id"), ("since" = String, Query, description = "Window start: RFC 3339, a date, or epoch ms"), ("until" = Option<String>, Query, description = "Window end (default now)")),
    responses((status = 202, description = "{\"subscription\", \"requeued\"}", body = Object), (status = 400, description = "since missing or bad, or until not after since", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 404, description = "No subscription of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn replay(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let sub = found(&state, &caller.tenant.id, &id).await?;
    let q = Params(q);
    let now = OffsetDateTime::now_utc();
    let Some(since) = q.time("since")? else {
        return Err(ApiError::field(
            "since",
            "is required: the start of the window to send again (RFC 3339, a date, or epoch milliseconds)",
        ));
    };
    let until = q.time("until")?.unwrap_or(now + time::Duration::seconds(1));
    if until <= since {
        return Err(ApiError::field("until", "must be after since"));
    }
    let n = state
        .store
        .replay(&caller.tenant.id, &id, since, until, now)
        .await?;
    let mut body = json!({"subscription": id, "requeued": n});
    if !sub.enabled {
        body["note"] =
            json!("the subscription is disabled: the deliveries wait until it is enabled again");
    }
    Ok(json_reply(StatusCode::ACCEPTED, body))
}

#[utoipa::path(
    get,
    path = "/api/v1/deliveries/{id}",
    tag = "subscriptions",
    operation_id = "get_delivery",
    summary = "One delivery with its message and attempt log",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery", body = Object), (status = 404, description = "No delivery of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn delivery(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.get_delivery(&caller.tenant.id, &id).await? {
        Some(d) => Ok(Json(serde_json::to_value(d).map_err(ApiError::internal)?)),
        None => Err(ApiError::not_found(format!("no delivery {id:?}"))),
    }
}

/// Queues a delivery of the tenant again, due now on a fresh schedule (whatever its state), and
/// returns it as it now stands. The API's `redeliver` and the dashboard's button both use it.
pub async fn redeliver_now(
    store: &dyn Store,
    tenant_id: &str,
    id: &str,
) -> Result<Delivery, ApiError> {
    let now = OffsetDateTime::now_utc();
    if !store.redeliver(tenant_id, id, now).await? {
        return Err(ApiError::not_found(format!("no delivery {id:?}")));
    }
    let d = store
        .get_delivery(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no delivery {id:?}")))?;
    Ok(d.delivery)
}

#[utoipa::path(
    post,
    path = "/api/v1/deliveries/{id}/redeliver",
    tag = "subscriptions",
    operation_id = "redeliver",
    summary = "Send a delivery again",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 202, description = "The delivery, queued", body = Object), (status = 404, description = "No delivery of this tenant", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn redeliver(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = redeliver_now(state.store.as_ref(), &caller.tenant.id, &id).await?;
    Ok(json_reply(
        StatusCode::ACCEPTED,
        serde_json::to_value(d).map_err(ApiError::internal)?,
    ))
}
