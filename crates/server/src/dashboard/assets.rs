//! The stylesheet and script, embedded in the binary (no CDN, nothing fetched at run time).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Stylesheet path (versioned so a new binary is never served a stale cached copy).
pub const CSS_PATH: &str = concat!("/assets/app-", env!("CARGO_PKG_VERSION"), ".css");
/// Script path.
pub const JS_PATH: &str = concat!("/assets/app-", env!("CARGO_PKG_VERSION"), ".js");

/// The stylesheet.
pub const CSS: &str = include_str!("assets/app.css");
/// The script.
pub const JS: &str = include_str!("assets/app.js");

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    r
}

/// `GET` the stylesheet.
pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

/// `GET` the script.
pub async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_stay_small() {
        assert!(
            super::JS.len() < 4 * 1024,
            "the script is {} bytes",
            super::JS.len()
        );
        assert!(super::CSS.len() < 16 * 1024);
    }
}
