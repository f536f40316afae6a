//! The log zip reader on arbitrary archives: opening, reading entries by name with the zip bomb
//! limits, and attaching them to a run that references them.
#![no_main]
use cistern_dialects::logzip::{attach_logs, LogZip, ZipLimits};
use cistern_dialects::Inbound;
use libfuzzer_sys::fuzz_target;

const CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let limits = ZipLimits {
        max_entries: 1_000,
        max_total_bytes: 8 * 1024 * 1024,
        max_ratio: 200,
    };
    let Ok(mut zip) = LogZip::open(data.to_vec(), limits) else {
        return;
    };
    for name in ["log", "0", "a/b", "0f8c1c1e-log", ""] {
        if let Ok(Some(log)) = zip.read_tail(name, CAP) {
            assert!(log.text.len() <= CAP);
            assert!(!log.text.contains('\0'));
        }
    }
    // A run whose run, stage and step logs name entries of the zip, as the plugin sends them.
    let payload = br#"{"pipeline": "p", "job_full_name": "p", "qualified_name": "p",
        "instance_name": "i", "instance_guid": "g", "start_time": 1711603545000,
        "duration": 1, "result": "FAILURE", "job_run": {"log": "log", "stages": [
        {"displayName": "s", "log": "0", "steps": [{"displayName": "t", "log": "a/b"}]}]}}"#;
    let opts = cistern_dialects::ParseOptions {
        max_log_bytes: CAP,
        now: time::OffsetDateTime::from_unix_timestamp(1_717_200_000).expect("a valid time"),
    };
    let Ok(mut items) = cistern_dialects::sei::parse(payload, &opts) else {
        panic!("the fixed payload parses");
    };
    let Some(Inbound::Run(run)) = items.pop() else {
        panic!("the fixed payload is a run");
    };
    let mut run = *run;
    let _ = attach_logs(&mut run, &mut zip, CAP);
});
