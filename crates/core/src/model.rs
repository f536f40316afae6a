//! The normalized run: what every dialect produces ([`RunReport`]) and what the API shows ([`Run`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::RunResult;

/// The CI/CD system (a Jenkins, a GitLab, a custom CD agent…) that ran a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InstanceRef {
    /// The sender's identifier for the instance (a GUID for SEI senders).
    pub guid: String,
    /// Human-readable name.
    pub name: Option<String>,
    /// Base URL of the instance.
    pub url: Option<String>,
    /// What kind of system it is (`jenkins`, `custom`, `custom-cd`, …).
    pub kind: Option<String>,
}

/// The pipeline (job) a run belongs to; identified by its full name within an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PipelineRef {
    /// The full, unique name within the instance (`job_full_name`).
    pub full_name: String,
    /// Display name (`pipeline`). Empty in a partial report whose sender did not name the
    /// pipeline (a GitHub `workflow_job` without `workflow_name`): the store attaches such a
    /// report to the run of the same key, instance and source, whatever its pipeline.
    pub name: String,
    /// Qualified name (`qualified_name`).
    pub qualified_name: Option<String>,
    /// Project the pipeline belongs to.
    pub project: Option<String>,
    /// Module within the project.
    pub module: Option<String>,
}

/// A commit the run built or deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// The commit id as the sender gave it.
    pub sha: String,
    /// When the commit was made, where the payload says so.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub committed_at: Option<OffsetDateTime>,
}

/// A parameter of the run (`job_run_params` / `execution_parameters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Parameter name.
    pub name: String,
    /// The value exactly as sent (string, number, boolean…).
    pub value: Value,
    /// The sender's type name (`StringParameterValue`, …).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// The declared type of a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomFieldType {
    /// Free text.
    String,
    /// Whole number.
    Integer,
    /// Decimal number.
    Float,
    /// Whole number of seconds.
    Duration,
    /// Seconds since the epoch.
    Timestamp,
}

/// A typed, user-defined field of a run (Allstacks `optional`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomField {
    /// Field name, unique within the run.
    pub key: String,
    /// Declared type.
    #[serde(rename = "type")]
    pub kind: CustomFieldType,
    /// A value of the declared type, or a list of them.
    pub value: Value,
}

/// A text log kept with a run, stage or step (the tail when it was too long).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogText {
    /// The kept text.
    pub text: String,
    /// True when the beginning was cut to respect the cap.
    pub truncated: bool,
}

impl LogText {
    /// Keeps at most `cap` bytes of `text`, from the end (where errors usually are), on a
    /// character boundary. NUL characters (binary output in a log) become U+FFFD: no store
    /// keeps them in text (PostgreSQL refuses them), and both stores keep the same text.
    pub fn capped(text: &str, cap: usize) -> Self {
        let clean = |t: &str| {
            if t.contains('\0') {
                t.replace('\0', "\u{FFFD}")
            } else {
                t.to_owned()
            }
        };
        if text.len() <= cap {
            return Self {
                text: clean(text),
                truncated: false,
            };
        }
        let mut start = text.len() - cap;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        Self {
            text: clean(&text[start..]),
            truncated: true,
        }
    }
}

/// A stage of a run, or a step of a stage (steps have no steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stage {
    /// Display name.
    pub name: String,
    /// Longer description.
    pub description: Option<String>,
    /// Normalized result, when known.
    pub result: Option<RunResult>,
    /// The sender's word for the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_result: Option<String>,
    /// The sender's state word (`completed`, `FINISHED`, `RUNNING`…).
    pub state: Option<String>,
    /// Start time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Duration in milliseconds.
    pub duration_ms: Option<i64>,
    /// Failure log (tail), when the sender gave one.
    pub log: Option<String>,
    /// True when the log was cut to its tail.
    pub log_truncated: bool,
    /// A link to the full log or the stage's page, when the sender gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Steps of a stage; always empty for a step.
    #[serde(default)]
    pub steps: Vec<Stage>,
}

/// One report of a run, as a dialect parsed it: everything needed to create or update the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The instance that ran it.
    pub instance: InstanceRef,
    /// The pipeline it is a run of.
    pub pipeline: PipelineRef,
    /// The run's identity within its pipeline (execution id, else build number, else derived).
    pub run_key: String,
    /// Build number.
    pub build_number: Option<i64>,
    /// The sender's execution id.
    pub execution_id: Option<String>,
    /// Normalized result.
    pub result: RunResult,
    /// The sender's word for the result.
    pub source_result: String,
    /// Start time.
    pub started_at: OffsetDateTime,
    /// End time, when finished.
    pub finished_at: Option<OffsetDateTime>,
    /// Duration in milliseconds.
    pub duration_ms: Option<i64>,
    /// Who or what triggered it.
    pub triggered_by: Option<String>,
    /// Branch built.
    pub branch: Option<String>,
    /// Repository URL.
    pub repo_url: Option<String>,
    /// Repository name or id, when the sender names it without a URL (Allstacks `repo_name`/`repo_id`).
    pub repo: Option<String>,
    /// Commits built or deployed.
    pub commits: Vec<Commit>,
    /// A CI run.
    pub ci: bool,
    /// A CD run (a deployment).
    pub cd: bool,
    /// Target environment of a deployment.
    pub environment: Option<String>,
    /// Change-failure flag set by the sender.
    pub cfr_status: Option<bool>,
    /// Parameters.
    pub params: Vec<Param>,
    /// Artifacts, as the sender described them (input, output, type, location, name, qualifier, hash, metadata).
    pub artifacts: Vec<Value>,
    /// Trigger chain (causes), as sent.
    pub trigger_chain: Vec<Value>,
    /// Theme names.
    pub themes: Vec<String>,
    /// Link to the run's page.
    pub web_url: Option<String>,
    /// The sender's job type (Allstacks `job_type`).
    pub job_type: Option<String>,
    /// Typed custom fields.
    pub custom_fields: Vec<CustomField>,
    /// Stages with their steps.
    pub stages: Vec<Stage>,
    /// Run-level log, for runs without stages.
    pub log: Option<LogText>,
    /// Which dialect reported it (`sei`, `propelo`, `allstacks`, …).
    pub source: String,
    /// True when the report carries only part of the run (one GitHub job, one GitLab job, a
    /// start event): the store merges it into the run it names instead of replacing the run —
    /// stages are matched by name, absent fields keep their stored value.
    pub partial: bool,
}

/// A job's configuration changed (the Jenkins Job Reporter's `JenkinsPluginJobConfigChange`):
/// recorded on the job's pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfigChange {
    /// The instance the job lives on.
    pub instance: InstanceRef,
    /// The job's pipeline.
    pub pipeline: PipelineRef,
    /// `created`, `changed`, `renamed` or `deleted`, as sent.
    pub change_type: Option<String>,
    /// When the configuration changed.
    pub changed_at: OffsetDateTime,
    /// Who changed it.
    pub user: Option<String>,
}

/// An incident opened or resolved on a service (CDEvents `incident.*`), kept for the change
/// failure rate and time to restore.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentReport {
    /// The sender's incident id (with `source`, its identity).
    pub id: String,
    /// Where it came from (CloudEvents `source`).
    pub source: String,
    /// The service or pipeline it concerns, when named.
    pub service: Option<String>,
    /// Environment.
    pub environment: Option<String>,
    /// Detected / reported time.
    pub detected_at: Option<OffsetDateTime>,
    /// Resolved time.
    pub resolved_at: Option<OffsetDateTime>,
    /// Description.
    pub description: Option<String>,
    /// Link.
    pub url: Option<String>,
}

/// A pipeline as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineView {
    /// Pipeline id.
    pub id: String,
    /// Full name.
    pub full_name: String,
    /// Display name.
    pub name: String,
    /// Qualified name.
    pub qualified_name: Option<String>,
    /// Project.
    pub project: Option<String>,
    /// Module.
    pub module: Option<String>,
}

/// An instance as shown inside a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The instance GUID.
    pub guid: String,
    /// Name.
    pub name: Option<String>,
    /// URL.
    pub url: Option<String>,
    /// Kind.
    pub kind: Option<String>,
}

/// A stored run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Run id.
    pub id: String,
    /// The pipeline.
    pub pipeline: PipelineView,
    /// The instance.
    pub instance: InstanceView,
    /// Identity within the pipeline.
    pub run_key: String,
    /// Build number.
    pub build_number: Option<i64>,
    /// Execution id.
    pub execution_id: Option<String>,
    /// Normalized result.
    pub result: RunResult,
    /// The sender's word.
    pub source_result: String,
    /// Start.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// End.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Duration in ms.
    pub duration_ms: Option<i64>,
    /// Trigger.
    pub triggered_by: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// Repository.
    pub repo_url: Option<String>,
    /// Repository name or id.
    pub repo: Option<String>,
    /// Commits.
    pub commits: Vec<Commit>,
    /// CI flag.
    pub ci: bool,
    /// CD flag.
    pub cd: bool,
    /// Environment.
    pub environment: Option<String>,
    /// Change-failure flag.
    pub cfr_status: Option<bool>,
    /// Parameters.
    pub params: Vec<Param>,
    /// Artifacts.
    pub artifacts: Vec<Value>,
    /// Trigger chain.
    pub trigger_chain: Vec<Value>,
    /// Themes.
    pub themes: Vec<String>,
    /// Link to the run.
    pub web_url: Option<String>,
    /// Job type.
    pub job_type: Option<String>,
    /// Custom fields.
    pub custom_fields: Vec<CustomField>,
    /// Stages (empty in list replies).
    pub stages: Vec<Stage>,
    /// Run-level log.
    pub log: Option<String>,
    /// True when the run-level log was cut.
    pub log_truncated: bool,
    /// Dialect that reported it.
    pub source: String,
    /// Id of the inbound event that last wrote it.
    pub event_id: Option<String>,
    /// First received.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Last updated.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Milliseconds since the Unix epoch of a time.
pub fn to_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The time at `ms` milliseconds since the Unix epoch (clamped to the representable range).
pub fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_log_keeps_the_tail_on_a_char_boundary() {
        let log = LogText::capped("ééé error here", 9);
        assert!(log.truncated);
        assert!(log.text.ends_with("error here") || log.text.ends_with("here"));
        assert!(log.text.len() <= 9);
        let short = LogText::capped("ok", 10);
        assert!(!short.truncated);
        assert_eq!(short.text, "ok");
    }

    #[test]
    fn millis_round_trip() {
        let t = from_millis(1_679_467_494_123);
        assert_eq!(to_millis(t), 1_679_467_494_123);
    }
}
