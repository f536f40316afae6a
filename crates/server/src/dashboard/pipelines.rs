//! `/pipelines` (sortable: name, last result, success rate, p50/p95 duration, last run) and
//! `/pipelines/{id}`: duration trend with each run a point, success rate, slowest stages, recent
//! runs.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use cistern_core::metrics::ci_health;
use cistern_core::{Run, RunResult};
use cistern_store::PipelineSummary;
use maud::{html, Markup};
use time::OffsetDateTime;

use super::data::{self, health_by_pipeline, PipelineHealth};
use super::filters::Filters;
use super::layout::{self, opt_badge, Nav};
use super::overview::figure;
use super::session::Session;
use super::svg::{self, Point, Scatter, Shape};
use super::{format, respond, PageError};
use crate::AppState;

/// `GET /pipelines`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = build_list(&state, &session, &q).await;
    respond(&session, r)
}

/// `GET /pipelines/{id}`.
pub async fn one(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = build_one(&state, &session, &id, &q).await;
    respond(&session, r)
}

/// A column of the pipelines table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Full name.
    Name,
    /// Latest result (failures first when ascending).
    LastResult,
    /// Success rate over the window.
    SuccessRate,
    /// Median duration.
    P50,
    /// 95th percentile duration.
    P95,
    /// Runs in the window.
    Runs,
    /// Latest run's start.
    LastRun,
}

impl SortKey {
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("last_result") => Self::LastResult,
            Some("success_rate") => Self::SuccessRate,
            Some("p50") => Self::P50,
            Some("p95") => Self::P95,
            Some("runs") => Self::Runs,
            Some("last_run") => Self::LastRun,
            _ => Self::Name,
        }
    }
    fn word(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::LastResult => "last_result",
            Self::SuccessRate => "success_rate",
            Self::P50 => "p50",
            Self::P95 => "p95",
            Self::Runs => "runs",
            Self::LastRun => "last_run",
        }
    }
}

/// Rank of a result when sorting: failures first.
fn result_rank(r: Option<RunResult>) -> u8 {
    match r {
        Some(RunResult::Failure) | Some(RunResult::Error) => 0,
        Some(RunResult::Unstable) => 1,
        Some(RunResult::Running) | Some(RunResult::Queued) | Some(RunResult::OnHold) => 2,
        Some(RunResult::Aborted) | Some(RunResult::Skipped) => 3,
        Some(RunResult::Success) => 4,
        None => 5,
    }
}

fn cmp_opt(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Sorts pipelines with their health by a column; rows without a value stay last either way,
/// ties fall back to the name.
pub fn sort_rows(rows: &mut [(PipelineSummary, PipelineHealth)], key: SortKey, ascending: bool) {
    rows.sort_by(|(a, ha), (b, hb)| {
        let primary = match key {
            SortKey::Name => a.full_name.to_lowercase().cmp(&b.full_name.to_lowercase()),
            SortKey::LastResult => result_rank(a.last_result).cmp(&result_rank(b.last_result)),
            SortKey::SuccessRate => cmp_opt(ha.success_rate, hb.success_rate),
            SortKey::P50 => cmp_opt(ha.p50_ms, hb.p50_ms),
            SortKey::P95 => cmp_opt(ha.p95_ms, hb.p95_ms),
            SortKey::Runs => ha.runs.cmp(&hb.runs),
            SortKey::LastRun => match (a.last_run_at, b.last_run_at) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
        };
        let missing = |p: &PipelineSummary, h: &PipelineHealth| match key {
            SortKey::SuccessRate => h.success_rate.is_none(),
            SortKey::P50 => h.p50_ms.is_none(),
            SortKey::P95 => h.p95_ms.is_none(),
            SortKey::LastRun => p.last_run_at.is_none(),
            _ => false,
        };
        let primary = match (missing(a, ha), missing(b, hb)) {
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            _ if ascending => primary,
            _ => primary.reverse(),
        };
        primary.then_with(|| a.full_name.cmp(&b.full_name))
    });
}

fn matches_slice(p: &PipelineSummary, f: &Filters) -> bool {
    f.project
        .as_ref()
        .is_none_or(|x| p.project.as_ref() == Some(x))
        && f.pipeline
            .as_ref()
            .is_none_or(|x| &p.full_name == x || &p.name == x)
}

async fn build_list(
    state: &AppState,
    session: &Session,
    q: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let f = Filters::parse(q, now).map_err(PageError::Bad)?;
    let key = SortKey::parse(q.get("sort").map(String::as_str));
    let ascending = q.get("dir").map(String::as_str) != Some("desc");
    let tenant = &session.caller.tenant.id;
    let all = state.store.list_pipelines(tenant).await?;
    let options = data::filter_options(state, tenant, &all, &f).await?;
    let ci = state
        .store
        .ci_runs(tenant, &f.metrics_filter(), f.since, f.until)
        .await?;
    let health = health_by_pipeline(&ci, f.since, f.until);
    let mut rows: Vec<(PipelineSummary, PipelineHealth)> = all
        .into_iter()
        .filter(|p| matches_slice(p, &f))
        .map(|p| {
            let h = health.get(&p.full_name).cloned().unwrap_or_default();
            (p, h)
        })
        .collect();
    sort_rows(&mut rows, key, ascending);
    let fq = f.query();
    let head = |k: SortKey, label: &str, numeric: bool| {
        let current = k == key;
        let next_dir = if current && ascending { "desc" } else { "asc" };
        let aria = current.then_some(if ascending { "ascending" } else { "descending" });
        html! {
            th scope="col" class=[numeric.then_some("num")] data-sort=(if numeric { "num" } else { "text" }) aria-sort=[aria] {
                a class="sort" href={ "/pipelines?" (fq) "&sort=" (k.word()) "&dir=" (next_dir) } { (label) }
            }
        }
    };
    let body = html! {
        h1 { "Pipelines" }
        (layout::filter_form("/pipelines", &f, &options.projects, &options.pipelines, &options.environments))
        p class="muted" { "Success rate and durations cover the runs started in the window; last result and last run are the latest ever." }
        div class="table-wrap" {
            table data-sortable id="pipelines" {
                thead { tr {
                    (head(SortKey::Name, "Pipeline", false))
                    (head(SortKey::LastResult, "Last result", false))
                    (head(SortKey::SuccessRate, "Success rate", true))
                    (head(SortKey::P50, "p50 duration", true))
                    (head(SortKey::P95, "p95 duration", true))
                    (head(SortKey::Runs, "Runs", true))
                    (head(SortKey::LastRun, "Last run", true))
                } }
                tbody {
                    @if rows.is_empty() {
                        tr { td colspan="7" class="empty" { "No pipeline has reported a run yet." } }
                    }
                    @for (p, h) in &rows {
                        tr {
                            td data-value=(p.full_name.to_lowercase()) {
                                a href={ "/pipelines/" (p.id) "?" (fq) } { (p.full_name) }
                                @if let Some(proj) = &p.project { br; span class="muted" { (proj) " · " (p.instance_name.as_deref().unwrap_or(&p.instance_guid)) } }
                            }
                            td data-value=(result_rank(p.last_result)) { (opt_badge(p.last_result)) }
                            td class="num" data-value=[h.success_rate] { (format::percent(h.success_rate)) }
                            td class="num" data-value=[h.p50_ms] { (format::opt_duration_ms(h.p50_ms)) }
                            td class="num" data-value=[h.p95_ms] { (format::opt_duration_ms(h.p95_ms)) }
                            td class="num" data-value=(h.runs) { (h.runs) }
                            td class="num" data-value=[p.last_run_at.map(cistern_core::to_millis)]
                                title=[p.last_run_at.map(format::datetime)] {
                                (p.last_run_at.map(|t| format::ago(t, now)).unwrap_or_else(|| "never".into()))
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Pipelines", session, Nav::Pipelines, body).into_response())
}

/// The mark and colour of a run's point.
fn point_style(r: RunResult) -> (&'static str, Shape) {
    let class = format::result_class(r);
    let shape = match r {
        RunResult::Success => Shape::Circle,
        RunResult::Failure | RunResult::Error => Shape::Triangle,
        _ => Shape::Square,
    };
    (class, shape)
}

/// The duration chart: each run a point at its start, coloured and shaped by its result.
pub fn duration_chart(runs: &[Run], f: &Filters) -> String {
    let points = runs
        .iter()
        .filter_map(|r| {
            let d = r.duration_ms?;
            let (class, shape) = point_style(r.result);
            Some(Point {
                x: cistern_core::to_millis(r.started_at) as f64,
                y: d as f64 / 60_000.0,
                class,
                shape,
                title: format!(
                    "#{} {} · {} · {}",
                    r.build_number
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| r.run_key.clone()),
                    format::result_label(r.result),
                    format::duration_ms(d),
                    format::datetime(r.started_at)
                ),
                href: Some(format!("/runs/{}", r.id)),
            })
        })
        .collect();
    Scatter {
        id: "chart-run-durations",
        title: "Run durations (minutes) by start time",
        points,
        x_range: (
            cistern_core::to_millis(f.since) as f64,
            cistern_core::to_millis(f.until) as f64,
        ),
        x_format: |ms| format::short_date(cistern_core::from_millis(ms as i64)),
        y_format: |v| format!("{v:.0} min"),
    }
    .render()
}

fn shape_legend() -> Markup {
    let item = |class: &str, shape: Shape, label: &str| {
        let mark = match shape {
            Shape::Circle => html! { circle cx="6" cy="6" r="5" {} },
            Shape::Triangle => html! { path d="M6,0 L12,12 L0,12 Z" {} },
            Shape::Square => html! { rect x="1" y="1" width="10" height="10" {} },
        };
        html! {
            li { svg class="chart" viewBox="0 0 12 12" aria-hidden="true" { g class=(class) { (mark) } } " " (label) }
        }
    };
    html! {
        ul class="legend" {
            (item("r-success", Shape::Circle, "success (circle)"))
            (item("r-failure", Shape::Triangle, "failure or error (triangle)"))
            (item("r-neutral", Shape::Square, "other: unstable, aborted… (square)"))
        }
    }
}

async fn build_one(
    state: &AppState,
    session: &Session,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let mut f = Filters::parse(q, now).map_err(PageError::Bad)?;
    let tenant = &session.caller.tenant.id;
    let all = state.store.list_pipelines(tenant).await?;
    let Some(p) = all.into_iter().find(|p| p.id == id) else {
        return Err(PageError::NotFound(format!("no pipeline with id {id:?}")));
    };
    f.pipeline = Some(p.full_name.clone());
    let runs = data::pipeline_runs(state, tenant, &p.id, &p.full_name, &f, 500).await?;
    let filter = f.metrics_filter();
    let ci = state
        .store
        .ci_runs(tenant, &filter, f.since, f.until)
        .await?;
    let ci: Vec<_> = ci
        .into_iter()
        .filter(|r| r.pipeline == p.full_name)
        .collect();
    let stages = state
        .store
        .stage_stats(tenant, &filter, f.since, f.until)
        .await?;
    let stages: Vec<_> = stages
        .into_iter()
        .filter(|s| s.pipeline == p.full_name)
        .collect();
    let health = ci_health(&ci, &stages, f.since, f.until);
    let slowest: Vec<_> = health
        .slowest_stages
        .iter()
        .filter(|s| s.kind == "stage")
        .take(8)
        .collect();
    let fq = f.without_pipeline().query();
    let stage_bars = svg::BarChart {
        id: "chart-stages",
        title: "Mean duration of the slowest stages (minutes)",
        bars: slowest
            .iter()
            .map(|s| svg::Bar {
                label: s.name.clone(),
                value: s.avg_duration_ms.unwrap_or(0.0) / 60_000.0,
            })
            .collect(),
        class: "s-1",
        y_format: |v| format!("{v:.1}"),
    };
    let body = html! {
        p { a href={ "/pipelines?" (fq) } { "← Pipelines" } }
        h1 { (p.full_name) }
        dl class="facts" {
            dt { "Project" } dd { (p.project.as_deref().unwrap_or("–")) }
            dt { "Instance" } dd { (p.instance_name.as_deref().unwrap_or("–")) " " span class="mono muted" { (p.instance_guid) } }
            dt { "Latest result" } dd { (opt_badge(p.last_result)) }
            dt { "Runs ever" } dd { (p.runs) }
            @if let Some(t) = p.config_changed_at {
                dt { "Configuration changed" } dd { (format::datetime_s(t)) " (" (format::ago(t, now)) ")" }
            }
        }
        form method="get" action={ "/pipelines/" (p.id) } class="filters" aria-label="Window" {
            div class="field" {
                label for="f-days" { "Window" }
                select id="f-days" name="days" {
                    @for d in [7i64, 14, 30, 90, 180] {
                        option value=(d) selected[f.days == Some(d)] { "Last " (d) " days" }
                    }
                }
            }
            div class="field" {
                label for="f-branch" { "Branch" }
                input id="f-branch" name="branch" type="text" value=[f.branch.as_deref()] placeholder="any";
            }
            div class="field actions" { button type="submit" { "Apply" } }
        }
        p class="window" { "Window: " (format::datetime(f.since)) " – " (format::datetime(f.until)) }
        ul class="stats" {
            li { span class="muted" { "Runs in window" } strong data-k="runs" { (health.runs) } }
            li { span class="muted" { "Success rate" } strong data-k="success_rate" { (format::percent(health.success_rate)) } }
            li { span class="muted" { "p50 duration" } strong { (format::opt_duration_ms(health.duration_p50_ms)) } }
            li { span class="muted" { "p95 duration" } strong { (format::opt_duration_ms(health.duration_p95_ms)) } }
        }
        div class="grid2" {
            (figure("Duration of each run", duration_chart(&runs, &f), shape_legend(),
                &["Run", "Result", "Started", "Duration"],
                runs.iter().take(100).map(|r| vec![
                    r.build_number.map(|b| format!("#{b}")).unwrap_or_else(|| r.run_key.clone()),
                    format::result_label(r.result).to_owned(),
                    format::datetime(r.started_at),
                    r.duration_ms.map(format::duration_ms).unwrap_or_else(|| "–".into()),
                ]).collect()))
            (figure("Slowest stages (mean minutes)", stage_bars.render(), html!{},
                &["Stage", "Runs", "Mean", "Longest", "Failures"],
                slowest.iter().map(|s| vec![s.name.clone(), s.runs.to_string(),
                    format::opt_duration_ms(s.avg_duration_ms),
                    s.max_duration_ms.map(format::duration_ms).unwrap_or_else(|| "–".into()),
                    s.failures.to_string()]).collect()))
        }
        h2 id="slowest" { "Slowest stages and steps" }
        div class="table-wrap" {
            table aria-labelledby="slowest" {
                thead { tr { th scope="col" { "Stage / step" } th scope="col" { "Kind" } th scope="col" class="num" { "Runs" }
                    th scope="col" class="num" { "Mean" } th scope="col" class="num" { "Longest" } th scope="col" class="num" { "Failures" } } }
                tbody {
                    @if health.slowest_stages.is_empty() { tr { td colspan="6" class="empty" { "No stages reported in this window." } } }
                    @for s in &health.slowest_stages {
                        tr { td { (s.name) } td { (s.kind) } td class="num" { (s.runs) }
                            td class="num" { (format::opt_duration_ms(s.avg_duration_ms)) }
                            td class="num" { (s.max_duration_ms.map(format::duration_ms).unwrap_or_else(|| "–".into())) }
                            td class="num" { (s.failures) } }
                    }
                }
            }
        }
        @if !health.failing_stages.is_empty() {
            h2 id="failing-stages" { "Most failing stages and steps" }
            div class="table-wrap" {
                table aria-labelledby="failing-stages" {
                    thead { tr { th scope="col" { "Stage / step" } th scope="col" class="num" { "Failures" } th scope="col" class="num" { "Runs" } } }
                    tbody {
                        @for s in &health.failing_stages {
                            tr { td { (s.name) } td class="num" { (s.failures) } td class="num" { (s.runs) } }
                        }
                    }
                }
            }
        }
        h2 id="recent" { "Recent runs" }
        div class="table-wrap" {
            table aria-labelledby="recent" {
                (layout::run_head(false))
                tbody { (layout::run_rows(&runs[..runs.len().min(25)], now, false)) }
            }
        }
    };
    Ok(layout::page(&p.full_name, session, Nav::Pipelines, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, last: Option<RunResult>, at: Option<i64>) -> PipelineSummary {
        PipelineSummary {
            id: name.into(),
            full_name: name.into(),
            name: name.into(),
            qualified_name: None,
            project: None,
            module: None,
            instance_guid: "g".into(),
            instance_name: None,
            runs: 1,
            last_result: last,
            last_run_at: at.map(cistern_core::from_millis),
            config_changed_at: None,
        }
    }

    fn h(rate: Option<f64>, p50: Option<f64>) -> PipelineHealth {
        PipelineHealth {
            runs: 1,
            success_rate: rate,
            p50_ms: p50,
            p95_ms: p50,
        }
    }

    fn names(rows: &[(PipelineSummary, PipelineHealth)]) -> Vec<&str> {
        rows.iter().map(|(p, _)| p.full_name.as_str()).collect()
    }

    #[test]
    fn sorting_by_each_column_keeps_missing_values_last() {
        let mut rows = vec![
            (
                p("b", Some(RunResult::Success), Some(2_000_000_000_000)),
                h(Some(0.9), Some(10.0)),
            ),
            (p("a", Some(RunResult::Failure), None), h(None, None)),
            (
                p("C", Some(RunResult::Error), Some(1_000_000_000_000)),
                h(Some(0.5), Some(30.0)),
            ),
        ];
        sort_rows(&mut rows, SortKey::Name, true);
        assert_eq!(names(&rows), ["a", "b", "C"]);
        sort_rows(&mut rows, SortKey::Name, false);
        assert_eq!(names(&rows), ["C", "b", "a"]);
        sort_rows(&mut rows, SortKey::SuccessRate, true);
        assert_eq!(names(&rows), ["C", "b", "a"]);
        sort_rows(&mut rows, SortKey::SuccessRate, false);
        assert_eq!(names(&rows), ["b", "C", "a"], "no rate stays last");
        sort_rows(&mut rows, SortKey::P50, false);
        assert_eq!(names(&rows), ["C", "b", "a"]);
        sort_rows(&mut rows, SortKey::LastResult, true);
        assert_eq!(
            names(&rows),
            ["C", "a", "b"],
            "failures first, ties by name"
        );
        sort_rows(&mut rows, SortKey::LastRun, false);
        assert_eq!(names(&rows), ["b", "C", "a"]);
    }

    #[test]
    fn sort_words_round_trip() {
        for k in [
            SortKey::Name,
            SortKey::LastResult,
            SortKey::SuccessRate,
            SortKey::P50,
            SortKey::P95,
            SortKey::Runs,
            SortKey::LastRun,
        ] {
            assert_eq!(SortKey::parse(Some(k.word())), k);
        }
        assert_eq!(SortKey::parse(Some("nonsense")), SortKey::Name);
    }
}
