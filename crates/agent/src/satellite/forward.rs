//! Forwarding the spool to the hub: oldest first, one at a time, each until the hub answers.
//!
//! Order is kept by never passing an entry that may still go through: a hub that is down, busy
//! (408, 425, 429, 5xx) or refusing the satellite's own key or address (401, 403, 405, a 404
//! "no route": fixed by an operator, not by the request) holds the queue, and the entry is
//! tried again with backoff. Only a refusal of the request itself (any other 4xx, including the
//! hub's 404 for an unknown source or company) moves it to `rejected/` so the queue goes on.
//!
//! An entry is removed only after the hub's 2xx. If the satellite dies between the hub's commit
//! and the removal, the entry is posted again after the restart; the hub identifies runs
//! (execution id, build number, …), so the repeat updates the same run instead of adding one.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::{watch, Notify};

use super::config::HubSettings;
use super::spool::{Entry, Spool, SpoolError};
use super::Status;
use crate::report::payload::auth_scheme;

/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one whole request (multipart bodies with logs can be large).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The hub as the satellite talks to it.
pub struct HubClient {
    base: String,
    key: String,
    client: reqwest::Client,
}

/// What the hub made of one post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Taken {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
    /// The request itself is refused: never worth another try.
    Refused {
        /// Status.
        status: u16,
        /// The hub's reason.
        message: String,
    },
    /// Try again later.
    Later {
        /// Why.
        reason: String,
        /// The hub's `Retry-After`.
        retry_after: Option<Duration>,
    },
}

impl HubClient {
    /// A client for the hub of `settings` (through its proxy, when one is set).
    pub fn new(settings: &HubSettings) -> Result<Self, String> {
        let client = http_client(settings, true)?;
        Ok(Self {
            base: settings.url.trim_end_matches('/').to_owned(),
            key: settings.api_key.clone(),
            client,
        })
    }

    /// The hub's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Posts `body` to `endpoint` with the satellite's key (signed sources carry their own
    /// signature headers and get no key).
    pub async fn post(
        &self,
        endpoint: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Answer {
        let url = format!("{}{endpoint}", self.base);
        let mut req = self.client.post(&url).body(body);
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                req = req.header(k, v);
            }
        }
        if !endpoint.starts_with("/v1/hooks/") {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                format!("{} {}", auth_scheme(endpoint), self.key),
            );
        }
        answer(&url, req.send().await).await
    }

    /// Posts JSON to a native API path with `Authorization: Bearer`.
    pub async fn post_json(&self, path: &str, value: &serde_json::Value) -> Answer {
        let url = format!("{}{path}", self.base);
        let req = self.client.post(&url).bearer_auth(&self.key).json(value);
        answer(&url, req.send().await).await
    }
}

/// The HTTP client for the hub (`to_hub`) or for on-premise tools. The proxy applies to the hub
/// always, and to the tools only with `all_traffic: true`.
pub fn http_client(settings: &HubSettings, to_hub: bool) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        // A redirected POST turns into a GET and loses the body: say so instead.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cistern-satellite/", env!("CARGO_PKG_VERSION")));
    match &settings.proxy {
        Some(p) if to_hub || p.all_traffic => {
            let mut proxy =
                reqwest::Proxy::all(p.url()).map_err(|e| format!("proxy {}: {e}", p.url()))?;
            if let Some(user) = &p.username {
                proxy = proxy.basic_auth(user, p.password.as_deref().unwrap_or(""));
            }
            b = b.proxy(proxy);
        }
        // Without a configured proxy, none from the environment either: a relay's routes
        // should be what its file says.
        _ => b = b.no_proxy(),
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

async fn answer(url: &str, sent: Result<reqwest::Response, reqwest::Error>) -> Answer {
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Answer::Later {
                reason: format!("cannot reach {url}: {}", error_chain(&e)),
                retry_after: None,
            }
        }
    };
    let code = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap_or_default();
    classify(url, code, retry_after, location, text)
}

/// What an answer of the hub means for the entry.
fn classify(
    url: &str,
    code: u16,
    retry_after: Option<Duration>,
    location: Option<String>,
    text: String,
) -> Answer {
    if (200..300).contains(&code) {
        return Answer::Taken {
            status: code,
            body: text,
        };
    }
    let said = hub_message(code, &text);
    let problem: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let kind = problem["type"].as_str().unwrap_or_default();
    let detail = problem["detail"].as_str().unwrap_or_default();
    // A delivery the hub already has (signed sources deduplicate on their delivery id).
    if code == 409 && kind.ends_with("duplicate") {
        return Answer::Taken {
            status: code,
            body: text,
        };
    }
    // The hub's own 404 about the request (an unknown source or company) refuses that request;
    // any other 404 (no such route: a wrong satellite.url) holds the queue.
    if code == 404 && !detail.is_empty() && !detail.starts_with("no route for") {
        return Answer::Refused {
            status: code,
            message: said,
        };
    }
    match code {
        401 | 403 => Answer::Later {
            reason: format!("{url} refused the satellite's API key ({said}); fix satellite.api_key — requests wait in the spool"),
            retry_after: None,
        },
        404 | 405 => Answer::Later {
            reason: format!("{url} answered {said}; is satellite.url the hub's base URL?"),
            retry_after: None,
        },
        300..=399 => Answer::Later {
            reason: format!(
                "{url} redirects to {}; set satellite.url to the hub's final address",
                location.unwrap_or_default()
            ),
            retry_after: None,
        },
        408 | 425 | 429 | 500..=599 => Answer::Later {
            reason: format!("{url} answered {said}"),
            retry_after,
        },
        _ => Answer::Refused {
            status: code,
            message: said,
        },
    }
}

/// The hub's own words: problem+json `detail` (else `title`), else the start of the body.
fn hub_message(code: u16, text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let said = ["detail", "title", "message", "error"]
        .iter()
        .find_map(|k| v.get(k).and_then(|s| s.as_str()).filter(|s| !s.is_empty()))
        .map(str::to_owned)
        .unwrap_or_else(|| text.trim().chars().take(500).collect());
    if said.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {said}")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let Some(first) = e.source() else {
        return e.to_string();
    };
    let mut s = first.to_string();
    let mut cur = first.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Pauses between tries of a held entry: doubling from `first` to `max`, ±25 % jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First pause.
    pub first: Duration,
    /// Longest pause.
    pub max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff from `first` to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            current: first,
        }
    }

    /// The next pause (and doubles the one after).
    pub fn next_pause(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d.mul_f64(0.75 + rand::random::<f64>() * 0.5).min(self.max)
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

/// Forwards until `stop` turns true. `wake` is notified when an entry is added.
pub async fn run(
    spool: Arc<Spool>,
    hub: Arc<HubClient>,
    status: Arc<Status>,
    wake: Arc<Notify>,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(seq) = spool.first() else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let s = spool.clone();
        let read = tokio::task::spawn_blocking(move || s.read(seq)).await;
        let entry: Entry = match read {
            Ok(Ok(e)) => e,
            Ok(Err(e @ SpoolError::Corrupt { .. })) => {
                tracing::error!(error = %e, "moving an unreadable spool entry to rejected/");
                status.error(e.to_string());
                let s = spool.clone();
                let reason = e.to_string();
                let _ = tokio::task::spawn_blocking(move || s.reject(seq, &reason)).await;
                continue;
            }
            Ok(Err(e)) => {
                status.error(e.to_string());
                tracing::error!(error = %e, "cannot read the spool");
                if pause(backoff.next_pause(), &mut stop).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool read task failed");
                continue;
            }
        };
        let endpoint = entry.header.endpoint.clone();
        // A stop does not wait for a slow hub: the entry stays and goes after the next start.
        let answer = tokio::select! {
            a = hub.post(&endpoint, &entry.header.headers, entry.body) => a,
            _ = stop.changed() => return,
        };
        match answer {
            Answer::Taken { status: code, .. } => {
                let s = spool.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.remove(seq)).await {
                    // Left in place, it would go again: the hub takes that as an update.
                    tracing::error!(error = %e, "cannot remove a delivered entry");
                }
                status.forwarded();
                backoff.reset();
                tracing::debug!(
                    seq,
                    endpoint,
                    code,
                    origin = entry.header.origin,
                    "forwarded"
                );
            }
            Answer::Refused {
                status: code,
                message,
            } => {
                let s = spool.clone();
                let reason = message.clone();
                let kept = tokio::task::spawn_blocking(move || s.reject(seq, &reason)).await;
                let place = match kept {
                    Ok(Ok(p)) => p.display().to_string(),
                    _ => "(could not be moved)".into(),
                };
                tracing::error!(seq, endpoint, code, reason = %message, kept = %place, "the hub refused a request; it is kept in rejected/");
                status.rejected(format!(
                    "the hub refused a request to {endpoint}: {message}"
                ));
            }
            Answer::Later {
                reason,
                retry_after,
            } => {
                let wait = retry_after.unwrap_or_else(|| backoff.next_pause());
                tracing::warn!(seq, endpoint, reason = %reason, retry_in_ms = wait.as_millis() as u64, depth = spool.usage().depth, "hub not taking requests; will retry");
                status.error(reason);
                if pause(wait, &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps `d`; true when asked to stop meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let p: Vec<u128> = (0..5).map(|_| b.next_pause().as_millis()).collect();
        assert!((75..=125).contains(&p[0]), "{p:?}");
        assert!((150..=250).contains(&p[1]), "{p:?}");
        assert!(p[3] <= 350 && p[4] <= 350, "{p:?}");
        b.reset();
        assert!(b.next_pause() <= Duration::from_millis(125));
    }

    #[test]
    fn what_holds_the_queue_and_what_is_refused() {
        let c = |code: u16, body: &str| classify("http://hub/x", code, None, None, body.into());
        assert!(matches!(c(201, "{}"), Answer::Taken { .. }));
        assert!(matches!(c(503, ""), Answer::Later { .. }));
        assert!(matches!(c(429, ""), Answer::Later { .. }));
        assert!(
            matches!(c(401, "{}"), Answer::Later { .. }),
            "a bad key is the operator's to fix"
        );
        assert!(matches!(
            c(400, r#"{"detail":"pipeline is required"}"#),
            Answer::Refused { status: 400, .. }
        ));
        assert!(matches!(c(413, ""), Answer::Refused { .. }));
        assert!(
            matches!(
                c(404, r#"{"detail":"no route for POST /v1/custom-cicd"}"#),
                Answer::Later { .. }
            ),
            "a wrong satellite.url"
        );
        assert!(matches!(
            c(404, "<html>Not Found</html>"),
            Answer::Later { .. }
        ));
        assert!(
            matches!(
                c(404, r#"{"detail":"no company \"x\" for this API key"}"#),
                Answer::Refused { .. }
            ),
            "the hub's 404 about the request itself"
        );
        assert!(matches!(
            c(
                409,
                r#"{"type":"https://cistern.dev/problems/duplicate","detail":"already received"}"#
            ),
            Answer::Taken { .. }
        ));
    }

    #[test]
    fn hub_messages() {
        assert_eq!(
            hub_message(400, r#"{"detail":"pipeline is required"}"#),
            "400: pipeline is required"
        );
        assert_eq!(hub_message(502, ""), "502");
    }
}
