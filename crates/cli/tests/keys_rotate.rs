//! `cistern keys rotate NAME [--grace D]`: the new key alone on stdout, the old key in its grace
//! (then refused, 401 saying it was rotated, against the real hub), the name following the
//! replacement so that a second rotation by name rotates the new key.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn cistern(db: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .output()
        .expect("run cistern");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn keys_rotate_prints_the_new_key_alone_and_the_old_one_ends_with_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let (ok, old, err) = cistern(&db, &["keys", "create", "--name", "ci", "--scopes", "read"]);
    assert!(ok, "{err}");
    let old = old.trim().to_owned();

    let (ok, _, err) = cistern(&db, &["keys", "rotate", "ci", "--grace", "45d"]);
    assert!(!ok && err.contains("30 days"), "{err}");
    let (ok, _, err) = cistern(&db, &["keys", "rotate", "nobody"]);
    assert!(!ok && err.contains("no current key"), "{err}");

    let started = Instant::now();
    let grace = Duration::from_secs(3);
    let (ok, out, err) = cistern(&db, &["keys", "rotate", "ci", "--grace", "3s"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "the new key alone: {out:?}");
    let new = lines[0].to_owned();
    assert!(new.starts_with("cst_") && new != old, "{new}");
    assert!(err.contains("rotated"), "{err}");
    let (_, list, _) = cistern(&db, &["keys", "list"]);
    assert!(list.contains("grace until"), "{list}");

    // Against the real hub: both keys work during the grace; after it, the old one is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut hub = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            &db,
        ])
        .env_remove("CISTERN_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let runs = |key: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}/api/v1/runs"))
                .header("Authorization", format!("Bearer {key}"))
                .send()
                .await;
            match r {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(_) => (0, String::new()),
            }
        }
    };
    let mut up = false;
    for _ in 0..200 {
        if runs(new.clone()).await.0 == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "the hub did not start");
    let (status, _) = runs(old.clone()).await;
    if started.elapsed() < grace {
        assert_eq!(status, 200, "the old key works during its grace");
    }
    tokio::time::sleep(grace.saturating_sub(started.elapsed()) + Duration::from_millis(300)).await;
    let (status, body) = runs(old.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("was rotated"), "{body}");
    assert_eq!(runs(new.clone()).await.0, 200);
    let _ = hub.kill();
    let _ = hub.wait();

    // The name now names the replacement: rotating by name again rotates the new key.
    let (ok, newer, err) = cistern(&db, &["keys", "rotate", "ci", "--grace", "1h"]);
    assert!(ok, "{err}");
    assert!(newer.trim().starts_with("cst_") && newer.trim() != new);
}
