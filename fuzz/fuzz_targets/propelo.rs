//! The Jenkins Job Reporter envelope (`/v1/generic-requests`) on arbitrary bodies.
#![no_main]
#[path = "common.rs"]
mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cistern_dialects::propelo::request_type_of(data);
    if let Err(e) = cistern_dialects::propelo::parse(data, &common::opts()) {
        assert!(!e.errors().is_empty(), "a refusal without a reason");
    }
});
