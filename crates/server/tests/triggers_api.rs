//! Triggers end to end (seed 002): the real hub fires a real local fake CI (axum on a random
//! port), the fake CI reports its run back through the SEI endpoint with the correlation id, and
//! `triggerExecutionDetails` follows the event from the request to the run's end; on SQLite and
//! PostgreSQL.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine;
use common::{backends, Backend, TestApp};
use serde_json::{json, Value};

// ---- the fake CI ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    headers: HeaderMap,
    body: String,
}

/// Reports a run back to the hub when called, one step per permit the test gives.
struct Reporter {
    hub: String,
    key: String,
    gate: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct CiState {
    calls: Mutex<Vec<Call>>,
    script: Mutex<HashMap<String, VecDeque<u16>>>,
    reporter: Mutex<Option<Arc<Reporter>>>,
}

struct FakeCi {
    base: String,
    state: Arc<CiState>,
}

impl FakeCi {
    async fn start() -> Self {
        let state = Arc::new(CiState::default());
        let app = axum::Router::new().fallback(ci).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }

    fn script(&self, path: &str, answers: &[u16]) {
        self.state
            .script
            .lock()
            .unwrap()
            .insert(path.to_owned(), answers.iter().copied().collect());
    }

    fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    /// From now on, a call starts a run that is reported back: started after the first permit,
    /// finished after the second.
    fn report_back(&self, hub: &str, key: &str) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *self.state.reporter.lock().unwrap() = Some(Arc::new(Reporter {
            hub: hub.to_owned(),
            key: key.to_owned(),
            gate: gate.clone(),
        }));
        gate
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// A run of the fake CI, as the SEI custom CI/CD format reports it.
fn ci_run(correlation_id: &str, result: &str, stages: Value) -> Value {
    json!({
        "pipeline": "deploy",
        "job_full_name": "platform/deploy",
        "qualified_name": "platform/deploy",
        "instance_name": "fake-ci",
        "instance_guid": "7d1c3c9e-0000-4000-8000-00000000c1c1",
        "execution_id": correlation_id,
        "build_number": 42,
        "start_time": 1_711_603_545_000u64,
        "duration": 90_000,
        "result": result,
        "web_url": "http://ci.invalid/job/deploy/42",
        "job_run": {"stages": stages},
    })
}

async fn ci(
    axum::extract::State(state): axum::extract::State<Arc<CiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    let call = Call {
        method: method.to_string(),
        path: path.clone(),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    state.calls.lock().unwrap().push(call);
    let code = state
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(|q| q.pop_front())
        .unwrap_or(201);
    let reporter = state.reporter.lock().unwrap().clone();
    if let (true, Some(r), Some(id)) = (
        (200..300).contains(&code),
        reporter,
        header(&headers, "x-cistern-correlation-id"),
    ) {
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let post = |run: Value| {
                client
                    .post(format!("{}/v1/custom-cicd", r.hub))
                    .header("Authorization", format!("ApiKey {}", r.key))
                    .json(&run)
                    .send()
            };
            r.gate.acquire().await.unwrap().forget();
            let started = ci_run(
                &id,
                "running",
                json!([{"displayName": "build", "result": "SUCCESS"}, {"displayName": "test", "result": "running"}]),
            );
            let resp = post(started).await.expect("report started");
            assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
            r.gate.acquire().await.unwrap().forget();
            let finished = ci_run(
                &id,
                "SUCCESS",
                json!([{"displayName": "build", "result": "SUCCESS"}, {"displayName": "test", "result": "SUCCESS"}]),
            );
            let resp = post(finished).await.expect("report finished");
            assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        });
    }
    let status = StatusCode::from_u16(code).unwrap();
    (status, format!("answer {code}")).into_response()
}

// ---- helpers -------------------------------------------------------------------------------

fn fast(c: &mut cistern_server::Config) {
    c.allow_private_targets = true;
    c.trigger_schedule = "0s,100ms,100ms".into();
    c.delivery_poll_interval = "50ms".into();
    c.delivery_timeout = "2s".into();
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct Hub {
    app: TestApp,
    admin: String,
    trigger_key: String,
}

impl Hub {
    async fn start(backend: &Backend, tune: impl FnOnce(&mut cistern_server::Config)) -> Self {
        let app = TestApp::spawn_with(backend, tune).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        let trigger_key = app
            .key_for("default", &[cistern_store::Scope::Trigger])
            .await;
        Self {
            app,
            admin,
            trigger_key,
        }
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .app
            .client
            .request(method, self.app.url(path))
            .header("Authorization", format!("Bearer {}", self.admin));
        if let Some(b) = body {
            req = req.json(&b);
        }
        common::read(req.send().await.unwrap()).await
    }

    async fn set_secret(&self, name: &str, value: &str) {
        let (status, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/api/v1/secrets/{name}"),
                Some(json!({ "value": value })),
            )
            .await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }

    async fn create(&self, body: Value) -> Value {
        let (status, reply) = self
            .admin(reqwest::Method::POST, "/api/v1/triggers", Some(body))
            .await;
        assert_eq!(status, 201, "{reply}");
        reply
    }

    /// Fires with a key (or none): status, content type, body.
    async fn fire(
        &self,
        path: &str,
        query: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, String, Value) {
        let mut req = self
            .app
            .client
            .post(self.app.url(&format!("{path}?{query}")))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(k) = key {
            req = req.header("X-Api-Key", k);
        }
        let resp = req.send().await.unwrap();
        let ct = header(resp.headers(), "content-type").unwrap_or_default();
        let (s, v) = common::read(resp).await;
        (s, ct, v)
    }

    async fn details_with(&self, path_prefix: &str, id: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.app.client.get(self.app.url(&format!(
            "{path_prefix}/api/webhook/triggerExecutionDetails/{id}?accountIdentifier=default"
        )));
        if let Some(k) = key {
            req = req.header("X-Api-Key", k);
        }
        common::read(req.send().await.unwrap()).await
    }

    async fn details(&self, id: &str) -> Value {
        let (status, body) = self
            .details_with("/gateway/pipeline", id, Some(&self.trigger_key))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "SUCCESS", "{body}");
        body["data"].clone()
    }
}

fn query(trigger: &str) -> String {
    format!("accountIdentifier=default&orgIdentifier=default&projectIdentifier=Platform&pipelineIdentifier=deploy&triggerIdentifier={trigger}")
}

fn summary(d: &Value) -> &Value {
    &d["executionDetails"]["pipelineExecutionSummary"]
}

fn counts(d: &Value) -> [i64; 4] {
    let s = summary(d);
    [
        s["successfulStagesCount"].as_i64().unwrap(),
        s["runningStagesCount"].as_i64().unwrap(),
        s["failedStagesCount"].as_i64().unwrap(),
        s["totalStagesCount"].as_i64().unwrap(),
    ]
}

/// A dashboard page, signed in with the default read key through the sign-in form.
async fn dashboard_page(app: &TestApp, path: &str) -> String {
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
        .form(&[
            ("key", app.key.as_str()),
            ("csrf", csrf.as_str()),
            ("next", path),
        ])
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
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

// ---- the tests -----------------------------------------------------------------------------

#[tokio::test]
async fn a_fired_trigger_starts_the_ci_and_follows_its_run_to_the_end() {
    for backend in backends() {
        let hub = Hub::start(&backend, fast).await;
        let ci = FakeCi::start().await;
        hub.set_secret("jenkins-auth", "deployer:11aa22bb").await;
        let ingest = hub.app.key.clone();
        let gate = ci.report_back(&hub.app.base, &ingest);
        let t = hub
            .create(json!({
                "org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "on-merge",
                "preset": "jenkins", "url": format!("{}/job/deploy", ci.base), "token_secret": "jenkins-auth",
            }))
            .await;
        assert_eq!(
            t["target"]["url"],
            format!("{}/job/deploy/buildWithParameters", ci.base)
        );
        assert_eq!(t["preset"], "jenkins");

        let fired_at = Instant::now();
        let (status, ct, reply) = hub
            .fire(
                "/gateway/api/webhook/custom",
                &query("on-merge"),
                Some(&hub.trigger_key),
                "{\"version\": \"1.2\"}",
            )
            .await;
        let acknowledged = fired_at.elapsed();
        assert_eq!(status, 200, "{reply}");
        assert!(ct.starts_with("application/json"), "{ct}");
        assert_eq!(reply["status"], "SUCCESS");
        assert_eq!(reply["metaData"], Value::Null);
        assert!(
            uuid::Uuid::parse_str(reply["correlationId"].as_str().unwrap()).is_ok(),
            "{reply}"
        );
        let id = reply["data"]
            .as_str()
            .expect("data is the eventCorrelationId")
            .to_owned();
        assert!(cistern_store::is_correlation_id(&id), "{id}");

        // The CI is asked as Jenkins is: form body, Basic auth, the correlation id twice.
        wait_for("the CI to be called", || async { !ci.calls().is_empty() }).await;
        eprintln!(
            "{backend:?}: call acknowledged in {acknowledged:?}, the CI called {:?} after the call",
            fired_at.elapsed()
        );
        let call = &ci.calls()[0];
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/job/deploy/buildWithParameters");
        assert_eq!(
            header(&call.headers, "x-cistern-correlation-id").as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            header(&call.headers, "content-type").as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("deployer:11aa22bb");
        assert_eq!(
            header(&call.headers, "authorization"),
            Some(format!("Basic {basic}"))
        );
        assert_eq!(call.body, format!("correlation_id={id}"));

        // Requested; the run is awaited.
        wait_for("TARGET_EXECUTION_REQUESTED", || async {
            hub.details(&id).await["webhookProcessingDetails"]["status"]
                == "TARGET_EXECUTION_REQUESTED"
        })
        .await;
        let d = hub.details(&id).await;
        let w = &d["webhookProcessingDetails"];
        assert_eq!(w["eventFound"], true);
        assert_eq!(w["eventId"], id.as_str());
        assert_eq!(w["accountIdentifier"], "default");
        assert_eq!(w["orgIdentifier"], "default");
        assert_eq!(w["projectIdentifier"], "Platform");
        assert_eq!(w["pipelineIdentifier"], "deploy");
        assert_eq!(w["triggerIdentifier"], "on-merge");
        assert_eq!(w["exceptionOccured"], false);
        assert_eq!(
            w["message"],
            "Pipeline execution was requested successfully"
        );
        assert_eq!(w["payload"], "{\"version\": \"1.2\"}");
        assert_eq!(w["runtimeInput"], format!("correlation_id={id}"));
        assert_eq!(w["pipelineExecutionId"], Value::Null);
        assert!(w["eventCreatedAt"].as_i64().unwrap() > 1_700_000_000_000);
        assert_eq!(summary(&d)["status"], "Queued");
        assert_eq!(summary(&d)["planExecutionId"], Value::Null);

        // Started: Running, one stage done, one running.
        gate.add_permits(1);
        wait_for("Running", || async {
            summary(&hub.details(&id).await)["status"] == "Running"
        })
        .await;
        let d = hub.details(&id).await;
        assert_eq!(counts(&d), [1, 1, 0, 2]);
        let run_id = summary(&d)["planExecutionId"]
            .as_str()
            .expect("the run")
            .to_owned();
        assert_eq!(
            d["webhookProcessingDetails"]["pipelineExecutionId"],
            run_id.as_str()
        );
        assert_eq!(summary(&d)["name"], "deploy");
        assert_eq!(summary(&d)["runSequence"], 42);
        assert_eq!(summary(&d)["endTs"], Value::Null);
        assert_eq!(
            summary(&d)["executionTriggerInfo"]["triggeredBy"]["extraInfo"]["eventCorrelationId"],
            id.as_str()
        );

        // Finished: Success, every stage successful, the same run.
        gate.add_permits(1);
        wait_for("Success", || async {
            summary(&hub.details(&id).await)["status"] == "Success"
        })
        .await;
        let d = hub.details(&id).await;
        assert_eq!(counts(&d), [2, 0, 0, 2]);
        assert_eq!(summary(&d)["planExecutionId"], run_id.as_str());
        assert_eq!(summary(&d)["startTs"], 1_711_603_545_000u64);
        assert_eq!(summary(&d)["endTs"], 1_711_603_545_000u64 + 90_000);
        assert_eq!(summary(&d)["executionId"], id.as_str());
        assert_eq!(summary(&d)["webUrl"], "http://ci.invalid/job/deploy/42");
        assert_eq!(
            d["webhookProcessingDetails"]["status"],
            "TARGET_EXECUTION_REQUESTED"
        );
        // The run is the hub's own, readable with the run API.
        let (status, run) = hub.app.get(&format!("/api/v1/runs/{run_id}")).await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["execution_id"], id.as_str());

        // Members in the seed's order, as its readers see them.
        let raw = hub
            .app
            .client
            .get(hub.app.url(&format!("/gateway/pipeline/api/webhook/triggerExecutionDetails/{id}?accountIdentifier=default")))
            .header("X-Api-Key", &hub.trigger_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let head = format!(
            r#"{{"status":"SUCCESS","data":{{"webhookProcessingDetails":{{"eventFound":true,"eventId":"{id}","accountIdentifier":"default","orgIdentifier":"default""#
        );
        assert!(raw.starts_with(&head), "{raw}");
        assert!(raw.contains(r#""executionDetails":{"pipelineExecutionSummary":{"pipelineIdentifier":"deploy","planExecutionId":"#), "{raw}");
        assert!(
            raw.ends_with(&format!(
                r#","metaData":null,"correlationId":"{}"}}"#,
                serde_json::from_str::<Value>(&raw).unwrap()["correlationId"]
                    .as_str()
                    .unwrap()
            )),
            "{raw}"
        );
        // The same answers without /gateway, and through triggerProcessingDetails.
        let (status, plain) = hub
            .details_with("/pipeline", &id, Some(&hub.trigger_key))
            .await;
        assert_eq!(status, 200);
        assert_eq!(summary(&plain["data"])["status"], "Success");
        let (status, proc_) = hub
            .app
            .get(&format!(
                "/api/webhook/triggerProcessingDetails?accountIdentifier=default&eventId={id}"
            ))
            .await;
        assert_eq!(status, 200, "{proc_}");
        assert_eq!(proc_["data"]["status"], "TARGET_EXECUTION_REQUESTED");

        // The admin's view of the trigger's events.
        let tid = t["id"].as_str().unwrap();
        let (status, evs) = hub
            .admin(
                reqwest::Method::GET,
                &format!("/api/v1/triggers/{tid}/events"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{evs}");
        let e = &evs["events"][0];
        assert_eq!(e["id"], id.as_str());
        assert_eq!(e["status"], "TARGET_EXECUTION_REQUESTED");
        assert_eq!(e["dispatch"], "delivered");
        assert_eq!(e["pipeline_status"], "Success");
        assert_eq!(e["run_id"], run_id.as_str());
        assert_eq!(e["attempts"], 1);
        assert_eq!(ci.calls().len(), 1, "sent once");

        // The dashboard lists the trigger and the event.
        let html = dashboard_page(&hub.app, "/admin/triggers").await;
        assert!(
            html.contains("on-merge") && html.contains(&id) && html.contains("Success"),
            "{html}"
        );
        assert!(html.contains(r#"href="/admin/triggers""#), "a nav link");
        assert!(!html.contains("/v3?"), "no token URL on the page");
        eprintln!("{backend:?}: fired, requested, running, succeeded");
    }
}

#[tokio::test]
async fn a_target_that_stays_down_is_retried_then_did_not_execute() {
    for backend in backends() {
        let hub = Hub::start(&backend, fast).await;
        let ci = FakeCi::start().await;
        // A port with nobody listening: connections are refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        hub.create(
            json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "down",
                          "url": format!("http://127.0.0.1:{closed}/build")}),
        )
        .await;
        hub.create(json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "flaky",
                          "url": format!("{}/flaky", ci.base)}))
            .await;
        hub.create(
            json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "gone",
                          "url": format!("{}/gone", ci.base)}),
        )
        .await;
        ci.script("/flaky", &[503, 502]);
        ci.script("/gone", &[404]);

        let mut ids = HashMap::new();
        for name in ["down", "flaky", "gone"] {
            let (status, _, reply) = hub
                .fire(
                    "/api/webhook/custom",
                    &query(name),
                    Some(&hub.trigger_key),
                    "{}",
                )
                .await;
            assert_eq!(status, 200, "{reply}");
            ids.insert(name, reply["data"].as_str().unwrap().to_owned());
        }
        let status_of = |d: &Value| {
            d["webhookProcessingDetails"]["status"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        wait_for("the down target to be given up", || async {
            status_of(&hub.details(&ids["down"]).await) == "TARGET_DID_NOT_EXECUTE"
        })
        .await;
        let d = hub.details(&ids["down"]).await;
        let msg = d["webhookProcessingDetails"]["message"].as_str().unwrap();
        assert!(msg.contains("3 attempts failed"), "{msg}");
        assert_eq!(
            d["executionDetails"],
            Value::Null,
            "no execution was requested"
        );

        // Two failures, then a 2xx: requested.
        wait_for("the flaky target to take it", || async {
            status_of(&hub.details(&ids["flaky"]).await) == "TARGET_EXECUTION_REQUESTED"
        })
        .await;
        let flaky = ci.calls_to("/flaky");
        assert_eq!(flaky.len(), 3);
        assert!(flaky.iter().all(
            |c| header(&c.headers, "x-cistern-correlation-id").as_deref()
                == Some(ids["flaky"].as_str())
        ));

        // A 4xx is the target's final word: one attempt.
        wait_for("the 404 to be final", || async {
            status_of(&hub.details(&ids["gone"]).await) == "TARGET_DID_NOT_EXECUTE"
        })
        .await;
        let d = hub.details(&ids["gone"]).await;
        assert!(
            d["webhookProcessingDetails"]["message"]
                .as_str()
                .unwrap()
                .contains("HTTP 404"),
            "{d}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ci.calls_to("/gone").len(), 1, "not retried");

        let (_, list) = hub
            .admin(reqwest::Method::GET, "/api/v1/triggers", None)
            .await;
        let down = list["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trigger"] == "down")
            .unwrap();
        let (_, evs) = hub
            .admin(
                reqwest::Method::GET,
                &format!("/api/v1/triggers/{}/events", down["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(evs["events"][0]["attempts"], 3);
        assert_eq!(evs["events"][0]["dispatch"], "failed");
        assert!(
            evs["events"][0]["last_error"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("connect"),
            "{evs}"
        );
    }
}

#[tokio::test]
async fn refusals_name_the_rule_and_the_status_word() {
    for backend in backends() {
        let hub = Hub::start(&backend, fast).await;
        let ci = FakeCi::start().await;
        let t = hub
            .create(json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "on-merge",
                           "url": format!("{}/build", ci.base)}))
            .await;
        let tid = t["id"].as_str().unwrap().to_owned();
        let problem = |ct: &str| assert!(ct.starts_with("application/problem+json"), "{ct}");

        // Unknown identifiers: 404, recorded, and followable.
        let (status, ct, body) = hub
            .fire(
                "/gateway/api/webhook/custom",
                &query("nope"),
                Some(&hub.trigger_key),
                "{}",
            )
            .await;
        assert_eq!(status, 404, "{body}");
        problem(&ct);
        assert_eq!(body["code"], "NO_ENABLED_CUSTOM_TRIGGER_FOUND");
        assert_eq!(common::error_fields(&body), ["triggerIdentifier"]);
        let refused = body["data"]
            .as_str()
            .expect("the refused event's id")
            .to_owned();
        let d = hub.details(&refused).await;
        assert_eq!(
            d["webhookProcessingDetails"]["status"],
            "NO_ENABLED_CUSTOM_TRIGGER_FOUND"
        );
        assert_eq!(d["webhookProcessingDetails"]["triggerIdentifier"], "nope");
        assert_eq!(d["executionDetails"], Value::Null);

        // Disabled: 409, nothing sent.
        let (status, body) = hub
            .admin(
                reqwest::Method::PATCH,
                &format!("/api/v1/triggers/{tid}"),
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["enabled"], false);
        let (status, ct, body) = hub
            .fire(
                "/api/webhook/custom/v2",
                &query("on-merge"),
                Some(&hub.trigger_key),
                "{}",
            )
            .await;
        assert_eq!(status, 409, "{body}");
        problem(&ct);
        assert_eq!(body["code"], "NO_ENABLED_CUSTOM_TRIGGER_FOUND");
        assert!(
            body["detail"].as_str().unwrap().contains("disabled"),
            "{body}"
        );
        hub.admin(
            reqwest::Method::PATCH,
            &format!("/api/v1/triggers/{tid}"),
            Some(json!({"enabled": true})),
        )
        .await;

        // Missing parameters, each named.
        let (status, ct, body) = hub
            .fire(
                "/api/webhook/custom",
                "accountIdentifier=default&orgIdentifier=default",
                Some(&hub.trigger_key),
                "{}",
            )
            .await;
        assert_eq!(status, 400);
        problem(&ct);
        assert_eq!(
            common::error_fields(&body),
            [
                "projectIdentifier",
                "pipelineIdentifier",
                "triggerIdentifier"
            ]
        );
        // Another account.
        let q = query("on-merge").replace("accountIdentifier=default", "accountIdentifier=acme");
        let (status, _, body) = hub
            .fire("/api/webhook/custom", &q, Some(&hub.trigger_key), "{}")
            .await;
        assert_eq!(status, 404);
        assert_eq!(body["code"], "NO_ENABLED_CUSTOM_TRIGGER_FOUND_FOR_ACCOUNT");
        assert_eq!(common::error_fields(&body), ["accountIdentifier"]);
        // Not JSON: located.
        let (status, _, body) = hub
            .fire(
                "/api/webhook/custom",
                &query("on-merge"),
                Some(&hub.trigger_key),
                "{\"a\": }",
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "INVALID_PAYLOAD");
        assert!(common::error_text(&body).contains("line 1"), "{body}");
        let d = hub.details(body["data"].as_str().unwrap()).await;
        assert_eq!(d["webhookProcessingDetails"]["status"], "INVALID_PAYLOAD");

        // Unauthenticated, a bad key, a key without the trigger scope.
        let (status, ct, body) = hub
            .fire(
                "/gateway/api/webhook/custom",
                &query("on-merge"),
                None,
                "{}",
            )
            .await;
        assert_eq!(status, 401, "{body}");
        problem(&ct);
        assert_eq!(body["code"], "TRIGGER_AUTHENTICATION_FAILED");
        assert_eq!(body["data"], Value::Null, "nothing recorded for a stranger");
        let (status, _, body) = hub
            .fire(
                "/api/webhook/custom",
                &query("on-merge"),
                Some("cst_wrong"),
                "{}",
            )
            .await;
        assert_eq!(status, 401);
        assert_eq!(body["code"], "TRIGGER_AUTHENTICATION_FAILED");
        let (status, _, body) = hub
            .fire(
                "/api/webhook/custom",
                &query("on-merge"),
                Some(&hub.app.key),
                "{}",
            )
            .await;
        assert_eq!(
            status, 403,
            "an ingest/read key does not fire pipelines: {body}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("`trigger` scope"),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(ci.calls().is_empty(), "no refused call reached the CI");

        // Unknown event ids: eventFound false with a key, 401 without, 400 without the account.
        let (status, body) = hub
            .details_with(
                "/gateway/pipeline",
                "62e2f35160958b611e494564",
                Some(&hub.trigger_key),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["data"]["webhookProcessingDetails"]["eventFound"],
            false
        );
        assert_eq!(body["data"]["executionDetails"], Value::Null);
        let (status, _) = hub
            .details_with("", "not-even-an-id", Some(&hub.app.key))
            .await;
        assert_eq!(status, 200);
        let other = hub.app.key_for("acme", &[cistern_store::Scope::Read]).await;
        let (status, body) = hub.details_with("", &refused, Some(&other)).await;
        assert_eq!(status, 200);
        assert_eq!(
            body["data"]["webhookProcessingDetails"]["eventFound"], false,
            "a wall between tenants"
        );
        let (status, body) = hub.details_with("", &refused, None).await;
        assert_eq!(status, 401, "{body}");
        let resp = hub
            .app
            .client
            .get(
                hub.app
                    .url(&format!("/api/webhook/triggerExecutionDetails/{refused}")),
            )
            .header("X-Api-Key", &hub.trigger_key)
            .send()
            .await
            .unwrap();
        let (status, body) = common::read(resp).await;
        assert_eq!(status, 400);
        assert_eq!(common::error_fields(&body), ["accountIdentifier"]);

        // Management: validation names fields; tenants are walls; admins only.
        let (status, body) = hub
            .admin(
                reqwest::Method::POST,
                "/api/v1/triggers",
                Some(json!({
                "org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "bad id",
                "url": "http://127.0.0.1:1/x", "method": "BREW", "headers": ["nocolon"],
                "body": "{{ nope }}", "color": "red"})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["color"]);
        let (status, body) = hub
            .admin(reqwest::Method::POST, "/api/v1/triggers", Some(json!({
                "org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "bad id",
                "url": "ftp://x", "method": "BREW", "headers": ["nocolon", "Authorization: Bearer {{secret.missing}}"],
                "body": "{{ nope }}"})))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            common::error_fields(&body),
            [
                "trigger",
                "method",
                "headers[0]",
                "url",
                "body",
                "headers[0]"
            ]
        );
        assert!(
            common::error_text(&body).contains("no secret named \"missing\""),
            "{body}"
        );
        let (status, body) = hub
            .admin(reqwest::Method::POST, "/api/v1/triggers", Some(json!({
                "org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "on-merge",
                "url": format!("{}/build", ci.base)})))
            .await;
        assert_eq!(status, 409, "{body}");
        let acme_admin = hub
            .app
            .key_for("acme", &[cistern_store::Scope::Admin])
            .await;
        let resp = hub
            .app
            .client
            .get(hub.app.url(&format!("/api/v1/triggers/{tid}")))
            .header("Authorization", format!("Bearer {acme_admin}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        let resp = hub
            .app
            .client
            .get(hub.app.url("/api/v1/triggers"))
            .header("Authorization", format!("Bearer {}", hub.trigger_key))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let (status, _) = hub
            .admin(
                reqwest::Method::DELETE,
                &format!("/api/v1/triggers/{tid}"),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = hub
            .admin(
                reqwest::Method::GET,
                &format!("/api/v1/triggers/{tid}"),
                None,
            )
            .await;
        assert_eq!(status, 404);
        // The refused event stays readable after its trigger is gone.
        assert_eq!(
            hub.details(&refused).await["webhookProcessingDetails"]["eventFound"],
            true
        );
    }
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let hub = Hub::start(&Backend::Sqlite, |_| {}).await;
    let (status, body) = hub
        .admin(
            reqwest::Method::POST,
            "/api/v1/triggers",
            Some(json!({
            "org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "t",
            "url": "http://169.254.169.254/latest/meta-data"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(common::error_fields(&body), ["url"]);
    assert!(common::error_text(&body).contains("link-local"), "{body}");
}

#[tokio::test]
async fn the_token_url_fires_without_a_key_only_when_allowed() {
    for backend in backends() {
        let hub = Hub::start(&backend, fast).await;
        let ci = FakeCi::start().await;
        let t = hub
            .create(json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "public",
                           "url": format!("{}/build", ci.base)}))
            .await;
        let tid = t["id"].as_str().unwrap();
        let token_url = t["token_url"].as_str().unwrap().to_owned();
        let (path, q) = token_url
            .strip_prefix(&hub.app.base)
            .unwrap()
            .split_once('?')
            .unwrap();
        assert!(
            path.starts_with("/gateway/pipeline/api/webhook/custom/") && path.ends_with("/v3"),
            "{path}"
        );
        let (status, _, body) = hub.fire(path, q, None, "{}").await;
        assert_eq!(status, 401, "not allowed yet: {body}");
        assert_eq!(body["code"], "TRIGGER_AUTHENTICATION_FAILED");
        // With a key, the token URL works whatever allow_token says.
        let (status, _, body) = hub.fire(path, q, Some(&hub.trigger_key), "{}").await;
        assert_eq!(status, 200, "{body}");
        let keyed = body["data"]["eventCorrelationId"]
            .as_str()
            .unwrap()
            .to_owned();

        hub.admin(
            reqwest::Method::PATCH,
            &format!("/api/v1/triggers/{tid}"),
            Some(json!({"allow_token": true})),
        )
        .await;
        let (status, _, body) = hub.fire(path, q, None, "{\"from\": \"a script\"}").await;
        assert_eq!(status, 200, "{body}");
        let data = &body["data"];
        let id = data["eventCorrelationId"].as_str().unwrap().to_owned();
        let api_url = data["apiUrl"].as_str().unwrap().to_owned();
        assert_eq!(
            api_url,
            format!("{}/gateway/pipeline/api/webhook/triggerExecutionDetails/{id}?accountIdentifier=default", hub.app.base)
        );
        assert!(
            data["uiUrl"].as_str().unwrap().contains("/admin/triggers"),
            "{data}"
        );
        assert!(data["uiSetupUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v1/triggers/{tid}")));
        // Follow it with the apiUrl, as a script would, without a key.
        wait_for("the keyless event to be sent", || async {
            let (_, d) = common::read(hub.app.client.get(&api_url).send().await.unwrap()).await;
            d["data"]["webhookProcessingDetails"]["status"] == "TARGET_EXECUTION_REQUESTED"
        })
        .await;
        // An event fired with a key is not readable without one.
        let (status, _) = hub.details_with("", &keyed, None).await;
        assert_eq!(status, 401);
        // A wrong token, with or without a key.
        let bad = path.replace(t["token"].as_str().unwrap_or("x"), "0000");
        let bad = if bad == path {
            path.replacen("/custom/", "/custom/0", 1)
        } else {
            bad
        };
        let (status, _, _) = hub.fire(&bad, q, None, "{}").await;
        assert_eq!(status, 401);
        let (status, _, _) = hub.fire(&bad, q, Some(&hub.trigger_key), "{}").await;
        assert_eq!(status, 401);
        assert_eq!(ci.calls_to("/build").len(), 2);
    }
}

#[tokio::test]
async fn an_event_whose_run_never_arrives_expires() {
    for backend in backends() {
        let hub = Hub::start(&backend, |c| {
            fast(c);
            c.trigger_expire_after = "1s".into();
            c.trigger_schedule = "0s,30s".into();
        })
        .await;
        let ci = FakeCi::start().await;
        hub.create(
            json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "t",
                          "url": format!("{}/build", ci.base)}),
        )
        .await;
        hub.create(
            json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "late",
                          "url": format!("{}/late", ci.base)}),
        )
        .await;
        ci.script("/late", &[503]);
        let (_, _, a) = hub
            .fire(
                "/api/webhook/custom",
                &query("t"),
                Some(&hub.trigger_key),
                "{}",
            )
            .await;
        let (_, _, b) = hub
            .fire(
                "/api/webhook/custom",
                &query("late"),
                Some(&hub.trigger_key),
                "{}",
            )
            .await;
        let (a, b) = (
            a["data"].as_str().unwrap().to_owned(),
            b["data"].as_str().unwrap().to_owned(),
        );
        wait_for("the request", || async {
            hub.details(&a).await["webhookProcessingDetails"]["status"]
                == "TARGET_EXECUTION_REQUESTED"
        })
        .await;
        let created = hub.details(&a).await["webhookProcessingDetails"]["eventCreatedAt"]
            .as_i64()
            .unwrap();
        wait_for("Expired", || async {
            summary(&hub.details(&a).await)["status"] == "Expired"
        })
        .await;
        let d = hub.details(&a).await;
        assert_eq!(
            d["webhookProcessingDetails"]["status"], "TARGET_EXECUTION_REQUESTED",
            "as in the seed"
        );
        assert_eq!(summary(&d)["endTs"], created + 1000);
        assert_eq!(counts(&d), [0, 0, 0, 0]);
        // Not sent before it expired (its retry was 30 s away): never sent.
        wait_for("the late event to be given up", || async {
            hub.details(&b).await["webhookProcessingDetails"]["status"] == "TARGET_DID_NOT_EXECUTE"
        })
        .await;
        let d = hub.details(&b).await;
        assert!(
            d["webhookProcessingDetails"]["message"]
                .as_str()
                .unwrap()
                .contains("expired"),
            "{d}"
        );
        assert_eq!(ci.calls_to("/late").len(), 1);
    }
}

#[tokio::test]
async fn templates_insert_payload_fields_secrets_and_the_correlation_id() {
    for backend in backends() {
        let hub = Hub::start(&backend, fast).await;
        let ci = FakeCi::start().await;
        hub.set_secret("deploy-token", "s3cr3t").await;
        let t = hub
            .create(json!({
                "org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "tpl",
                "url": format!("{}/api/deploy", ci.base), "method": "put",
                "headers": ["Authorization: Bearer {{secret.deploy-token}}", {"name": "X-Env", "value": "{{payload.env.name}}"}],
                "body": "{\"ref\": \"main\", \"inputs\": {\"correlation_id\": \"{{correlation_id}}\", \"version\": \"{{payload.version}}\", \"replicas\": \"{{payload.replicas}}\", \"all\": \"{{payload}}\", \"note\": \"v{{payload.version}} by {{payload.who}}\"}}",
            }))
            .await;
        assert_eq!(t["target"]["method"], "PUT");
        let payload = json!({"version": "1.2", "replicas": 3, "env": {"name": "prod"}, "who": "ana \"the\" admin"});
        let (status, _, reply) = hub
            .fire(
                "/api/webhook/custom",
                &query("tpl"),
                Some(&hub.trigger_key),
                &payload.to_string(),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        let id = reply["data"].as_str().unwrap().to_owned();
        wait_for("the call", || async { !ci.calls().is_empty() }).await;
        let call = &ci.calls()[0];
        assert_eq!(call.method, "PUT");
        assert_eq!(
            header(&call.headers, "authorization").as_deref(),
            Some("Bearer s3cr3t")
        );
        assert_eq!(header(&call.headers, "x-env").as_deref(), Some("prod"));
        assert_eq!(
            header(&call.headers, "content-type").as_deref(),
            Some("application/json")
        );
        let body: Value = serde_json::from_str(&call.body).unwrap();
        assert_eq!(
            body,
            json!({"ref": "main", "inputs": {"correlation_id": id, "version": "1.2", "replicas": 3, "all": payload,
                   "note": "v1.2 by ana \"the\" admin"}})
        );
        // runtimeInput shows what was sent (secrets stay placeholders there).
        let d = hub.details(&id).await;
        let shown: Value = serde_json::from_str(
            d["webhookProcessingDetails"]["runtimeInput"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(shown, body);

        // A payload cannot read a secret: what it sends is inserted as text, never rendered.
        let sneaky = json!({"env": {"name": "{{secret.deploy-token}}"}});
        let (_, _, reply) = hub
            .fire(
                "/api/webhook/custom",
                &query("tpl"),
                Some(&hub.trigger_key),
                &sneaky.to_string(),
            )
            .await;
        wait_for("the second call", || async { ci.calls().len() == 2 }).await;
        assert_eq!(
            header(&ci.calls()[1].headers, "x-env").as_deref(),
            Some("{{secret.deploy-token}}")
        );
        assert!(reply["data"].is_string());

        // The secret deleted: the request cannot be made.
        let (status, _) = hub
            .admin(
                reqwest::Method::DELETE,
                "/api/v1/secrets/deploy-token",
                None,
            )
            .await;
        assert!(status == 204 || status == 200, "{status}");
        let (_, _, reply) = hub
            .fire(
                "/api/webhook/custom",
                &query("tpl"),
                Some(&hub.trigger_key),
                "{}",
            )
            .await;
        let id = reply["data"].as_str().unwrap().to_owned();
        wait_for("the exception", || async {
            hub.details(&id).await["webhookProcessingDetails"]["status"]
                == "EXCEPTION_WHILE_PROCESSING"
        })
        .await;
        let w = hub.details(&id).await["webhookProcessingDetails"].clone();
        assert_eq!(w["exceptionOccured"], true);
        assert!(
            w["message"]
                .as_str()
                .unwrap()
                .contains("no secret named \"deploy-token\""),
            "{w}"
        );
        assert_eq!(ci.calls().len(), 2);
    }
}

#[tokio::test]
async fn presets_speak_each_ci_api() {
    for backend in backends() {
        let hub = Hub::start(&backend, fast).await;
        let ci = FakeCi::start().await;
        hub.set_secret("gh-token", "ghp_example").await;
        hub.set_secret("gl-trigger", "glptt-example").await;
        hub.create(json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "gh",
                          "preset": "github", "api_url": ci.base, "repo": "acme/app", "workflow": "ci.yml",
                          "ref": "main", "token_secret": "gh-token"}))
            .await;
        hub.create(
            json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "gl",
                          "preset": "gitlab", "url": ci.base, "project_id": "group/app",
                          "ref": "release", "token_secret": "gl-trigger"}),
        )
        .await;
        ci.script(
            "/repos/acme/app/actions/workflows/ci.yml/dispatches",
            &[204],
        );
        let mut ids = HashMap::new();
        for name in ["gh", "gl"] {
            let (status, _, reply) = hub
                .fire(
                    "/api/webhook/custom",
                    &query(name),
                    Some(&hub.trigger_key),
                    "{}",
                )
                .await;
            assert_eq!(status, 200, "{reply}");
            ids.insert(name, reply["data"].as_str().unwrap().to_owned());
        }
        wait_for("both CIs", || async { ci.calls().len() == 2 }).await;
        let gh = &ci.calls_to("/repos/acme/app/actions/workflows/ci.yml/dispatches")[0];
        assert_eq!(
            header(&gh.headers, "authorization").as_deref(),
            Some("Bearer ghp_example")
        );
        assert_eq!(
            header(&gh.headers, "accept").as_deref(),
            Some("application/vnd.github+json")
        );
        assert_eq!(
            header(&gh.headers, "x-github-api-version").as_deref(),
            Some("2022-11-28")
        );
        assert!(header(&gh.headers, "user-agent")
            .unwrap()
            .starts_with("Cistern"));
        let body: Value = serde_json::from_str(&gh.body).unwrap();
        assert_eq!(
            body,
            json!({"ref": "main", "inputs": {"correlation_id": ids["gh"]}})
        );
        let gl = &ci.calls_to("/api/v4/projects/group%2Fapp/trigger/pipeline")[0];
        let body: Value = serde_json::from_str(&gl.body).unwrap();
        assert_eq!(
            body,
            json!({"token": "glptt-example", "ref": "release", "variables": {"CORRELATION_ID": ids["gl"]}})
        );
        // GitHub answers 204 No Content: requested.
        wait_for("github requested", || async {
            hub.details(&ids["gh"]).await["webhookProcessingDetails"]["status"]
                == "TARGET_EXECUTION_REQUESTED"
        })
        .await;
        // A preset names what it lacks.
        let (status, body) = hub
            .admin(reqwest::Method::POST, "/api/v1/triggers", Some(json!({
                "org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "x", "preset": "github"})))
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            common::error_fields(&body),
            ["token_secret", "repo", "workflow", "ref"]
        );
    }
}

// ---- keyless triggers (seed 002's own curl) and token hygiene -------------------------------

/// The members of `pipelineExecutionSummary` in seed 002's response example, in its order.
const SEED_SUMMARY_MEMBERS: [&str; 24] = [
    "pipelineIdentifier",
    "planExecutionId",
    "name",
    "status",
    "tags",
    "executionTriggerInfo",
    "governanceMetadata",
    "moduleInfo",
    "layoutNodeMap",
    "modules",
    "startingNodeId",
    "startTs",
    "endTs",
    "createdAt",
    "canRetry",
    "showRetryHistory",
    "runSequence",
    "successfulStagesCount",
    "runningStagesCount",
    "failedStagesCount",
    "totalStagesCount",
    "executionInputConfigured",
    "allowStageExecutions",
    "stagesExecution",
];

#[tokio::test]
async fn the_seeds_keyless_curl_fires_a_trigger_that_asks_for_no_key() {
    for backend in backends() {
        let hub = Hub::start(&backend, fast).await;
        let ci = FakeCi::start().await;
        let gate = ci.report_back(&hub.app.base, &hub.app.key);
        let open = hub
            .create(json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "open",
                           "url": format!("{}/build", ci.base), "auth": "none"}))
            .await;
        assert_eq!(open["auth"], "none");
        assert!(
            !open["curl"].as_str().unwrap().contains("X-Api-Key"),
            "the curl line is the seed's, without a key: {open}"
        );
        let keyed = hub
            .create(json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "keyed",
                           "url": format!("{}/build", ci.base)}))
            .await;
        assert_eq!(keyed["auth"], "key", "a key stays the default");

        // Seed 002: curl -X POST -H 'content-type: application/json' --url
        // '…/gateway/api/webhook/custom?accountIdentifier=…&…&triggerIdentifier=…' -d '{}'
        let seed_fire = |trigger: &str| {
            hub.app
                .client
                .post(
                    hub.app
                        .url(&format!("/gateway/api/webhook/custom?{}", query(trigger))),
                )
                .header("content-type", "application/json")
                .body("{}")
                .send()
        };
        let (status, reply) = common::read(seed_fire("open").await.unwrap()).await;
        assert_eq!(status, 200, "{reply}");
        // { "status":"SUCCESS", "data":"62e2f35160958b611e494564", "metaData":null, "correlationId":"…"}
        let mut members: Vec<&str> = reply
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        members.sort_unstable();
        assert_eq!(members, ["correlationId", "data", "metaData", "status"]);
        assert_eq!(reply["status"], "SUCCESS");
        let id = reply["data"].as_str().unwrap().to_owned();
        assert!(cistern_store::is_correlation_id(&id), "{id}");

        // The default still asks for a key, and a keyless call learns nothing of what exists.
        for trigger in ["keyed", "no-such-trigger"] {
            let (status, body) = common::read(seed_fire(trigger).await.unwrap()).await;
            assert_eq!(status, 401, "{trigger}: {body}");
            assert_eq!(body["code"], "TRIGGER_AUTHENTICATION_FAILED");
            assert!(
                body["detail"].as_str().unwrap().contains("--auth none"),
                "{body}"
            );
        }
        let (status, _, reply) = hub
            .fire(
                "/gateway/api/webhook/custom",
                &query("keyed"),
                Some(&hub.trigger_key),
                "{}",
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        let keyed_id = reply["data"].as_str().unwrap().to_owned();

        // Seed 002: curl -X GET --url '…/gateway/pipeline/api/webhook/triggerExecutionDetails/<id>?accountIdentifier=…'
        let hub = &hub;
        let keyless =
            |id: String| async move { hub.details_with("/gateway/pipeline", &id, None).await };
        wait_for("the keyless event to be sent", || async {
            let (s, d) = keyless(id.clone()).await;
            s == 200
                && d["data"]["webhookProcessingDetails"]["status"] == "TARGET_EXECUTION_REQUESTED"
        })
        .await;
        // Two runs are reported (the keyed event's too): two permits each.
        gate.add_permits(4);
        wait_for("the run to finish", || async {
            summary(&keyless(id.clone()).await.1["data"])["status"] == "Success"
        })
        .await;
        let (_, d) = keyless(id.clone()).await;
        let d = &d["data"];
        assert_eq!(d["webhookProcessingDetails"]["eventId"], id.as_str());
        let s = summary(d);
        let have: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        for m in SEED_SUMMARY_MEMBERS {
            assert!(have.contains(&m), "{m} missing from {s}");
        }
        // In the seed's order, as sent.
        let text = hub
            .app
            .client
            .get(hub.app.url(&format!(
                "/gateway/pipeline/api/webhook/triggerExecutionDetails/{id}?accountIdentifier=default"
            )))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let summary_text = &text[text.find("\"pipelineExecutionSummary\"").unwrap()..];
        let mut from = 0;
        for m in SEED_SUMMARY_MEMBERS {
            let at = summary_text[from..].find(&format!("\"{m}\":"));
            assert!(at.is_some(), "{m} out of order: {summary_text}");
            from += at.unwrap();
        }
        // What Cistern has nothing of: empty, or false.
        assert_eq!(s["governanceMetadata"], json!({}));
        assert_eq!(s["moduleInfo"], json!({}));
        assert_eq!(s["modules"], json!([]));
        for flag in [
            "canRetry",
            "showRetryHistory",
            "executionInputConfigured",
            "allowStageExecutions",
            "stagesExecution",
        ] {
            assert_eq!(s[flag], false, "{flag}");
        }
        // The stages of the linked run, each pointing at the next; the first is the start.
        let map = s["layoutNodeMap"].as_object().unwrap();
        assert_eq!(map.len(), 2, "{s}");
        let first = s["startingNodeId"].as_str().unwrap();
        let build = &map[first];
        assert_eq!(build["name"], "build");
        assert_eq!(build["nodeGroup"], "STAGE");
        assert_eq!(build["status"], "Success");
        assert_eq!(build["nodeUuid"], first);
        let next = build["edgeLayoutList"]["nextIds"][0].as_str().unwrap();
        assert_eq!(map[next]["name"], "test");
        assert_eq!(map[next]["status"], "Success");
        assert_eq!(map[next]["edgeLayoutList"]["nextIds"], json!([]));
        assert_eq!(counts(d), [2, 0, 0, 2]);

        // Never another's: the keyed trigger's event, a made-up id, another account.
        let (status, _) = keyless(keyed_id.clone()).await;
        assert_eq!(status, 401);
        let (status, _) = keyless("0123456789abcdef01234567".into()).await;
        assert_eq!(status, 401);
        let (status, _) = common::read(
            hub.app
                .client
                .get(hub.app.url(&format!(
                    "/gateway/pipeline/api/webhook/triggerExecutionDetails/{id}?accountIdentifier=other"
                )))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401);

        // Bad input names the field and the rule; the choice can be changed.
        let (status, body) = hub
            .admin(
                reqwest::Method::POST,
                "/api/v1/triggers",
                Some(json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "x",
                            "url": format!("{}/build", ci.base), "auth": "open"})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["auth"]);
        let (status, body) = hub
            .admin(
                reqwest::Method::PATCH,
                &format!("/api/v1/triggers/{}", open["id"].as_str().unwrap()),
                Some(json!({"auth": "key"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = common::read(seed_fire("open").await.unwrap()).await;
        assert_eq!(status, 401, "asks for a key again");
    }
}

/// The token and its hash as stored (raw SQL, as an operator's backup would show them).
async fn stored_token(app: &TestApp, id: &str) -> (String, Option<String>) {
    match &app.backend {
        Backend::Sqlite => {
            let path = app.database_url.trim_start_matches("sqlite://").to_owned();
            let c = rusqlite::Connection::open(path).unwrap();
            c.query_row(
                "SELECT token, token_hash FROM triggers WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        }
        Backend::Postgres(_) => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&app.database_url)
                .await
                .unwrap();
            sqlx::query_as("SELECT token, token_hash FROM triggers WHERE id = $1")
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

/// Puts a database back as it was before tokens were hashed: the token in clear.
async fn unhash(app: &TestApp, id: &str, clear: &str) {
    match &app.backend {
        Backend::Sqlite => {
            let path = app.database_url.trim_start_matches("sqlite://").to_owned();
            let c = rusqlite::Connection::open(path).unwrap();
            c.execute(
                "UPDATE triggers SET token = ?2, token_hash = NULL WHERE id = ?1",
                [id, clear],
            )
            .unwrap();
        }
        Backend::Postgres(_) => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&app.database_url)
                .await
                .unwrap();
            for sql in [
                "ALTER TABLE triggers DROP COLUMN auth, DROP COLUMN token_hash",
                "DELETE FROM schema_migrations WHERE version = 15",
            ] {
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            sqlx::query("UPDATE triggers SET token = $2 WHERE id = $1")
                .bind(id)
                .bind(clear)
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The path and query of a token URL, and its token.
fn token_parts(hub: &Hub, url: &str) -> (String, String, String) {
    let (path, q) = url
        .strip_prefix(&hub.app.base)
        .unwrap()
        .split_once('?')
        .unwrap();
    let token = path
        .strip_prefix("/gateway/pipeline/api/webhook/custom/")
        .and_then(|p| p.strip_suffix("/v3"))
        .unwrap()
        .to_owned();
    (path.to_owned(), q.to_owned(), token)
}

#[tokio::test]
async fn trigger_tokens_are_kept_hashed_shown_once_and_rotate_at_once() {
    for backend in backends() {
        let hub = Hub::start(&backend, fast).await;
        let ci = FakeCi::start().await;
        let t = hub
            .create(json!({"org": "default", "project": "Platform", "pipeline": "deploy", "trigger": "tok",
                           "url": format!("{}/build", ci.base), "allow_token": true}))
            .await;
        let tid = t["id"].as_str().unwrap().to_owned();
        let (old_path, q, old_token) = token_parts(&hub, t["token_url"].as_str().unwrap());

        // Shown once: neither the trigger nor the list show it again.
        let (_, one) = hub
            .admin(
                reqwest::Method::GET,
                &format!("/api/v1/triggers/{tid}"),
                None,
            )
            .await;
        let (_, list) = hub
            .admin(reqwest::Method::GET, "/api/v1/triggers", None)
            .await;
        for shown in [&one, &list] {
            assert!(!shown.to_string().contains(&old_token), "{shown}");
        }
        // Kept as its hash only.
        let (clear, hash) = stored_token(&hub.app, &tid).await;
        assert_eq!(clear, "");
        assert_eq!(hash.as_deref(), Some(sha256_hex(&old_token).as_str()));

        let (status, _, body) = hub.fire(&old_path, &q, None, "{}").await;
        assert_eq!(status, 200, "{body}");

        // Rotation: the new URL works, the old token is refused at once, key or no key.
        let (status, rotated) = hub
            .admin(
                reqwest::Method::POST,
                &format!("/api/v1/triggers/{tid}/rotate-token"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{rotated}");
        let (new_path, new_q, new_token) =
            token_parts(&hub, rotated["token_url"].as_str().unwrap());
        assert_ne!(new_token, old_token);
        assert_eq!(new_q, q);
        let (status, _, body) = hub.fire(&old_path, &q, None, "{}").await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["code"], "TRIGGER_AUTHENTICATION_FAILED");
        let (status, _, _) = hub.fire(&old_path, &q, Some(&hub.trigger_key), "{}").await;
        assert_eq!(status, 401);
        let (status, _, body) = hub.fire(&new_path, &q, None, "{}").await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = hub
            .admin(
                reqwest::Method::POST,
                "/api/v1/triggers/trg_nope/rotate-token",
                None,
            )
            .await;
        assert_eq!(status, 404);

        // A database from before hashing: its clear token is hashed on start, and still works.
        let clear = "0123456789abcdef0123456789abcdef";
        unhash(&hub.app, &tid, clear).await;
        let Hub {
            app,
            admin,
            trigger_key,
        } = hub;
        let app = app.restart(fast).await;
        let hub = Hub {
            app,
            admin,
            trigger_key,
        };
        let (clear_now, hash) = stored_token(&hub.app, &tid).await;
        assert_eq!(clear_now, "", "{backend:?}");
        assert_eq!(hash.as_deref(), Some(sha256_hex(clear).as_str()));
        let (status, _, body) = hub
            .fire(
                &format!("/gateway/pipeline/api/webhook/custom/{clear}/v3"),
                &q,
                None,
                "{}",
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}
