//! Clients that hang up before the reply (CI senders with short timeouts, load balancers,
//! `curl --max-time`, a browser leaving a page) must cost the hub nothing: every pooled
//! connection comes back, later requests are all answered, and `/readyz` tells the truth.

mod common;

use std::time::{Duration, Instant};

use common::{backends, sei_run, TestApp};
use tokio::io::AsyncWriteExt;

/// Hang-ups sent, in waves of `WAVE` concurrent connections.
const HANGUPS: usize = 480;
const WAVE: usize = 32;

/// Opens a connection to the hub, sends a read that needs the database, and resets the
/// connection (linger 0) right away, before any reply.
async fn hang_up(addr: &str, key: &str, nth: usize) {
    let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let mut s = s;
    // Different queries, so each needs its own read (no cache answers them).
    let path = match nth % 3 {
        0 => "/api/v1/runs?limit=50".to_owned(),
        1 => format!("/api/v1/runs?limit={}", 10 + nth % 40),
        _ => "/api/v1/pipelines".to_owned(),
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    // Give the hub a moment to start the request, so the hang-up lands while it is in flight.
    if nth.is_multiple_of(2) {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_micros(200 * (nth % 5) as u64)).await;
    }
    // Linger 0: the kernel resets the connection at once (a drop in the test task, not a block).
    let _ = s.set_zero_linger();
    drop(s);
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_up_clients_leave_the_pool_whole() {
    for backend in backends() {
        let app = TestApp::spawn(&backend).await;
        for n in 0..60 {
            let (status, body) = app.post("/v1/custom-cicd", &sei_run(n)).await;
            assert!((200..300).contains(&status), "{status} {body}");
        }
        let (status, _) = app.get("/api/v1/runs?limit=50").await;
        assert_eq!(status, 200);

        let addr = app.base.trim_start_matches("http://").to_owned();
        let started = Instant::now();
        for wave in 0..HANGUPS / WAVE {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..WAVE {
                let (addr, key) = (addr.clone(), app.key.clone());
                set.spawn(async move { hang_up(&addr, &key, wave * WAVE + i).await });
            }
            while set.join_next().await.is_some() {}
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the hang-ups are bounded in time"
            );
        }

        // The queries the hung-up requests started finish on their own; their connections come
        // back within a short bound.
        let deadline = Instant::now() + Duration::from_secs(10);
        let in_use = loop {
            let text = app
                .client
                .get(app.url("/metrics"))
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("text");
            let size = gauge(&text, "cistern_store_pool_connections").expect("pool size gauge");
            let idle = gauge(&text, "cistern_store_pool_idle_connections").expect("idle gauge");
            let in_use =
                gauge(&text, "cistern_store_pool_in_use_connections").expect("in-use gauge");
            assert!(size >= 1.0);
            assert_eq!(in_use, size - idle, "{backend:?}: in use = size - idle");
            if (backend_is_sqlite(&backend) && idle == size && in_use <= 1.0)
                || (!backend_is_sqlite(&backend) && in_use <= 1.0)
                || Instant::now() > deadline
            {
                break (size, idle, in_use);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if backend_is_sqlite(&backend) {
            assert_eq!(
                in_use.1, in_use.0,
                "{backend:?}: every read connection is back in the pool after {HANGUPS} hang-ups (size, idle, in use) = {in_use:?}"
            );
        }

        let mut ok = 0;
        for _ in 0..20 {
            let (status, body) = app.get("/api/v1/runs?limit=50").await;
            assert_eq!(status, 200, "{backend:?}: after {HANGUPS} hang-ups: {body}");
            ok += 1;
        }
        assert_eq!(ok, 20);
        // Ingestion authenticates with a read: it works too.
        let (status, body) = app.post("/v1/custom-cicd", &sei_run(1000)).await;
        assert!((200..300).contains(&status), "{status} {body}");

        let resp = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(resp.status(), 200);
        let ready: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(ready["status"], "ready");
        assert!(ready["pool"]["size"].as_u64().unwrap() >= 1, "{ready}");
    }
}

fn backend_is_sqlite(b: &common::Backend) -> bool {
    matches!(b, common::Backend::Sqlite)
}

/// `/readyz` reports not ready (503) when no pooled connection can be had within its bound,
/// and ready again once one is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_pool_is_exhausted() {
    let app = TestApp::spawn_with(&common::Backend::Sqlite, |c| c.pool_size = 1).await;
    let store = app.store.clone();
    // Hold the only read connection: a long read query through the store.
    let (holding, taken) = tokio::sync::oneshot::channel::<()>();
    let held = tokio::spawn(async move {
        let sqlite = store
            .as_any()
            .downcast_ref::<cistern_store::sqlite::SqliteStore>()
            .expect("a SQLite store");
        sqlite
            .with_conn(move |_| {
                let _ = holding.send(());
                std::thread::sleep(Duration::from_secs(4));
                Ok(())
            })
            .await
    });
    // Wait until the connection is actually held (not a guess of how long that takes).
    taken.await.expect("the read connection is taken");
    let t = Instant::now();
    let resp = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(resp.status(), 503);
    assert!(t.elapsed() < Duration::from_secs(4), "bounded wait");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("1 of 1 pool connections in use"),
        "{body}"
    );
    held.await.expect("join").expect("held");
    let resp = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(resp.status(), 200);
}
