//! The Allstacks custom CD job endpoint over HTTP: the seed's sample (verbatim, then corrected),
//! every field rule, the limits of twenty, identity by job_id and start time, and tenant walls.

mod common;

use common::*;
use serde_json::{json, Value};

const JOB: &str = "/webhook/company/default/cicd_job";

/// POSTs with `Authorization: Bearer <key>`, as Allstacks senders do.
async fn post_bearer(
    app: &TestApp,
    path: &str,
    key: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url(path))
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    read(resp).await
}

/// POSTs a JSON job to the default tenant's endpoint with the default key.
async fn post_job(app: &TestApp, job: &Value) -> (u16, Value) {
    post_bearer(app, JOB, &app.key, job.to_string()).await
}

/// The corrected seed sample.
fn sample() -> Value {
    serde_json::from_slice(&fixture("allstacks/sample_payload_fixed.json")).unwrap()
}

/// The sample with fields replaced (`null` removes a field).
fn with(changes: Value) -> Value {
    let mut v = sample();
    for (k, x) in changes.as_object().unwrap() {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v
}

#[tokio::test]
async fn seed_sample_verbatim_is_explained_then_corrected_is_stored_whole() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let (status, body) =
            post_bearer(&app, JOB, &app.key, fixture("allstacks/sample_payload.txt")).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["type"], "https://cistern.dev/problems/malformed-json");
        let msg = error_text(&body);
        // Where the parser stopped, and why: the page's indentation is non-breaking spaces.
        assert!(
            msg.starts_with("invalid JSON in body at line 3 column 1: key must be a string"),
            "{msg}"
        );
        assert!(
            msg.contains("line 3 column 1: a non-breaking space (U+00A0)"),
            "{msg}"
        );
        // And every other mistake of the sample, each at its place, in the same reply.
        assert!(
            msg.contains(
                "line 9 column 20: a string that is not closed before the end of its line"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("line 11 column 15: a curly quote (“)"),
            "{msg}"
        );
        assert!(
            msg.contains("line 25 column 15: a single quote (')")
                && msg.contains("JSON strings and keys take double quotes"),
            "{msg}"
        );
        assert!(msg.contains("line 61 column 7: a trailing comma"), "{msg}");
        assert!(app.all_runs().await.is_empty(), "nothing stored");
        let (_, events) = app.get("/api/v1/events?status=rejected").await;
        let ev = &events["events"][0];
        assert_eq!(ev["dialect"], "allstacks");
        assert_eq!(ev["endpoint"], "/webhook/company/{company_id}/cicd_job");
        assert_eq!(ev["http_status"], 400);
        assert!(ev["body"].as_str().unwrap().contains("qa_approved_on"));

        let (status, body) = post_bearer(
            &app,
            JOB,
            &app.key,
            fixture("allstacks/sample_payload_fixed.json"),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "created");
        assert!(body["event_id"].is_string());
        let id = body["id"].as_str().unwrap().to_owned();
        let (status, run) = app.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["id"], id.as_str());
        assert_eq!(run["source"], "allstacks");
        assert_eq!(
            run["instance"],
            json!({"guid": "2", "name": "service 2", "url": null, "kind": "custom-cd"})
        );
        assert_eq!(run["pipeline"]["full_name"], "Production Deploy");
        assert_eq!(run["pipeline"]["name"], "Production Deploy");
        assert_eq!(run["job_type"], "Production Deploy");
        assert_eq!(run["run_key"], "1@1704018030");
        assert_eq!(run["execution_id"], "1");
        assert_eq!(run["build_number"], Value::Null);
        assert_eq!(run["result"], "success");
        assert_eq!(run["source_result"], "Succeeded");
        assert_eq!(run["started_at"], "2023-12-31T10:20:30Z");
        assert_eq!(run["finished_at"], "2023-12-31T10:25:30Z");
        assert_eq!(run["duration_ms"], 300_000);
        assert_eq!(run["triggered_by"], "testuser@org.com");
        assert_eq!(run["repo"], "12345");
        assert_eq!(run["repo_url"], Value::Null);
        assert_eq!(
            run["commits"],
            json!([{"sha": "a2e7da86cc392417b0d9f605b28038aae80b002f"}])
        );
        assert_eq!(run["cd"], true);
        assert_eq!(run["ci"], false);
        assert_eq!(
            run["custom_fields"],
            json!([
                {"key": "microservice", "type": "string", "value": ["frontend", "backend"]},
                {"key": "lead_time", "type": "duration", "value": 20},
                {"key": "float_key", "type": "float", "value": 20.5},
                {"key": "qa_approved_on", "type": "timestamp", "value": 1704018030}
            ])
        );
        assert_eq!(run["stages"], json!([]));
        assert_eq!(run["params"], json!([]));
        assert_eq!(run["event_id"], body["event_id"]);

        // The service shows up as an instance, the job type as a pipeline.
        let (_, inst) = app.get("/api/v1/instances").await;
        assert_eq!(inst["instances"][0]["guid"], "2");
        assert_eq!(inst["instances"][0]["kind"], "custom-cd");
        let (_, pipes) = app.get("/api/v1/pipelines").await;
        assert_eq!(pipes["pipelines"][0]["full_name"], "Production Deploy");
    }
}

#[tokio::test]
async fn blank_or_missing_fields_take_allstacks_defaults() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let (status, body) = post_job(
            &app,
            &with(json!({"triggered_by": null, "job_type": "", "optional": null})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(run["triggered_by"], "Custom CD Agent");
        assert_eq!(run["job_type"], "CUSTOM_CD_JOB");
        assert_eq!(run["pipeline"]["full_name"], "CUSTOM_CD_JOB");
        assert_eq!(run["custom_fields"], json!([]));

        // repo_name instead of repo_id; status in another case; a SHA-256 commit.
        let sha256 = "0123456789abcdef".repeat(4);
        let (status, body) = post_job(
            &app,
            &with(
                json!({"job_id": "2", "repo_id": null, "repo_name": "acme/web",
                "status": "on hold", "commit_sha": sha256, "triggered_by": "  "}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(run["repo"], "acme/web");
        assert_eq!(run["result"], "on_hold");
        assert_eq!(run["source_result"], "on hold");
        assert_eq!(run["commits"][0]["sha"], sha256.as_str());
        assert_eq!(run["triggered_by"], "Custom CD Agent");

        let (status, body) =
            post_job(&app, &with(json!({"job_id": "3", "status": "Failed"}))).await;
        assert_eq!(status, 201, "{body}");
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(run["result"], "failure");
    }
}

#[tokio::test]
async fn every_rule_names_its_field() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let twenty_one: Vec<Value> = (0..21)
        .map(|i| json!({"key": format!("k{i}"), "value": i, "type": "integer"}))
        .collect();
    let values: Vec<i64> = (0..21).collect();
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(json!({"job_id": null})), "job_id", "is required"),
        (with(json!({"job_id": [1]})), "job_id", "must be a string"),
        (
            with(json!({"commit_sha": null})),
            "commit_sha",
            "is required",
        ),
        (
            with(json!({"commit_sha": "a2e7da86cc39"})),
            "commit_sha",
            "commit_sha must be 40 or 64 hexadecimal characters, got 12",
        ),
        (
            with(json!({"commit_sha": "g2e7da86cc392417b0d9f605b28038aae80b002f"})),
            "commit_sha",
            "hexadecimal",
        ),
        (
            with(json!({"service_id": null})),
            "service_id",
            "is required",
        ),
        (
            with(json!({"service_id": "2"})),
            "service_id",
            "must be an integer",
        ),
        (
            with(json!({"job_start_time": null})),
            "job_start_time",
            "is required",
        ),
        (
            with(json!({"job_start_time": 1704018030000i64})),
            "job_start_time",
            "looks like milliseconds",
        ),
        (
            with(json!({"job_start_time": 315532800})),
            "job_start_time",
            "before 1990",
        ),
        (
            with(json!({"job_start_time": 4102444800i64})),
            "job_start_time",
            "more than a day in the future",
        ),
        (
            with(json!({"job_duration": null})),
            "job_duration",
            "is required",
        ),
        (
            with(json!({"job_duration": -300})),
            "job_duration",
            "must not be negative",
        ),
        (
            with(json!({"job_duration": "300"})),
            "job_duration",
            "must be an integer",
        ),
        (with(json!({"status": null})), "status", "is required"),
        (
            with(json!({"status": "Success"})),
            "status",
            "\"Succeeded\", \"Failed\", \"On Hold\"",
        ),
        (
            with(json!({"repo_id": null})),
            "repo_id",
            "one of repo_id or repo_name is required",
        ),
        (
            with(json!({"triggered_by": true})),
            "triggered_by",
            "must be a string",
        ),
        (
            with(json!({"job_type": {}})),
            "job_type",
            "must be a string",
        ),
        (
            with(json!({"optional": "x"})),
            "optional",
            "must be an array",
        ),
        (
            with(json!({"optional": twenty_one})),
            "optional",
            "at most 20 optional fields are allowed, got 21",
        ),
        (with(json!({"optional": ["k"]})), "optional[0]", "object"),
        (
            with(json!({"optional": [{"key": "", "value": 1, "type": "integer"}]})),
            "optional[0].key",
            "must not be empty",
        ),
        (
            with(json!({"optional": [{"key": "k", "value": 1, "type": "date"}]})),
            "optional[0].type",
            "must be one of string, integer, float, duration, timestamp",
        ),
        (
            with(json!({"optional": [{"key": "k", "value": values, "type": "integer"}]})),
            "optional[0].value",
            "at most 20 values, got 21",
        ),
        (
            with(json!({"optional": [{"key": "k", "value": ["a", 2], "type": "string"}]})),
            "optional[0].value[1]",
            "must be a string",
        ),
        (
            with(json!({"optional": [{"key": "k", "value": 1.5, "type": "integer"}]})),
            "optional[0].value",
            "must be an integer",
        ),
        (
            with(json!({"optional": [{"key": "k", "value": true, "type": "float"}]})),
            "optional[0].value",
            "must be a number",
        ),
        (
            with(json!({"optional": [{"key": "k", "value": "20m", "type": "duration"}]})),
            "optional[0].value",
            "seconds",
        ),
        (
            with(
                json!({"optional": [{"key": "k", "value": 1704018030000i64, "type": "timestamp"}]}),
            ),
            "optional[0].value",
            "looks like milliseconds",
        ),
        (
            with(json!({"optional": [
                {"key": "lead_time", "value": 1, "type": "duration"},
                {"key": "x", "value": 1, "type": "integer"},
                {"key": "lead_time", "value": 2, "type": "duration"}
            ]})),
            "optional[2].key",
            "duplicate key \"lead_time\" (already used by optional[0])",
        ),
    ];
    for (payload, field, needle) in cases {
        let (status, body) = post_job(&app, &payload).await;
        assert_eq!(status, 400, "{payload} -> {body}");
        assert_eq!(body["type"], "https://cistern.dev/problems/invalid-payload");
        let errors = body["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["message"].as_str().unwrap().contains(needle)),
            "{field} / {needle}: {body}"
        );
    }
    // Exactly twenty of each is fine.
    let (status, body) = post_job(
        &app,
        &with(json!({"job_id": "twenty", "optional": [
            {"key": "k", "value": (0..20).collect::<Vec<i64>>(), "type": "integer"}
        ]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut twenty = sample();
    twenty["job_id"] = json!("twenty-fields");
    twenty["optional"] = json!((0..20)
        .map(|i| json!({"key": format!("k{i}"), "value": format!("v{i}"), "type": "STRING"}))
        .collect::<Vec<_>>());
    let (status, body) = post_job(&app, &twenty).await;
    assert_eq!(status, 201, "{body}");
    let (_, run) = app
        .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
        .await;
    assert_eq!(run["custom_fields"].as_array().unwrap().len(), 20);
    assert_eq!(run["custom_fields"][19]["type"], "string");

    // Everything wrong at once: every field named in one reply.
    let (status, body) = post_job(&app, &json!({"status": "Done", "optional": [{}]})).await;
    assert_eq!(status, 400);
    let fields = error_fields(&body);
    for f in [
        "job_id",
        "commit_sha",
        "service_id",
        "job_start_time",
        "job_duration",
        "status",
        "repo_id",
        "optional[0].key",
        "optional[0].type",
        "optional[0].value",
    ] {
        assert!(fields.contains(&f.to_owned()), "{f} in {fields:?}");
    }
    assert_eq!(app.all_runs().await.len(), 2, "only the two valid posts");
}

#[tokio::test]
async fn a_job_is_identified_by_job_id_and_start_time() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let (status, first) = post_job(&app, &sample()).await;
        assert_eq!(status, 201, "{first}");
        // A true repeat (perhaps with a later status) is the same run.
        let (status, again) = post_job(&app, &with(json!({"status": "Failed"}))).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["status"], "updated");
        assert_eq!(again["id"], first["id"]);
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", first["id"].as_str().unwrap()))
            .await;
        assert_eq!(run["result"], "failure");
        assert_eq!(run["event_id"], again["event_id"]);
        // The same job_id started at another time is another run (Allstacks says job_id repeats).
        let (status, other) = post_job(&app, &with(json!({"job_start_time": 1704021630}))).await;
        assert_eq!(status, 201, "{other}");
        assert_ne!(other["id"], first["id"]);
        let runs = app.all_runs().await;
        assert_eq!(runs.len(), 2);
        let mut keys: Vec<&str> = runs
            .iter()
            .map(|r| r["run_key"].as_str().unwrap())
            .collect();
        keys.sort();
        assert_eq!(keys, vec!["1@1704018030", "1@1704021630"]);
    }
}

#[tokio::test]
async fn company_id_is_the_callers_tenant_and_nothing_else() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let acme_key = app
            .key_for(
                "acme",
                &[cistern_store::Scope::Ingest, cistern_store::Scope::Read],
            )
            .await;
        // The default tenant's key naming acme (which exists) or a company that does not exist.
        for company in ["acme", "no-such-company"] {
            let path = format!("/webhook/company/{company}/cicd_job");
            let (status, body) = post_bearer(&app, &path, &app.key, sample().to_string()).await;
            assert_eq!(status, 404, "{company}: {body}");
            assert_eq!(body["type"], "https://cistern.dev/problems/not-found");
            assert!(
                body["detail"].as_str().unwrap().contains("\"default\""),
                "{body}"
            );
        }
        // acme's key naming the default tenant.
        let (status, body) = post_bearer(&app, JOB, &acme_key, sample().to_string()).await;
        assert_eq!(status, 404, "{body}");
        // Nothing of it stored anywhere: no runs, and nothing in the named tenant's events.
        assert!(app.all_runs().await.is_empty());
        let (_, acme_runs) = app.get_with("/api/v1/runs", &acme_key).await;
        assert_eq!(acme_runs["runs"], json!([]));
        let (_, acme_events) = app.get_with("/api/v1/events", &acme_key).await;
        assert!(
            acme_events["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["http_status"] == 404
                    && e["endpoint"] == "/webhook/company/{company_id}/cicd_job"),
            "acme only sees its own refused post: {acme_events}"
        );
        let (_, default_events) = app.get("/api/v1/events").await;
        assert_eq!(
            default_events["events"].as_array().unwrap().len(),
            2,
            "the default tenant sees only its own two refused posts: {default_events}"
        );

        // The tenant's id works as the company id too.
        let t = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        let path = format!("/webhook/company/{}/cicd_job", t.id);
        let (status, body) = post_bearer(&app, &path, &app.key, sample().to_string()).await;
        assert_eq!(status, 201, "{body}");
        // And acme's own post is acme's run.
        let (status, acme_run) = post_bearer(
            &app,
            "/webhook/company/acme/cicd_job",
            &acme_key,
            sample().to_string(),
        )
        .await;
        assert_eq!(status, 201, "{acme_run}");
        assert_ne!(acme_run["id"], body["id"]);
        assert_eq!(app.all_runs().await.len(), 1);
    }
}

#[tokio::test]
async fn keys_and_scopes() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let resp = app
        .client
        .post(app.url(JOB))
        .body(sample().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, _) = post_bearer(&app, JOB, "cst_not_a_key", sample().to_string()).await;
    assert_eq!(status, 401);
    let read_only = app.key_for("default", &[cistern_store::Scope::Read]).await;
    let (status, body) = post_bearer(&app, JOB, &read_only, sample().to_string()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("ingest"));
    assert!(app.all_runs().await.is_empty());
}

#[tokio::test]
async fn strict_tenants_take_jobs_of_registered_services() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let t = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        app.store.set_tenant_strict(&t.id, true).await.unwrap();
        let (status, body) = post_job(&app, &sample()).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(error_fields(&body), vec!["service_id"]);
        assert!(
            body["event_id"].is_string(),
            "the refusal names its event: {body}"
        );
        // Register the CD service under its Allstacks id, then its jobs are accepted.
        let reg = json!({"integration_id": "allstacks", "name": "Custom CD", "type": "custom-cd", "guid": "2"});
        let (status, body) = app.post("/api/v1/instances", &reg).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["guid"], "2");
        // The same registration again is the same instance; another one cannot take the guid.
        let (status, body) = app.post("/api/v1/instances", &reg).await;
        assert_eq!(status, 200, "the same instance: {body}");
        assert_eq!(body["guid"], "2");
        let other = json!({"integration_id": "allstacks", "name": "Other CD", "type": "custom-cd", "guid": "2"});
        let (status, body) = app.post("/api/v1/instances", &other).await;
        assert_eq!(status, 409, "the guid is taken: {body}");
        let (status, body) = post_job(&app, &sample()).await;
        assert_eq!(status, 201, "{body}");
    }
}
