//! The normalized result of a run, stage or step, and the senders' words for it.

use serde::{Deserialize, Serialize};

/// The outcome (or current state) of a run, stage or step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// Finished and passed.
    Success,
    /// Finished and failed.
    Failure,
    /// Finished with test failures or warnings (Jenkins UNSTABLE).
    Unstable,
    /// Stopped by a person or the system before finishing.
    Aborted,
    /// Waiting for an approval or a manual action.
    OnHold,
    /// In progress.
    Running,
    /// Waiting to start.
    Queued,
    /// Not run at all.
    Skipped,
    /// The CI system itself failed (infrastructure error, timeout).
    Error,
}

/// Every normalized result, in display order.
pub const ALL_RESULTS: [RunResult; 9] = [
    RunResult::Success,
    RunResult::Failure,
    RunResult::Unstable,
    RunResult::Aborted,
    RunResult::OnHold,
    RunResult::Running,
    RunResult::Queued,
    RunResult::Skipped,
    RunResult::Error,
];

/// The senders' words, normalized (lower case, `-`/space/`_` removed), and what they mean.
const VOCABULARY: &[(&str, RunResult)] = &[
    ("success", RunResult::Success),
    ("succeeded", RunResult::Success),
    ("successful", RunResult::Success),
    ("succeed", RunResult::Success),
    ("passed", RunResult::Success),
    ("pass", RunResult::Success),
    ("ok", RunResult::Success),
    ("fixed", RunResult::Success),
    ("failure", RunResult::Failure),
    ("failed", RunResult::Failure),
    ("fail", RunResult::Failure),
    ("broken", RunResult::Failure),
    ("stillfailing", RunResult::Failure),
    ("unstable", RunResult::Unstable),
    ("partiallysucceeded", RunResult::Unstable),
    ("aborted", RunResult::Aborted),
    ("abort", RunResult::Aborted),
    ("cancelled", RunResult::Aborted),
    ("canceled", RunResult::Aborted),
    ("canceling", RunResult::Aborted),
    ("cancelling", RunResult::Aborted),
    ("killed", RunResult::Aborted),
    ("stopped", RunResult::Aborted),
    ("terminated", RunResult::Aborted),
    ("onhold", RunResult::OnHold),
    ("hold", RunResult::OnHold),
    ("paused", RunResult::OnHold),
    ("waiting", RunResult::OnHold),
    ("manual", RunResult::OnHold),
    ("blocked", RunResult::OnHold),
    ("actionrequired", RunResult::OnHold),
    ("approvalwaiting", RunResult::OnHold),
    ("running", RunResult::Running),
    ("inprogress", RunResult::Running),
    ("started", RunResult::Running),
    ("building", RunResult::Running),
    ("executing", RunResult::Running),
    ("queued", RunResult::Queued),
    ("pending", RunResult::Queued),
    ("scheduled", RunResult::Queued),
    ("created", RunResult::Queued),
    ("requested", RunResult::Queued),
    ("preparing", RunResult::Queued),
    ("waitingforresource", RunResult::Queued),
    ("notstarted", RunResult::Queued),
    ("skipped", RunResult::Skipped),
    ("notbuilt", RunResult::Skipped),
    ("neutral", RunResult::Skipped),
    ("error", RunResult::Error),
    ("errored", RunResult::Error),
    ("timedout", RunResult::Error),
    ("timeout", RunResult::Error),
    ("expired", RunResult::Error),
    ("startupfailure", RunResult::Error),
    ("runnersystemfailure", RunResult::Error),
];

impl RunResult {
    /// Maps a sender's word (`SUCCESS`, `Succeeded`, `PASSED`, `On Hold`, `cancelled`, …) to a
    /// result, case-insensitively; `None` for a word no known sender uses.
    pub fn from_word(word: &str) -> Option<Self> {
        let mut key = String::with_capacity(word.len());
        for c in word.trim().chars() {
            if c == '-' || c == '_' || c == ' ' {
                continue;
            }
            key.extend(c.to_lowercase());
        }
        VOCABULARY
            .iter()
            .find(|(w, _)| *w == key)
            .map(|(_, result)| *result)
    }

    /// The normalized word, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Failure => "failure",
            RunResult::Unstable => "unstable",
            RunResult::Aborted => "aborted",
            RunResult::OnHold => "on_hold",
            RunResult::Running => "running",
            RunResult::Queued => "queued",
            RunResult::Skipped => "skipped",
            RunResult::Error => "error",
        }
    }

    /// Parses the normalized word produced by [`RunResult::as_str`].
    pub fn from_normalized(s: &str) -> Option<Self> {
        ALL_RESULTS.iter().copied().find(|r| r.as_str() == s)
    }

    /// True once the run has ended (whatever the outcome).
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            RunResult::Running | RunResult::Queued | RunResult::OnHold
        )
    }

    /// True for outcomes that count as failed (failure, error).
    pub fn is_failed(self) -> bool {
        matches!(self, RunResult::Failure | RunResult::Error)
    }

    /// A message listing the accepted words, for error replies.
    pub fn accepted_words() -> &'static str {
        "accepted (case-insensitive): SUCCESS, Succeeded, PASSED, FAILURE, FAILED, Failed, UNSTABLE, \
         ABORTED, cancelled, canceled, On Hold, RUNNING, in_progress, QUEUED, pending, SKIPPED, NOT_BUILT, \
         ERROR, timed_out (normalized to success, failure, unstable, aborted, on_hold, running, queued, \
         skipped, error)"
    }
}

impl std::fmt::Display for RunResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_every_dialect_map() {
        for (word, expected) in [
            ("SUCCESS", RunResult::Success),
            ("success", RunResult::Success),
            ("Succeeded", RunResult::Success),
            ("PASSED", RunResult::Success),
            ("FAILURE", RunResult::Failure),
            ("FAILED", RunResult::Failure),
            ("Failed", RunResult::Failure),
            ("UNSTABLE", RunResult::Unstable),
            ("ABORTED", RunResult::Aborted),
            ("cancelled", RunResult::Aborted),
            ("On Hold", RunResult::OnHold),
            ("on_hold", RunResult::OnHold),
            ("NOT_BUILT", RunResult::Skipped),
            ("in_progress", RunResult::Running),
            ("timed_out", RunResult::Error),
        ] {
            assert_eq!(RunResult::from_word(word), Some(expected), "{word}");
        }
        assert_eq!(RunResult::from_word("greenish"), None);
        assert_eq!(RunResult::from_word(""), None);
    }

    #[test]
    fn normalized_words_round_trip() {
        for r in ALL_RESULTS {
            assert_eq!(RunResult::from_normalized(r.as_str()), Some(r));
            assert_eq!(RunResult::from_word(r.as_str()), Some(r));
        }
    }
}
