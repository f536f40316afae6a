//! A trigger's token URL (`…/custom/<token>/v3`) is a secret in a path: the real binary, logging
//! at debug level, fires triggers through token URLs (good, wrong, rotated away), and nothing it
//! prints holds a token; its request spans name the route (`/custom/{token}/v3`) instead.
//! `cistern triggers rotate-token` prints the new URL alone, and the old token is refused.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn cistern(db: &str, dir: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .env("CISTERN_LOG", "debug")
        .env("CISTERN_MASTER_KEY_FILE", dir.join("master.key"))
        .env("CISTERN_ALLOW_PRIVATE_TARGETS", "true")
        .output()
        .expect("run cistern");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "cistern {args:?}: {stderr}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_tokens_never_reach_the_logs_and_rotate_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("c.db").display());
    let (admin, _) = cistern(
        &db,
        d,
        &["keys", "create", "--name", "admin", "--scopes", "admin"],
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let hub = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", &db])
        .env_remove("CISTERN_DATABASE_URL")
        .env("CISTERN_LOG", "debug")
        .env("CISTERN_MASTER_KEY_FILE", d.join("master.key"))
        .env("CISTERN_ALLOW_PRIVATE_TARGETS", "true")
        .env("CISTERN_PUBLIC_URL", &base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let client = reqwest::Client::new();
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

    // The target: a port nobody listens on (the attempts fail; the calls are what matter).
    let created: Value = client
        .post(format!("{base}/api/v1/triggers"))
        .header("Authorization", format!("Bearer {admin}"))
        .json(
            &json!({"org": "o", "project": "p", "pipeline": "deploy", "trigger": "t",
                      "url": "http://127.0.0.1:9/build", "allow_token": true}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let first_url = created["token_url"].as_str().unwrap().to_owned();
    let token_of = |url: &str| {
        url.split("/custom/")
            .nth(1)
            .and_then(|s| s.split("/v3").next())
            .unwrap()
            .to_owned()
    };
    let first = token_of(&first_url);
    let fire = |url: String| {
        let client = client.clone();
        async move {
            client
                .post(url)
                .header("Content-Type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(fire(first_url.clone()).await, 200);
    let wrong_url = first_url.replace(&first, &"0".repeat(32));
    assert_eq!(fire(wrong_url).await, 401);

    // Rotation from the command line: the new URL alone on stdout; the old token is refused.
    let (printed, _) = cistern(&db, d, &["triggers", "rotate-token", &id]);
    assert!(!printed.contains(char::is_whitespace), "{printed}");
    // (The command has no public_url here: the URL's origin is its listen default.)
    let at = printed
        .find("/gateway/pipeline/api/webhook/custom/")
        .expect("a token URL");
    let second_url = format!("{base}{}", &printed[at..]);
    let second = token_of(&second_url);
    assert_ne!(first, second);
    assert_eq!(fire(first_url.clone()).await, 401, "the old token, at once");
    assert_eq!(fire(second_url.clone()).await, 200);

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
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (what, token) in [("first token", &first), ("rotated token", &second)] {
        assert!(
            !log.contains(token.as_str()),
            "the {what} is in the logs: {}",
            log.lines().find(|l| l.contains(token.as_str())).unwrap()
        );
    }
    assert!(
        log.contains("/custom/{token}/v3"),
        "the spans name the route: {}",
        &log[..log.len().min(3000)]
    );
    // The database keeps no token either.
    let db_bytes = std::fs::read(d.join("c.db")).unwrap();
    let wal = std::fs::read(d.join("c.db-wal")).unwrap_or_default();
    for token in [&first, &second] {
        let hit = |b: &[u8]| b.windows(token.len()).any(|w| w == token.as_bytes());
        assert!(!hit(&db_bytes) && !hit(&wal), "a token is stored in clear");
    }
}
