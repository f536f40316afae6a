//! The overview (`/`): the four DORA tiles, deployment and lead-time trends, CI success rate and
//! duration trends, the pipelines failing now, and the latest runs (refreshed every 15 s).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use cistern_core::metrics::{ci_health, Band, CiHealth, Dora};
use cistern_core::Run;
use maud::{html, Markup};
use time::OffsetDateTime;

use super::data::{self, failing_now, latest_runs};
use super::filters::Filters;
use super::layout::{self, badge, Nav};
use super::session::Session;
use super::svg::{Bar, BarChart, LineChart, Series};
use super::{format, respond, PageError};
use crate::routes::metrics::{buckets, compute_dora, Interval};
use crate::AppState;

/// Latest runs shown.
const LATEST: usize = 15;

/// `GET /`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = build(&state, &session, &q).await;
    respond(&session, r)
}

/// `GET /fragments/latest-runs`: the latest runs' table rows, for the refresh script.
pub async fn latest_fragment(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = OffsetDateTime::now_utc();
    // The window slides: a shared `days` view keeps showing the newest runs.
    let f = match Filters::parse(&q, now) {
        Ok(f) => f,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e).into_response(),
    };
    match latest_runs(&state, &session.caller.tenant.id, &f, LATEST).await {
        Ok(runs) => layout::run_rows(&runs, now, true).into_response(),
        Err(e) => PageError::from(e).render(&session),
    }
}

/// The word of a band.
pub fn band_word(b: Band) -> &'static str {
    match b {
        Band::Elite => "Elite",
        Band::High => "High",
        Band::Medium => "Medium",
        Band::Low => "Low",
    }
}

fn band_badge(b: Option<Band>) -> Markup {
    match b {
        Some(b) => html! {
            span class={ "band band-" (band_word(b).to_ascii_lowercase()) } { (band_word(b)) " performer" }
        },
        None => html! { span class="band band-none" { "No data" } },
    }
}

fn num_attr(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The four DORA tiles. Each carries its raw value and counts as data attributes, equal to the
/// `GET /api/v1/metrics/dora` reply for the same filters.
pub fn tiles(d: &Dora) -> Markup {
    let df = &d.deployment_frequency;
    let lt = &d.lead_time;
    let cfr = &d.change_failure_rate;
    let ttr = &d.time_to_restore;
    html! {
        div class="tiles" {
            section class="tile" data-metric="deployment_frequency" data-value=(df.per_day)
                data-count=(df.deployments) aria-labelledby="t-df" {
                h2 id="t-df" { "Deployment frequency" }
                p class="value" { (format!("{:.2}", df.per_day)) " / day" }
                (band_badge(df.band))
                p class="counts" {
                    span data-k="deployments" { (df.deployments) } " successful deployments · "
                    span data-k="deploy_days_per_week" { (df.deploy_days_per_week) } " deploy-days a week (median)"
                }
            }
            section class="tile" data-metric="lead_time" data-value=(num_attr(lt.median_seconds))
                data-count=(lt.count) aria-labelledby="t-lt" {
                h2 id="t-lt" { "Lead time for changes" }
                p class="value" { (lt.median_seconds.map(format::duration_s).unwrap_or_else(|| "–".into())) }
                (band_badge(lt.band))
                p class="counts" {
                    "median of " span data-k="count" { (lt.count) } " commits · p90 "
                    (lt.p90_seconds.map(format::duration_s).unwrap_or_else(|| "–".into()))
                }
            }
            section class="tile" data-metric="change_failure_rate" data-value=(num_attr(cfr.rate))
                data-count=(cfr.deployments) data-failed=(cfr.failed) aria-labelledby="t-cfr" {
                h2 id="t-cfr" { "Change failure rate" }
                p class="value" { (format::percent(cfr.rate)) }
                (band_badge(cfr.band))
                p class="counts" {
                    span data-k="failed" { (cfr.failed) } " of " span data-k="deployments" { (cfr.deployments) }
                    " deployments failed"
                }
            }
            section class="tile" data-metric="time_to_restore" data-value=(num_attr(ttr.median_seconds))
                data-count=(ttr.count) aria-labelledby="t-ttr" {
                h2 id="t-ttr" { "Time to restore" }
                p class="value" { (ttr.median_seconds.map(format::duration_s).unwrap_or_else(|| "–".into())) }
                (band_badge(ttr.band))
                p class="counts" { "median of " span data-k="count" { (ttr.count) } " restorations" }
            }
        }
    }
}

/// A chart in a figure, with its numbers in a table for screen readers and the curious.
pub fn figure(
    caption: &str,
    svg: String,
    legend: Markup,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> Markup {
    html! {
        figure {
            figcaption { (caption) }
            (layout::svg(svg))
            (legend)
            details {
                summary { "Data table" }
                div class="table-wrap" {
                    table {
                        thead { tr { @for h in headers { th scope="col" { (h) } } } }
                        tbody {
                            @for r in rows {
                                tr { @for c in r { td { (c) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A legend of line series.
pub fn line_legend(items: &[(&str, &str)]) -> Markup {
    html! {
        ul class="legend" {
            @for (class, label) in items {
                li {
                    svg class={ "chart " } viewBox="0 0 12 12" aria-hidden="true" {
                        g class={ "series " (class) } { circle cx="6" cy="6" r="5" {} }
                    }
                    " " (label)
                }
            }
        }
    }
}

fn hours(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0} h")
    } else {
        format!("{v:.1} h")
    }
}

fn opt_text(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// A bucket's label: its first day, marked when the bucket is cut short by the window's end.
pub fn bucket_label(since: OffsetDateTime, until: OffsetDateTime, interval: Interval) -> String {
    let full = match interval {
        Interval::Day => time::Duration::days(1),
        Interval::Week => time::Duration::weeks(1),
        Interval::Month => time::Duration::days(28),
    };
    if until - since < full {
        format!("{} (part)", format::short_date(since))
    } else {
        format::short_date(since)
    }
}

fn trend_charts(weekly: &[Dora], ci: &[CiHealth], interval: Interval) -> Markup {
    let week_labels: Vec<String> = weekly
        .iter()
        .map(|d| bucket_label(d.since, d.until, Interval::Week))
        .collect();
    let deploys = BarChart {
        id: "chart-deploys",
        title: "Successful deployments per week",
        bars: weekly
            .iter()
            .zip(&week_labels)
            .map(|(d, l)| Bar {
                label: l.clone(),
                value: d.deployment_frequency.deployments as f64,
            })
            .collect(),
        class: "s-1",
        y_format: |v| format!("{v:.0}"),
    };
    let lead = LineChart {
        id: "chart-lead",
        title: "Lead time for changes per week (hours)",
        x_labels: week_labels.clone(),
        series: vec![
            Series {
                label: "median".into(),
                class: "s-1",
                values: weekly
                    .iter()
                    .map(|d| d.lead_time.median_seconds.map(|s| s / 3600.0))
                    .collect(),
            },
            Series {
                label: "p90".into(),
                class: "s-2",
                values: weekly
                    .iter()
                    .map(|d| d.lead_time.p90_seconds.map(|s| s / 3600.0))
                    .collect(),
            },
        ],
        y_min: Some(0.0),
        y_max: None,
        y_format: hours,
    };
    let ci_labels: Vec<String> = ci
        .iter()
        .map(|h| bucket_label(h.since, h.until, interval))
        .collect();
    let success = LineChart {
        id: "chart-success",
        title: "CI success rate (%)",
        x_labels: ci_labels.clone(),
        series: vec![Series {
            label: "success rate".into(),
            class: "s-ok",
            values: ci
                .iter()
                .map(|h| h.success_rate.map(|r| r * 100.0))
                .collect(),
        }],
        y_min: Some(0.0),
        y_max: Some(100.0),
        y_format: |v| format!("{v:.0} %"),
    };
    let durations = LineChart {
        id: "chart-durations",
        title: "CI run duration (minutes)",
        x_labels: ci_labels.clone(),
        series: vec![
            Series {
                label: "p50".into(),
                class: "s-1",
                values: ci
                    .iter()
                    .map(|h| h.duration_p50_ms.map(|m| m / 60_000.0))
                    .collect(),
            },
            Series {
                label: "p95".into(),
                class: "s-2",
                values: ci
                    .iter()
                    .map(|h| h.duration_p95_ms.map(|m| m / 60_000.0))
                    .collect(),
            },
        ],
        y_min: Some(0.0),
        y_max: None,
        y_format: |v| format!("{v:.0} min"),
    };
    html! {
        div class="grid2" {
            (figure("Deployments per week", deploys.render(), html!{},
                &["Week of", "Successful deployments", "Deploy-days"],
                weekly.iter().zip(&week_labels).map(|(d, l)| vec![l.clone(), d.deployment_frequency.deployments.to_string(),
                    d.deployment_frequency.deploy_days_per_week.to_string()]).collect()))
            (figure("Lead time for changes", lead.render(), line_legend(&[("s-1", "median"), ("s-2", "p90")]),
                &["Week of", "Median", "p90", "Commits"],
                weekly.iter().zip(&week_labels).map(|(d, l)| vec![l.clone(), opt_text(d.lead_time.median_seconds, format::duration_s),
                    opt_text(d.lead_time.p90_seconds, format::duration_s), d.lead_time.count.to_string()]).collect()))
            (figure("CI success rate", success.render(), line_legend(&[("s-ok", "success rate")]),
                &["Period from", "Runs", "Success rate"],
                ci.iter().zip(&ci_labels).map(|(h, l)| vec![l.clone(), h.runs.to_string(), format::percent(h.success_rate)]).collect()))
            (figure("CI duration", durations.render(), line_legend(&[("s-1", "p50"), ("s-2", "p95")]),
                &["Period from", "Runs", "p50", "p95"],
                ci.iter().zip(&ci_labels).map(|(h, l)| vec![l.clone(), h.runs.to_string(),
                    format::opt_duration_ms(h.duration_p50_ms), format::opt_duration_ms(h.duration_p95_ms)]).collect()))
        }
    }
}

async fn build(
    state: &AppState,
    session: &Session,
    q: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let f = Filters::parse(q, now).map_err(PageError::Bad)?;
    let tenant = &session.caller.tenant.id;
    let (dora, weekly) =
        compute_dora(state, tenant, &f.metrics_query(Some(Interval::Week))).await?;
    let ci = state
        .store
        .ci_runs(tenant, &f.metrics_filter(), f.since, f.until)
        .await?;
    let trend: Vec<CiHealth> = buckets(f.since, f.until, f.trend_interval())
        .into_iter()
        .map(|(s, u)| ci_health(&ci, &[], s, u))
        .collect();
    let pipelines = state.store.list_pipelines(tenant).await?;
    let failing = failing_now(&ci);
    let latest = latest_runs(state, tenant, &f, LATEST).await?;
    let options = data::filter_options(state, tenant, &pipelines, &f).await?;

    // The latest run of each failing pipeline, to link it.
    let mut failing_rows = Vec::new();
    for fl in failing.iter().take(12) {
        let mut one = f.clone();
        one.pipeline = Some(fl.pipeline.clone());
        let last: Option<Run> = latest_runs(state, tenant, &one, 1)
            .await?
            .into_iter()
            .next();
        let id = pipelines
            .iter()
            .find(|p| p.full_name == fl.pipeline)
            .map(|p| p.id.clone());
        failing_rows.push((fl, id, last));
    }

    let fq = f.query();
    let body = html! {
        h1 { "Delivery overview" }
        (layout::filter_form("/", &f, &options.projects, &options.pipelines, &options.environments))
        h2 class="sr-only" { "DORA metrics" }
        (tiles(&dora))
        p class="muted" { "The same numbers as " code { "GET /api/v1/metrics/dora" } " for this window and these filters. "
            "Bands are DORA 2023's." }
        h2 { "Trends" }
        (trend_charts(&weekly, &trend, f.trend_interval()))
        h2 id="failing" { "Pipelines failing now" }
        @if failing_rows.is_empty() {
            p class="empty" { "No pipeline's latest run failed." }
        } @else {
            div class="table-wrap" {
                table aria-labelledby="failing" {
                    thead { tr {
                        th scope="col" { "Pipeline" } th scope="col" { "Latest result" }
                        th scope="col" class="num" { "Failed runs in a row" } th scope="col" { "Red since" } th scope="col" { "Latest run" }
                    } }
                    tbody {
                        @for (fl, id, last) in &failing_rows {
                            tr {
                                td { @match id {
                                    Some(id) => a href={ "/pipelines/" (id) "?" (fq) } { (fl.pipeline) },
                                    None => (fl.pipeline),
                                } }
                                td { (badge(fl.result)) }
                                td class="num" { (fl.streak) }
                                td title=(format::datetime(fl.since)) { (format::ago(fl.since, now)) }
                                td { @if let Some(r) = last {
                                    a href={ "/runs/" (r.id) } { "#" (r.build_number.map(|b| b.to_string()).unwrap_or_else(|| r.run_key.clone())) }
                                    " " span class="muted" { (format::ago(r.started_at, now)) }
                                } }
                            }
                        }
                    }
                }
            }
        }
        h2 id="latest" { "Latest runs" }
        p class="refresh-note" id="latest-runs-updated" aria-live="off" { "Refreshes every 15 seconds." }
        div class="table-wrap" {
            table aria-labelledby="latest" {
                (layout::run_head(true))
                tbody id="latest-runs" data-refresh={ "/fragments/latest-runs?" (fq) } {
                    (layout::run_rows(&latest, now, true))
                }
            }
        }
    };
    Ok(layout::page("Overview", session, Nav::Overview, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cistern_core::metrics::{self, Deployment};
    use time::macros::datetime;

    #[test]
    fn partial_buckets_are_marked() {
        let s = datetime!(2024-03-04 0:00 UTC);
        assert_eq!(
            bucket_label(s, s + time::Duration::weeks(1), Interval::Week),
            "Mar 4"
        );
        assert_eq!(
            bucket_label(s, s + time::Duration::days(2), Interval::Week),
            "Mar 4 (part)"
        );
        assert_eq!(
            bucket_label(s, s + time::Duration::days(1), Interval::Day),
            "Mar 4"
        );
    }

    #[test]
    fn tiles_carry_the_metrics_values_and_counts() {
        let since = datetime!(2024-01-01 0:00 UTC);
        let until = datetime!(2024-01-15 0:00 UTC);
        let dep = |id: &str, day: i64, ok: bool| Deployment {
            run_id: id.into(),
            pipeline: "p".into(),
            environment: Some("prod".into()),
            finished_at: since + time::Duration::days(day),
            succeeded: ok,
            failed: !ok,
            cfr_status: false,
            commits: vec![(
                format!("c{id}"),
                Some(since + time::Duration::days(day) - time::Duration::hours(2)),
            )],
        };
        let d = metrics::dora(
            &[dep("1", 1, true), dep("2", 2, false), dep("3", 3, true)],
            &[],
            since,
            until,
        );
        let html = tiles(&d).into_string();
        assert!(html.contains(r#"data-metric="deployment_frequency" data-value="0.14285714285714285" data-count="2""#), "{html}");
        assert!(html.contains(r#"data-metric="change_failure_rate" data-value="0.3333333333333333" data-count="3" data-failed="1""#));
        assert!(html.contains("33.3 %"));
        assert!(html.contains(r#"data-metric="lead_time" data-value="7200" data-count="2""#));
        assert!(html.contains("2 h 00 min"));
        assert!(html.contains("performer"), "bands are written out");
        let empty = metrics::dora(&[], &[], since, until);
        let html = tiles(&empty).into_string();
        assert!(html.contains("No data"));
        assert!(html.contains(r#"data-metric="lead_time" data-value="""#));
    }
}
