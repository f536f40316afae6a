//! The SEI custom CI/CD endpoint over HTTP: the seed's examples, every rule, on every backend.

mod common;

use common::*;
use serde_json::{json, Value};

const SEI: &str = "/v1/custom-cicd";

#[tokio::test]
async fn seed_data_example_is_stored_with_every_field() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let (status, body) = app
            .post_raw(SEI, &app.key, fixture("sei/data_example.json"))
            .await;
        assert_eq!(status, 201, "{b:?} {body}");
        assert_eq!(body["status"], "created");
        assert!(body["event_id"].is_string());
        let id = body["id"].as_str().unwrap().to_owned();

        let (status, run) = app.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["id"], id.as_str());
        assert_eq!(run["pipeline"]["name"], "Node.js CI");
        assert_eq!(run["pipeline"]["full_name"], "Node.js CI--readme updated");
        assert_eq!(
            run["pipeline"]["qualified_name"],
            "Node.js CI--readme updated"
        );
        assert_eq!(run["pipeline"]["module"], Value::Null);
        assert_eq!(
            run["instance"]["guid"],
            "89d2491c-764a-4f77-93d9-18e8e372b795"
        );
        assert_eq!(run["instance"]["name"], "Custom CI/CD Instance");
        assert_eq!(run["instance"]["url"], "https://custom-cicd.acme.com/");
        assert_eq!(run["build_number"], 4_487_150_517i64);
        assert_eq!(run["run_key"], "4487150517");
        assert_eq!(run["result"], "success");
        assert_eq!(run["source_result"], "success");
        assert_eq!(run["started_at"], "2023-03-22T06:44:54Z");
        assert_eq!(run["finished_at"], "2023-03-22T06:46:11Z");
        assert_eq!(run["duration_ms"], 77000);
        assert_eq!(run["triggered_by"], "SCMTrigger");
        assert_eq!(run["repo_url"], "https://api.github.com/users/rajpropelo");
        assert_eq!(run["branch"], "master");
        assert_eq!(run["ci"], true);
        assert_eq!(run["cd"], false);
        assert_eq!(
            run["commits"],
            json!([{"sha": "64be72b2c1f7d2a33082f98a40a848880fcdcd5e"}])
        );
        assert_eq!(
            run["params"],
            json!([
                {"name": "version", "value": 1, "type": "StringParameterValue"},
                {"name": "revision", "value": 1, "type": "StringParameterValue"}
            ])
        );
        assert_eq!(
            run["artifacts"],
            json!([{"input": false, "output": true, "type": "container", "location": "http://generated/image/location", "name": "image1", "qualifier": "1"}])
        );
        assert_eq!(
            run["trigger_chain"],
            json!([{"id": "SCMTrigger", "type": "SCMTriggerCause"}])
        );
        assert_eq!(run["source"], "sei");
        let stages = run["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 1);
        assert_eq!(stages[0]["name"], "Build_Stage");
        assert_eq!(stages[0]["description"], "Build_Stage");
        assert_eq!(stages[0]["result"], "success");
        assert_eq!(stages[0]["source_result"], "succeeded");
        assert_eq!(stages[0]["state"], "completed");
        assert_eq!(stages[0]["duration_ms"], 5000);
        assert_eq!(stages[0]["steps"][0]["name"], "BUILD_STEP");
        assert_eq!(stages[0]["steps"][0]["result"], "success");
        assert_eq!(stages[0]["steps"][0]["duration_ms"], 5000);

        // The same run wrapped in the envelope with the payload as a JSON string: an update.
        let payload = String::from_utf8(fixture("sei/data_example.json")).unwrap();
        let env = json!({"request_type": "CICD_PUSH", "payload": payload.trim()});
        let (status, body) = app.post(SEI, &env).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "updated");
        assert_eq!(body["id"], id.as_str());
        // And as an object inside the envelope.
        let obj: Value = serde_json::from_str(&payload).unwrap();
        let (status, body) = app
            .post(SEI, &json!({"request_type": "CICD_PUSH", "payload": obj}))
            .await;
        assert_eq!(
            (status, body["id"].as_str()),
            (200, Some(id.as_str())),
            "{body}"
        );
        assert_eq!(app.all_runs().await.len(), 1);

        // The instance was registered on first sight, the pipeline listed.
        let (_, inst) = app.get("/api/v1/instances").await;
        assert_eq!(
            inst["instances"][0]["guid"],
            "89d2491c-764a-4f77-93d9-18e8e372b795"
        );
        let (_, pipes) = app.get("/api/v1/pipelines").await;
        assert_eq!(
            pipes["pipelines"][0]["full_name"],
            "Node.js CI--readme updated"
        );
        assert_eq!(pipes["pipelines"][0]["runs"], 1);
        assert_eq!(pipes["pipelines"][0]["last_result"], "success");
    }
}

#[tokio::test]
async fn seed_example_payload_missing_comma_then_fixed() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let (status, body) = app
            .post_raw(SEI, &app.key, fixture("sei/example_payload.txt"))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["type"], "https://cistern.dev/problems/malformed-json");
        let msg = error_text(&body);
        assert!(msg.contains("line 52 column 1"), "{msg}");
        assert!(msg.contains("expected `,` or `}`"), "{msg}");
        assert!(msg.contains("comma is probably missing"), "{msg}");
        assert!(app.all_runs().await.is_empty(), "nothing stored");

        let (status, body) = app
            .post_raw(SEI, &app.key, fixture("sei/example_payload_fixed.json"))
            .await;
        assert_eq!(status, 201, "{body}");
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(run["execution_id"], "UNIQUE_EXECUTION_ID");
        assert_eq!(run["run_key"], "UNIQUE_EXECUTION_ID");
        assert_eq!(run["pipeline"]["project"], "Project-A");
        assert_eq!(run["triggered_by"], "NISHITH");
        assert_eq!(run["cfr_status"], true);
        assert_eq!(run["themes"], json!(["themex", "themey", "themex/themey"]));
        assert_eq!(run["web_url"], "http://somelink-updated.com");
        assert_eq!(run["instance"]["url"], "http://localhost:8800");
        assert_eq!(run["duration_ms"], 780000);
        assert_eq!(run["stages"], json!([]));

        // The rejected post is in the events log with its reason and raw body.
        let (_, events) = app.get("/api/v1/events?status=rejected").await;
        let ev = &events["events"][0];
        assert_eq!(ev["status"], "rejected");
        assert_eq!(ev["http_status"], 400);
        assert!(ev["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 52"));
        assert!(ev["body"].as_str().unwrap().contains("UNIQUE_EXECUTION_ID"));
    }
}

#[tokio::test]
async fn seed_curly_quote_example_is_explained() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let (status, body) = app
        .post_raw(SEI, &app.key, fixture("sei/curly_example.txt"))
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = error_text(&body);
    assert!(msg.contains("line 2 column 1"), "{msg}");
    assert!(msg.contains("curly quote"), "{msg}");
    assert!(msg.contains("line 3 column 1"), "{msg}");
}

/// Seed 000's curl example, straightened (its quotes and its doubled `{`): it names the job
/// `job_name` and sends no `pipeline` or `qualified_name`; `job_name` stands in for both.
#[tokio::test]
async fn seed_curl_example_with_job_name_is_accepted() {
    let text = String::from_utf8(fixture("sei/curly_example.txt")).unwrap();
    let fixed = text.replacen("{\n{", "{", 1).replace(['“', '”'], "\"");
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let (status, body) = app.post_raw(SEI, &app.key, fixed.clone()).await;
        assert_eq!(status, 201, "{b:?} {body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let (_, run) = app.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(run["pipeline"]["name"], "pipelines-testing", "{run}");
        assert_eq!(run["pipeline"]["qualified_name"], "pipelines-testing");
        assert_eq!(run["pipeline"]["full_name"], "<PROJECT>/<REPO_NAME>");
        assert_eq!(run["result"], "failure");
        assert_eq!(run["build_number"], 7871);

        // A sender that also sends `pipeline` or `qualified_name` keeps its own.
        let mut own: Value = serde_json::from_str(&fixed).unwrap();
        own["pipeline"] = json!("Pipelines");
        own["build_number"] = json!(7872);
        let (status, body) = app.post(SEI, &own).await;
        assert_eq!(status, 201, "{body}");
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(run["pipeline"]["name"], "Pipelines");
        assert_eq!(run["pipeline"]["qualified_name"], "pipelines-testing");

        // Neither `pipeline` nor `job_name`: the seed's required field is named.
        let mut none = own.clone();
        none.as_object_mut().unwrap().remove("pipeline");
        none.as_object_mut().unwrap().remove("job_name");
        let (status, body) = app.post(SEI, &none).await;
        assert_eq!(status, 400, "{body}");
        let fields = error_fields(&body);
        assert!(fields.contains(&"pipeline".to_owned()), "{fields:?}");
        assert!(fields.contains(&"qualified_name".to_owned()), "{fields:?}");
    }
}

#[tokio::test]
async fn instance_registration_returns_a_guid() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let (status, body) = app
            .post_raw(SEI, &app.key, fixture("sei/register.txt"))
            .await;
        assert_eq!(
            status, 400,
            "the seed's sample has a trailing comma: {body}"
        );
        assert!(error_text(&body).contains("trailing comma"), "{body}");
        let (status, body) = app
            .post(SEI, &json!({"integration_id": "4242", "name": "Custom CI/CD Integration", "type": "jenkins"}))
            .await;
        assert_eq!(status, 201, "{body}");
        let guid = body["instance_guid"].as_str().unwrap().to_owned();
        assert!(uuid_like(&guid), "{guid}");
        let (status, body2) = app
            .post(
                "/api/v1/instances",
                &json!({"integration_id": "4242", "name": "Second", "type": "custom"}),
            )
            .await;
        assert_eq!(status, 201, "{body2}");
        assert_ne!(body2["guid"], guid.as_str());
        let (_, list) = app.get("/api/v1/instances").await;
        let items = list["instances"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert!(items.iter().any(|i| i["guid"] == guid.as_str()
            && i["kind"] == "jenkins"
            && i["integration_id"] == "4242"));

        // The seed's registration sent again (a script run twice): the same GUID, no second
        // instance, on either route.
        let same = json!({"integration_id": "4242", "name": "Custom CI/CD Integration", "type": "jenkins"});
        let (status, again) = app.post(SEI, &same).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["instance_guid"], guid.as_str(), "{b:?}");
        let (status, again) = app.post("/api/v1/instances", &same).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["guid"], guid.as_str());
        // Asking for its own GUID again is the same registration too; another GUID is taken.
        let mut with_guid = same.clone();
        with_guid["guid"] = json!(guid);
        let (status, again) = app.post(SEI, &with_guid).await;
        assert_eq!(status, 200, "{again}");
        let (status, _) = app
            .post(
                "/api/v1/instances",
                &json!({"integration_id": "9", "name": "Other", "type": "custom", "guid": guid}),
            )
            .await;
        assert_eq!(status, 409);
        let (_, list) = app.get("/api/v1/instances").await;
        assert_eq!(list["instances"].as_array().unwrap().len(), 2);
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn every_rule_names_its_field() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            patch(json!({"start_time": 1711603545})),
            "start_time",
            "looks like seconds",
        ),
        (
            patch(json!({"start_time": "1711603545000"})),
            "start_time",
            "must be an integer",
        ),
        (
            patch(json!({"duration": -5})),
            "duration",
            "must not be negative",
        ),
        (patch(json!({"duration": 1.5})), "duration", "whole number"),
        (patch(json!({"result": "greenish"})), "result", "SUCCESS"),
        (
            patch(json!({"start_time": 400000000000i64})),
            "start_time",
            "before 1990",
        ),
        (
            patch(json!({"start_time": 4102444800000i64})),
            "start_time",
            "future",
        ),
        (patch(json!({"ci": "yes"})), "ci", "boolean"),
        (
            patch(json!({"scm_commit_ids": "abc"})),
            "scm_commit_ids",
            "array",
        ),
        (
            patch(json!({"job_run_params": [{"value": 1}]})),
            "job_run_params[0].name",
            "required",
        ),
        (
            patch(json!({"job_run": {"stages": [{"result": "SUCCESS"}]}})),
            "job_run.stages[0].displayName",
            "required",
        ),
        (
            patch(json!({"job_run": {"stages": [{"displayName": "a", "result": "meh"}]}})),
            "job_run.stages[0].result",
            "unknown result",
        ),
        (
            patch(json!({"pipeline": ""})),
            "pipeline",
            "must not be empty",
        ),
        (patch(json!({"artifacts": [1]})), "artifacts[0]", "object"),
        (
            patch(json!({"build_number": "abc"})),
            "build_number",
            "integer",
        ),
    ];
    for (payload, field, needle) in cases {
        let (status, body) = app.post(SEI, &payload).await;
        assert_eq!(status, 400, "{payload} -> {body}");
        let errors = body["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["message"].as_str().unwrap().contains(needle)),
            "{field} / {needle}: {body}"
        );
        assert_eq!(body["status"], 400);
    }
    // Several bad fields: all named at once.
    let (status, body) = app
        .post(SEI, &json!({"result": "nope", "duration": -1}))
        .await;
    assert_eq!(status, 400);
    let fields = error_fields(&body);
    for f in [
        "pipeline",
        "job_full_name",
        "qualified_name",
        "instance_name",
        "instance_guid",
        "start_time",
        "duration",
        "result",
    ] {
        assert!(fields.contains(&f.to_owned()), "{f} in {fields:?}");
    }
    assert!(
        app.all_runs().await.is_empty(),
        "no rejected request stored a run"
    );
}

fn patch(extra: Value) -> Value {
    let mut base = sei_run(1);
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[tokio::test]
async fn hostile_bodies_get_clear_refusals() {
    let app = TestApp::spawn_with(&Backend::Sqlite, |c| c.max_body_bytes = 64 * 1024).await;
    let big = format!("{{\"pipeline\": \"{}\"}}", "x".repeat(100 * 1024));
    let (status, body) = app.post_raw(SEI, &app.key, big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("65536"), "{body}");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"{\"pipeline\": \"\xff\xfe\"}".to_vec(), "UTF-8"),
        ("[".repeat(5000).into_bytes(), "nesting is too deep"),
        (
            br#"{"pipeline": "a", "pipeline": "b"}"#.to_vec(),
            "duplicate key",
        ),
        (b"[1, 2]".to_vec(), "must be a JSON object"),
        (
            b"{\"request_type\": \"x\", \"payload\": \"{not json\"}".to_vec(),
            "invalid JSON in payload",
        ),
        (
            b"{\"request_type\": \"x\", \"payload\": 5}".to_vec(),
            "payload",
        ),
        (b"nul\0l".to_vec(), "invalid JSON"),
    ];
    for (bytes, needle) in cases {
        let (status, body) = app.post_raw(SEI, &app.key, bytes.clone()).await;
        assert_eq!(
            status,
            400,
            "{:?} -> {body}",
            String::from_utf8_lossy(&bytes)
        );
        let text = format!("{} {}", body["detail"], error_text(&body));
        assert!(text.contains(needle), "{needle}: {body}");
    }
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200, "the server is still up");
    assert!(app.all_runs().await.is_empty());
}

#[tokio::test]
async fn auth_scopes_and_tenant_walls() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        // No key, unknown key, a Basic header.
        let resp = app
            .client
            .post(app.url(SEI))
            .body(sei_run(1).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let (status, _) = app
            .post_raw(SEI, "cst_not_a_key", sei_run(1).to_string())
            .await;
        assert_eq!(status, 401);
        // Scheme spellings.
        for (name, value) in [
            ("Authorization", format!("apikey {}", app.key)),
            ("Authorization", format!("APIKEY {}", app.key)),
            ("Authorization", format!("Bearer {}", app.key)),
            ("X-Api-Key", app.key.clone()),
        ] {
            let resp = app
                .client
                .post(app.url(SEI))
                .header(name, value.clone())
                .body(sei_run(1).to_string())
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{name}: {value}");
        }
        // Scopes.
        let read_only = app.key_for("default", &[cistern_store::Scope::Read]).await;
        let (status, body) = app.post_raw(SEI, &read_only, sei_run(2).to_string()).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("ingest"));
        let ingest_only = app
            .key_for("default", &[cistern_store::Scope::Ingest])
            .await;
        let (status, _) = app.get_with("/api/v1/runs", &ingest_only).await;
        assert_eq!(status, 403);
        // Revoked.
        let t = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        let keys = app.store.list_api_keys(&t.id).await.unwrap();
        let ro = keys
            .iter()
            .find(|k| read_only.starts_with(&k.prefix))
            .unwrap();
        app.store.revoke_api_key(&t.id, &ro.id).await.unwrap();
        let (status, body) = app.get_with("/api/v1/runs", &read_only).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("revoked"));
        // Tenants: B sees nothing of A, and A's ids are 404 for B.
        let (_, runs) = app.get("/api/v1/runs").await;
        let run_id = runs["runs"][0]["id"].as_str().unwrap().to_owned();
        let b_key = app
            .key_for(
                "acme",
                &[cistern_store::Scope::Ingest, cistern_store::Scope::Read],
            )
            .await;
        let (status, body) = app
            .get_with(&format!("/api/v1/runs/{run_id}"), &b_key)
            .await;
        assert_eq!(status, 404, "{body}");
        for path in [
            "/api/v1/runs",
            "/api/v1/pipelines",
            "/api/v1/instances",
            "/api/v1/events",
        ] {
            let (status, body) = app.get_with(path, &b_key).await;
            assert_eq!(status, 200);
            let list = body
                .as_object()
                .unwrap()
                .values()
                .find_map(|v| v.as_array())
                .unwrap();
            assert!(list.is_empty(), "{path}: {body}");
        }
        // The same run posted by B is B's own run.
        let (status, body) = app.post_raw(SEI, &b_key, sei_run(1).to_string()).await;
        assert_eq!(status, 201, "{body}");
        assert_ne!(body["id"], run_id.as_str());
        // The 403 of the read-only key was logged in A's events as rejected.
        let (_, ev) = app.get("/api/v1/events?status=rejected").await;
        assert!(
            ev["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["http_status"] == 403),
            "{ev}"
        );
    }
}

#[tokio::test]
async fn concurrent_repeats_make_one_run() {
    for b in backends() {
        let app = std::sync::Arc::new(TestApp::spawn(&b).await);
        let mut tasks = Vec::new();
        for _ in 0..24 {
            let app = app.clone();
            tasks.push(tokio::spawn(
                async move { app.post(SEI, &sei_run(7)).await },
            ));
        }
        let mut created = 0;
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            assert!(status == 201 || status == 200, "{body}");
            if body["status"] == "created" {
                created += 1;
            }
            ids.insert(body["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(created, 1, "{b:?}");
        assert_eq!(ids.len(), 1);
        assert_eq!(app.all_runs().await.len(), 1);
        // Without execution_id or build_number, the start time identifies the run.
        let mut no_ids = sei_run(8);
        no_ids.as_object_mut().unwrap().remove("build_number");
        let (s1, b1) = app.post(SEI, &no_ids).await;
        let (s2, b2) = app.post(SEI, &no_ids).await;
        assert_eq!((s1, s2), (201, 200));
        assert_eq!(b1["id"], b2["id"]);
    }
}

#[tokio::test]
async fn list_filters_and_cursor_pagination() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        for n in 0..7 {
            let (status, body) = app.post(SEI, &sei_run(n)).await;
            assert_eq!(status, 201, "{body}");
        }
        let mut other = sei_run(100);
        other["job_full_name"] = json!("team/deploy");
        other["pipeline"] = json!("deploy");
        app.post(SEI, &other).await;

        let mut seen = Vec::new();
        let mut cursor = String::new();
        for page in 0..3 {
            let path = format!(
                "/api/v1/runs?pipeline=team/build&limit=3{}",
                if cursor.is_empty() {
                    String::new()
                } else {
                    format!("&cursor={cursor}")
                }
            );
            let (status, body) = app.get(&path).await;
            assert_eq!(status, 200, "{body}");
            let runs = body["runs"].as_array().unwrap();
            assert_eq!(runs.len(), if page < 2 { 3 } else { 1 }, "page {page}");
            seen.extend(runs.iter().map(|r| r["build_number"].as_i64().unwrap()));
            match body["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => assert_eq!(page, 2),
            }
        }
        assert_eq!(
            seen,
            vec![6, 5, 4, 3, 2, 1, 0],
            "newest first, no gaps or repeats"
        );

        let count = |path: &'static str| {
            let app = &app;
            async move {
                let (status, body) = app.get(path).await;
                assert_eq!(status, 200, "{path}: {body}");
                body["runs"].as_array().unwrap().len()
            }
        };
        assert_eq!(count("/api/v1/runs?result=failure").await, 3); // 0, 3, 6
        assert_eq!(count("/api/v1/runs?result=FAILED").await, 3);
        assert_eq!(count("/api/v1/runs?branch=main").await, 5); // 0,2,4,6 + 100
        assert_eq!(count("/api/v1/runs?pipeline=deploy").await, 1);
        assert_eq!(
            count("/api/v1/runs?instance=2f1b2b4e-0000-4000-8000-000000000001").await,
            8
        );
        assert_eq!(
            count("/api/v1/runs?since=2024-03-28T05:28:45Z&until=2024-03-28T05:31:45Z").await,
            3
        ); // 3, 4, 5
        let (status, body) = app.get("/api/v1/runs?result=bogus").await;
        assert_eq!(status, 400);
        assert_eq!(error_fields(&body), vec!["result"]);
        let (status, body) = app.get("/api/v1/runs?since=tomorrow").await;
        assert_eq!(
            (status, error_fields(&body)),
            (400, vec!["since".to_owned()])
        );
        let (status, body) = app.get("/api/v1/runs?cursor=garbage").await;
        assert_eq!(
            (status, error_fields(&body)),
            (400, vec!["cursor".to_owned()])
        );
        let (status, _) = app.get("/api/v1/runs?limit=0").await;
        assert_eq!(status, 400);
    }
}

#[tokio::test]
async fn logs_are_capped_to_their_tail() {
    for b in backends() {
        let app = TestApp::spawn_with(&b, |c| c.max_log_bytes = 64).await;
        let long_log = format!("{}\nERROR: the real failure", "noise line\n".repeat(50));
        let mut run = sei_run(3);
        run["job_run"] = json!({"stages": [{"displayName": "test", "result": "FAILURE", "log": long_log,
            "steps": [{"displayName": "unit", "result": "FAILURE", "log": "short"}]}]});
        let (status, body) = app.post(SEI, &run).await;
        assert_eq!(status, 201, "{body}");
        let (_, got) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        let stage = &got["stages"][0];
        assert_eq!(stage["log_truncated"], true);
        let log = stage["log"].as_str().unwrap();
        assert!(
            log.len() <= 64 && log.ends_with("ERROR: the real failure"),
            "{log:?}"
        );
        assert_eq!(stage["steps"][0]["log"], "short");
        assert_eq!(stage["steps"][0]["log_truncated"], false);
    }
}

#[tokio::test]
async fn strict_tenants_refuse_unknown_instances() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let t = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        app.store.set_tenant_strict(&t.id, true).await.unwrap();
        let (status, body) = app.post(SEI, &sei_run(1)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(error_fields(&body), vec!["instance_guid"]);
        assert!(app.all_runs().await.is_empty());
        let (_, ev) = app.get("/api/v1/events?status=rejected").await;
        assert_eq!(ev["events"][0]["http_status"], 422);
        // The 422 names the event that keeps the request, like every other refusal.
        assert_eq!(body["event_id"], ev["events"][0]["id"], "{body}");
        // The Allstacks route too (its refusal names the service).
        let (status, body) = app
            .post(
                "/webhook/company/default/cicd_job",
                &serde_json::from_slice::<Value>(&fixture("allstacks/sample_payload_fixed.json"))
                    .unwrap(),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(error_fields(&body), vec!["service_id"]);
        assert!(body["event_id"].is_string(), "{body}");
        // Registered, the instance's runs are accepted.
        let (status, reg) = app
            .post(
                SEI,
                &json!({"integration_id": "1", "name": "ci-1", "type": "custom"}),
            )
            .await;
        assert_eq!(status, 201);
        let mut run = sei_run(1);
        run["instance_guid"] = reg["instance_guid"].clone();
        let (status, body) = app.post(SEI, &run).await;
        assert_eq!(status, 201, "{body}");
    }
}

#[tokio::test]
async fn acknowledged_runs_survive_a_restart() {
    for b in backends() {
        let mut app = TestApp::spawn(&b).await;
        for n in 0..20 {
            let (status, _) = app.post(SEI, &sei_run(n)).await;
            assert_eq!(status, 201);
        }
        app.stop();
        let url = app.database_url.clone();
        let store = cistern_store::open(&url, &Default::default())
            .await
            .unwrap();
        let t = store.tenant_by_slug("default").await.unwrap().unwrap();
        let page = store
            .list_runs(
                &t.id,
                &Default::default(),
                &cistern_store::PageRequest {
                    limit: 100,
                    cursor: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), 20);
    }
}

/// Seed 000's data example with its duration in seconds (77 for 77 000 ms, its stage 5 000 ms):
/// accepted as milliseconds, with a warning in the reply and in the events log.
#[tokio::test]
async fn a_duration_that_looks_like_seconds_is_accepted_with_a_warning() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let mut run: Value = serde_json::from_slice(&fixture("sei/data_example.json")).unwrap();
        run["duration"] = json!(77);
        let (status, body) = app.post(SEI, &run).await;
        assert_eq!(status, 201, "{b:?} {body}");
        let warnings = body["warnings"].as_array().expect("warnings in the reply");
        assert_eq!(warnings.len(), 1, "{body}");
        assert_eq!(warnings[0]["field"], "duration");
        assert!(
            warnings[0]["message"]
                .as_str()
                .unwrap()
                .contains("looks like seconds"),
            "{body}"
        );
        let (_, stored) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(stored["duration_ms"], 77, "kept as milliseconds");
        let (_, ev) = app
            .get(&format!(
                "/api/v1/events/{}",
                body["event_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(ev["status"], "accepted");
        assert_eq!(ev["warnings"], json!(warnings), "{ev}");
        assert_eq!(ev["errors"], json!([]));

        // In milliseconds, as the seed shows it: no warnings.
        run["duration"] = json!(77_000);
        run["build_number"] = json!(4_487_150_518i64);
        let (status, body) = app.post(SEI, &run).await;
        assert_eq!(status, 201, "{body}");
        assert!(body.get("warnings").is_none(), "{body}");
    }
}

/// A run that sends neither `ci` nor `cd` (seed 000's curl example) is neither; one that sends
/// one of them gets the other as its opposite. The Jenkins plugin's runs are CI builds.
#[tokio::test]
async fn a_run_without_ci_or_cd_is_neither() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let text = String::from_utf8(fixture("sei/curly_example.txt")).unwrap();
        let fixed = text.replacen("{\n{", "{", 1).replace(['“', '”'], "\"");
        let (status, body) = app.post_raw(SEI, &app.key, fixed).await;
        assert_eq!(status, 201, "{body}");
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(
            (&run["ci"], &run["cd"]),
            (&json!(false), &json!(false)),
            "{b:?}"
        );

        let mut deploy = sei_run(5);
        deploy["cd"] = json!(true);
        let (_, body) = app.post(SEI, &deploy).await;
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!((&run["ci"], &run["cd"]), (&json!(false), &json!(true)));

        let plugin = json!({"request_type": "JenkinsPluginJobRunComplete", "payload": {
            "job_name": "app", "job_full_name": "team/app",
            "jenkins_instance_guid": "24575de4-0baa-4575-8c94-9975c737008a",
            "jenkins_instance_name": "Jenkins", "start_time": 1_680_006_843_000i64,
            "duration": 26000, "result": "SUCCESS", "build_number": 12}});
        let (status, body) = app.post("/v1/generic-requests", &plugin).await;
        assert_eq!(status, 200, "{body}");
        let ids: Value = serde_json::from_str(body["payload"].as_str().unwrap()).unwrap();
        let (_, run) = app
            .get(&format!(
                "/api/v1/runs/{}",
                ids["run_ids"][0].as_str().unwrap()
            ))
            .await;
        assert_eq!((&run["ci"], &run["cd"]), (&json!(true), &json!(false)));
    }
}
