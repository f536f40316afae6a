//! The state of a run reported in several CI steps (`begin`, `step`…, `end`): a small JSON file
//! in the job's workspace, rewritten atomically after each step.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cistern_core::RunResult;
use serde::{Deserialize, Serialize};

use super::payload::{JobRun, RunHeader, SeiRun, SeiStage};
use super::spool::{write_atomically, SpoolError};

/// The default state file, in the current directory (the job's workspace).
pub const DEFAULT_FILE: &str = ".cistern-report.json";

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed.
    #[error("reading the report state {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not a report state.
    #[error("{} is not a cistern report state ({reason}); remove it to start over", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing failed.
    #[error("writing the report state: {0}")]
    Write(#[from] SpoolError),
}

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Format version.
    pub version: u32,
    /// Who, where, which commit: as `begin` saw it.
    pub header: RunHeader,
    /// When `begin` ran, epoch milliseconds.
    pub started_at_ms: i64,
    /// Stages in the order they first appeared.
    pub stages: Vec<StageState>,
}

/// A stage and its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageState {
    /// Name.
    pub name: String,
    /// Steps, in order.
    pub steps: Vec<StepState>,
}

/// One finished step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Name.
    pub name: String,
    /// Result.
    pub result: RunResult,
    /// Start, epoch milliseconds.
    pub started_at_ms: i64,
    /// Duration, milliseconds.
    pub duration_ms: i64,
    /// The command's exit code.
    pub exit_code: i32,
    /// The tail of its output, kept only when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The output was longer than the tail.
    #[serde(default)]
    pub log_truncated: bool,
}

impl RunState {
    /// A run that starts now.
    pub fn new(header: RunHeader, started_at_ms: i64) -> Self {
        Self {
            version: 1,
            header,
            started_at_ms,
            stages: Vec::new(),
        }
    }

    /// The state at `path`, or `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Writes the state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        write_atomically(path, &bytes)?;
        Ok(())
    }

    /// Deletes the state file (already gone is fine).
    pub fn remove(path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Adds a finished step to `stage` (created at the end when new).
    pub fn add_step(&mut self, stage: &str, step: StepState) {
        match self.stages.iter_mut().find(|s| s.name == stage) {
            Some(s) => s.steps.push(step),
            None => self.stages.push(StageState {
                name: stage.to_owned(),
                steps: vec![step],
            }),
        }
    }

    /// The worst result among the steps, `None` without steps.
    pub fn steps_result(&self) -> Option<RunResult> {
        worst(self.stages.iter().flat_map(|s| &s.steps).map(|s| s.result))
    }

    /// The finished run, as posted by `end`.
    pub fn finish(self, result: RunResult, now_ms: i64) -> SeiRun {
        let stages = self
            .stages
            .into_iter()
            .map(|stage| {
                let start = stage.steps.iter().map(|s| s.started_at_ms).min();
                let end = stage
                    .steps
                    .iter()
                    .map(|s| s.started_at_ms + s.duration_ms)
                    .max();
                let start = start.unwrap_or(self.started_at_ms);
                let result = worst(stage.steps.iter().map(|s| s.result)).unwrap_or(result);
                SeiStage {
                    display_name: stage.name,
                    result,
                    state: "FINISHED",
                    duration_in_millis: end.map_or(0, |e| (e - start).max(0)),
                    start_time: start,
                    log: None,
                    log_truncated: false,
                    steps: stage
                        .steps
                        .into_iter()
                        .map(|s| SeiStage {
                            display_name: s.name,
                            result: s.result,
                            state: "FINISHED",
                            duration_in_millis: s.duration_ms,
                            start_time: s.started_at_ms,
                            log: s.log,
                            log_truncated: s.log_truncated,
                            steps: Vec::new(),
                        })
                        .collect(),
                }
            })
            .collect();
        SeiRun {
            header: self.header,
            start_time: self.started_at_ms,
            duration: (now_ms - self.started_at_ms).max(0),
            result,
            job_run: JobRun {
                stages,
                ..JobRun::default()
            },
        }
    }
}

/// How bad a result is, to pick the one a stage or run shows.
fn severity(r: RunResult) -> u8 {
    match r {
        RunResult::Aborted => 4,
        RunResult::Failure | RunResult::Error => 3,
        RunResult::Unstable => 2,
        RunResult::OnHold => 1,
        _ => 0,
    }
}

/// The worst of some results.
pub fn worst(results: impl Iterator<Item = RunResult>) -> Option<RunResult> {
    results.max_by_key(|r| severity(*r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::env::detect_with;
    use crate::report::payload::HeaderOptions;

    fn step(name: &str, result: RunResult, at: i64) -> StepState {
        StepState {
            name: name.into(),
            result,
            started_at_ms: at,
            duration_ms: 10,
            exit_code: i32::from(result != RunResult::Success),
            log: (result != RunResult::Success).then(|| "boom\n".into()),
            log_truncated: false,
        }
    }

    #[test]
    fn steps_group_into_stages_and_round_trip() {
        let header = RunHeader::new(&detect_with(&|_| None), &HeaderOptions::default(), || {
            "generic-x".into()
        });
        let mut st = RunState::new(header, 1_000);
        st.add_step("build", step("compile", RunResult::Success, 1_010));
        st.add_step("test", step("unit", RunResult::Failure, 1_030));
        st.add_step("test", step("lint", RunResult::Success, 1_050));
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(DEFAULT_FILE);
        st.save(&path).unwrap();
        let back = RunState::load(&path).unwrap().unwrap();
        assert_eq!(back, st);
        assert_eq!(back.steps_result(), Some(RunResult::Failure));
        let run = back.finish(RunResult::Failure, 1_100);
        assert_eq!(run.duration, 100);
        let names: Vec<_> = run
            .job_run
            .stages
            .iter()
            .map(|s| (s.display_name.as_str(), s.steps.len(), s.result))
            .collect();
        assert_eq!(
            names,
            vec![
                ("build", 1, RunResult::Success),
                ("test", 2, RunResult::Failure)
            ]
        );
        assert_eq!(run.job_run.stages[1].start_time, 1_030);
        assert_eq!(run.job_run.stages[1].duration_in_millis, 30);
        RunState::remove(&path).unwrap();
        assert_eq!(RunState::load(&path).unwrap(), None);
    }

    #[test]
    fn a_foreign_file_is_not_a_state() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.json");
        fs::write(&path, "{\"hello\": 1}").unwrap();
        assert!(matches!(
            RunState::load(&path),
            Err(StateError::Corrupt { .. })
        ));
    }
}
