//! Admin pages: the section's index, CI/CD instances with their last heartbeat and reported
//! versions, satellites and their health, signed sources with their hook URL and last event,
//! the inbound events log (rejected events and why by default, in a time window, per source),
//! and one event's raw JSON. Subscriptions and their deliveries are in [`super::subscriptions`].

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use cistern_store::{EventFilter, EventStatus, EventView, PageRequest, SecretInfo, Source};
use maud::{html, Markup};
use serde_json::Value;
use time::OffsetDateTime;

use super::filters::Window;
use super::layout::{self, Nav};
use super::session::Session;
use super::{format, respond, PageError};
use crate::routes::satellites::{self, Health, STALE_AFTER_INTERVALS};
use crate::AppState;

/// A heartbeat older than this marks the instance as quiet.
const QUIET_AFTER: time::Duration = time::Duration::minutes(30);

/// `GET /admin/instances`.
pub async fn instances(State(state): State<AppState>, session: Session) -> Response {
    let r = build_instances(&state, &session).await;
    respond(&session, r)
}

/// `details` of a heartbeat as a list: one level of keys, values as text.
/// The integrations a satellite's last heartbeat says no poller reads (`unpolled`), as
/// `application (id)`.
fn unpolled(details: &Value) -> Vec<String> {
    details["unpolled"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    format!(
                        "{} ({})",
                        i["application"].as_str().unwrap_or("?"),
                        i["id"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn details_list(details: &Value) -> Markup {
    match details {
        Value::Object(map) if !map.is_empty() => html! {
            ul class="kv" {
                @for (k, v) in map {
                    li { span class="muted" { (k) ": " } span class="mono" { (format::json_text(v)) } }
                }
            }
        },
        Value::Object(_) | Value::Null => html! { span class="muted" { "–" } },
        other => html! { span class="mono" { (format::json_text(other)) } },
    }
}

async fn build_instances(state: &AppState, session: &Session) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let list = state
        .store
        .list_instances(&session.caller.tenant.id)
        .await?;
    let body = html! {
        h1 { "Instances" }
        p class="muted" { "The CI/CD systems that report to this tenant, their last run and heartbeat, and the versions their last heartbeat reported." }
        div class="table-wrap" {
            table id="instances" {
                thead { tr {
                    th scope="col" { "Instance" } th scope="col" { "Kind" } th scope="col" { "Last run received" }
                    th scope="col" { "Last heartbeat" } th scope="col" { "Versions and settings" }
                } }
                tbody {
                    @if list.is_empty() { tr { td colspan="5" class="empty" { "No instance has reported yet." } } }
                    @for i in &list {
                        tr {
                            td {
                                strong { (i.name.as_deref().unwrap_or("(unnamed)")) } br;
                                span class="mono muted" { (i.guid) } br;
                                span class="muted" title=(format::datetime(i.created_at)) { "registered " (format::ago(i.created_at, now)) }
                                @if let Some(u) = i.url.as_deref().and_then(format::safe_url) { br; a href=(u) rel="noopener noreferrer" { (u) } }
                            }
                            td { (i.kind.as_deref().unwrap_or("–")) }
                            td title=[i.last_seen_at.map(format::datetime)] { (i.last_seen_at.map(|t| format::ago(t, now)).unwrap_or_else(|| "never".into())) }
                            td title=[i.last_heartbeat_at.map(format::datetime)] {
                                @match i.last_heartbeat_at {
                                    Some(t) if now - t > QUIET_AFTER => { span class="badge r-unstable" { "Quiet" } " " (format::ago(t, now)) },
                                    Some(t) => { span class="badge r-success" { "Alive" } " " (format::ago(t, now)) },
                                    None => span class="muted" { "never" },
                                }
                            }
                            td { (i.details.as_ref().map(details_list).unwrap_or_else(|| html! { span class="muted" { "–" } })) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Instances", session, Nav::Instances, body).into_response())
}

/// `GET /admin/events?status=rejected|accepted|all&days=…|since=…&until=…&source=…&cursor=…`.
pub async fn events(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = build_events(&state, &session, &q).await;
    respond(&session, r)
}

/// A query string of `pairs` (without `?`).
pub fn query_of(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// The status badge of an event.
fn event_badge(e: &EventView) -> Markup {
    html! {
        @if e.status == EventStatus::Rejected {
            span class="badge r-failure" { "Rejected " (e.http_status) }
        } @else {
            span class="badge r-success" { "Accepted " (e.http_status) }
        }
    }
}

async fn build_events(
    state: &AppState,
    session: &Session,
    q: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let word = q.get("status").map(String::as_str).unwrap_or("rejected");
    let status = match word {
        "rejected" => Some(EventStatus::Rejected),
        "accepted" => Some(EventStatus::Accepted),
        "all" => None,
        other => {
            return Err(PageError::Bad(format!(
                "status: must be rejected, accepted or all, got {other:?}"
            )))
        }
    };
    let window = Window::parse(q, now).map_err(PageError::Bad)?;
    let tenant = &session.caller.tenant.id;
    let sources: HashMap<String, Source> = state
        .store
        .list_sources(tenant)
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let source = q.get("source").map(|s| s.trim()).filter(|s| !s.is_empty());
    if let Some(id) = source {
        if !sources.contains_key(id) {
            return Err(PageError::NotFound(format!("no source {id:?}")));
        }
    }
    let page = state
        .store
        .list_events(
            tenant,
            &EventFilter {
                status,
                source_id: source.map(str::to_owned),
                since: window.since,
                until: window.until,
            },
            &PageRequest {
                limit: 50,
                cursor: q.get("cursor").filter(|c| !c.is_empty()).cloned(),
            },
        )
        .await?;
    // What every link of this view keeps: the window and the source.
    let mut keep: Vec<(&str, String)> = window.pairs();
    if let Some(id) = source {
        keep.push(("source", id.to_owned()));
    }
    let link = |status: &str, extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = vec![("status", status)];
        pairs.extend(keep.iter().map(|(k, v)| (*k, v.as_str())));
        pairs.extend_from_slice(extra);
        format!("/admin/events?{}", query_of(&pairs))
    };
    let tab = |w: &str, label: &str| {
        html! { li { a href=(link(w, &[])) aria-current=[(w == word).then_some("page")] { (label) } } }
    };
    let mut form_keep: Vec<(&str, &str)> = vec![("status", word)];
    if let Some(id) = source {
        form_keep.push(("source", id));
    }
    let title = match word {
        "rejected" => "Rejected events",
        "accepted" => "Accepted events",
        _ => "All inbound events",
    };
    let body = html! {
        h1 { (title) }
        p class="muted" { "Every inbound request is logged with its raw body; refused ones keep the reasons, so a sender's mistakes can be found and fixed." }
        @if let Some(s) = source.and_then(|id| sources.get(id)) {
            div class="alert" role="status" {
                "Only events of the source " strong { (s.name) } " (" (s.kind) "). "
                a href={ "/admin/events?" (query_of(&[("status", word)])) } { "Show every source" }
            }
        }
        nav aria-label="Event status" { ul class="legend tabs" { (tab("rejected", "Rejected")) (tab("accepted", "Accepted")) (tab("all", "All")) } }
        (layout::window_form("/admin/events", &window, &form_keep))
        div class="table-wrap" {
            table id="events" {
                caption class="sr-only" { (title) ", newest first" }
                thead { tr {
                    th scope="col" { "Received" } th scope="col" { "Endpoint" } th scope="col" { "Status" }
                    th scope="col" { "Why" } th scope="col" { "Body" }
                } }
                tbody {
                    @if page.items.is_empty() { tr { td colspan="5" class="empty" { "No events. Window: " (window.describe()) "." } } }
                    @for e in &page.items {
                        tr {
                            td title=(format::datetime(e.received_at)) { (format::ago(e.received_at, now)) }
                            td {
                                span class="mono" { (e.endpoint) } br;
                                span class="muted" { (e.dialect) @if let Some(t) = &e.request_type { " · " (t) } }
                                @if let Some(src) = e.source_id.as_ref().and_then(|id| sources.get(id)) {
                                    br; span class="muted" { "source " }
                                    @if session.is_admin() {
                                        a href=(link(word, &[("source", src.id.as_str())])) { (src.name) }
                                    } @else { (src.name) }
                                }
                            }
                            td { (event_badge(e)) }
                            td {
                                @if e.errors.is_empty() && e.warnings.is_empty() { span class="muted" { "–" } }
                                ul class="kv" {
                                    @for err in &e.errors {
                                        li { @if !err.field.is_empty() { code { (err.field) } ": " } (err.message) }
                                    }
                                    @for w in &e.warnings {
                                        li { "warning: " @if !w.field.is_empty() { code { (w.field) } ": " } (w.message) }
                                    }
                                }
                            }
                            td {
                                @if let Some(b) = &e.body { code class="mono" { (format::cut(b, 160)) } br; }
                                a href={ "/admin/events/" (e.id) } { "Raw payload (JSON)" } " "
                                span class="muted" { "(" (e.body_size) " bytes" @if e.body_truncated { ", cut to the stored part" } ")" }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &page.next_cursor {
            p { a href=(link(word, &[("cursor", c.as_str())])) { "Older events →" } }
        }
    };
    Ok(layout::page("Events", session, Nav::Events, body).into_response())
}

/// `GET /admin/events/{id}`: the event as the API shows it (with its raw body), as JSON.
pub async fn raw_event(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    match state.store.get_event(&session.caller.tenant.id, &id).await {
        Ok(Some(ev)) => {
            let mut v = serde_json::to_value(&ev).unwrap_or(Value::Null);
            // A JSON body is shown as JSON, not as an escaped string.
            if let Some(parsed) = ev
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
            {
                v["payload"] = parsed;
            }
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            let mut resp = text.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            resp
        }
        Ok(None) => PageError::NotFound(format!("no event with id {id:?}")).render(&session),
        Err(e) => PageError::from(e).render(&session),
    }
}

/// A time as "5 min ago", with the exact time on hover; `never` when absent.
pub fn when(t: Option<OffsetDateTime>, now: OffsetDateTime) -> Markup {
    match t {
        Some(t) => html! { span title=(format::datetime_s(t)) { (format::ago(t, now)) } },
        None => html! { span class="muted" { "never" } },
    }
}

/// The badge of a satellite's health: colour and word.
pub fn health_badge(h: Health) -> Markup {
    let (class, word) = match h {
        Health::Ok => ("r-success", "OK"),
        Health::Degraded => ("r-unstable", "Degraded"),
        Health::Stale => ("r-failure", "Stale"),
    };
    html! { span class={ "badge " (class) } { (word) } }
}

/// `GET /admin`: the admin section, each page with what needs a look.
pub async fn index(State(state): State<AppState>, session: Session) -> Response {
    let r = build_index(&state, &session).await;
    respond(&session, r)
}

async fn build_index(state: &AppState, session: &Session) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let tenant = &session.caller.tenant.id;
    let instances = state.store.list_instances(tenant).await?;
    let quiet = instances
        .iter()
        .filter(|i| i.last_heartbeat_at.is_some_and(|t| now - t > QUIET_AFTER))
        .count();
    let sats = state.store.list_satellites(tenant).await?;
    let unwell = sats
        .iter()
        .filter(|s| satellites::health(&s.heartbeat, now) != Health::Ok)
        .count();
    let sources = state.store.list_sources(tenant).await?;
    let subs = state.store.list_subscriptions(tenant).await?;
    let triggers = state.store.list_triggers(tenant).await?;
    let triggers_off = triggers.iter().filter(|t| !t.enabled).count();
    let disabled = subs.iter().filter(|s| !s.enabled).count();
    let failing = subs
        .iter()
        .filter(|s| s.enabled && s.failing_since.is_some())
        .count();
    let day = state
        .store
        .list_events(
            tenant,
            &EventFilter {
                status: Some(EventStatus::Rejected),
                since: Some(now - time::Duration::days(1)),
                ..EventFilter::default()
            },
            &PageRequest {
                limit: 500,
                cursor: None,
            },
        )
        .await?;
    let rejected = format!(
        "{}{}",
        day.items.len(),
        if day.next_cursor.is_some() { "+" } else { "" }
    );
    let card = |href: &str, title: &str, count: String, what: &str, note: Markup| {
        html! {
            li class="card" {
                h2 { a href=(href) { (title) } }
                p { strong class="count" { (count) } " " (what) }
                p class="muted" { (note) }
            }
        }
    };
    let body = html! {
        h1 { "Admin" }
        p class="muted" { "What reports to this tenant, where it sends notifications, and what it refused." }
        ul class="cards" {
            (card("/admin/instances", "Instances", instances.len().to_string(), "CI/CD instances",
                html! { @if quiet > 0 { (quiet) " quiet for more than 30 min" } @else { "The CI/CD systems that report runs, with their versions." } }))
            (card("/admin/satellites", "Satellites", sats.len().to_string(), "satellites",
                html! { @if unwell > 0 { (unwell) " stale or degraded" } @else { "On-premise relays and their heartbeats." } }))
            (card("/admin/sources", "Sources", sources.len().to_string(), "signed sources",
                html! { "Webhook senders that sign their requests with a named secret." }))
            (card("/admin/subscriptions", "Subscriptions", subs.len().to_string(), "subscriptions",
                html! {
                    @if disabled + failing > 0 { (disabled) " disabled, " (failing) " failing" }
                    @else { "Where notifications go, and every delivery." }
                }))
            (card("/admin/triggers", "Triggers", triggers.len().to_string(), "triggers",
                html! {
                    @if triggers_off > 0 { (triggers_off) " disabled" }
                    @else { "Custom webhooks that start pipelines, and their events." }
                }))
            (card("/admin/events?status=rejected&days=1", "Rejected events", rejected, "in the last day",
                html! { "Refused requests, with the reasons and the raw payload." }))
            @if session.is_admin() {
                li class="card" {
                    h2 { a href="/admin/keys" { "API keys" } }
                    p class="muted" { "Create, rotate (with a grace) and revoke this tenant's keys." }
                }
            }
        }
    };
    Ok(layout::page("Admin", session, Nav::Admin, body).into_response())
}

/// `GET /admin/satellites`.
pub async fn satellites(State(state): State<AppState>, session: Session) -> Response {
    let r = build_satellites(&state, &session).await;
    respond(&session, r)
}

async fn build_satellites(state: &AppState, session: &Session) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let list = state
        .store
        .list_satellites(&session.caller.tenant.id)
        .await?;
    let body = html! {
        h1 { "Satellites" }
        p class="muted" {
            "On-premise relays (" code { "cistern satellite" } "): their last heartbeat, version and spool. A satellite is stale after "
            (STALE_AFTER_INTERVALS) " heartbeat intervals without one, and degraded while its last heartbeat reports an error."
        }
        div class="table-wrap" {
            table id="satellites" {
                caption class="sr-only" { "Satellites and their last heartbeat" }
                thead { tr {
                    th scope="col" { "Satellite" } th scope="col" { "Health" } th scope="col" { "Last heartbeat" }
                    th scope="col" { "Version" } th scope="col" class="num" { "Spool" } th scope="col" { "Last forward" }
                    th scope="col" { "Last error" } th scope="col" { "Reported" }
                } }
                tbody {
                    @if list.is_empty() { tr { td colspan="8" class="empty" { "No satellite has sent a heartbeat yet." } } }
                    @for s in &list {
                        @let hb = &s.heartbeat;
                        @let h = satellites::health(hb, now);
                        tr data-health=(h.as_str()) {
                            th scope="row" {
                                span class="mono" { (hb.satellite_id) } br;
                                span class="muted" title=(format::datetime(s.first_seen_at)) { "first seen " (format::ago(s.first_seen_at, now)) }
                            }
                            td { (health_badge(h)) }
                            td {
                                (when(Some(hb.received_at), now)) br;
                                span class="muted" {
                                    "every " (format::seconds(hb.interval_seconds)) "; stale after "
                                    (format::seconds(hb.interval_seconds * STALE_AFTER_INTERVALS))
                                }
                            }
                            td {
                                span class="mono" { (hb.version) }
                                @if let Some(c) = &hb.config_hash { br; span class="muted" { "config " } span class="mono" title=(c) { (format::short_sha(c)) } }
                            }
                            td class="num" data-value=(hb.spool_depth) { (hb.spool_depth) }
                            td { (when(hb.last_forward_at, now)) }
                            td {
                                @match &hb.last_error { Some(e) => span class="error-text" { (e) }, None => span class="muted" { "–" } }
                                @let unpolled = unpolled(&hb.details);
                                @if !unpolled.is_empty() {
                                    br;
                                    span class="unpolled" {
                                        "Not polled: " (unpolled.join(", "))
                                        " — no poller for these applications (jenkins and gitlab are polled); their tools must push to the relay."
                                    }
                                }
                            }
                            td { (details_list(&hb.details)) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Satellites", session, Nav::Satellites, body).into_response())
}

/// A source's id as a read-only session sees it: enough to tell sources apart, not enough to
/// post to one (the id is the capability in the hook URL).
pub fn masked_id(id: &str) -> String {
    let keep = id
        .char_indices()
        .nth(12)
        .map(|(i, _)| i)
        .unwrap_or(id.len());
    format!("{}…", &id[..keep])
}

/// `GET /admin/sources`.
pub async fn sources(State(state): State<AppState>, session: Session) -> Response {
    let r = build_sources(&state, &session).await;
    respond(&session, r)
}

async fn build_sources(state: &AppState, session: &Session) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let tenant = &session.caller.tenant.id;
    let list = state.store.list_sources(tenant).await?;
    let secrets: HashMap<String, SecretInfo> = state
        .store
        .list_secrets(tenant)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut last: HashMap<String, EventView> = HashMap::new();
    for s in &list {
        let found = state
            .store
            .list_events(
                tenant,
                &EventFilter {
                    source_id: Some(s.id.clone()),
                    ..EventFilter::default()
                },
                &PageRequest {
                    limit: 1,
                    cursor: None,
                },
            )
            .await?;
        if let Some(e) = found.items.into_iter().next() {
            last.insert(s.id.clone(), e);
        }
    }
    let admin = session.is_admin();
    let base = state.delivery.public_url.trim_end_matches('/');
    let body = html! {
        h1 { "Sources" }
        p class="muted" {
            "Signed webhook sources: each has its own hook URL, and its requests are checked against a named secret. "
            "Secret values are never shown; set or rotate one with " code { "cistern secrets set NAME=…" } "."
        }
        @if !admin {
            p class="alert" id="hook-urls-why" {
                "Hook URLs are shown to keys with the " code { "admin" } " scope only: a source's id is what lets a sender post to it. "
                "This session's key (" (session.caller.key.name) ", " code { (session.caller.key.prefix) "…" } ") has: "
                (session.caller.key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) "."
            }
        }
        div class="table-wrap" {
            table id="sources" {
                caption class="sr-only" { "Signed sources" }
                thead { tr {
                    th scope="col" { "Source" } th scope="col" { "Kind" } th scope="col" { "Hook URL" }
                    th scope="col" { "Secret" } th scope="col" { "Last event" }
                } }
                tbody {
                    @if list.is_empty() { tr { td colspan="5" class="empty" { "No signed source yet. Create one with " code { "cistern sources create --kind github --secret NAME" } "." } } }
                    @for s in &list {
                        tr {
                            th scope="row" {
                                (s.name) br;
                                span class="mono muted" { @if admin { (s.id) } @else { (masked_id(&s.id)) } } br;
                                span class="muted" title=(format::datetime(s.created_at)) { "created " (format::ago(s.created_at, now)) }
                            }
                            td { (s.kind) }
                            td {
                                @if admin { code class="hook" { (base) "/v1/hooks/" (s.id) } }
                                @else { span class="muted" { "shown to admin keys" } }
                            }
                            td {
                                @match &s.secret_name {
                                    None => span class="muted" { "none (unsigned CDEvents)" },
                                    Some(name) => {
                                        code { (name) }
                                        @match secrets.get(name) {
                                            None => { br; span class="badge r-failure" { "Missing" } " requests cannot be verified" },
                                            Some(info) => {
                                                br; span class="muted" title=(format::datetime(info.updated_at)) { "set " (format::ago(info.updated_at, now)) }
                                                @if let Some(until) = info.previous_valid_until.filter(|u| *u > now) {
                                                    br; span class="badge r-running" { "Rotating" } " previous value valid " (format::until(until, now))
                                                }
                                            },
                                        }
                                    },
                                }
                            }
                            td {
                                @match last.get(&s.id) {
                                    None => span class="muted" { "none yet" },
                                    Some(e) => {
                                        (event_badge(e)) " " (when(Some(e.received_at), now)) br;
                                        a href={ "/admin/events/" (e.id) } { "Raw payload (JSON)" }
                                        @if admin {
                                            " · " a href={ "/admin/events?" (query_of(&[("status", "all"), ("source", s.id.as_str())])) } { "All its events" }
                                        }
                                    },
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Sources", session, Nav::Sources, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_details_are_listed() {
        let html = details_list(&serde_json::json!({"jenkins_version": "2.462.3", "agents": 6}))
            .into_string();
        assert!(
            html.contains("jenkins_version: </span><span class=\"mono\">2.462.3</span>"),
            "{html}"
        );
        assert!(html.contains(">6<"));
        assert!(details_list(&Value::Null).into_string().contains('–'));
    }

    #[test]
    fn masked_ids_keep_a_prefix() {
        assert_eq!(
            masked_id("src_0123456789abcdef0123456789abcdef01234567"),
            "src_01234567…"
        );
        assert_eq!(masked_id("src_1"), "src_1…");
    }

    #[test]
    fn previews_are_cut_on_characters() {
        assert_eq!(format::cut("ééé", 2), "éé…");
        assert_eq!(format::cut("ab", 2), "ab");
    }
}
