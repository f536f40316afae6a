//! Signing in to the dashboard: an API key with the `read` scope, checked against the store,
//! opens a session. The browser holds only an opaque random session id in an HttpOnly,
//! SameSite=Strict cookie (`Secure` when the hub is reached over https); the store keeps the id's
//! hash, bound to the key, with an absolute expiry (`session_lifetime`) and the time it was last
//! used (`session_idle_timeout`). Signing out, expiry, idleness and revoking the key end it on
//! the server, on every node. Every POST form carries a token only the holder of the session can
//! compute: an HMAC keyed with the session id. The sign-in form, which has no session yet, gets
//! its token from a random per-visit cookie.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use cistern_store::Scope;
use hmac::{Hmac, Mac};
use maud::{html, Markup};
use rand::RngCore;
use serde::Deserialize;
use sha2::Sha256;

use super::layout;
use crate::auth::{authenticate, authenticate_hash, hash_key, Caller};
use crate::error::ApiError;
use crate::AppState;

/// Cookie holding the session id.
pub const SESSION_COOKIE: &str = "cistern_session";
/// Prefix of session ids, so one is recognisable (and never taken for an API key).
const SESSION_PREFIX: &str = "css_";

/// How long dashboard sessions last.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// From sign-in, however much the session is used.
    pub lifetime: std::time::Duration,
    /// Unused this long, the session ends.
    pub idle: std::time::Duration,
}

impl SessionSettings {
    /// From `session_lifetime` and `session_idle_timeout`; zero or unreadable ones are named.
    pub fn from_config(config: &crate::Config) -> Result<Self, String> {
        let one = |name: &str, text: &str| {
            let d = crate::config::parse_duration(text).map_err(|e| format!("{name}: {e}"))?;
            if d.is_zero() {
                return Err(format!("{name} must be longer than 0s (e.g. 1h)"));
            }
            Ok(d)
        };
        Ok(Self {
            lifetime: one("session_lifetime", &config.session_lifetime)?,
            idle: one("session_idle_timeout", &config.session_idle_timeout)?,
        })
    }

    /// How stale `last_seen_at` may get before a use is written down (a write per page view
    /// would be wasteful; a tenth of the idle timeout, at most a minute, keeps the timeout true).
    fn touch_after(&self) -> std::time::Duration {
        (self.idle / 10).min(std::time::Duration::from_secs(60))
    }
}

/// A new random session id (256 bits).
fn new_session_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SESSION_PREFIX}{}", hex::encode(bytes))
}

/// The caller of a live session, `Ok(None)` when there is none (unknown, expired, idle, or its
/// key no longer works: then it is ended in the store too).
async fn resume(state: &AppState, id: &str) -> Result<Option<Caller>, ApiError> {
    if !id.starts_with(SESSION_PREFIX) {
        return Ok(None);
    }
    let hash = hash_key(id);
    let Some(session) = state.store.session_by_hash(&hash).await? else {
        return Ok(None);
    };
    let now = time::OffsetDateTime::now_utc();
    let idle = now - session.last_seen_at;
    if now >= session.expires_at || idle >= state.sessions.idle {
        state.store.end_session(&hash).await?;
        return Ok(None);
    }
    match authenticate_hash(state, session.key_hash.clone(), Scope::Read).await {
        Ok(caller) => {
            if idle >= state.sessions.touch_after() {
                state.store.touch_session(&hash, now).await?;
            }
            Ok(Some(caller))
        }
        // Revoked, deleted, or the scope taken away: the key's sessions end.
        Err(f) if matches!(f.error.status.as_u16(), 401 | 403) => {
            state.store.end_sessions_of_key(&session.key_id).await?;
            Ok(None)
        }
        Err(f) => Err(f.error),
    }
}

/// True when cookies must be `Secure`: the hub's public URL is https, or a TLS-terminating
/// proxy says the request came over https.
fn https(state: &AppState, headers: &HeaderMap) -> bool {
    let public = state
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.trim().to_ascii_lowercase().starts_with("https://"));
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    public || forwarded
}
/// Cookie holding the sign-in form's nonce.
pub const LOGIN_COOKIE: &str = "cistern_login";

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// HMAC-SHA256 of `message` under `key`, hex.
fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of `token` against the HMAC of `message` under `key`.
fn hmac_ok(key: &[u8], message: &[u8], token: &str) -> bool {
    let Ok(bytes) = hex::decode(token.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.verify_slice(&bytes).is_ok()
}

const CSRF_CONTEXT: &[u8] = b"cistern dashboard form v1";
const LOGIN_CONTEXT: &[u8] = b"cistern dashboard sign-in v1";

/// The form token of a session.
pub fn csrf_token(session_secret: &str) -> String {
    hmac_hex(session_secret.as_bytes(), CSRF_CONTEXT)
}

/// True when `token` is the session's form token.
pub fn csrf_ok(session_secret: &str, token: &str) -> bool {
    hmac_ok(session_secret.as_bytes(), CSRF_CONTEXT, token)
}

/// A signed-in visitor: the caller the cookie's key authenticates, with its form token.
pub struct Session {
    /// Tenant and key.
    pub caller: Caller,
    /// The token POST forms must carry.
    pub csrf: String,
    secret: String,
}

impl Session {
    /// True when a submitted form token belongs to this session.
    pub fn check_csrf(&self, token: &str) -> bool {
        csrf_ok(&self.secret, token)
    }

    /// True when the session's key has the `admin` scope (needed by admin actions, and to see
    /// the capabilities the admin API alone shows: hook URLs, subscription targets).
    pub fn is_admin(&self) -> bool {
        self.caller.key.scopes.contains(&Scope::Admin)
    }
}

/// Authenticates a key for the dashboard (the `read` scope is required).
async fn caller_for(state: &AppState, key: &str) -> Result<Caller, String> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(key.trim()).map_err(|_| {
        "the key contains characters no key has; check it was copied whole".to_owned()
    })?;
    headers.insert("x-api-key", value);
    authenticate(state, &headers, Scope::Read)
        .await
        .map_err(|f| f.error.detail.clone())
}

/// Where an unauthenticated page request is sent: the sign-in page, then back.
fn to_login(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if parts.uri.path().starts_with("/fragments/") {
        // Scripts asking for a fragment get a plain 401 rather than the sign-in page.
        return (StatusCode::UNAUTHORIZED, "sign in again").into_response();
    }
    let target = if here == "/" {
        "/login".to_owned()
    } else {
        format!(
            "/login?{}",
            serde_urlencoded::to_string([("next", here)]).unwrap_or_default()
        )
    };
    Redirect::to(&target).into_response()
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login(parts));
        };
        match resume(state, &secret).await {
            Ok(Some(caller)) => Ok(Session {
                caller,
                csrf: csrf_token(&secret),
                secret,
            }),
            // Ended (signed out, expired, idle, its key revoked): forget it and sign in again.
            Ok(None) => {
                let mut resp = to_login(parts);
                resp.headers_mut().append(
                    header::SET_COOKIE,
                    set_cookie(SESSION_COOKIE, "", Some(0), https(state, &parts.headers)),
                );
                Err(resp)
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/{age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A local path to return to after sign-in or a form (never another site): a path starting with
/// one `/`, made of visible ASCII only. Browsers drop tabs and newlines from a `Location`
/// (`/\t/evil.example` becomes `//evil.example`, another site) and treat `\\` as `/`, and a
/// control character cannot be sent in a header at all; anything else goes to `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn login_page(csrf: &str, next: &str, error: Option<&str>, notice: Option<&str>) -> Markup {
    let body = html! {
        div class="login" {
            h1 { "Sign in to Cistern" }
            p { "Paste an API key with the " code { "read" } " scope. Create one with "
                code { "cistern keys create --name dashboard --scopes read" } "." }
            @if let Some(e) = error {
                div class="alert error" role="alert" id="login-error" {
                    strong { "Could not sign in: " } (e)
                }
            }
            @if let Some(n) = notice {
                div class="alert" role="status" { (n) }
            }
            form method="post" action="/login" class="stack" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="key" { "API key" }
                input id="key" name="key" type="password" required autocomplete="off"
                    spellcheck="false" autofocus aria-describedby=[error.map(|_| "login-error")];
                button type="submit" { "Sign in" }
            }
        }
    };
    layout::bare("Sign in", body)
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = safe_next(q.get("next").map(String::as_str));
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        if let Ok(Some(_)) = resume(&state, &secret).await {
            return Redirect::to(&next).into_response();
        }
    }
    let notice = q
        .contains_key("signed_out")
        .then_some("You are signed out.");
    fresh_login(https(&state, &headers), &next, None, notice, StatusCode::OK)
}

/// The sign-in page with a fresh nonce cookie.
fn fresh_login(
    secure: bool,
    next: &str,
    error: Option<&str>,
    notice: Option<&str>,
    status: StatusCode,
) -> Response {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let token = hmac_hex(nonce.as_bytes(), LOGIN_CONTEXT);
    let mut resp = (status, login_page(&token, next, error, notice)).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &nonce, Some(3600), secure),
    );
    resp
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: checks the form token and the key, then sets the session cookie.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let secure = https(&state, &headers);
    let nonce_ok = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|n| hmac_ok(n.as_bytes(), LOGIN_CONTEXT, &form.csrf));
    if !nonce_ok {
        return fresh_login(
            secure,
            &next,
            Some("the form expired or cookies are blocked; allow cookies for this site and try again"),
            None,
            StatusCode::FORBIDDEN,
        );
    }
    let key = form.key.trim();
    if key.is_empty() {
        return fresh_login(
            secure,
            &next,
            Some("enter an API key"),
            None,
            StatusCode::UNAUTHORIZED,
        );
    }
    match caller_for(&state, key).await {
        Ok(caller) => {
            let id = new_session_id();
            let now = time::OffsetDateTime::now_utc();
            let lifetime = state.sessions.lifetime;
            let session = cistern_store::sessions::DashboardSession {
                id_hash: hash_key(&id),
                key_id: caller.key.id.clone(),
                key_hash: hash_key(key),
                tenant_id: caller.tenant.id.clone(),
                created_at: now,
                last_seen_at: now,
                expires_at: now + lifetime,
            };
            if let Err(e) = state.store.create_session(&session).await {
                return ApiError::from(e).into_response();
            }
            tracing::info!(tenant = %caller.tenant.slug, key = %caller.key.prefix, "dashboard sign-in");
            let mut resp = Redirect::to(&next).into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &id, Some(lifetime.as_secs()), secure),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", Some(0), secure),
            );
            resp
        }
        Err(why) => fresh_login(secure, &next, Some(&why), None, StatusCode::UNAUTHORIZED),
    }
}

/// The answer to a form whose token is not the session's (forged, or from an older session):
/// 403, and nothing done.
pub fn expired_form(session: &Session) -> Response {
    (
        StatusCode::FORBIDDEN,
        layout::page(
            "Forbidden",
            session,
            layout::Nav::None,
            html! {
                h1 { "This form expired" }
                div class="alert error" role="alert" { "The form's token does not belong to this session; nothing was done." }
                p { "Reload the page and try again." }
            },
        ),
    )
        .into_response()
}

/// `GET /logout`: a confirmation with the sign-out button (signing out is a POST).
pub async fn logout_page(session: Session) -> Markup {
    layout::page(
        "Sign out",
        &session,
        layout::Nav::None,
        html! {
            h1 { "Sign out" }
            p { "Signed in to tenant " strong { (session.caller.tenant.slug) } " with key "
                code { (session.caller.key.prefix) "…" } "." }
            (layout::logout_form(&session))
        },
    )
}

/// The sign-out form.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session in the store and clears its cookie.
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !session.check_csrf(&form.csrf) {
        return expired_form(&session);
    }
    if let Err(e) = state.store.end_session(&hash_key(&session.secret)).await {
        return ApiError::from(e).into_response();
    }
    let mut resp = Redirect::to("/login?signed_out=1").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), https(&state, &headers)),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; cistern_session=cst_abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("cst_abc"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "missing"), None);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("cistern_session="));
        assert_eq!(cookie(&h, SESSION_COOKIE), None);
    }

    #[test]
    fn form_tokens_belong_to_their_session() {
        let t = csrf_token("cst_one");
        assert_eq!(t.len(), 64);
        assert!(csrf_ok("cst_one", &t));
        assert!(!csrf_ok("cst_two", &t));
        assert!(!csrf_ok("cst_one", ""));
        assert!(!csrf_ok("cst_one", "not hex"));
        assert!(!csrf_ok("cst_one", &t[..62]));
        // The token does not reveal the key.
        assert!(!t.contains("one"));
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/runs/1?x=2")), "/runs/1?x=2");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        for bad in [
            "/\t/evil.example",
            "/\n",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/\u{0}",
            "/\u{7f}",
            "/\u{a0}/evil.example",
            "/runs\u{2028}",
            "",
            "evil.example",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let c = set_cookie(SESSION_COOKIE, "css_x", None, false);
        let c = c.to_str().unwrap();
        assert_eq!(
            c,
            "cistern_session=css_x; HttpOnly; SameSite=Strict; Path=/"
        );
        let c = set_cookie(SESSION_COOKIE, "", Some(0), true);
        assert!(c.to_str().unwrap().ends_with("; Max-Age=0; Secure"));
    }

    #[test]
    fn session_ids_are_long_random_and_prefixed() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a, b);
        assert!(a.starts_with(SESSION_PREFIX) && a.len() == SESSION_PREFIX.len() + 64);
    }
}
