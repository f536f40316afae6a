//! Outbound notifications in the dashboard: `/admin/subscriptions` (every subscription with its
//! state and its latest deliveries), `/admin/subscriptions/{id}` (all its deliveries, paged),
//! `/admin/deliveries/{id}` (one delivery with its attempt log and message), and the redeliver
//! button: `POST /admin/deliveries/{id}/redeliver`, a form carrying the session's token, allowed
//! to keys with the `admin` scope (checked here, whatever the page showed).
//!
//! Filters in the URL: `days` (or `since`/`until`) bound the deliveries by the time of their event,
//! `status` keeps one state. Read-only sessions see where deliveries stand but not the full
//! target URLs (they may carry tokens; the subscriptions API is admin-only for the same reason).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use cistern_store::{Delivery, DeliveryFilter, DeliveryStatus, PageRequest, Subscription};
use maud::{html, Markup};
use serde::Deserialize;
use time::OffsetDateTime;

use super::admin::{query_of, when};
use super::filters::Window;
use super::layout::{self, Nav};
use super::session::{safe_next, Session};
use super::{format, respond, PageError};
use crate::delivery::redact::{origin_only, strip_urls};
use crate::routes::subscriptions::redeliver_now;
use crate::AppState;

/// Deliveries shown per subscription on the list.
const RECENT: usize = 10;
/// Deliveries per page of one subscription.
const PAGE: usize = 50;

/// The id of the note that says why the redeliver buttons are disabled.
const WHY_ID: &str = "redeliver-why";

/// The filters of a deliveries view.
struct View {
    window: Window,
    status: Option<DeliveryStatus>,
}

impl View {
    fn parse(q: &HashMap<String, String>, now: OffsetDateTime) -> Result<Self, PageError> {
        let window = Window::parse(q, now).map_err(PageError::Bad)?;
        let status = match q.get("status").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None | Some("all") => None,
            Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
                PageError::Bad(format!(
                    "status: must be pending, delivered, failed or all, got {s:?}"
                ))
            })?),
        };
        Ok(Self { window, status })
    }

    fn filter(&self) -> DeliveryFilter {
        DeliveryFilter {
            status: self.status,
            since: self.window.since,
            until: self.window.until,
        }
    }

    /// The query pairs of this view, with `status` replaced by `status` when given.
    fn pairs(&self, status: Option<&str>) -> Vec<(&'static str, String)> {
        let mut out = self.window.pairs();
        match status.or(self.status.map(|s| s.as_str())) {
            Some("all") | None => {}
            Some(s) => out.push(("status", s.to_owned())),
        }
        out
    }

    fn link(&self, path: &str, status: Option<&str>, extra: &[(&str, &str)]) -> String {
        let owned = self.pairs(status);
        let mut pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.extend_from_slice(extra);
        if pairs.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", query_of(&pairs))
        }
    }
}

/// A target URL as a session may see it: whole for admin keys, else its origin alone.
pub fn shown_url(url: &str, admin: bool) -> String {
    if admin {
        return url.to_owned();
    }
    origin_only(url)
}

/// A delivery's status badge: colour and word.
pub fn status_badge(d: &Delivery) -> Markup {
    let (class, word) = match d.status {
        DeliveryStatus::Delivered => ("r-success", "Delivered"),
        DeliveryStatus::Failed => ("r-failure", "Failed"),
        DeliveryStatus::Pending if d.attempts > 0 => ("r-unstable", "Retrying"),
        DeliveryStatus::Pending => ("r-running", "Pending"),
    };
    html! { span class={ "badge " (class) } data-status=(d.status.as_str()) { (word) } }
}

/// The subscription's state: enabled, failing since, or disabled and why.
fn state_badge(s: &Subscription, now: OffsetDateTime) -> Markup {
    html! {
        @if !s.enabled {
            span class="badge r-failure" { "Disabled" }
            @if let Some(at) = s.disabled_at { " " (when(Some(at), now)) }
        } @else if let Some(since) = s.failing_since {
            span class="badge r-unstable" { "Failing" } " "
            span title={ "every attempt failed since " (format::datetime_s(since)) } {
                "for " (format::duration_ms((now - since).whole_milliseconds().max(0) as i64))
            }
        } @else {
            span class="badge r-success" { "Enabled" }
        }
    }
}

/// A subscription's filters in words.
fn filters_text(s: &Subscription) -> String {
    let mut parts: Vec<String> = Vec::new();
    if s.only_failures {
        parts.push("only failures".into());
    }
    for (what, v) in [
        ("project", &s.project),
        ("pipeline", &s.pipeline),
        ("branch", &s.branch),
    ] {
        if let Some(v) = v {
            parts.push(format!("{what} {v}"));
        }
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn facts(s: &Subscription, admin: bool) -> Markup {
    html! {
        dl class="facts" {
            dt { "Target" } dd { code { (shown_url(&s.url, admin)) } }
            dt { "Format" } dd { (s.format.as_str()) }
            dt { "Events" } dd { (s.events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")) }
            dt { "Filters" } dd { (filters_text(s)) }
            dt { "Signed with" } dd { "the secret " code { (s.secret_name) } }
            @if let Some(r) = &s.disabled_reason { dt { "Disabled because" } dd { (r) } }
        }
    }
}

/// What the session may do with the redeliver buttons, said once per page.
fn scope_note(session: &Session) -> Markup {
    html! {
        @if !session.is_admin() {
            p class="alert" id=(WHY_ID) {
                "Redelivering needs a key with the " code { "admin" } " scope. This session's key ("
                (session.caller.key.name) ", " code { (session.caller.key.prefix) "…" } ") has: "
                (session.caller.key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                ". Sign in with an admin key to send a delivery again."
            }
        }
    }
}

/// The redeliver button of a delivery: a POST form with the session's token for admin keys, a
/// disabled button pointing at the explanation for the others.
fn redeliver_button(session: &Session, d: &Delivery, back: &str) -> Markup {
    html! {
        @if session.is_admin() {
            form method="post" action={ "/admin/deliveries/" (d.id) "/redeliver" } class="inline" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="back" value=(back);
                button type="submit" class="small" aria-label={ "Redeliver " (d.id) } { "Redeliver" }
            }
        } @else {
            button type="button" class="small" disabled aria-describedby=(WHY_ID)
                title="Needs a key with the admin scope" { "Redeliver" }
        }
    }
}

/// The rows of a deliveries table.
fn delivery_rows(
    session: &Session,
    sub: &Subscription,
    items: &[Delivery],
    now: OffsetDateTime,
    back: &str,
    empty: &str,
) -> Markup {
    html! {
        @if items.is_empty() { tr { td colspan="7" class="empty" { (empty) } } }
        @for d in items {
            tr id={ "d-" (d.id) } {
                td { (status_badge(d)) }
                td {
                    a href={ "/admin/deliveries/" (d.id) } { (d.event_type.as_str()) }
                    @if let Some(run) = &d.run_id { br; a class="muted" href={ "/runs/" (run) } { "the run" } }
                }
                td { (when(Some(d.created_at), now)) }
                td class="num" data-value=(d.attempts) { (d.attempts) }
                td {
                    @match (d.last_status_code, &d.last_error) {
                        (Some(code), _) if (200..300).contains(&code) => span class="code ok" { (code) },
                        (Some(code), err) => span class="code bad" title=[err.as_deref().map(strip_urls)] { (code) },
                        (None, Some(err)) => span class="error-text" { (format::cut(&strip_urls(err), 80)) },
                        (None, None) => span class="muted" { "–" },
                    }
                    @if let Some(t) = d.last_attempt_at { br; span class="muted" { (when(Some(t), now)) } }
                }
                td {
                    @match (d.status, d.next_attempt_at) {
                        (DeliveryStatus::Pending, _) if !sub.enabled => span class="muted" { "waits: the subscription is disabled" },
                        (DeliveryStatus::Pending, Some(t)) => span title=(format::datetime_s(t)) { (format::until(t, now)) },
                        (DeliveryStatus::Delivered, _) => span class="muted" { "delivered " (when(d.delivered_at, now)) },
                        _ => span class="muted" { "none: the schedule is spent" },
                    }
                }
                td { (redeliver_button(session, d, back)) }
            }
        }
    }
}

fn delivery_head() -> Markup {
    html! {
        thead { tr {
            th scope="col" { "Status" } th scope="col" { "Event" } th scope="col" { "Created" }
            th scope="col" class="num" { "Attempts" } th scope="col" { "Last answer" }
            th scope="col" { "Next attempt" } th scope="col" { span class="sr-only" { "Action" } }
        } }
    }
}

/// The status tabs of a deliveries view.
fn status_tabs(view: &View, path: &str) -> Markup {
    let current = view.status.map(|s| s.as_str()).unwrap_or("all");
    html! {
        nav aria-label="Delivery status" {
            ul class="legend tabs" {
                @for (w, label) in [("all", "All"), ("pending", "Pending"), ("failed", "Failed"), ("delivered", "Delivered")] {
                    li { a href=(view.link(path, Some(w), &[])) aria-current=[(w == current).then_some("page")] { (label) } }
                }
            }
        }
    }
}

/// The window form of a deliveries view (the status tab rides along).
fn window_form(view: &View, path: &str) -> Markup {
    let status = view.status.map(|s| s.as_str()).unwrap_or("all");
    layout::window_form(path, &view.window, &[("status", status)])
}

/// The notice after a redelivery: what the delivery looks like now (read from the store, so
/// the URL cannot make the page claim anything).
async fn redelivered_notice(
    state: &AppState,
    session: &Session,
    q: &HashMap<String, String>,
) -> Result<Markup, PageError> {
    let Some(id) = q.get("redelivered").filter(|s| !s.is_empty()) else {
        return Ok(html! {});
    };
    let tenant = &session.caller.tenant.id;
    let Some(d) = state.store.get_delivery(tenant, id).await? else {
        return Ok(html! {});
    };
    let sub = state
        .store
        .get_subscription(tenant, &d.delivery.subscription_id)
        .await?;
    Ok(html! {
        div class="alert" role="status" id="redelivered" {
            "Delivery " code { (d.delivery.id) } " is queued again, on a fresh retry schedule."
            @if sub.is_some_and(|s| !s.enabled) {
                " Its subscription is disabled: the delivery waits until the subscription is enabled again."
            } @else if state.delivery.worker {
                " The delivery worker sends it within seconds."
            } @else {
                " This node runs no delivery worker (" code { "delivery_worker = false" } "): a node that runs one sends it."
            }
        }
    })
}

/// `GET /admin/subscriptions`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = build_list(&state, &session, &q).await;
    respond(&session, r)
}

async fn build_list(
    state: &AppState,
    session: &Session,
    q: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let view = View::parse(q, now)?;
    let tenant = &session.caller.tenant.id;
    let subs = state.store.list_subscriptions(tenant).await?;
    let mut recent = Vec::with_capacity(subs.len());
    for s in &subs {
        let page = state
            .store
            .list_deliveries(
                tenant,
                &s.id,
                &view.filter(),
                &PageRequest {
                    limit: RECENT,
                    cursor: None,
                },
            )
            .await?;
        recent.push(page);
    }
    let notice = redelivered_notice(state, session, q).await?;
    let path = "/admin/subscriptions";
    let back = view.link(path, None, &[]);
    let admin = session.is_admin();
    let body = html! {
        h1 { "Subscriptions" }
        p class="muted" {
            "Where this tenant's events are sent, signed with a named secret, and the latest deliveries of each. "
            "A delivery is retried on a schedule until a 2xx answer; any delivery can be sent again."
        }
        (notice)
        (scope_note(session))
        (status_tabs(&view, path))
        (window_form(&view, path))
        @if subs.is_empty() {
            p class="empty" { "No subscription yet. Create one with " code { "cistern subscriptions create" } " or POST /api/v1/subscriptions." }
        }
        @for (s, page) in subs.iter().zip(&recent) {
            section class="subscription" aria-labelledby={ "s-" (s.id) } id={ "sub-" (s.id) } {
                h2 id={ "s-" (s.id) } {
                    span class="mono" { (shown_url(&s.url, admin)) } " " (state_badge(s, now))
                }
                p class="muted mono" { (s.id) }
                (facts(s, admin))
                div class="table-wrap" {
                    table class="deliveries" data-subscription=(s.id) {
                        caption { "Latest deliveries" @if let Some(st) = view.status { " (" (st.as_str()) ")" } ", " (view.window.describe()) }
                        (delivery_head())
                        tbody { (delivery_rows(session, s, &page.items, now, &back, "No delivery in this view.")) }
                    }
                }
                p { a href=(view.link(&format!("{path}/{}", s.id), None, &[])) { "All deliveries of this subscription →" } }
            }
        }
    };
    Ok(layout::page("Subscriptions", session, Nav::Subscriptions, body).into_response())
}

/// `GET /admin/subscriptions/{id}`.
pub async fn one(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = build_one(&state, &session, &id, &q).await;
    respond(&session, r)
}

async fn build_one(
    state: &AppState,
    session: &Session,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let view = View::parse(q, now)?;
    let tenant = &session.caller.tenant.id;
    let Some(s) = state.store.get_subscription(tenant, id).await? else {
        return Err(PageError::NotFound(format!("no subscription {id:?}")));
    };
    let cursor = q.get("cursor").filter(|c| !c.is_empty()).cloned();
    let page = state
        .store
        .list_deliveries(
            tenant,
            id,
            &view.filter(),
            &PageRequest {
                limit: PAGE,
                cursor: cursor.clone(),
            },
        )
        .await?;
    let notice = redelivered_notice(state, session, q).await?;
    let path = format!("/admin/subscriptions/{id}");
    let back = match &cursor {
        Some(c) => view.link(&path, None, &[("cursor", c.as_str())]),
        None => view.link(&path, None, &[]),
    };
    let admin = session.is_admin();
    let title = shown_url(&s.url, admin);
    let body = html! {
        p { a href="/admin/subscriptions" { "← Subscriptions" } }
        h1 { span class="mono" { (title) } " " (state_badge(&s, now)) }
        p class="muted mono" { (s.id) }
        (facts(&s, admin))
        (notice)
        (scope_note(session))
        (status_tabs(&view, &path))
        (window_form(&view, &path))
        div class="table-wrap" {
            table class="deliveries" id="deliveries" data-subscription=(s.id) {
                caption { "Deliveries, newest first" }
                (delivery_head())
                tbody { (delivery_rows(session, &s, &page.items, now, &back, "No delivery in this view.")) }
            }
        }
        @if let Some(c) = &page.next_cursor {
            p { a href=(view.link(&path, None, &[("cursor", c.as_str())])) { "Older deliveries →" } }
        }
    };
    Ok(layout::page(
        &format!("Subscription {id}"),
        session,
        Nav::Subscriptions,
        body,
    )
    .into_response())
}

/// `GET /admin/deliveries/{id}`.
pub async fn delivery(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = build_delivery(&state, &session, &id, &q).await;
    respond(&session, r)
}

async fn build_delivery(
    state: &AppState,
    session: &Session,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let tenant = &session.caller.tenant.id;
    let Some(detail) = state.store.get_delivery(tenant, id).await? else {
        return Err(PageError::NotFound(format!("no delivery {id:?}")));
    };
    let d = &detail.delivery;
    let Some(sub) = state
        .store
        .get_subscription(tenant, &d.subscription_id)
        .await?
    else {
        return Err(PageError::NotFound(format!("no delivery {id:?}")));
    };
    let notice = redelivered_notice(state, session, q).await?;
    let admin = session.is_admin();
    let message = serde_json::to_string_pretty(&detail.message).unwrap_or_default();
    let body = html! {
        p { a href={ "/admin/subscriptions/" (sub.id) } { "← The subscription's deliveries" } }
        h1 { "Delivery " span class="mono" { (d.id) } }
        (notice)
        (scope_note(session))
        dl class="facts" id="delivery" {
            dt { "Status" } dd { (status_badge(d)) }
            dt { "Event" } dd {
                (d.event_type.as_str()) " "
                @if let Some(run) = &d.run_id {
                    a href={ "/runs/" (run) } {
                        @match detail.message["pipeline"]["full_name"].as_str() {
                            Some(name) => { (name) @if let Some(b) = detail.message["build_number"].as_i64() { " #" (b) } },
                            None => "the run",
                        }
                    }
                }
            }
            dt { "Created" } dd { (when(Some(d.created_at), now)) }
            dt { "Subscription" } dd { code { (shown_url(&sub.url, admin)) } " " (state_badge(&sub, now)) }
            dt { "Attempts" } dd { (d.attempts) }
            dt { "Next attempt" } dd {
                @match (d.status, d.next_attempt_at) {
                    (DeliveryStatus::Pending, _) if !sub.enabled => "waits: the subscription is disabled",
                    (DeliveryStatus::Pending, Some(t)) => span title=(format::datetime_s(t)) { (format::until(t, now)) },
                    (DeliveryStatus::Delivered, _) => { "none: delivered " (when(d.delivered_at, now)) },
                    _ => "none: the schedule is spent",
                }
            }
            dt { "Webhook id" } dd { code { (d.id) } " (the " code { "webhook-id" } " header, the same on every attempt)" }
        }
        p { (redeliver_button(session, d, &format!("/admin/deliveries/{}", d.id))) }
        h2 id="attempts" { "Attempts" }
        div class="table-wrap" {
            table aria-labelledby="attempts" {
                thead { tr {
                    th scope="col" class="num" { "#" } th scope="col" { "Started" } th scope="col" class="num" { "Took" }
                    th scope="col" { "Answer" } th scope="col" { "Error" } th scope="col" { "Response body" } th scope="col" { "Node" }
                } }
                tbody {
                    @if detail.attempt_log.is_empty() { tr { td colspan="7" class="empty" { "Not attempted yet." } } }
                    @for a in &detail.attempt_log {
                        tr {
                            td class="num" { (a.attempt) }
                            td title=(format::ago(a.started_at, now)) { (format::datetime_s(a.started_at)) }
                            td class="num" { (format::duration_ms(a.duration_ms)) }
                            td {
                                @match a.status_code {
                                    Some(c) if (200..300).contains(&c) => span class="code ok" { (c) },
                                    Some(c) => span class="code bad" { (c) },
                                    None => span class="muted" { "no answer" },
                                }
                            }
                            td { @match &a.error { Some(e) => span class="error-text" { (strip_urls(e)) }, None => span class="muted" { "–" } } }
                            td { @match &a.response_body { Some(b) if !b.is_empty() => code { (format::cut(b, 200)) }, _ => span class="muted" { "–" } } }
                            td class="mono" { (a.node.as_deref().unwrap_or("–")) }
                        }
                    }
                }
            }
        }
        h2 { "Message" }
        p class="muted" { "The event as recorded when it happened, before it is put in the subscription's format." }
        pre class="json" { (message) }
    };
    Ok(layout::page(&format!("Delivery {id}"), session, Nav::Subscriptions, body).into_response())
}

/// The redeliver form.
#[derive(Deserialize)]
pub struct RedeliverForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: Option<String>,
}

/// `back` with `redelivered=<id>` in its query and the delivery's row as its fragment.
fn back_with(back: &str, id: &str) -> String {
    let (path, query) = back.split_once('?').unwrap_or((back, ""));
    let query = query.split('#').next().unwrap_or("");
    let path = path.split('#').next().unwrap_or(path);
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.retain(|(k, _)| k != "redelivered");
    pairs.push(("redelivered".into(), id.to_owned()));
    format!(
        "{path}?{}#d-{id}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

/// `POST /admin/deliveries/{id}/redeliver`: the session's token, then the `admin` scope, then the
/// store; back to the page the button was on.
pub async fn redeliver(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<RedeliverForm>,
) -> Response {
    if !session.check_csrf(&form.csrf) {
        return super::session::expired_form(&session);
    }
    if !session.is_admin() {
        let body = html! {
            h1 { "Not allowed" }
            div class="alert error" role="alert" {
                "Redelivering needs a key with the " code { "admin" } " scope; this session's key ("
                (session.caller.key.name) ", " code { (session.caller.key.prefix) "…" } ") has: "
                (session.caller.key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) "."
            }
            p { "Nothing was queued. Sign out and sign in with an admin key, or use "
                code { "POST /api/v1/deliveries/" (id) "/redeliver" } " with one." }
        };
        return (
            StatusCode::FORBIDDEN,
            layout::page("Not allowed", &session, Nav::Subscriptions, body),
        )
            .into_response();
    }
    match redeliver_now(state.store.as_ref(), &session.caller.tenant.id, &id).await {
        Ok(d) => {
            tracing::info!(tenant = %session.caller.tenant.slug, key = %session.caller.key.prefix, delivery = %d.id, "redelivery from the dashboard");
            let back = match form.back.as_deref() {
                Some(b) if b.starts_with("/admin/") => safe_next(Some(b)),
                _ => format!("/admin/deliveries/{}", d.id),
            };
            Redirect::to(&back_with(&back, &d.id)).into_response()
        }
        Err(e) => PageError::from(e).render(&session),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_sessions_see_origins() {
        let u = "https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc";
        assert_eq!(shown_url(u, true), u);
        assert_eq!(shown_url(u, false), "https://hooks.example.com/…");
        assert_eq!(
            shown_url("http://127.0.0.1:9000/", false),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            shown_url("https://user:pw@x.example/", false),
            "https://x.example"
        );
        assert_eq!(shown_url("not a url", false), "(not a URL)");
    }

    #[test]
    fn back_links_carry_the_notice_and_the_row() {
        assert_eq!(
            back_with("/admin/subscriptions?days=7&status=failed", "d1"),
            "/admin/subscriptions?days=7&status=failed&redelivered=d1#d-d1"
        );
        assert_eq!(
            back_with("/admin/deliveries/d1?redelivered=d0#x", "d1"),
            "/admin/deliveries/d1?redelivered=d1#d-d1"
        );
    }

    #[test]
    fn views_read_their_filters() {
        let now = OffsetDateTime::now_utc();
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let v = View::parse(&q(&[("days", "7"), ("status", "failed")]), now).unwrap();
        assert_eq!(v.status, Some(DeliveryStatus::Failed));
        assert_eq!(
            v.link("/admin/subscriptions", None, &[]),
            "/admin/subscriptions?days=7&status=failed"
        );
        assert_eq!(
            v.link("/admin/subscriptions", Some("all"), &[]),
            "/admin/subscriptions?days=7"
        );
        let f = v.filter();
        assert_eq!(f.since, Some(now - time::Duration::days(7)));
        assert!(matches!(
            View::parse(&q(&[("status", "lost")]), now),
            Err(PageError::Bad(m)) if m.starts_with("status")
        ));
        assert_eq!(
            View::parse(&q(&[]), now).unwrap().link("/x", None, &[]),
            "/x"
        );
    }
}
