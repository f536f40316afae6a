//! Satellite heartbeats over HTTP: recorded with the ingest scope, listed with the read scope,
//! marked stale after three missed intervals, kept within their tenant, bad fields named.

mod common;

use std::time::Duration;

use cistern_store::Scope;
use common::{backends, error_fields, TestApp};
use serde_json::{json, Value};

fn heartbeat(id: &str, interval: i64) -> Value {
    json!({
        "id": id,
        "version": "0.1.0",
        "config_hash": "9f2c",
        "time": "2024-03-28T05:25:45Z",
        "interval_seconds": interval,
        "spool_depth": 2,
        "spool_bytes": 2048,
        "last_forward": null,
        "last_error": "cannot reach the hub",
    })
}

#[tokio::test]
async fn a_heartbeat_shows_on_the_list_and_goes_stale_when_they_stop() {
    for backend in backends() {
        let app = TestApp::spawn(&backend).await;
        let (status, body) = app
            .post("/api/v1/satellites/heartbeat", &heartbeat("plant-1", 1))
            .await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        assert_eq!(body["id"], "plant-1");
        assert_eq!(body["stale_after_seconds"], 3);

        let (status, body) = app.get("/api/v1/satellites").await;
        assert_eq!(status, 200, "{body}");
        let sats = body["satellites"].as_array().expect("list");
        assert_eq!(sats.len(), 1, "{body}");
        let s = &sats[0];
        assert_eq!(s["id"], "plant-1");
        assert_eq!(s["version"], "0.1.0");
        assert_eq!(s["config_hash"], "9f2c");
        assert_eq!(s["spool_depth"], 2);
        assert_eq!(s["details"]["spool_bytes"], 2048);
        assert_eq!(s["last_error"], "cannot reach the hub");
        assert_eq!(s["stale"], false);
        assert_eq!(s["health"], "degraded");

        // A second heartbeat replaces the first.
        let mut next = heartbeat("plant-1", 1);
        next["last_error"] = Value::Null;
        next["last_forward"] = json!("2024-03-28T05:26:00Z");
        next["spool_depth"] = json!(0);
        let (status, _) = app.post("/api/v1/satellites/heartbeat", &next).await;
        assert_eq!(status, 200);
        let (_, body) = app.get("/api/v1/satellites").await;
        let s = &body["satellites"][0];
        assert_eq!(s["health"], "ok", "{body}");
        assert_eq!(s["spool_depth"], 0);
        assert_eq!(s["last_forward_at"], "2024-03-28T05:26:00Z");

        // No heartbeat for three intervals (3 s here): stale.
        tokio::time::sleep(Duration::from_millis(3_300)).await;
        let (_, body) = app.get("/api/v1/satellites").await;
        let s = &body["satellites"][0];
        assert_eq!(s["stale"], true, "{body}");
        assert_eq!(s["health"], "stale");
    }
}

#[tokio::test]
async fn scopes_tenants_and_bad_fields() {
    for backend in backends() {
        let app = TestApp::spawn(&backend).await;
        let read_only = app.key_for("default", &[Scope::Read]).await;
        let (status, _) = app
            .post_raw(
                "/api/v1/satellites/heartbeat",
                &read_only,
                heartbeat("x", 60).to_string(),
            )
            .await;
        assert_eq!(
            status, 403,
            "{backend:?}: a read key cannot send heartbeats"
        );

        let ingest_only = app.key_for("default", &[Scope::Ingest]).await;
        let (status, _) = app.get_with("/api/v1/satellites", &ingest_only).await;
        assert_eq!(status, 403, "an ingest key cannot list satellites");

        let other = app.key_for("acme", &[Scope::Ingest, Scope::Read]).await;
        let (status, _) = app
            .post_raw(
                "/api/v1/satellites/heartbeat",
                &other,
                heartbeat("acme-plant", 60).to_string(),
            )
            .await;
        assert_eq!(status, 200);
        let (_, body) = app.get("/api/v1/satellites").await;
        assert_eq!(body["satellites"], json!([]), "another tenant's satellite");
        let (_, body) = app.get_with("/api/v1/satellites", &other).await;
        assert_eq!(body["satellites"][0]["id"], "acme-plant");

        let (status, body) = app
            .post(
                "/api/v1/satellites/heartbeat",
                &json!({"id": "", "time": 1711603545, "interval_seconds": "often"}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            error_fields(&body),
            vec!["id", "version", "time", "interval_seconds"]
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("looks like seconds"),
            "{body}"
        );
    }
}
