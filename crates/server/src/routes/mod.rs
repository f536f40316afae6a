//! One module per API area, each exporting `router()`; merged here.
//!
//! Routes are added through [`Api`], which records each method and path as it routes it: that
//! table is what the OpenAPI document is checked against (a route without documentation fails
//! the test), and what tells the metrics which routes take reports in which dialect.

pub mod admin;
pub mod allstacks;
pub mod catalog;
pub mod delivery_metrics;
pub mod events;
pub mod exporters;
pub mod health;
pub mod hooks;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod propelo;
pub mod query;
pub mod runs;
pub mod satellites;
pub mod sei;
pub mod subscriptions;
pub mod triggers;

use std::collections::HashMap;

use axum::handler::Handler;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;

use crate::AppState;

/// One routed method and path (axum's `{param}` syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: &'static str,
    /// The path as routed.
    pub path: &'static str,
    /// The dialect of the reports the route takes, for ingestion routes.
    pub dialect: Option<&'static str>,
}

/// A router that records its routes.
pub struct Api {
    router: Router<AppState>,
    table: Vec<Route>,
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! method {
    ($(#[$doc:meta])* $name:ident, $method:literal, $route:ident) => {
        $(#[$doc])*
        pub fn $name<H, T>(self, path: &'static str, handler: H) -> Self
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            self.add($method, path, None, $route(handler))
        }
    };
}

impl Api {
    /// No routes yet.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        dialect: Option<&'static str>,
        route: axum::routing::MethodRouter<AppState>,
    ) -> Self {
        // axum merges the methods of one path routed twice (and panics on a method routed twice).
        self.router = self.router.route(path, route);
        self.table.push(Route {
            method,
            path,
            dialect,
        });
        self
    }

    method!(
        /// Routes `GET path`.
        get, "GET", get
    );
    method!(
        /// Routes `POST path`.
        post, "POST", post
    );
    method!(
        /// Routes `PUT path`.
        put, "PUT", put
    );
    method!(
        /// Routes `PATCH path`.
        patch, "PATCH", patch
    );
    method!(
        /// Routes `DELETE path`.
        delete, "DELETE", delete
    );

    /// Routes `POST path` taking reports in `dialect` (counted by the ingestion metrics).
    pub fn ingest<H, T>(self, dialect: &'static str, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add("POST", path, Some(dialect), post(handler))
    }

    /// Adds another area's routes.
    pub fn merge(mut self, other: Api) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// The routes, in the order they were added.
    pub fn table(&self) -> &[Route] {
        &self.table
    }

    /// Matched path → dialect of the ingestion routes.
    pub fn dialects(&self) -> HashMap<&'static str, &'static str> {
        self.table
            .iter()
            .filter_map(|r| r.dialect.map(|d| (r.path, d)))
            .collect()
    }

    /// The router.
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

/// Every API route of the hub (the dashboard's HTML pages are not part of the API).
pub fn api() -> Api {
    Api::new()
        .merge(health::router())
        .merge(ops::router())
        .merge(hooks::router())
        .merge(admin::router())
        .merge(sei::router())
        .merge(propelo::router())
        .merge(allstacks::router())
        .merge(runs::router())
        .merge(metrics::router())
        .merge(delivery_metrics::router())
        .merge(catalog::router())
        .merge(events::router())
        .merge(satellites::router())
        .merge(subscriptions::router())
        .merge(exporters::router())
        .merge(triggers::router())
        .merge(keys::router())
}

/// The API routes as `(method, path)`, sorted: what the OpenAPI document must describe.
pub fn table() -> Vec<Route> {
    let mut t = api().table().to_vec();
    t.sort();
    t
}

/// Every route of the hub: the API, the dashboard, and a problem+json 404 for the rest.
pub fn router(api: Api) -> Router<AppState> {
    api.into_router()
        .merge(crate::dashboard::router())
        .fallback(fallback)
}

async fn fallback(method: axum::http::Method, uri: axum::http::Uri) -> crate::error::ApiError {
    crate::error::ApiError::not_found(format!("no route for {method} {}", uri.path()))
}
