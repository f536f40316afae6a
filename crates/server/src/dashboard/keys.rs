//! `/admin/keys`: the tenant's API keys with their state, and forms to create, rotate and revoke
//! them (`POST /admin/keys`, `/admin/keys/{id}/rotate`, `/admin/keys/{id}/revoke`). Each form
//! carries the session's token and is allowed to keys with the `admin` scope only (checked here,
//! whatever the page showed), as the redeliver button is. A created or rotated key is shown on
//! the answer page, once (`Cache-Control: no-store`), and never again.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use cistern_store::Scope;
use maud::{html, Markup};
use serde::Deserialize;
use time::OffsetDateTime;

use super::admin::when;
use super::layout::{self, Nav};
use super::session::Session;
use super::{format, respond, PageError};
use crate::error::ApiError;
use crate::keys::{self, Issued};
use crate::AppState;

const PATH: &str = "/admin/keys";

fn not_admin(session: &Session) -> Markup {
    html! {
        p class="alert" id="keys-why" {
            "Managing keys needs a key with the " code { "admin" } " scope. This session's key ("
            (session.caller.key.name) ", " code { (session.caller.key.prefix) "…" } ") has: "
            (session.caller.key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
            ". Sign in with an admin key to see and manage keys."
        }
    }
}

/// `GET /admin/keys`.
pub async fn page(State(state): State<AppState>, session: Session) -> Response {
    let r = build(&state, &session, None).await;
    respond(&session, r)
}

async fn build(
    state: &AppState,
    session: &Session,
    shown: Option<Markup>,
) -> Result<Response, PageError> {
    if !session.is_admin() {
        let body = html! { h1 { "API keys" } (not_admin(session)) };
        return Ok((
            StatusCode::FORBIDDEN,
            layout::page("API keys", session, Nav::Admin, body),
        )
            .into_response());
    }
    let now = OffsetDateTime::now_utc();
    let list = keys::list(state.store.as_ref(), &session.caller.tenant.id)
        .await
        .map_err(|_| PageError::Server)?;
    let body = html! {
        h1 { "API keys" }
        p class="muted" {
            "Keys are shown once, when they are made; only their prefix is kept in clear. Rotating a key "
            "makes a new one with the same name and scopes; the old key keeps working until its grace ends, "
            "then is refused (401, saying it was rotated)."
        }
        @if let Some(s) = shown { (s) }
        div class="table-wrap" {
            table id="keys" {
                caption class="sr-only" { "API keys of this tenant" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Scopes" }
                    th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for (k, r) in &list {
                        @let st = keys::state(k, r.as_ref(), now);
                        tr data-key=(k.id) data-state=(st) {
                            th scope="row" { (k.name) br; span class="muted mono" { (k.id) } }
                            td class="mono" { (k.prefix) "…" }
                            td { (k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) }
                            td { (when(Some(k.created_at), now)) }
                            td {
                                @match (st, r) {
                                    ("grace", Some(r)) => { "rotated; works until " span title=(format::datetime(r.expires_at)) { (format::datetime(r.expires_at)) } }
                                    ("rotated", Some(r)) => { "rotated " (when(Some(r.rotated_at), now)) }
                                    _ => { (st) }
                                }
                            }
                            td {
                                @if st == "active" {
                                    form method="post" action={ (PATH) "/" (k.id) "/rotate" } class="inline" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        label { "grace " input type="text" name="grace" value="24h" size="5" aria-label={ "Grace of the rotation of " (k.name) }; }
                                        " "
                                        button type="submit" class="small" aria-label={ "Rotate " (k.name) } { "Rotate" }
                                    }
                                }
                                @if k.revoked_at.is_none() {
                                    form method="post" action={ (PATH) "/" (k.id) "/revoke" } class="inline" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button type="submit" class="small" aria-label={ "Revoke " (k.name) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Create a key" }
        form method="post" action=(PATH) id="create-key" {
            input type="hidden" name="csrf" value=(session.csrf);
            label { "Name " input type="text" name="name" required maxlength="100"; }
            fieldset {
                legend { "Scopes" }
                @for s in [Scope::Ingest, Scope::Read, Scope::Trigger, Scope::Admin] {
                    label { input type="checkbox" name="scopes" value=(s.as_str()); " " (s.as_str()) } " "
                }
            }
            button type="submit" { "Create" }
        }
    };
    Ok(layout::page("API keys", session, Nav::Admin, body).into_response())
}

/// The new key, shown this once.
fn shown_once(what: &str, issued: &Issued, extra: Markup) -> Markup {
    html! {
        div class="alert" role="status" id="new-key" {
            p { (what) " Copy it now: it is not shown again." }
            p { code class="mono" id="new-key-value" { (issued.secret) } }
            (extra)
        }
    }
}

/// A page that holds a key must not be kept by the browser or a proxy.
fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn refused(session: &Session, e: ApiError) -> Response {
    let body = html! {
        h1 { "Not done" }
        div class="alert error" role="alert" {
            (e.detail)
            @for f in &e.errors { br; code { (f.field) } ": " (f.message) }
        }
        p { a href=(PATH) { "Back to the keys" } }
    };
    (
        e.status,
        layout::page("Not done", session, Nav::Admin, body),
    )
        .into_response()
}

/// Checks the form's token and the session's scope: the refusal to answer, if any.
fn refusal(session: &Session, csrf: &str) -> Option<Response> {
    if !session.check_csrf(csrf) {
        return Some(super::session::expired_form(session));
    }
    if !session.is_admin() {
        let body = html! { h1 { "Not allowed" } (not_admin(session)) p { "Nothing was changed." } };
        return Some(
            (
                StatusCode::FORBIDDEN,
                layout::page("Not allowed", session, Nav::Admin, body),
            )
                .into_response(),
        );
    }
    None
}

/// The create form: a name and scopes (checkboxes, so `scopes` repeats).
struct CreateForm {
    csrf: String,
    name: String,
    scopes: Vec<String>,
}

/// `POST /admin/keys`.
pub async fn create(
    State(state): State<AppState>,
    session: Session,
    body: axum::body::Bytes,
) -> Response {
    // Repeated `scopes` fields: parsed as pairs (serde_urlencoded has no sequences).
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let form = CreateForm {
        csrf: pairs
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        name: pairs
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        scopes: pairs
            .iter()
            .filter(|(k, _)| k == "scopes")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    if let Some(r) = refusal(&session, &form.csrf) {
        return r;
    }
    let scopes = match keys::parse_scopes("scopes", form.scopes.iter().map(String::as_str)) {
        Ok(s) => s,
        Err(e) => return refused(&session, ApiError::invalid(vec![e])),
    };
    match keys::create(
        state.store.as_ref(),
        &session.caller.tenant.id,
        &form.name,
        scopes,
    )
    .await
    {
        Ok(issued) => {
            tracing::info!(key = %issued.info.prefix, by = %session.caller.key.prefix, "API key created from the dashboard");
            let shown = shown_once(
                &format!("The key {:?} was created.", issued.info.name),
                &issued,
                html! {},
            );
            no_store(respond(
                &session,
                build(&state, &session, Some(shown)).await,
            ))
        }
        Err(e) => refused(&session, e),
    }
}

/// The rotate form.
#[derive(Deserialize)]
pub struct RotateForm {
    csrf: String,
    #[serde(default)]
    grace: Option<String>,
}

/// `POST /admin/keys/{id}/rotate`.
pub async fn rotate(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<RotateForm>,
) -> Response {
    if let Some(r) = refusal(&session, &form.csrf) {
        return r;
    }
    let grace = match form
        .grace
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        None => keys::DEFAULT_GRACE,
        Some(g) => match keys::parse_grace("grace", g) {
            Ok(d) => d,
            Err(e) => return refused(&session, ApiError::invalid(vec![e])),
        },
    };
    let tenant = &session.caller.tenant.id;
    let old = match state.store.list_api_keys(tenant).await {
        Ok(list) => list.into_iter().find(|k| k.id == id),
        Err(e) => return refused(&session, e.into()),
    };
    let Some(old) = old else {
        return refused(&session, ApiError::not_found(format!("no key {id:?}")));
    };
    let now = OffsetDateTime::now_utc();
    match keys::rotate(state.store.as_ref(), tenant, &old, grace, now).await {
        Ok((issued, rotation)) => {
            state.keys.forget_key(&old.id);
            tracing::info!(old = %old.prefix, new = %issued.info.prefix, by = %session.caller.key.prefix, "API key rotated from the dashboard");
            let shown = shown_once(
                &format!(
                    "The key {:?} was rotated; here is its replacement.",
                    old.name
                ),
                &issued,
                html! { p { "The old key (" code { (old.prefix) "…" } ") works until " (format::datetime(rotation.expires_at)) ", then is refused." } },
            );
            no_store(respond(
                &session,
                build(&state, &session, Some(shown)).await,
            ))
        }
        Err(e) => refused(&session, e),
    }
}

/// The revoke form.
#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: String,
}

/// `POST /admin/keys/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Some(r) = refusal(&session, &form.csrf) {
        return r;
    }
    let tenant = &session.caller.tenant.id;
    let exists = match state.store.list_api_keys(tenant).await {
        Ok(list) => list.iter().any(|k| k.id == id),
        Err(e) => return refused(&session, e.into()),
    };
    if !exists {
        return refused(&session, ApiError::not_found(format!("no key {id:?}")));
    }
    match state.store.revoke_api_key(tenant, &id).await {
        Ok(k) => {
            state.keys.forget_key(&k.id);
            tracing::info!(key = %k.prefix, by = %session.caller.key.prefix, "API key revoked from the dashboard");
            axum::response::Redirect::to(PATH).into_response()
        }
        Err(e) => refused(&session, e.into()),
    }
}
