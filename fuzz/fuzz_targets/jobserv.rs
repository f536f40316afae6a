//! The JobServ build webhook parser on arbitrary bodies.
#![no_main]
#[path = "common.rs"]
mod common;
use cistern_dialects::Headers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(&cistern_dialects::jobserv::parse(
        &Headers::default(),
        data,
        &common::opts(),
    ));
});
