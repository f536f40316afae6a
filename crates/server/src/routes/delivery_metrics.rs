//! `GET /metrics/delivery`: the four DORA keys and CI health as Prometheus gauges, for the
//! caller's tenant, over the whole tenant and per pipeline, computed by the same functions as
//! `GET /api/v1/metrics/dora` and `/api/v1/metrics/ci` over the same window.
//!
//! Labels are bounded: `tenant` (the key's tenant slug), `pipeline` (a pipeline's full name, or
//! empty for the whole tenant; at most [`MAX_PIPELINES`] pipelines, those with the latest runs),
//! `quantile` and `key` (fixed sets). No run ids, commits or branches. The scrape needs a key
//! with the `read` scope (Prometheus: `authorization: {credentials: <key>}`), since pipeline
//! names are tenant data; each answer is cached for [`CACHE_FOR`] so frequent scrapes stay cheap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use cistern_core::metrics::{self, Band, CiHealth, Dora};
use cistern_store::MetricsFilter;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use time::OffsetDateTime;

use super::metrics::{compute_dora, MetricsQuery};
use super::query::Params;
use crate::auth::Reader;
use crate::error::ApiError;
use crate::AppState;

/// Most pipelines given series of their own (the rest count in the tenant's series only).
pub const MAX_PIPELINES: usize = 200;

/// How long one tenant's answer is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(30);

/// Days of the window, unless `?days=` says otherwise (1 to 365).
const DEFAULT_DAYS: i64 = 30;

/// The route.
pub fn router() -> super::Api {
    super::Api::new().get("/metrics/delivery", delivery)
}

type F64Gauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Scope {
    tenant: String,
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Quantile {
    tenant: String,
    pipeline: String,
    quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Keyed {
    tenant: String,
    pipeline: String,
    key: String,
}

/// One family per metric, registered in one place so the names and helps are documented once.
struct Families {
    window_days: Family<Scope, F64Gauge>,
    deployments: Family<Scope, F64Gauge>,
    deploys_per_day: Family<Scope, F64Gauge>,
    deploy_days_per_week: Family<Scope, F64Gauge>,
    lead_time: Family<Quantile, F64Gauge>,
    lead_time_count: Family<Scope, F64Gauge>,
    change_failure_rate: Family<Scope, F64Gauge>,
    failed_deployments: Family<Scope, F64Gauge>,
    time_to_restore: Family<Scope, F64Gauge>,
    restores: Family<Scope, F64Gauge>,
    band: Family<Keyed, F64Gauge>,
    ci_runs: Family<Scope, F64Gauge>,
    ci_success_rate: Family<Scope, F64Gauge>,
    ci_duration: Family<Quantile, F64Gauge>,
    ci_flaky_commits: Family<Scope, F64Gauge>,
    ci_red_to_green: Family<Scope, F64Gauge>,
}

impl Families {
    fn register(registry: &mut Registry) -> Self {
        let f = Families {
            window_days: Family::default(),
            deployments: Family::default(),
            deploys_per_day: Family::default(),
            deploy_days_per_week: Family::default(),
            lead_time: Family::default(),
            lead_time_count: Family::default(),
            change_failure_rate: Family::default(),
            failed_deployments: Family::default(),
            time_to_restore: Family::default(),
            restores: Family::default(),
            band: Family::default(),
            ci_runs: Family::default(),
            ci_success_rate: Family::default(),
            ci_duration: Family::default(),
            ci_flaky_commits: Family::default(),
            ci_red_to_green: Family::default(),
        };
        registry.register(
            "delivery_window_days",
            "Days of the window every delivery metric covers (ending now)",
            f.window_days.clone(),
        );
        registry.register(
            "dora_deployments",
            "Successful deployments in the window",
            f.deployments.clone(),
        );
        registry.register(
            "dora_deployment_frequency_per_day",
            "Successful deployments per day over the window",
            f.deploys_per_day.clone(),
        );
        registry.register(
            "dora_deploy_days_per_week",
            "Days with at least one deployment, per week",
            f.deploy_days_per_week.clone(),
        );
        registry.register(
            "dora_lead_time_seconds",
            "Lead time for changes: first commit to deployment, quantile 0.5 or 0.9",
            f.lead_time.clone(),
        );
        registry.register(
            "dora_lead_time_changes",
            "Changes whose lead time was measured",
            f.lead_time_count.clone(),
        );
        registry.register(
            "dora_change_failure_rate",
            "Failed deployments over deployments (0 to 1)",
            f.change_failure_rate.clone(),
        );
        registry.register(
            "dora_failed_deployments",
            "Deployments that failed or caused an incident",
            f.failed_deployments.clone(),
        );
        registry.register(
            "dora_time_to_restore_seconds",
            "Median time from a failure to the next successful deployment",
            f.time_to_restore.clone(),
        );
        registry.register("dora_restores", "Restores measured", f.restores.clone());
        registry.register(
            "dora_band",
            "The band of each key: 4 elite, 3 high, 2 medium, 1 low (absent when not measured)",
            f.band.clone(),
        );
        registry.register(
            "ci_runs",
            "CI runs started in the window",
            f.ci_runs.clone(),
        );
        registry.register(
            "ci_success_rate",
            "Finished CI runs that succeeded, over finished runs (0 to 1)",
            f.ci_success_rate.clone(),
        );
        registry.register(
            "ci_duration_seconds",
            "CI run duration, quantile 0.5 or 0.95",
            f.ci_duration.clone(),
        );
        registry.register(
            "ci_flaky_commits",
            "Commits on which a pipeline both passed and failed",
            f.ci_flaky_commits.clone(),
        );
        registry.register(
            "ci_red_to_green_seconds",
            "Median time from a failure to the next success, over the pipeline's branches",
            f.ci_red_to_green.clone(),
        );
        f
    }

    fn set(family: &Family<Scope, F64Gauge>, s: &Scope, v: f64) {
        family.get_or_create(s).set(v);
    }

    fn dora(&self, s: &Scope, d: &Dora) {
        Self::set(
            &self.deployments,
            s,
            d.deployment_frequency.deployments as f64,
        );
        Self::set(&self.deploys_per_day, s, d.deployment_frequency.per_day);
        Self::set(
            &self.deploy_days_per_week,
            s,
            d.deployment_frequency.deploy_days_per_week,
        );
        for (q, v) in [
            ("0.5", d.lead_time.median_seconds),
            ("0.9", d.lead_time.p90_seconds),
        ] {
            if let Some(v) = v {
                self.lead_time.get_or_create(&quantile(s, q)).set(v);
            }
        }
        Self::set(&self.lead_time_count, s, d.lead_time.count as f64);
        if let Some(r) = d.change_failure_rate.rate {
            Self::set(&self.change_failure_rate, s, r);
        }
        Self::set(
            &self.failed_deployments,
            s,
            d.change_failure_rate.failed as f64,
        );
        if let Some(v) = d.time_to_restore.median_seconds {
            Self::set(&self.time_to_restore, s, v);
        }
        Self::set(&self.restores, s, d.time_to_restore.count as f64);
        for (key, band) in [
            ("deployment_frequency", d.deployment_frequency.band),
            ("lead_time", d.lead_time.band),
            ("change_failure_rate", d.change_failure_rate.band),
            ("time_to_restore", d.time_to_restore.band),
        ] {
            if let Some(b) = band {
                let level = match b {
                    Band::Elite => 4.0,
                    Band::High => 3.0,
                    Band::Medium => 2.0,
                    Band::Low => 1.0,
                };
                self.band
                    .get_or_create(&Keyed {
                        tenant: s.tenant.clone(),
                        pipeline: s.pipeline.clone(),
                        key: key.into(),
                    })
                    .set(level);
            }
        }
    }

    fn ci(&self, s: &Scope, h: &CiHealth) {
        Self::set(&self.ci_runs, s, h.runs as f64);
        if let Some(r) = h.success_rate {
            Self::set(&self.ci_success_rate, s, r);
        }
        for (q, v) in [("0.5", h.duration_p50_ms), ("0.95", h.duration_p95_ms)] {
            if let Some(v) = v {
                self.ci_duration
                    .get_or_create(&quantile(s, q))
                    .set(v / 1000.0);
            }
        }
        Self::set(&self.ci_flaky_commits, s, h.flaky.len() as f64);
        let mut recoveries: Vec<f64> = h.red_to_green.iter().map(|r| r.median_seconds).collect();
        if let Some(v) = metrics::quantile(&mut recoveries, 0.5) {
            Self::set(&self.ci_red_to_green, s, v);
        }
    }
}

fn quantile(s: &Scope, q: &str) -> Quantile {
    Quantile {
        tenant: s.tenant.clone(),
        pipeline: s.pipeline.clone(),
        quantile: q.into(),
    }
}

/// Recent answers, by tenant id (unique per database) and window: one per process, so it needs
/// no place in the app's state.
type Answers = Mutex<HashMap<(String, i64), (Instant, String)>>;

fn answers() -> &'static Answers {
    static ANSWERS: std::sync::OnceLock<Answers> = std::sync::OnceLock::new();
    ANSWERS.get_or_init(Answers::default)
}

async fn ci_health(
    state: &AppState,
    tenant_id: &str,
    m: &MetricsQuery,
) -> Result<CiHealth, ApiError> {
    let runs = state
        .store
        .ci_runs(tenant_id, &m.filter, m.since, m.until)
        .await?;
    Ok(metrics::ci_health(&runs, &[], m.since, m.until))
}

async fn render(
    state: &AppState,
    tenant_id: &str,
    slug: &str,
    days: i64,
) -> Result<String, ApiError> {
    let until = OffsetDateTime::now_utc();
    let since = until - time::Duration::days(days);
    let query = |pipeline: Option<String>| MetricsQuery {
        filter: MetricsFilter {
            pipeline,
            ..MetricsFilter::default()
        },
        since,
        until,
        interval: None,
        csv: false,
    };
    let mut registry = Registry::with_prefix("cistern");
    let f = Families::register(&mut registry);
    let mut pipelines = state.store.list_pipelines(tenant_id).await?;
    pipelines.retain(|p| p.last_run_at.is_some_and(|t| t >= since));
    pipelines.sort_by_key(|p| std::cmp::Reverse(p.last_run_at));
    pipelines.truncate(MAX_PIPELINES);
    let mut scopes = vec![(String::new(), None)];
    scopes.extend(
        pipelines
            .into_iter()
            .map(|p| (p.full_name.clone(), Some(p.full_name))),
    );
    for (label, pipeline) in scopes {
        let s = Scope {
            tenant: slug.to_owned(),
            pipeline: label,
        };
        let m = query(pipeline);
        Families::set(&f.window_days, &s, days as f64);
        let (dora, _) = compute_dora(state, tenant_id, &m).await?;
        f.dora(&s, &dora);
        f.ci(&s, &ci_health(state, tenant_id, &m).await?);
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).map_err(ApiError::internal)?;
    Ok(out)
}

#[utoipa::path(
    get,
    path = "/metrics/delivery",
    tag = "metrics",
    operation_id = "delivery_gauges",
    summary = "DORA and CI health as Prometheus gauges (OpenMetrics text), per tenant and pipeline",
    params(("days" = Option<i64>, Query, description = "Days of the window, ending now (1 to 365, default 30)")),
    responses((status = 200, description = "OpenMetrics text: cistern_dora_* and cistern_ci_* gauges labelled tenant and pipeline (empty for the whole tenant)", body = String, content_type = "application/openmetrics-text"), (status = 400, description = "A bad parameter, named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn delivery(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = Params(q);
    let days = match q.text("days") {
        None => DEFAULT_DAYS,
        Some(d) => match d.parse::<i64>() {
            Ok(n) if (1..=365).contains(&n) => n,
            _ => {
                return Err(ApiError::field(
                    "days",
                    "must be a whole number of days from 1 to 365",
                ))
            }
        },
    };
    let key = (caller.tenant.id.clone(), days);
    let cached = answers().lock().ok().and_then(|a| {
        a.get(&key)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, t)| t.clone())
    });
    let text = match cached {
        Some(t) => t,
        None => {
            let t = render(&state, &caller.tenant.id, &caller.tenant.slug, days).await?;
            if let Ok(mut a) = answers().lock() {
                a.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
                a.insert(key, (Instant::now(), t.clone()));
            }
            t
        }
    };
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}
