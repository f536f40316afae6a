//! The multipart form reader on arbitrary bodies; the first byte picks the content type.
#![no_main]
#[path = "common.rs"]
mod common;
use libfuzzer_sys::fuzz_target;

const TYPES: &[&str] = &[
    "multipart/form-data; boundary=XYZ",
    "multipart/form-data; boundary=\"a b\"",
    "multipart/form-data; boundary=------------------------d74496d66958873e",
    "multipart/form-data",
];

fuzz_target!(|data: &[u8]| {
    let Some((ctype, body)) = common::choose(data, TYPES) else {
        return;
    };
    if let Err(e) = cistern_dialects::multipart::split(ctype, bytes::Bytes::copy_from_slice(body)) {
        assert!(!e.message.is_empty());
    }
});
