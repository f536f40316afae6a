//! One module per API area, each exporting `router()`; merged here.

pub mod admin;
pub mod allstacks;
pub mod catalog;
pub mod events;
pub mod health;
pub mod hooks;
pub mod ingest;
pub mod metrics;
pub mod propelo;
pub mod query;
pub mod runs;
pub mod satellites;
pub mod sei;
pub mod subscriptions;
pub mod triggers;

use axum::Router;

use crate::AppState;

/// Every route of the hub.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(hooks::router())
        .merge(admin::router())
        .merge(sei::router())
        .merge(propelo::router())
        .merge(allstacks::router())
        .merge(runs::router())
        .merge(metrics::router())
        .merge(catalog::router())
        .merge(events::router())
        .merge(crate::dashboard::router())
        .merge(satellites::router())
        .merge(subscriptions::router())
        .merge(triggers::router())
        .fallback(fallback)
}

async fn fallback(method: axum::http::Method, uri: axum::http::Uri) -> crate::error::ApiError {
    crate::error::ApiError::not_found(format!("no route for {method} {}", uri.path()))
}
