//! Test harness: the real hub on a random port over real sockets, on SQLite (a temp file) and,
//! when `CISTERN_TEST_PG` names a PostgreSQL server, on a fresh PostgreSQL database too.
#![allow(dead_code)]

use std::sync::Arc;

use cistern_server::{auth, Application, Config};
use cistern_store::{NewApiKey, Scope, Store};
use serde_json::Value;

/// A backend to run a test on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

/// SQLite always; PostgreSQL when `CISTERN_TEST_PG` is set.
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    match std::env::var("CISTERN_TEST_PG") {
        Ok(url) if !url.is_empty() => out.push(Backend::Postgres(url)),
        _ => eprintln!("note: PostgreSQL half skipped: CISTERN_TEST_PG is not set (CI sets it)"),
    }
    out
}

/// A running hub.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    /// A key of the default tenant with ingest and read scopes.
    pub key: String,
    pub backend: Backend,
    pub database_url: String,
    /// The master key file (a sibling node must use the same key).
    pub master_key_file: String,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn fresh_pg_database(base: &str) -> String {
    use sqlx::Connection;
    let name = format!("cistern_t_{}", uuid_simple());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to CISTERN_TEST_PG");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (head, _) = base
        .rsplit_once('/')
        .expect("CISTERN_TEST_PG must end with /<database>");
    format!("{head}/{name}")
}

fn uuid_simple() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl TestApp {
    /// Starts a hub with default settings.
    pub async fn spawn(backend: &Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a hub after `tune` adjusts the configuration.
    pub async fn spawn_with(backend: &Backend, tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("cistern.db").display()),
            Backend::Postgres(base) => fresh_pg_database(base).await,
        };
        let key_file = dir.path().join("cistern.key").display().to_string();
        Self::spawn_on(backend, database_url, key_file, Some(dir), tune).await
    }

    /// Starts a second hub on the same database (another node), with the same master key.
    pub async fn spawn_sibling(&self, tune: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on(
            &self.backend,
            self.database_url.clone(),
            self.master_key_file.clone(),
            None,
            tune,
        )
        .await
    }

    /// Stops this hub (waiting until it has stopped, delivery worker included) and starts a
    /// new one on the same database: a restart.
    pub async fn restart(mut self, tune: impl FnOnce(&mut Config)) -> Self {
        self.shutdown().await;
        let dir = self._dir.take();
        Self::spawn_on(
            &self.backend.clone(),
            self.database_url.clone(),
            self.master_key_file.clone(),
            dir,
            tune,
        )
        .await
    }

    async fn spawn_on(
        backend: &Backend,
        database_url: String,
        master_key_file: String,
        dir: Option<tempfile::TempDir>,
        tune: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            database_url: database_url.clone(),
            master_key_file: Some(master_key_file.clone()),
            // Tests send refusals by the hundred from one loopback address (the tenant walls,
            // the hostile corpus); the failed-authentication limit has its own test.
            auth_failures_per_minute: 0.0,
            ..Config::default()
        };
        tune(&mut config);
        let app = Application::build(config).await.expect("build app");
        let base = format!("http://127.0.0.1:{}", app.port());
        let store = app.state().store.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(app.run_with_shutdown(async move {
            let _ = rx.await;
        }));
        let mut me = Self {
            base,
            client: reqwest::Client::new(),
            store,
            key: String::new(),
            backend: backend.clone(),
            database_url,
            master_key_file,
            _dir: dir,
            shutdown: Some(tx),
            served: Some(served),
        };
        me.key = me.key_for("default", &[Scope::Ingest, Scope::Read]).await;
        me
    }

    /// Creates a key for `tenant` (creating the tenant when needed).
    pub async fn key_for(&self, tenant: &str, scopes: &[Scope]) -> String {
        let t = match self
            .store
            .tenant_by_slug(tenant)
            .await
            .expect("tenant lookup")
        {
            Some(t) => t,
            None => self
                .store
                .create_tenant(tenant, false)
                .await
                .expect("create tenant"),
        };
        let k = auth::generate_key();
        self.store
            .create_api_key(NewApiKey {
                tenant_id: t.id,
                name: format!("test-{}", &k.prefix[4..]),
                prefix: k.prefix.clone(),
                hash: k.hash.clone(),
                scopes: scopes.to_vec(),
            })
            .await
            .expect("create key");
        k.secret
    }

    /// Signs in to the dashboard with `key` through the sign-in form; returns the `Cookie`
    /// header value of the session (`cistern_session=css_…`).
    pub async fn session_cookie(&self, key: &str) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let pair = |resp: &reqwest::Response, name: &str| {
            resp.headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|c| c.starts_with(&format!("{name}=")))
                .and_then(|c| c.split(';').next())
                .map(str::to_owned)
        };
        let form = http
            .get(self.url("/login"))
            .send()
            .await
            .expect("login page");
        let nonce = pair(&form, "cistern_login").expect("login nonce");
        let html = form.text().await.expect("login page");
        let marker = r#"name="csrf" value=""#;
        let at = html.find(marker).expect("csrf field") + marker.len();
        let csrf = html[at..at + html[at..].find('"').expect("end")].to_owned();
        let resp = http
            .post(self.url("/login"))
            .header("cookie", nonce)
            .form(&[("key", key), ("csrf", csrf.as_str()), ("next", "/")])
            .send()
            .await
            .expect("sign in");
        pair(&resp, "cistern_session")
            .unwrap_or_else(|| format!("cistern_session=signed-out-{}", resp.status()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs raw bytes with `Authorization: ApiKey <key>`.
    pub async fn post_raw(
        &self,
        path: &str,
        key: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header("Authorization", format!("ApiKey {key}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        read(resp).await
    }

    /// POSTs JSON with the default key.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &self.key.clone(), body.to_string())
            .await
    }

    /// GETs with a key.
    pub async fn get_with(&self, path: &str, key: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(self.url(path))
            .header("Authorization", format!("Bearer {key}"))
            .send()
            .await
            .expect("request");
        read(resp).await
    }

    /// GETs with the default key.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, &self.key.clone()).await
    }

    /// Every run of the default tenant (following cursors).
    pub async fn all_runs(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/runs?limit=500&cursor={c}"),
                None => "/api/v1/runs?limit=500".to_owned(),
            };
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "{body}");
            out.extend(body["runs"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Stops the server (dropping the listener).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server and waits until it has stopped.
    pub async fn shutdown(&mut self) {
        self.stop();
        if let Some(h) = self.served.take() {
            h.await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Status and JSON body (or the text as a JSON string when it is not JSON).
pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A fixture file's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A valid minimal SEI run; `n` varies the identity.
pub fn sei_run(n: u64) -> Value {
    serde_json::json!({
        "pipeline": "build",
        "job_full_name": "team/build",
        "qualified_name": "team/build",
        "instance_name": "ci-1",
        "instance_guid": "2f1b2b4e-0000-4000-8000-000000000001",
        "start_time": 1_711_603_545_000u64 + n * 60_000,
        "duration": 1000 + n,
        "result": if n.is_multiple_of(3) { "FAILURE" } else { "SUCCESS" },
        "build_number": n,
        "branch_name": if n.is_multiple_of(2) { "main" } else { "dev" },
    })
}

/// The field names of a problem body's errors.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The messages of a problem body's errors, joined.
pub fn error_text(body: &Value) -> String {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["message"].as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}
