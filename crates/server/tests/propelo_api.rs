//! The Jenkins Job Reporter's generic requests over HTTP: the seed's examples, multipart reports
//! with a zip of failure logs, heartbeats, plugin error reports, and the reply envelope.

#![recursion_limit = "256"]

mod common;

use std::io::Write;

use common::*;
use serde_json::{json, Value};

const GENERIC: &str = "/v1/generic-requests";
const MULTIPART: &str = "/v1/generic-requests/multipart";

/// The payload the real plugin builds (JobRunCompleteRequest), Blue Ocean stages with log ids.
fn plugin_run(build: u64) -> Value {
    json!({
        "job_name": "app-pipeline",
        "user_id": "SCMTrigger",
        "job_run_params": [{"type": "StringParameterValue", "name": "TARGET", "value": "qa"}],
        "repo_url": "https://github.com/acme/app.git",
        "scm_user_id": "dev1",
        "start_time": 1_700_000_000_000i64 + build as i64 * 600_000,
        "result": "FAILURE",
        "duration": 95_000,
        "build_number": build,
        "jenkins_instance_guid": "5a0e9f0e-7c1d-4c58-9d6c-2f8f5f0d1a11",
        "jenkins_instance_name": "Jenkins CI",
        "jenkins_instance_url": "https://jenkins.acme.com/",
        "job_full_name": "app/jobs/app-pipeline/branches/main",
        "job_normalized_full_name": "app/app-pipeline/main",
        "branch_name": "main",
        "module_name": null,
        "scm_commit_ids": ["6ce2cfec186fbf9ae9429ad22e32e7770f1eb1fb"],
        "trigger_chain": [{"id": "SCMTrigger", "type": "SCMTriggerCause"}],
        "job_run": {
            "id": build.to_string(), "name": "app-pipeline", "result": "FAILURE", "state": "FINISHED",
            "durationInMillis": 95000, "startTime": "2023-11-14T22:13:20.000+0000",
            "stages": [
                {"id": "6", "displayName": "Build", "displayDescription": null, "result": "SUCCESS", "state": "FINISHED",
                 "durationInMillis": 30000, "startTime": "2023-11-14T22:13:21.000+0000",
                 "steps": [{"id": "7", "displayName": "mvn package", "result": "SUCCESS", "state": "FINISHED", "durationInMillis": 29000}]},
                {"id": "12", "displayName": "Test", "result": "FAILURE", "state": "FINISHED",
                 "durationInMillis": 50000, "startTime": "2023-11-14T22:13:51.000+0000",
                 "steps": [
                    {"id": "13", "displayName": "unit", "result": "FAILURE", "state": "FINISHED", "durationInMillis": 20000, "log": "0f8c1c1e-aaaa-4bbb-8ccc-000000000013"},
                    {"id": "14", "displayName": "integration", "result": "FAILURE", "state": "FINISHED", "durationInMillis": 30000, "log": "0f8c1c1e-aaaa-4bbb-8ccc-000000000014"}
                 ]},
                {"id": "20", "displayName": "Deploy", "result": "FAILURE", "state": "FINISHED", "durationInMillis": 15000,
                 "log": "0f8c1c1e-aaaa-4bbb-8ccc-000000000020", "steps": []}
            ]
        }
    })
}

fn envelope(request_type: &str, payload: &Value) -> Value {
    json!({"request_type": request_type, "payload": payload.to_string()})
}

fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in files {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    out.into_inner()
}

async fn post_multipart(app: &TestApp, env: &Value, zip: Option<Vec<u8>>) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().part(
        "json",
        reqwest::multipart::Part::bytes(env.to_string().into_bytes()).file_name("json"),
    );
    if let Some(z) = zip {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(z).file_name("jobRunCompleteData.zip"),
        );
    }
    let resp = app
        .client
        .post(app.url(MULTIPART))
        .header("Authorization", format!("Apikey {}", app.key))
        .multipart(form)
        .send()
        .await
        .unwrap();
    read(resp).await
}

/// The plugin parses `payload` as a JSON string.
fn inner(body: &Value) -> Value {
    serde_json::from_str(body["payload"].as_str().expect("payload is a string"))
        .expect("payload holds JSON")
}

#[tokio::test]
async fn multipart_report_attaches_logs_from_the_zip() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let zip = zip_of(&[
            (
                "0f8c1c1e-aaaa-4bbb-8ccc-000000000013",
                b"unit: 3 tests failed\nAssertionError: expected 2",
            ),
            (
                "0f8c1c1e-aaaa-4bbb-8ccc-000000000014",
                b"integration: connection refused",
            ),
            (
                "0f8c1c1e-aaaa-4bbb-8ccc-000000000020",
                b"deploy: kubectl rollout failed",
            ),
        ]);
        let (status, body) = post_multipart(
            &app,
            &envelope("JenkinsPluginJobRunComplete", &plugin_run(41)),
            Some(zip),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response_type"], "JenkinsPluginJobRunComplete");
        let reply = inner(&body);
        assert_eq!(reply["error"], Value::Null, "{reply}");
        let id = reply["run_ids"][0].as_str().unwrap().to_owned();

        let (_, run) = app.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(run["source"], "propelo");
        assert_eq!(run["pipeline"]["name"], "app-pipeline");
        assert_eq!(
            run["pipeline"]["full_name"],
            "app/jobs/app-pipeline/branches/main"
        );
        assert_eq!(run["pipeline"]["qualified_name"], "app/app-pipeline/main");
        assert_eq!(
            run["instance"]["guid"],
            "5a0e9f0e-7c1d-4c58-9d6c-2f8f5f0d1a11"
        );
        assert_eq!(run["instance"]["name"], "Jenkins CI");
        assert_eq!(run["instance"]["url"], "https://jenkins.acme.com/");
        assert_eq!(run["result"], "failure");
        assert_eq!(run["source_result"], "FAILURE");
        assert_eq!(run["duration_ms"], 95000);
        assert_eq!(run["build_number"], 41);
        assert_eq!(run["triggered_by"], "SCMTrigger");
        assert_eq!(run["params"][0]["value"], "qa");
        let stages = run["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[0]["started_at"], "2023-11-14T22:13:21Z");
        assert_eq!(
            stages[1]["steps"][0]["log"],
            "unit: 3 tests failed\nAssertionError: expected 2"
        );
        assert_eq!(
            stages[1]["steps"][1]["log"],
            "integration: connection refused"
        );
        assert_eq!(stages[2]["log"], "deploy: kubectl rollout failed");
        assert_eq!(stages[0]["log"], Value::Null);

        // A repeat (the plugin retries) updates the same run.
        let (status, body) = post_multipart(
            &app,
            &envelope("JenkinsPluginJobRunComplete", &plugin_run(41)),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(inner(&body)["run_ids"][0], id.as_str());
        assert_eq!(app.all_runs().await.len(), 1);
    }
}

#[tokio::test]
async fn a_log_missing_from_the_zip_is_reported() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let zip = zip_of(&[("0f8c1c1e-aaaa-4bbb-8ccc-000000000013", b"unit failed")]);
    let (status, body) = post_multipart(
        &app,
        &envelope("JenkinsPluginJobRunComplete", &plugin_run(1)),
        Some(zip),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reply = inner(&body);
    let error = reply["error"].as_str().expect("the missing logs are named");
    assert!(
        error.contains("0f8c1c1e-aaaa-4bbb-8ccc-000000000014"),
        "{error}"
    );
    assert!(
        error.contains("0f8c1c1e-aaaa-4bbb-8ccc-000000000020"),
        "{error}"
    );
    let (_, run) = app
        .get(&format!(
            "/api/v1/runs/{}",
            reply["run_ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(run["stages"][1]["steps"][0]["log"], "unit failed");
}

#[tokio::test]
async fn zip_bombs_and_broken_zips_are_refused() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let zeros = vec![0u8; 24 * 1024 * 1024];
    let bomb = zip_of(&[("0f8c1c1e-aaaa-4bbb-8ccc-000000000013", &zeros)]);
    assert!(bomb.len() < 200 * 1024, "the bomb is small: {}", bomb.len());
    let (status, body) = post_multipart(
        &app,
        &envelope("JenkinsPluginJobRunComplete", &plugin_run(2)),
        Some(bomb),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("zip bomb"), "{body}");
    assert_eq!(body["response_type"], "JenkinsPluginJobRunComplete");
    assert!(inner(&body)["error"].as_str().unwrap().contains("zip bomb"));
    assert!(app.all_runs().await.is_empty(), "nothing half-stored");

    let (status, body) = post_multipart(
        &app,
        &envelope("JenkinsPluginJobRunComplete", &plugin_run(3)),
        Some(b"PK\x03\x04 not a zip".to_vec()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_fields(&body), vec!["file"]);
    // Path tricks refuse the zip (entries are never written to disk, but no plugin makes one).
    for name in [
        "../0f8c1c1e-aaaa-4bbb-8ccc-000000000013",
        "/etc/0f8c1c1e-aaaa-4bbb-8ccc-000000000013",
    ] {
        let zip = zip_of(&[(name, b"sneaky")]);
        let (status, body) = post_multipart(
            &app,
            &envelope("JenkinsPluginJobRunComplete", &plugin_run(4)),
            Some(zip),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_fields(&body), vec!["file"]);
        assert!(error_text(&body).contains("leaves the archive"), "{body}");
    }
    assert!(app.all_runs().await.is_empty(), "nothing half-stored");
}

#[tokio::test]
async fn seed_generic_request_examples() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        // Verbatim, the seed's curl body holds an unescaped multi-line JSON string: refused, explained.
        let (status, body) = app
            .post_raw(GENERIC, &app.key, fixture("propelo/request_example.txt"))
            .await;
        assert_eq!(status, 400, "{body}");
        let msg = error_text(&body);
        assert!(msg.contains("line 3 column"), "{msg}");
        assert!(msg.contains("raw line break"), "{msg}");
        // The payload example is wrapped in shell single quotes.
        let (status, body) = app
            .post_raw(GENERIC, &app.key, fixture("propelo/payload_example.txt"))
            .await;
        assert_eq!(status, 400);
        assert!(error_text(&body).contains("single quote"), "{body}");
        // Corrected: accepted, every field kept (seed names: triggered_by, execution_parameters, instance_guid…).
        let (status, body) = app
            .post_raw(
                GENERIC,
                &app.key,
                fixture("propelo/request_example_fixed.json"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response_type"], "JenkinsPluginJobRunComplete");
        let id = inner(&body)["run_ids"][0].as_str().unwrap().to_owned();
        let (_, run) = app.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(run["pipeline"]["name"], "Node.js CI");
        assert_eq!(run["pipeline"]["full_name"], "Node.js CI--github action");
        assert_eq!(run["triggered_by"], "SCMTrigger");
        assert_eq!(
            run["params"][1],
            json!({"type": "StringParameterValue", "name": "revision", "value": 1})
        );
        assert_eq!(
            run["instance"]["guid"],
            "24575de4-0baa-4575-8c94-9975c737008a"
        );
        assert_eq!(run["instance"]["name"], "Jenkins Instance");
        assert_eq!(run["build_number"], 4_543_097_378i64);
        assert_eq!(run["duration_ms"], 26000);
        assert_eq!(run["branch"], "main");
        assert_eq!(
            run["commits"][0]["sha"],
            "6ce2cfec186fbf9ae9429ad22e32e7770f1eb1fb"
        );
        assert_eq!(run["artifacts"][0]["name"], "image1");
        assert_eq!(run["trigger_chain"][0]["type"], "SCMTriggerCause");
        // The payload as an object is accepted too.
        let obj: Value = serde_json::from_slice(&fixture("propelo/payload_example.json")).unwrap();
        let (status, body) = app
            .post(
                GENERIC,
                &json!({"request_type": "JenkinsPluginJobRunComplete", "payload": obj}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(inner(&body)["run_ids"][0], id.as_str());
    }
}

#[tokio::test]
async fn runs_without_blue_ocean_keep_their_log() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let mut run = plugin_run(9);
    run["job_run"] = json!({"name": "app-pipeline", "result": "FAILURE", "durationInMillis": 95000,
        "startTime": "1700005400000", "log": "0f8c1c1e-aaaa-4bbb-8ccc-0000000000aa"});
    let zip = zip_of(&[(
        "0f8c1c1e-aaaa-4bbb-8ccc-0000000000aa",
        b"BUILD FAILED: exit 2",
    )]);
    let (status, body) = post_multipart(
        &app,
        &envelope("JenkinsPluginJobRunComplete", &run),
        Some(zip),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, got) = app
        .get(&format!(
            "/api/v1/runs/{}",
            inner(&body)["run_ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(got["log"], "BUILD FAILED: exit 2");
    assert_eq!(got["stages"], json!([]));
}

#[tokio::test]
async fn heartbeat_marks_the_instance_alive() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let hb = json!({"instance_id": "5a0e9f0e-7c1d-4c58-9d6c-2f8f5f0d1a11", "timestamp": 1_700_000_000,
            "details": {"jenkins_version": "2.426.1", "plugin_version": "1.0.43", "config_updated_at": 1_699_000_000,
                "jenkins_instance_url": "https://jenkins.acme.com/", "jenkins_instance_name": "Jenkins CI"}});
        let (status, body) = app.post(GENERIC, &envelope("JenkinsHeartbeat", &hb)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response_type"], "JenkinsHeartbeat");
        let reply = inner(&body);
        assert_eq!(reply["success"], true);
        assert_eq!(reply["configuration"]["heartbeat_duration"], 60);
        assert!(reply["server_version"].is_string());
        let (_, list) = app.get("/api/v1/instances").await;
        let inst = &list["instances"][0];
        assert_eq!(inst["guid"], "5a0e9f0e-7c1d-4c58-9d6c-2f8f5f0d1a11");
        assert_eq!(inst["name"], "Jenkins CI");
        assert_eq!(inst["last_heartbeat_at"], "2023-11-14T22:13:20Z");
        assert_eq!(inst["details"]["jenkins_version"], "2.426.1");
        assert_eq!(inst["details"]["plugin_version"], "1.0.43");
    }
}

#[tokio::test]
async fn plugin_error_reports_and_unknown_types() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let report =
        json!({"message": "Failed to zip logs", "stacktrace": "java.io.IOException: disk full"});
    let (status, body) = app
        .post(GENERIC, &envelope("pluginErrorReport", &report))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(inner(&body)["success"], true);
    let (_, events) = app.get("/api/v1/events").await;
    let ev = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request_type"] == "pluginErrorReport")
        .expect("kept");
    assert!(ev["body"].as_str().unwrap().contains("disk full"));

    let (status, body) = app
        .post(
            GENERIC,
            &json!({"request_type": "JenkinsConfig", "payload": "{}"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["response_type"], "JenkinsConfig");
    assert!(
        error_text(&body)
            .contains("JenkinsPluginJobRunComplete, JenkinsPluginJobConfigChange, JenkinsHeartbeat, pluginErrorReport"),
        "{body}"
    );
    let (status, body) = app.post(GENERIC, &json!({"payload": "{}"})).await;
    assert_eq!(status, 400);
    assert_eq!(error_fields(&body), vec!["request_type"]);
    // A job run missing its identity fields names them, under payload.
    let (status, body) = app
        .post(
            GENERIC,
            &envelope("JenkinsPluginJobRunComplete", &json!({"result": "SUCCESS"})),
        )
        .await;
    assert_eq!(status, 400);
    let fields = error_fields(&body);
    for f in [
        "payload.job_full_name",
        "payload.instance_guid",
        "payload.instance_name",
        "payload.start_time",
        "payload.duration",
    ] {
        assert!(fields.contains(&f.to_owned()), "{f}: {fields:?}");
    }
    // Unauthenticated: 401 in the same envelope.
    let resp = app
        .client
        .post(app.url(GENERIC))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// Seed 001 says "duration in seconds" for the generic-requests envelope; the plugin sends
/// milliseconds. A run of 95 "ms" whose stages add up to 95 000 ms is stored as sent, and the
/// plugin's reply and the events log carry the warning.
#[tokio::test]
async fn a_duration_in_seconds_is_accepted_with_a_warning_in_the_envelope() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let mut run = plugin_run(3);
        run["duration"] = json!(95);
        let (status, body) = app
            .post(GENERIC, &envelope("JenkinsPluginJobRunComplete", &run))
            .await;
        assert_eq!(status, 200, "{b:?} {body}");
        let reply = inner(&body);
        assert_eq!(reply["error"], Value::Null);
        let w = reply["warnings"]
            .as_array()
            .expect("warnings in the payload");
        assert_eq!(w[0]["field"], "duration", "{reply}");
        let (_, events) = app.get("/api/v1/events?status=accepted").await;
        let ev = &events["events"][0];
        assert_eq!(ev["warnings"][0]["field"], "duration", "{ev}");
        let (_, stored) = app
            .get(&format!(
                "/api/v1/runs/{}",
                reply["run_ids"][0].as_str().unwrap()
            ))
            .await;
        assert_eq!(stored["duration_ms"], 95);
    }
}

/// The plugin's `JenkinsPluginJobConfigChange` (its JobConfigChangeRequest, sent on every job
/// configuration change): 200 in its envelope, kept in the events log, and the time recorded on
/// the job's pipeline, the same pipeline its runs land on.
#[tokio::test]
async fn a_job_config_change_is_accepted_and_recorded_on_its_pipeline() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let (status, body) = app
            .post(
                GENERIC,
                &envelope("JenkinsPluginJobRunComplete", &plugin_run(1)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let change: Value =
            serde_json::from_slice(&fixture("propelo/job_config_change.json")).unwrap();
        let (status, body) = app.post(GENERIC, &change).await;
        assert_eq!(status, 200, "{b:?} {body}");
        assert_eq!(body["response_type"], "JenkinsPluginJobConfigChange");
        let reply = inner(&body);
        assert_eq!(reply["run_ids"], json!([]), "the plugin reads run_ids");

        let (_, pipelines) = app.get("/api/v1/pipelines").await;
        let list = pipelines["pipelines"].as_array().expect("pipelines");
        assert_eq!(
            list.len(),
            1,
            "the change lands on the runs' pipeline: {pipelines}"
        );
        assert_eq!(list[0]["full_name"], "app/jobs/app-pipeline/branches/main");
        assert_eq!(list[0]["runs"], 1);
        assert_eq!(list[0]["config_changed_at"], "2023-11-14T22:23:20Z");

        let (_, ev) = app
            .get(&format!(
                "/api/v1/events/{}",
                reply["event_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(ev["status"], "accepted");
        assert_eq!(ev["request_type"], "JenkinsPluginJobConfigChange");

        // A change reported late does not move the time back; one for a new job makes its
        // pipeline.
        let mut payload: Value = serde_json::from_str(change["payload"].as_str().unwrap()).unwrap();
        payload["change_time"] = json!(1_699_000_000_000i64);
        let (status, _) = app
            .post(GENERIC, &envelope("JenkinsPluginJobConfigChange", &payload))
            .await;
        assert_eq!(status, 200);
        payload["job_full_name"] = json!("app/jobs/new-job");
        payload["change_type"] = json!("created");
        let (status, _) = app
            .post(GENERIC, &envelope("JenkinsPluginJobConfigChange", &payload))
            .await;
        assert_eq!(status, 200);
        let (_, pipelines) = app.get("/api/v1/pipelines").await;
        let list = pipelines["pipelines"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{pipelines}");
        assert_eq!(list[0]["config_changed_at"], "2023-11-14T22:23:20Z");
        assert_eq!(list[1]["full_name"], "app/jobs/new-job");
        assert_eq!(list[1]["runs"], 0);

        // Without its time, the field is named.
        payload.as_object_mut().unwrap().remove("change_time");
        let (status, body) = app
            .post(GENERIC, &envelope("JenkinsPluginJobConfigChange", &payload))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_fields(&body), vec!["payload.change_time"]);
    }
}

/// A small zip whose one log is named by hundreds of stages inflates to hundreds of MB: it is
/// read off the async threads, refused at the total cap (named), and /healthz keeps answering.
/// The test runs on one thread, as a busy node's runtime would be: inflating on it would stall
/// every other request.
#[tokio::test]
async fn a_zip_inflating_past_the_cap_is_refused_and_the_hub_keeps_answering() {
    let app = TestApp::spawn_with(&Backend::Sqlite, |c| {
        c.max_zip_inflated_bytes = 16 * 1024 * 1024;
    })
    .await;
    // One MiB of log lines (compresses well, but under the per-entry ratio limit).
    let mut log = String::new();
    let mut n: u64 = 0x9e37_79b9;
    while log.len() < 1 << 20 {
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        log.push_str(&format!(
            "[step {:08x}] compiling module {}\n",
            n >> 32,
            n % 97
        ));
    }
    let zip = zip_of(&[("big.log", log.as_bytes())]);
    assert!(zip.len() < 600 * 1024, "the zip is small: {}", zip.len());
    let mut run = plugin_run(5);
    let stages: Vec<Value> = (0..300)
        .map(|i| {
            json!({"id": i.to_string(), "displayName": format!("s{i}"), "result": "FAILURE",
                   "state": "FINISHED", "durationInMillis": 10, "log": "big.log", "steps": []})
        })
        .collect();
    run["job_run"]["stages"] = Value::Array(stages);
    let env = envelope("JenkinsPluginJobRunComplete", &run);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (client, url, stop) = (app.client.clone(), app.url("/healthz"), stop.clone());
        tokio::spawn(async move {
            let mut worst = std::time::Duration::ZERO;
            let mut polls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let status = client.get(&url).send().await.unwrap().status();
                assert_eq!(status, 200);
                worst = worst.max(started.elapsed());
                polls += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (worst, polls)
        })
    };
    let (status, body) = post_multipart(&app, &env, Some(zip)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, polls) = poller.await.unwrap();
    assert!(polls > 0);
    assert!(
        worst < std::time::Duration::from_secs(1),
        "/healthz took {worst:?} while the zip was read"
    );
    assert_eq!(status, 400, "{body}");
    let text = error_text(&body);
    assert!(
        text.contains("16777216 bytes") && text.contains("max_zip_inflated_bytes"),
        "{body}"
    );
    assert!(app.all_runs().await.is_empty(), "nothing half-stored");
}
