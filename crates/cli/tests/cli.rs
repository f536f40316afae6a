//! The real `cistern` binary: admin commands print what scripts need, and an acknowledged run
//! survives the server being killed with SIGKILL right after the acknowledgement.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(db: &str) -> Self {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                db,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    return Self { child, base };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not become ready");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_payload(n: u64) -> Value {
    json!({
        "pipeline": "deploy", "job_full_name": "svc/deploy", "qualified_name": "svc/deploy",
        "instance_name": "jenkins", "instance_guid": "c0ffee00-0000-4000-8000-000000000000",
        "start_time": 1_711_603_545_000u64 + n * 1000, "duration": 500, "result": "SUCCESS",
        "build_number": n, "cd": true, "job_run": {"stages": [{"displayName": "ship", "result": "SUCCESS",
        "durationInMillis": 400, "steps": [{"displayName": "push", "result": "SUCCESS", "durationInMillis": 300}]}]}
    })
}

#[test]
fn keys_create_prints_the_key_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let (ok, out, err) = cistern(
        &db,
        &[
            "keys",
            "create",
            "--name",
            "jenkins",
            "--scopes",
            "ingest,read",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must hold the key only: {out:?}");
    assert!(
        lines[0].starts_with("cst_") && lines[0].len() >= 68,
        "{out}"
    );
    let (ok, out, _) = cistern(&db, &["keys", "list"]);
    assert!(ok);
    assert!(
        out.contains("jenkins") && out.contains("ingest,read"),
        "{out}"
    );
    assert!(!out.contains(lines[0]), "list never shows the key");
    let (ok, _, err) = cistern(&db, &["keys", "create", "--name", "x", "--scopes", "write"]);
    assert!(!ok && err.contains("unknown scope"), "{err}");
    let (ok, _, err) = cistern(&db, &["keys", "create", "--name", "x", "--tenant", "nope"]);
    assert!(!ok && err.contains("no tenant"), "{err}");
    let (ok, out, _) = cistern(&db, &["tenants", "create", "acme"]);
    assert!(ok && out.trim() == "acme");
    let (ok, _, err) = cistern(&db, &["tenants", "create", "acme"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, _) = cistern(&db, &["keys", "create", "--name", "ci", "--tenant", "acme"]);
    assert!(ok && out.trim().starts_with("cst_"));
}

#[tokio::test]
async fn revoked_keys_stop_working_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let (_, key, _) = cistern(
        &db,
        &[
            "keys",
            "create",
            "--name",
            "temp",
            "--scopes",
            "ingest,read",
        ],
    );
    let key = key.trim().to_owned();
    let server = Server::start(&db).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/api/v1/runs", server.base))
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (ok, _, err) = cistern(&db, &["keys", "revoke", "temp"]);
    assert!(ok, "{err}");
    let r = client
        .get(format!("{}/api/v1/runs", server.base))
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn acknowledged_runs_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let (_, key, _) = cistern(
        &db,
        &[
            "keys",
            "create",
            "--name",
            "load",
            "--scopes",
            "ingest,read",
        ],
    );
    let key = key.trim().to_owned();
    let client = reqwest::Client::new();
    let mut acked = std::collections::HashSet::new();
    for round in 0..3u64 {
        let server = Server::start(&db).await;
        let mut tasks = Vec::new();
        for i in 0..40u64 {
            let (client, key, base) = (client.clone(), key.clone(), server.base.clone());
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(format!("{base}/v1/custom-cicd"))
                    .header("Authorization", format!("ApiKey {key}"))
                    .body(run_payload(round * 1000 + i).to_string())
                    .send()
                    .await
                    .ok()?;
                if !r.status().is_success() {
                    return None;
                }
                let v: Value = r.json().await.ok()?;
                v["id"].as_str().map(str::to_owned)
            }));
        }
        for t in tasks {
            if let Some(id) = t.await.unwrap() {
                acked.insert(id);
            }
        }
        drop(server); // SIGKILL, right after the last acknowledgement
    }
    assert_eq!(acked.len(), 120, "every request was acknowledged");
    let server = Server::start(&db).await;
    let mut stored = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let url = format!(
            "{}/api/v1/runs?limit=500{}",
            server.base,
            if cursor.is_empty() {
                String::new()
            } else {
                format!("&cursor={cursor}")
            }
        );
        let v: Value = client
            .get(url)
            .header("X-Api-Key", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in v["runs"].as_array().unwrap() {
            assert!(
                stored.insert(r["id"].as_str().unwrap().to_owned()),
                "duplicate run"
            );
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(stored, acked, "every acknowledged run is stored, once");
}

#[tokio::test]
async fn the_load_generator_posts_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let (_, key, _) = cistern(
        &db,
        &[
            "keys",
            "create",
            "--name",
            "bench",
            "--scopes",
            "ingest,read",
        ],
    );
    let key = key.trim().to_owned();
    let server = Server::start(&db).await;
    let out = Command::new(BIN)
        .args([
            "bench",
            "ingest",
            "--url",
            &server.base,
            "--key",
            &key,
            "--concurrency",
            "8",
            "--requests",
            "300",
        ])
        .args([
            "--duration",
            "60s",
            "--unique-ratio",
            "1",
            "--quiet",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["requests_ok"], 300);
    assert_eq!(summary["created"], 300);
    let client = reqwest::Client::new();
    let mut total = 0;
    let mut cursor = String::new();
    loop {
        let url = format!(
            "{}/api/v1/runs?limit=500{}",
            server.base,
            if cursor.is_empty() {
                String::new()
            } else {
                format!("&cursor={cursor}")
            }
        );
        let v: Value = client
            .get(url)
            .header("X-Api-Key", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        total += v["runs"].as_array().unwrap().len();
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(total, 300, "every acknowledged run is stored once");
    // Repeats are updates, never new runs.
    let out = Command::new(BIN)
        .args([
            "bench",
            "ingest",
            "--url",
            &server.base,
            "--key",
            &key,
            "--concurrency",
            "4",
            "--requests",
            "100",
        ])
        .args([
            "--unique-ratio",
            "0",
            "--quiet",
            "--json",
            "--dialect",
            "propelo",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["requests_ok"], 100);
    // Allstacks, with the acknowledgement log: one line per acknowledged job, each a stored run.
    let acks = dir.path().join("allstacks.acks");
    let out = Command::new(BIN)
        .args(["bench", "ingest", "--url", &server.base, "--key", &key])
        .args([
            "--dialect",
            "allstacks",
            "--concurrency",
            "4",
            "--requests",
            "120",
        ])
        .args([
            "--unique-ratio",
            "1",
            "--quiet",
            "--json",
            "--run-prefix",
            "as",
        ])
        .arg("--ack-log")
        .arg(&acks)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["created"], 120);
    let lines = std::fs::read_to_string(&acks).unwrap();
    let ids: std::collections::HashSet<String> = lines
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["execution_id"].as_str().unwrap().starts_with("as-"));
            v["run_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 120, "120 distinct runs acknowledged");
}

#[test]
fn secrets_and_sources_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let (ok, out, err) = cistern(
        &db,
        &[
            "secrets",
            "set",
            "webhook-docs-example=UseSomethingGoodHere",
            "other=x",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    assert!(
        dir.path().join("cistern.key").exists(),
        "the key file is created beside the database"
    );
    let (ok, out, _) = cistern(&db, &["secrets", "list"]);
    assert!(
        ok && out.contains("webhook-docs-example") && !out.contains("UseSomethingGoodHere"),
        "{out}"
    );
    let (ok, out, err) = cistern(
        &db,
        &[
            "sources",
            "create",
            "--kind",
            "jobserv",
            "--secret",
            "webhook-docs-example",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "the URL alone: {out}");
    // The full URL to give the sender, from public_url (else the listen address).
    assert!(
        lines[0].starts_with("http://127.0.0.1:8080/v1/hooks/src_"),
        "{out}"
    );
    let out = Command::new(BIN)
        .args(["sources", "create", "--kind", "jobserv", "--secret"])
        .args(["webhook-docs-example", "--database", &db])
        .env_remove("CISTERN_DATABASE_URL")
        .env("CISTERN_PUBLIC_URL", "https://ci-hub.example.com/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.trim()
            .starts_with("https://ci-hub.example.com/v1/hooks/src_"),
        "{out}"
    );
    let (_, list, _) = cistern(&db, &["sources", "list"]);
    assert!(
        list.contains("\thttp://127.0.0.1:8080/v1/hooks/src_"),
        "{list}"
    );
    let (ok, _, err) = cistern(
        &db,
        &[
            "sources", "create", "--kind", "github", "--secret", "missing",
        ],
    );
    assert!(!ok && err.contains("no secret named"), "{err}");
    let (ok, _, err) = cistern(&db, &["secrets", "set", "novalue"]);
    assert!(!ok && err.contains("NAME=VALUE"), "{err}");
    // The database holds no secret in the clear.
    let bytes = std::fs::read(dir.path().join("c.db")).unwrap();
    let wal = std::fs::read(dir.path().join("c.db-wal")).unwrap_or_default();
    for b in [bytes, wal] {
        assert!(!b.windows(20).any(|w| w == b"UseSomethingGoodHere"));
    }
}

#[test]
fn subscriptions_create_prints_the_id_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let url = "https://93.184.216.34/ci-webhook";
    let (ok, _, err) = cistern(
        &db,
        &["subscriptions", "create", "--url", url, "--secret", "hook"],
    );
    assert!(!ok && err.contains("cistern secrets set hook="), "{err}");
    let (ok, _, err) = cistern(&db, &["secrets", "set", "hook=UseSomethingGoodHere"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cistern(
        &db,
        &[
            "subscriptions",
            "create",
            "--url",
            url,
            "--secret",
            "hook",
            "--only-failures",
            "--pipeline",
            "team/*",
            "--events",
            "run.completed,deployment.completed",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must hold the id only: {out:?}");
    let id = lines[0];
    assert!(id.starts_with("sub_"), "{out}");
    let (ok, out, _) = cistern(&db, &["subscriptions", "list"]);
    assert!(ok);
    assert!(
        out.contains(id)
            && out.contains("jobserv")
            && out.contains("run.completed,deployment.completed")
            && out.contains("only-failures pipeline=team/*")
            && out.contains("enabled"),
        "{out}"
    );
    let (ok, _, err) = cistern(&db, &["subscriptions", "disable", id]);
    assert!(ok, "{err}");
    let (_, out, _) = cistern(&db, &["subscriptions", "list"]);
    assert!(out.contains("disabled: disabled by a user"), "{out}");
    let (ok, _, err) = cistern(&db, &["subscriptions", "enable", id]);
    assert!(ok && err.contains("enabled"), "{err}");
    let (ok, _, err) = cistern(
        &db,
        &[
            "subscriptions",
            "create",
            "--url",
            "http://127.0.0.1:8080/x",
            "--secret",
            "hook",
        ],
    );
    assert!(!ok && err.contains("allow_private_targets"), "{err}");
    let (ok, _, err) = cistern(
        &db,
        &[
            "subscriptions",
            "create",
            "--url",
            url,
            "--secret",
            "hook",
            "--events",
            "incident.opened",
        ],
    );
    assert!(!ok && err.contains("native or cdevents"), "{err}");
    let (ok, _, _) = cistern(&db, &["subscriptions", "delete", id]);
    assert!(ok);
    let (ok, _, err) = cistern(&db, &["subscriptions", "delete", id]);
    assert!(!ok && err.contains("no subscription"), "{err}");
}

#[tokio::test]
async fn backup_copies_a_serving_database_and_log_format_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let (_, key, _) = cistern(
        &db,
        &["keys", "create", "--name", "b", "--scopes", "ingest,read"],
    );
    let key = key.trim().to_owned();
    let server = Server::start(&db).await;
    let client = reqwest::Client::new();
    for n in 0..5 {
        let r = client
            .post(format!("{}/v1/custom-cicd", server.base))
            .header("Authorization", format!("ApiKey {key}"))
            .json(&run_payload(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let copy = dir.path().join("copy.db");
    let copy_s = copy.display().to_string();
    let (ok, _, err) = cistern(&db, &["backup", "--to", &copy_s]);
    assert!(ok, "{err}");
    assert!(err.contains("integrity check: ok"), "{err}");
    // The copy is a working database: the CLI reads it, with its runs.
    let copy_url = format!("sqlite://{copy_s}");
    let (ok, out, err) = cistern(&copy_url, &["keys", "list"]);
    assert!(ok && out.contains("ingest,read"), "{out} {err}");
    assert_eq!(count_runs(&copy).await, 5);
    let (ok, _, err) = cistern(&db, &["backup", "--to", &copy_s]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = cistern(
        "postgres://nobody@127.0.0.1:1/none",
        &["backup", "--to", "x.db"],
    );
    assert!(!ok && err.contains("pg_dump"), "{err}");
    let (ok, _, err) = cistern(&db, &["--log-format", "xml", "keys", "list"]);
    assert!(!ok && err.contains("json"), "{err}");
    drop(server);
}

/// Runs in a database file, counted through a fresh `cistern serve` on it.
async fn count_runs(path: &std::path::Path) -> usize {
    let url = format!("sqlite://{}", path.display());
    let (ok, key, err) = cistern(
        &url,
        &["keys", "create", "--name", "count", "--scopes", "read"],
    );
    assert!(ok, "{err}");
    let server = Server::start(&url).await;
    let body: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/runs?limit=500", server.base))
        .header("Authorization", format!("Bearer {}", key.trim()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["runs"].as_array().map(Vec::len).unwrap_or(0)
}

#[test]
fn triggers_create_prints_the_id_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let base = [
        "triggers",
        "create",
        "--org",
        "default",
        "--project",
        "Platform",
        "--pipeline",
        "deploy",
    ];
    let github = [
        "--preset",
        "github",
        "--url",
        "https://93.184.216.34",
        "--repo",
        "acme/app",
        "--workflow",
        "ci.yml",
        "--ref",
        "main",
        "--token-secret",
        "gh",
    ];
    let args = |trigger: &str, extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(["--trigger", trigger].iter())
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        cistern(&db, &refs)
    };
    let (ok, _, err) = run(args("on-merge", &github));
    assert!(!ok && err.contains("no secret named \"gh\""), "{err}");
    let (ok, _, err) = cistern(&db, &["secrets", "set", "gh=ghp_example"]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(args("on-merge", &github));
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must hold the id only: {out:?}");
    let id = lines[0];
    assert!(id.starts_with("trg_"), "{out}");
    assert!(
        err.contains("/gateway/api/webhook/custom?accountIdentifier=default&orgIdentifier=default"),
        "{err}"
    );
    let (ok, _, err) = run(args("on-merge", &github));
    assert!(!ok && err.contains("already exists"), "{err}");
    // A plain target, a header and a body template; the token URL allowed.
    let (ok, out, err) = run(args(
        "nightly",
        &[
            "--url",
            "https://93.184.216.34/hooks/build",
            "--header",
            "Authorization: Bearer {{secret.gh}}",
            "--body",
            "{\"id\": \"{{correlation_id}}\"}",
            "--allow-token",
        ],
    ));
    assert!(
        ok && err.contains("/custom/") && err.contains("/v3?"),
        "{err}"
    );
    let other = out.trim().to_owned();
    let (ok, _, err) = run(args(
        "bad",
        &["--url", "https://93.184.216.34/x", "--body", "{{ nope }}"],
    ));
    assert!(
        !ok && err.contains("body") && err.contains("unknown placeholder"),
        "{err}"
    );
    let (ok, _, err) = run(args("local", &["--url", "http://127.0.0.1:9/x"]));
    assert!(!ok && err.contains("allow_private_targets"), "{err}");

    let (ok, out, _) = cistern(&db, &["triggers", "list"]);
    assert!(ok);
    assert!(
        out.contains(id)
            && out.contains("default/Platform/deploy\ton-merge")
            && out.contains(
                "POST https://93.184.216.34/repos/acme/app/actions/workflows/ci.yml/dispatches"
            )
            && out.contains(&format!("{other}\tdefault/Platform/deploy\tnightly"))
            && out.contains("enabled token-url"),
        "{out}"
    );
    let (ok, _, err) = cistern(&db, &["triggers", "disable", id]);
    assert!(ok && err.contains("disabled"), "{err}");
    let (_, out, _) = cistern(&db, &["triggers", "list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with(id) && l.ends_with("disabled")),
        "{out}"
    );
    let (ok, _, _) = cistern(&db, &["triggers", "enable", id]);
    assert!(ok);
    let (ok, _, _) = cistern(&db, &["triggers", "delete", id]);
    assert!(ok);
    let (ok, _, err) = cistern(&db, &["triggers", "delete", id]);
    assert!(!ok && err.contains("no trigger"), "{err}");
}

#[test]
fn global_options_are_described_once_and_completions_are_printed() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    assert!(
        top.contains("Global options") && top.contains("--database <URL>"),
        "{top}"
    );
    for cmd in [
        &["keys", "create", "--help"][..],
        &["serve", "--help"],
        &["report", "run", "--help"],
        &["satellite", "run", "--help"],
    ] {
        let text = help(cmd);
        assert!(
            !text.contains("--database") && !text.contains("--log-format"),
            "{cmd:?} lists the global options again: {text}"
        );
    }
    // Still accepted after the command.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    let out = Command::new(BIN)
        .args(["tenants", "list", "--database", &db, "--log-format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bash = help(&["completions", "bash"]);
    assert!(
        bash.contains("_cistern()") && bash.contains("migrate-data"),
        "{bash}"
    );
    let zsh = help(&["completions", "zsh"]);
    assert!(zsh.contains("#compdef cistern"));
    // Logs carry no colour codes when stderr is not a terminal.
    let out = Command::new(BIN)
        .args(["migrate", "--database", &db])
        .env("CISTERN_LOG", "info")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\u{1b}'),
        "{out:?}"
    );
}
