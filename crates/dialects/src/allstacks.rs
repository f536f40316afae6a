//! Allstacks custom CD jobs (seed 003): `POST /webhook/company/{company_id}/cicd_job`.
//!
//! One deployment job per body: `job_id`, `commit_sha`, `service_id`, `job_start_time` (seconds
//! since the epoch), `job_duration` (seconds), `status` (`Succeeded`, `Failed`, `On Hold`),
//! `repo_id` or `repo_name`, optional `triggered_by` and `job_type` (with Allstacks' defaults) and
//! up to 20 typed `optional` fields. Allstacks says `job_id` may repeat, so a run is identified by
//! `job_id` together with `job_start_time`.

use std::collections::HashMap;

use cistern_core::{
    Commit, CustomField, CustomFieldType, FieldError, InstanceRef, PipelineRef, RunReport,
    RunResult,
};
use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use crate::fields::{truncate, type_name, Errors, Obj};
use crate::{json, times, Inbound, ParseOptions, Rejection};

/// `triggered_by` when the sender leaves it out or blank (Allstacks' default).
pub const DEFAULT_TRIGGERED_BY: &str = "Custom CD Agent";
/// `job_type` when the sender leaves it out or blank (Allstacks' default).
pub const DEFAULT_JOB_TYPE: &str = "CUSTOM_CD_JOB";
/// Most entries of `optional`, and most values in one entry's list.
pub const MAX_OPTIONAL: usize = 20;
/// The instance kind of every Allstacks service.
pub const INSTANCE_KIND: &str = "custom-cd";

/// The accepted `status` words, as Allstacks spells them.
const STATUSES: [&str; 3] = ["Succeeded", "Failed", "On Hold"];
/// The accepted `optional[].type` words.
const TYPES: &str = "string, integer, float, duration, timestamp";

/// Parses a custom CD job body into one run, or names every field that breaks a rule.
pub fn parse(body: &[u8], opts: &ParseOptions) -> Result<Vec<Inbound>, Rejection> {
    let value = json::parse(body, "").map_err(Rejection::Malformed)?;
    let Value::Object(map) = value else {
        return Err(Rejection::Invalid(vec![FieldError::new(
            "",
            format!(
                "the body must be a JSON object (one job), got {}",
                type_name(&value)
            ),
        )]));
    };
    let mut errs = Errors::default();
    match job(&map, opts, &mut errs) {
        Some(r) if errs.is_empty() => Ok(vec![Inbound::Run(Box::new(r))]),
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

fn job(map: &Map<String, Value>, opts: &ParseOptions, errs: &mut Errors) -> Option<RunReport> {
    let obj = Obj::new(map, "");
    let job_id = obj.req_str("job_id", errs);
    let commit_sha = commit_sha(&obj, errs);
    let service_id =
        strict_int(&obj, "service_id", "the Custom CD service's id", errs).and_then(|id| {
            if id < 0 {
                errs.push("service_id", format!("must not be negative, got {id}"));
                return None;
            }
            Some(id)
        });
    let start_s = strict_int(&obj, "job_start_time", "seconds since the epoch", errs);
    let started_at = start_s.and_then(|s| match times::check_epoch_seconds(s, opts.now) {
        Ok(t) => Some(t),
        Err(m) => {
            errs.push("job_start_time", m);
            None
        }
    });
    let duration_s = strict_int(&obj, "job_duration", "seconds", errs).and_then(|d| {
        if d < 0 {
            errs.push(
                "job_duration",
                format!("must not be negative (seconds), got {d}"),
            );
            return None;
        }
        Some(d)
    });
    let finished_at = match (started_at, duration_s) {
        (Some(s), Some(d)) => finish(s, d, opts.now, errs),
        _ => None,
    };
    let status = status(&obj, errs);
    let repo = repo(&obj, errs);
    let triggered_by = obj
        .opt_str("triggered_by", errs)
        .unwrap_or_else(|| DEFAULT_TRIGGERED_BY.to_owned());
    let job_type = obj
        .opt_str("job_type", errs)
        .unwrap_or_else(|| DEFAULT_JOB_TYPE.to_owned());
    let custom_fields = optional_fields(&obj, opts, errs);
    let environment =
        crate::environment::environment_of(obj.opt_str("environment", errs), &[], &custom_fields);

    let (job_id, service_id, start_s, status) = (job_id?, service_id?, start_s?, status?);
    let duration_s = duration_s?;
    Some(RunReport {
        instance: InstanceRef {
            guid: service_id.to_string(),
            name: Some(format!("service {service_id}")),
            url: None,
            kind: Some(INSTANCE_KIND.to_owned()),
        },
        pipeline: PipelineRef {
            full_name: job_type.clone(),
            name: job_type.clone(),
            qualified_name: None,
            project: None,
            module: None,
        },
        run_key: format!("{job_id}@{start_s}"),
        build_number: None,
        execution_id: Some(job_id),
        result: status.0,
        source_result: status.1,
        started_at: started_at?,
        finished_at: Some(finished_at?),
        duration_ms: Some(duration_s.saturating_mul(1000)),
        triggered_by: Some(triggered_by),
        branch: None,
        repo_url: None,
        repo: Some(repo?),
        commits: vec![Commit {
            sha: commit_sha?,
            committed_at: None,
        }],
        ci: false,
        cd: true,
        environment,
        cfr_status: None,
        params: Vec::new(),
        artifacts: Vec::new(),
        trigger_chain: Vec::new(),
        themes: Vec::new(),
        web_url: None,
        job_type: Some(job_type),
        custom_fields,
        stages: Vec::new(),
        log: None,
        source: "allstacks".to_owned(),
        partial: false,
    })
}

/// A required JSON integer: unlike [`Obj::req_int`], neither `2.0` nor `"2"` is taken, since
/// Allstacks documents these fields as integers.
fn strict_int(obj: &Obj<'_>, key: &str, unit: &str, errs: &mut Errors) -> Option<i64> {
    match obj.get(key) {
        None => {
            errs.push(key, format!("is required (an integer, {unit})"));
            None
        }
        Some(v) => match int_of(v) {
            Ok(i) => Some(i),
            Err(got) => {
                errs.push(key, format!("must be an integer ({unit}), got {got}"));
                None
            }
        },
    }
}

/// The integer in `v`, or a description of what was there instead.
fn int_of(v: &Value) -> Result<i64, String> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    Err(match v {
        Value::Number(n) if n.is_u64() => format!("{n}, which is too large"),
        Value::Number(n) => format!("the number {n}, which is not whole"),
        Value::String(s) => format!(
            "the string \"{}\" (send the number without quotes)",
            truncate(s, 40)
        ),
        other => type_name(other).to_owned(),
    })
}

/// Start plus duration, which must still be a plausible time.
fn finish(
    start: OffsetDateTime,
    duration_s: i64,
    now: OffsetDateTime,
    errs: &mut Errors,
) -> Option<OffsetDateTime> {
    // Both overflow checks: duration_ms is stored in milliseconds.
    let end = duration_s
        .checked_mul(1000)
        .and_then(|_| start.checked_add(Duration::seconds(duration_s)));
    let Some(end) = end else {
        errs.push(
            "job_duration",
            format!("{duration_s} seconds is far too long for a job; check the unit (seconds)"),
        );
        return None;
    };
    match times::check_range(end, now) {
        Ok(t) => Some(t),
        Err(m) => {
            errs.push(
                "job_duration",
                format!("job_start_time + job_duration: {m}"),
            );
            None
        }
    }
}

/// `commit_sha`: the full SHA-1 (40) or SHA-256 (64) in hexadecimal, kept in lower case.
fn commit_sha(obj: &Obj<'_>, errs: &mut Errors) -> Option<String> {
    const RULE: &str = "must be 40 or 64 hexadecimal characters (the full commit SHA)";
    let s = match obj.get("commit_sha") {
        None => {
            errs.push(
                "commit_sha",
                "is required (the full commit SHA: 40 or 64 hexadecimal characters)",
            );
            return None;
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            errs.push(
                "commit_sha",
                format!("{RULE}, got {} instead of a string", type_name(other)),
            );
            return None;
        }
    };
    let len = s.chars().count();
    if len != 40 && len != 64 {
        errs.push(
            "commit_sha",
            format!("commit_sha must be 40 or 64 hexadecimal characters, got {len}"),
        );
        return None;
    }
    if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
        errs.push(
            "commit_sha",
            format!(
                "commit_sha must be 40 or 64 hexadecimal characters, but character {} is {c:?}",
                i + 1
            ),
        );
        return None;
    }
    Some(s.to_ascii_lowercase())
}

/// `status`: one of the three Allstacks words (any case); the normalized result and the word sent.
fn status(obj: &Obj<'_>, errs: &mut Errors) -> Option<(RunResult, String)> {
    let accepted = format!(
        "one of {} (case-insensitive)",
        STATUSES.map(|s| format!("\"{s}\"")).join(", ")
    );
    let word = match obj.get("status") {
        None => {
            errs.push("status", format!("is required ({accepted})"));
            return None;
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            errs.push(
                "status",
                format!("must be {accepted}, got {}", type_name(other)),
            );
            return None;
        }
    };
    let known = STATUSES.iter().any(|s| s.eq_ignore_ascii_case(word.trim()));
    match RunResult::from_word(word).filter(|_| known) {
        Some(r) => Some((r, word.clone())),
        None => {
            errs.push(
                "status",
                format!("must be {accepted}, got \"{}\"", truncate(word, 40)),
            );
            None
        }
    }
}

/// `repo_name`, else `repo_id`: one of them is required.
fn repo(obj: &Obj<'_>, errs: &mut Errors) -> Option<String> {
    let before = errs.0.len();
    let id = obj.opt_str("repo_id", errs);
    let name = match obj.get("repo_name") {
        Some(Value::Number(_)) => {
            errs.push("repo_name", "must be a string, got number");
            None
        }
        _ => obj.opt_str("repo_name", errs),
    };
    // A field of the wrong type is already named; only say "required" when both are simply missing.
    if id.is_none() && name.is_none() && errs.0.len() == before {
        errs.push(
            "repo_id",
            "one of repo_id or repo_name is required (a non-empty string naming the repository)",
        );
    }
    name.or(id)
}

/// `optional`: at most 20 typed fields with unique keys, each value of its type (or a list of at
/// most 20 such values), kept exactly as sent.
fn optional_fields(obj: &Obj<'_>, opts: &ParseOptions, errs: &mut Errors) -> Vec<CustomField> {
    let Some(items) = obj.opt_array("optional", errs) else {
        return Vec::new();
    };
    if items.len() > MAX_OPTIONAL {
        errs.push(
            "optional",
            format!(
                "at most {MAX_OPTIONAL} optional fields are allowed, got {}",
                items.len()
            ),
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len().min(MAX_OPTIONAL));
    for (i, item) in items.iter().enumerate() {
        let path = format!("optional[{i}]");
        let Value::Object(m) = item else {
            errs.push(
                path,
                format!(
                    "must be an object {{\"key\", \"value\", \"type\"}}, got {}",
                    type_name(item)
                ),
            );
            continue;
        };
        let key = match m.get("key") {
            None | Some(Value::Null) => {
                errs.push(format!("{path}.key"), "is required (a non-empty string)");
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                errs.push(format!("{path}.key"), "must not be empty");
                None
            }
            Some(Value::String(s)) => match seen.get(s.as_str()) {
                Some(first) => {
                    errs.push(
                        format!("{path}.key"),
                        format!(
                            "duplicate key \"{}\" (already used by optional[{first}]); keys must be unique",
                            truncate(s, 60)
                        ),
                    );
                    None
                }
                None => {
                    seen.insert(s.as_str(), i);
                    Some(s.clone())
                }
            },
            Some(other) => {
                errs.push(
                    format!("{path}.key"),
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        };
        let kind = match m.get("type") {
            None | Some(Value::Null) => {
                errs.push(
                    format!("{path}.type"),
                    format!("is required (one of {TYPES})"),
                );
                None
            }
            Some(Value::String(s)) => {
                let k = field_type(s);
                if k.is_none() {
                    errs.push(
                        format!("{path}.type"),
                        format!("must be one of {TYPES}, got \"{}\"", truncate(s, 40)),
                    );
                }
                k
            }
            Some(other) => {
                errs.push(
                    format!("{path}.type"),
                    format!(
                        "must be one of {TYPES} (a string), got {}",
                        type_name(other)
                    ),
                );
                None
            }
        };
        let value = match m.get("value") {
            None | Some(Value::Null) => {
                errs.push(
                    format!("{path}.value"),
                    format!("is required (a value of the declared type, or a list of at most {MAX_OPTIONAL})"),
                );
                None
            }
            Some(v) => Some(v),
        };
        let (Some(key), Some(kind), Some(value)) = (key, kind, value) else {
            continue;
        };
        let vpath = format!("{path}.value");
        let ok = match value {
            Value::Array(list) => {
                let mut ok = true;
                if list.len() > MAX_OPTIONAL {
                    errs.push(
                        &vpath,
                        format!(
                            "a list holds at most {MAX_OPTIONAL} values, got {}",
                            list.len()
                        ),
                    );
                    ok = false;
                }
                for (j, v) in list.iter().enumerate() {
                    ok &= check_value(v, kind, &format!("{vpath}[{j}]"), opts, errs);
                }
                ok
            }
            v => check_value(v, kind, &vpath, opts, errs),
        };
        if ok {
            out.push(CustomField {
                key,
                kind,
                value: value.clone(),
            });
        }
    }
    out
}

/// The declared type (any case).
fn field_type(s: &str) -> Option<CustomFieldType> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "string" => CustomFieldType::String,
        "integer" => CustomFieldType::Integer,
        "float" => CustomFieldType::Float,
        "duration" => CustomFieldType::Duration,
        "timestamp" => CustomFieldType::Timestamp,
        _ => return None,
    })
}

/// Checks one value against its declared type, recording the error at `path`.
fn check_value(
    v: &Value,
    kind: CustomFieldType,
    path: &str,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> bool {
    let problem = match kind {
        CustomFieldType::String => match v {
            Value::String(_) => None,
            other => Some(format!(
                "must be a string (type string), got {}",
                describe(other)
            )),
        },
        CustomFieldType::Integer => int_of(v)
            .err()
            .map(|got| format!("must be an integer (type integer), got {got}")),
        CustomFieldType::Float => match v {
            Value::Number(_) => None,
            other => Some(format!(
                "must be a number (type float), got {}",
                describe(other)
            )),
        },
        CustomFieldType::Duration => match int_of(v) {
            Ok(d) if d < 0 => Some(format!(
                "must not be negative (type duration, whole seconds), got {d}"
            )),
            Ok(_) => None,
            Err(got) => Some(format!(
                "must be an integer number of seconds (type duration), got {got}"
            )),
        },
        CustomFieldType::Timestamp => match int_of(v) {
            Ok(s) => times::check_epoch_seconds(s, opts.now)
                .err()
                .map(|m| format!("type timestamp: {m}")),
            Err(got) => Some(format!(
                "must be an integer, seconds since the epoch (type timestamp), got {got}"
            )),
        },
    };
    match problem {
        Some(m) => {
            errs.push(path, m);
            false
        }
        None => true,
    }
}

/// A value's type, with the value when it is short.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string \"{}\"", truncate(s, 40)),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("{b}"),
        other => type_name(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> ParseOptions {
        ParseOptions::new(1 << 20)
    }

    fn sample() -> Value {
        json!({
            "job_id": "1",
            "status": "Succeeded",
            "commit_sha": "a2e7da86cc392417b0d9f605b28038aae80b002f",
            "triggered_by": "testuser@org.com",
            "repo_id": "12345",
            "service_id": 2,
            "job_start_time": 1704018030,
            "job_duration": 300,
            "job_type": "Production Deploy",
            "optional": [
                {"key": "microservice", "value": ["frontend", "backend"], "type": "string"},
                {"key": "lead_time", "value": 20, "type": "duration"},
                {"key": "float_key", "value": 20.5, "type": "float"},
                {"key": "qa_approved_on", "value": 1704018030, "type": "timestamp"}
            ]
        })
    }

    fn run(v: &Value) -> RunReport {
        match parse(v.to_string().as_bytes(), &opts()) {
            Ok(mut items) => match items.pop() {
                Some(Inbound::Run(r)) => *r,
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{}", e.summary()),
        }
    }

    /// The errors of `v`, as (field, message).
    fn errors(v: &Value) -> Vec<(String, String)> {
        match parse(v.to_string().as_bytes(), &opts()) {
            Err(Rejection::Invalid(errs)) => {
                errs.into_iter().map(|e| (e.field, e.message)).collect()
            }
            other => panic!("expected field errors for {v}, got {other:?}"),
        }
    }

    fn with(changes: Value) -> Value {
        let mut v = sample();
        for (k, x) in changes.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    }

    fn assert_error(v: Value, field: &str, needle: &str) {
        let errs = errors(&v);
        assert!(
            errs.iter().any(|(f, m)| f == field && m.contains(needle)),
            "{field} / {needle}: {errs:?}"
        );
    }

    #[test]
    fn sample_maps_to_a_deployment() {
        let r = run(&sample());
        assert_eq!(r.instance.guid, "2");
        assert_eq!(r.instance.name.as_deref(), Some("service 2"));
        assert_eq!(r.instance.kind.as_deref(), Some("custom-cd"));
        assert_eq!(r.pipeline.full_name, "Production Deploy");
        assert_eq!(r.pipeline.name, "Production Deploy");
        assert_eq!(r.run_key, "1@1704018030");
        assert_eq!(r.execution_id.as_deref(), Some("1"));
        assert_eq!(r.result, RunResult::Success);
        assert_eq!(r.source_result, "Succeeded");
        assert_eq!(r.started_at.unix_timestamp(), 1_704_018_030);
        assert_eq!(r.finished_at.unwrap().unix_timestamp(), 1_704_018_330);
        assert_eq!(r.duration_ms, Some(300_000));
        assert_eq!(r.triggered_by.as_deref(), Some("testuser@org.com"));
        assert_eq!(r.repo.as_deref(), Some("12345"));
        assert_eq!(r.commits.len(), 1);
        assert_eq!(r.commits[0].sha, "a2e7da86cc392417b0d9f605b28038aae80b002f");
        assert!(r.cd && !r.ci);
        assert_eq!(r.job_type.as_deref(), Some("Production Deploy"));
        assert_eq!(r.source, "allstacks");
        assert_eq!(r.custom_fields.len(), 4);
        assert_eq!(r.custom_fields[0].kind, CustomFieldType::String);
        assert_eq!(r.custom_fields[0].value, json!(["frontend", "backend"]));
        assert_eq!(r.custom_fields[2].value, json!(20.5));
        assert_eq!(r.custom_fields[3].kind, CustomFieldType::Timestamp);
        assert!(r.build_number.is_none() && r.branch.is_none() && r.repo_url.is_none());
    }

    #[test]
    fn defaults_and_alternatives() {
        let r = run(&with(json!({"triggered_by": null, "job_type": "  "})));
        assert_eq!(r.triggered_by.as_deref(), Some(DEFAULT_TRIGGERED_BY));
        assert_eq!(r.job_type.as_deref(), Some(DEFAULT_JOB_TYPE));
        assert_eq!(r.pipeline.full_name, DEFAULT_JOB_TYPE);
        // repo_name wins over repo_id; a numeric repo_id and job_id are taken as text.
        let r = run(&with(
            json!({"repo_name": "web", "repo_id": 12345, "job_id": 7}),
        ));
        assert_eq!(r.repo.as_deref(), Some("web"));
        assert_eq!(r.run_key, "7@1704018030");
        let r = run(&with(json!({"repo_id": 12345})));
        assert_eq!(r.repo.as_deref(), Some("12345"));
        for (word, result) in [
            ("Failed", RunResult::Failure),
            ("on hold", RunResult::OnHold),
            ("SUCCEEDED", RunResult::Success),
        ] {
            let r = run(&with(json!({"status": word})));
            assert_eq!((r.result, r.source_result.as_str()), (result, word));
        }
        let sha256 = "A".repeat(64);
        let r = run(&with(json!({"commit_sha": sha256, "optional": null})));
        assert_eq!(r.commits[0].sha, "a".repeat(64));
        assert!(r.custom_fields.is_empty());
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (with(json!({"job_id": null})), "job_id", "required"),
            (with(json!({"job_id": true})), "job_id", "string"),
            (with(json!({"commit_sha": null})), "commit_sha", "required"),
            (
                with(json!({"commit_sha": "a2e7da86cc39"})),
                "commit_sha",
                "commit_sha must be 40 or 64 hexadecimal characters, got 12",
            ),
            (
                with(json!({"commit_sha": "z".repeat(40)})),
                "commit_sha",
                "character 1 is 'z'",
            ),
            (with(json!({"service_id": null})), "service_id", "required"),
            (
                with(json!({"service_id": "2"})),
                "service_id",
                "must be an integer",
            ),
            (with(json!({"service_id": 2.5})), "service_id", "integer"),
            (with(json!({"service_id": -2})), "service_id", "negative"),
            (
                with(json!({"job_start_time": 1704018030000i64})),
                "job_start_time",
                "looks like milliseconds",
            ),
            (
                with(json!({"job_start_time": 500000000})),
                "job_start_time",
                "before 1990",
            ),
            (
                with(json!({"job_start_time": 4102444800i64})),
                "job_start_time",
                "future",
            ),
            (
                with(json!({"job_start_time": "1704018030"})),
                "job_start_time",
                "without quotes",
            ),
            (
                with(json!({"job_duration": -1})),
                "job_duration",
                "negative",
            ),
            (
                with(json!({"job_duration": 1.5})),
                "job_duration",
                "integer",
            ),
            (
                with(json!({"job_duration": null})),
                "job_duration",
                "required",
            ),
            (
                with(json!({"job_duration": 9_000_000_000_000_000_000i64})),
                "job_duration",
                "too long",
            ),
            (with(json!({"status": "Success"})), "status", "\"On Hold\""),
            (with(json!({"status": "on_hold"})), "status", "Succeeded"),
            (with(json!({"status": null})), "status", "required"),
            (
                with(json!({"repo_id": null})),
                "repo_id",
                "one of repo_id or repo_name is required",
            ),
            (with(json!({"repo_name": 5})), "repo_name", "string"),
            (with(json!({"triggered_by": []})), "triggered_by", "string"),
            (with(json!({"job_type": {}})), "job_type", "string"),
            (with(json!({"optional": {}})), "optional", "array"),
            (with(json!({"optional": [1]})), "optional[0]", "object"),
            (
                with(json!({"optional": [{"value": 1, "type": "integer"}]})),
                "optional[0].key",
                "required",
            ),
            (
                with(json!({"optional": [{"key": "k", "value": 1, "type": "bool"}]})),
                "optional[0].type",
                "string, integer, float, duration, timestamp",
            ),
            (
                with(json!({"optional": [{"key": "k", "type": "integer"}]})),
                "optional[0].value",
                "required",
            ),
            (
                with(json!({"optional": [{"key": "k", "value": 1.5, "type": "integer"}]})),
                "optional[0].value",
                "integer",
            ),
            (
                with(json!({"optional": [{"key": "k", "value": "x", "type": "float"}]})),
                "optional[0].value",
                "number",
            ),
            (
                with(json!({"optional": [{"key": "k", "value": 5, "type": "string"}]})),
                "optional[0].value",
                "string",
            ),
            (
                with(json!({"optional": [{"key": "k", "value": -3, "type": "duration"}]})),
                "optional[0].value",
                "negative",
            ),
            (
                with(
                    json!({"optional": [{"key": "k", "value": [1, 1704018030000i64], "type": "timestamp"}]}),
                ),
                "optional[0].value[1]",
                "milliseconds",
            ),
            (
                with(
                    json!({"optional": [{"key": "k", "value": 1, "type": "integer"}, {"key": "k", "value": 2, "type": "integer"}]}),
                ),
                "optional[1].key",
                "duplicate key \"k\"",
            ),
        ];
        for (v, field, needle) in cases {
            assert_error(v, field, needle);
        }
    }

    #[test]
    fn limits_of_twenty() {
        let entries: Vec<Value> = (0..21)
            .map(|i| json!({"key": format!("k{i}"), "value": i, "type": "integer"}))
            .collect();
        assert_error(with(json!({"optional": entries})), "optional", "at most 20");
        let twenty = &entries[..20];
        assert_eq!(
            run(&with(json!({"optional": twenty}))).custom_fields.len(),
            20
        );
        let values: Vec<i64> = (0..21).collect();
        assert_error(
            with(json!({"optional": [{"key": "k", "value": values, "type": "integer"}]})),
            "optional[0].value",
            "at most 20 values, got 21",
        );
    }

    #[test]
    fn all_errors_at_once() {
        let errs = errors(&json!({"status": "Done", "optional": [{"key": ""}]}));
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        for f in [
            "job_id",
            "commit_sha",
            "service_id",
            "job_start_time",
            "job_duration",
            "status",
            "repo_id",
            "optional[0].key",
            "optional[0].type",
            "optional[0].value",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn not_an_object() {
        let Err(Rejection::Invalid(errs)) = parse(b"[1]", &opts()) else {
            panic!()
        };
        assert!(errs[0].message.contains("JSON object"));
        assert!(matches!(
            parse(b"{'job_id': 1}", &opts()),
            Err(Rejection::Malformed(_))
        ));
    }
}
