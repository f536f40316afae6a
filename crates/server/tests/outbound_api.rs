//! Outbound requests against hostile inputs (issue 16, items 3 and 4): credentials in a target
//! URL reach no error, no keyless answer and no read-only page; every address form that leads
//! back into the hub's network is refused at creation; an explicit proxy carries allowed hosts
//! only. On SQLite and PostgreSQL where something is stored.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{backends, Backend, TestApp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What every leaked credential in these tests contains.
const MARK: &str = "S3CR3T";

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(method, app.url(path))
        .header("Authorization", format!("Bearer {key}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    common::read(req.send().await.unwrap()).await
}

/// A dashboard page, signed in with `key` through the sign-in form.
async fn dashboard_page(app: &TestApp, key: &str, path: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut jar: Vec<String> = Vec::new();
    let keep = |jar: &mut Vec<String>, resp: &reqwest::Response| {
        for c in resp.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            jar.retain(|p| !p.starts_with(&format!("{name}=")));
            jar.push(pair);
        }
    };
    let login = http.get(app.url("/login")).send().await.unwrap();
    keep(&mut jar, &login);
    let html = login.text().await.unwrap();
    let marker = r#"name="csrf" value=""#;
    let at = html.find(marker).expect("csrf field") + marker.len();
    let csrf = html[at..at + html[at..].find('"').unwrap()].to_owned();
    let resp = http
        .post(app.url("/login"))
        .header("cookie", jar.join("; "))
        .form(&[("key", key), ("csrf", csrf.as_str()), ("next", path)])
        .send()
        .await
        .unwrap();
    keep(&mut jar, &resp);
    let page = http
        .get(app.url(path))
        .header("cookie", jar.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "{path}");
    page.text().await.unwrap()
}

fn fast(c: &mut cistern_server::Config) {
    c.allow_private_targets = true;
    c.trigger_schedule = "0s,100ms".into();
    c.delivery_schedule = "0s,100ms".into();
    c.delivery_poll_interval = "50ms".into();
    c.delivery_timeout = "3s".into();
}

#[tokio::test]
async fn credentials_in_target_urls_reach_no_error_and_no_read_only_page() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        let port = closed_port();
        let (s, b) = send(
            &app,
            &admin,
            reqwest::Method::PUT,
            "/api/v1/secrets/s",
            Some(json!({"value": "k"})),
        )
        .await;
        assert!(s == 200 || s == 201, "{b}");
        // A refused connection and a name that does not resolve: both errors quote the URL.
        let targets = [
            (
                "closed",
                format!("http://127.0.0.1:{port}/build?token={MARK}-closed"),
            ),
            (
                "dns",
                format!("http://cistern-no-such-host.invalid/build?token={MARK}-dns"),
            ),
        ];
        let mut trigger_ids = Vec::new();
        let mut api_urls = Vec::new();
        for (name, url) in &targets {
            let (s, t) = send(
                &app,
                &admin,
                reqwest::Method::POST,
                "/api/v1/triggers",
                Some(
                    json!({"org": "default", "project": "p", "pipeline": "deploy",
                            "trigger": name, "url": url, "allow_token": true}),
                ),
            )
            .await;
            assert_eq!(s, 201, "{t}");
            trigger_ids.push(t["id"].as_str().unwrap().to_owned());
            // Fired by its token URL, without a key.
            let resp = app
                .client
                .post(t["token_url"].as_str().unwrap())
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let (s, fired) = common::read(resp).await;
            assert_eq!(s, 200, "{fired}");
            api_urls.push(fired["data"]["apiUrl"].as_str().unwrap().to_owned());
        }
        let (s, sub) = send(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/subscriptions",
            Some(
                json!({"url": format!("http://127.0.0.1:{port}/hook?token={MARK}-sub"),
                        "secret": "s", "format": "native"}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{sub}");
        let sub_id = sub["id"].as_str().unwrap().to_owned();
        let (s, b) = app.post("/v1/custom-cicd", &common::sei_run(1)).await;
        assert!(s == 200 || s == 201, "{b}");

        // Every attempt made and failed.
        for api_url in &api_urls {
            wait_for("the trigger event to be given up", || async {
                let (_, d) = common::read(app.client.get(api_url).send().await.unwrap()).await;
                d["data"]["webhookProcessingDetails"]["status"] == "TARGET_DID_NOT_EXECUTE"
            })
            .await;
        }
        let deliveries = format!("/api/v1/subscriptions/{sub_id}/deliveries");
        wait_for("the delivery to fail", || async {
            let (_, d) = send(&app, &admin, reqwest::Method::GET, &deliveries, None).await;
            d["deliveries"][0]["status"] == "failed"
        })
        .await;

        // The keyless caller's answer says what went wrong, without the URL's credentials.
        for api_url in &api_urls {
            let text = app
                .client
                .get(api_url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(!text.contains(MARK), "{text}");
            assert!(text.contains("attempts failed"), "{text}");
        }
        // What is stored: the trigger events' errors and messages, the delivery's attempts.
        for id in &trigger_ids {
            let (_, evs) = send(
                &app,
                &admin,
                reqwest::Method::GET,
                &format!("/api/v1/triggers/{id}/events"),
                None,
            )
            .await;
            let e = &evs["events"][0];
            for field in ["last_error", "message"] {
                let text = e[field].as_str().unwrap_or_default();
                assert!(!text.is_empty() && !text.contains(MARK), "{field}: {e}");
            }
        }
        let (_, list) = send(&app, &admin, reqwest::Method::GET, &deliveries, None).await;
        let d = &list["deliveries"][0];
        let err = d["last_error"].as_str().unwrap();
        assert!(!err.contains(MARK), "{err}");
        assert!(err.contains(&format!("http://127.0.0.1:{port}")) || err.contains("onnect"));
        let (_, one) = send(
            &app,
            &admin,
            reqwest::Method::GET,
            &format!("/api/v1/deliveries/{}", d["id"].as_str().unwrap()),
            None,
        )
        .await;
        let attempts = one["attempt_log"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{one}");
        for a in attempts {
            assert!(!a["error"].as_str().unwrap().contains(MARK), "{a}");
        }

        // A read-only session sees the targets' origins only, and the errors without URLs.
        let pages = [
            "/admin/triggers".to_owned(),
            "/admin/subscriptions".to_owned(),
            format!("/admin/subscriptions/{sub_id}"),
            format!("/admin/deliveries/{}", d["id"].as_str().unwrap()),
        ];
        for path in &pages {
            let html = dashboard_page(&app, &app.key, path).await;
            assert!(!html.contains(MARK), "{path} shows a credential");
        }
        let html = dashboard_page(&app, &app.key, "/admin/triggers").await;
        assert!(
            html.contains(&format!("http://127.0.0.1:{port}/…")),
            "the origin is shown"
        );
        // An admin session sees the whole target (it may change it).
        let html = dashboard_page(&app, &admin, "/admin/triggers").await;
        assert!(html.contains(&format!("{MARK}-closed")));
    }
}

#[tokio::test]
async fn every_address_form_into_the_hubs_network_is_refused_at_creation() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
    let (s, _) = send(
        &app,
        &admin,
        reqwest::Method::PUT,
        "/api/v1/secrets/s",
        Some(json!({"value": "k"})),
    )
    .await;
    assert!(s == 200 || s == 201);
    for (url, why) in [
        ("http://127.0.0.1/x", "loopback"),
        ("http://2130706433/x", "loopback"),
        ("http://0x7f.0.0.1/x", "loopback"),
        ("http://127.1/x", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("http://[::127.0.0.1]/x", "IPv4-compatible"),
        ("http://[::a9fe:a9fe]/x", "IPv4-compatible"),
        ("http://[2002:7f00:1::]/x", "loopback"),
        ("http://[2002:a9fe:a9fe::1]/x", "link-local"),
        ("http://[2002:0a00:0001::]/x", "private"),
        ("http://[fec0::1]/x", "site-local"),
        ("http://[64:ff9b::a9fe:a9fe]/x", "link-local"),
        ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", "Teredo"),
        ("http://[fd00::1]/x", "unique local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://0.0.0.0/x", "unspecified"),
        ("http://localhost/x", "loopback"),
    ] {
        let (s, body) = send(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/subscriptions",
            Some(json!({"url": url, "secret": "s"})),
        )
        .await;
        assert_eq!(s, 400, "subscription to {url}: {body}");
        assert_eq!(common::error_fields(&body), ["url"], "{body}");
        assert!(common::error_text(&body).contains(why), "{url}: {body}");
        let (s, body) = send(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/triggers",
            Some(json!({"org": "o", "project": "p", "pipeline": "d", "trigger": "t", "url": url})),
        )
        .await;
        assert_eq!(s, 400, "trigger to {url}: {body}");
        assert_eq!(common::error_fields(&body), ["url"], "{body}");
        assert!(common::error_text(&body).contains(why), "{url}: {body}");
    }
    let (_, subs) = send(
        &app,
        &admin,
        reqwest::Method::GET,
        "/api/v1/subscriptions",
        None,
    )
    .await;
    assert_eq!(subs["subscriptions"], json!([]), "nothing half-stored");
}

/// A forward proxy that answers 200 to everything and remembers each request line.
struct FakeProxy {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl FakeProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // The head, then as much body as it announces.
                    let head_end = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or_default().to_owned());
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Self { port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn an_explicit_proxy_carries_allowed_hosts_only() {
    for backend in backends() {
        let proxy = FakeProxy::start().await;
        let app = TestApp::spawn_with(&backend, |c| {
            fast(c);
            c.allow_private_targets = false;
            c.outbound_proxy = Some(format!("http://127.0.0.1:{}", proxy.port));
            c.outbound_proxy_allow = vec!["hooks.example.test".into(), "*.ci.example.test".into()];
        })
        .await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        send(
            &app,
            &admin,
            reqwest::Method::PUT,
            "/api/v1/secrets/s",
            Some(json!({"value": "k"})),
        )
        .await;
        for url in [
            "http://elsewhere.example.test/x",
            "http://127.0.0.1/x",
            "http://hooks.example.test.evil.example/x",
        ] {
            let (s, body) = send(
                &app,
                &admin,
                reqwest::Method::POST,
                "/api/v1/subscriptions",
                Some(json!({"url": url, "secret": "s"})),
            )
            .await;
            assert_eq!(s, 400, "{url}: {body}");
            assert_eq!(common::error_fields(&body), ["url"], "{body}");
        }
        let (s, body) = send(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/subscriptions",
            Some(json!({"url": "http://elsewhere.example.test/x", "secret": "s"})),
        )
        .await;
        assert!(
            common::error_text(&body).contains("outbound_proxy_allow"),
            "{s} {body}"
        );
        // An allowed name the hub cannot resolve itself: the proxy resolves it.
        let (s, body) = send(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/subscriptions",
            Some(
                json!({"url": "http://hooks.example.test/hook", "secret": "s", "format": "native"}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{body}");
        let (s, b) = app.post("/v1/custom-cicd", &common::sei_run(1)).await;
        assert!(s == 200 || s == 201, "{b}");
        wait_for("the delivery to go through the proxy", || async {
            !proxy.lines().is_empty()
        })
        .await;
        assert_eq!(
            proxy.lines()[0],
            "POST http://hooks.example.test/hook HTTP/1.1"
        );
    }
}
