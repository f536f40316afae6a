//! The relay in-process, with no hub reachable: what senders are answered (the SEI queue reply,
//! the Jenkins plugin's envelope, field errors, 503 when the spool is full), what is kept
//! (the body byte for byte, never the sender's credentials), and a restart that keeps it all.

use std::time::Duration;

use cistern_agent::satellite::{self, config, Options};
use serde_json::{json, Value};

fn options(dir: &std::path::Path, max_bytes: u64) -> Options {
    // Port 9 (discard) on loopback: nothing answers, so everything waits in the spool.
    let cfg = config::parse(
        "satellite:\n  url: http://127.0.0.1:9\n  api_key: cst_sat\n  id: test\n  scheduling_interval: 3600\n",
        &|_| None,
    )
    .unwrap();
    Options {
        config: cfg,
        listen: "127.0.0.1:0".into(),
        spool_dir: dir.to_owned(),
        spool_max_bytes: max_bytes,
        retry_first: Duration::from_secs(30),
        retry_max: Duration::from_secs(30),
    }
}

fn sei_run(n: u64) -> Value {
    json!({
        "pipeline": "build", "job_full_name": "team/build", "qualified_name": "team/build",
        "instance_name": "ci", "instance_guid": "2f1b2b4e-0000-4000-8000-000000000001",
        "start_time": 1_711_603_545_000u64 + n, "duration": 1000, "result": "SUCCESS", "build_number": n,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_answers_like_the_hub_and_keeps_what_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let sat = satellite::start(options(dir.path(), 4096)).await.unwrap();
    let base = format!("http://{}", sat.addr());
    let client = reqwest::Client::new();

    // SEI: queued, 202.
    let r = client
        .post(format!("{base}/v1/custom-cicd"))
        .header("Authorization", "ApiKey the-senders-own-key")
        .header("Content-Type", "application/json")
        .body(sei_run(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "queued");

    // The Jenkins plugin gets its envelope; a heartbeat gets what the hub would answer.
    let hb = json!({"instance_id": "5a0e9f0e-7c1d-4c58-9d6c-2f8f5f0d1a11", "timestamp": 1_700_000_000,
        "details": {"jenkins_version": "2.426.1"}});
    let r = client
        .post(format!("{base}/v1/generic-requests"))
        .header("Authorization", "Apikey k")
        .body(json!({"request_type": "JenkinsHeartbeat", "payload": hb.to_string()}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["response_type"], "JenkinsHeartbeat");
    let payload: Value = serde_json::from_str(v["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["success"], true);

    // A bad payload is refused with the fields named, and not kept.
    let r = client
        .post(format!("{base}/sei/api/v1/custom-cicd"))
        .body(r#"{"pipeline": "x", "result": "green"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let v: Value = r.json().await.unwrap();
    let fields: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"result") && fields.contains(&"start_time"),
        "{v}"
    );

    // Kept byte for byte, without the sender's credentials.
    let spool = sat.spool().clone();
    assert_eq!(spool.usage().depth, 2);
    let first = spool.read(spool.first().unwrap()).unwrap();
    assert_eq!(first.header.endpoint, "/v1/custom-cicd");
    assert_eq!(first.body, sei_run(1).to_string().into_bytes());
    assert!(
        first
            .header
            .headers
            .iter()
            .all(|(k, _)| k != "authorization"),
        "{:?}",
        first.header.headers
    );

    // Filling the spool: a warning from 80 %, then 503 with Retry-After.
    let mut refused = None;
    for n in 2..40 {
        let r = client
            .post(format!("{base}/v1/custom-cicd"))
            .body(sei_run(n).to_string())
            .send()
            .await
            .unwrap();
        if r.status() != 202 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a full spool refuses");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "60");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("spool is full"),
        "{v}"
    );
    let status: Value = client
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["spool_near_full"], true, "{status}");
    let depth = spool.usage().depth;
    drop(spool);
    sat.stop().await;

    // A restart finds everything where it was.
    let sat = satellite::start(options(dir.path(), 4096)).await.unwrap();
    assert_eq!(sat.spool().usage().depth, depth);
    sat.stop().await;
}

#[tokio::test]
async fn with_a_relay_key_only_senders_that_show_it_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), 1 << 20);
    opts.config.hub.relay_key = Some("rk_local".into());
    let sat = satellite::start(opts).await.unwrap();
    let base = format!("http://{}", sat.addr());
    let client = reqwest::Client::new();
    let post = |auth: Option<&'static str>| {
        let mut r = client
            .post(format!("{base}/v1/custom-cicd"))
            .body(sei_run(1).to_string());
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("ApiKey nope")).await.unwrap().status(), 401);
    assert_eq!(post(Some("ApiKey rk_local")).await.unwrap().status(), 202);
    assert_eq!(post(Some("Bearer rk_local")).await.unwrap().status(), 202);
    // Signed sources are checked by the hub, with their signature.
    let r = client
        .post(format!("{base}/v1/hooks/src_1"))
        .header("X-Hub-Signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let e = sat.spool().read(sat.spool().first().unwrap()).unwrap();
    assert_eq!(e.header.endpoint, "/v1/custom-cicd");
    assert_eq!(sat.spool().usage().depth, 3);
    sat.stop().await;
}

#[tokio::test]
async fn beyond_loopback_without_a_relay_key_it_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // Refused before anything is bound: the address below is never listened on.
    for listen in ["0.0.0.0:8090", "[::]:8090", "192.0.2.10:8090"] {
        let mut opts = options(dir.path(), 1 << 20);
        opts.listen = listen.into();
        let err = satellite::start(opts).await.err().expect("refused");
        assert!(err.contains(listen), "{err}");
        assert!(err.contains("relay_key"), "{err}");
        assert!(err.contains("CISTERN_SATELLITE_RELAY_KEY"), "{err}");
        assert!(err.contains("127.0.0.1"), "says how to stay local: {err}");
    }
    // With a relay key, any address is allowed; loopback needs none.
    assert!(satellite::check_relay_exposure("0.0.0.0:8090", Some("rk_1")).is_ok());
    assert!(satellite::check_relay_exposure("0.0.0.0:8090", Some("  ")).is_err());
    for local in ["127.0.0.1:0", "[::1]:0", "localhost:0"] {
        assert!(
            satellite::check_relay_exposure(local, None).is_ok(),
            "{local}"
        );
    }
    let sat = satellite::start(options(dir.path(), 1 << 20))
        .await
        .unwrap();
    sat.stop().await;
}

#[test]
fn the_relay_key_can_come_from_a_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay_key");
    std::fs::write(&file, "rk_from_secret\n").unwrap();
    let text = "satellite:\n  url: http://127.0.0.1:9\n  api_key: cst_sat\n";
    let path = file.display().to_string();
    let env = |n: &str| (n == "CISTERN_SATELLITE_RELAY_KEY_FILE").then(|| path.clone());
    let c = config::parse(text, &env).unwrap();
    assert_eq!(c.hub.relay_key.as_deref(), Some("rk_from_secret"));
    // A file named but missing is a warning naming it (on loopback no key is needed; beyond
    // it, the satellite refuses to start).
    let missing = dir.path().join("nope").display().to_string();
    let env = |n: &str| (n == "CISTERN_SATELLITE_RELAY_KEY_FILE").then(|| missing.clone());
    let c = config::parse(text, &env).unwrap();
    assert_eq!(c.hub.relay_key, None);
    assert!(
        c.warnings.iter().any(|w| w.to_string().contains(&missing)),
        "{:?}",
        c.warnings
    );
}
