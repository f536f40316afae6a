//! The hostile input corpus (`tests/hostile/**/*.case`, one named file per case) posted to the
//! real hub on both backends. Every case must get its expected 4xx as an
//! `application/problem+json` body naming the problem; the hub stays up, stores nothing of a
//! refused request (run and accepted-event counts unchanged), and its memory stays bounded.
//!
//! A case file is a header, a line `---`, and the body bytes exactly as sent (so invalid UTF-8,
//! UTF-16 and byte order marks are kept as they are). The header's first line is
//! `METHOD /path`; then request headers (`Name: value`) and directives:
//!
//! - `@expect: 400` the status (required);
//! - `@field: start_time` an `errors[].field` the reply must name (repeatable);
//! - `@text: milliseconds` text the reply must contain, case-insensitively (repeatable);
//! - `@key: admin|ingest|read|none|unknown` the API key sent (default admin, which has every scope);
//! - `@sign: jobserv|github|gitlab|standard|standard-stale` sign the body as that source would;
//! - `@part: NAME FILE` a multipart part from `tests/hostile/files/` (`gen:zip-entries N` makes
//!   a zip of N entries), the body then being the form;
//! - `@stream: N` send N bytes of filler as a chunked body with no length.
//!
//! Paths and header values may name fixtures of the setup: `{source:jobserv}` (a source id),
//! `{sub}`, `{delivery}`, `{run}`, `{event}`, `{now}` (the time, in epoch seconds). Bodies may hold `{{repeat N ELEM}}` (N copies of
//! ELEM joined by commas), `{{cat N TEXT}}` (N copies of TEXT) and `{{pad N}}` (N `x`
//! characters), so that large cases stay small files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use cistern_store::{EventFilter, EventStatus, PageRequest, RunFilter, Scope};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// Fewest cases the corpus must hold.
const MIN_CASES: usize = 300;
/// Most the test process may grow while the corpus runs (bodies up to a few MiB, both hubs).
const MAX_RSS_GROWTH: u64 = 256 * 1024 * 1024;

const HOOK_SECRET: &str = "hostile-hook-secret-9f2c";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    key: String,
    sign: Option<String>,
    expect: u16,
    fields: Vec<String>,
    texts: Vec<String>,
    parts: Vec<(String, String)>,
    stream: Option<usize>,
    body: Vec<u8>,
}

fn load_cases() -> Vec<Case> {
    let mut files = Vec::new();
    collect(&corpus_dir(), &mut files);
    files.sort();
    files
        .iter()
        .map(|f| parse_case(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "case") {
            out.push(path);
        }
    }
}

fn parse_case(file: &Path) -> Result<Case, String> {
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let sep = bytes
        .windows(5)
        .position(|w| w == b"\n---\n")
        .ok_or("no `---` line between header and body")?;
    let head = std::str::from_utf8(&bytes[..sep]).map_err(|_| "header is not UTF-8")?;
    let body = bytes[sep + 5..].to_vec();
    let name = file
        .strip_prefix(corpus_dir())
        .unwrap_or(file)
        .with_extension("")
        .display()
        .to_string();
    let mut lines = head
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let first = lines.next().ok_or("empty header")?;
    let (method, path) = first.split_once(' ').ok_or("first line: METHOD /path")?;
    let mut case = Case {
        name,
        method: method.to_owned(),
        path: path.trim().to_owned(),
        headers: Vec::new(),
        key: "admin".into(),
        sign: None,
        expect: 0,
        fields: Vec::new(),
        texts: Vec::new(),
        parts: Vec::new(),
        stream: None,
        body,
    };
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or(format!("not `name: value`: {line}"))?;
        let v = v.trim().to_owned();
        match k.trim() {
            "@expect" => case.expect = v.parse().map_err(|_| format!("bad status {v}"))?,
            "@field" => case.fields.push(v),
            "@text" => case.texts.push(v),
            "@key" => case.key = v,
            "@sign" => case.sign = Some(v),
            "@part" => {
                let (n, f) = v.split_once(' ').ok_or("@part: NAME FILE")?;
                case.parts.push((n.to_owned(), f.trim().to_owned()));
            }
            "@stream" => case.stream = Some(v.parse().map_err(|_| "bad @stream")?),
            d if d.starts_with('@') => return Err(format!("unknown directive {d}")),
            h => case.headers.push((h.to_owned(), v)),
        }
    }
    if !(400..500).contains(&case.expect) {
        return Err(format!("@expect must be a 4xx status, got {}", case.expect));
    }
    Ok(case)
}

/// Expands `{{repeat N ELEM}}` and `{{pad N}}` in a body.
fn expand(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.windows(2).position(|w| w == b"{{") {
        let Some(mut len) = rest[start..].windows(2).position(|w| w == b"}}") else {
            break;
        };
        // An element may end with `}` itself: the template closes with the last two of a run.
        while rest.get(start + len + 2) == Some(&b'}') {
            len += 1;
        }
        out.extend_from_slice(&rest[..start]);
        let inner = String::from_utf8_lossy(&rest[start + 2..start + len]).into_owned();
        let mut words = inner.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("repeat"), Some(n), Some(elem)) => {
                let n: usize = n.parse().expect("repeat count");
                let joined = vec![elem; n].join(",");
                out.extend_from_slice(joined.as_bytes());
            }
            (Some("cat"), Some(n), Some(elem)) => {
                let n: usize = n.parse().expect("cat count");
                out.extend_from_slice(elem.repeat(n).as_bytes());
            }
            (Some("pad"), Some(n), None) => {
                let n: usize = n.parse().expect("pad length");
                out.extend(std::iter::repeat_n(b'x', n));
            }
            _ => panic!("unknown template {{{{{inner}}}}}"),
        }
        rest = &rest[start + len + 2..];
    }
    out.extend_from_slice(rest);
    out
}

fn hmac(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("key");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn zip_with_entries(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..n {
            z.start_file(format!("{i}"), opts).expect("entry");
            z.write_all(b"").expect("write");
        }
        z.finish().expect("finish");
    }
    out.into_inner()
}

/// What the setup made, for placeholders.
struct Fixtures {
    admin: String,
    ingest: String,
    read: String,
    standard_secret: Vec<u8>,
    values: BTreeMap<String, String>,
}

impl Fixtures {
    fn fill(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (k, v) in &self.values {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }
}

async fn setup(app: &TestApp) -> Fixtures {
    let admin = app
        .key_for("default", &[Scope::Ingest, Scope::Read, Scope::Admin])
        .await;
    let ingest = app.key_for("default", &[Scope::Ingest]).await;
    let read = app.key_for("default", &[Scope::Read]).await;
    let mut raw = [7u8; 32];
    raw[0] = 1;
    let standard_secret = raw.to_vec();
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    let client = &app.client;
    for (name, value) in [("hook", HOOK_SECRET.to_owned()), ("whsec", whsec)] {
        let r = client
            .put(app.url(&format!("/api/v1/secrets/{name}")))
            .header("Authorization", format!("Bearer {admin}"))
            .json(&json!({ "value": value }))
            .send()
            .await
            .expect("put secret");
        assert!(r.status().is_success());
    }
    let mut values = BTreeMap::new();
    for (kind, secret) in [
        ("jobserv", "hook"),
        ("github", "hook"),
        ("gitlab", "hook"),
        ("cdevents", "whsec"),
        ("standard", "whsec"),
    ] {
        let (status, body) = app
            .post_raw(
                "/api/v1/sources",
                &admin,
                json!({"kind": kind, "secret": secret}).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        values.insert(
            format!("source:{kind}"),
            body["id"].as_str().expect("source id").to_owned(),
        );
    }
    let (status, sub) = app
        .post_raw(
            "/api/v1/subscriptions",
            &admin,
            json!({"url": "http://127.0.0.1:9/hook", "secret": "hook"}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let sub_id = sub["id"].as_str().expect("subscription id").to_owned();
    let (status, run) = app.post("/v1/custom-cicd", &sei_run(1)).await;
    assert_eq!(status, 201, "{run}");
    let (_, deliveries) = app
        .get_with(
            &format!("/api/v1/subscriptions/{sub_id}/deliveries"),
            &admin,
        )
        .await;
    values.insert(
        "delivery".into(),
        deliveries["deliveries"][0]["id"]
            .as_str()
            .expect("a delivery of the setup run")
            .to_owned(),
    );
    values.insert("sub".into(), sub_id);
    values.insert(
        "now".into(),
        time::OffsetDateTime::now_utc().unix_timestamp().to_string(),
    );
    values.insert("run".into(), run["id"].as_str().unwrap().to_owned());
    values.insert("event".into(), run["event_id"].as_str().unwrap().to_owned());
    Fixtures {
        admin,
        ingest,
        read,
        standard_secret,
        values,
    }
}

/// Runs and accepted events of the default tenant: what a refused request must not change.
async fn stored(app: &TestApp) -> (usize, usize) {
    let t = app
        .store
        .tenant_by_slug("default")
        .await
        .expect("tenant")
        .expect("default tenant");
    let page = PageRequest {
        limit: 500,
        cursor: None,
    };
    let runs = app
        .store
        .list_runs(&t.id, &RunFilter::default(), &page)
        .await
        .expect("runs")
        .items
        .len();
    let events = app
        .store
        .list_events(
            &t.id,
            &EventFilter {
                status: Some(EventStatus::Accepted),
                ..Default::default()
            },
            &page,
        )
        .await
        .expect("events")
        .items
        .len();
    (runs, events)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn send(app: &TestApp, fx: &Fixtures, case: &Case) -> Result<(u16, String, String), String> {
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).map_err(|e| e.to_string())?;
    let url = format!("{}{}", app.base, fx.fill(&case.path));
    let mut req = app
        .client
        .request(method, url)
        .timeout(Duration::from_secs(60));
    match case.key.as_str() {
        "admin" => req = req.header("Authorization", format!("Bearer {}", fx.admin)),
        "ingest" => req = req.header("Authorization", format!("ApiKey {}", fx.ingest)),
        "read" => req = req.header("Authorization", format!("Bearer {}", fx.read)),
        "unknown" => req = req.header("Authorization", "Bearer cst_0000000000000000"),
        "none" => {}
        other => return Err(format!("unknown @key {other}")),
    }
    for (k, v) in &case.headers {
        req = req.header(k.as_str(), fx.fill(v));
    }
    let body = expand(&case.body);
    if let Some(kind) = &case.sign {
        let key = HOOK_SECRET.as_bytes();
        match kind.as_str() {
            "jobserv" => {
                req = req.header(
                    "X-JobServ-Sig",
                    format!("sha256:{}", hex::encode(hmac(key, &body))),
                )
            }
            "github" => {
                req = req.header(
                    "X-Hub-Signature-256",
                    format!("sha256={}", hex::encode(hmac(key, &body))),
                )
            }
            "gitlab" => req = req.header("X-Gitlab-Token", HOOK_SECRET),
            "standard" | "standard-stale" => {
                let mut ts = time::OffsetDateTime::now_utc().unix_timestamp();
                if kind == "standard-stale" {
                    ts -= 3600;
                }
                let id = format!("msg_{}", case.name.replace('/', "_"));
                let mut signed = format!("{id}.{ts}.").into_bytes();
                signed.extend_from_slice(&body);
                let sig = base64::engine::general_purpose::STANDARD
                    .encode(hmac(&fx.standard_secret, &signed));
                req = req
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", format!("v1,{sig}"));
            }
            other => return Err(format!("unknown @sign {other}")),
        }
    }
    if !case.parts.is_empty() {
        let mut form = reqwest::multipart::Form::new();
        for (name, file) in &case.parts {
            let bytes = match file.strip_prefix("gen:zip-entries ") {
                Some(n) => zip_with_entries(n.parse().map_err(|_| "bad zip-entries")?),
                None => std::fs::read(corpus_dir().join("files").join(file))
                    .map_err(|e| format!("part file {file}: {e}"))?,
            };
            form = form.part(
                name.clone(),
                reqwest::multipart::Part::bytes(bytes).file_name(name.clone()),
            );
        }
        req = req.multipart(form);
    } else if let Some(n) = case.stream {
        let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = n.div_ceil(chunk.len());
        let stream =
            futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        req = req.body(reqwest::Body::wrap_stream(stream));
    } else if !body.is_empty() || case.method != "GET" {
        req = req.body(body);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("reading the reply: {e}"))?;
    Ok((status, ctype, text))
}

/// Checks one reply; the problems found.
fn judge(case: &Case, status: u16, ctype: &str, text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    if status != case.expect {
        bad.push(format!("status {status}, expected {}", case.expect));
    }
    if !ctype.starts_with("application/problem+json") {
        bad.push(format!(
            "content-type {ctype:?}, expected application/problem+json"
        ));
    }
    let body: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            bad.push("the body is not JSON".into());
            Value::Null
        }
    };
    if body["status"].as_u64() != Some(u64::from(status)) {
        bad.push("the problem's status member differs from the HTTP status".into());
    }
    if body["detail"].as_str().is_none_or(|d| d.trim().is_empty()) {
        bad.push("the problem has no detail".into());
    }
    let fields = error_fields(&body);
    for f in &case.fields {
        if !fields.iter().any(|x| x == f) {
            bad.push(format!("no error names field {f:?} (fields: {fields:?})"));
        }
    }
    let lower = text.to_lowercase();
    for t in &case.texts {
        if !lower.contains(&t.to_lowercase()) {
            bad.push(format!("the reply does not say {t:?}"));
        }
    }
    bad
}

#[test]
fn corpus_is_large_and_well_formed() {
    let cases = load_cases();
    assert!(
        cases.len() >= MIN_CASES,
        "the corpus holds {} cases; at least {MIN_CASES} are required",
        cases.len()
    );
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name.clone()), "two cases named {}", c.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_case_is_refused_with_a_problem() {
    let cases = load_cases();
    for b in backends() {
        let app = TestApp::spawn_with(&b, |c| {
            c.allow_private_targets = true;
            c.delivery_worker = false;
        })
        .await;
        let fx = setup(&app).await;
        let rss_before = rss_bytes();
        let mut failures = Vec::new();
        let mut outcomes: BTreeMap<u16, usize> = BTreeMap::new();
        for case in &cases {
            let before = stored(&app).await;
            match send(&app, &fx, case).await {
                Ok((status, ctype, text)) => {
                    *outcomes.entry(status).or_default() += 1;
                    let bad = judge(case, status, &ctype, &text);
                    if !bad.is_empty() {
                        let shown: String = text.chars().take(300).collect();
                        failures.push(format!("{}: {} — reply {shown}", case.name, bad.join("; ")));
                    }
                }
                Err(e) => failures.push(format!("{}: {e}", case.name)),
            }
            let (health, _) = app.get("/healthz").await;
            assert_eq!(
                health, 200,
                "{}: the hub is down after this case",
                case.name
            );
            let after = stored(&app).await;
            if after != before {
                failures.push(format!(
                    "{}: stored something (runs, accepted events) {before:?} → {after:?}",
                    case.name
                ));
            }
        }
        let growth = rss_bytes().saturating_sub(rss_before);
        eprintln!(
            "hostile corpus on {b:?}: {} cases, outcomes by status {outcomes:?}, {} failures, RSS growth {:.1} MiB",
            cases.len(),
            failures.len(),
            growth as f64 / 1048576.0
        );
        assert!(
            failures.is_empty(),
            "{} of {} cases failed on {b:?}:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        assert!(
            growth < MAX_RSS_GROWTH,
            "memory grew by {growth} bytes while the corpus ran"
        );
        // A good request still works.
        let (status, body) = app.post("/v1/custom-cicd", &sei_run(2)).await;
        assert_eq!(status, 201, "{body}");
    }
}

/// JSON may escape a NUL into a string; PostgreSQL cannot keep one in text (it answered 500),
/// so every string is read with U+FFFD in its place, on both backends alike.
#[tokio::test]
async fn nul_characters_in_strings_are_stored_as_replacement_characters() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let mut run = sei_run(7);
        run["branch_name"] = json!("ma\u{0}in");
        run["user_id"] = json!("\u{0}");
        run["job_run"] =
            json!({"log": "binary\u{0}output", "stages": [{"displayName": "a\u{0}b"}]});
        run["job_run_params"] = json!([{"name": "k\u{0}", "value": "v\u{0}"}]);
        let (status, body) = app.post("/v1/custom-cicd", &run).await;
        assert_eq!(status, 201, "{b:?}: {body}");
        let (_, stored) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(stored["branch"], "ma\u{FFFD}in", "{stored}");
        assert_eq!(stored["stages"][0]["name"], "a\u{FFFD}b", "{stored}");
        assert_eq!(stored["log"], "binary\u{FFFD}output", "{stored}");
        let (status, body) = app
            .post(
                "/api/v1/satellites/heartbeat",
                &json!({"id": "sat\u{0}1", "version": "1\u{0}", "time": "2024-03-28T05:25:45Z"}),
            )
            .await;
        assert_eq!(status, 200, "{b:?}: {body}");
        assert_eq!(body["id"], "sat\u{FFFD}1");
    }
}
