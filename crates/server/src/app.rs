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
}

/// A built hub: the listener is bound, the store open and migrated.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    state: AppState,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The full router for a state (also used by tests that bring their own listener).
pub fn router(state: AppState) -> Router {
    crate::routes::router()
        .with_state(state)
        .layer(axum::middleware::from_fn(
            crate::routes::query::refuse_nul_in_uri,
        ))
        .layer(axum::middleware::map_response(
            crate::error::problem_for_bare_errors,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
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
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let mut delivery = delivery;
        if config
            .public_url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
        {
            // Links in payloads point at the address actually bound (`:0` picks a port).
            delivery.public_url = format!("http://{addr}");
        }
        let state = AppState {
            store,
            config: Arc::new(config),
            master: Arc::new(master),
            delivery: Arc::new(delivery),
        };
        Ok(Self {
            listener,
            addr,
            router: router(state.clone()),
            state,
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
            )
            .map_err(std::io::Error::other)?;
            Some(w)
        } else {
            None
        };
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(signal)
            .await;
        if let Some(w) = worker {
            w.stop().await;
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
