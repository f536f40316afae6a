//! The web dashboard, served from the hub at `/`: DORA tiles and trends, pipelines, runs with
//! their timelines and failure logs, and the admin section (instances, satellites, sources,
//! subscriptions with their deliveries and a redeliver button, rejected events). Server-rendered HTML (maud,
//! checked at compile time) with charts drawn as SVG on the server; a few KB of embedded script
//! only refresh the latest runs and sort tables. Pages need a session (see [`session`]).

pub mod admin;
pub mod assets;
pub mod data;
pub mod filters;
pub mod format;
pub mod keys;
pub mod layout;
pub mod overview;
pub mod pipelines;
pub mod runs;
pub mod session;
pub mod subscriptions;
pub mod svg;
pub mod triggers;

use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cistern_store::StoreError;
use maud::html;

use crate::error::ApiError;
use crate::AppState;
use session::Session;

/// The dashboard's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/fragments/latest-runs", get(overview::latest_fragment))
        .route("/pipelines", get(pipelines::list))
        .route("/pipelines/{id}", get(pipelines::one))
        .route("/runs/{id}", get(runs::page))
        .route("/admin", get(admin::index))
        .route("/admin/instances", get(admin::instances))
        .route("/admin/satellites", get(admin::satellites))
        .route("/admin/sources", get(admin::sources))
        .route("/admin/subscriptions", get(subscriptions::list))
        .route("/admin/subscriptions/{id}", get(subscriptions::one))
        .route("/admin/deliveries/{id}", get(subscriptions::delivery))
        .route(
            "/admin/deliveries/{id}/redeliver",
            post(subscriptions::redeliver),
        )
        .route("/admin/events", get(admin::events))
        .route("/admin/events/{id}", get(admin::raw_event))
        .route("/admin/triggers", get(triggers::page))
        .route("/admin/keys", get(keys::page).post(keys::create))
        .route("/admin/keys/{id}/rotate", post(keys::rotate))
        .route("/admin/keys/{id}/revoke", post(keys::revoke))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", get(session::logout_page).post(session::logout))
        .route(assets::CSS_PATH, get(assets::css))
        .route(assets::JS_PATH, get(assets::js))
        .layer(map_response(security_headers))
}

/// Only this origin's scripts, styles and forms; no framing; pages are not cached.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// A bad filter or parameter (400).
    Bad(String),
    /// Nothing with that id for this tenant (404).
    NotFound(String),
    /// The server failed (500; the cause is logged, not shown).
    Server,
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(w) => PageError::NotFound(w),
            StoreError::Invalid(w) => PageError::Bad(w),
            other => {
                tracing::error!(error = %other, "dashboard page failed");
                PageError::Server
            }
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e.status {
            StatusCode::NOT_FOUND => PageError::NotFound(e.detail.clone()),
            s if s.is_client_error() => PageError::Bad(e.detail.clone()),
            _ => PageError::Server,
        }
    }
}

impl PageError {
    /// The error page.
    pub fn render(self, session: &Session) -> Response {
        let (status, title, text) = match self {
            PageError::Bad(m) => (StatusCode::BAD_REQUEST, "This view cannot be shown", m),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            PageError::Server => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server failed",
                "The failure was logged. Try again in a moment.".to_owned(),
            ),
        };
        let body = html! {
            h1 { (title) }
            div class="alert error" role="alert" { (text) }
            p { a href="/" { "Back to the overview" } }
        };
        (
            status,
            layout::page(title, session, layout::Nav::None, body),
        )
            .into_response()
    }
}

/// Renders a page result.
pub fn respond(session: &Session, r: Result<Response, PageError>) -> Response {
    r.unwrap_or_else(|e| e.render(session))
}
