//! Operating the hub, over real sockets on SQLite and PostgreSQL: Prometheus metrics that move
//! with the traffic, the OpenAPI document against the route table, rate limits, load shedding,
//! per-route body limits, retention, and the SQLite online backup under writes.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cistern_store::{EventRecord, EventStatus, Scope, WriteOp};
use common::{backends, read, sei_run, Backend, TestApp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- reading /metrics ------------------------------------------------------------------------

/// One sample of the OpenMetrics text: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the text format's samples (label values may hold `/`, `{`, `}` and `,`).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let value: f64 = value.parse().expect("a numeric value");
        let (name, mut rest) = match series.split_once('{') {
            Some((n, r)) => (n, r),
            None => (series, ""),
        };
        let mut labels = HashMap::new();
        while let Some((key, after)) = rest.split_once("=\"") {
            let mut val = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            labels.insert(key.trim_start_matches(',').to_owned(), val);
            rest = after[end..].trim_start_matches(',');
            if rest.starts_with('}') {
                break;
            }
        }
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

/// The value of the sample `name` whose labels include `want` (0 when there is none yet).
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .find(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let resp = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.expect("text");
    assert!(
        text.trim_end().ends_with("# EOF"),
        "an OpenMetrics document ends with # EOF"
    );
    text
}

// ---- metrics -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_ingestion() {
    for backend in backends() {
        let app = TestApp::spawn(&backend).await;
        let created = [
            ("dialect", "sei"),
            ("route", "/v1/custom-cicd"),
            ("outcome", "created"),
            ("status", "201"),
        ];
        let updated = [
            ("dialect", "sei"),
            ("outcome", "updated"),
            ("status", "200"),
        ];
        let rejected = [
            ("dialect", "sei"),
            ("outcome", "rejected"),
            ("status", "400"),
        ];
        let latency = [("method", "POST"), ("route", "/v1/custom-cicd")];
        let before = scrape(&app).await;
        assert_eq!(
            value(&before, "cistern_ingest_requests_total", &created),
            0.0
        );

        assert_eq!(app.post("/v1/custom-cicd", &sei_run(1)).await.0, 201);
        assert_eq!(app.post("/v1/custom-cicd", &sei_run(2)).await.0, 201);
        assert_eq!(app.post("/v1/custom-cicd", &sei_run(2)).await.0, 200);
        let (status, _) = app
            .post_raw("/v1/custom-cicd", &app.key.clone(), "{\"pipeline\": 1")
            .await;
        assert_eq!(status, 400);
        let after = scrape(&app).await;

        assert_eq!(
            value(&after, "cistern_ingest_requests_total", &created),
            2.0,
            "{backend:?}"
        );
        assert_eq!(
            value(&after, "cistern_ingest_requests_total", &updated),
            1.0
        );
        assert_eq!(
            value(&after, "cistern_ingest_requests_total", &rejected),
            1.0
        );
        assert_eq!(
            value(
                &after,
                "cistern_http_request_duration_seconds_count",
                &latency
            ),
            4.0
        );
        assert!(
            value(
                &after,
                "cistern_http_request_duration_seconds_sum",
                &latency
            ) > 0.0
        );
        assert_eq!(
            value(
                &after,
                "cistern_http_requests_total",
                &[("route", "/v1/custom-cicd"), ("status", "201")]
            ),
            2.0
        );
        // Four writes (three runs and the refusal's event) went through the writer.
        let batches = value(&after, "cistern_store_writer_batches_total", &[]);
        assert!(
            batches - value(&before, "cistern_store_writer_batches_total", &[]) >= 1.0,
            "{after}"
        );
        let sized = value(&after, "cistern_store_writer_batch_size_count", &[]);
        assert_eq!(sized, batches, "every batch is in the size histogram");
        assert!(
            value(&after, "cistern_store_writer_batch_size_sum", &[])
                - value(&before, "cistern_store_writer_batch_size_sum", &[])
                >= 4.0
        );
        assert_eq!(value(&after, "cistern_store_writer_queue_depth", &[]), 0.0);
        assert!(value(&after, "cistern_store_pool_connections", &[]) >= 1.0);
        assert_eq!(value(&after, "cistern_outbox_pending_deliveries", &[]), 0.0);
        // An unknown path is counted without inventing a route per path.
        app.client
            .get(app.url("/no/such/path/123"))
            .send()
            .await
            .expect("request");
        let last = scrape(&app).await;
        assert_eq!(
            value(
                &last,
                "cistern_http_requests_total",
                &[("route", "unmatched"), ("status", "404")]
            ),
            1.0
        );
        assert!(!last.contains("/no/such/path/123"));
    }
}

#[tokio::test]
async fn metrics_on_their_own_listener_or_off() {
    let own = TestApp::spawn_with(&Backend::Sqlite, |c| {
        c.metrics_listen = "127.0.0.1:0".into()
    })
    .await;
    let (status, body) = read(
        own.client
            .get(own.url("/metrics"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 404);
    let detail = body["detail"].as_str().expect("a problem");
    assert!(detail.contains("metrics_listen"), "{detail}");
    // The detail names the address actually bound; the metrics are there.
    let at = detail
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("an address");
    let resp = own
        .client
        .get(format!("http://{at}"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .await
        .expect("text")
        .contains("cistern_http_requests_in_flight"));

    let off = TestApp::spawn_with(&Backend::Sqlite, |c| c.metrics_listen = "off".into()).await;
    let (status, body) = read(
        off.client
            .get(off.url("/metrics"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["detail"].as_str().unwrap_or("").contains("off"),
        "{body}"
    );
}

// ---- OpenAPI ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let table: BTreeSet<(String, String)> = cistern_server::routes::table()
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let doc = cistern_server::routes::openapi::document();
    let documented: BTreeSet<(String, String)> = cistern_server::routes::openapi::documented(&doc)
        .into_iter()
        .collect();
    let missing: Vec<_> = table.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routed but not in /api/openapi.json: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&table).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    assert!(table.len() >= 40, "{} routes", table.len());

    // Served, as OpenAPI 3.1, with unique operation ids.
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let (status, served) = read(
        app.client
            .get(app.url("/api/openapi.json"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(served["openapi"], "3.1.0");
    let paths = served["paths"].as_object().expect("paths");
    let mut ids = BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            assert!(
                table.contains(&(method.to_uppercase(), path.clone())),
                "{method} {path}"
            );
        }
    }

    // And every route of the table is really routed: none falls through to the 404 fallback
    // or a 405.
    for (method, path) in &table {
        let concrete = path
            .replace("{id}", "x1")
            .replace("{name}", "x1")
            .replace("{source_id}", "x1")
            .replace("{company_id}", "x1");
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = app
            .client
            .request(m, app.url(&concrete))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert_ne!(status, 405, "{method} {path}");
        assert!(!text.contains("no route for"), "{method} {path}: {text}");
    }
}

// ---- limits ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            c.rate_limit = 0.5;
            c.rate_limit_burst = 3;
        })
        .await;
        for n in 0..3 {
            assert_eq!(app.post("/v1/custom-cicd", &sei_run(n)).await.0, 201);
        }
        let resp = app
            .client
            .post(app.url("/v1/custom-cicd"))
            .header("Authorization", format!("ApiKey {}", app.key))
            .body(sei_run(9).to_string())
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 429, "{backend:?}");
        let wait: u64 = resp.headers()["retry-after"]
            .to_str()
            .expect("text")
            .parse()
            .expect("seconds");
        assert!((1..=2).contains(&wait), "{wait}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["type"], "https://cistern.dev/problems/rate-limited");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("rate_limit"),
            "{body}"
        );
        assert_eq!(body["retry_after_seconds"], wait);
        // Another key has its own bucket; the throttled request left nothing behind.
        let other = app.key_for("default", &[Scope::Read]).await;
        let (status, events) = app.get_with("/api/v1/events?status=all", &other).await;
        assert_eq!(status, 200);
        assert_eq!(
            events["events"].as_array().map(Vec::len),
            Some(3),
            "{events}"
        );
        let metrics = scrape(&app).await;
        assert_eq!(
            value(&metrics, "cistern_rate_limited_requests_total", &[]),
            1.0
        );
        assert_eq!(
            value(
                &metrics,
                "cistern_ingest_requests_total",
                &[("outcome", "rejected"), ("status", "429")]
            ),
            1.0
        );
    }
}

/// Starts a request that stays in flight: headers and half its body, then nothing, until the
/// returned stream is given the rest.
async fn stalled_post(app: &TestApp, body: &str) -> tokio::net::TcpStream {
    let addr = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/custom-cicd HTTP/1.1\r\nHost: {addr}\r\nAuthorization: ApiKey {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        app.key,
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .expect("write");
    s.flush().await.expect("flush");
    s
}

#[tokio::test]
async fn over_max_in_flight_requests_are_shed_with_503() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| c.max_in_flight = 1).await;
        let body = sei_run(1).to_string();
        let mut slow = stalled_post(&app, &body).await;
        // Wait until the slow request is in flight (the scrape itself is never shed).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = scrape(&app).await;
            // The scrape counts itself: 2 means the slow one is in.
            if value(&m, "cistern_http_requests_in_flight", &[]) >= 2.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the slow request never got in flight"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let resp = app
            .client
            .get(app.url("/api/v1/runs"))
            .header("Authorization", format!("Bearer {}", app.key))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 503, "{backend:?}");
        assert_eq!(resp.headers()["retry-after"], "1");
        let problem: Value = resp.json().await.expect("json");
        assert_eq!(problem["type"], "https://cistern.dev/problems/overloaded");
        assert!(problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("max_in_flight"));
        // Probes still answer.
        let health = app
            .client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("request");
        assert_eq!(health.status(), 200);

        // The slow request completes normally once its body arrives.
        slow.write_all(&body.as_bytes()[body.len() / 2..])
            .await
            .expect("write");
        let mut answer = String::new();
        slow.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        let (status, _) = app.get("/api/v1/runs").await;
        assert_eq!(status, 200, "served again once the slot is free");
        let m = scrape(&app).await;
        assert_eq!(value(&m, "cistern_http_requests_shed_total", &[]), 1.0);
    }
}

#[tokio::test]
async fn admin_routes_have_a_small_body_limit_and_ingest_routes_a_large_one() {
    let app = TestApp::spawn_with(&Backend::Sqlite, |c| c.max_admin_body_bytes = 2048).await;
    let admin = app.key_for("default", &[Scope::Admin]).await;
    let big = "x".repeat(4096);
    for (method, path, body) in [
        (
            "PUT",
            "/api/v1/secrets/big",
            json!({"value": big}).to_string(),
        ),
        (
            "POST",
            "/api/v1/subscriptions",
            json!({"url": "https://a.example/", "secret": big}).to_string(),
        ),
        (
            "POST",
            "/api/v1/sources",
            json!({"kind": "github", "name": big}).to_string(),
        ),
        (
            "POST",
            "/api/v1/instances",
            json!({"integration_id": "1", "name": big, "type": "jenkins"}).to_string(),
        ),
        (
            "POST",
            "/api/v1/satellites/heartbeat",
            json!({"id": "s1", "last_error": big}).to_string(),
        ),
    ] {
        let resp = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                app.url(path),
            )
            .header("Authorization", format!("Bearer {admin}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 413, "{method} {path}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let p: Value = resp.json().await.expect("json");
        assert_eq!(p["type"], "https://cistern.dev/problems/body-too-large");
        let detail = p["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains("2048") && detail.contains("max_admin_body_bytes"),
            "{detail}"
        );
    }
    // The same size is fine on an ingestion route (5 MiB there).
    let mut run = sei_run(1);
    run["job_run"] = json!({"log": big, "result": "SUCCESS"});
    assert_eq!(app.post("/v1/custom-cicd", &run).await.0, 201);
    // And an ingestion route refuses past its own limit.
    let small = TestApp::spawn_with(&Backend::Sqlite, |c| c.max_body_bytes = 1024).await;
    let (status, p) = small.post("/v1/custom-cicd", &run).await;
    assert_eq!(status, 413);
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or("")
            .contains("max_body_bytes"),
        "{p}"
    );
}

// ---- retention -------------------------------------------------------------------------------

fn old_event(tenant_id: &str, age: time::Duration) -> EventRecord {
    EventRecord {
        tenant_id: Some(tenant_id.to_owned()),
        endpoint: "/v1/custom-cicd".into(),
        dialect: "sei".into(),
        request_type: None,
        content_type: Some("application/json".into()),
        body: std::sync::Arc::from(&b"{}"[..]),
        received_at: time::OffsetDateTime::now_utc() - age,
        status: EventStatus::Rejected,
        http_status: 400,
        errors: vec![cistern_core::FieldError::new("", "old")],
        key_id: None,
        source_id: None,
        dedupe_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_events_and_keeps_new_ones() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            c.retention_events = "30d".into();
            c.retention_interval = "1s".into();
        })
        .await;
        let tenant = app
            .store
            .tenant_by_slug("default")
            .await
            .expect("tenant")
            .expect("default");
        let mut old_ids = Vec::new();
        for _ in 0..3 {
            let out = app
                .store
                .write(WriteOp::Reject {
                    event: old_event(&tenant.id, time::Duration::days(45)),
                })
                .await
                .expect("write");
            old_ids.push(out.event_id);
        }
        // One just inside the window stays.
        let kept = app
            .store
            .write(WriteOp::Reject {
                event: old_event(&tenant.id, time::Duration::days(29)),
            })
            .await
            .expect("write")
            .event_id;
        let (status, _) = app.post("/v1/custom-cicd", &sei_run(1)).await;
        assert_eq!(status, 201);

        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, events) = app.get("/api/v1/events?status=all&limit=100").await;
            let ids: Vec<&str> = events["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter_map(|e| e["id"].as_str())
                .collect();
            if !old_ids.iter().any(|o| ids.contains(&o.as_str())) {
                assert!(
                    ids.contains(&kept.as_str()),
                    "{backend:?}: the 29-day-old one is kept"
                );
                assert_eq!(ids.len(), 2, "the kept one and the new run's event");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backend:?}: old events never pruned: {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let m = scrape(&app).await;
        assert_eq!(
            value(
                &m,
                "cistern_retention_pruned_rows_total",
                &[("table", "events")]
            ),
            3.0
        );
        assert_eq!(app.all_runs().await.len(), 1, "runs are never pruned");
    }
}

#[tokio::test]
async fn bad_ops_settings_are_refused_by_name() {
    for (tune, word) in [
        (
            Box::new(|c: &mut cistern_server::Config| c.retention_events = "soon".into())
                as Box<dyn Fn(&mut cistern_server::Config)>,
            "retention_events",
        ),
        (
            Box::new(|c: &mut cistern_server::Config| c.retention_interval = "0s".into()),
            "retention_interval",
        ),
        (
            Box::new(|c: &mut cistern_server::Config| c.rate_limit = -1.0),
            "rate_limit",
        ),
        (
            Box::new(|c: &mut cistern_server::Config| c.metrics_listen = "not an address".into()),
            "metrics_listen",
        ),
        (
            Box::new(|c: &mut cistern_server::Config| c.auth_failures_per_minute = -1.0),
            "auth_failures_per_minute",
        ),
        (
            Box::new(|c: &mut cistern_server::Config| c.auth_failure_burst = 0),
            "auth_failure_burst",
        ),
        (
            Box::new(|c: &mut cistern_server::Config| c.header_read_timeout = "0s".into()),
            "header_read_timeout",
        ),
        (
            Box::new(|c: &mut cistern_server::Config| c.request_body_timeout = "soon".into()),
            "request_body_timeout",
        ),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = cistern_server::Config {
            listen: "127.0.0.1:0".into(),
            database_url: format!("sqlite://{}", dir.path().join("c.db").display()),
            master_key_file: Some(dir.path().join("k").display().to_string()),
            ..Default::default()
        };
        tune(&mut config);
        let err = cistern_server::Application::build(config)
            .await
            .err()
            .expect("refused");
        assert!(format!("{err:#}").contains(word), "{word}: {err:#}");
    }
}

// ---- backup ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_during_writes_is_a_consistent_copy() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let db = cistern_store::sqlite::path_from_url(&app.database_url).expect("path");
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let posted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (client, url, key) = (
            app.client.clone(),
            app.url("/v1/custom-cicd"),
            app.key.clone(),
        );
        let (writing, posted) = (writing.clone(), posted.clone());
        writers.push(tokio::spawn(async move {
            let mut n = w * 10_000;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client
                    .post(&url)
                    .header("Authorization", format!("ApiKey {key}"))
                    .body(sei_run(n).to_string())
                    .send()
                    .await
                    .expect("post");
                assert_eq!(resp.status(), 201);
                posted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    while posted.load(std::sync::atomic::Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dir = tempfile::tempdir().expect("dir");
    let copy = dir.path().join("copy.db");
    let (from, to) = (db.clone(), copy.clone());
    let report = tokio::task::spawn_blocking(move || cistern_store::sqlite::backup(&from, &to))
        .await
        .expect("join")
        .expect("backup");
    let during = posted.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let total = posted.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(report.check, "ok");
    assert!(report.pages > 0 && report.bytes > 0);
    assert!(!dir.path().read_dir().expect("dir").any(|e| e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .contains("partial")));

    let c = rusqlite::Connection::open(&copy).expect("open the copy");
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).expect(sql) };
    let runs = count("SELECT COUNT(*) FROM runs");
    let accepted = count("SELECT COUNT(*) FROM events WHERE status = 'accepted'");
    // Each post made one new run in the same transaction as its event: a consistent copy has
    // exactly as many of each, and no run without its event.
    assert_eq!(runs, accepted);
    assert_eq!(
        count("SELECT COUNT(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = r.event_id)"),
        0
    );
    assert!(
        runs >= 200,
        "the copy holds what was acknowledged before it began: {runs}"
    );
    assert!(
        (runs as u64) < total,
        "writes went on during and after the copy: {runs} of {total} ({during} when it ended)"
    );
    // A second backup to the same file is refused rather than overwriting it.
    let again = cistern_store::sqlite::backup(&db, &copy).expect_err("exists");
    assert!(again.to_string().contains("already exists"), "{again}");
}

#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            c.auth_failures_per_minute = 6.0; // one back every 10 s
            c.auth_failure_burst = 3;
        })
        .await;
        // Unknown keys, a missing key: each a failure.
        for key in ["cst_guess1", "cst_guess2", ""] {
            let (status, body) = app.get_with("/api/v1/runs", key).await;
            assert_eq!(status, 401, "{body}");
        }
        // The bucket is empty: refused before the key is looked at, the right key too.
        for key in ["cst_guess3", app.key.as_str()] {
            let resp = app
                .client
                .get(app.url("/api/v1/runs"))
                .header("Authorization", format!("Bearer {key}"))
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 429, "{backend:?}");
            let wait: u64 = resp.headers()["retry-after"]
                .to_str()
                .expect("text")
                .parse()
                .expect("seconds");
            assert!((1..=10).contains(&wait), "{wait}");
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body["type"], "https://cistern.dev/problems/rate-limited");
            let detail = body["detail"].as_str().unwrap_or("");
            assert!(
                detail.contains("failed authentications from 127.0.0.1")
                    && detail.contains("auth_failures_per_minute"),
                "{body}"
            );
        }
        // Probes still answer.
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(
            value(
                &scrape(&app).await,
                "cistern_rate_limited_requests_total",
                &[]
            ),
            2.0,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn successful_requests_never_spend_the_failed_authentication_bucket() {
    let app = TestApp::spawn_with(&Backend::Sqlite, |c| {
        c.auth_failures_per_minute = 1.0;
        c.auth_failure_burst = 1;
    })
    .await;
    for _ in 0..50 {
        assert_eq!(app.get("/api/v1/runs").await.0, 200);
    }
    assert_eq!(app.get_with("/api/v1/runs", "cst_guess").await.0, 401);
    assert_eq!(app.get_with("/api/v1/runs", "cst_guess").await.0, 429);
}
