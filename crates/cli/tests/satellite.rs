//! `cistern satellite`, the real binary, against a real hub (in-process, SQLite, loopback):
//! the relay survives a hub outage and its own SIGKILL mid-forward, delivering every run once
//! and in order; heartbeats show at the hub and go stale when they stop; encrypted configs
//! round-trip and match an independent implementation (Python's `cryptography`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cistern_server::{auth, Application, Config};
use cistern_store::{NewApiKey, Scope, StoreSettings};
use serde_json::{json, Value};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates a key (ingest, read) in the hub's database before the hub runs.
async fn make_key(db: &str) -> String {
    let store = cistern_store::open(db, &StoreSettings::default())
        .await
        .expect("open store");
    let tenant = store
        .tenant_by_slug("default")
        .await
        .unwrap()
        .expect("default tenant");
    let k = auth::generate_key();
    store
        .create_api_key(NewApiKey {
            tenant_id: tenant.id,
            name: "satellite".into(),
            prefix: k.prefix.clone(),
            hash: k.hash.clone(),
            scopes: vec![Scope::Ingest, Scope::Read],
        })
        .await
        .unwrap();
    k.secret
}

/// A hub on a random port; stops when dropped.
struct Hub {
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_hub(db: &str, dir: &Path) -> Hub {
    let config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: db.to_owned(),
        master_key_file: Some(dir.join("cistern.key").display().to_string()),
        ..Config::default()
    };
    let app = Application::build(config).await.expect("build hub");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_with_shutdown(async move {
        let _ = rx.await;
    }));
    Hub { base, _stop: tx }
}

/// Between the satellite and the hub: passes requests on and records the build numbers of the
/// runs in the order they came; can keep one request's answer from the satellite after the hub
/// stored it (to kill the satellite while it waits for that answer).
struct Front {
    hub: String,
    client: reqwest::Client,
    seen: Mutex<Vec<u64>>,
    hold: Mutex<Option<usize>>,
    held: Notify,
}

async fn front(State(f): State<Arc<Front>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut index = None;
    if path == "/v1/custom-cicd" {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let mut seen = f.seen.lock().unwrap();
        seen.push(v["build_number"].as_u64().unwrap_or(0));
        index = Some(seen.len());
    }
    let mut req = f
        .client
        .post(format!("{}{path}", f.hub))
        .body(body.to_vec());
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let text = resp.text().await.unwrap_or_default();
    if index.is_some() && index == *f.hold.lock().unwrap() {
        f.held.notify_one();
        std::future::pending::<()>().await;
    }
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

async fn start_front(hub: &str, port: u16) -> Arc<Front> {
    let f = Arc::new(Front {
        hub: hub.to_owned(),
        client: reqwest::Client::new(),
        seen: Mutex::new(Vec::new()),
        hold: Mutex::new(None),
        held: Notify::new(),
    });
    let app = axum::Router::new().fallback(front).with_state(f.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the front");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    f
}

/// A running `cistern satellite run`; killed (SIGKILL) when dropped.
struct Satellite {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Satellite {
    async fn start(config: &Path, spool: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(config, spool, log, env, &[]).await
    }

    async fn start_with(
        config: &Path,
        spool: &Path,
        log: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let port = free_port();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["satellite", "run", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--spool"])
            .arg(spool)
            .args(["--retry-first-ms", "100", "--retry-max-ms", "400"])
            .args(args)
            .env_remove("CISTERN_CONFIG")
            .env_remove("CONFIG_FILE")
            .env_remove("ENCRYPTION_PASSWORD")
            .env_remove("CISTERN_URL")
            .env_remove("CISTERN_API_KEY")
            .env_remove("CISTERN_SATELLITE_RELAY_KEY")
            .env("CISTERN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn satellite");
        let mut me = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log: log.to_owned(),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/healthz", me.base)).send().await {
                if r.status().is_success() {
                    return me;
                }
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("the satellite exited ({status}): {}", me.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the satellite did not start: {}", me.logs());
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn status(&self) -> Value {
        reqwest::get(format!("{}/status", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post_run(&self, n: u64) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/custom-cicd", self.base))
            .header("Authorization", "ApiKey whatever-the-sender-has")
            .header("Content-Type", "application/json")
            .body(run(n).to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    }
}

impl Drop for Satellite {
    fn drop(&mut self) {
        self.kill();
    }
}

fn run(n: u64) -> Value {
    json!({
        "pipeline": "deploy", "job_full_name": "svc/deploy", "qualified_name": "svc/deploy",
        "instance_name": "jenkins", "instance_guid": "c0ffee00-0000-4000-8000-000000000000",
        "start_time": 1_711_603_545_000u64 + n * 1000, "duration": 500, "result": "SUCCESS",
        "build_number": n,
    })
}

fn write_config(dir: &Path, url: &str, key: &str, extra: &str) -> PathBuf {
    let path = dir.join("satellite.yml");
    std::fs::write(
        &path,
        format!("satellite:\n  url: {url}\n  api_key: {key}\n  tenant: default\n  scheduling_interval: 60\n{extra}"),
    )
    .unwrap();
    path
}

async fn runs_at(hub: &str, key: &str) -> Vec<Value> {
    let v: Value = reqwest::Client::new()
        .get(format!("{hub}/api/v1/runs?limit=500"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["runs"].as_array().cloned().unwrap_or_default()
}

/// Waits until `check` holds, up to `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn build_numbers(runs: &[Value]) -> Vec<u64> {
    let mut v: Vec<u64> = runs
        .iter()
        .map(|r| r["build_number"].as_u64().unwrap_or(0))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_outage_delays_runs_but_loses_none_and_keeps_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let key = make_key(&db).await;
    let hub = start_hub(&db, dir.path()).await;
    // The satellite's hub address: nothing listens there yet (the hub is down).
    let port = free_port();
    let config = write_config(dir.path(), &format!("http://127.0.0.1:{port}"), &key, "");
    let spool = dir.path().join("spool");
    let sat = Satellite::start(&config, &spool, &dir.path().join("sat.log"), &[]).await;

    for n in 1..=6 {
        let (status, body) = sat.post_run(n).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "queued");
    }
    // A bad payload is refused at once, fields named as the hub names them.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/custom-cicd", sat.base))
        .body(r#"{"pipeline": "x", "start_time": 1711603545}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("start_time"),
        "{problem}"
    );

    // The forwarder has tried and failed (however long that took on a loaded machine).
    eventually(15, "the satellite reports the hub unreachable", || async {
        sat.status().await["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot reach")
    })
    .await;
    let st = sat.status().await;
    assert_eq!(st["spool_depth"], 6, "{st}");
    assert!(runs_at(&hub.base, &key).await.is_empty());

    // The hub comes back (at the address the satellite knows).
    let front = start_front(&hub.base, port).await;
    eventually(20, "all runs at the hub", || async {
        runs_at(&hub.base, &key).await.len() == 6
    })
    .await;
    eventually(10, "an empty spool", || async {
        sat.status().await["spool_depth"] == 0
    })
    .await;
    let runs = runs_at(&hub.base, &key).await;
    assert_eq!(build_numbers(&runs), vec![1, 2, 3, 4, 5, 6], "each once");
    assert_eq!(
        *front.seen.lock().unwrap(),
        vec![1, 2, 3, 4, 5, 6],
        "posted once each, in the order accepted"
    );
    let st = sat.status().await;
    assert!(st["last_error"].is_null(), "{st}");
    assert!(st["last_forward"].is_string(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_satellite_killed_mid_forward_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let key = make_key(&db).await;
    let hub = start_hub(&db, dir.path()).await;
    let port = free_port();
    let front = start_front(&hub.base, port).await;
    // The hub stores the third run, but its answer never reaches the satellite.
    *front.hold.lock().unwrap() = Some(3);
    let config = write_config(dir.path(), &format!("http://127.0.0.1:{port}"), &key, "");
    let spool = dir.path().join("spool");
    let log = dir.path().join("sat.log");
    let mut sat = Satellite::start(&config, &spool, &log, &[]).await;
    for n in 1..=5 {
        assert_eq!(sat.post_run(n).await.0, 202);
    }
    tokio::time::timeout(Duration::from_secs(20), front.held.notified())
        .await
        .expect("the third run reached the hub");
    // Killed while waiting for the hub's answer: runs 3, 4 and 5 are still in the spool.
    sat.kill();
    *front.hold.lock().unwrap() = None;
    assert_eq!(
        build_numbers(&runs_at(&hub.base, &key).await),
        vec![1, 2, 3]
    );

    let sat = Satellite::start(&config, &spool, &log, &[]).await;
    eventually(20, "all runs at the hub and an empty spool", || async {
        runs_at(&hub.base, &key).await.len() == 5 && sat.status().await["spool_depth"] == 0
    })
    .await;
    let runs = runs_at(&hub.base, &key).await;
    assert_eq!(
        build_numbers(&runs),
        vec![1, 2, 3, 4, 5],
        "run 3 went twice and is stored once"
    );
    assert_eq!(*front.seen.lock().unwrap(), vec![1, 2, 3, 3, 4, 5]);
    let r3 = runs.iter().find(|r| r["build_number"] == 3).unwrap();
    assert_eq!(r3["result"], "success", "{r3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_show_at_the_hub_and_go_stale_when_they_stop() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let key = make_key(&db).await;
    let hub = start_hub(&db, dir.path()).await;
    // An encrypted config, as the satellite it replaces had them.
    let plain = format!(
        "levelops:\n  url: {}\n  api_key: {key}\n  id: plant-7\n  scheduling_interval: 1\nintegrations:\n  - id: '3'\n    application: custom\n",
        hub.base
    );
    let hash = cistern_agent::satellite::config::parse(&plain, &|_| None)
        .unwrap()
        .hash;
    let config = dir.path().join("satellite.yml.enc");
    std::fs::write(
        &config,
        cistern_agent::satellite::crypto::encrypt(plain.as_bytes(), "correct horse"),
    )
    .unwrap();
    let log = dir.path().join("sat.log");
    let mut sat = Satellite::start(
        &config,
        &dir.path().join("spool"),
        &log,
        &[("ENCRYPTION_PASSWORD", "correct horse")],
    )
    .await;

    let list = || async {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/satellites", hub.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["satellites"].as_array().cloned().unwrap_or_default()
    };
    eventually(10, "a heartbeat at the hub", || async {
        !list().await.is_empty()
    })
    .await;
    // The relay works too.
    assert_eq!(sat.post_run(1).await.0, 202);
    eventually(10, "a heartbeat after a forward", || async {
        list().await[0]["last_forward_at"].is_string()
    })
    .await;
    let s = &list().await[0];
    assert_eq!(s["id"], "plant-7");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["config_hash"], hash.as_str());
    assert_eq!(s["interval_seconds"], 1);
    assert_eq!(s["stale"], false);
    assert_eq!(s["health"], "ok", "{s}");
    assert_eq!(s["details"]["integrations"][0]["application"], "custom");
    assert!(s["details"]["spool_limit_bytes"].as_u64().unwrap() > 0);

    sat.kill();
    eventually(8, "the satellite marked stale", || async {
        list().await[0]["stale"] == true
    })
    .await;

    // Without the password, or with a wrong one, it does not start, and says why.
    for (env, expect) in [
        (vec![], "set ENCRYPTION_PASSWORD"),
        (vec![("ENCRYPTION_PASSWORD", "wrong")], "wrong password"),
    ] {
        let out = Command::new(BIN)
            .args(["satellite", "run", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--spool"])
            .arg(dir.path().join("spool"))
            .env_remove("ENCRYPTION_PASSWORD")
            .envs(env)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expect), "{err}");
    }
}

#[test]
fn config_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("satellite.yml");
    std::fs::write(
        &config,
        "satellite:\n  url: http://127.0.0.1:1\n  api_key: k\n  scheduling_interval: soon\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["satellite", "run"])
        .env("CONFIG_FILE", &config)
        .env_remove("CISTERN_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("line 4: satellite.scheduling_interval: must be a whole number of seconds"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Encrypted configuration: the binary against Python's `cryptography`.

const PYTHON_JASYPT: &str = r#"
import base64, os, sys
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

def key(password, salt):
    return PBKDF2HMAC(algorithm=hashes.SHA512(), length=32, salt=salt, iterations=1000).derive(password.encode("utf-8"))

mode, password, path = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
if mode == "decrypt":
    raw = base64.b64decode(b"".join(data.split()))
    salt, iv, ct = raw[:16], raw[16:32], raw[32:]
    d = Cipher(algorithms.AES(key(password, salt)), modes.CBC(iv)).decryptor()
    padded = d.update(ct) + d.finalize()
    u = padding.PKCS7(128).unpadder()
    sys.stdout.buffer.write(u.update(padded) + u.finalize())
else:
    salt, iv = os.urandom(16), os.urandom(16)
    p = padding.PKCS7(128).padder()
    padded = p.update(data) + p.finalize()
    e = Cipher(algorithms.AES(key(password, salt)), modes.CBC(iv)).encryptor()
    sys.stdout.write(base64.b64encode(salt + iv + e.update(padded) + e.finalize()).decode())
"#;

/// Python 3 with `cryptography`, installed with pip when missing. `None` (the test is skipped
/// with a note) only outside CI.
fn python_with_cryptography() -> Option<&'static str> {
    let has = || {
        Command::new("python3")
            .args(["-c", "import cryptography"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has() {
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "cryptography"])
            .status();
        if !has() {
            let _ = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--break-system-packages",
                    "cryptography",
                ])
                .status();
        }
    }
    if has() {
        return Some("python3");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI needs python3 with the cryptography package (python3 -m pip install cryptography)"
    );
    eprintln!("note: python3 with `cryptography` is not available: cross-check skipped");
    None
}

fn cistern_crypt(args: &[&str], password: Option<&str>, stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.arg("satellite")
        .args(args)
        .env_remove("ENCRYPTION_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("ENCRYPTION_PASSWORD", p);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn encrypted_configs_round_trip_and_match_an_independent_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let plain = "levelops:\n  tenant: café\n  api_key: cst_0123\nintegrations:\n  - id: '1'\n    application: jenkins\n    url: https://jenkins.local\n";
    let plain_path = dir.path().join("satellite.yml");
    std::fs::write(&plain_path, plain).unwrap();
    let password = "pässword with spaces";

    // Round trip through the binary; the password from ENCRYPTION_PASSWORD.
    let (code, encrypted, err) = cistern_crypt(
        &["encrypt", plain_path.to_str().unwrap()],
        Some(password),
        "",
    );
    assert_eq!(code, 0, "{err}");
    let enc_path = dir.path().join("satellite.yml.enc");
    std::fs::write(&enc_path, &encrypted).unwrap();
    let (code, decrypted, err) =
        cistern_crypt(&["decrypt", enc_path.to_str().unwrap()], Some(password), "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(decrypted, plain);

    // The password as the first line of stdin (as the Ingestion Satellite read it), output
    // to a file.
    let out_path = dir.path().join("back.yml");
    let (code, _, err) = cistern_crypt(
        &[
            "decrypt",
            enc_path.to_str().unwrap(),
            "--output",
            out_path.to_str().unwrap(),
        ],
        None,
        &format!("{password}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), plain);

    // A wrong password is an error, not garbage.
    let (code, out, err) =
        cistern_crypt(&["decrypt", enc_path.to_str().unwrap()], Some("wrong"), "");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("wrong password"), "{err}");

    let Some(python) = python_with_cryptography() else {
        return;
    };
    let script = dir.path().join("jasypt.py");
    std::fs::write(&script, PYTHON_JASYPT).unwrap();
    // Python decrypts what the binary encrypted…
    let out = Command::new(python)
        .arg(&script)
        .args(["decrypt", password])
        .arg(&enc_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), plain);
    // …and the binary decrypts what Python encrypted.
    let out = Command::new(python)
        .arg(&script)
        .args(["encrypt", password])
        .arg(&plain_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py_path = dir.path().join("python.enc");
    std::fs::write(&py_path, &out.stdout).unwrap();
    let (code, decrypted, err) =
        cistern_crypt(&["decrypt", py_path.to_str().unwrap()], Some(password), "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(decrypted, plain);
}

// ---------------------------------------------------------------------------------------------
// A poller end to end: fake Jenkins → satellite → hub, across a restart of the satellite.

/// Builds of the fake Jenkins job: number, and result (`None` while running).
type Builds = Arc<Mutex<Vec<(u64, Option<&'static str>)>>>;

/// One freestyle job, `deploy`, with the builds in `builds`.
async fn fake_jenkins(builds: Builds) -> String {
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let builds = builds.clone();
        async move {
            match uri.path() {
                "/api/json" => axum::Json(json!({"_class": "hudson.model.Hudson",
                    "jobs": [{"_class": "hudson.model.FreeStyleProject", "name": "deploy"}]}))
                .into_response(),
                "/job/deploy/api/json" => {
                    let mut items: Vec<Value> = builds
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(n, r)| {
                            json!({"_class": "hudson.model.FreeStyleBuild", "number": n,
                                   "building": r.is_none(), "result": r,
                                   "timestamp": 1_711_603_545_000u64 + n * 60_000,
                                   "duration": 30_000, "url": format!("http://jenkins.local/job/deploy/{n}/"),
                                   "changeSet": {"_class": "hudson.scm.EmptyChangeLogSet", "items": []}})
                        })
                        .collect();
                    items.reverse();
                    axum::Json(json!({"allBuilds": items})).into_response()
                }
                _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn events_at(hub: &str, key: &str) -> usize {
    let v: Value = reqwest::Client::new()
        .get(format!("{hub}/api/v1/events?limit=500"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["events"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_jenkins_builds_reach_the_hub_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let key = make_key(&db).await;
    let hub = start_hub(&db, dir.path()).await;
    let builds = Arc::new(Mutex::new(vec![
        (1, Some("SUCCESS")),
        (2, Some("FAILURE")),
        (3, None),
    ]));
    let jenkins = fake_jenkins(builds.clone()).await;
    let config = dir.path().join("satellite.yml");
    std::fs::write(
        &config,
        format!("satellite:\n  url: {}\n  api_key: {key}\n  scheduling_interval: 1\nintegrations:\n  - id: '9'\n    application: jenkins\n    url: {jenkins}\n    username: bot\n    api_key: t\n", hub.base),
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let log = dir.path().join("sat.log");
    let mut sat = Satellite::start(&config, &spool, &log, &[]).await;
    eventually(15, "builds 1 and 2 at the hub", || async {
        runs_at(&hub.base, &key).await.len() == 2
    })
    .await;
    sat.kill();

    // While the satellite is down, 3 finishes and 4 runs.
    builds.lock().unwrap()[2].1 = Some("SUCCESS");
    builds.lock().unwrap().push((4, Some("SUCCESS")));
    let sat = Satellite::start(&config, &spool, &log, &[]).await;
    eventually(15, "builds 3 and 4 at the hub", || async {
        runs_at(&hub.base, &key).await.len() == 4
    })
    .await;
    // A few more polls find nothing new.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let runs = runs_at(&hub.base, &key).await;
    assert_eq!(build_numbers(&runs), vec![1, 2, 3, 4]);
    assert_eq!(
        events_at(&hub.base, &key).await,
        4,
        "one post per build: nothing repeated across the restart"
    );
    let r2 = runs.iter().find(|r| r["build_number"] == 2).unwrap();
    assert_eq!(r2["result"], "failure");
    assert_eq!(sat.status().await["spool_depth"], 0);
}

// ---------------------------------------------------------------------------------------------
// Values encrypted one by one (`api_key: ENC(…)`), and a Harness-generated file (no url).

/// Python's `cryptography` on one value: `encrypt` prints base64, `decrypt` prints the value.
fn python_value(py: &str, mode: &str, password: &str, input: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in");
    std::fs::write(&path, input).unwrap();
    let out = Command::new(py)
        .args(["-c", PYTHON_JASYPT, mode, password])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A dashboard page, signed in through the form with `key`.
async fn dashboard(base: &str, key: &str, path: &str) -> String {
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
    let login = http.get(format!("{base}/login")).send().await.unwrap();
    keep(&mut jar, &login);
    let html = login.text().await.unwrap();
    let marker = r#"name="csrf" value=""#;
    let at = html.find(marker).expect("csrf field") + marker.len();
    let csrf = html[at..at + html[at..].find('"').unwrap()].to_owned();
    let resp = http
        .post(format!("{base}/login"))
        .header("cookie", jar.join("; "))
        .form(&[("key", key), ("csrf", csrf.as_str()), ("next", path)])
        .send()
        .await
        .unwrap();
    keep(&mut jar, &resp);
    http.get(format!("{base}{path}"))
        .header("cookie", jar.join("; "))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_generated_config_with_enc_values_starts_and_reports_unpolled_tools() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let key = make_key(&db).await;
    let hub = start_hub(&db, dir.path()).await;
    let pw = "pässword with spaces";

    // `encrypt --value`: the value on stdin, ENC(…) alone on stdout.
    let (code, out, err) = cistern_crypt(&["encrypt", "--value"], Some(pw), &format!("{key}\n"));
    assert_eq!(code, 0, "{err}");
    let enc = out.trim().to_owned();
    assert_eq!(out.lines().count(), 1, "{out:?}");
    let inner = enc
        .strip_prefix("ENC(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not ENC(…): {enc}"));
    assert!(!enc.contains(&key[4..]));
    // The password as stdin's first line, the value as its second.
    let (code, out2, err) = cistern_crypt(&["encrypt", "--value"], None, &format!("{pw}\n{key}\n"));
    assert_eq!(code, 0, "{err}");
    let (code, back, err) = cistern_crypt(&["decrypt", "--value"], Some(pw), &out2);
    assert_eq!(code, 0, "{err}");
    assert_eq!(back.trim(), key);
    let jira_token = match python_with_cryptography() {
        Some(py) => {
            // Python reads what the binary wrote, and the binary what Python wrote.
            assert_eq!(python_value(py, "decrypt", pw, inner), key);
            let theirs = python_value(py, "encrypt", pw, "jira-token-42");
            let (code, out, err) = cistern_crypt(
                &["decrypt", "--value"],
                Some(pw),
                &format!("ENC({theirs})\n"),
            );
            assert_eq!(code, 0, "{err}");
            assert_eq!(out.trim(), "jira-token-42");
            format!("ENC({theirs})")
        }
        None => enc.clone(),
    };

    // The file Harness generates: `levelops:` with tenant and api_key, no url; a Jira
    // integration nothing polls.
    let config = dir.path().join("satellite.yml");
    std::fs::write(
        &config,
        format!(
            "levelops:\n  tenant: default\n  api_key: {enc}\n  scheduling_interval: 1\nintegrations:\n  - id: '5'\n    application: jira\n    url: https://jira.example.com\n    api_key: {jira_token}\n"
        ),
    )
    .unwrap();
    let mut sat = Satellite::start_with(
        &config,
        &dir.path().join("spool"),
        &dir.path().join("sat.log"),
        &[("ENCRYPTION_PASSWORD", pw)],
        &["--hub", &hub.base],
    )
    .await;
    let list = || async {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/satellites", hub.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["satellites"].as_array().cloned().unwrap_or_default()
    };
    // A heartbeat at the hub: the key was decrypted (ENC(…) used literally gets 401).
    eventually(10, "a heartbeat at the hub", || async {
        !list().await.is_empty()
    })
    .await;
    let s = &list().await[0];
    assert_eq!(s["id"], "default", "{s}");
    assert_eq!(s["details"]["unpolled"][0]["application"], "jira", "{s}");
    assert_eq!(s["details"]["unpolled"][0]["id"], "5", "{s}");
    let page = dashboard(&hub.base, &key, "/admin/satellites").await;
    assert!(page.contains("Not polled: jira (5)"), "{page}");
    sat.kill();

    // Neither --hub nor CISTERN_URL: it does not start, and names both.
    let start = |env: Vec<(&'static str, String)>, args: Vec<&str>| {
        let out = Command::new(BIN)
            .args(["satellite", "run", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--spool"])
            .arg(dir.path().join("spool"))
            .args(args)
            .env_remove("ENCRYPTION_PASSWORD")
            .env_remove("CISTERN_URL")
            .env_remove("CISTERN_API_KEY")
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = start(vec![("ENCRYPTION_PASSWORD", pw.to_owned())], vec![]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("levelops.url") && err.contains("CISTERN_URL") && err.contains("--hub"),
        "{err}"
    );
    // A wrong password: refused, naming the key.
    let (code, err) = start(
        vec![("ENCRYPTION_PASSWORD", "wrong".to_owned())],
        vec!["--hub", &hub.base],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("levelops.api_key") && err.contains("cannot be decrypted"),
        "{err}"
    );
    // CISTERN_URL does as --hub.
    let (code, err) = start(
        vec![
            ("ENCRYPTION_PASSWORD", pw.to_owned()),
            ("CISTERN_URL", "ftp://nowhere".to_owned()),
        ],
        vec![],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("must start with http"), "{err}");
}
