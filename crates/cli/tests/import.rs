//! `cistern import FILE.ndjson`: lines of every ingestion dialect land as runs through the same
//! parsers as HTTP, refused lines are named with their line number, and a second run resumes
//! after the checkpoint instead of starting over.

use std::process::Command;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn cistern(db: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", db])
        .env_remove("CISTERN_DATABASE_URL")
        .output()
        .expect("run cistern");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/../server/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn sei_line(n: u64) -> String {
    let mut v = fixture("sei/example_payload_fixed.json");
    v["execution_id"] = json!(format!("import-{n}"));
    v["start_time"] = json!(1_711_603_545_000u64 + n * 60_000);
    v.to_string()
}

async fn runs_of(db: &str) -> i64 {
    let store = cistern_store::open(db, &Default::default()).await.unwrap();
    let tenant = store.tenant_by_slug("default").await.unwrap().unwrap();
    store
        .list_pipelines(&tenant.id)
        .await
        .unwrap()
        .iter()
        .map(|p| p.runs)
        .sum()
}

#[tokio::test]
async fn import_reads_every_dialect_names_refused_lines_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("i.db").display());
    let file = dir.path().join("runs.ndjson");
    let mut lines: Vec<String> = (0..40).map(sei_line).collect();
    lines.push(fixture("propelo/request_example_fixed.json").to_string());
    lines.push(fixture("allstacks/sample_payload_fixed.json").to_string());
    // A wrapped line naming its dialect.
    let mut job = fixture("allstacks/sample_payload_fixed.json");
    job["job_id"] = json!("wrapped-1");
    lines.push(json!({"dialect": "allstacks", "body": job}).to_string());
    lines.push(String::new());
    // Line 45: not JSON; line 46: a run without its result.
    lines.push("{\"pipeline\": \"x\",".into());
    let mut bad = fixture("sei/example_payload_fixed.json");
    bad.as_object_mut().unwrap().remove("result");
    lines.push(bad.to_string());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let path = file.to_str().unwrap();

    let (code, _, err) = cistern(&db, &["import", path]);
    assert_eq!(code, 2, "refused lines make exit code 2: {err}");
    assert!(
        err.contains("43 runs created, 0 updated, 0 other events, 2 refused"),
        "{err}"
    );
    assert!(err.contains("line 45: refused: invalid JSON"), "{err}");
    assert!(err.contains("line 46: refused: result:"), "{err}");
    assert_eq!(runs_of(&db).await, 43);
    let checkpoint = std::fs::read_to_string(dir.path().join("runs.ndjson.progress")).unwrap();
    assert_eq!(checkpoint.trim(), "46");

    // More lines appended: a second run only reads those.
    let more: Vec<String> = (40..50).map(sei_line).collect();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(&mut f, (more.join("\n") + "\n").as_bytes()).unwrap();
    let (code, _, err) = cistern(&db, &["import", path]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(resumed after line 46)"), "{err}");
    assert!(err.contains("10 runs created, 0 updated"), "{err}");
    assert_eq!(runs_of(&db).await, 53);

    // From the start again: the same runs are updated, not doubled.
    let (code, _, err) = cistern(&db, &["import", path, "--restart", "--dialect", "auto"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("0 runs created, 53 updated"), "{err}");
    assert_eq!(runs_of(&db).await, 53);

    let (code, _, err) = cistern(&db, &["import", path, "--dialect", "cobol"]);
    assert_eq!(code, 1);
    assert!(err.contains("use auto, sei, propelo or allstacks"), "{err}");
}
