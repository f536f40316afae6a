//! The GitLab webhook parser (pipeline and job hooks) on arbitrary bodies; the first byte picks
//! the event header.
#![no_main]
#[path = "common.rs"]
mod common;
use cistern_dialects::Headers;
use libfuzzer_sys::fuzz_target;

const EVENTS: &[&str] = &["Pipeline Hook", "Job Hook", "Push Hook", ""];

fuzz_target!(|data: &[u8]| {
    let Some((event, body)) = common::choose(data, EVENTS) else {
        return;
    };
    let headers = Headers(vec![("X-Gitlab-Event".into(), (*event).into())]);
    common::check(&cistern_dialects::gitlab::parse(
        &headers,
        body,
        &common::opts(),
    ));
});
