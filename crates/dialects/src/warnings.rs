//! Warnings about an accepted run: values that follow the rules yet probably do not mean what
//! their sender meant. The run is stored as sent; the warnings go back in the reply and stay
//! with the request in the events log, so the sender can fix its side.

use cistern_core::{FieldError, RunReport};

/// A run's stages adding up to this many times its own duration means the duration is not in
/// the stages' unit.
const STAGES_TO_RUN_RATIO: i64 = 100;
/// A run with stages that took under this many milliseconds in all is more likely seconds.
const SHORTEST_STAGED_RUN_MS: i64 = 1_000;

/// Warns when a run's `duration` looks like seconds although durations are milliseconds: seed
/// 001's text says "duration in seconds" while its examples and the real plugin send
/// milliseconds, so both arrive. Milliseconds are kept; the warning says what was seen. Only a
/// whole run with stages is judged (a partial report carries no duration of its own).
pub fn duration_warnings(run: &RunReport) -> Vec<FieldError> {
    let Some(duration) = run.duration_ms else {
        return Vec::new();
    };
    if run.partial || run.stages.is_empty() {
        return Vec::new();
    }
    let stages: i64 = run
        .stages
        .iter()
        .filter_map(|s| s.duration_ms)
        .fold(0i64, |a, d| a.saturating_add(d.max(0)));
    let message = if stages > 0 && stages >= duration.saturating_mul(STAGES_TO_RUN_RATIO) {
        format!(
            "{duration} looks like seconds: the run's stages add up to {stages} ms, at least {STAGES_TO_RUN_RATIO}× the run's duration; durations are milliseconds, so it was stored as {duration} ms"
        )
    } else if duration < SHORTEST_STAGED_RUN_MS {
        format!(
            "{duration} looks like seconds: a run with stages that took under {SHORTEST_STAGED_RUN_MS} ms is unlikely; durations are milliseconds, so it was stored as {duration} ms"
        )
    } else {
        return Vec::new();
    };
    vec![FieldError::new("duration", message)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParseOptions;
    use cistern_core::Stage;

    fn run(duration: Option<i64>, stages: &[Option<i64>]) -> RunReport {
        let body = serde_json::json!({
            "pipeline": "p", "job_full_name": "p", "qualified_name": "p",
            "instance_name": "i", "instance_guid": "g", "start_time": 1_700_000_000_000i64,
            "duration": duration.unwrap_or(0), "result": "SUCCESS",
        });
        let parsed = crate::sei::parse(body.to_string().as_bytes(), &ParseOptions::new(1024));
        let Ok(mut items) = parsed else {
            panic!("a valid SEI run")
        };
        let Some(crate::Inbound::Run(r)) = items.pop() else {
            panic!("one run")
        };
        let mut r = *r;
        r.duration_ms = duration;
        r.stages = stages
            .iter()
            .enumerate()
            .map(|(i, d)| Stage {
                name: format!("s{i}"),
                duration_ms: *d,
                ..Stage::default()
            })
            .collect();
        r
    }

    #[test]
    fn seconds_are_named_and_milliseconds_pass() {
        // The seed 000 shape in milliseconds: no warning.
        assert!(duration_warnings(&run(Some(77_000), &[Some(5_000)])).is_empty());
        // Parallel stages may add up to more than the run, but not 100×.
        assert!(duration_warnings(&run(Some(60_000), &[Some(59_000); 8])).is_empty());
        // 77 seconds with a 5 s stage: caught twice over, named once.
        let w = duration_warnings(&run(Some(77), &[Some(5_000)]));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].field, "duration");
        assert!(
            w[0].message.contains("looks like seconds"),
            "{}",
            w[0].message
        );
        // 1 200 "ms" with stages adding up to 600 000 ms.
        let w = duration_warnings(&run(Some(1_200), &[Some(300_000), Some(300_000)]));
        assert!(w[0].message.contains("600000 ms"), "{}", w[0].message);
        // Under a second with stages whose durations are unknown.
        assert_eq!(duration_warnings(&run(Some(5), &[None])).len(), 1);
        // No stages, no duration: nothing to judge.
        assert!(duration_warnings(&run(Some(5), &[])).is_empty());
        assert!(duration_warnings(&run(None, &[Some(5_000)])).is_empty());
    }
}
