//! `/runs/{id}`: the run's header (result, times, trigger, branch, commits, params, artifacts),
//! its stages and steps as a timeline drawn to scale, and the failure logs under the stage or
//! step they belong to, with error lines marked. The raw payload is one link away.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use cistern_core::{Run, RunResult, Stage};
use maud::{html, Markup};
use time::OffsetDateTime;

use super::data::{timeline, Bar};
use super::layout::{self, badge, opt_badge, Nav};
use super::session::Session;
use super::{format, respond, PageError};
use crate::AppState;

/// `GET /runs/{id}`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let r = build(&state, &session, &id).await;
    respond(&session, r)
}

/// A log with its error lines marked, and a link to the first of them.
pub fn log_block(anchor: &str, text: &str, truncated: bool) -> Markup {
    let lines: Vec<(usize, &str, bool)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i, l, format::is_error_line(l)))
        .collect();
    let errors = lines.iter().filter(|(_, _, e)| *e).count();
    let first = lines.iter().find(|(_, _, e)| *e).map(|(i, _, _)| *i);
    html! {
        div class="log-tools" {
            @if truncated { span class="muted" { "Only the end of this log was kept. " } }
            @match first {
                Some(i) => {
                    (errors) " line" (if errors == 1 { "" } else { "s" }) " mention an error or failure. "
                    a href={ "#" (anchor) "-l" (i) } { "Jump to the first" }
                },
                None => span class="muted" { "No line mentions an error." },
            }
        }
        pre class="log" tabindex="0" aria-label="Log" {
            code {
                @for (i, line, err) in &lines {
                    @if *err {
                        mark class="l" id={ (anchor) "-l" (i) } { (line) }
                    } @else {
                        span class="l" { (line) }
                    }
                }
            }
        }
    }
}

fn gantt(bars: &[Bar], total_ms: i64) -> Markup {
    let total = total_ms.max(1) as f64;
    html! {
        ol class="gantt" aria-label="Stages and steps on a time line" {
            @for b in bars {
                @let x = (b.offset_ms as f64 / total * 1000.0).clamp(0.0, 1000.0);
                @let w = (b.duration_ms as f64 / total * 1000.0).clamp(0.0, 1000.0 - x).max(2.0);
                @let class = b.result.map(format::result_class).unwrap_or("r-neutral");
                li class=(if b.depth == 0 { "stage" } else { "step" }) {
                    span class="name" {
                        a href={ "#" (b.anchor) } { (b.name) }
                    }
                    span class="track" {
                        svg viewBox="0 0 1000 14" preserveAspectRatio="none" aria-hidden="true" {
                            rect class=(class) x=(format!("{x:.1}")) y="1" width=(format!("{w:.1}")) height="12" rx="2" {}
                        }
                    }
                    span class="meta" {
                        (opt_badge(b.result)) " "
                        (format::duration_ms(b.duration_ms)) ", from +" (format::duration_ms(b.offset_ms))
                        @if b.estimated { " (start not reported)" }
                    }
                }
            }
        }
    }
}

fn stage_section(anchor: &str, title: &str, s: &Stage) -> Markup {
    html! {
        section class="log" id=(anchor) aria-labelledby={ (anchor) "-h" } {
            h3 id={ (anchor) "-h" } {
                (title) " " (opt_badge(s.result))
                @if let Some(u) = s.url.as_deref().and_then(format::safe_url) {
                    " " a href=(u) rel="noopener noreferrer" { "full log" }
                }
            }
            @if let Some(log) = &s.log {
                (log_block(anchor, log, s.log_truncated))
            }
        }
    }
}

/// True when a stage or step is worth a log section: it has a log, or it failed.
fn has_story(s: &Stage) -> bool {
    s.log.is_some()
}

fn header(r: &Run, now: OffsetDateTime) -> Markup {
    let repo = r.repo_url.as_deref();
    html! {
        dl class="facts" {
            dt { "Result" } dd { (badge(r.result)) " " span class="muted" { "(sent as " code { (r.source_result) } ")" } }
            dt { "Pipeline" } dd { a href={ "/pipelines/" (r.pipeline.id) } { (r.pipeline.full_name) }
                @if let Some(p) = &r.pipeline.project { " · project " (p) } }
            dt { "Started" } dd { (format::datetime_s(r.started_at)) " (" (format::ago(r.started_at, now)) ")" }
            dt { "Finished" } dd { (r.finished_at.map(format::datetime_s).unwrap_or_else(|| "–".into())) }
            dt { "Duration" } dd { (r.duration_ms.map(format::duration_ms).unwrap_or_else(|| "–".into())) }
            dt { "Triggered by" } dd {
                (r.triggered_by.as_deref().unwrap_or("–"))
                @for c in &r.trigger_chain {
                    @if let Some(kind) = c.get("type").and_then(|v| v.as_str()) { " · " span class="muted" { (kind) } }
                }
            }
            dt { "Branch" } dd { (r.branch.as_deref().unwrap_or("–")) }
            @if r.cd {
                dt { "Deployment" } dd { "to " strong { (r.environment.as_deref().unwrap_or("an unnamed environment")) }
                    @if r.cfr_status == Some(true) { " · flagged as a change failure" } }
            }
            dt { "Repository" } dd {
                @match repo.and_then(format::safe_url) {
                    Some(u) => a href=(u) rel="noopener noreferrer" { (u) },
                    None => (r.repo.as_deref().or(repo).unwrap_or("–")),
                }
            }
            dt { "Commits" } dd {
                @if r.commits.is_empty() { "–" }
                ul class="kv" {
                    @for c in &r.commits {
                        li class="mono" {
                            @match format::commit_url(repo, &c.sha) {
                                Some(u) => a href=(u) rel="noopener noreferrer" title=(c.sha) { (format::short_sha(&c.sha)) },
                                None => span title=(c.sha) { (format::short_sha(&c.sha)) },
                            }
                            @if let Some(t) = c.committed_at { " " span class="muted" { (format::datetime(t)) } }
                        }
                    }
                }
            }
            dt { "Instance" } dd { (r.instance.name.as_deref().unwrap_or("–")) " " span class="mono muted" { (r.instance.guid) } }
            @if let Some(u) = r.web_url.as_deref().and_then(format::safe_url) {
                dt { "In the CI system" } dd { a href=(u) rel="noopener noreferrer" { (u) } }
            }
            dt { "Raw payload" } dd {
                @match &r.event_id {
                    Some(e) => a href={ "/admin/events/" (e) } { "event " span class="mono" { (e) } " (JSON)" },
                    None => "–",
                }
                " · reported by the " (r.source) " dialect"
            }
        }
        @if !r.params.is_empty() {
            h2 id="params" { "Parameters" }
            div class="table-wrap" {
                table aria-labelledby="params" {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } th scope="col" { "Type" } } }
                    tbody { @for p in &r.params { tr { td class="mono" { (p.name) } td class="mono" { (format::json_text(&p.value)) } td { (p.kind.as_deref().unwrap_or("–")) } } } }
                }
            }
        }
        @if !r.artifacts.is_empty() {
            h2 id="artifacts" { "Artifacts" }
            ul {
                @for a in &r.artifacts {
                    li {
                        @let get = |k: &str| a.get(k).map(format::json_text);
                        @let dir = match (a.get("input").and_then(|v| v.as_bool()), a.get("output").and_then(|v| v.as_bool())) {
                            (Some(true), _) => "input ", (_, Some(true)) => "output ", _ => "" };
                        (dir) (get("type").unwrap_or_default()) " "
                        strong { (get("name").unwrap_or_else(|| "artifact".into())) }
                        @if let Some(q) = get("qualifier") { " " span class="mono" { (q) } }
                        @if let Some(l) = get("location") { " at " span class="mono" { (l) } }
                        @if let Some(h) = get("hash") { br; span class="mono muted" { (h) } }
                    }
                }
            }
        }
    }
}

async fn build(state: &AppState, session: &Session, id: &str) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let Some(run) = state.store.get_run(&session.caller.tenant.id, id).await? else {
        return Err(PageError::NotFound(format!("no run with id {id:?}")));
    };
    // The warnings the run's latest report was accepted with (a duration that looks like
    // seconds, a log that did not come), from its event.
    let warnings = match &run.event_id {
        Some(e) => state
            .store
            .get_event(&session.caller.tenant.id, e)
            .await?
            .map(|ev| ev.warnings)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let (bars, total) = timeline(&run);
    let failed_first = run.result.is_failed() || run.result == RunResult::Unstable;
    let title = format!(
        "{} #{}",
        run.pipeline.full_name,
        run.build_number
            .map(|b| b.to_string())
            .unwrap_or_else(|| run.run_key.clone())
    );
    let logs: Vec<(String, String, &Stage)> = run
        .stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let mut v = Vec::new();
            if has_story(s) {
                v.push((format!("stage-{i}"), s.name.clone(), s));
            }
            for (j, st) in s.steps.iter().enumerate() {
                if has_story(st) {
                    v.push((
                        format!("stage-{i}-step-{j}"),
                        format!("{} › {}", s.name, st.name),
                        st,
                    ));
                }
            }
            v
        })
        .collect();
    let body = html! {
        h1 { (title) " " (badge(run.result)) }
        @if !warnings.is_empty() {
            section class="warnings" aria-labelledby="warnings-h" {
                h2 id="warnings-h" { "Warnings" }
                p class="muted" { "The sender's last report was accepted as sent, with these warnings:" }
                ul {
                    @for w in &warnings {
                        li { code { (w.field) } ": " (w.message) }
                    }
                }
            }
        }
        (header(&run, now))
        h2 id="timeline" { "Timeline" }
        @if bars.is_empty() {
            p class="empty" { "This run reported no stages." }
        } @else {
            p class="muted" { "Bars are to scale over " (format::duration_ms(total)) "." }
            (gantt(&bars, total))
        }
        h2 id="logs" { (if failed_first { "Failure logs" } else { "Logs" }) }
        @if logs.is_empty() && run.log.is_none() {
            p class="empty" { "No logs were sent with this run." }
        }
        @if let Some(log) = &run.log {
            section class="log" id="run-log" aria-labelledby="run-log-h" {
                h3 id="run-log-h" { "Run log" }
                (log_block("run-log", log, run.log_truncated))
            }
        }
        @for (anchor, name, s) in &logs {
            (stage_section(anchor, name, s))
        }
        // Sections for stages without logs, so the timeline's links always land somewhere.
        @for (i, s) in run.stages.iter().enumerate() {
            @if !has_story(s) {
                span id={ "stage-" (i) } {}
            }
            @for (j, st) in s.steps.iter().enumerate() {
                @if !has_story(st) {
                    span id={ "stage-" (i) "-step-" (j) } {}
                }
            }
        }
    };
    Ok(layout::page(&title, session, Nav::None, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_marked_and_linked() {
        let html =
            log_block("s0", "compiling\nerror: boom <b>\nok\ntest FAILED", true).into_string();
        assert!(
            html.contains(r##"<a href="#s0-l1">Jump to the first</a>"##),
            "{html}"
        );
        assert!(html.contains(r#"<mark class="l" id="s0-l1">error: boom &lt;b&gt;</mark>"#));
        assert!(html.contains(r#"<mark class="l" id="s0-l3">test FAILED</mark>"#));
        assert!(html.contains(r#"<span class="l">compiling</span>"#));
        assert!(html.contains("2 lines mention"));
        assert!(html.contains("Only the end"));
        let quiet = log_block("s1", "all good", false).into_string();
        assert!(quiet.contains("No line mentions an error"));
    }

    #[test]
    fn gantt_bars_are_to_scale() {
        let bars = vec![
            Bar {
                depth: 0,
                name: "build".into(),
                result: Some(RunResult::Success),
                offset_ms: 0,
                duration_ms: 2_500,
                anchor: "stage-0".into(),
                estimated: false,
            },
            Bar {
                depth: 1,
                name: "test".into(),
                result: Some(RunResult::Failure),
                offset_ms: 5_000,
                duration_ms: 5_000,
                anchor: "stage-1".into(),
                estimated: true,
            },
        ];
        let html = gantt(&bars, 10_000).into_string();
        assert!(
            html.contains(r#"class="r-success" x="0.0" y="1" width="250.0""#),
            "{html}"
        );
        assert!(html.contains(r#"class="r-failure" x="500.0" y="1" width="500.0""#));
        assert!(
            html.contains("Failure"),
            "the result is written, not only coloured"
        );
        assert!(html.contains("(start not reported)"));
    }
}
