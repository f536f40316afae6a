//! What the dialect targets share: options fixed in time (so a crash replays the same way) and
//! the checks every accepted report must pass.
#![allow(dead_code)]

use cistern_dialects::{Inbound, ParseOptions, Rejection};

/// Parse options at a fixed "now" (2024-06-01), with a small log cap so capping is exercised.
pub fn opts() -> ParseOptions {
    ParseOptions {
        max_log_bytes: 4096,
        now: time::OffsetDateTime::from_unix_timestamp(1_717_200_000).expect("a valid time"),
    }
}

/// The invariants of a parse: a refusal says why; an accepted run has an identity, no negative
/// durations and no log over the cap.
pub fn check(out: &Result<Vec<Inbound>, Rejection>) {
    match out {
        Err(e) => assert!(!e.errors().is_empty(), "a refusal without a reason"),
        Ok(items) => {
            for item in items {
                if let Inbound::Run(r) = item {
                    assert!(!r.instance.guid.is_empty(), "empty instance");
                    assert!(!r.pipeline.full_name.is_empty(), "empty pipeline");
                    assert!(!r.run_key.is_empty(), "empty run key");
                    assert!(r.duration_ms.is_none_or(|d| d >= 0), "negative duration");
                    assert!(
                        r.log.as_ref().is_none_or(|l| l.text.len() <= 4096),
                        "log over the cap"
                    );
                    for s in &r.stages {
                        assert!(
                            s.duration_ms.is_none_or(|d| d >= 0),
                            "negative stage duration"
                        );
                        for st in &s.steps {
                            assert!(
                                st.duration_ms.is_none_or(|d| d >= 0),
                                "negative step duration"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Splits off the first byte to choose among `choices` (for header variants).
pub fn choose<'a, T>(data: &'a [u8], choices: &'a [T]) -> Option<(&'a T, &'a [u8])> {
    let (first, rest) = data.split_first()?;
    Some((&choices[*first as usize % choices.len()], rest))
}
