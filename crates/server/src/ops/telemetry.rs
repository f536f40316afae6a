//! Prometheus metrics: HTTP latency and answers by matched route, ingestion outcomes by dialect,
//! delivery attempts, the store's writer (batch sizes, queue depth) and pool, the outbox depth.
//!
//! Counters and histograms are `prometheus-client` metrics held in this node's registry (no
//! global state: two hubs in one process count apart). The hot path only touches atomics and
//! the families' read locks; the store's numbers are read when Prometheus scrapes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Latency buckets, seconds: from a cached read to a slow group commit.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Labels of an HTTP answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Request method.
    pub method: String,
    /// Matched route (`/api/v1/runs/{id}`), or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Request method.
    pub method: String,
    /// Matched route, or `unmatched`.
    pub route: String,
}

/// Labels of an inbound request's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// Dialect (`sei`, `jenkins`, `allstacks`, `github`, …).
    pub dialect: &'static str,
    /// Matched route.
    pub route: String,
    /// `created`, `updated`, `accepted`, `duplicate`, `registered`, `rejected`.
    pub outcome: &'static str,
    /// Status code.
    pub status: u16,
}

/// Labels of a delivery attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `delivered`, `retry` or `failed` (the schedule is spent).
    pub outcome: &'static str,
}

/// Labels of a retention deletion.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrunedLabels {
    /// `events`, `deliveries`, `delivery_attempts` or `messages`.
    pub table: &'static str,
}

/// What the handlers and the worker count, and the registry they are exported from.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabels, Histogram>,
    ingest: Family<IngestLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_latency: Histogram,
    pruned: Family<PrunedLabels, Counter>,
    in_flight: Gauge,
    shed: Counter,
    rate_limited: Counter,
    outbox_pending: Gauge,
    outbox_due: Gauge,
}

impl Telemetry {
    /// A registry with every metric of the hub; `store` is read at each scrape.
    pub fn new(store: Arc<dyn cistern_store::Store>) -> Self {
        let mut registry = Registry::with_prefix("cistern");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, matched route and status",
            http_requests.clone(),
        );
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register_with_unit(
            "http_request_duration",
            "Time from the request to its answer's headers, by method and matched route",
            prometheus_client::registry::Unit::Seconds,
            http_latency.clone(),
        );
        let ingest = Family::<IngestLabels, Counter>::default();
        registry.register(
            "ingest_requests",
            "Inbound reports by dialect, route, outcome (created, updated, accepted, duplicate, registered, rejected) and status",
            ingest.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Outbound delivery attempts by outcome (delivered, retry, failed)",
            attempts.clone(),
        );
        let attempt_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "delivery_attempt_duration",
            "Time of one outbound delivery attempt",
            prometheus_client::registry::Unit::Seconds,
            attempt_latency.clone(),
        );
        let pruned = Family::<PrunedLabels, Counter>::default();
        registry.register(
            "retention_pruned_rows",
            "Rows deleted by retention, by table",
            pruned.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "Requests being handled now",
            in_flight.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "http_requests_shed",
            "Requests answered 503 because max_in_flight requests were already in flight",
            shed.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_requests",
            "Requests answered 429 because their key (or source) went over its rate",
            rate_limited.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending_deliveries",
            "Deliveries not yet delivered nor given up (read at scrape time)",
            outbox_pending.clone(),
        );
        let outbox_due = Gauge::default();
        registry.register(
            "outbox_due_deliveries",
            "Pending deliveries whose next attempt is due (read at scrape time)",
            outbox_due.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store }));
        Self {
            registry,
            http_requests,
            http_latency,
            ingest,
            attempts,
            attempt_latency,
            pruned,
            in_flight,
            shed,
            rate_limited,
            outbox_pending,
            outbox_due,
        }
    }

    /// Counts an answered request.
    pub fn http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an inbound report's outcome.
    pub fn ingest(&self, dialect: &'static str, route: &str, outcome: &'static str, status: u16) {
        self.ingest
            .get_or_create(&IngestLabels {
                dialect,
                route: route.to_owned(),
                outcome,
                status,
            })
            .inc();
    }

    /// Counts a delivery attempt.
    pub fn attempt(&self, outcome: &'static str, elapsed: Duration) {
        self.attempts
            .get_or_create(&AttemptLabels { outcome })
            .inc();
        self.attempt_latency.observe(elapsed.as_secs_f64());
    }

    /// Counts rows deleted by retention.
    pub fn pruned(&self, table: &'static str, rows: u64) {
        if rows > 0 {
            self.pruned
                .get_or_create(&PrunedLabels { table })
                .inc_by(rows);
        }
    }

    /// The in-flight gauge (the shedding layer keeps it).
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Counts a shed request.
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// Counts a rate-limited request.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// The OpenMetrics text of every metric, after reading the outbox depth.
    pub async fn render(&self, store: &dyn cistern_store::Store) -> Result<String, String> {
        match store.outbox_depth(time::OffsetDateTime::now_utc()).await {
            Ok(depth) => {
                self.outbox_pending
                    .set(i64::try_from(depth.pending).unwrap_or(i64::MAX));
                self.outbox_due
                    .set(i64::try_from(depth.due).unwrap_or(i64::MAX));
            }
            // The rest is still worth a scrape; the gauges keep their last value.
            Err(e) => tracing::warn!(error = %e, "metrics: could not count the outbox"),
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

/// Exports the store's writer and pool numbers at scrape time.
struct StoreCollector {
    store: Arc<dyn cistern_store::Store>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreCollector({})", self.store.backend())
    }
}

/// A value exported as a counter (monotonic since start).
#[derive(Debug)]
struct Total(AtomicU64);

impl Total {
    fn of(v: u64) -> Self {
        Total(AtomicU64::new(v))
    }
}

impl EncodeMetric for Total {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &self.0.load(Ordering::Relaxed),
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl prometheus_client::collector::Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.store.stats();
        let gauge = |v: u64| {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        for (name, help, value) in [
            (
                "store_writer_queue_depth",
                "Writes queued for the group-commit writer, not yet in a batch",
                s.queue_depth,
            ),
            (
                "store_writer_queue_capacity",
                "Writes the writer's queue holds before senders wait",
                s.queue_capacity,
            ),
            (
                "store_pool_connections",
                "Connections of the database pool (SQLite: read connections)",
                s.pool_size,
            ),
            (
                "store_pool_idle_connections",
                "Idle connections of the database pool",
                s.pool_idle,
            ),
            (
                "store_pool_in_use_connections",
                "Connections of the database pool lent to a query now",
                s.pool_size.saturating_sub(s.pool_idle),
            ),
        ] {
            let g = gauge(value);
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        for (name, help, value) in [
            (
                "store_writer_batches",
                "Group commits attempted by the writer",
                s.writer.batches,
            ),
            (
                "store_writer_failed_batches",
                "Group commits that failed as a whole",
                s.writer.failed_batches,
            ),
        ] {
            let t = Total::of(value);
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            t.encode(m)?;
        }
        let busy = prometheus_client::metrics::counter::Counter::<f64>::default();
        busy.inc_by(s.writer.busy_seconds);
        let unit = prometheus_client::registry::Unit::Seconds;
        let m = encoder.encode_descriptor(
            "store_writer_busy",
            "Time the writer spent applying and committing batches",
            Some(&unit),
            MetricType::Counter,
        )?;
        busy.encode(m)?;
        let mut m = encoder.encode_descriptor(
            "store_writer_batch_size",
            "Writes per group commit",
            None,
            MetricType::Histogram,
        )?;
        // The encoder takes each bucket's own count and accumulates them itself.
        let mut buckets = Vec::with_capacity(s.writer.size_buckets.len() + 1);
        let mut below = 0;
        for (bound, cumulative) in &s.writer.size_buckets {
            buckets.push((*bound, cumulative.saturating_sub(below)));
            below = *cumulative;
        }
        buckets.push((f64::INFINITY, s.writer.batches.saturating_sub(below)));
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            s.writer.writes as f64,
            s.writer.batches,
            &buckets,
            None,
        )
    }
}
