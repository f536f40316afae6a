//! Posting to the hub, with retries and backoff for what may pass (no connection, timeouts,
//! 408, 429, 5xx) and none for what will not (any other 4xx: a bad payload or key).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::payload::auth_scheme;
use super::signals;

/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// First pause between attempts; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Attempts after the first.
    pub retries: u32,
    /// No new attempt starts after this much time.
    pub budget: Duration,
}

impl Policy {
    /// The default for a report: a few attempts within about ten seconds.
    pub fn report(retries: u32) -> Self {
        Self {
            retries,
            budget: Duration::from_secs(10),
        }
    }

    /// One attempt: for spooled reports delivered on the side of another command.
    pub fn once() -> Self {
        Self {
            retries: 0,
            budget: Duration::ZERO,
        }
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The hub acknowledged it (2xx).
    Delivered {
        /// HTTP status.
        status: u16,
        /// The run id the hub answered, when it did.
        run_id: Option<String>,
        /// `created` or `updated`, when the hub said.
        word: Option<String>,
    },
    /// The hub refused it for good (4xx other than 408/429).
    Rejected {
        /// HTTP status.
        status: u16,
        /// The hub's explanation.
        message: String,
    },
    /// No answer worth keeping: down, unreachable, 5xx, 429 after every attempt.
    Unreachable {
        /// The last failure.
        reason: String,
    },
}

/// Why the hub client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The URL is not http(s).
    #[error("CISTERN_URL {0:?} must start with http:// or https://")]
    BadUrl(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The hub to post to.
pub struct Hub {
    base: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl Hub {
    /// A client for the hub at `base` (`https://cistern.example.com`, maybe with a path prefix).
    pub fn new(base: &str, key: Option<String>) -> Result<Self, HubError> {
        let base = base.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(HubError::BadUrl(base));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirected POST would turn into a GET and lose the report: say so instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cistern-report/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { base, key, client })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Posts `body` to `endpoint`, retrying transient failures within `policy`.
    pub async fn deliver(&self, endpoint: &str, body: &str, policy: Policy) -> Outcome {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let (reason, retry_after) = match self.post_once(endpoint, body).await {
                Attempt::Done(outcome) => return outcome,
                Attempt::Transient {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            attempt += 1;
            let wait = retry_after.unwrap_or_else(|| jitter(backoff));
            backoff *= 2;
            let out_of_time = started.elapsed() + wait > policy.budget;
            if attempt > policy.retries || out_of_time || signals::stop_requested() {
                return Outcome::Unreachable { reason };
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn post_once(&self, endpoint: &str, body: &str) -> Attempt {
        let url = format!("{}{endpoint}", self.base);
        let mut req = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(key) = &self.key {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                format!("{} {key}", auth_scheme(endpoint)),
            );
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Transient {
                    reason: format!("cannot reach {url}: {}", error_chain(&e)),
                    retry_after: None,
                }
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let code = status.as_u16();
        if status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            return Attempt::Done(Outcome::Delivered {
                status: code,
                run_id: s("id"),
                word: s("status"),
            });
        }
        let message = hub_message(code, &text);
        if matches!(code, 408 | 425 | 429) || status.is_server_error() {
            return Attempt::Transient {
                reason: format!("{url} answered {message}"),
                retry_after,
            };
        }
        let message = match (status.is_redirection(), location) {
            (true, Some(to)) => {
                format!("{code} redirect to {to}; set CISTERN_URL to the hub's final address")
            }
            _ => message,
        };
        Attempt::Done(Outcome::Rejected {
            status: code,
            message,
        })
    }
}

enum Attempt {
    Done(Outcome),
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// The hub's own words: problem+json `detail` (else `title`), else the start of the body.
fn hub_message(code: u16, text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let said = ["detail", "title", "message", "error"]
        .iter()
        .find_map(|k| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .map(str::to_owned)
        .unwrap_or_else(|| text.trim().chars().take(500).collect());
    if said.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {said}")
    }
}

/// The causes under reqwest's "error sending request for url (…)", which repeats the URL we
/// already name: `client error (Connect): tcp connect error: Connection refused`.
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

/// ±25 %, so that many reporters retrying after one hub outage do not all come back at once.
fn jitter(d: Duration) -> Duration {
    let f = 0.75 + rand::random::<f64>() * 0.5;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_message_is_its_detail() {
        let body = r#"{"type":"x","title":"The request is invalid","status":400,
            "detail":"pipeline is required"}"#;
        assert_eq!(hub_message(400, body), "400: pipeline is required");
        assert_eq!(hub_message(502, "Bad Gateway\n"), "502: Bad Gateway");
        assert_eq!(hub_message(500, ""), "500");
    }

    #[test]
    fn only_http_urls() {
        assert!(matches!(
            Hub::new("cistern.local:8080", None),
            Err(HubError::BadUrl(_))
        ));
        assert_eq!(
            Hub::new("https://hub.example/ci/", None).unwrap().base(),
            "https://hub.example/ci"
        );
    }

    /// A hub that answers each connection with the next of `replies` (status line and body).
    fn scripted_hub(replies: Vec<(&'static str, &'static str)>) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (status, body) in replies {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut buf = vec![0; len];
                let _ = reader.read_exact(&mut buf);
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = reader.get_mut().write_all(reply.as_bytes());
            }
        });
        format!("http://{addr}")
    }

    fn deliver(base: &str, retries: u32) -> Outcome {
        let hub = Hub::new(base, Some("cst_k".into())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(hub.deliver("/v1/custom-cicd", "{}", Policy::report(retries)))
    }

    #[test]
    fn busy_hubs_are_retried_and_refusals_are_not() {
        let base = scripted_hub(vec![
            ("503 Service Unavailable", ""),
            ("429 Too Many Requests", r#"{"detail":"slow down"}"#),
            ("201 Created", r#"{"id":"r1","status":"created"}"#),
        ]);
        assert_eq!(
            deliver(&base, 3),
            Outcome::Delivered {
                status: 201,
                run_id: Some("r1".into()),
                word: Some("created".into())
            }
        );
        let base = scripted_hub(vec![
            ("400 Bad Request", r#"{"detail":"pipeline is required"}"#),
            ("201 Created", "{}"),
        ]);
        assert_eq!(
            deliver(&base, 3),
            Outcome::Rejected {
                status: 400,
                message: "400: pipeline is required".into()
            }
        );
        let base = scripted_hub(vec![("502 Bad Gateway", "proxy says no")]);
        match deliver(&base, 0) {
            Outcome::Unreachable { reason } => assert!(reason.contains("502: proxy says no")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_absent_hub_is_unreachable_within_the_budget() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hub = Hub::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = Instant::now();
        let out = rt.block_on(hub.deliver(
            "/v1/custom-cicd",
            "{}",
            Policy {
                retries: 2,
                budget: Duration::from_secs(5),
            },
        ));
        assert!(matches!(out, Outcome::Unreachable { .. }), "{out:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
