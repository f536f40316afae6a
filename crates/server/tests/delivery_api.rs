//! Outbound notifications, end to end: the real hub delivers to a real local receiver (axum on a
//! random port) that checks both signatures with its own HMAC code, on SQLite and PostgreSQL.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::{backends, Backend, TestApp};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

// ---- the receiver --------------------------------------------------------------------------

/// How the receiver answers one request.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    Hang(Duration),
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
    answered: u16,
}

#[derive(Default)]
struct RecvState {
    script: Mutex<HashMap<String, VecDeque<Answer>>>,
    /// Answer when the script is empty (200 unless set).
    default: Mutex<Option<u16>>,
    /// Time each request takes before its answer.
    delay: Mutex<Duration>,
    got: Mutex<Vec<Received>>,
    in_flight: Mutex<HashMap<String, usize>>,
    max_same_id: AtomicUsize,
}

struct Receiver {
    base: String,
    state: Arc<RecvState>,
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(RecvState::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn script(&self, path: &str, answers: Vec<Answer>) {
        self.state
            .script
            .lock()
            .unwrap()
            .insert(path.to_owned(), answers.into());
    }

    fn set_default(&self, status: u16) {
        *self.state.default.lock().unwrap() = Some(status);
    }

    fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    fn got_on(&self, path: &str) -> Vec<Received> {
        self.got().into_iter().filter(|r| r.path == path).collect()
    }

    /// Requests answered 2xx on `path`.
    fn ok_on(&self, path: &str) -> Vec<Received> {
        self.got_on(path)
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<RecvState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let id = header(&headers, "webhook-id").unwrap_or_default();
    {
        let mut f = state.in_flight.lock().unwrap();
        let n = f.entry(id.clone()).or_default();
        *n += 1;
        state.max_same_id.fetch_max(*n, Ordering::SeqCst);
    }
    let answer = state
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(|q| q.pop_front());
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let default = state.default.lock().unwrap().unwrap_or(200);
    let (status, resp) = match answer {
        None | Some(Answer::Status(_)) => {
            let code = match answer {
                Some(Answer::Status(c)) => c,
                _ => default,
            };
            (
                code,
                (
                    StatusCode::from_u16(code).unwrap(),
                    format!("answer {code}"),
                )
                    .into_response(),
            )
        }
        Some(Answer::RetryAfter(code, secs)) => (
            code,
            (
                StatusCode::from_u16(code).unwrap(),
                [("retry-after", secs.to_string())],
                "slow down",
            )
                .into_response(),
        ),
        Some(Answer::Hang(d)) => {
            tokio::time::sleep(d).await;
            (200, (StatusCode::OK, "too late").into_response())
        }
    };
    *state.in_flight.lock().unwrap().get_mut(&id).unwrap() -= 1;
    state.got.lock().unwrap().push(Received {
        path,
        headers,
        body,
        at: Instant::now(),
        answered: status,
    });
    resp
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

// ---- independent signature checks ----------------------------------------------------------

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// True when one of the space-separated `v1,` signatures is `secret`'s over `id.timestamp.body`.
fn standard_ok(r: &Received, secret: &str) -> bool {
    let id = header(&r.headers, "webhook-id").expect("webhook-id");
    let ts = header(&r.headers, "webhook-timestamp").expect("webhook-timestamp");
    let sigs = header(&r.headers, "webhook-signature").expect("webhook-signature");
    let expected = base64::engine::general_purpose::STANDARD.encode(hmac(
        secret.as_bytes(),
        &[id.as_bytes(), b".", ts.as_bytes(), b".", &r.body],
    ));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ts: i64 = ts.parse().expect("integer timestamp");
    assert!((now - ts).abs() < 300, "timestamp within 5 minutes");
    sigs.split(' ').any(|s| s == format!("v1,{expected}"))
}

/// True when one of the space-separated `sha256:` signatures is `secret`'s over the body.
fn jobserv_ok(r: &Received, secret: &str) -> bool {
    let sigs = header(&r.headers, "x-jobserv-sig").expect("X-JobServ-Sig");
    let expected = format!(
        "sha256:{}",
        hex::encode(hmac(secret.as_bytes(), &[&r.body]))
    );
    sigs.split(' ').any(|s| s == expected)
}

// ---- helpers -------------------------------------------------------------------------------

/// Settings that make delivery tests run in well under a second each.
fn fast(c: &mut cistern_server::Config) {
    c.allow_private_targets = true;
    c.delivery_schedule = "0s,100ms,100ms,100ms,100ms,100ms".into();
    c.delivery_poll_interval = "50ms".into();
    c.delivery_timeout = "2s".into();
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Admin {
    key: String,
}

impl Admin {
    async fn new(app: &TestApp) -> Self {
        Self {
            key: app.key_for("default", &[cistern_store::Scope::Admin]).await,
        }
    }

    async fn send(
        &self,
        app: &TestApp,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = app
            .client
            .request(method, app.url(path))
            .header("Authorization", format!("Bearer {}", self.key));
        if let Some(b) = body {
            req = req.json(&b);
        }
        common::read(req.send().await.expect("request")).await
    }

    async fn get(&self, app: &TestApp, path: &str) -> (u16, Value) {
        self.send(app, reqwest::Method::GET, path, None).await
    }

    async fn post(&self, app: &TestApp, path: &str, body: Value) -> (u16, Value) {
        self.send(app, reqwest::Method::POST, path, Some(body))
            .await
    }

    async fn set_secret(&self, app: &TestApp, name: &str, value: &str) {
        let (status, body) = self
            .send(
                app,
                reqwest::Method::PUT,
                &format!("/api/v1/secrets/{name}"),
                Some(json!({ "value": value })),
            )
            .await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }

    async fn subscribe(&self, app: &TestApp, body: Value) -> String {
        let (status, reply) = self.post(app, "/api/v1/subscriptions", body).await;
        assert_eq!(status, 201, "{reply}");
        reply["id"].as_str().expect("id").to_owned()
    }

    async fn deliveries(&self, app: &TestApp, sub: &str) -> Vec<Value> {
        let (status, body) = self
            .get(
                app,
                &format!("/api/v1/subscriptions/{sub}/deliveries?limit=500"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["deliveries"].as_array().cloned().unwrap_or_default()
    }

    async fn delivery(&self, app: &TestApp, id: &str) -> Value {
        let (status, body) = self.get(app, &format!("/api/v1/deliveries/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn subscription(&self, app: &TestApp, id: &str) -> Value {
        let (status, body) = self.get(app, &format!("/api/v1/subscriptions/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// An SEI run with a result, pipeline and branch of our choosing.
fn run(n: u64, result: &str, pipeline: &str, branch: &str) -> Value {
    let mut r = common::sei_run(n);
    r["result"] = json!(result);
    r["pipeline"] = json!(pipeline.rsplit('/').next().unwrap());
    r["job_full_name"] = json!(pipeline);
    r["qualified_name"] = json!(pipeline);
    r["branch_name"] = json!(branch);
    r
}

async fn post_run(app: &TestApp, body: &Value) -> Value {
    let (status, reply) = app.post("/v1/custom-cicd", body).await;
    assert!(status == 200 || status == 201, "{status} {reply}");
    reply
}

// ---- the tests -----------------------------------------------------------------------------

#[tokio::test]
async fn a_finished_run_is_delivered_signed_in_the_jobserv_format() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        admin.set_secret(&app, "hook", "UseSomethingGoodHere").await;
        let sub = admin
            .subscribe(&app, json!({"url": rx.url("/hook"), "secret": "hook"}))
            .await;
        let mut r = run(1, "FAILURE", "team/build", "main");
        r["job_run"] = json!({"stages": [
            {"displayName": "compile", "result": "SUCCESS", "state": "FINISHED", "startTime": 1_711_603_545_000u64, "durationInMillis": 1000},
            {"displayName": "test", "result": "FAILURE", "state": "FINISHED", "startTime": 1_711_603_546_000u64, "durationInMillis": 500}
        ]});
        let reply = post_run(&app, &r).await;
        wait_for("the delivery", Duration::from_secs(10), || async {
            rx.ok_on("/hook").len() == 1
        })
        .await;
        let got = &rx.ok_on("/hook")[0];
        assert!(
            standard_ok(got, "UseSomethingGoodHere"),
            "webhook-signature ({backend:?})"
        );
        assert!(jobserv_ok(got, "UseSomethingGoodHere"), "X-JobServ-Sig");
        assert!(!standard_ok(got, "wrong"));
        assert_eq!(
            header(&got.headers, "x-cistern-event").as_deref(),
            Some("run.completed")
        );
        assert_eq!(
            header(&got.headers, "content-type").as_deref(),
            Some("application/json")
        );
        let body: Value = serde_json::from_slice(&got.body).unwrap();
        let run_id = reply["id"].as_str().unwrap();
        assert_eq!(body["build_id"], json!(1));
        assert_eq!(body["status"], "FAILED");
        assert_eq!(body["trigger_name"], "team/build");
        assert_eq!(
            body["url"],
            json!(format!("{}/api/v1/runs/{run_id}", app.base))
        );
        assert_eq!(body["created"], "2024-03-28T05:26:45+00:00");
        assert_eq!(body["completed"], "2024-03-28T05:26:46+00:00");
        let runs = body["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0]["name"], "compile");
        assert_eq!(runs[0]["status"], "PASSED");
        assert_eq!(runs[1]["status"], "FAILED");
        assert_eq!(runs[1]["completed"], "2024-03-28T05:25:46+00:00");

        // The same report again changes nothing: nothing more is sent.
        post_run(&app, &r).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rx.got_on("/hook").len(), 1, "a repeat notifies nobody");

        let list = admin.deliveries(&app, &sub).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["status"], "delivered");
        assert_eq!(list[0]["event_type"], "run.completed");
        assert_eq!(list[0]["run_id"], json!(run_id));
        let id = list[0]["id"].as_str().unwrap();
        assert_eq!(header(&got.headers, "webhook-id").as_deref(), Some(id));
        let d = admin.delivery(&app, id).await;
        let log = d["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0]["status_code"], 200);
        assert_eq!(log[0]["response_body"], "answer 200");
        assert!(log[0]["duration_ms"].as_i64().unwrap() >= 0);
        assert_eq!(d["message"]["id"], json!(run_id), "the run as it was");
        assert!(d["message"]["stages"][0]
            .get("log")
            .is_none_or(Value::is_null));
    }
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_exactly_one_success() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        rx.script(
            "/flaky",
            vec![
                Answer::Status(500),
                Answer::Status(502),
                Answer::Status(503),
            ],
        );
        admin.set_secret(&app, "s", "k1").await;
        let sub = admin
            .subscribe(
                &app,
                json!({"url": rx.url("/flaky"), "secret": "s", "format": "native"}),
            )
            .await;
        post_run(&app, &run(2, "SUCCESS", "team/build", "main")).await;
        wait_for("the fourth attempt", Duration::from_secs(10), || async {
            !rx.ok_on("/flaky").is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = rx.got_on("/flaky");
        let codes: Vec<u16> = got.iter().map(|r| r.answered).collect();
        assert_eq!(codes, vec![500, 502, 503, 200], "{backend:?}");
        let ids: std::collections::HashSet<_> = got
            .iter()
            .map(|r| header(&r.headers, "webhook-id").unwrap())
            .collect();
        assert_eq!(ids.len(), 1, "webhook-id is stable across retries");
        assert!(got.iter().all(|r| standard_ok(r, "k1")));
        assert!(got.iter().all(|r| r.headers.get("x-jobserv-sig").is_none()));
        let body: Value = serde_json::from_slice(&got[3].body).unwrap();
        assert_eq!(body["type"], "run.completed");
        assert_eq!(body["data"]["result"], "success");
        assert!(body["timestamp"].is_string());
        // Retries waited for the schedule (100 ms ± 20 %).
        for w in got.windows(2) {
            assert!(
                w[1].at - w[0].at >= Duration::from_millis(75),
                "{:?}",
                w[1].at - w[0].at
            );
        }
        let list = admin.deliveries(&app, &sub).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["status"], "delivered");
        assert_eq!(list[0]["attempts"], 4);
        let d = admin.delivery(&app, list[0]["id"].as_str().unwrap()).await;
        let log: Vec<(i64, i64)> = d["attempt_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["attempt"].as_i64().unwrap(),
                    a["status_code"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(log, vec![(1, 500), (2, 502), (3, 503), (4, 200)]);
        assert_eq!(
            d["attempt_log"][0]["error"], "HTTP 500 (not 2xx)",
            "each failure says why"
        );
        let s = admin.subscription(&app, &sub).await;
        assert!(
            s["failing_since"].is_null(),
            "a success ends the failing streak"
        );
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            fast(c);
            // Without Retry-After the second attempt would wait 30 s.
            c.delivery_schedule = "0s,30s".into();
        })
        .await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        rx.script("/busy", vec![Answer::RetryAfter(429, 1)]);
        admin.set_secret(&app, "s", "k").await;
        admin
            .subscribe(&app, json!({"url": rx.url("/busy"), "secret": "s"}))
            .await;
        post_run(&app, &run(3, "SUCCESS", "team/build", "main")).await;
        wait_for("the retry", Duration::from_secs(10), || async {
            rx.got_on("/busy").len() == 2
        })
        .await;
        let got = rx.got_on("/busy");
        assert_eq!(got[0].answered, 429);
        assert_eq!(got[1].answered, 200);
        let gap = got[1].at - got[0].at;
        assert!(
            gap >= Duration::from_millis(900) && gap < Duration::from_secs(5),
            "waited {gap:?} ({backend:?})"
        );
    }
}

#[tokio::test]
async fn gone_disables_the_subscription_and_enabling_resumes_its_queue() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        rx.script("/gone", vec![Answer::Status(410)]);
        admin.set_secret(&app, "s", "k").await;
        let sub = admin
            .subscribe(&app, json!({"url": rx.url("/gone"), "secret": "s"}))
            .await;
        post_run(&app, &run(4, "SUCCESS", "team/build", "main")).await;
        wait_for(
            "the subscription to be disabled",
            Duration::from_secs(10),
            || async { admin.subscription(&app, &sub).await["enabled"] == json!(false) },
        )
        .await;
        let s = admin.subscription(&app, &sub).await;
        let reason = s["disabled_reason"].as_str().unwrap();
        assert!(reason.contains("410 Gone"), "{reason}");
        assert!(s["disabled_at"].is_string());
        // Disabled: nothing is attempted, and new runs queue nothing for it.
        post_run(&app, &run(5, "SUCCESS", "team/build", "main")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rx.got_on("/gone").len(), 1, "{backend:?}");
        let list = admin.deliveries(&app, &sub).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["status"], "pending", "kept for when it comes back");

        let (status, body) = admin
            .send(
                &app,
                reqwest::Method::PATCH,
                &format!("/api/v1/subscriptions/{sub}"),
                Some(json!({"enabled": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["enabled"], true);
        assert!(body["disabled_reason"].is_null());
        wait_for("the queue to resume", Duration::from_secs(10), || async {
            rx.ok_on("/gone").len() == 1
        })
        .await;
        // The receiver sees the request before the worker records its answer.
        wait_for(
            "the delivery to be recorded",
            Duration::from_secs(10),
            || async { admin.deliveries(&app, &sub).await[0]["status"] == "delivered" },
        )
        .await;
    }
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_is_retried() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            fast(c);
            c.delivery_timeout = "300ms".into();
        })
        .await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        rx.script("/hang", vec![Answer::Hang(Duration::from_secs(5))]);
        admin.set_secret(&app, "s", "k").await;
        let sub = admin
            .subscribe(&app, json!({"url": rx.url("/hang"), "secret": "s"}))
            .await;
        let started = Instant::now();
        post_run(&app, &run(6, "SUCCESS", "team/build", "main")).await;
        wait_for("the second attempt", Duration::from_secs(10), || async {
            admin
                .deliveries(&app, &sub)
                .await
                .first()
                .is_some_and(|d| d["status"] == "delivered")
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "did not wait for the hang"
        );
        let list = admin.deliveries(&app, &sub).await;
        let d = admin.delivery(&app, list[0]["id"].as_str().unwrap()).await;
        let log = d["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 2, "{backend:?}: {d}");
        assert!(log[0]["status_code"].is_null());
        let err = log[0]["error"].as_str().unwrap();
        assert!(err.contains("timed out after 300 ms"), "{err}");
        assert!(log[0]["duration_ms"].as_i64().unwrap() >= 250);
        assert_eq!(log[1]["status_code"], 200);
    }
}

#[tokio::test]
async fn deliveries_pending_at_a_restart_are_all_delivered_after_it() {
    for backend in backends() {
        let slow = |c: &mut cistern_server::Config| {
            fast(c);
            c.delivery_schedule = "0s,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms".into();
        };
        let app = TestApp::spawn_with(&backend, slow).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        rx.set_default(503);
        admin.set_secret(&app, "s", "k").await;
        let sub = admin
            .subscribe(&app, json!({"url": rx.url("/later"), "secret": "s"}))
            .await;
        for n in 10..20 {
            post_run(&app, &run(n, "SUCCESS", "team/build", "main")).await;
        }
        wait_for(
            "a first attempt of each",
            Duration::from_secs(10),
            || async {
                let ids: std::collections::HashSet<String> = rx
                    .got_on("/later")
                    .iter()
                    .filter_map(|r| header(&r.headers, "webhook-id"))
                    .collect();
                ids.len() == 10
            },
        )
        .await;
        let app = app.restart(slow).await;
        rx.set_default(200);
        wait_for(
            "every delivery after the restart",
            Duration::from_secs(15),
            || async { rx.ok_on("/later").len() >= 10 },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ok: Vec<String> = rx
            .ok_on("/later")
            .iter()
            .filter_map(|r| header(&r.headers, "webhook-id"))
            .collect();
        let distinct: std::collections::HashSet<&String> = ok.iter().collect();
        assert_eq!(ok.len(), 10, "{backend:?}: one success each");
        assert_eq!(distinct.len(), 10, "none lost");
        let admin = Admin::new(&app).await;
        let list = admin.deliveries(&app, &sub).await;
        assert_eq!(list.len(), 10);
        assert!(list.iter().all(|d| d["status"] == "delivered"), "{list:?}");
    }
}

#[tokio::test]
async fn a_worker_that_is_off_leaves_acknowledged_runs_queued_for_the_next_start() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            fast(c);
            c.delivery_worker = false;
        })
        .await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        admin.set_secret(&app, "s", "k").await;
        admin
            .subscribe(&app, json!({"url": rx.url("/q"), "secret": "s"}))
            .await;
        for n in 30..35 {
            post_run(&app, &run(n, "SUCCESS", "team/build", "main")).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.got().is_empty());
        let _app = app.restart(fast).await;
        wait_for("the queued deliveries", Duration::from_secs(10), || async {
            rx.ok_on("/q").len() == 5
        })
        .await;
        let _ = backend;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_never_send_a_delivery_twice_at_once() {
    let Some(backend) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)))
    else {
        return;
    };
    let node = |c: &mut cistern_server::Config| {
        fast(c);
        c.delivery_concurrency = 4;
        c.delivery_concurrency_per_subscription = 32;
    };
    let a = TestApp::spawn_with(&backend, node).await;
    let b = a.spawn_sibling(node).await;
    let admin = Admin::new(&a).await;
    let rx = Receiver::start().await;
    rx.set_delay(Duration::from_millis(40));
    admin.set_secret(&a, "s", "k").await;
    let sub = admin
        .subscribe(&a, json!({"url": rx.url("/both"), "secret": "s"}))
        .await;
    // Runs arrive through both nodes.
    for n in 100..140 {
        let app = if n % 2 == 0 { &a } else { &b };
        post_run(app, &run(n, "SUCCESS", "team/build", "main")).await;
    }
    wait_for("forty deliveries", Duration::from_secs(20), || async {
        rx.ok_on("/both").len() >= 40
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.got_on("/both");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *per_id
            .entry(header(&r.headers, "webhook-id").unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 40);
    assert!(
        per_id.values().all(|n| *n == 1),
        "each sent once: {per_id:?}"
    );
    assert_eq!(rx.state.max_same_id.load(Ordering::SeqCst), 1);
    // Both nodes took part.
    let mut nodes: HashMap<String, usize> = HashMap::new();
    for d in admin.deliveries(&a, &sub).await {
        assert_eq!(d["status"], "delivered");
        let detail = admin.delivery(&a, d["id"].as_str().unwrap()).await;
        let node = detail["attempt_log"][0]["node"]
            .as_str()
            .unwrap()
            .to_owned();
        *nodes.entry(node).or_default() += 1;
    }
    assert_eq!(nodes.len(), 2, "both nodes delivered: {nodes:?}");
    drop(b);
}

#[tokio::test]
async fn filters_only_failures_pipeline_and_branch_globs_project_and_events() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        admin.set_secret(&app, "s", "k").await;
        for (path, extra) in [
            ("/all", json!({})),
            ("/failures", json!({"only_failures": true})),
            ("/deploys", json!({"pipeline": "team/deploy-*"})),
            ("/release", json!({"branch": "release/*"})),
            ("/platform", json!({"project": "Platform"})),
            (
                "/started",
                json!({"events": ["run.started"], "format": "native"}),
            ),
            (
                "/deployments",
                json!({"events": "deployment.completed", "format": "cdevents"}),
            ),
        ] {
            let mut body = json!({"url": rx.url(path), "secret": "s"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            admin.subscribe(&app, body).await;
        }
        post_run(&app, &run(40, "SUCCESS", "team/build", "main")).await;
        post_run(&app, &run(41, "FAILURE", "team/build", "main")).await;
        let mut deploy = run(42, "SUCCESS", "team/deploy-api", "release/1.2");
        deploy["cd"] = json!(true);
        deploy["project_name"] = json!("Platform");
        post_run(&app, &deploy).await;
        let mut started = run(43, "RUNNING", "team/build", "main");
        started["project_name"] = json!("Platform");
        post_run(&app, &started).await;
        let expected = [
            ("/all", 3),
            ("/failures", 1),
            ("/deploys", 1),
            ("/release", 1),
            ("/platform", 1),
            ("/started", 1),
            ("/deployments", 1),
        ];
        wait_for(
            "the filtered deliveries",
            Duration::from_secs(10),
            || async { expected.iter().all(|(p, n)| rx.ok_on(p).len() >= *n) },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (path, n) in expected {
            assert_eq!(rx.got_on(path).len(), n, "{path} ({backend:?})");
        }
        let failed: Value = serde_json::from_slice(&rx.got_on("/failures")[0].body).unwrap();
        assert_eq!(failed["status"], "FAILED");
        let st: Value = serde_json::from_slice(&rx.got_on("/started")[0].body).unwrap();
        assert_eq!(st["type"], "run.started");
        assert_eq!(st["data"]["result"], "running");

        // The run that started now finishes: run.completed, once.
        let mut done = started.clone();
        done["result"] = json!("SUCCESS");
        post_run(&app, &done).await;
        wait_for("the completion", Duration::from_secs(10), || async {
            rx.ok_on("/all").len() == 4
        })
        .await;
        assert_eq!(rx.got_on("/started").len(), 1, "not started twice");

        let cd = &rx.got_on("/deployments")[0];
        assert_eq!(
            header(&cd.headers, "content-type").as_deref(),
            Some("application/cloudevents+json")
        );
        let ce: Value = serde_json::from_slice(&cd.body).unwrap();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["type"], "dev.cdevents.service.deployed.0.2.0");
        assert_eq!(ce["data"]["context"]["type"], ce["type"]);
        assert_eq!(ce["data"]["context"]["version"], "0.4.1");
        assert_eq!(ce["data"]["subject"]["type"], "service");
        assert_eq!(ce["data"]["subject"]["id"], "deploy-api");
        assert!(standard_ok(cd, "k"));
    }
}

#[tokio::test]
async fn a_rotated_secret_signs_with_both_values_during_its_grace() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        admin.set_secret(&app, "rot", "old-value").await;
        admin
            .subscribe(&app, json!({"url": rx.url("/rot"), "secret": "rot"}))
            .await;
        post_run(&app, &run(50, "SUCCESS", "team/build", "main")).await;
        wait_for("the first delivery", Duration::from_secs(10), || async {
            rx.ok_on("/rot").len() == 1
        })
        .await;
        let first = &rx.ok_on("/rot")[0];
        assert_eq!(
            header(&first.headers, "webhook-signature")
                .unwrap()
                .split(' ')
                .count(),
            1
        );
        assert!(standard_ok(first, "old-value") && jobserv_ok(first, "old-value"));

        admin.set_secret(&app, "rot", "new-value").await;
        post_run(&app, &run(51, "SUCCESS", "team/build", "main")).await;
        wait_for("the second delivery", Duration::from_secs(10), || async {
            rx.ok_on("/rot").len() == 2
        })
        .await;
        let second = &rx.ok_on("/rot")[1];
        let sigs = header(&second.headers, "webhook-signature").unwrap();
        assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
        assert!(sigs.starts_with("v1,"));
        assert!(standard_ok(second, "new-value"), "{backend:?}");
        assert!(
            standard_ok(second, "old-value"),
            "receivers not yet rotated still verify"
        );
        // X-JobServ-Sig: one value, the current secret's (JobServ receivers take one).
        assert!(jobserv_ok(second, "new-value"));
        assert!(!jobserv_ok(second, "old-value"));
        let js = header(&second.headers, "x-jobserv-sig").unwrap();
        assert!(js.starts_with("sha256:") && !js.contains(' '), "{js}");
    }
}

/// The reference JobServ receiver (`tests/fixtures/jobserv/receiver.py`, run with python3 on
/// loopback): its decisions, one line per request.
struct PyReceiver {
    child: std::process::Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    secret_file: tempfile::NamedTempFile,
}

impl PyReceiver {
    fn start(secret: &str) -> Self {
        use std::io::BufRead;
        let secret_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret_file.path(), secret).unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jobserv/receiver.py"
        );
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(secret_file.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the reference receiver");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next().unwrap().unwrap();
        let port = first.strip_prefix("port ").unwrap().parse().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in out.map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Self {
            child,
            port,
            lines,
            secret_file,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The operator changes the receiver's secret too.
    fn set_secret(&self, secret: &str) {
        std::fs::write(self.secret_file.path(), secret).unwrap();
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_reference_jobserv_receiver_accepts_every_delivery_across_a_rotation() {
    for backend in backends() {
        let mut app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = PyReceiver::start("old-value");
        admin.set_secret(&app, "js", "old-value").await;
        admin
            .subscribe(
                &app,
                json!({"url": rx.url("/js"), "secret": "js", "format": "jobserv"}),
            )
            .await;
        let accepted = |n: usize| {
            let rx = &rx;
            move || async move { rx.lines().iter().filter(|l| l.starts_with("ok ")).count() >= n }
        };
        // Before the rotation.
        post_run(&app, &run(60, "SUCCESS", "team/build", "main")).await;
        wait_for("before the rotation", Duration::from_secs(10), accepted(1)).await;

        // During the grace: the receiver has the new secret, the hub still holds both.
        admin.set_secret(&app, "js", "new-value").await;
        rx.set_secret("new-value");
        post_run(&app, &run(61, "SUCCESS", "team/build", "main")).await;
        wait_for("during the grace", Duration::from_secs(10), accepted(2)).await;

        // After the grace (a hub whose rotations keep no grace rotates once more).
        app = app
            .restart(|c| {
                fast(c);
                c.secret_grace_hours = 0;
            })
            .await;
        let admin = Admin::new(&app).await;
        admin.set_secret(&app, "js", "newest-value").await;
        rx.set_secret("newest-value");
        post_run(&app, &run(62, "SUCCESS", "team/build", "main")).await;
        wait_for("after the grace", Duration::from_secs(10), accepted(3)).await;
        let lines = rx.lines();
        assert!(
            lines.iter().all(|l| l.starts_with("ok ")),
            "the receiver refused a delivery ({backend:?}): {lines:?}"
        );
    }
}

#[tokio::test]
async fn after_the_grace_only_the_new_value_signs() {
    let backend = Backend::Sqlite;
    let app = TestApp::spawn_with(&backend, |c| {
        fast(c);
        c.secret_grace_hours = 0;
    })
    .await;
    let admin = Admin::new(&app).await;
    let rx = Receiver::start().await;
    admin.set_secret(&app, "rot", "old-value").await;
    admin.set_secret(&app, "rot", "new-value").await;
    admin
        .subscribe(&app, json!({"url": rx.url("/rot"), "secret": "rot"}))
        .await;
    post_run(&app, &run(52, "SUCCESS", "team/build", "main")).await;
    wait_for("the delivery", Duration::from_secs(10), || async {
        rx.ok_on("/rot").len() == 1
    })
    .await;
    let got = &rx.ok_on("/rot")[0];
    assert!(standard_ok(got, "new-value"));
    assert!(!standard_ok(got, "old-value"));
    assert!(!header(&got.headers, "x-jobserv-sig").unwrap().contains(' '));
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let backend = Backend::Sqlite;
    let app = TestApp::spawn_with(&backend, |c| {
        fast(c);
        c.allow_private_targets = false;
    })
    .await;
    let admin = Admin::new(&app).await;
    let rx = Receiver::start().await;
    admin.set_secret(&app, "s", "k").await;
    for url in [
        rx.url("/x"),
        "http://localhost:9/x".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::1]/x".to_owned(),
        "http://10.0.0.1/x".to_owned(),
    ] {
        let (status, body) = admin
            .post(
                &app,
                "/api/v1/subscriptions",
                json!({"url": url, "secret": "s"}),
            )
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(common::error_fields(&body), vec!["url"], "{body}");
        assert!(
            common::error_text(&body).contains("allow_private_targets"),
            "says how to allow it: {body}"
        );
    }
    // A subscription that got in anyway (stored before the rule, or a name that now resolves
    // to a private address) is refused at delivery, on the resolved address.
    let t = app.store.tenant_by_slug("default").await.unwrap().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let sub = cistern_store::Subscription {
        id: "sub_direct".into(),
        tenant_id: t.id.clone(),
        url: rx.url("/x").replace("127.0.0.1", "localhost"),
        secret_name: "s".into(),
        format: cistern_store::DeliveryFormat::Native,
        headers: Vec::new(),
        events: vec![cistern_store::EventType::RunCompleted],
        only_failures: false,
        pipeline: None,
        branch: None,
        project: None,
        enabled: true,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    app.store.create_subscription(&sub).await.unwrap();
    post_run(&app, &run(60, "SUCCESS", "team/build", "main")).await;
    wait_for("a refused attempt", Duration::from_secs(10), || async {
        admin
            .deliveries(&app, "sub_direct")
            .await
            .first()
            .is_some_and(|d| d["attempts"].as_i64().unwrap_or(0) >= 1)
    })
    .await;
    let d = &admin.deliveries(&app, "sub_direct").await[0];
    let err = d["last_error"].as_str().unwrap();
    assert!(
        err.contains("refusing to deliver to localhost") && err.contains("loopback"),
        "{err}"
    );
    assert!(rx.got().is_empty(), "nothing reached the private address");
}

#[tokio::test]
async fn redeliver_and_replay_send_again_with_the_same_id() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        admin.set_secret(&app, "s", "k").await;
        let sub = admin
            .subscribe(&app, json!({"url": rx.url("/again"), "secret": "s"}))
            .await;
        let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
        for n in 70..73 {
            post_run(&app, &run(n, "SUCCESS", "team/build", "main")).await;
        }
        wait_for("three deliveries", Duration::from_secs(10), || async {
            rx.ok_on("/again").len() == 3
        })
        .await;
        let list = admin.deliveries(&app, &sub).await;
        let one = list[0]["id"].as_str().unwrap().to_owned();
        let (status, body) = admin
            .post(
                &app,
                &format!("/api/v1/deliveries/{one}/redeliver"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "pending");
        wait_for("the redelivery", Duration::from_secs(10), || async {
            rx.ok_on("/again").len() == 4
        })
        .await;
        assert_eq!(
            header(&rx.ok_on("/again")[3].headers, "webhook-id").as_deref(),
            Some(one.as_str())
        );
        // The receiver sees the request before the worker records the attempt.
        wait_for(
            "the redelivery's attempt",
            Duration::from_secs(10),
            || async {
                admin.delivery(&app, &one).await["attempt_log"]
                    .as_array()
                    .is_some_and(|a| a.len() >= 2)
            },
        )
        .await;
        let d = admin.delivery(&app, &one).await;
        assert_eq!(d["attempt_log"].as_array().unwrap().len(), 2, "{backend:?}");

        let since = since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let (status, body) = admin
            .post(
                &app,
                &format!(
                    "/api/v1/subscriptions/{sub}/replay?since={}",
                    since.replace('+', "%2B")
                ),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["requeued"], 3);
        wait_for("the replay", Duration::from_secs(10), || async {
            rx.ok_on("/again").len() == 7
        })
        .await;
        let (status, body) = admin
            .post(
                &app,
                &format!("/api/v1/subscriptions/{sub}/replay"),
                json!({}),
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(common::error_fields(&body), vec!["since"]);
        let (status, _) = admin
            .post(&app, "/api/v1/deliveries/nope/redeliver", json!({}))
            .await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn an_opened_incident_is_delivered_once() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        admin.set_secret(&app, "s", "k").await;
        admin
            .subscribe(
                &app,
                json!({"url": rx.url("/inc"), "secret": "s", "format": "native", "events": ["incident.opened"]}),
            )
            .await;
        admin
            .subscribe(
                &app,
                json!({"url": rx.url("/inc-ce"), "secret": "s", "format": "cdevents", "events": ["incident.opened"], "pipeline": "api*"}),
            )
            .await;
        let tenant = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        let incident = cistern_core::IncidentReport {
            id: "INC-7".into(),
            source: "/monitoring/prod".into(),
            service: Some("api".into()),
            environment: Some("prod".into()),
            detected_at: Some(time::macros::datetime!(2024-05-15 10:05 UTC)),
            resolved_at: None,
            description: Some("latency above 100 ms".into()),
            url: None,
        };
        for resolved in [None, Some(time::macros::datetime!(2024-05-15 11:00 UTC))] {
            let mut inc = incident.clone();
            inc.resolved_at = resolved;
            let out = app
                .store
                .write(cistern_store::WriteOp::Signals {
                    event: cistern_store::EventRecord {
                        tenant_id: Some(tenant.id.clone()),
                        endpoint: "/v1/hooks/test".into(),
                        dialect: "cdevents".into(),
                        request_type: None,
                        content_type: None,
                        body: Arc::from(&b"{}"[..]),
                        received_at: time::OffsetDateTime::now_utc(),
                        status: cistern_store::EventStatus::Accepted,
                        http_status: 202,
                        errors: vec![],
                        key_id: None,
                        source_id: None,
                        dedupe_key: None,
                    },
                    tenant: tenant.clone(),
                    runs: vec![],
                    incidents: vec![inc],
                    commit_times: vec![],
                })
                .await
                .unwrap();
            assert_eq!(out.deliveries, if resolved.is_none() { 2 } else { 0 });
        }
        wait_for("the incident", Duration::from_secs(10), || async {
            rx.ok_on("/inc").len() == 1 && rx.ok_on("/inc-ce").len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rx.got_on("/inc").len(), 1, "{backend:?}: opened once");
        let body: Value = serde_json::from_slice(&rx.got_on("/inc")[0].body).unwrap();
        assert_eq!(body["type"], "incident.opened");
        assert_eq!(body["data"]["id"], "INC-7");
        assert_eq!(body["data"]["service"], "api");
        let ce: Value = serde_json::from_slice(&rx.got_on("/inc-ce")[0].body).unwrap();
        assert_eq!(ce["type"], "dev.cdevents.incident.detected.0.2.0");
        assert_eq!(ce["data"]["subject"]["content"]["service"]["id"], "api");
        assert_eq!(
            ce["data"]["subject"]["content"]["environment"]["id"],
            "prod"
        );
        assert!(ce["data"]["subject"]["content"].get("url").is_none());
    }
}

#[tokio::test]
async fn a_subscription_failing_for_too_long_is_disabled_with_the_reason() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            fast(c);
            c.delivery_schedule = std::iter::repeat_n("100ms", 40)
                .collect::<Vec<_>>()
                .join(",");
            c.delivery_disable_after = "500ms".into();
        })
        .await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        rx.set_default(500);
        admin.set_secret(&app, "s", "k").await;
        let sub = admin
            .subscribe(&app, json!({"url": rx.url("/down"), "secret": "s"}))
            .await;
        post_run(&app, &run(80, "SUCCESS", "team/build", "main")).await;
        wait_for(
            "the subscription to be disabled",
            Duration::from_secs(10),
            || async { admin.subscription(&app, &sub).await["enabled"] == json!(false) },
        )
        .await;
        let s = admin.subscription(&app, &sub).await;
        let reason = s["disabled_reason"].as_str().unwrap();
        assert!(
            reason.contains("every delivery attempt failed since") && reason.contains("HTTP 500"),
            "{backend:?}: {reason}"
        );
        assert!(s["failing_since"].is_string());
        let n = rx.got_on("/down").len();
        // At least the first failure and one past disable_after; how many fit in between
        // depends on the machine's load (each round trip is recorded before the next is due).
        assert!(n >= 2, "{n} attempts");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rx.got_on("/down").len(), n, "no attempt once disabled");
    }
}

#[tokio::test]
async fn subscriptions_api_validates_and_keeps_tenants_apart() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        admin.set_secret(&app, "s", "k").await;
        let (status, body) = admin
            .post(
                &app,
                "/api/v1/subscriptions",
                json!({"url": "ftp://x", "secret": "nope", "format": "xml", "events": ["run.finished"], "pipeline": "[a"}),
            )
            .await;
        assert_eq!(status, 400);
        let mut fields = common::error_fields(&body);
        fields.sort();
        assert_eq!(
            fields,
            vec!["events", "format", "pipeline", "secret", "url"],
            "{body}"
        );
        let text = common::error_text(&body);
        assert!(text.contains("cistern secrets set nope="), "{text}");
        assert!(
            text.contains("formats: jobserv, cdevents, native"),
            "{text}"
        );
        let (status, body) = admin
            .post(
                &app,
                "/api/v1/subscriptions",
                json!({"url": "http://127.0.0.1:9/", "secret": "s", "events": ["incident.opened"]}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(common::error_text(&body).contains("jobserv format describes builds"));
        let (status, body) = admin
            .post(
                &app,
                "/api/v1/subscriptions",
                json!({"url": "http://127.0.0.1:9/", "secret": "s", "colour": "red"}),
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(common::error_fields(&body), vec!["colour"]);

        let id = admin
            .subscribe(
                &app,
                json!({"url": "http://127.0.0.1:9/hook", "secret": "s", "branch": "main", "events": "run.completed,run.started"}),
            )
            .await;
        let s = admin.subscription(&app, &id).await;
        assert_eq!(s["format"], "jobserv", "the seed's format by default");
        assert_eq!(s["events"], json!(["run.completed", "run.started"]));
        assert_eq!(s["enabled"], true);
        assert!(s.get("tenant_id").is_none());
        let (status, body) = admin
            .send(
                &app,
                reqwest::Method::PATCH,
                &format!("/api/v1/subscriptions/{id}"),
                Some(json!({"branch": null, "only_failures": true, "enabled": false})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["branch"].is_null());
        assert_eq!(body["only_failures"], true);
        assert_eq!(body["enabled"], false);
        assert_eq!(body["disabled_reason"], "disabled by a user");
        assert_eq!(body["url"], "http://127.0.0.1:9/hook", "unchanged");

        // Reading needs the admin scope; another tenant sees nothing.
        let (status, _) = app.get(&format!("/api/v1/subscriptions/{id}")).await;
        assert_eq!(status, 403);
        let other = app.key_for("acme", &[cistern_store::Scope::Admin]).await;
        for path in [
            format!("/api/v1/subscriptions/{id}"),
            format!("/api/v1/subscriptions/{id}/deliveries"),
        ] {
            let (status, _) = app.get_with(&path, &other).await;
            assert_eq!(status, 404, "{path} ({backend:?})");
        }
        let (_, list) = app.get_with("/api/v1/subscriptions", &other).await;
        assert_eq!(list["subscriptions"], json!([]));

        let (status, _) = admin
            .send(
                &app,
                reqwest::Method::DELETE,
                &format!("/api/v1/subscriptions/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = admin
            .get(&app, &format!("/api/v1/subscriptions/{id}"))
            .await;
        assert_eq!(status, 404);
    }
}

/// Seed 004's build, received from JobServ, goes out again in the JobServ format as it came:
/// each run's `url`, `log_url`, `web_url`, `host_tag` and `tests`, the trigger, the build id —
/// and no nulls. Then an SEI run without a build number: an integer build id, no nulls.
#[tokio::test]
async fn a_jobserv_build_goes_out_in_the_jobserv_format_as_it_came() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = Admin::new(&app).await;
        let rx = Receiver::start().await;
        admin.set_secret(&app, "out", "UseSomethingGoodHere").await;
        admin
            .subscribe(&app, json!({"url": rx.url("/out"), "secret": "out"}))
            .await;
        admin
            .set_secret(&app, "webhook-docs-example", "in-secret")
            .await;
        let (status, src) = admin
            .post(
                &app,
                "/api/v1/sources",
                json!({"kind": "jobserv", "secret": "webhook-docs-example"}),
            )
            .await;
        assert_eq!(status, 201, "{src}");
        let seed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dialects/tests/fixtures/jobserv/build_passed.json"
        ))
        .unwrap();
        let sig = format!("sha256:{}", hex::encode(hmac(b"in-secret", &[&seed])));
        let resp = reqwest::Client::new()
            .post(app.url(src["path"].as_str().unwrap()))
            .header("content-type", "application/json")
            .header("X-JobServ-Sig", sig)
            .body(seed.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        wait_for("the build's delivery", Duration::from_secs(10), || async {
            rx.ok_on("/out").len() == 1
        })
        .await;
        let sent: Value = serde_json::from_slice(&rx.ok_on("/out")[0].body).unwrap();
        let seed: Value = serde_json::from_slice(&seed).unwrap();
        for key in [
            "build_id",
            "status",
            "web_url",
            "trigger_name",
            "created",
            "completed",
        ] {
            assert_eq!(sent[key], seed[key], "{key} ({backend:?})");
        }
        let runs = sent["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 4);
        for (got, want) in runs.iter().zip(seed["runs"].as_array().unwrap()) {
            assert_eq!(got, want, "each run as JobServ sent it");
        }
        no_nulls(&sent, "");

        // A run without a build number.
        let mut r = run(70, "SUCCESS", "team/build", "main");
        r.as_object_mut().unwrap().remove("build_number");
        r["execution_id"] = json!("UNIQUE_EXECUTION_ID");
        post_run(&app, &r).await;
        wait_for("the run's delivery", Duration::from_secs(10), || async {
            rx.ok_on("/out").len() == 2
        })
        .await;
        let sent: Value = serde_json::from_slice(&rx.ok_on("/out")[1].body).unwrap();
        assert!(sent["build_id"].is_i64(), "{sent}");
        no_nulls(&sent, "");
    }
}

fn no_nulls(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("null at {at}"),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| no_nulls(v, &format!("{at}.{k}"))),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| no_nulls(v, &format!("{at}[{i}]"))),
        _ => {}
    }
}
