//! Helpers shared by the dialect integration tests: fixtures, headers, options.
#![allow(dead_code)]

use cistern_core::{FieldError, RunReport};
use cistern_dialects::{times, Headers, Inbound, ParseOptions, Rejection};
use time::OffsetDateTime;

/// The bytes of `tests/fixtures/<kind>/<name>`.
pub fn fixture(kind: &str, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/{kind}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture as a JSON value, to derive variants from.
pub fn fixture_json(kind: &str, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(kind, name)).unwrap()
}

/// Every fixture file of `kind`, sorted by name.
pub fn fixtures(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/tests/fixtures/{kind}", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = fixture(kind, &n);
            (n, bytes)
        })
        .collect()
}

/// Options with a 1 MiB log cap.
pub fn opts() -> ParseOptions {
    ParseOptions::new(1 << 20)
}

/// Headers from pairs.
pub fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// A time from its RFC 3339 (or GitLab) text.
pub fn t(s: &str) -> OffsetDateTime {
    times::parse_datetime(s).unwrap_or_else(|| panic!("bad time {s}"))
}

/// The one run report of a parse.
pub fn one_run(items: Vec<Inbound>) -> RunReport {
    assert_eq!(items.len(), 1, "{items:?}");
    match items.into_iter().next() {
        Some(Inbound::Run(r)) => *r,
        other => panic!("expected a run, got {other:?}"),
    }
}

/// The fields named by a rejection.
pub fn fields(r: &Rejection) -> Vec<String> {
    r.errors()
        .into_iter()
        .map(|e: FieldError| e.field)
        .collect()
}

/// (instance guid, pipeline full name, run key): what the store identifies a run by.
pub fn identity(r: &RunReport) -> (String, String, String) {
    (
        r.instance.guid.clone(),
        r.pipeline.full_name.clone(),
        r.run_key.clone(),
    )
}
