//! Harness SEI custom CI/CD job runs (seed 000): `POST /v1/custom-cicd`.
//!
//! The body is the payload object, or an envelope `{"request_type", "payload"}` (optionally inside
//! `data`) whose payload is an object or a JSON string. A body with `integration_id`, `name` and
//! `type` registers a CI/CD instance instead. `start_time` and `duration` are epoch milliseconds.
//! `job_run`, its stages and steps may say `"log_truncated": true` when the sender kept only the
//! tail of a longer log.

use cistern_core::{
    Commit, FieldError, InstanceRef, LogText, Param, PipelineRef, RunReport, RunResult, Stage,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::Duration;

use crate::fields::{type_name, Errors, Obj};
use crate::{json, times, Inbound, InstanceRegistration, ParseOptions, Rejection};

/// The envelope's request type and the payload object inside it.
pub struct Unwrapped {
    /// `request_type` of the envelope, when there was one.
    pub request_type: Option<String>,
    /// The payload object.
    pub payload: Map<String, Value>,
}

/// Reads the body and peels the envelope: a bare object, `{"request_type", "payload"}`,
/// `{"data": {…}}`, or a JSON string holding any of these.
pub fn unwrap_envelope(body: &[u8]) -> Result<Unwrapped, Rejection> {
    let value = json::parse(body, "").map_err(Rejection::Malformed)?;
    unwrap_value(value, "")
}

fn unwrap_value(value: Value, field: &str) -> Result<Unwrapped, Rejection> {
    match value {
        Value::String(s) => {
            let field = if field.is_empty() { "body" } else { field };
            let inner = json::parse(s.as_bytes(), field).map_err(Rejection::Malformed)?;
            unwrap_value(inner, field)
        }
        Value::Object(mut map) => {
            if map.len() == 1
                && matches!(map.get("data"), Some(Value::Object(_) | Value::String(_)))
            {
                let data = map.remove("data").unwrap_or(Value::Null);
                return unwrap_value(data, "data");
            }
            if map.contains_key("payload") {
                let request_type = match map.get("request_type") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => {
                        return Err(Rejection::Invalid(vec![FieldError::new(
                            "request_type",
                            format!("must be a string, got {}", type_name(other)),
                        )]))
                    }
                };
                let payload = map.remove("payload").unwrap_or(Value::Null);
                let payload = match payload {
                    Value::String(s) => {
                        json::parse(s.as_bytes(), "payload").map_err(Rejection::Malformed)?
                    }
                    other => other,
                };
                return match payload {
                    Value::Object(p) => Ok(Unwrapped {
                        request_type,
                        payload: p,
                    }),
                    other => Err(Rejection::Invalid(vec![FieldError::new(
                        "payload",
                        format!(
                            "must be a JSON object or a string holding one, got {}",
                            type_name(&other)
                        ),
                    )])),
                };
            }
            Ok(Unwrapped {
                request_type: None,
                payload: map,
            })
        }
        other => Err(Rejection::Invalid(vec![FieldError::new(
            field,
            format!("the body must be a JSON object, got {}", type_name(&other)),
        )])),
    }
}

/// Parses a `POST /v1/custom-cicd` body.
pub fn parse(body: &[u8], opts: &ParseOptions) -> Result<Vec<Inbound>, Rejection> {
    let Unwrapped { payload, .. } = unwrap_envelope(body)?;
    let obj = Obj::new(&payload, "");
    if is_registration(&obj) {
        return parse_registration(&obj).map(|r| vec![Inbound::RegisterInstance(r)]);
    }
    let mut errs = Errors::default();
    let report = run_from_object(&obj, opts, Flavor::Sei, &mut errs);
    match report {
        Some(r) if errs.is_empty() => Ok(vec![Inbound::Run(Box::new(r))]),
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

/// True for the seed's "generate a GUID" body: `integration_id` without run fields.
pub fn is_registration(obj: &Obj<'_>) -> bool {
    obj.has("integration_id")
        && !obj.has("pipeline")
        && !obj.has("start_time")
        && !obj.has("result")
}

/// Parses `{"integration_id", "name", "type"}`.
pub fn parse_registration(obj: &Obj<'_>) -> Result<InstanceRegistration, Rejection> {
    let mut errs = Errors::default();
    let integration_id = obj.req_str("integration_id", &mut errs);
    let name = obj.req_str("name", &mut errs);
    let kind = obj
        .opt_str("type", &mut errs)
        .unwrap_or_else(|| "custom".to_owned());
    let url = obj.opt_str_any(&["url", "instance_url"], &mut errs);
    let guid = obj.opt_str_any(&["guid", "instance_guid"], &mut errs);
    match (integration_id, name) {
        (Some(integration_id), Some(name)) if errs.is_empty() => Ok(InstanceRegistration {
            guid,
            integration_id,
            name,
            kind: kind.to_ascii_lowercase(),
            url,
        }),
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

/// Which sender's vocabulary a run object is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Harness SEI custom CI/CD (seed 000): every required field of the seed is enforced.
    Sei,
    /// The Jenkins Job Reporter plugin (`JenkinsPluginJobRunComplete`): it names the pipeline
    /// `job_name` and sends no `qualified_name`, so those fall back to the fields it does send.
    Propelo,
}

impl Flavor {
    fn source(self) -> &'static str {
        match self {
            Flavor::Sei => "sei",
            Flavor::Propelo => "propelo",
        }
    }
}

/// Reads a run in the SEI / Propelo field vocabulary. Field aliases of the Jenkins Job Reporter
/// plugin are accepted too. Errors go to `errs`; `None` when a required field is unusable.
pub fn run_from_object(
    obj: &Obj<'_>,
    opts: &ParseOptions,
    flavor: Flavor,
    errs: &mut Errors,
) -> Option<RunReport> {
    let source = flavor.source();
    let (pipeline, full_name, qualified_name) = match flavor {
        // Seed 000's own curl example names the job `job_name` and sends neither `pipeline` nor
        // `qualified_name`: `job_name` stands in for each of them that is absent.
        Flavor::Sei => {
            let job_name = obj.opt_str("job_name", errs);
            let or_job_name = |key: &str, errs: &mut Errors| match &job_name {
                Some(j) if !obj.has(key) => Some(j.clone()),
                _ => obj.req_str(key, errs),
            };
            let pipeline = or_job_name("pipeline", errs);
            let qualified = or_job_name("qualified_name", errs);
            (pipeline, obj.req_str("job_full_name", errs), qualified)
        }
        Flavor::Propelo => {
            let full_name = req_alias(obj, "job_full_name", &["job_normalized_full_name"], errs);
            let pipeline = obj
                .opt_str_any(&["pipeline", "job_name"], errs)
                .or_else(|| full_name.clone());
            let qualified = obj
                .opt_str_any(&["qualified_name", "job_normalized_full_name"], errs)
                .or_else(|| full_name.clone());
            (pipeline, full_name, qualified)
        }
    };
    let instance_name = req_alias(obj, "instance_name", &["jenkins_instance_name"], errs);
    let instance_guid = req_alias(obj, "instance_guid", &["jenkins_instance_guid"], errs);
    let start_ms = obj.req_int("start_time", "epoch milliseconds", errs);
    let duration_ms = obj.req_int("duration", "milliseconds", errs);
    let source_result = obj.req_str("result", errs);

    let started_at = start_ms.and_then(|ms| match times::check_epoch_ms(ms, opts.now) {
        Ok(t) => Some(t),
        Err(m) => {
            errs.push(obj.path("start_time"), m);
            None
        }
    });
    if let Some(d) = duration_ms {
        if d < 0 {
            errs.push(
                obj.path("duration"),
                format!("must not be negative (milliseconds), got {d}"),
            );
        }
    }
    let finished_at = match (started_at, duration_ms) {
        (Some(s), Some(d)) if d >= 0 => {
            let end = s
                .checked_add(Duration::milliseconds(d))
                .ok_or_else(|| format!("{d} ms is beyond any representable time"));
            match end.and_then(|end| times::check_range(end, opts.now)) {
                Ok(t) => Some(t),
                Err(m) => {
                    errs.push(obj.path("duration"), format!("start_time + duration: {m}"));
                    None
                }
            }
        }
        _ => None,
    };
    let result = source_result.as_deref().and_then(|w| {
        let r = RunResult::from_word(w);
        if r.is_none() {
            errs.push(
                obj.path("result"),
                format!(
                    "unknown result \"{}\"; {}",
                    crate::fields::truncate(w, 40),
                    RunResult::accepted_words()
                ),
            );
        }
        r
    });

    let triggered_by = obj.opt_str_any(&["user_id", "triggered_by", "scm_user_id"], errs);
    let params = params(obj, errs);
    let commits = obj
        .opt_str_list("scm_commit_ids", errs)
        .into_iter()
        .map(|sha| Commit {
            sha,
            committed_at: None,
        })
        .collect();
    let repo_url = obj.opt_str("repo_url", errs);
    let build_number = build_number(obj, errs);
    let instance_url = obj.opt_str_any(&["instance_url", "jenkins_instance_url"], errs);
    let module = obj.opt_str("module_name", errs);
    let project = obj.opt_str("project_name", errs);
    let branch = obj.opt_str("branch_name", errs);
    let ci = obj.opt_bool("ci", errs);
    let cd = obj.opt_bool("cd", errs);
    let artifacts = obj.opt_object_list("artifacts", errs);
    let trigger_chain = obj.opt_object_list("trigger_chain", errs);
    let execution_id = obj.opt_str("execution_id", errs);
    let cfr_status = obj.opt_bool("cfr_status", errs);
    let themes = obj.opt_str_list("themes", errs);
    let web_url = obj.opt_str("web_url", errs);
    let environment = crate::environment::environment_of(
        obj.opt_str_any(&["environment", "env"], errs),
        &params,
        &[],
    );
    let job_type = obj.opt_str("job_type", errs);
    let instance_kind = obj.opt_str("instance_type", errs);
    let (stages, log) = match obj.opt_object("job_run", errs) {
        Some(job_run) => job_run_of(&job_run, opts, errs),
        None => (Vec::new(), None),
    };

    // A run that says neither is neither (it counts in no CI or DORA figure), except for the
    // Jenkins plugin, whose every report is a CI build.
    let (cd, ci) = match (ci, cd) {
        (None, None) => (false, flavor == Flavor::Propelo),
        (ci, cd) => (cd.unwrap_or(false), ci.unwrap_or(!cd.unwrap_or(false))),
    };
    let run_key = match (&execution_id, build_number, start_ms) {
        (Some(e), _, _) => e.clone(),
        (None, Some(b), _) => b.to_string(),
        (None, None, Some(ms)) => {
            let digest = Sha256::digest(ms.to_string().as_bytes());
            format!("t{}", &hex::encode(digest)[..16])
        }
        _ => String::new(),
    };

    Some(RunReport {
        instance: InstanceRef {
            guid: instance_guid?,
            name: instance_name,
            url: instance_url,
            kind: instance_kind,
        },
        pipeline: PipelineRef {
            full_name: full_name?,
            name: pipeline?,
            qualified_name,
            project,
            module,
        },
        run_key,
        build_number,
        execution_id,
        result: result?,
        source_result: source_result?,
        started_at: started_at?,
        finished_at: Some(finished_at?),
        duration_ms,
        triggered_by,
        branch,
        repo_url,
        repo: None,
        commits,
        ci,
        cd,
        environment,
        cfr_status,
        params,
        artifacts,
        trigger_chain,
        themes,
        web_url,
        job_type,
        custom_fields: Vec::new(),
        stages,
        log,
        source: source.to_owned(),
        partial: false,
    })
}

/// A required text field that may come under one of `aliases` instead.
pub(crate) fn req_alias(
    obj: &Obj<'_>,
    key: &str,
    aliases: &[&'static str],
    errs: &mut Errors,
) -> Option<String> {
    if !obj.has(key) {
        if let Some(v) = aliases.iter().find_map(|a| obj.opt_str(a, errs)) {
            return Some(v);
        }
    }
    obj.req_str(key, errs)
}

fn build_number(obj: &Obj<'_>, errs: &mut Errors) -> Option<i64> {
    let n = match obj.get("build_number") {
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errs.push(
                    obj.path("build_number"),
                    format!(
                        "must be an integer, got string \"{}\"",
                        crate::fields::truncate(s, 40)
                    ),
                );
                None
            }
        },
        _ => obj.opt_int("build_number", "a build number", errs),
    };
    match n {
        Some(n) if n < 0 => {
            errs.push(
                obj.path("build_number"),
                format!("must not be negative, got {n}"),
            );
            None
        }
        n => n,
    }
}

fn params(obj: &Obj<'_>, errs: &mut Errors) -> Vec<Param> {
    let key = if obj.has("job_run_params") {
        "job_run_params"
    } else {
        "execution_parameters"
    };
    let Some(items) = obj.opt_array(key, errs) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            errs.push(
                format!("{}[{i}]", obj.path(key)),
                format!(
                    "must be an object with name, value and type, got {}",
                    type_name(item)
                ),
            );
            continue;
        };
        let p = Obj::new(m, format!("{}[{i}]", obj.path(key)));
        let name = p.req_str("name", errs);
        let kind = p.opt_str("type", errs);
        if let Some(name) = name {
            out.push(Param {
                name,
                value: m.get("value").cloned().unwrap_or(Value::Null),
                kind,
            });
        }
    }
    out
}

/// Reads `job_run`: Blue Ocean stages with steps, or a run without stages (`name`, `result`,
/// `log`…), whose log becomes the run's log.
pub fn job_run_of(
    job_run: &Obj<'_>,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> (Vec<Stage>, Option<LogText>) {
    let stages = match job_run.opt_array("stages", errs) {
        Some(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                stage_of(
                    s,
                    &format!("{}[{i}]", job_run.path("stages")),
                    true,
                    opts,
                    errs,
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let sender_cut = job_run.opt_bool("log_truncated", errs).unwrap_or(false);
    let log = job_run.opt_str("log", errs).map(|l| {
        let mut log = LogText::capped(&l, opts.max_log_bytes);
        // A sender that kept only the tail of a longer output says so (`cistern report`).
        log.truncated |= sender_cut;
        log
    });
    (stages, log)
}

/// Reads one stage (or step when `with_steps` is false) at `path`.
pub fn stage_of(
    v: &Value,
    path: &str,
    with_steps: bool,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<Stage> {
    let Value::Object(m) = v else {
        errs.push(path, format!("must be an object, got {}", type_name(v)));
        return None;
    };
    let o = Obj::new(m, path);
    let name = match o.opt_str_any(&["displayName", "name"], errs) {
        Some(n) => Some(n),
        None => {
            errs.push(
                o.path("displayName"),
                "is required (the stage or step name)",
            );
            None
        }
    };
    let description = o.opt_str_any(&["displayDescription", "description"], errs);
    let source_result = o.opt_str_any(&["result", "status"], errs);
    let result = source_result.as_deref().and_then(|w| {
        if w.eq_ignore_ascii_case("unknown") {
            return None;
        }
        let r = RunResult::from_word(w);
        if r.is_none() {
            errs.push(
                o.path("result"),
                format!(
                    "unknown result \"{}\"; {}",
                    crate::fields::truncate(w, 40),
                    RunResult::accepted_words()
                ),
            );
        }
        r
    });
    let state = o.opt_str("state", errs);
    let duration_ms = o
        .get_any(&["durationInMillis", "duration_ms"])
        .and_then(|(k, _)| {
            let d = o.opt_int(k, "milliseconds", errs)?;
            if d < 0 {
                errs.push(
                    o.path(k),
                    format!("must not be negative (milliseconds), got {d}"),
                );
                return None;
            }
            Some(d)
        });
    let started_at = match o.get_any(&["startTime", "start_time"]) {
        None => None,
        // The Jenkins plugin sends epoch milliseconds as a string for runs without Blue Ocean.
        Some((k, Value::String(s))) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            match s
                .parse::<i64>()
                .map_err(|e| e.to_string())
                .and_then(|ms| times::check_epoch_ms(ms, opts.now))
            {
                Ok(t) => Some(t),
                Err(m) => {
                    errs.push(o.path(k), m);
                    None
                }
            }
        }
        Some((k, Value::String(s))) => match times::parse_datetime(s) {
            Some(t) => Some(t),
            None => {
                errs.push(o.path(k), format!("\"{}\" is not a date-time (RFC 3339, e.g. 2024-03-28T05:25:45.000+0000, or epoch milliseconds)", crate::fields::truncate(s, 40)));
                None
            }
        },
        Some((k, _)) => o.opt_int(k, "epoch milliseconds", errs).and_then(|ms| {
            match times::check_epoch_ms(ms, opts.now) {
                Ok(t) => Some(t),
                Err(m) => {
                    errs.push(o.path(k), m);
                    None
                }
            }
        }),
    };
    let log = o
        .opt_str("log", errs)
        .map(|l| LogText::capped(&l, opts.max_log_bytes));
    let sender_cut = o.opt_bool("log_truncated", errs).unwrap_or(false);
    let url = o.opt_str_any(&["url", "log_url", "web_url"], errs);
    let steps = if with_steps {
        match o.opt_array("steps", errs) {
            Some(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    stage_of(s, &format!("{}[{i}]", o.path("steps")), false, opts, errs)
                })
                .collect(),
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let (log, log_truncated) = match log {
        Some(l) => (Some(l.text), l.truncated || sender_cut),
        None => (None, false),
    };
    Some(Stage {
        name: name?,
        description,
        result,
        source_result,
        state,
        started_at,
        duration_ms,
        log,
        log_truncated,
        url,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParseOptions {
        ParseOptions::new(1 << 20)
    }

    const MINIMAL: &str = r#"{"pipeline":"p","job_full_name":"p","qualified_name":"p","instance_name":"i",
        "instance_guid":"g","start_time":1711603545000,"duration":780000,"result":"success"}"#;

    #[test]
    fn minimal_run_parses() {
        let items = parse(MINIMAL.as_bytes(), &opts()).unwrap();
        let Inbound::Run(r) = &items[0] else { panic!() };
        assert_eq!(r.result, RunResult::Success);
        assert_eq!(r.duration_ms, Some(780_000));
        assert!(!r.ci && !r.cd, "sends neither, is neither");
        assert!(r.run_key.starts_with('t'));
    }

    #[test]
    fn envelope_with_string_payload() {
        let body = serde_json::json!({"request_type": "CICD", "payload": MINIMAL}).to_string();
        assert!(parse(body.as_bytes(), &opts()).is_ok());
    }

    #[test]
    fn every_missing_field_is_named_at_once() {
        let Err(Rejection::Invalid(errs)) = parse(
            b"{\"result\": \"weird\", \"start_time\": 1711603545}",
            &opts(),
        ) else {
            panic!()
        };
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "pipeline",
            "job_full_name",
            "qualified_name",
            "instance_name",
            "instance_guid",
            "duration",
            "result",
            "start_time",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn a_sender_kept_tail_is_marked_truncated() {
        let mut v: Value = serde_json::from_str(MINIMAL).unwrap();
        v["job_run"] = serde_json::json!({"log": "tail", "log_truncated": true, "stages": [
            {"displayName": "s", "log": "t", "log_truncated": true,
             "steps": [{"displayName": "a", "log": "x"}]}]});
        let items = parse(v.to_string().as_bytes(), &opts()).unwrap();
        let Inbound::Run(r) = &items[0] else { panic!() };
        assert!(r.log.as_ref().unwrap().truncated);
        assert!(r.stages[0].log_truncated);
        assert!(!r.stages[0].steps[0].log_truncated);
    }

    #[test]
    fn registration_body() {
        let items = parse(
            br#"{"integration_id":"42","name":"Custom","type":"jenkins"}"#,
            &opts(),
        )
        .unwrap();
        assert!(matches!(&items[0], Inbound::RegisterInstance(r) if r.kind == "jenkins"));
    }
}
