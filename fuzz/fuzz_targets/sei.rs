//! The sei dialect parser on arbitrary bodies.
#![no_main]
#[path = "common.rs"]
mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(&cistern_dialects::sei::parse(data, &common::opts()));
});
