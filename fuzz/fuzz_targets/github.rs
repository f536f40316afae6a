//! The GitHub webhook parser (workflow runs and jobs, pings, other events) on arbitrary bodies;
//! the first byte picks the event header.
#![no_main]
#[path = "common.rs"]
mod common;
use cistern_dialects::Headers;
use libfuzzer_sys::fuzz_target;

const EVENTS: &[&str] = &["workflow_run", "workflow_job", "ping", "push", ""];

fuzz_target!(|data: &[u8]| {
    let Some((event, body)) = common::choose(data, EVENTS) else {
        return;
    };
    let headers = Headers(vec![("X-GitHub-Event".into(), (*event).into())]);
    common::check(&cistern_dialects::github::parse(
        &headers,
        body,
        &common::opts(),
    ));
});
