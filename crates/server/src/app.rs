//! The application: state, router, listener, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::HeaderName;
use axum::Router;
use cistern_store::Store;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The master key of the named secrets.
    pub master: Arc<crate::secrets::MasterKey>,
    /// The outbound delivery settings, checked.
    pub delivery: Arc<crate::delivery::DeliverySettings>,
    /// Verified API keys, remembered for `auth_cache_ttl`.
    pub keys: Arc<crate::auth::KeyCache>,
    /// Prometheus metrics of this node.
    pub telemetry: Arc<crate::ops::telemetry::Telemetry>,
    /// Rate and in-flight limits of this node.
    pub limits: Arc<crate::ops::limits::Limits>,
    /// How long clients may take to send a request.
    pub timeouts: Timeouts,
    /// How long dashboard sessions last.
    pub sessions: crate::dashboard::session::SessionSettings,
}

/// How long clients may take to send a request (slow clients are held off).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The request line and headers, and the idle wait between requests on a connection.
    pub header: std::time::Duration,
    /// The whole body, from the headers on.
    pub body: std::time::Duration,
}

impl Timeouts {
    /// From the settings; a zero or unreadable duration is refused by name.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let one = |name: &str, text: &str| {
            let d = crate::config::parse_duration(text).map_err(|e| format!("{name}: {e}"))?;
            if d.is_zero() {
                return Err(format!("{name} must be longer than 0s (e.g. 10s)"));
            }
            Ok(d)
        };
        Ok(Self {
            header: one("header_read_timeout", &config.header_read_timeout)?,
            body: one("request_body_timeout", &config.request_body_timeout)?,
        })
    }
}

/// A built hub: the listener is bound, the store open and migrated.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    state: AppState,
    /// The metrics' own listener, when `metrics_listen` is an address.
    metrics: Option<(TcpListener, SocketAddr)>,
    retention: crate::ops::retention::RetentionSettings,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The full router for a state (also used by tests that bring their own listener).
pub fn router(state: AppState) -> Router {
    let api = crate::routes::api();
    let tracker = crate::ops::limits::Tracker {
        state: state.clone(),
        dialects: Arc::new(api.dialects()),
    };
    crate::routes::router(api)
        // Inner first: shedding answers before any handler work; tracking counts the shed too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::ops::limits::shed,
        ))
        // A client that failed authentication too often is refused before any work.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::ops::limits::failed_auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            tracker,
            crate::ops::limits::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            crate::serve::BodyDeadline(state.timeouts.body),
            crate::serve::body_deadline,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn(
            crate::routes::query::refuse_nul_in_uri,
        ))
        .layer(axum::middleware::map_response(
            crate::error::problem_for_bare_errors,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The span of one request: method, route and its request id, so every log line of a request
/// can be found from the `x-request-id` its answer carries. The route is the matched pattern
/// (`/…/custom/{token}/v3`), never the path: paths carry secrets (trigger tokens) and ids.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
        .unwrap_or("(no route)");
    tracing::info_span!("request", method = %req.method(), route = %route, request_id = %id)
}

/// The router of the metrics' own listener.
fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(crate::routes::ops::metrics))
        .with_state(state)
}

/// A handler that panicked answers an opaque 500 problem (and is logged); the server stays up.
fn panic_response(cause: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    axum::response::IntoResponse::into_response(crate::error::ApiError::internal(format!(
        "handler panicked: {what}"
    )))
}

impl Application {
    /// Opens the store named by the configuration and binds the listener (`:0` picks a port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = cistern_store::open(&config.database_url, &config.store_settings())
            .await
            .with_context(|| format!("opening database {}", redact(&config.database_url)))?;
        Self::with_store(config, store).await
    }

    /// Binds the listener for an already opened store.
    pub async fn with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let delivery =
            crate::delivery::DeliverySettings::from_config(&config).map_err(anyhow::Error::msg)?;
        let master = config
            .master_key(store.as_ref())
            .await
            .map_err(anyhow::Error::msg)?;
        let retention = crate::ops::retention::RetentionSettings::from_config(&config)
            .map_err(anyhow::Error::msg)?;
        let limits = crate::ops::limits::Limits::new(
            config.rate_limit,
            config.rate_limit_burst,
            config.max_in_flight,
        )
        .map_err(anyhow::Error::msg)?
        .with_auth_failures(config.auth_failures_per_minute, config.auth_failure_burst)
        .map_err(anyhow::Error::msg)?;
        let timeouts = Timeouts::from_config(&config).map_err(anyhow::Error::msg)?;
        let sessions = crate::dashboard::session::SessionSettings::from_config(&config)
            .map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let metrics = match config.metrics_listen.trim() {
            "main" | "off" => None,
            "" => anyhow::bail!(
                "metrics_listen must be main, off, or an address such as 127.0.0.1:9100"
            ),
            at => {
                let l = TcpListener::bind(at).await.with_context(|| {
                    format!("binding {at} (metrics_listen: main, off, or an address)")
                })?;
                let a = l.local_addr()?;
                Some((l, a))
            }
        };
        let mut delivery = delivery;
        if config
            .public_url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
        {
            // Links in payloads point at the address actually bound (`:0` picks a port).
            delivery.public_url = format!("http://{addr}");
        }
        let key_ttl = crate::config::parse_duration(&config.auth_cache_ttl)
            .map_err(|e| anyhow::anyhow!("auth_cache_ttl: {e}"))?;
        let mut config = config;
        if let Some((_, a)) = &metrics {
            // The address actually bound (`:0` picks a port), as the 404 on /metrics tells.
            config.metrics_listen = a.to_string();
        }
        let state = AppState {
            keys: Arc::new(crate::auth::KeyCache::new(key_ttl)),
            telemetry: Arc::new(crate::ops::telemetry::Telemetry::new(store.clone())),
            store,
            config: Arc::new(config),
            master: Arc::new(master),
            delivery: Arc::new(delivery),
            limits: Arc::new(limits),
            timeouts,
            sessions,
        };
        Ok(Self {
            listener,
            addr,
            router: router(state.clone()),
            state,
            metrics,
            retention,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics' own address, when `metrics_listen` names one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting and drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_with_shutdown(shutdown_signal()).await
    }

    /// Serves until `signal` completes, then drains in-flight requests. The delivery worker
    /// (unless `delivery_worker = false`) runs alongside and stops with the server, after the
    /// attempts it has in flight.
    pub async fn run_with_shutdown(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let worker = if self.state.delivery.worker {
            let w = crate::delivery::Worker::start(
                self.state.store.clone(),
                self.state.master.clone(),
                (*self.state.delivery).clone(),
                Some(self.state.telemetry.clone()),
            )
            .map_err(std::io::Error::other)?;
            Some(w)
        } else {
            None
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let retention = crate::ops::retention::spawn(
            self.state.store.clone(),
            self.retention.clone(),
            self.state.telemetry.clone(),
            self.state.limits.clone(),
            stop_rx.clone(),
        );
        let header_timeout = self.state.timeouts.header;
        let metrics = self.metrics.map(|(listener, _)| {
            let router = metrics_router(self.state.clone());
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = crate::serve::serve(listener, router, header_timeout, stopped).await
                {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            })
        });
        let served = crate::serve::serve(self.listener, self.router, header_timeout, signal).await;
        let _ = stop_tx.send(true);
        if let Some(w) = worker {
            w.stop().await;
        }
        let _ = retention.await;
        if let Some(m) = metrics {
            let _ = m.await;
        }
        served
    }
}

/// The database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
