//! Slow clients against the real binary: a client that sends its headers a line at a time, one
//! that trickles its body, and an idle kept-alive connection are each cut off within the
//! configured timeouts (short here, so the test runs in seconds), and while two dozen slow bodies
//! hold a hub with 20 in-flight slots, a normal request is served again within the body timeout.
//! Every connection is to loopback.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_cistern");
/// The timeouts the hub runs with here.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack for a loaded machine: a cut-off must come within its timeout plus this.
const SLACK: Duration = Duration::from_secs(3);

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

/// A hub process, killed when the test ends.
struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(db: &str, port: u16) -> Hub {
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .env("CISTERN_HEADER_READ_TIMEOUT", "1s")
        .env("CISTERN_REQUEST_BODY_TIMEOUT", "2s")
        .env("CISTERN_MAX_IN_FLIGHT", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let hub = Hub(child);
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return hub;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the hub did not become ready");
}

/// Keeps writing `piece` every `every` until the server stops the connection; returns what the
/// server answered (empty when it only closed) and how long it took.
async fn trickle(mut s: TcpStream, piece: &[u8], every: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            () = tokio::time::sleep(every) => {
                if s.write_all(piece).await.is_err() {
                    // Closed under us; read what was answered before.
                    let _ = tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut answer)).await;
                    break;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server kept a slow client for 30 s"
        );
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn post_head(port: u16, key: &str, len: usize) -> String {
    format!(
        "POST /v1/custom-cicd HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: ApiKey {key}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let key = cistern(
        &db,
        &["keys", "create", "--name", "t", "--scopes", "ingest"],
    );
    let port = free_port();
    let _hub = serve(&db, port).await;
    let addr = format!("127.0.0.1:{port}");

    // Headers one line at a time, each well within the timeout, the whole never done.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let (answer, took) = trickle(s, b"X-Slow: 1\r\n", Duration::from_millis(300)).await;
    assert!(
        took < HEADER_TIMEOUT + SLACK && !answer.starts_with("HTTP/1.1 200"),
        "slow headers held for {took:?}: {answer:?}"
    );

    // A body one byte at a time: 408 (or a closed connection) at the body deadline.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(post_head(port, &key, 1000).as_bytes())
        .await
        .unwrap();
    let (answer, took) = trickle(s, b" ", Duration::from_millis(300)).await;
    assert!(
        took >= BODY_TIMEOUT - Duration::from_millis(200) && took < BODY_TIMEOUT + SLACK,
        "a slow body was cut off after {took:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    if !answer.is_empty() {
        assert!(answer.contains("request_body_timeout"), "{answer}");
    }

    // An idle kept-alive connection is closed after one request.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let closed = tokio::time::timeout(HEADER_TIMEOUT + SLACK, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle connection stayed open {:?}",
        started.elapsed()
    );

    // 24 slow bodies against 20 in-flight slots: the slots are taken (503 for others) until the
    // body deadline frees them; then a normal request is served, the slow clients still sending.
    let mut slow = Vec::new();
    for _ in 0..24 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(post_head(port, &key, 1000).as_bytes())
            .await
            .unwrap();
        slow.push(tokio::spawn(trickle(s, b" ", Duration::from_millis(500))));
    }
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut statuses = Vec::new();
    // First the slow bodies take every slot...
    loop {
        let status = client
            .get(format!("http://{addr}/login"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        statuses.push(status);
        if status == 503 {
            break;
        }
        assert!(
            started.elapsed() < BODY_TIMEOUT / 2,
            "the slow bodies never took the slots: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...then the deadline frees them.
    loop {
        let status = client
            .get(format!("http://{addr}/login"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        statuses.push(status);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{statuses:?}");
        assert!(
            started.elapsed() < BODY_TIMEOUT + SLACK,
            "no normal request served for {:?} while slow bodies held the slots: {statuses:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in slow {
        let (_, took) = t.await.unwrap();
        assert!(took < BODY_TIMEOUT + SLACK, "a slow body held for {took:?}");
    }
}
