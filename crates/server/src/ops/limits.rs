//! Limits that keep one caller, or a flood, from taking the hub down: a token bucket per API key
//! (and per signed source), answered 429 with `Retry-After`; and a bound on requests in flight,
//! above which new requests are answered 503 with `Retry-After` at once instead of queueing until
//! everything times out.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;
use crate::AppState;

/// Paths never shed: probes and the scrape must answer while the hub is busy, or an orchestrator
/// would restart a node that is only loaded.
const NEVER_SHED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The limits of one node.
pub struct Limits {
    keyed: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    rate: f64,
    burst: u32,
    max_in_flight: usize,
    in_flight: AtomicUsize,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl Limits {
    /// From the settings: `rate` requests per second per key (0: no limit) with `burst`, and
    /// at most `max_in_flight` requests at once (0: no bound).
    pub fn new(rate: f64, burst: u32, max_in_flight: usize) -> Result<Self, String> {
        if !rate.is_finite() || rate < 0.0 {
            return Err(format!(
                "rate_limit must be a number of requests per second, 0 for none; got {rate}"
            ));
        }
        let keyed = if rate > 0.0 {
            let period = Duration::from_secs_f64(1.0 / rate);
            let burst = NonZeroU32::new(burst).ok_or_else(|| {
                "rate_limit_burst must be at least 1 when rate_limit is set".to_owned()
            })?;
            let quota = Quota::with_period(period)
                .ok_or_else(|| format!("rate_limit {rate} is too high"))?
                .allow_burst(burst);
            Some(RateLimiter::keyed(quota))
        } else {
            None
        };
        Ok(Self {
            keyed,
            clock: DefaultClock::default(),
            rate,
            burst,
            max_in_flight,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Takes one token from `key`'s bucket; the refusal names the caller (`what`, only built
    /// when refusing) and says how long to wait.
    pub fn check(&self, key: &str, what: impl FnOnce() -> String) -> Result<(), ApiError> {
        let Some(limiter) = &self.keyed else {
            return Ok(());
        };
        // governor looks keys up by their own type: one small copy, and only when a rate is set.
        match limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::rate_limited(
                    format!(
                        "{} went over its rate of {} requests per second (bursts of {}); retry in {} s (rate_limit, rate_limit_burst)",
                        what(), self.rate, self.burst, seconds.max(1)
                    ),
                    seconds,
                ))
            }
        }
    }

    /// Forgets buckets that are full again (keys idle long enough), bounding the map.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.keyed {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Decrements the in-flight count when the request ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Middleware: answers 503 when `max_in_flight` requests are already in flight.
pub async fn shed(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &state.limits;
    if limits.max_in_flight == 0 || NEVER_SHED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let now = limits.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let _slot = InFlight(&limits.in_flight);
    if now > limits.max_in_flight {
        state.telemetry.shed();
        return ApiError::overloaded(
            format!(
                "{} requests are in flight on this node (max_in_flight); retry in a second",
                limits.max_in_flight
            ),
            1,
        )
        .into_response();
    }
    next.run(req).await
}

/// What a handler tells the metrics about an inbound report, beside its status: the dialect
/// when the route alone does not say (signed sources), and an outcome the status does not tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestNote {
    /// Dialect, when the route's is not the whole story.
    pub dialect: Option<&'static str>,
    /// Outcome (`duplicate`, `registered`, `heartbeat`…), when the status does not tell.
    pub outcome: Option<&'static str>,
}

impl IngestNote {
    /// Attaches the note to a response.
    pub fn attach(self, mut resp: Response) -> Response {
        resp.extensions_mut().insert(self);
        resp
    }
}

/// The outcome an ingest status means.
fn outcome_of(status: u16) -> &'static str {
    match status {
        201 => "created",
        200 => "updated",
        202 => "accepted",
        s if s >= 400 => "rejected",
        _ => "other",
    }
}

/// State of the tracking middleware: the app, and the dialect of each ingest route.
#[derive(Clone)]
pub struct Tracker {
    /// The app.
    pub state: AppState,
    /// Matched route → dialect, for the routes that take reports.
    pub dialects: std::sync::Arc<std::collections::HashMap<&'static str, &'static str>>,
}

/// Decrements the in-flight gauge when the request ends, however it ends.
struct GaugeSlot(prometheus_client::metrics::gauge::Gauge);

impl Drop for GaugeSlot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware: counts every answer and its latency by matched route, and inbound reports by
/// dialect and outcome.
pub async fn track(State(t): State<Tracker>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let gauge = t.state.telemetry.in_flight().clone();
    gauge.inc();
    let _slot = GaugeSlot(gauge);
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let route = route
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let telemetry = &t.state.telemetry;
    telemetry.http(method.as_str(), route, status, started.elapsed());
    if method == axum::http::Method::POST {
        if let Some(dialect) = t.dialects.get(route) {
            let note = resp
                .extensions()
                .get::<IngestNote>()
                .copied()
                .unwrap_or_default();
            telemetry.ingest(
                note.dialect.unwrap_or(dialect),
                route,
                note.outcome.unwrap_or_else(|| outcome_of(status)),
                status,
            );
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits() {
        let l = Limits::new(1.0, 3, 0).expect("limits");
        for _ in 0..3 {
            assert!(l.check("k1", || "key".into()).is_ok());
        }
        let e = l.check("k1", || "key".into()).expect_err("over the burst");
        assert_eq!(e.status.as_u16(), 429);
        assert_eq!(e.retry_after, Some(1));
        // Another key has its own bucket.
        assert!(l.check("k2", || "key".into()).is_ok());
    }

    #[test]
    fn no_rate_means_no_limit_and_bad_settings_are_named() {
        let l = Limits::new(0.0, 1, 0).expect("limits");
        for _ in 0..10_000 {
            assert!(l.check("k", || "key".into()).is_ok());
        }
        assert!(Limits::new(-1.0, 1, 0)
            .expect_err("negative")
            .contains("rate_limit"));
        assert!(Limits::new(5.0, 0, 0)
            .expect_err("no burst")
            .contains("rate_limit_burst"));
    }
}
