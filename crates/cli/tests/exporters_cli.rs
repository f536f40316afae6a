//! `cistern exporters create|list|delete` against a real SQLite file.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn cistern(db: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .env("CISTERN_ALLOW_PRIVATE_TARGETS", "true")
        .output()
        .expect("run cistern");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exporters_create_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let url = "http://127.0.0.1:4318/v1/traces";
    let header = "Authorization: Bearer {{secret.otlp-token}}";
    let (ok, _, err) = cistern(
        &db,
        &[
            "exporters",
            "create",
            "--kind",
            "otlp",
            "--url",
            url,
            "--header",
            header,
        ],
    );
    assert!(
        !ok && err.contains("cistern secrets set otlp-token="),
        "{err}"
    );
    let (ok, _, err) = cistern(&db, &["secrets", "set", "otlp-token=UseSomethingGoodHere"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cistern(
        &db,
        &["exporters", "create", "--kind", "jaeger", "--url", url],
    );
    assert!(!ok && err.contains("kinds: otlp"), "{err}");
    let (ok, _, err) = cistern(
        &db,
        &[
            "exporters",
            "create",
            "--kind",
            "otlp",
            "--url",
            url,
            "--header",
            "nocolon",
        ],
    );
    assert!(!ok && err.contains("--header"), "{err}");
    let (ok, out, err) = cistern(
        &db,
        &[
            "exporters",
            "create",
            "--kind",
            "otlp",
            "--url",
            url,
            "--header",
            header,
            "--header",
            "X-Scope-OrgID: team-a",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must hold the id only: {out:?}");
    let id = lines[0];
    assert!(id.starts_with("exp_"), "{out}");
    let (ok, out, _) = cistern(&db, &["exporters", "list"]);
    assert!(ok);
    assert!(
        out.contains(id)
            && out.contains(url)
            && out.contains("Authorization,X-Scope-OrgID")
            && out.contains("enabled"),
        "{out}"
    );
    // It is a subscription too: its deliveries are in the same log.
    let (_, out, _) = cistern(&db, &["subscriptions", "list"]);
    assert!(out.contains(id) && out.contains("otlp"), "{out}");
    let (ok, _, err) = cistern(&db, &["exporters", "delete", id]);
    assert!(ok && err.contains("deleted"), "{err}");
    let (ok, _, err) = cistern(&db, &["exporters", "delete", id]);
    assert!(!ok && err.contains("no exporter"), "{err}");
}
