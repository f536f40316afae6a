//! What the reporter posts: runs in the Harness SEI dialect (`POST /v1/custom-cicd`), and the
//! endpoint that a prepared payload of another dialect belongs to.

use cistern_core::RunResult;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::env::CiContext;

/// The SEI endpoint every run report goes to.
pub const SEI_ENDPOINT: &str = "/v1/custom-cicd";
/// The Jenkins Job Reporter (Propelo) endpoint.
pub const PROPELO_ENDPOINT: &str = "/v1/generic-requests";

/// Everything about a run that is known before it finishes: who runs it, where, for which
/// commit. `begin` keeps it in the state file so that `end` reports what `begin` saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    /// Pipeline display name.
    pub pipeline: String,
    /// Pipeline full name (the hub's identity of the pipeline, with the instance).
    pub job_full_name: String,
    /// Same as the full name.
    pub qualified_name: String,
    /// The CI kind.
    pub instance_name: String,
    /// Derived from the CI kind and server URL.
    pub instance_guid: String,
    /// The CI server's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    /// The CI kind again, as the hub's instance type.
    pub instance_type: String,
    /// The run's identity at the hub, stable across retries of this report.
    pub execution_id: String,
    /// The CI's run number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_number: Option<i64>,
    /// Branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_name: Option<String>,
    /// Repository URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// The commit built.
    #[serde(default)]
    pub scm_commit_ids: Vec<String>,
    /// Who triggered the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Link to the run's page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    /// A CI run (false for deployments).
    pub ci: bool,
    /// A deployment.
    pub cd: bool,
    /// Target environment of a deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// What the command line adds to (and overrides in) the detected context.
#[derive(Debug, Clone, Default)]
pub struct HeaderOptions {
    /// `--pipeline`.
    pub pipeline: Option<String>,
    /// `--cd`.
    pub cd: bool,
    /// `--environment`.
    pub environment: Option<String>,
    /// Used when neither the CI nor the options name the pipeline.
    pub fallback_pipeline: String,
}

impl RunHeader {
    /// The header from the detected context and the options; `new_id` makes an execution id when
    /// the CI gives no run id.
    pub fn new(ctx: &CiContext, opts: &HeaderOptions, new_id: impl FnOnce() -> String) -> Self {
        let (pipeline, full_name) = match &opts.pipeline {
            Some(p) => (p.clone(), p.clone()),
            None => {
                let name = ctx
                    .pipeline
                    .clone()
                    .unwrap_or_else(|| opts.fallback_pipeline.clone());
                let full = ctx.full_name.clone().unwrap_or_else(|| name.clone());
                (name, full)
            }
        };
        let cd = opts.cd || ctx.cd;
        Self {
            pipeline,
            qualified_name: full_name.clone(),
            job_full_name: full_name,
            instance_name: ctx.kind.as_str().to_owned(),
            instance_guid: ctx.instance_guid(),
            instance_url: ctx.server_url.clone(),
            instance_type: ctx.kind.as_str().to_owned(),
            execution_id: ctx.execution_id().unwrap_or_else(new_id),
            build_number: ctx.build_number,
            branch_name: ctx.branch.clone(),
            repo_url: ctx.repo_url.clone(),
            scm_commit_ids: ctx.commit.iter().cloned().collect(),
            user_id: ctx.triggered_by.clone(),
            web_url: ctx.run_url.clone(),
            ci: !cd,
            cd,
            environment: opts.environment.clone().or_else(|| ctx.environment.clone()),
        }
    }

    /// Applies options given later (to `end`) over the header `begin` made.
    pub fn apply(&mut self, opts: &HeaderOptions) {
        if let Some(p) = &opts.pipeline {
            self.pipeline = p.clone();
            self.job_full_name = p.clone();
            self.qualified_name = p.clone();
        }
        if opts.cd {
            self.cd = true;
            self.ci = false;
        }
        if let Some(e) = &opts.environment {
            self.environment = Some(e.clone());
        }
    }
}

/// A finished run in the SEI dialect.
#[derive(Debug, Clone, Serialize)]
pub struct SeiRun {
    /// Identity and context.
    #[serde(flatten)]
    pub header: RunHeader,
    /// Start, epoch milliseconds.
    pub start_time: i64,
    /// Duration, milliseconds.
    pub duration: i64,
    /// `success`, `failure`, `aborted`…
    pub result: RunResult,
    /// Stages and the run-level failure log.
    #[serde(skip_serializing_if = "JobRun::is_empty")]
    pub job_run: JobRun,
}

/// `job_run`: stages with steps, or a run-level log for a run without stages.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobRun {
    /// The tail of the output of a failed run without stages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The output was longer than the tail kept.
    #[serde(skip_serializing_if = "is_false")]
    pub log_truncated: bool,
    /// Stages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<SeiStage>,
}

impl JobRun {
    fn is_empty(&self) -> bool {
        self.log.is_none() && self.stages.is_empty()
    }
}

/// A stage (or a step: steps have no steps), in Blue Ocean's field names as SEI takes them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeiStage {
    /// Name.
    pub display_name: String,
    /// Result.
    pub result: RunResult,
    /// Always `FINISHED`: the reporter sends finished work only.
    pub state: &'static str,
    /// Duration, milliseconds.
    pub duration_in_millis: i64,
    /// Start, epoch milliseconds.
    pub start_time: i64,
    /// The tail of the output when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The output was longer than the tail kept.
    #[serde(rename = "log_truncated", skip_serializing_if = "is_false")]
    pub log_truncated: bool,
    /// Steps of a stage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<SeiStage>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Most log bytes one report carries in all: the hub refuses bodies over 5 MiB by default, and
/// JSON escaping adds a little.
pub const LOG_BUDGET: usize = 3 * 1024 * 1024;

impl SeiRun {
    /// Cuts every log to an equal share of `budget` when together they exceed it (keeping each
    /// tail, where the error is), so that many failed steps still make one acceptable report.
    pub fn fit_logs(&mut self, budget: usize) {
        let mut logs: Vec<(&mut String, &mut bool)> = Vec::new();
        if let Some(l) = self.job_run.log.as_mut() {
            logs.push((l, &mut self.job_run.log_truncated));
        }
        for stage in &mut self.job_run.stages {
            if let Some(l) = stage.log.as_mut() {
                logs.push((l, &mut stage.log_truncated));
            }
            for step in &mut stage.steps {
                if let Some(l) = step.log.as_mut() {
                    logs.push((l, &mut step.log_truncated));
                }
            }
        }
        let total: usize = logs.iter().map(|(l, _)| l.len()).sum();
        if total <= budget || logs.is_empty() {
            return;
        }
        let share = budget / logs.len();
        for (log, truncated) in logs {
            if log.len() > share {
                let mut start = log.len() - share;
                while !log.is_char_boundary(start) {
                    start += 1;
                }
                log.drain(..start);
                *truncated = true;
            }
        }
    }
}

/// Which dialect a prepared payload is in, and so where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// Harness SEI custom CI/CD (object or `{request_type, payload}` envelope).
    Sei,
    /// The Jenkins Job Reporter's `{request_type: JenkinsPluginJobRunComplete, payload}` envelope.
    Propelo,
    /// Allstacks custom CD job (`job_id`, `commit_sha`, `service_id`…).
    Allstacks,
}

impl Dialect {
    /// Recognises a payload: a Jenkins `request_type` envelope → Propelo; an object with
    /// `job_id`, `commit_sha` and `service_id` → Allstacks; anything else → SEI (whose endpoint
    /// explains field by field what it cannot read).
    pub fn detect(body: &Value) -> Dialect {
        let mut v = body;
        if let Some(inner) = v.get("data").filter(|d| d.is_object()) {
            if v.as_object().is_some_and(|m| m.len() == 1) {
                v = inner;
            }
        }
        if let Some(rt) = v.get("request_type").and_then(Value::as_str) {
            if rt.starts_with("Jenkins") || rt == "pluginErrorReport" {
                return Dialect::Propelo;
            }
        }
        let allstacks = |o: &Value| {
            ["job_id", "commit_sha", "service_id"]
                .iter()
                .all(|k| o.get(k).is_some())
        };
        if allstacks(v) || v.as_array().is_some_and(|a| a.iter().any(allstacks)) {
            return Dialect::Allstacks;
        }
        Dialect::Sei
    }

    /// The hub path for this dialect; Allstacks paths name the tenant (its "company").
    pub fn endpoint(self, tenant: &str) -> String {
        match self {
            Dialect::Sei => SEI_ENDPOINT.to_owned(),
            Dialect::Propelo => PROPELO_ENDPOINT.to_owned(),
            Dialect::Allstacks => format!("/webhook/company/{tenant}/cicd_job"),
        }
    }
}

/// The `Authorization` scheme each endpoint's original senders use (the hub takes any).
pub fn auth_scheme(endpoint: &str) -> &'static str {
    if endpoint.starts_with("/webhook/") {
        "Bearer"
    } else if endpoint.starts_with(PROPELO_ENDPOINT) {
        "Apikey"
    } else {
        "ApiKey"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::env::detect_with;

    #[test]
    fn dialects_are_recognised() {
        let sei = json!({"pipeline": "p", "result": "success"});
        assert_eq!(Dialect::detect(&sei), Dialect::Sei);
        let env = json!({"request_type": "CICD", "payload": "{}"});
        assert_eq!(Dialect::detect(&env), Dialect::Sei);
        let jenkins = json!({"request_type": "JenkinsPluginJobRunComplete", "payload": "{}"});
        assert_eq!(Dialect::detect(&jenkins), Dialect::Propelo);
        let wrapped = json!({"data": {"request_type": "JenkinsHeartbeat", "payload": {}}});
        assert_eq!(Dialect::detect(&wrapped), Dialect::Propelo);
        let allstacks = json!({"job_id": "1", "commit_sha": "a", "service_id": 2});
        assert_eq!(Dialect::detect(&allstacks), Dialect::Allstacks);
        assert_eq!(
            Dialect::Allstacks.endpoint("acme"),
            "/webhook/company/acme/cicd_job"
        );
        assert_eq!(auth_scheme("/webhook/company/acme/cicd_job"), "Bearer");
        assert_eq!(auth_scheme(PROPELO_ENDPOINT), "Apikey");
        assert_eq!(auth_scheme(SEI_ENDPOINT), "ApiKey");
    }

    #[test]
    fn a_failed_run_serializes_as_sei() {
        let ctx = detect_with(&|_| None);
        let opts = HeaderOptions {
            pipeline: Some("nightly".into()),
            cd: true,
            environment: Some("prod".into()),
            fallback_pipeline: "x".into(),
        };
        let header = RunHeader::new(&ctx, &opts, || "generic-1".into());
        let run = SeiRun {
            header,
            start_time: 1_711_603_545_000,
            duration: 1500,
            result: RunResult::Failure,
            job_run: JobRun {
                stages: vec![SeiStage {
                    display_name: "test".into(),
                    result: RunResult::Failure,
                    state: "FINISHED",
                    duration_in_millis: 1400,
                    start_time: 1_711_603_545_050,
                    log: Some("boom\n".into()),
                    log_truncated: true,
                    steps: Vec::new(),
                }],
                ..JobRun::default()
            },
        };
        let v = serde_json::to_value(&run).unwrap();
        assert_eq!(v["pipeline"], "nightly");
        assert_eq!(v["job_full_name"], "nightly");
        assert_eq!(v["instance_name"], "generic");
        assert_eq!(v["execution_id"], "generic-1");
        assert_eq!(v["result"], "failure");
        assert_eq!(v["cd"], true);
        assert_eq!(v["ci"], false);
        assert_eq!(v["environment"], "prod");
        let stage = &v["job_run"]["stages"][0];
        assert_eq!(stage["displayName"], "test");
        assert_eq!(stage["durationInMillis"], 1400);
        assert_eq!(stage["log_truncated"], true);
        assert!(stage.get("steps").is_none());
        assert!(v["job_run"].get("log").is_none());
    }

    #[test]
    fn logs_share_the_budget() {
        let ctx = detect_with(&|_| None);
        let header = RunHeader::new(&ctx, &HeaderOptions::default(), || "x".into());
        let stage = |log: &str| SeiStage {
            display_name: "s".into(),
            result: RunResult::Failure,
            state: "FINISHED",
            duration_in_millis: 1,
            start_time: 1,
            log: Some(log.into()),
            log_truncated: false,
            steps: Vec::new(),
        };
        let mut run = SeiRun {
            header,
            start_time: 1,
            duration: 1,
            result: RunResult::Failure,
            job_run: JobRun {
                stages: vec![stage("aaaaaaaaaaend1"), stage("end2")],
                ..JobRun::default()
            },
        };
        run.fit_logs(12);
        assert_eq!(run.job_run.stages[0].log.as_deref(), Some("aaend1"));
        assert!(run.job_run.stages[0].log_truncated);
        assert_eq!(run.job_run.stages[1].log.as_deref(), Some("end2"));
        assert!(!run.job_run.stages[1].log_truncated);
    }
}
