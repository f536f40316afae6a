//! The CDEvents / CloudEvents parser in each mode (plain, structured, batch, binary) on arbitrary
//! bodies; the first byte picks the mode's headers.
#![no_main]
#[path = "common.rs"]
mod common;
use cistern_dialects::Headers;
use libfuzzer_sys::fuzz_target;

fn mode(n: u8) -> Headers {
    let h = |pairs: &[(&str, &str)]| {
        Headers(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    };
    match n % 4 {
        0 => Headers::default(),
        1 => h(&[("content-type", "application/cloudevents+json")]),
        2 => h(&[("content-type", "application/cloudevents-batch+json")]),
        _ => h(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "fuzz-1"),
            ("ce-source", "/fuzz"),
            ("ce-type", "dev.cdevents.pipelinerun.finished.0.1.1"),
            ("ce-time", "2024-05-01T10:00:00Z"),
        ]),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    common::check(&cistern_dialects::cdevents::parse(
        &mode(*first),
        body,
        &common::opts(),
    ));
});
