//! The real binary started with `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` pointing at a
//! listening local socket: outbound requests ignore them (a proxy resolves names itself, out of
//! reach of the address check), so nothing reaches the socket. The variables are set on the
//! spawned server only: the test process's environment is shared by every test.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn cistern(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .output()
        .expect("run cistern");
    assert!(
        out.status.success(),
        "cistern {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn proxy_environment_variables_are_ignored() {
    // The "proxy": counts connections, answers 200 to whatever arrives.
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.local_addr().unwrap().port());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    std::thread::spawn(move || {
        for mut sock in proxy.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = sock.read(&mut buf);
            let _ = std::io::Write::write_all(
                &mut sock,
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    cistern(&db, &["secrets", "set", "s=k"]);
    // A name no resolver knows: only a proxy would "deliver" it.
    let sub = cistern(
        &db,
        &[
            "subscriptions",
            "create",
            "--url",
            "http://cistern-internal-only.invalid/hook",
            "--secret",
            "s",
            "--format",
            "native",
        ],
    );
    let key = cistern(
        &db,
        &["keys", "create", "--name", "k", "--scopes", "ingest,admin"],
    );

    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            &db,
        ])
        .env_remove("CISTERN_DATABASE_URL")
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env("CISTERN_DELIVERY_SCHEDULE", "0s")
        .env("CISTERN_DELIVERY_POLL_INTERVAL", "50ms")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let result = async {
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "server not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let run = json!({
            "pipeline": "deploy", "job_full_name": "svc/deploy", "qualified_name": "svc/deploy",
            "instance_name": "jenkins", "instance_guid": "c0ffee00-0000-4000-8000-000000000000",
            "start_time": 1_711_603_545_000u64, "duration": 500, "result": "SUCCESS",
            "build_number": 1, "job_run": {"stages": []}
        });
        let r = client
            .post(format!("{base}/v1/custom-cicd"))
            .header("Authorization", format!("Bearer {key}"))
            .json(&run)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let start = Instant::now();
        let delivery = loop {
            let list: Value = client
                .get(format!("{base}/api/v1/subscriptions/{sub}/deliveries"))
                .header("Authorization", format!("Bearer {key}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let d = list["deliveries"][0].clone();
            if d["attempts"].as_i64().unwrap_or(0) >= 1 {
                break d;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no attempt: {list}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(delivery["status"], "failed", "{delivery}");
        delivery
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the proxy of the environment was used: {result}"
    );
    let err = result["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("dns") || err.contains("lookup"), "{err}");
}
