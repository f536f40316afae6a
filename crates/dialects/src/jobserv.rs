//! Foundries.io JobServ build webhooks (seed 004): the body CI posts when a build completes.
//!
//! One build is one run: `build_id` is its key and build number, `status` its result, `created`
//! and `completed` its times, and each entry of `runs[]` (a JobServ "run", one host's job) one
//! stage. The pipeline is the JobServ project named in the build's API `url`
//! (`https://api.foundries.io/projects/andy-corp/lmp/builds/67/` → `andy-corp/lmp`); the instance is
//! that URL's host. The report is complete (`partial = false`): JobServ sends the whole build.
//!
//! Where things go: `trigger_name` (the JobServ trigger that started the build, e.g.
//! `containers-devel`) is the run's trigger, `{"id": <trigger_name>, "type": "JobServTrigger"}`
//! in its `trigger_chain` (JobServ names no user), and is also kept verbatim as the
//! `trigger_name` param; the build's API `url` is kept as the `api_url` param. For each stage
//! (JobServ run), its API `url` is the stage link (`url`); its `log_url`, `web_url`, `host_tag`
//! and `tests` link are custom fields of the run named `<run name>.<field>` (string), so each
//! keeps its own place and the JobServ format sends them back as they came; `tests` given as a
//! list of tests with their results become the stage's steps. The signature (`X-JobServ-Sig`)
//! is checked before this parser runs.

use cistern_core::{
    CustomField, CustomFieldType, FieldError, InstanceRef, Param, PipelineRef, RunReport,
    RunResult, Stage,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::fields::{truncate, type_name, Errors, Obj};
use crate::{json, times, Headers, Inbound, ParseOptions, Rejection};

/// The instance kind of every JobServ sender.
pub const INSTANCE_KIND: &str = "jobserv";
/// The instance GUID when the build's `url` names no host.
pub const DEFAULT_INSTANCE: &str = "jobserv";
/// The dialect name recorded on runs (`RunReport::source`).
pub const SOURCE: &str = "jobserv";
/// The `type` of the trigger-chain entry naming the build's JobServ trigger.
pub const TRIGGER_TYPE: &str = "JobServTrigger";
/// The fields of a JobServ run kept as the build's custom fields `<run name>.<field>`.
pub const RUN_FIELDS: [&str; 4] = ["log_url", "web_url", "host_tag", "tests"];

/// JobServ's status words (builds and runs) and the results they stand for. `*_WITH_FAILURES`
/// states are still running: the failure shows once the build ends.
const STATUSES: &[(&str, RunResult)] = &[
    ("QUEUED", RunResult::Queued),
    ("RUNNING", RunResult::Running),
    ("UPLOADING", RunResult::Running),
    ("RUNNING_WITH_FAILURES", RunResult::Running),
    ("UPLOADING_WITH_FAILURES", RunResult::Running),
    ("PASSED", RunResult::Success),
    ("PROMOTED", RunResult::Success),
    ("FAILED", RunResult::Failure),
    ("SKIPPED", RunResult::Skipped),
    ("CANCELLING", RunResult::Aborted),
    ("CANCELLED", RunResult::Aborted),
    ("CANCELED", RunResult::Aborted),
];

/// Maps a JobServ status word (case-insensitive) to a result.
pub fn status_result(word: &str) -> Option<RunResult> {
    let word = word.trim();
    STATUSES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|(_, r)| *r)
}

/// Parses a JobServ build webhook body into one complete run.
pub fn parse(
    _headers: &Headers,
    body: &[u8],
    opts: &ParseOptions,
) -> Result<Vec<Inbound>, Rejection> {
    let value = json::parse(body, "").map_err(Rejection::Malformed)?;
    let Value::Object(map) = value else {
        return Err(Rejection::Invalid(vec![FieldError::new(
            "",
            format!(
                "the body must be a JSON object (one JobServ build), got {}",
                type_name(&value)
            ),
        )]));
    };
    let obj = Obj::new(&map, "");
    let mut errs = Errors::default();
    match build(&obj, opts, &mut errs) {
        Some(r) if errs.is_empty() => Ok(vec![Inbound::Run(Box::new(r))]),
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

fn build(obj: &Obj<'_>, opts: &ParseOptions, errs: &mut Errors) -> Option<RunReport> {
    let build_id = build_id(obj, errs);
    let api_url = obj.opt_str("url", errs);
    let web_url = obj.opt_str("web_url", errs);
    let status = obj.req_str("status", errs);
    let result = status.as_deref().and_then(|w| {
        let r = status_result(w);
        if r.is_none() {
            errs.push("status", unknown_status(w));
        }
        r
    });
    // Errors recorded before `created` is read: a blank `created` records none of its own.
    let mark = errs.0.len();
    let created = opt_time(obj, "created", opts, errs);
    let created_failed = errs.0.len() > mark;
    let completed = opt_time(obj, "completed", opts, errs);
    let trigger_name = obj.opt_str("trigger_name", errs);
    // The project path, from the API url or else the web page url (same `/projects/…/builds/` shape).
    let api_parts = api_url.as_deref().and_then(split_url);
    let project = api_parts
        .as_ref()
        .and_then(|u| project_path(&u.path))
        .or_else(|| {
            web_url
                .as_deref()
                .and_then(split_url)
                .and_then(|u| project_path(&u.path))
        });
    if project.is_none() {
        errs.push(
            "url",
            "is required and must name the project: the build's API URL, \
             e.g. https://api.foundries.io/projects/<factory>/<project>/builds/<build_id>/ \
             (web_url of the same shape is accepted instead)",
        );
    }

    let mut custom_fields: Vec<CustomField> = Vec::new();
    let stages = match obj.opt_array("runs", errs) {
        Some(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let (stage, fields) = stage(v, &format!("runs[{i}]"), opts, errs)?;
                for (key, value) in fields {
                    let key = format!("{}.{key}", stage.name);
                    // Two runs of one name: the first keeps its fields.
                    if !custom_fields.iter().any(|f| f.key == key) {
                        custom_fields.push(CustomField {
                            key,
                            kind: CustomFieldType::String,
                            value: Value::String(value),
                        });
                    }
                }
                Some(stage)
            })
            .collect::<Vec<_>>(),
        None => Vec::new(),
    };

    // `created` is the build's start; a build without it starts with its first run.
    let started_at = created.or_else(|| stages.iter().filter_map(|s| s.started_at).min());
    if started_at.is_none() && !created_failed {
        errs.push(
            "created",
            "is required (when the build was created, RFC 3339, e.g. 2021-07-26T18:10:33+00:00)",
        );
    }
    let duration_ms = match (started_at, completed) {
        (Some(s), Some(c)) => between("completed", "created", s, c, errs),
        _ => None,
    };

    let (guid, instance_url) = match &api_parts {
        Some(u) => (u.host.clone(), Some(format!("{}://{}", u.scheme, u.host))),
        None => (DEFAULT_INSTANCE.to_owned(), None),
    };
    let mut params = Vec::new();
    if let Some(t) = &trigger_name {
        params.push(param("trigger_name", t));
    }
    if let Some(u) = &api_url {
        params.push(param("api_url", u));
    }
    let project = project?;
    let build_id = build_id?;

    Some(RunReport {
        instance: InstanceRef {
            name: Some(guid.clone()),
            guid,
            url: instance_url,
            kind: Some(INSTANCE_KIND.to_owned()),
        },
        pipeline: PipelineRef {
            full_name: project.clone(),
            name: project.clone(),
            qualified_name: None,
            project: Some(project),
            module: None,
        },
        run_key: build_id.to_string(),
        build_number: Some(build_id),
        execution_id: None,
        result: result?,
        source_result: status?,
        started_at: started_at?,
        finished_at: completed,
        duration_ms,
        // The trigger is not a person: it goes in the trigger chain, not `triggered_by`.
        triggered_by: None,
        branch: None,
        repo_url: None,
        repo: None,
        commits: Vec::new(),
        ci: true,
        cd: false,
        environment: None,
        cfr_status: None,
        params,
        artifacts: Vec::new(),
        trigger_chain: trigger_name
            .map(|t| vec![serde_json::json!({"id": t, "type": TRIGGER_TYPE})])
            .unwrap_or_default(),
        themes: Vec::new(),
        web_url: web_url.or(api_url),
        job_type: None,
        custom_fields,
        stages,
        log: None,
        source: SOURCE.to_owned(),
        partial: false,
    })
}

/// `build_id`: a positive integer, or its decimal text.
fn build_id(obj: &Obj<'_>, errs: &mut Errors) -> Option<i64> {
    let id = match obj.get("build_id") {
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errs.push(
                    "build_id",
                    format!("must be an integer, got string \"{}\"", truncate(s, 40)),
                );
                None
            }
        },
        _ => obj.req_int("build_id", "the JobServ build number", errs),
    }?;
    if id < 0 {
        errs.push("build_id", format!("must not be negative, got {id}"));
        return None;
    }
    Some(id)
}

/// One JobServ run as a stage, with the fields kept as the build's custom fields.
fn stage(
    v: &Value,
    path: &str,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<(Stage, Vec<(&'static str, String)>)> {
    let Value::Object(m) = v else {
        errs.push(
            path,
            format!("must be an object (a JobServ run), got {}", type_name(v)),
        );
        return None;
    };
    let o = Obj::new(m, path);
    let name = o.req_str("name", errs);
    let status = o.opt_str("status", errs);
    let result = status_of(&o, status.as_deref(), errs);
    let created = opt_time(&o, "created", opts, errs);
    let completed = opt_time(&o, "completed", opts, errs);
    let duration_ms = match (created, completed) {
        (Some(s), Some(c)) => between(&o.path("completed"), &o.path("created"), s, c, errs),
        _ => None,
    };
    let api_url = o.opt_str("url", errs);
    let mut fields = Vec::new();
    let mut steps = Vec::new();
    for key in RUN_FIELDS {
        match o.get(key) {
            // A list of tests with their results: the stage's steps.
            Some(Value::Array(tests)) if key == "tests" => {
                for (j, t) in tests.iter().enumerate() {
                    if let Some(step) = test_step(t, &format!("{}[{j}]", o.path(key)), opts, errs) {
                        steps.push(step);
                    }
                }
            }
            _ => {
                if let Some(v) = o.opt_str(key, errs) {
                    fields.push((key, v));
                }
            }
        }
    }
    let web_url = fields.iter().find(|(k, _)| *k == "web_url").map(|(_, v)| v);
    let stage = Stage {
        name: name?,
        description: None,
        result,
        source_result: status.clone(),
        state: status,
        started_at: created,
        duration_ms,
        log: None,
        log_truncated: false,
        url: api_url.or_else(|| web_url.cloned()),
        steps,
    };
    Some((stage, fields))
}

/// One test of a JobServ run (`{"name", "status", "created", "completed", "url"}`) as a step.
fn test_step(v: &Value, path: &str, opts: &ParseOptions, errs: &mut Errors) -> Option<Stage> {
    let Value::Object(m) = v else {
        errs.push(
            path,
            format!("must be an object (a JobServ test), got {}", type_name(v)),
        );
        return None;
    };
    let o = Obj::new(m, path);
    let name = o.req_str("name", errs);
    let status = o.opt_str("status", errs);
    let result = status_of(&o, status.as_deref(), errs);
    let created = opt_time(&o, "created", opts, errs);
    let completed = opt_time(&o, "completed", opts, errs);
    let duration_ms = match (created, completed) {
        (Some(s), Some(c)) => between(&o.path("completed"), &o.path("created"), s, c, errs),
        _ => None,
    };
    Some(Stage {
        name: name?,
        result,
        source_result: status.clone(),
        state: status,
        started_at: created,
        duration_ms,
        url: o.opt_str("url", errs),
        ..Stage::default()
    })
}

fn status_of(o: &Obj<'_>, status: Option<&str>, errs: &mut Errors) -> Option<RunResult> {
    status.and_then(|w| {
        let r = status_result(w);
        if r.is_none() {
            errs.push(o.path("status"), unknown_status(w));
        }
        r
    })
}

fn unknown_status(word: &str) -> String {
    format!(
        "unknown JobServ status \"{}\"; accepted: {}",
        truncate(word, 40),
        STATUSES
            .iter()
            .map(|(w, _)| *w)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn param(name: &str, value: &str) -> Param {
    Param {
        name: name.to_owned(),
        value: Value::String(value.to_owned()),
        kind: None,
    }
}

/// An optional RFC 3339 time field, range-checked.
fn opt_time(
    o: &Obj<'_>,
    key: &str,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<OffsetDateTime> {
    let s = o.opt_str(key, errs)?;
    // Every accepted shape is ASCII, and `parse_datetime` splits text at byte offsets.
    let Some(t) = s.is_ascii().then(|| times::parse_datetime(&s)).flatten() else {
        errs.push(
            o.path(key),
            format!(
                "\"{}\" is not a date-time (RFC 3339, e.g. 2021-07-26T18:10:37+00:00)",
                truncate(&s, 40)
            ),
        );
        return None;
    };
    match times::check_range(t, opts.now) {
        Ok(t) => Some(t),
        Err(m) => {
            errs.push(o.path(key), m);
            None
        }
    }
}

/// Milliseconds from `start` to `end`; an end before the start is an error on `end_field`.
fn between(
    end_field: &str,
    start_field: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
    errs: &mut Errors,
) -> Option<i64> {
    let ms = (end - start).whole_milliseconds();
    if ms < 0 {
        errs.push(
            end_field,
            format!("is before {start_field} ({})", times::fmt(start)),
        );
        return None;
    }
    i64::try_from(ms).ok()
}

/// The parts of an absolute URL this dialect needs.
struct UrlParts {
    scheme: String,
    /// Host, lower case, with its port when one is given.
    host: String,
    path: String,
}

fn split_url(url: &str) -> Option<UrlParts> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || scheme.is_empty() {
        return None;
    }
    let path = rest[end..].split(['?', '#']).next().unwrap_or("");
    Some(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        host: host.to_ascii_lowercase(),
        path: path.to_owned(),
    })
}

/// `/projects/andy-corp/lmp/builds/67/…` → `andy-corp/lmp`.
fn project_path(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let start = segs.iter().position(|s| *s == "projects")? + 1;
    let end = segs[start..]
        .iter()
        .position(|s| *s == "builds")
        .map_or(segs.len(), |i| start + i);
    (end > start).then(|| segs[start..end].join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths() {
        let p = |u: &str| split_url(u).and_then(|u| project_path(&u.path));
        assert_eq!(
            p("https://api.foundries.io/projects/andy-corp/lmp/builds/67/").as_deref(),
            Some("andy-corp/lmp")
        );
        assert_eq!(
            p("https://ci.foundries.io/projects/andy-corp/lmp/builds/67").as_deref(),
            Some("andy-corp/lmp")
        );
        assert_eq!(
            p("http://jobserv.local:8000/projects/lmp/builds/3/").as_deref(),
            Some("lmp")
        );
        assert_eq!(p("https://api.foundries.io/builds/67/"), None);
        assert_eq!(p("not a url"), None);
    }

    #[test]
    fn statuses_map() {
        assert_eq!(status_result("passed"), Some(RunResult::Success));
        assert_eq!(status_result("PROMOTED"), Some(RunResult::Success));
        assert_eq!(
            status_result("RUNNING_WITH_FAILURES"),
            Some(RunResult::Running)
        );
        assert_eq!(status_result("CANCELLING"), Some(RunResult::Aborted));
        assert_eq!(status_result("GREEN"), None);
    }
}
