//! OTLP trace export, end to end, on SQLite and PostgreSQL: finished runs go through the outbox
//! to a receiver that decodes them with the OpenTelemetry project's own Python classes
//! (`opentelemetry-proto` on PyPI, `ExportTraceServiceRequest.FromString`), a decoder this
//! project did not write. The receiver is down at first, then answers 503 once: the trace
//! arrives after, once, with the same ids when the run is reported again.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{backends, TestApp};
use serde_json::{json, Value};

/// The Python receiver (`tests/fixtures/otlp_receiver.py`), stopped when dropped.
struct PyReceiver {
    child: Child,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl PyReceiver {
    /// Starts it on `port`, answering the first `fail_first` requests 503.
    fn start(port: u16, fail_first: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got.jsonl");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&out)
            .arg(fail_first.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("listening"),
            "the receiver did not start (is `opentelemetry-proto` installed? `pip install opentelemetry-proto`): {line:?}"
        );
        Self {
            child,
            out,
            _dir: dir,
        }
    }

    /// Every request it got, in order.
    fn got(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn accepted(&self) -> Vec<Value> {
        self.got()
            .into_iter()
            .filter(|r| r["status"] == 200)
            .collect()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (nothing listens on it once this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fast(c: &mut cistern_server::Config) {
    c.allow_private_targets = true;
    c.delivery_schedule = ["0s"]
        .into_iter()
        .chain(std::iter::repeat_n("150ms", 40))
        .collect::<Vec<_>>()
        .join(",");
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
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn admin_call(
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

const START: u64 = 1_711_603_545_000;

/// A run with two stages, the first with two steps.
fn run(result: &str) -> Value {
    let mut r = common::sei_run(7);
    r["result"] = json!(result);
    r["start_time"] = json!(START);
    r["duration"] = json!(90_000);
    r["repo_url"] = json!("https://git.example/team/build.git");
    r["scm_commit_ids"] = json!(["0123456789abcdef0123456789abcdef01234567"]);
    r["web_url"] = json!("https://ci.example/job/build/7/");
    r["job_run"] = json!({"stages": [
        {"displayName": "compile", "result": "SUCCESS", "state": "FINISHED", "startTime": START + 1_000, "durationInMillis": 30_000,
         "steps": [
            {"displayName": "fetch", "result": "SUCCESS", "state": "FINISHED", "startTime": START + 1_000, "durationInMillis": 5_000},
            {"displayName": "cargo build", "result": "SUCCESS", "state": "FINISHED", "startTime": START + 6_000, "durationInMillis": 25_000}
         ]},
        {"displayName": "test", "result": result, "state": "FINISHED", "startTime": START + 31_000, "durationInMillis": 50_000}
    ]});
    r
}

/// The spans of a request, by name, with its resource.
fn spans_of(req: &Value) -> (Value, HashMap<String, Value>) {
    let rs = &req["resource_spans"][0];
    let scope = &rs["scopes"][0];
    assert_eq!(scope["scope"], "cistern");
    let spans = scope["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s.clone()))
        .collect();
    (rs["resource"].clone(), spans)
}

const MS: u64 = 1_000_000;

#[tokio::test]
async fn finished_runs_become_traces_through_a_receiver_that_is_down_for_a_while() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        let (status, body) = admin_call(
            &app,
            &admin,
            reqwest::Method::PUT,
            "/api/v1/secrets/otlp-token",
            Some(json!({"value": "s3cr3t-token"})),
        )
        .await;
        assert!(status == 200 || status == 201, "{status} {body}");

        // The receiver is down: nothing listens on its port yet.
        let port = free_port();
        let (status, exporter) = admin_call(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/exporters",
            Some(json!({
                "kind": "otlp",
                "url": format!("http://127.0.0.1:{port}/v1/traces"),
                "headers": {"Authorization": "Bearer {{secret.otlp-token}}", "X-Scope-OrgID": "team-a"}
            })),
        )
        .await;
        assert_eq!(status, 201, "{exporter}");
        let id = exporter["id"].as_str().unwrap().to_owned();
        assert_eq!(exporter["kind"], "otlp");
        assert_eq!(
            exporter["headers"],
            json!([
                "Authorization: Bearer {{secret.otlp-token}}",
                "X-Scope-OrgID: team-a"
            ]),
            "the secret is shown as its placeholder, never its value"
        );

        let (status, reply) = app.post("/v1/custom-cicd", &run("FAILURE")).await;
        assert!(status == 200 || status == 201, "{status} {reply}");
        let run_id = reply["id"].as_str().unwrap().to_owned();

        // Attempts fail while the receiver is down; the delivery stays queued.
        let deliveries = format!("/api/v1/subscriptions/{id}/deliveries");
        wait_for("failed attempts", Duration::from_secs(20), || async {
            let (_, b) = admin_call(&app, &admin, reqwest::Method::GET, &deliveries, None).await;
            b["deliveries"][0]["attempts"].as_i64().unwrap_or(0) >= 2
        })
        .await;
        let (_, b) = admin_call(&app, &admin, reqwest::Method::GET, &deliveries, None).await;
        assert_eq!(b["deliveries"][0]["status"], "pending", "{b}");

        // It comes up, answers 503 once, then accepts.
        let rx = PyReceiver::start(port, 1);
        wait_for("the trace", Duration::from_secs(20), || async {
            !rx.accepted().is_empty()
        })
        .await;
        wait_for("delivered", Duration::from_secs(10), || async {
            let (_, b) = admin_call(&app, &admin, reqwest::Method::GET, &deliveries, None).await;
            b["deliveries"][0]["status"] == "delivered"
        })
        .await;
        let got = rx.got();
        assert_eq!(got[0]["status"], 503, "{got:?}");
        let accepted = rx.accepted();
        assert_eq!(accepted.len(), 1, "delivered once: {got:?}");
        let req = &accepted[0];
        assert_eq!(req["path"], "/v1/traces");
        assert_eq!(req["headers"]["content-type"], "application/x-protobuf");
        assert_eq!(
            req["headers"]["authorization"], "Bearer s3cr3t-token",
            "the secret is revealed when sent"
        );
        assert_eq!(req["headers"]["x-scope-orgid"], "team-a");
        assert!(
            req["headers"].get("webhook-signature").is_none(),
            "no signing secret, no signature"
        );

        let (resource, spans) = spans_of(req);
        assert_eq!(resource["service.name"], "ci-1", "the instance");
        let mut names: Vec<&String> = spans.keys().collect();
        names.sort();
        assert_eq!(
            names,
            ["RUN team/build", "cargo build", "compile", "fetch", "test"]
        );
        let root = &spans["RUN team/build"];
        let trace_id = root["trace_id"].as_str().unwrap().to_owned();
        assert_eq!(trace_id.len(), 32);
        assert!(spans.values().all(|s| s["trace_id"] == trace_id.as_str()));
        let ids: HashSet<&str> = spans
            .values()
            .map(|s| s["span_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 5, "no duplicate span ids");
        // The tree.
        assert_eq!(root["parent_span_id"], "");
        let parent = |name: &str| spans[name]["parent_span_id"].clone();
        assert_eq!(parent("compile"), root["span_id"]);
        assert_eq!(parent("test"), root["span_id"]);
        assert_eq!(parent("fetch"), spans["compile"]["span_id"]);
        assert_eq!(parent("cargo build"), spans["compile"]["span_id"]);
        // Kinds: SERVER (2) for the run, INTERNAL (1) for its tasks.
        assert_eq!(root["kind"], 2);
        assert_eq!(spans["fetch"]["kind"], 1);
        // Times, in nanoseconds since the epoch.
        let ns = |v: &Value| v.as_u64().unwrap();
        assert_eq!(ns(&root["start"]), START * MS);
        assert_eq!(ns(&root["end"]), (START + 90_000) * MS);
        assert_eq!(ns(&spans["test"]["start"]), (START + 31_000) * MS);
        assert_eq!(ns(&spans["test"]["end"]), (START + 81_000) * MS);
        assert_eq!(ns(&spans["cargo build"]["start"]), (START + 6_000) * MS);
        assert_eq!(ns(&spans["cargo build"]["end"]), (START + 31_000) * MS);
        // Attributes.
        let a = &root["attributes"];
        assert_eq!(a["cicd.pipeline.name"], "team/build");
        assert_eq!(a["cicd.pipeline.run.id"], "7");
        assert_eq!(a["cicd.pipeline.result"], "failure");
        assert_eq!(
            a["cicd.pipeline.run.url.full"],
            "https://ci.example/job/build/7/"
        );
        assert_eq!(
            a["vcs.ref.head.revision"],
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(
            a["vcs.repository.url.full"],
            "https://git.example/team/build.git"
        );
        assert_eq!(a["vcs.ref.head.name"], "dev");
        assert_eq!(a["cistern.run.id"], run_id.as_str());
        assert_eq!(a["error.type"], "failure");
        let t = &spans["cargo build"]["attributes"];
        assert_eq!(t["cicd.pipeline.task.name"], "cargo build");
        assert_eq!(t["cicd.pipeline.task.run.id"], "1.2");
        assert_eq!(t["cicd.pipeline.task.run.result"], "success");
        assert!(t.get("error.type").is_none());
        assert_eq!(
            spans["test"]["attributes"]["cicd.pipeline.task.run.id"],
            "2"
        );
        assert_eq!(spans["test"]["attributes"]["error.type"], "failure");
        // Status: ERROR (2) on the failed run and stage, unset (0) elsewhere.
        assert_eq!(root["status_code"], 2);
        assert_eq!(spans["test"]["status_code"], 2);
        assert_eq!(spans["compile"]["status_code"], 0);

        // The deliveries log shows the failed attempts and the success.
        let (_, b) = admin_call(&app, &admin, reqwest::Method::GET, &deliveries, None).await;
        let attempts = b["deliveries"][0]["attempts"].as_i64().unwrap();
        assert!(attempts >= 3, "down, 503, then 200: {b}");

        // A rerun that passes is reported: a new trace export with the same ids.
        let (status, reply) = app.post("/v1/custom-cicd", &run("SUCCESS")).await;
        assert!(status == 200 || status == 201, "{status} {reply}");
        assert_eq!(reply["id"], json!(run_id));
        wait_for("the second export", Duration::from_secs(20), || async {
            rx.accepted().len() == 2
        })
        .await;
        let (_, again) = spans_of(&rx.accepted()[1]);
        for (name, s) in &spans {
            assert_eq!(again[name]["trace_id"], trace_id.as_str(), "{name}");
            assert_eq!(again[name]["span_id"], s["span_id"], "{name}");
            assert_eq!(again[name]["parent_span_id"], s["parent_span_id"], "{name}");
        }
        let root2 = &again["RUN team/build"];
        assert_eq!(root2["attributes"]["cicd.pipeline.result"], "success");
        assert_eq!(root2["status_code"], 0);
        assert!(root2["attributes"].get("error.type").is_none());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rx.accepted().len(), 2, "nothing sent twice");
        let (_, b) = admin_call(&app, &admin, reqwest::Method::GET, &deliveries, None).await;
        assert_eq!(b["deliveries"].as_array().unwrap().len(), 2, "{b}");
    }
}

#[tokio::test]
async fn exporters_api_validates_lists_and_deletes() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        let post = |body: Value| {
            let (app, admin) = (&app, &admin);
            async move {
                admin_call(
                    app,
                    admin,
                    reqwest::Method::POST,
                    "/api/v1/exporters",
                    Some(body),
                )
                .await
            }
        };
        let (status, body) =
            post(json!({"kind": "zipkin", "url": "http://127.0.0.1:9/v1/traces"})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["kind"]);
        let (status, body) = post(json!({"url": "http://127.0.0.1:9/v1/traces"})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["kind"]);
        let (status, body) = post(json!({
            "kind": "otlp", "url": "ftp://x",
            "headers": ["Authorization: Bearer {{secret.missing}}", "X-A: {{payload.a}}", "Content-Type: text/plain"],
            "colour": "blue"
        }))
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["colour"]);
        let (status, body) = post(json!({
            "kind": "otlp", "url": "ftp://x",
            "headers": ["Authorization: Bearer {{secret.missing}}", "X-A: {{payload.a}}", "Content-Type: text/plain"]
        }))
        .await;
        assert_eq!(status, 400, "{body}");
        let mut fields = common::error_fields(&body);
        fields.sort();
        assert_eq!(
            fields,
            ["headers[0]", "headers[1]", "headers[2]", "url"],
            "{body}"
        );
        let (status, body) = post(
            json!({"kind": "otlp", "url": "http://127.0.0.1:9/v1/traces", "headers": ["no colon"]}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["headers[0]"]);
        let (status, body) =
            post(json!({"kind": "otlp", "url": "http://127.0.0.1:9/v1/traces", "headers": 3}))
                .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["headers"]);

        let (status, created) =
            post(json!({"kind": "OTLP", "url": "http://127.0.0.1:9/v1/traces"})).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("exp_"), "{id}");
        assert_eq!(created["secret"], Value::Null);

        // A subscription of another format is not an exporter.
        let (status, body) = admin_call(
            &app,
            &admin,
            reqwest::Method::PUT,
            "/api/v1/secrets/hook",
            Some(json!({"value": "x"})),
        )
        .await;
        assert!(status == 200 || status == 201, "{body}");
        let (status, sub) = admin_call(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/subscriptions",
            Some(json!({"url": "http://127.0.0.1:9/hook", "secret": "hook"})),
        )
        .await;
        assert_eq!(status, 201, "{sub}");
        let (status, list) = admin_call(
            &app,
            &admin,
            reqwest::Method::GET,
            "/api/v1/exporters",
            None,
        )
        .await;
        assert_eq!(status, 200);
        let listed: Vec<&str> = list["exporters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, [id.as_str()]);
        let (status, _) = admin_call(
            &app,
            &admin,
            reqwest::Method::DELETE,
            &format!("/api/v1/exporters/{}", sub["id"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(status, 404);
        // An otlp subscription carries run.completed only.
        let (status, body) = admin_call(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/subscriptions",
            Some(json!({"url": "http://127.0.0.1:9/v1/traces", "format": "otlp", "events": ["run.started"]})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["events"]);

        // Read scope is not enough.
        let (status, _) = admin_call(
            &app,
            &app.key,
            reqwest::Method::GET,
            "/api/v1/exporters",
            None,
        )
        .await;
        assert_eq!(status, 403);
        let (status, _) = admin_call(
            &app,
            &admin,
            reqwest::Method::DELETE,
            &format!("/api/v1/exporters/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 204);
        let (_, list) = admin_call(
            &app,
            &admin,
            reqwest::Method::GET,
            "/api/v1/exporters",
            None,
        )
        .await;
        assert_eq!(list["exporters"], json!([]));
    }
}

#[tokio::test]
async fn exporters_are_ssrf_guarded_like_subscriptions() {
    for backend in backends() {
        // Default settings: private targets are refused.
        let app = TestApp::spawn(&backend).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        for url in [
            "http://127.0.0.1:4318/v1/traces",
            "http://[::ffff:127.0.0.1]:4318/v1/traces",
            "http://169.254.169.254/v1/traces",
        ] {
            let (status, body) = admin_call(
                &app,
                &admin,
                reqwest::Method::POST,
                "/api/v1/exporters",
                Some(json!({"kind": "otlp", "url": url})),
            )
            .await;
            assert_eq!(status, 400, "{url}: {body}");
            assert_eq!(common::error_fields(&body), ["url"], "{url}");
            assert!(
                common::error_text(&body).contains("allow_private_targets"),
                "{body}"
            );
        }
    }
}

#[tokio::test]
async fn subscriptions_take_headers_too() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, fast).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        for (name, value) in [("hook", "x"), ("api-key", "k")] {
            let (status, body) = admin_call(
                &app,
                &admin,
                reqwest::Method::PUT,
                &format!("/api/v1/secrets/{name}"),
                Some(json!({ "value": value })),
            )
            .await;
            assert!(status == 200 || status == 201, "{body}");
        }
        let (status, sub) = admin_call(
            &app,
            &admin,
            reqwest::Method::POST,
            "/api/v1/subscriptions",
            Some(
                json!({"url": "http://127.0.0.1:9/hook", "secret": "hook", "format": "native",
                        "headers": {"X-Api-Key": "{{secret.api-key}}"}}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{sub}");
        assert_eq!(
            sub["headers"],
            json!([{"name": "X-Api-Key", "value": "{{secret.api-key}}"}])
        );
        let path = format!("/api/v1/subscriptions/{}", sub["id"].as_str().unwrap());
        // A PATCH without headers keeps them; a bad one names the header.
        let (status, body) = admin_call(
            &app,
            &admin,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"only_failures": true})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["headers"], sub["headers"]);
        let (status, body) = admin_call(
            &app,
            &admin,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"headers": ["X-Api-Key: {{secret.nope}}"]})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["headers[0]"]);
        let (status, body) = admin_call(
            &app,
            &admin,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"headers": []})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["headers"], json!([]));
    }
}
