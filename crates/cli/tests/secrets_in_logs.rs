//! No secret and no API key ever reaches the logs. A full session runs against the real binary
//! with `CISTERN_LOG=debug`: keys created, secrets set (command line and API) and rotated, signed
//! sources fed good and bad signatures, subscriptions delivering to a local receiver with signing
//! secrets, keys sent every way (ApiKey, Bearer, X-Api-Key, the dashboard's cookie and sign-in
//! form), unknown and revoked keys tried. Everything the hub and the commands print is then
//! searched for every secret and key, as sent and in hex and base64.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

/// Runs a command; its stdout, and everything it printed (stderr always, stdout when
/// `stdout_is_log`) appended to `log`.
fn cistern(
    db: &str,
    dir: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
    log: &mut String,
    stdout_is_log: bool,
) -> String {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .env("CISTERN_LOG", "debug")
        .env("CISTERN_MASTER_KEY_FILE", dir.join("master.key"))
        .env("CISTERN_ALLOW_PRIVATE_TARGETS", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cistern");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    if stdout_is_log {
        log.push_str(&stdout);
    }
    assert!(
        out.status.success(),
        "cistern {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_owned()
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// The forms a secret could take in a log line.
fn forms(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut out = vec![
        secret.to_owned(),
        hex::encode(secret),
        b64.encode(secret),
        url.encode(secret),
    ];
    // The random part of a key, the decoded bytes of a whsec_ secret.
    if let Some(rest) = secret.strip_prefix("cst_") {
        out.push(rest.to_owned());
        if let Ok(raw) = hex::decode(rest) {
            out.push(b64.encode(&raw));
        }
    }
    if let Some(rest) = secret.strip_prefix("whsec_") {
        out.push(rest.to_owned());
        if let Ok(raw) = b64.decode(rest) {
            out.push(hex::encode(&raw));
        }
    }
    // Base64 of a suffix shifts the alphabet: search the unaligned encodings too.
    for skip in 1..3 {
        if secret.len() > skip + 8 {
            let enc = b64.encode(&secret.as_bytes()[skip..]);
            out.push(enc[..enc.len().saturating_sub(4)].to_owned());
        }
    }
    out.retain(|f| f.len() >= 8);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_key_is_ever_logged() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let mut log = String::new();
    let d = dir.path();

    let admin = cistern(
        &db,
        d,
        &[
            "keys",
            "create",
            "--name",
            "admin",
            "--scopes",
            "ingest,read,admin",
        ],
        None,
        &mut log,
        false,
    );
    let ingest = cistern(
        &db,
        d,
        &["keys", "create", "--name", "ci", "--scopes", "ingest"],
        None,
        &mut log,
        false,
    );
    let read = cistern(
        &db,
        d,
        &["keys", "create", "--name", "dash", "--scopes", "read"],
        None,
        &mut log,
        false,
    );
    let revoked = cistern(
        &db,
        d,
        &["keys", "create", "--name", "old", "--scopes", "ingest,read"],
        None,
        &mut log,
        false,
    );
    cistern(&db, d, &["keys", "revoke", "old"], None, &mut log, true);
    cistern(&db, d, &["keys", "list"], None, &mut log, true);

    let hook_secret = "UseSomethingGoodHere-7c1f9a2e";
    let hook_secret_rotated = "RotatedSecretValue-55e0b3d1";
    let stdin_secret = "FromStandardInput-0b8d4e6a";
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let api_secret = "SetThroughTheApi-93ad1f07";
    cistern(
        &db,
        d,
        &["secrets", "set", &format!("hook={hook_secret}")],
        None,
        &mut log,
        true,
    );
    cistern(
        &db,
        d,
        &["secrets", "set", "piped=-"],
        Some(stdin_secret),
        &mut log,
        true,
    );
    cistern(
        &db,
        d,
        &["secrets", "set", &format!("std={whsec}")],
        None,
        &mut log,
        true,
    );
    cistern(&db, d, &["secrets", "list"], None, &mut log, true);
    let github = cistern(
        &db,
        d,
        &["sources", "create", "--kind", "github", "--secret", "hook"],
        None,
        &mut log,
        true,
    );
    let standard = cistern(
        &db,
        d,
        &["sources", "create", "--kind", "standard", "--secret", "std"],
        None,
        &mut log,
        true,
    );

    // A receiver on loopback for the deliveries.
    let received = Arc::new(AtomicUsize::new(0));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_port = receiver.local_addr().unwrap().port();
    {
        let received = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let received = received.clone();
                async move {
                    received.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(receiver, app).await });
    }
    cistern(
        &db,
        d,
        &[
            "subscriptions",
            "create",
            "--url",
            &format!("http://127.0.0.1:{receiver_port}/hook"),
            "--secret",
            "hook",
        ],
        None,
        &mut log,
        true,
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hub = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            &db,
        ])
        .env_remove("CISTERN_DATABASE_URL")
        .env("CISTERN_LOG", "debug")
        .env("CISTERN_MASTER_KEY_FILE", d.join("master.key"))
        .env("CISTERN_ALLOW_PRIVATE_TARGETS", "true")
        .env("CISTERN_DELIVERY_POLL_INTERVAL", "200ms")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut ready = false;
    for _ in 0..300 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the hub did not start");

    let run = |n: u64| {
        json!({
            "pipeline": "app", "job_full_name": "team/app", "qualified_name": "team/app",
            "instance_name": "ci", "instance_guid": "5ec7e700-0000-4000-8000-000000000000",
            "start_time": 1_711_603_545_000u64 + n * 1000, "duration": 500,
            "result": "FAILURE", "build_number": n,
        })
    };
    // Keys sent every way, good and bad.
    let post = |header: (&'static str, String), body: Value| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/v1/custom-cicd"))
                .header(header.0, header.1)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(("Authorization", format!("ApiKey {ingest}")), run(1)).await,
        201
    );
    assert_eq!(
        post(("Authorization", format!("Bearer {admin}")), run(2)).await,
        201
    );
    assert_eq!(post(("X-Api-Key", ingest.clone()), run(3)).await, 201);
    assert_eq!(
        post(("Authorization", format!("ApiKey {read}")), run(4)).await,
        403
    );
    assert_eq!(
        post(("Authorization", format!("ApiKey {revoked}")), run(5)).await,
        401
    );
    // A near miss: the ingest key with its last character changed.
    let last = if ingest.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &ingest[..ingest.len() - 1]);
    assert_eq!(
        post(("Authorization", format!("ApiKey {wrong}")), run(6)).await,
        401
    );
    assert_eq!(
        post(("Authorization", ingest.clone()), json!({"pipeline": 1})).await,
        400
    );

    // A secret set through the API, then the hook secret rotated.
    let r = client
        .put(format!("{base}/api/v1/secrets/api-made"))
        .header("Authorization", format!("Bearer {admin}"))
        .json(&json!({ "value": api_secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .put(format!("{base}/api/v1/secrets/hook"))
        .header("Authorization", format!("Bearer {admin}"))
        .header("Content-Type", "text/plain")
        .body(hook_secret_rotated)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Signed hooks: good, wrong and tampered signatures.
    let gh_body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../dialects/tests/fixtures/github/workflow_run.completed.json"),
    )
    .unwrap();
    for (secret, want) in [
        (hook_secret_rotated, 202),
        (hook_secret, 200),
        ("not-the-secret", 401),
    ] {
        let r = client
            .post(format!("{base}{}", hook_path(&github)))
            .header("X-GitHub-Event", "workflow_run")
            .header("X-GitHub-Delivery", "d-1")
            .header(
                "X-Hub-Signature-256",
                format!("sha256={}", hmac_hex(secret.as_bytes(), &gh_body)),
            )
            .body(gh_body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{}", r.text().await.unwrap());
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(whsec.trim_start_matches("whsec_"))
        .unwrap();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = run(9).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("msg_1.{ts}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    for (sig, want) in [(format!("v1,{sig}"), 202), ("v1,AAAA".to_owned(), 401)] {
        let r = client
            .post(format!("{base}{}", hook_path(&standard)))
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }

    // The dashboard: the sign-in form with a wrong key, then the right one, then a page.
    let form = client.get(format!("{base}/login")).send().await.unwrap();
    let nonce = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("cistern_login="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let html = form.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let mut session = String::new();
    for (key, want) in [(wrong.as_str(), 401), (read.as_str(), 303)] {
        let r = client
            .post(format!("{base}/login"))
            .header("Cookie", &nonce)
            .form(&[("key", key), ("csrf", csrf.as_str()), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
        if let Some(c) = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("cistern_session="))
        {
            session = c.split(';').next().unwrap().to_owned();
        }
    }
    let r = client
        .get(format!("{base}/"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Deliveries, signed with the hook secret (both values during the rotation).
    for _ in 0..200 {
        if received.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        received.load(Ordering::SeqCst) >= 3,
        "the deliveries arrived"
    );

    // Stop the hub and read everything it printed.
    let pid = hub.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(20), hub.wait_with_output())
        .await
        .expect("the hub stops on SIGTERM")
        .unwrap();
    log.push_str(&String::from_utf8_lossy(&out.stdout));
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        log.contains("DEBUG"),
        "the hub logged at debug level: {}",
        &log[..log.len().min(2000)]
    );

    let secrets = [
        ("admin key", admin.as_str()),
        ("ingest key", ingest.as_str()),
        ("read key", read.as_str()),
        ("revoked key", revoked.as_str()),
        ("wrong key", wrong.as_str()),
        ("hook secret", hook_secret),
        ("rotated hook secret", hook_secret_rotated),
        ("secret from stdin", stdin_secret),
        ("standard webhooks secret", whsec),
        ("secret set through the API", api_secret),
    ];
    let mut found = Vec::new();
    for (what, secret) in secrets {
        for form in forms(secret) {
            if log.contains(&form) {
                let at = log.find(&form).unwrap();
                let line = log[..at].rsplit('\n').next().unwrap_or("").to_owned()
                    + log[at..].split('\n').next().unwrap_or("");
                found.push(format!("{what} as {form:?} in: {line}"));
            }
        }
    }
    eprintln!(
        "searched {} bytes of logs for {} secrets and keys in {} forms",
        log.len(),
        secrets.len(),
        secrets.iter().map(|(_, s)| forms(s).len()).sum::<usize>()
    );
    assert!(
        found.is_empty(),
        "secrets in the logs:\n{}",
        found.join("\n")
    );
}

/// The path of a hook URL printed by `sources create` (`http://<listen>/v1/hooks/<id>`).
fn hook_path(url: &str) -> &str {
    let at = url.find("/v1/hooks/").expect("a hook URL");
    url[at..].trim()
}
