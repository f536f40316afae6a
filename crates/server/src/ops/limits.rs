//! Limits that keep one caller, or a flood, from taking the hub down: a token bucket per API key
//! (and per signed source), answered 429 with `Retry-After`; and a bound on requests in flight,
//! above which new requests are answered 503 with `Retry-After` at once instead of queueing until
//! everything times out.

use std::net::IpAddr;
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
    auth_failures: Option<AuthFailures>,
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
            auth_failures: None,
        })
    }

    /// Adds the bucket of failed authentications per client address: `per_minute` (0: none)
    /// once `burst` are spent.
    pub fn with_auth_failures(mut self, per_minute: f64, burst: u32) -> Result<Self, String> {
        if !per_minute.is_finite() || per_minute < 0.0 {
            return Err(format!(
                "auth_failures_per_minute must be a number of failed attempts per minute, 0 for no limit; got {per_minute}"
            ));
        }
        if per_minute == 0.0 {
            self.auth_failures = None;
            return Ok(self);
        }
        let burst = NonZeroU32::new(burst).ok_or_else(|| {
            "auth_failure_burst must be at least 1 when auth_failures_per_minute is set".to_owned()
        })?;
        let quota = Quota::with_period(Duration::from_secs_f64(60.0 / per_minute))
            .ok_or_else(|| format!("auth_failures_per_minute {per_minute} is too high"))?
            .allow_burst(burst);
        self.auth_failures = Some(AuthFailures {
            limiter: RateLimiter::keyed(quota),
            blocked: std::sync::Mutex::new(std::collections::HashMap::new()),
            per_minute,
            burst: burst.get(),
        });
        Ok(self)
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
        if let Some(a) = &self.auth_failures {
            a.limiter.retain_recent();
            a.limiter.shrink_to_fit();
            let now = Instant::now();
            a.blocked_map().retain(|_, until| *until > now);
        }
    }
}

/// Failed authentications per client address. Every failure takes a token from the client's
/// bucket; once it is empty the client is refused (429) until a token is back, before its
/// credentials are even looked at, so guessing keys or signatures costs no database read.
struct AuthFailures {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Clients refused until the given time.
    blocked: std::sync::Mutex<std::collections::HashMap<IpAddr, Instant>>,
    per_minute: f64,
    burst: u32,
}

/// Most clients remembered as refused at once; past it, those whose time is up are forgotten.
const BLOCKED_CAPACITY: usize = 65_536;

impl AuthFailures {
    fn blocked_map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<IpAddr, Instant>> {
        self.blocked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `client` is still refused, if it is.
    fn refused_for(&self, client: IpAddr) -> Option<Duration> {
        let mut map = self.blocked_map();
        let until = *map.get(&client)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            map.remove(&client);
            None
        }
    }

    /// Counts one failure of `client`; when its bucket was already empty, refuses it from now on
    /// and says for how long.
    fn failed(&self, client: IpAddr, clock: &DefaultClock) -> Option<Duration> {
        let not_until = self.limiter.check_key(&client).err()?;
        let wait = not_until.wait_time_from(clock.now());
        let mut map = self.blocked_map();
        if map.len() >= BLOCKED_CAPACITY {
            let now = Instant::now();
            map.retain(|_, until| *until > now);
        }
        map.insert(client, Instant::now() + wait);
        Some(wait)
    }

    fn refusal(&self, client: IpAddr, wait: Duration) -> Response {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::rate_limited(
            format!(
                "too many failed authentications from {client}: {} at once, then {} per minute (auth_failure_burst, auth_failures_per_minute); retry in {} s",
                self.burst, self.per_minute, seconds.max(1)
            ),
            seconds,
        )
        .into_response()
    }
}

/// The bucket a client address falls in: itself for IPv4, its /64 for IPv6 (one host usually
/// holds a whole /64, and could otherwise take a fresh bucket per address).
fn client_bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Middleware: a client address that failed authentication too often is answered 429 with
/// `Retry-After` until its bucket refills; every 401 answered counts as a failure.
pub async fn failed_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limits) = state.limits.auth_failures.as_ref() else {
        return next.run(req).await;
    };
    let Some(peer) = crate::serve::peer(&req) else {
        return next.run(req).await;
    };
    if NEVER_SHED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let client = client_bucket(peer.ip());
    if let Some(wait) = limits.refused_for(client) {
        state.telemetry.rate_limited();
        return limits.refusal(client, wait);
    }
    let resp = next.run(req).await;
    if resp.status() == axum::http::StatusCode::UNAUTHORIZED {
        // One failure past the burst is already refused (its 401 is not sent).
        if let Some(wait) = limits.failed(client, &state.limits.clock) {
            state.telemetry.rate_limited();
            return limits.refusal(client, wait);
        }
    }
    resp
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
