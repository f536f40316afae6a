//! The strict JSON reader every endpoint uses: never panics; what it accepts re-serializes and
//! reads back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match cistern_dialects::json::parse(data, "body") {
        Ok(v) => {
            let text = v.to_string();
            let again = cistern_dialects::json::parse(text.as_bytes(), "body")
                .expect("what was accepted reads back");
            assert_eq!(v, again);
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
});
