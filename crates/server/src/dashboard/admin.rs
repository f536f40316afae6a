//! Admin pages: CI/CD instances with their last heartbeat and reported versions, the inbound
//! events log (rejected events and why by default), and one event's raw JSON.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use cistern_store::{EventFilter, EventStatus, PageRequest};
use maud::{html, Markup};
use serde_json::Value;
use time::OffsetDateTime;

use super::layout::{self, Nav};
use super::session::Session;
use super::{format, respond, PageError};
use crate::AppState;

/// A heartbeat older than this marks the instance as quiet.
const QUIET_AFTER: time::Duration = time::Duration::minutes(30);

/// `GET /admin/instances`.
pub async fn instances(State(state): State<AppState>, session: Session) -> Response {
    let r = build_instances(&state, &session).await;
    respond(&session, r)
}

/// `details` of a heartbeat as a list: one level of keys, values as text.
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
                                span class="mono muted" { (i.guid) }
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
        p class="muted" { "Sources, subscriptions and triggers will appear here once the hub manages them." }
    };
    Ok(layout::page("Instances", session, Nav::Instances, body).into_response())
}

/// `GET /admin/events?status=rejected|accepted|all&cursor=…`.
pub async fn events(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = build_events(&state, &session, &q).await;
    respond(&session, r)
}

/// The first `max` characters of a body.
fn preview(body: &str, max: usize) -> String {
    let mut out: String = body.chars().take(max).collect();
    if body.chars().nth(max).is_some() {
        out.push('…');
    }
    out
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
    let page = state
        .store
        .list_events(
            &session.caller.tenant.id,
            &EventFilter {
                status,
                ..EventFilter::default()
            },
            &PageRequest {
                limit: 50,
                cursor: q.get("cursor").filter(|c| !c.is_empty()).cloned(),
            },
        )
        .await?;
    let tab = |w: &str, label: &str| {
        html! { li { a href={ "/admin/events?status=" (w) } aria-current=[(w == word).then_some("page")] { (label) } } }
    };
    let body = html! {
        h1 { (match word { "rejected" => "Rejected events", "accepted" => "Accepted events", _ => "All inbound events" }) }
        p class="muted" { "Every inbound request is logged with its raw body; refused ones keep the reasons, so a sender's mistakes can be found and fixed." }
        nav aria-label="Event status" { ul class="legend" { (tab("rejected", "Rejected")) (tab("accepted", "Accepted")) (tab("all", "All")) } }
        div class="table-wrap" {
            table id="events" {
                thead { tr {
                    th scope="col" { "Received" } th scope="col" { "Endpoint" } th scope="col" { "Status" }
                    th scope="col" { "Why" } th scope="col" { "Body" }
                } }
                tbody {
                    @if page.items.is_empty() { tr { td colspan="5" class="empty" { "No events." } } }
                    @for e in &page.items {
                        tr {
                            td title=(format::datetime(e.received_at)) { (format::ago(e.received_at, now)) }
                            td { span class="mono" { (e.endpoint) } br; span class="muted" { (e.dialect) @if let Some(t) = &e.request_type { " · " (t) } } }
                            td {
                                @if e.status == EventStatus::Rejected {
                                    span class="badge r-failure" { "Rejected " (e.http_status) }
                                } @else {
                                    span class="badge r-success" { "Accepted " (e.http_status) }
                                }
                            }
                            td {
                                @if e.errors.is_empty() { span class="muted" { "–" } }
                                ul class="kv" {
                                    @for err in &e.errors {
                                        li { @if !err.field.is_empty() { code { (err.field) } ": " } (err.message) }
                                    }
                                }
                            }
                            td {
                                @if let Some(b) = &e.body { code class="mono" { (preview(b, 160)) } br; }
                                a href={ "/admin/events/" (e.id) } { "raw JSON" } " "
                                span class="muted" { "(" (e.body_size) " bytes)" }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &page.next_cursor {
            p { a href={ "/admin/events?" (serde_urlencoded::to_string([("status", word), ("cursor", c.as_str())]).unwrap_or_default()) } { "Older events →" } }
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
    fn previews_are_cut_on_characters() {
        assert_eq!(preview("ééé", 2), "éé…");
        assert_eq!(preview("ab", 2), "ab");
    }
}
