//! The Propelo `generic-requests` envelope spoken by the Jenkins Job Reporter plugin (seed 001):
//! `{"request_type": …, "payload": "<JSON string>"}` with request types
//! `JenkinsPluginJobRunComplete`, `JenkinsPluginJobConfigChange`, `JenkinsHeartbeat` and
//! `pluginErrorReport`.

use cistern_core::{
    FieldError, InstanceRef, JobConfigChange, PipelineRef, RunReport, RunResult, Stage,
};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::fields::{type_name, Errors, Obj};
use crate::sei::{self, Flavor};
use crate::{json, times, ParseOptions, Rejection};

/// The request types this endpoint answers.
pub const REQUEST_TYPES: [&str; 4] = [
    "JenkinsPluginJobRunComplete",
    "JenkinsPluginJobConfigChange",
    "JenkinsHeartbeat",
    "pluginErrorReport",
];

/// A Jenkins instance saying it is alive.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The instance GUID.
    pub instance_guid: String,
    /// When the plugin sent it.
    pub at: OffsetDateTime,
    /// Instance name, when given.
    pub name: Option<String>,
    /// Instance URL, when given.
    pub url: Option<String>,
    /// The `details` object as sent (versions, config time).
    pub details: Value,
}

/// What a generic request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum PropeloItem {
    /// A finished job run.
    JobRun(Box<RunReport>),
    /// A job's configuration changed.
    JobConfigChange(Box<JobConfigChange>),
    /// A heartbeat.
    Heartbeat(Heartbeat),
    /// An error the plugin reports about itself, kept for the user to see.
    PluginErrorReport(Value),
}

/// A parsed generic request.
#[derive(Debug, Clone, PartialEq)]
pub struct PropeloRequest {
    /// The request type, as sent.
    pub request_type: String,
    /// What it carries.
    pub item: PropeloItem,
}

/// Reads the request type of an envelope without judging the rest (for replies and logs).
pub fn request_type_of(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(m) => m
            .get("request_type")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Parses a generic-request envelope.
pub fn parse(body: &[u8], opts: &ParseOptions) -> Result<PropeloRequest, Rejection> {
    let value = json::parse(body, "").map_err(Rejection::Malformed)?;
    let Value::Object(mut env) = value else {
        return Err(Rejection::Invalid(vec![FieldError::new(
            "",
            format!(
                "the body must be a JSON object {{\"request_type\", \"payload\"}}, got {}",
                type_name(&value)
            ),
        )]));
    };
    let request_type = match env.get("request_type") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(other) if !other.is_null() => {
            return Err(invalid(
                "request_type",
                format!("must be a string, got {}", type_name(other)),
            ))
        }
        _ => {
            return Err(invalid(
                "request_type",
                format!(
                    "is required; supported request types: {}",
                    REQUEST_TYPES.join(", ")
                ),
            ))
        }
    };
    let payload = match env.remove("payload") {
        Some(Value::String(s)) => {
            json::parse(s.as_bytes(), "payload").map_err(Rejection::Malformed)?
        }
        Some(Value::Null) | None => {
            return Err(invalid(
                "payload",
                "is required (a JSON object, or a string holding one)",
            ))
        }
        Some(other) => other,
    };
    let item = match request_type.as_str() {
        "JenkinsPluginJobRunComplete" => {
            PropeloItem::JobRun(Box::new(job_run(payload_object(payload)?, opts)?))
        }
        "JenkinsPluginJobConfigChange" => {
            PropeloItem::JobConfigChange(Box::new(config_change(payload_object(payload)?, opts)?))
        }
        "JenkinsHeartbeat" => PropeloItem::Heartbeat(heartbeat(payload_object(payload)?, opts)?),
        "pluginErrorReport" => PropeloItem::PluginErrorReport(payload),
        other => {
            return Err(invalid(
                "request_type",
                format!(
                    "unsupported request type {:?}; supported request types: {}",
                    crate::fields::truncate(other, 60),
                    REQUEST_TYPES.join(", ")
                ),
            ))
        }
    };
    Ok(PropeloRequest { request_type, item })
}

fn invalid(field: &str, message: impl Into<String>) -> Rejection {
    Rejection::Invalid(vec![FieldError::new(field, message)])
}

fn payload_object(v: Value) -> Result<Map<String, Value>, Rejection> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(invalid(
            "payload",
            format!(
                "must be a JSON object or a string holding one, got {}",
                type_name(&other)
            ),
        )),
    }
}

fn job_run(payload: Map<String, Value>, opts: &ParseOptions) -> Result<RunReport, Rejection> {
    let obj = Obj::new(&payload, "payload");
    let mut errs = Errors::default();
    let report = sei::run_from_object(&obj, opts, Flavor::Propelo, &mut errs);
    let children = child_runs(&obj, opts, &mut errs);
    match report {
        Some(mut r) if errs.is_empty() => {
            r.stages.extend(children);
            if r.instance.kind.is_none() {
                r.instance.kind = Some("jenkins".into());
            }
            Ok(r)
        }
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

/// Downstream job runs (`job_run.child_job_runs`) become stages of the parent run, their own
/// stages its steps, so a fan-out pipeline reads as one timeline.
fn child_runs(obj: &Obj<'_>, opts: &ParseOptions, errs: &mut Errors) -> Vec<Stage> {
    let Some(job_run) = obj.get("job_run").and_then(Value::as_object) else {
        return Vec::new();
    };
    let jr = Obj::new(job_run, obj.path("job_run"));
    let Some(children) = jr.opt_array("child_job_runs", errs) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, child) in children.iter().enumerate() {
        let path = format!("{}[{i}]", jr.path("child_job_runs"));
        let Value::Object(m) = child else {
            errs.push(path, format!("must be an object, got {}", type_name(child)));
            continue;
        };
        let c = Obj::new(m, path.clone());
        let mut renamed = m.clone();
        if !renamed.contains_key("displayName") {
            let name = c
                .opt_str_any(&["name", "pipeline", "job_normalized_full_name"], errs)
                .unwrap_or_else(|| format!("child job {}", i + 1));
            renamed.insert("displayName".into(), Value::String(name));
        }
        let stages = renamed.remove("stages");
        let Some(mut stage) = sei::stage_of(&Value::Object(renamed), &path, false, opts, errs)
        else {
            continue;
        };
        if let Some(Value::Array(items)) = stages {
            for (j, s) in items.iter().enumerate() {
                if let Some(step) =
                    sei::stage_of(s, &format!("{path}.stages[{j}]"), false, opts, errs)
                {
                    stage.steps.push(step);
                }
            }
        }
        out.push(stage);
    }
    out
}

/// The plugin's JobConfigChangeRequest: the job named as in its job runs (so the change lands
/// on the same pipeline), the instance, `change_type` and `change_time` (epoch milliseconds).
fn config_change(
    payload: Map<String, Value>,
    opts: &ParseOptions,
) -> Result<JobConfigChange, Rejection> {
    let obj = Obj::new(&payload, "payload");
    let mut errs = Errors::default();
    let full_name = sei::req_alias(
        &obj,
        "job_full_name",
        &["job_normalized_full_name"],
        &mut errs,
    );
    let name = obj
        .opt_str_any(&["pipeline", "job_name"], &mut errs)
        .or_else(|| full_name.clone());
    let qualified_name = obj
        .opt_str_any(&["qualified_name", "job_normalized_full_name"], &mut errs)
        .or_else(|| full_name.clone());
    let guid = sei::req_alias(&obj, "jenkins_instance_guid", &["instance_guid"], &mut errs);
    let instance_name = obj.opt_str_any(&["jenkins_instance_name", "instance_name"], &mut errs);
    let instance_url = obj.opt_str_any(&["jenkins_instance_url", "instance_url"], &mut errs);
    let module = obj.opt_str("module_name", &mut errs);
    let change_type = obj.opt_str("change_type", &mut errs);
    let user = obj.opt_str_any(&["user_id", "users_name"], &mut errs);
    let changed_at = obj
        .req_int("change_time", "epoch milliseconds", &mut errs)
        .and_then(|ms| match times::check_epoch_ms(ms, opts.now) {
            Ok(t) => Some(t),
            Err(m) => {
                errs.push(obj.path("change_time"), m);
                None
            }
        });
    match (full_name, name, guid, changed_at) {
        (Some(full_name), Some(name), Some(guid), Some(changed_at)) if errs.is_empty() => {
            Ok(JobConfigChange {
                instance: InstanceRef {
                    guid,
                    name: instance_name,
                    url: instance_url,
                    kind: Some("jenkins".into()),
                },
                pipeline: PipelineRef {
                    full_name,
                    name,
                    qualified_name,
                    project: None,
                    module,
                },
                change_type,
                changed_at,
                user,
            })
        }
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

fn heartbeat(payload: Map<String, Value>, opts: &ParseOptions) -> Result<Heartbeat, Rejection> {
    let obj = Obj::new(&payload, "payload");
    let mut errs = Errors::default();
    let guid = obj.req_str("instance_id", &mut errs);
    let at = match obj.get("timestamp") {
        None => Some(opts.now),
        Some(_) => obj
            .opt_int("timestamp", "epoch seconds or milliseconds", &mut errs)
            .and_then(|t| {
                // The plugin sends seconds; accept milliseconds too.
                let r = if t > 100_000_000_000 {
                    times::check_epoch_ms(t, opts.now)
                } else {
                    times::check_epoch_seconds(t, opts.now)
                };
                match r {
                    Ok(t) => Some(t),
                    Err(m) => {
                        errs.push("payload.timestamp", m);
                        None
                    }
                }
            }),
    };
    let details = match obj.get("details") {
        None => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(other) => {
            errs.push(
                "payload.details",
                format!("must be an object, got {}", type_name(other)),
            );
            Value::Null
        }
    };
    let d = details.as_object().map(|m| Obj::new(m, "payload.details"));
    let name = d
        .as_ref()
        .and_then(|d| d.opt_str("jenkins_instance_name", &mut errs));
    let url = d
        .as_ref()
        .and_then(|d| d.opt_str("jenkins_instance_url", &mut errs));
    match (guid, at) {
        (Some(instance_guid), Some(at)) if errs.is_empty() => Ok(Heartbeat {
            instance_guid,
            at,
            name,
            url,
            details,
        }),
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

/// The result words the Jenkins plugin sends, for documentation and tests.
pub fn jenkins_result(word: &str) -> Option<RunResult> {
    RunResult::from_word(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParseOptions {
        ParseOptions::new(1 << 20)
    }

    fn plugin_payload() -> Value {
        serde_json::json!({
            "job_name": "Pipe3", "user_id": "admin", "job_run_params": [{"type": "StringParameterValue", "name": "env", "value": "qa"}],
            "repo_url": "https://github.com/acme/app.git", "scm_user_id": "dev1", "start_time": 1_700_000_000_000i64,
            "result": "FAILURE", "duration": 42_000, "build_number": 17,
            "jenkins_instance_guid": "0b5e0a54-1111-4222-8333-944455556666", "jenkins_instance_name": "Jenkins",
            "jenkins_instance_url": "https://jenkins.acme.com/", "job_full_name": "folder/Pipe3",
            "job_normalized_full_name": "folder/Pipe3", "branch_name": "main", "module_name": null,
            "scm_commit_ids": ["6ce2cfec186fbf9ae9429ad22e32e7770f1eb1fb"], "trigger_chain": [{"id": "admin", "type": "UserIdCause"}],
            "job_run": {"stages": [{"id": "6", "displayName": "Build", "result": "FAILURE", "state": "FINISHED",
                "durationInMillis": 1000, "startTime": "2023-11-14T22:13:20.000+0000", "log": "uuid-stage",
                "steps": [{"id": "7", "displayName": "make", "result": "FAILURE", "state": "FINISHED", "durationInMillis": 900, "log": "uuid-step"}]}]}
        })
    }

    #[test]
    fn plugin_job_run_parses() {
        let body = serde_json::json!({"request_type": "JenkinsPluginJobRunComplete", "payload": plugin_payload().to_string()});
        let req = parse(body.to_string().as_bytes(), &opts()).unwrap();
        let PropeloItem::JobRun(r) = req.item else {
            panic!()
        };
        assert_eq!(r.pipeline.name, "Pipe3");
        assert_eq!(r.pipeline.full_name, "folder/Pipe3");
        assert_eq!(r.instance.guid, "0b5e0a54-1111-4222-8333-944455556666");
        assert_eq!(r.result, RunResult::Failure);
        assert_eq!(r.stages[0].steps[0].log.as_deref(), Some("uuid-step"));
        assert_eq!(r.source, "propelo");
    }

    #[test]
    fn unknown_request_type_names_the_supported_ones() {
        let Err(Rejection::Invalid(errs)) =
            parse(br#"{"request_type": "Nope", "payload": "{}"}"#, &opts())
        else {
            panic!()
        };
        assert!(errs[0].message.contains("JenkinsHeartbeat"));
    }

    #[test]
    fn heartbeat_parses() {
        let body = serde_json::json!({"request_type": "JenkinsHeartbeat", "payload": serde_json::json!({
            "instance_id": "g-1", "timestamp": 1_700_000_000, "details": {"jenkins_version": "2.426", "plugin_version": "1.0.43"}}).to_string()});
        let req = parse(body.to_string().as_bytes(), &opts()).unwrap();
        let PropeloItem::Heartbeat(h) = req.item else {
            panic!()
        };
        assert_eq!(h.instance_guid, "g-1");
        assert_eq!(h.details["jenkins_version"], "2.426");
    }
}
