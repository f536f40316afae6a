//! `GET /admin/triggers`: the tenant's triggers and their latest events, each with what became
//! of it (sent, waiting, refused) and the status of the pipeline run it started. Token URLs are
//! not shown here: they fire triggers, and the dashboard only needs the `read` scope; for the same
//! reason a target URL is shown whole to admin keys only, else reduced to its origin (Jenkins'
//! build tokens and the like travel in it).

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use time::OffsetDateTime;

use super::layout::{self, Nav};
use super::session::Session;
use super::subscriptions::shown_url;
use super::{format, respond, PageError};
use crate::triggers::details;
use crate::AppState;

/// Events shown, newest first, across the tenant's triggers.
const RECENT: usize = 100;

/// `GET /admin/triggers`.
pub async fn page(State(state): State<AppState>, session: Session) -> Response {
    let r = build(&state, &session).await;
    respond(&session, r)
}

/// The badge class of a status word.
fn tone(word: &str) -> &'static str {
    match word {
        details::TARGET_EXECUTION_REQUESTED | "Success" => "r-success",
        "Running" | "Queued" | details::QUEUED => "r-running",
        "Failed"
        | "Aborted"
        | details::TARGET_DID_NOT_EXECUTE
        | details::EXCEPTION_WHILE_PROCESSING => "r-failure",
        "Expired" | details::NO_ENABLED_CUSTOM_TRIGGER_FOUND | details::INVALID_PAYLOAD => {
            "r-unstable"
        }
        _ => "r-neutral",
    }
}

fn badge(word: &str) -> Markup {
    html! { span class={ "badge " (tone(word)) } { (word) } }
}

async fn build(state: &AppState, session: &Session) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let tenant = &session.caller.tenant.id;
    let triggers = state.store.list_triggers(tenant).await?;
    let events = state
        .store
        .list_trigger_events(tenant, None, RECENT)
        .await?;
    let mut by_trigger: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        if let Some(t) = &e.trigger_id {
            *by_trigger.entry(t.as_str()).or_default() += 1;
        }
    }
    let expire = state.delivery.trigger_expire_after;
    let body = html! {
        h1 { "Triggers" }
        p class="muted" {
            "Custom webhooks that start pipelines on the CI systems that run them. "
            "Create them with " code { "cistern triggers create" } " or " code { "POST /api/v1/triggers" } "."
        }
        div class="table-wrap" {
            table id="triggers" {
                thead { tr {
                    th scope="col" { "Trigger" } th scope="col" { "Org / project / pipeline" } th scope="col" { "Target" }
                    th scope="col" { "State" } th scope="col" { "Recent events" }
                } }
                tbody {
                    @if triggers.is_empty() { tr { td colspan="5" class="empty" { "No trigger yet." } } }
                    @for t in &triggers {
                        tr id=(t.id) {
                            td { strong { (t.key.trigger) } br; span class="mono muted" { (t.id) } }
                            td { (t.key.org) " / " (t.key.project) " / " strong { (t.key.pipeline) } }
                            td {
                                span class="mono" { (t.target.method) " " (shown_url(&t.target.url, session.is_admin())) }
                                @if let Some(p) = &t.preset { br; span class="muted" { "preset " (p) } }
                            }
                            td {
                                @if t.enabled { span class="badge r-success" { "Enabled" } } @else { span class="badge r-neutral" { "Disabled" } }
                                @if t.allow_token { br; span class="muted" { "token URL allowed" } }
                                @if t.auth == cistern_store::TriggerAuth::None { br; span class="muted" { "fired without a key (auth: none)" } }
                            }
                            td { (by_trigger.get(t.id.as_str()).copied().unwrap_or(0)) }
                        }
                    }
                }
            }
        }
        h2 { "Latest events" }
        div class="table-wrap" {
            table id="trigger-events" {
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Correlation id" } th scope="col" { "Trigger" }
                    th scope="col" { "Processing" } th scope="col" { "Pipeline" } th scope="col" { "Message" }
                } }
                tbody {
                    @if events.is_empty() { tr { td colspan="6" class="empty" { "No trigger has been called yet." } } }
                    @for e in &events {
                        @let (word, message, _) = details::processing_status(e);
                        tr {
                            td title=(format::datetime(e.created_at)) { (format::ago(e.created_at, now)) }
                            td class="mono" { (e.id) }
                            td { (e.key.trigger) span class="muted" { " · " (e.key.pipeline) } }
                            td { (badge(word)) }
                            td {
                                @match details::pipeline_status(e, now, expire) {
                                    Some(p) => {
                                        (badge(p))
                                        @if let Some(run) = &e.run { " " a href={ "/runs/" (run.id) } { "run" } }
                                    },
                                    None => span class="muted" { "–" },
                                }
                            }
                            td { (message) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Triggers", session, Nav::Triggers, body).into_response())
}
