//! Signed sources over HTTP: each kind's signature (with independent HMAC code), refusals that
//! help the sender, delivery-id deduplication, replays, out-of-order GitHub events, rotation.

mod common;

use base64::Engine;
use cistern_store::Scope;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

fn dialect_fixture(path: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dialects/tests/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

async fn admin_put(app: &TestApp, admin: &str, name: &str, value: &str) {
    let resp = app
        .client
        .put(app.url(&format!("/api/v1/secrets/{name}")))
        .header("Authorization", format!("Bearer {admin}"))
        .json(&json!({"value": value}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}

async fn source(app: &TestApp, kind: &str, secret: &str, value: &str) -> String {
    let admin = app.key_for("default", &[Scope::Admin]).await;
    admin_put(app, &admin, secret, value).await;
    let (status, body) = app
        .post_raw(
            "/api/v1/sources",
            &admin,
            json!({"kind": kind, "secret": secret}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["path"].as_str().unwrap().to_owned()
}

async fn send(app: &TestApp, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn jobserv_builds_are_verified_and_stored() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let secret = "UseSomethingGoodHere";
        let hook = source(&app, "jobserv", "webhook-docs-example", secret).await;
        let body = dialect_fixture("jobserv/build_passed.json");
        let sig = format!("sha256:{}", hmac_hex(secret.as_bytes(), &body));
        let (status, reply) = send(&app, &hook, &[("X-JobServ-Sig", sig.clone())], &body).await;
        assert_eq!(status, 202, "{reply}");
        let id = reply["run_ids"][0].as_str().unwrap().to_owned();
        let (_, run) = app.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(run["source"], "jobserv");
        assert_eq!(run["result"], "success");
        assert_eq!(run["build_number"], 67);
        assert_eq!(run["stages"].as_array().unwrap().len(), 4, "{run}");
        // Each JobServ run field in a place of its own; the trigger as the trigger.
        assert_eq!(
            run["stages"][0]["url"],
            "https://api.foundries.io/projects/andy-corp/lmp/builds/67/runs/build-amd64-partner/"
        );
        let fields = run["custom_fields"].as_array().unwrap();
        let field = |k: &str| {
            fields
                .iter()
                .find(|f| f["key"] == k)
                .map(|f| f["value"].clone())
        };
        assert_eq!(
            field("build-amd64-partner.log_url").unwrap(),
            "https://api.foundries.io/projects/andy-corp/lmp/builds/67/runs/build-amd64-partner/console.log"
        );
        assert_eq!(field("build-armhf.host_tag").unwrap(), "armhf");
        assert!(field("build-aarch64.tests").is_some());
        assert!(field("build-aarch64.web_url").is_some());
        assert_eq!(run["triggered_by"], Value::Null, "{run}");
        assert_eq!(
            run["trigger_chain"],
            serde_json::json!([{"id": "containers-devel", "type": "JobServTrigger"}])
        );

        // Refusals that say what to fix; each logged as rejected.
        let (status, r) = send(&app, &hook, &[], &body).await;
        assert_eq!(status, 401);
        assert!(
            r["detail"].as_str().unwrap().contains("X-JobServ-Sig"),
            "{r}"
        );
        let (status, r) = send(
            &app,
            &hook,
            &[("X-JobServ-Sig", hmac_hex(secret.as_bytes(), &body))],
            &body,
        )
        .await;
        assert_eq!(status, 401);
        assert!(r["detail"].as_str().unwrap().contains("SHA-1"), "{r}");
        // GitHub's `sha256=<hex>` shape is named as such, not as bare hex.
        let (status, r) = send(
            &app,
            &hook,
            &[(
                "X-JobServ-Sig",
                format!("sha256={}", hmac_hex(secret.as_bytes(), &body)),
            )],
            &body,
        )
        .await;
        assert_eq!(status, 401);
        let detail = r["detail"].as_str().unwrap();
        assert!(detail.contains("GitHub"), "{r}");
        assert!(!detail.contains("bare hex"), "{r}");
        let (status, _) = send(
            &app,
            &hook,
            &[(
                "X-JobServ-Sig",
                format!("sha256:{}", hmac_hex(b"wrong", &body)),
            )],
            &body,
        )
        .await;
        assert_eq!(status, 401);
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        let (status, r) = send(&app, &hook, &[("X-JobServ-Sig", sig)], &tampered).await;
        assert_eq!(status, 401);
        assert!(
            r["detail"].as_str().unwrap().contains("exactly as sent"),
            "{r}"
        );
        let (_, ev) = app.get("/api/v1/events?status=rejected").await;
        assert_eq!(ev["events"].as_array().unwrap().len(), 5);
        let (status, _) = send(&app, "/v1/hooks/src_doesnotexist", &[], &body).await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn github_jobs_before_their_run_make_one_run_and_deliveries_dedupe() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let secret = "It's a Secret to Everybody";
        let hook = source(&app, "github", "gh", secret).await;
        let job = dialect_fixture("github/workflow_job.completed.json");
        let run = dialect_fixture("github/workflow_run.completed.json");
        let h = |body: &[u8], event: &str, delivery: &str| {
            vec![
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", hmac_hex(secret.as_bytes(), body)),
                ),
                ("X-GitHub-Event", event.to_owned()),
                ("X-GitHub-Delivery", delivery.to_owned()),
            ]
        };
        let (s1, r1) = send(&app, &hook, &h(&job, "workflow_job", "d-1"), &job).await;
        assert_eq!(s1, 202, "{r1}");
        let (s2, r2) = send(&app, &hook, &h(&run, "workflow_run", "d-2"), &run).await;
        assert_eq!(s2, 202, "{r2}");
        assert_eq!(
            r1["run_ids"][0], r2["run_ids"][0],
            "the job and its run are one run"
        );
        let (_, got) = app
            .get(&format!(
                "/api/v1/runs/{}",
                r2["run_ids"][0].as_str().unwrap()
            ))
            .await;
        assert_eq!(got["result"], "failure");
        assert_eq!(got["stages"].as_array().unwrap().len(), 1, "{got}");
        assert!(!got["stages"][0]["steps"].as_array().unwrap().is_empty());
        // The same delivery again is stored once.
        let (s3, r3) = send(&app, &hook, &h(&run, "workflow_run", "d-2"), &run).await;
        assert_eq!(
            (s3, r3["status"].as_str()),
            (200, Some("duplicate")),
            "{r3}"
        );
        assert_eq!(app.all_runs().await.len(), 1);
        // A late "in progress" never moves the finished run back.
        let late = dialect_fixture("github/workflow_run.in_progress.json");
        let (s4, _) = send(&app, &hook, &h(&late, "workflow_run", "d-3"), &late).await;
        assert_eq!(s4, 202);
        let (_, got) = app
            .get(&format!(
                "/api/v1/runs/{}",
                r2["run_ids"][0].as_str().unwrap()
            ))
            .await;
        assert_eq!(got["result"], "failure");
        // ping
        let ping = dialect_fixture("github/ping.json");
        let (s5, r5) = send(&app, &hook, &h(&ping, "ping", "d-4"), &ping).await;
        assert_eq!((s5, r5["status"].as_str()), (202, Some("ignored")), "{r5}");
    }
}

#[tokio::test]
async fn gitlab_token_and_pipeline_hooks() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let hook = source(&app, "gitlab", "gl", "gl-token-123").await;
    let body = dialect_fixture("gitlab/pipeline_hook.json");
    let (status, _) = send(
        &app,
        &hook,
        &[
            ("X-Gitlab-Token", "nope".into()),
            ("X-Gitlab-Event", "Pipeline Hook".into()),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 401);
    let (status, r) = send(
        &app,
        &hook,
        &[
            ("X-Gitlab-Token", "gl-token-123".into()),
            ("X-Gitlab-Event", "Pipeline Hook".into()),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 202, "{r}");
    let (_, run) = app
        .get(&format!(
            "/api/v1/runs/{}",
            r["run_ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(run["source"], "gitlab");
    assert!(!run["stages"].as_array().unwrap().is_empty());
}

fn standard_headers(
    secret_b64: &str,
    id: &str,
    ts: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret_b64.trim_start_matches("whsec_"))
        .unwrap();
    let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    m.update(format!("{id}.{ts}.").as_bytes());
    m.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", format!("v1,{sig}")),
    ]
}

#[tokio::test]
async fn standard_webhooks_replays_windows_and_rotation() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let hook = source(&app, "standard", "std", secret).await;
        let body = sei_run(1).to_string().into_bytes();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (status, r) = send(
            &app,
            &hook,
            &standard_headers(secret, "msg_1", now, &body),
            &body,
        )
        .await;
        assert_eq!(status, 202, "{r}");
        let (status, r) = send(
            &app,
            &hook,
            &standard_headers(secret, "msg_1", now, &body),
            &body,
        )
        .await;
        assert_eq!(
            (status, r["status"].as_str()),
            (200, Some("duplicate")),
            "a replayed message is stored once"
        );
        let (status, r) = send(
            &app,
            &hook,
            &standard_headers(secret, "msg_2", now - 3600, &body),
            &body,
        )
        .await;
        assert_eq!(status, 401);
        // The skew is measured by the server's own clock, a moment later than `now`: bounds, not
        // an exact figure.
        let detail = r["detail"].as_str().unwrap();
        let skew: i64 = detail
            .strip_prefix("webhook-timestamp is ")
            .and_then(|d| d.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no skew in {r}"));
        assert!((3600..3660).contains(&skew), "{r}");
        assert!(detail.contains("at most 300 s are accepted"), "{r}");
        let (status, r) = send(&app, &hook, &[], &body).await;
        assert_eq!(status, 401);
        assert!(
            r["detail"].as_str().unwrap().contains("webhook-signature"),
            "{r}"
        );
        // Rotation: the old secret still verifies during the grace period, the new one too.
        let admin = app.key_for("default", &[Scope::Admin]).await;
        let new_secret = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";
        admin_put(&app, &admin, "std", new_secret).await;
        let body2 = sei_run(2).to_string().into_bytes();
        let (status, _) = send(
            &app,
            &hook,
            &standard_headers(secret, "msg_3", now, &body2),
            &body2,
        )
        .await;
        assert_eq!(status, 202, "old value within grace");
        let body3 = sei_run(3).to_string().into_bytes();
        let (status, _) = send(
            &app,
            &hook,
            &standard_headers(new_secret, "msg_4", now, &body3),
            &body3,
        )
        .await;
        assert_eq!(status, 202, "new value");
        assert_eq!(app.all_runs().await.len(), 3);
    }
}

#[tokio::test]
async fn cdevents_by_api_key_with_incidents_in_the_metrics() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let admin = app.key_for("default", &[Scope::Admin]).await;
    let (status, body) = app
        .post_raw(
            "/api/v1/sources",
            &admin,
            json!({"kind": "cdevents"}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let hook = body["path"].as_str().unwrap().to_owned();
    let deployed = dialect_fixture("cdevents/service_deployed.json");
    let (status, _) = send(&app, &hook, &[], &deployed).await;
    assert_eq!(status, 401, "no signature and no key");
    let auth = [("Authorization", format!("Bearer {}", app.key))];
    let (status, r) = send(&app, &hook, &auth, &deployed).await;
    assert_eq!(status, 202, "{r}");
    let (_, run) = app
        .get(&format!(
            "/api/v1/runs/{}",
            r["run_ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(run["cd"], true);
    for f in [
        "cdevents/incident_detected.json",
        "cdevents/incident_resolved.json",
    ] {
        let (status, r) = send(&app, &hook, &auth, &dialect_fixture(f)).await;
        assert_eq!(status, 202, "{f}: {r}");
    }
    let (status, d) = app.get("/api/v1/metrics/dora?since=2000-01-01").await;
    assert_eq!(status, 200);
    assert_eq!(
        d["time_to_restore"]["count"], 1,
        "the incident's restoration counts: {d}"
    );
    assert_eq!(
        d["time_to_restore"]["median_seconds"], 1182.421,
        "10:05:20.079 → 10:25:02.500: {d}"
    );
    assert_eq!(
        d["change_failure_rate"]["failed"], 1,
        "the deployment before the incident is blamed: {d}"
    );
}

/// Bytes the database holds: the SQLite file and its WAL, or the PostgreSQL events table with its
/// TOAST and indexes.
async fn stored_bytes(app: &TestApp) -> u64 {
    match &app.backend {
        Backend::Sqlite => {
            let db = app.database_url.trim_start_matches("sqlite://");
            [db.to_owned(), format!("{db}-wal")]
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .sum()
        }
        Backend::Postgres(_) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&app.database_url)
                .await
                .unwrap();
            let (n,): (i64,) = sqlx::query_as("SELECT pg_total_relation_size('events')")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            n as u64
        }
    }
}

/// Whoever knows a hook URL can post to it: a refused, unsigned body is not kept, only a small
/// record of it (issue 16: 20 unsigned 1 MiB posts grew the database by 43 MB).
#[tokio::test]
async fn unsigned_floods_store_a_small_record_not_the_body() {
    use rand::RngCore;
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let hook = source(&app, "github", "gh-flood", "s3cret").await;
        // Settle the first writes (tenant, key, secret, source) before measuring.
        let (status, _) = send(&app, &hook, &[], b"{}").await;
        assert_eq!(status, 401);
        let before = stored_bytes(&app).await;
        let mut body = vec![0u8; 1 << 20];
        for i in 0..20 {
            rand::rng().fill_bytes(&mut body); // incompressible
            let sig = if i % 2 == 0 {
                vec![]
            } else {
                vec![(
                    "X-Hub-Signature-256",
                    format!("sha256={}", hmac_hex(b"guess", &body)),
                )]
            };
            let (status, r) = send(&app, &hook, &sig, &body).await;
            assert_eq!(status, 401, "{r}");
        }
        let grown = stored_bytes(&app).await.saturating_sub(before);
        assert!(
            grown < 512 * 1024,
            "{b:?}: 20 unsigned 1 MiB posts grew the database by {grown} bytes"
        );
        eprintln!("{b:?}: 20 unsigned 1 MiB posts grew the database by {grown} bytes");
        // Each refusal is still on record: when, which source, why, how big, its beginning.
        let (_, ev) = app.get("/api/v1/events?status=rejected&limit=100").await;
        let events = ev["events"].as_array().unwrap();
        assert_eq!(events.len(), 21, "{ev}");
        let id = events[0]["id"].as_str().unwrap();
        let (status, one) = app.get(&format!("/api/v1/events/{id}")).await;
        assert_eq!(status, 200);
        assert!(one["body_size"].as_i64().unwrap() <= 1024, "{one}");
        let errors = one["errors"].to_string();
        assert!(
            errors.contains("1048576 bytes from an unverified sender"),
            "{one}"
        );
        assert!(errors.contains("X-Hub-Signature-256"), "{one}");
        assert_eq!(one["dialect"], "github", "{one}");
    }
}

/// A `workflow_job` without `workflow_name` (older deliveries, many published examples) is
/// accepted and attached to its run by `run_id`: before its run is known it makes the run
/// (running) in a placeholder pipeline, which the named `workflow_run` then takes over; after
/// its run is known it lands on that run.
#[tokio::test]
async fn github_jobs_without_workflow_name_attach_to_their_run_by_run_id() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let secret = "It's a Secret to Everybody";
        let hook = source(&app, "github", "gh", secret).await;
        let mut job: Value =
            serde_json::from_slice(&dialect_fixture("github/workflow_job.completed.json")).unwrap();
        job["workflow_job"]
            .as_object_mut()
            .unwrap()
            .remove("workflow_name");
        let job = serde_json::to_vec(&job).unwrap();
        let run = dialect_fixture("github/workflow_run.completed.json");
        let h = |body: &[u8], event: &str, delivery: &str| {
            vec![
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", hmac_hex(secret.as_bytes(), body)),
                ),
                ("X-GitHub-Event", event.to_owned()),
                ("X-GitHub-Delivery", delivery.to_owned()),
            ]
        };
        // The job first: its run does not exist yet.
        let (s1, r1) = send(&app, &hook, &h(&job, "workflow_job", "d-1"), &job).await;
        assert_eq!(s1, 202, "{b:?} {r1}");
        let id = r1["run_ids"][0].as_str().unwrap().to_owned();
        let (_, got) = app.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(got["result"], "running", "{got}");
        // Then its run, named: the same run, now in the workflow's pipeline.
        let (s2, r2) = send(&app, &hook, &h(&run, "workflow_run", "d-2"), &run).await;
        assert_eq!(s2, 202, "{r2}");
        assert_eq!(r2["run_ids"][0], id.as_str(), "one run");
        let (_, got) = app.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(
            got["pipeline"]["full_name"],
            "wolfy1339/github-events-schemas/Test"
        );
        assert_eq!(got["result"], "failure");
        assert_eq!(got["stages"].as_array().unwrap().len(), 1, "{got}");
        let (_, pipelines) = app.get("/api/v1/pipelines").await;
        let names: Vec<&str> = pipelines["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["full_name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["wolfy1339/github-events-schemas/Test"],
            "no placeholder left"
        );
        // The same unnamed job again (a redelivery under a new id): it lands on the named run.
        let (s3, r3) = send(&app, &hook, &h(&job, "workflow_job", "d-3"), &job).await;
        assert_eq!(s3, 202, "{r3}");
        assert_eq!(r3["run_ids"][0], id.as_str());
        assert_eq!(app.all_runs().await.len(), 1);
    }
}
