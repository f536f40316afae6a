//! Graceful shutdown of the real binary: on SIGTERM the hub stops taking connections, finishes
//! the requests it has (one whose body is still arriving included), writes them, and exits 0.

use std::process::{Child, Command, Stdio};
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
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hub process, killed if a failing test leaves it running.
struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn serve(db: &str, port: u16) -> Hub {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return Hub(child);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the hub did not become ready");
}

fn signal(hub: &Hub, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &hub.0.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Waits for the process to exit, at most `limit`.
async fn exit_within(hub: &mut Hub, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = hub.0.try_wait().expect("try_wait") {
            return status;
        }
        if started.elapsed() > limit {
            panic!("the hub did not exit within {limit:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let key = cistern(
        &db,
        &["keys", "create", "--name", "t", "--scopes", "ingest,read"],
    );
    let port = free_port();
    let mut hub = serve(&db, port).await;
    let base = format!("http://127.0.0.1:{port}");

    let run = json!({
        "pipeline": "drain", "job_full_name": "svc/drain", "qualified_name": "svc/drain",
        "instance_name": "ci", "instance_guid": "d0d0d0d0-0000-4000-8000-000000000000",
        "start_time": 1_711_603_545_000u64, "duration": 500, "result": "SUCCESS",
        "execution_id": "in-flight-at-sigterm",
    })
    .to_string()
    .into_bytes();
    let (first, second) = run.split_at(run.len() / 2);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let request = {
        let (base, key) = (base.clone(), key.clone());
        let len = run.len();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/custom-cicd"))
                .header("Authorization", format!("ApiKey {key}"))
                .header("Content-Length", len.to_string())
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
        })
    };
    tx.send(Ok(first.to_vec())).await.unwrap();
    // The hub is reading the body when it is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&hub, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        hub.0.try_wait().unwrap().is_none(),
        "the hub must wait for the request it is reading"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "a draining hub takes no new connection"
    );
    tx.send(Ok(second.to_vec())).await.unwrap();
    drop(tx);
    let resp = request
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(resp.status(), 201);
    let reply: Value = resp.json().await.unwrap();
    let status = exit_within(&mut hub, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");

    // Written before the reply: the restarted hub has it.
    let mut hub = serve(&db, port).await;
    let got = reqwest::Client::new()
        .get(format!(
            "{base}/api/v1/runs/{}",
            reply["id"].as_str().unwrap()
        ))
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let got: Value = got.json().await.unwrap();
    assert_eq!(got["execution_id"], "in-flight-at-sigterm");
    signal(&hub, "TERM");
    let status = exit_within(&mut hub, Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "an idle hub exits 0 on SIGTERM: {status:?}"
    );
}
