//! Delivery metrics: `GET /api/v1/metrics/dora` and `GET /api/v1/metrics/ci`, over any slice
//! (`project`, `pipeline`, `repo`, `branch`, `environment`, `instance`) and window (`since`,
//! `until`; the last 30 days by default), optionally as a time series (`interval=day|week|month`),
//! in JSON or CSV (`Accept: text/csv` or `format=csv`).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cistern_core::metrics::{self, CiHealth, Dora};
use cistern_store::MetricsFilter;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

use super::query::Params;
use crate::auth::Reader;
use crate::error::ApiError;
use crate::AppState;

/// Metrics routes.
pub fn router() -> super::Api {
    super::Api::new()
        .get("/api/v1/metrics/dora", dora)
        .get("/api/v1/metrics/ci", ci)
}

/// The window, slice and bucketing of a metrics request.
pub struct MetricsQuery {
    /// Slice.
    pub filter: MetricsFilter,
    /// Window start.
    pub since: OffsetDateTime,
    /// Window end (exclusive).
    pub until: OffsetDateTime,
    /// Bucket length, for a series.
    pub interval: Option<Interval>,
    /// Answer CSV.
    pub csv: bool,
}

/// Bucket length of a series.
#[derive(Debug, Clone, Copy)]
pub enum Interval {
    /// One day.
    Day,
    /// Seven days.
    Week,
    /// A calendar month.
    Month,
}

/// Reads the metrics query parameters.
pub fn parse_query(q: &Params, headers: &HeaderMap) -> Result<MetricsQuery, ApiError> {
    let until = q.time("until")?.unwrap_or_else(OffsetDateTime::now_utc);
    let since = q.time("since")?.unwrap_or(until - Duration::days(30));
    if since >= until {
        return Err(ApiError::field("since", "must be before until"));
    }
    let interval = match q.text("interval").as_deref() {
        None => None,
        Some("day") => Some(Interval::Day),
        Some("week") => Some(Interval::Week),
        Some("month") => Some(Interval::Month),
        Some(other) => {
            return Err(ApiError::field(
                "interval",
                format!("must be day, week or month, got {other:?}"),
            ))
        }
    };
    if let Some(i) = interval {
        let buckets = buckets(since, until, i).len();
        if buckets > 1000 {
            return Err(ApiError::field("interval", format!("makes {buckets} buckets; at most 1000 (use a longer interval or a shorter window)")));
        }
    }
    Ok(MetricsQuery {
        filter: MetricsFilter {
            project: q.text("project"),
            pipeline: q.text("pipeline"),
            repo: q.text("repo"),
            branch: q.text("branch"),
            environment: q.text("environment"),
            instance: q.text("instance"),
        },
        since,
        until,
        interval,
        csv: wants_csv(q, headers)?,
    })
}

/// True when the caller asked for CSV (`format=csv` or `Accept: text/csv`).
pub fn wants_csv(q: &Params, headers: &HeaderMap) -> Result<bool, ApiError> {
    match q.text("format").as_deref() {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(ApiError::field(
                "format",
                format!("must be json or csv, got {other:?}"),
            ))
        }
        None => {}
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv")))
}

/// Consecutive buckets covering `[since, until)`.
pub fn buckets(
    since: OffsetDateTime,
    until: OffsetDateTime,
    interval: Interval,
) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let mut out = Vec::new();
    let mut start = since;
    while start < until && out.len() <= 1000 {
        let end = match interval {
            Interval::Day => start + Duration::days(1),
            Interval::Week => start + Duration::weeks(1),
            Interval::Month => {
                let (y, m) = (start.year(), start.month());
                let (ny, nm) = if m == time::Month::December {
                    (y + 1, time::Month::January)
                } else {
                    (y, m.next())
                };
                let day = start.day().min(nm.length(ny));
                start.replace_date(
                    time::Date::from_calendar_date(ny, nm, day).unwrap_or(start.date()),
                )
            }
        }
        .min(until);
        out.push((start, end));
        start = end;
    }
    out
}

/// A CSV reply. Every cell goes through [`spreadsheet_safe`]: the names in it come from senders.
pub fn csv_reply(header_row: &[&str], rows: Vec<Vec<String>>) -> Response {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(header_row);
    for r in rows {
        let _ = w.write_record(r.iter().map(|c| spreadsheet_safe(c).into_owned()));
    }
    let body = w.into_inner().unwrap_or_default();
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    resp
}

/// A cell a spreadsheet will not run as a formula: one starting with `=`, `+`, `-`, `@`, a tab or
/// a carriage return gets a leading `'` (OWASP's advice against CSV injection), so a pipeline
/// named `=HYPERLINK(...)` is shown as text. Numbers (`-1.5`, `+3`) are left as they are: a
/// spreadsheet reads them as numbers, never as formulas.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell
        .bytes()
        .next()
        .is_some_and(|b| matches!(b, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r'));
    let number = cell.parse::<f64>().is_ok_and(f64::is_finite)
        && cell
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if risky && !number {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

fn num(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_default()
}

fn band(b: Option<metrics::Band>) -> String {
    b.and_then(|b| serde_json::to_value(b).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

const DORA_COLUMNS: [&str; 17] = [
    "since",
    "until",
    "deployments",
    "per_day",
    "deploy_days_per_week",
    "deployment_frequency_band",
    "lead_time_median_seconds",
    "lead_time_p90_seconds",
    "lead_time_count",
    "lead_time_band",
    "change_failure_rate",
    "failed_deployments",
    "deployments_counted",
    "change_failure_rate_band",
    "time_to_restore_median_seconds",
    "time_to_restore_count",
    "time_to_restore_band",
];

fn dora_row(d: &Dora) -> Vec<String> {
    vec![
        crate::routes::query::rfc3339(d.since),
        crate::routes::query::rfc3339(d.until),
        d.deployment_frequency.deployments.to_string(),
        format!("{}", d.deployment_frequency.per_day),
        format!("{}", d.deployment_frequency.deploy_days_per_week),
        band(d.deployment_frequency.band),
        num(d.lead_time.median_seconds),
        num(d.lead_time.p90_seconds),
        d.lead_time.count.to_string(),
        band(d.lead_time.band),
        num(d.change_failure_rate.rate),
        d.change_failure_rate.failed.to_string(),
        d.change_failure_rate.deployments.to_string(),
        band(d.change_failure_rate.band),
        num(d.time_to_restore.median_seconds),
        d.time_to_restore.count.to_string(),
        band(d.time_to_restore.band),
    ]
}

/// Computes the DORA metrics of a query (and its series).
pub async fn compute_dora(
    state: &AppState,
    tenant_id: &str,
    m: &MetricsQuery,
) -> Result<(Dora, Vec<Dora>), ApiError> {
    let deployments = state
        .store
        .deployments(tenant_id, &m.filter, m.since, m.until)
        .await?;
    let mut incidents = state
        .store
        .incidents(tenant_id, &m.filter, m.since, m.until)
        .await?;
    // An incident names a service; it concerns the deployed pipeline of that name (or whose full
    // name ends with it, e.g. `deploy/<service>`), the first such in the deployments' order.
    // Outside a pipeline slice, unmatched ones count too. The deployments' distinct pipelines
    // (a few dozen) are matched, not every deployment: that was incidents × deployments.
    let mut pipelines: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for d in &deployments {
        if seen.insert(d.pipeline.as_str()) {
            pipelines.push(d.pipeline.as_str());
        }
    }
    let pipeline_slice = m.filter.pipeline.is_some();
    incidents.retain_mut(|inc| {
        let Some(service) = inc.pipeline.as_deref() else {
            return !pipeline_slice;
        };
        let suffix = format!("/{service}");
        match pipelines
            .iter()
            .find(|p| **p == service || p.ends_with(&suffix))
        {
            Some(p) => {
                inc.pipeline = Some((*p).to_owned());
                true
            }
            None => !pipeline_slice,
        }
    });
    // Seconds of CPU over a large history: off the async workers.
    let (since, until, interval) = (m.since, m.until, m.interval);
    tokio::task::spawn_blocking(move || {
        let whole = metrics::dora(&deployments, &incidents, since, until);
        let series = match interval {
            Some(i) => buckets(since, until, i)
                .into_iter()
                .map(|(s, u)| metrics::dora(&deployments, &incidents, s, u))
                .collect(),
            None => Vec::new(),
        };
        (whole, series)
    })
    .await
    .map_err(|e| ApiError::internal(format!("computing DORA metrics: {e}")))
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/dora",
    tag = "metrics",
    operation_id = "dora",
    summary = "The four DORA keys with their bands and counts",
    params(("since" = Option<String>, Query, description = "Window start: RFC 3339, a date, or epoch ms (default 30 days before until)"), ("until" = Option<String>, Query, description = "Window end (default now)"), ("pipeline" = Option<String>, Query, description = "Pipeline"), ("environment" = Option<String>, Query, description = "Environment"), ("project" = Option<String>, Query, description = "Project"), ("branch" = Option<String>, Query, description = "Branch"), ("repo" = Option<String>, Query, description = "Repository"), ("instance" = Option<String>, Query, description = "Instance GUID"), ("interval" = Option<String>, Query, description = "Bucket of the series: day, week or month"), ("format" = Option<String>, Query, description = "csv for CSV")),
    responses((status = 200, description = "The metrics", body = Object), (status = 400, description = "A bad parameter, named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn dora(
    State(state): State<AppState>,
    Reader(caller): Reader,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let m = parse_query(&Params(q), &headers)?;
    let (whole, series) = compute_dora(&state, &caller.tenant.id, &m).await?;
    if m.csv {
        let rows = if series.is_empty() {
            vec![dora_row(&whole)]
        } else {
            series.iter().map(dora_row).collect()
        };
        return Ok(csv_reply(&DORA_COLUMNS, rows));
    }
    let mut v = serde_json::to_value(&whole).map_err(ApiError::internal)?;
    if let Some(map) = v.as_object_mut() {
        map.insert("filters".into(), filters_json(&m.filter));
        if m.interval.is_some() {
            map.insert(
                "series".into(),
                serde_json::to_value(&series).map_err(ApiError::internal)?,
            );
        }
    }
    Ok(Json(v).into_response())
}

fn filters_json(f: &MetricsFilter) -> Value {
    json!({"project": f.project, "pipeline": f.pipeline, "repo": f.repo, "branch": f.branch,
           "environment": f.environment, "instance": f.instance})
}

const CI_COLUMNS: [&str; 6] = [
    "since",
    "until",
    "runs",
    "success_rate",
    "duration_p50_ms",
    "duration_p95_ms",
];

fn ci_row(h: &CiHealth) -> Vec<String> {
    vec![
        crate::routes::query::rfc3339(h.since),
        crate::routes::query::rfc3339(h.until),
        h.runs.to_string(),
        num(h.success_rate),
        num(h.duration_p50_ms),
        num(h.duration_p95_ms),
    ]
}

/// Computes CI health of a query (and its series): from the store's day rollups when the slice
/// allows it, else from the runs (the same numbers either way).
pub async fn compute_ci(
    state: &AppState,
    tenant_id: &str,
    m: &MetricsQuery,
) -> Result<(CiHealth, Vec<CiHealth>), ApiError> {
    let bounds = m
        .interval
        .map(|i| buckets(m.since, m.until, i))
        .unwrap_or_default();
    if let Some(fast) = state
        .store
        .ci_health_fast(tenant_id, &m.filter, m.since, m.until, &bounds)
        .await?
    {
        return Ok(fast);
    }
    let runs = state
        .store
        .ci_runs(tenant_id, &m.filter, m.since, m.until)
        .await?;
    let stages = state
        .store
        .stage_stats(tenant_id, &m.filter, m.since, m.until)
        .await?;
    let whole = metrics::ci_health(&runs, &stages, m.since, m.until);
    let series = bounds
        .into_iter()
        .map(|(s, u)| metrics::ci_health(&runs, &[], s, u))
        .collect();
    Ok((whole, series))
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/ci",
    tag = "metrics",
    operation_id = "ci_health",
    summary = "CI health: success rate, durations, red to green, flaky pipelines, slowest and most failing stages",
    params(("since" = Option<String>, Query, description = "Window start: RFC 3339, a date, or epoch ms (default 30 days before until)"), ("until" = Option<String>, Query, description = "Window end (default now)"), ("pipeline" = Option<String>, Query, description = "Pipeline"), ("environment" = Option<String>, Query, description = "Environment"), ("project" = Option<String>, Query, description = "Project"), ("branch" = Option<String>, Query, description = "Branch"), ("repo" = Option<String>, Query, description = "Repository"), ("instance" = Option<String>, Query, description = "Instance GUID"), ("interval" = Option<String>, Query, description = "Bucket of the series: day, week or month"), ("format" = Option<String>, Query, description = "csv for CSV")),
    responses((status = 200, description = "The metrics", body = Object), (status = 400, description = "A bad parameter, named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn ci(
    State(state): State<AppState>,
    Reader(caller): Reader,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let m = parse_query(&Params(q), &headers)?;
    let (whole, series) = compute_ci(&state, &caller.tenant.id, &m).await?;
    if m.csv {
        let rows = if series.is_empty() {
            vec![ci_row(&whole)]
        } else {
            series.iter().map(ci_row).collect()
        };
        return Ok(csv_reply(&CI_COLUMNS, rows));
    }
    let mut v = serde_json::to_value(&whole).map_err(ApiError::internal)?;
    if let Some(map) = v.as_object_mut() {
        map.insert("filters".into(), filters_json(&m.filter));
        if m.interval.is_some() {
            let brief: Vec<Value> = series
                .iter()
                .map(|h| json!({"since": crate::routes::query::rfc3339(h.since), "until": crate::routes::query::rfc3339(h.until),
                    "runs": h.runs, "success_rate": h.success_rate, "duration_p50_ms": h.duration_p50_ms, "duration_p95_ms": h.duration_p95_ms}))
                .collect();
            map.insert("series".into(), Value::Array(brief));
        }
    }
    Ok(Json(v).into_response())
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_safe;

    #[test]
    fn formulas_become_text_and_numbers_stay_numbers() {
        for (cell, want) in [
            (
                "=HYPERLINK(\"http://evil.example\",\"x\")",
                "'=HYPERLINK(\"http://evil.example\",\"x\")",
            ),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("-inf", "'-inf"),
            ("-NaN", "'-NaN"),
            ("-1.5", "-1.5"),
            ("+3", "+3"),
            ("-2e3", "-2e3"),
            ("deploy", "deploy"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_safe(cell), want, "{cell:?}");
        }
    }
}
