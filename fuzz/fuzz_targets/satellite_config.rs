//! The satellite's configuration reader (`satellite.yml`, the Ingestion Satellite's format) and
//! its Jasypt-compatible decryption, on arbitrary text: problems are reported, never a panic.
#![no_main]
use cistern_agent::satellite::{config, crypto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text, &|_| None) {
        Ok(_) => {}
        Err(problems) => assert!(!problems.is_empty()),
    }
    // The seed corpus's encrypted file is encrypted with this password.
    if crypto::looks_encrypted(text) {
        if let Ok(plain) = crypto::decrypt_text(text, "fuzz-password") {
            let _ = config::parse(&plain, &|_| None);
        }
    }
});
