//! Named secrets and sources over HTTP: write-only values, encryption at rest, a wrong master
//! key refused at start, admin scope.

mod common;

use cistern_store::Scope;
use common::*;
use serde_json::json;

async fn put(
    app: &TestApp,
    key: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = app
        .client
        .put(app.url(path))
        .header("Authorization", format!("Bearer {key}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    read(resp).await
}

#[tokio::test]
async fn secrets_are_write_only_and_encrypted_at_rest() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let admin = app.key_for("default", &[Scope::Admin]).await;
        let value = "UseSomethingGoodHere-3b1f9c";
        let (status, body) = put(
            &app,
            &admin,
            "/api/v1/secrets/webhook-docs-example",
            json!({"value": value}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = put(
            &app,
            &admin,
            "/api/v1/secrets/webhook-docs-example",
            json!({"value": "rotated-value-77"}),
        )
        .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("updated")),
            "{body}"
        );
        for path in ["/api/v1/secrets", "/api/v1/secrets/webhook-docs-example"] {
            let (status, body) = app.get_with(path, &admin).await;
            assert_eq!(status, 200);
            let text = body.to_string();
            assert!(text.contains("webhook-docs-example"), "{text}");
            assert!(
                !text.contains(value) && !text.contains("rotated-value-77"),
                "values never come back: {text}"
            );
        }
        let (_, one) = app
            .get_with("/api/v1/secrets/webhook-docs-example", &admin)
            .await;
        assert!(
            one["previous_valid_until"].is_string(),
            "rotation keeps the old value for a while: {one}"
        );
        // Read and ingest keys cannot manage secrets.
        let (status, _) = put(&app, &app.key, "/api/v1/secrets/x", json!({"value": "v"})).await;
        assert_eq!(status, 403);
        // The value's bytes are nowhere in the database file.
        if let Backend::Sqlite = b {
            let path = app.database_url.trim_start_matches("sqlite://").to_owned();
            let mut bytes = std::fs::read(&path).unwrap();
            if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
                bytes.extend(wal);
            }
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "the secret is stored in the clear"
            );
        }
        let resp = app
            .client
            .delete(app.url("/api/v1/secrets/webhook-docs-example"))
            .header("Authorization", format!("Bearer {admin}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        let (status, _) = app
            .get_with("/api/v1/secrets/webhook-docs-example", &admin)
            .await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn sources_need_a_known_kind_and_an_existing_secret() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let admin = app.key_for("default", &[Scope::Admin]).await;
    let post = |body: serde_json::Value| {
        let (app, admin) = (&app, admin.clone());
        async move {
            app.post_raw("/api/v1/sources", &admin, body.to_string())
                .await
        }
    };
    let (status, body) = post(json!({"kind": "bitbucket", "secret": "s"})).await;
    assert_eq!(
        (status, error_fields(&body)),
        (400, vec!["kind".to_owned()])
    );
    let (status, body) = post(json!({"kind": "github", "secret": "missing"})).await;
    assert_eq!(
        (status, error_fields(&body)),
        (400, vec!["secret".to_owned()])
    );
    put(
        &app,
        &admin,
        "/api/v1/secrets/gh",
        json!({"value": "s3cret"}),
    )
    .await;
    let (status, body) = post(json!({"kind": "github", "secret": "gh", "name": "acme/app"})).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.len() >= 40, "unguessable: {id}");
    assert_eq!(body["path"], format!("/v1/hooks/{id}"));
    let (_, list) = app.get_with("/api/v1/sources", &admin).await;
    assert_eq!(list["sources"].as_array().unwrap().len(), 1);
    // Another tenant's admin sees nothing of it.
    let other = app.key_for("acme", &[Scope::Admin]).await;
    let (status, _) = app.get_with(&format!("/api/v1/sources/{id}"), &other).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let config = |key: &str| cistern_server::Config {
        listen: "127.0.0.1:0".into(),
        database_url: db.clone(),
        master_key: Some(key.to_owned()),
        ..Default::default()
    };
    let first = cistern_server::Application::build(config(&"ab".repeat(32)))
        .await
        .unwrap();
    drop(first);
    let err = cistern_server::Application::build(config(&"cd".repeat(32)))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("master key"), "{err}");
    assert!(cistern_server::Application::build(config(&"ab".repeat(32)))
        .await
        .is_ok());
}
