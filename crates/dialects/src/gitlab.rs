//! GitLab CI webhooks: `Pipeline Hook` and `Job Hook` events (`X-Gitlab-Event`).
//!
//! Both report one pipeline, partially (`partial = true`), and the store merges them in whatever
//! order they arrive. Every event of a pipeline names it the same way:
//!
//! - instance GUID: the host (with its port) of the project's web URL (`gitlab.com`);
//! - pipeline full name: the project's `path_with_namespace` (`gitlab-org/gitlab-test`);
//! - run key: the pipeline id (`object_attributes.id`, a Job Hook's `pipeline_id`).
//!
//! A Pipeline Hook carries the whole pipeline: status, times (GitLab's `2016-08-12 15:23:28 UTC`),
//! duration in seconds, ref, commit, user and its jobs (`builds[]`), which become stages (grouped
//! by `stage`, in the order of `object_attributes.stages`) holding the jobs as steps. A Job Hook
//! carries one job: see [`parse`] for how it is reported. The token (`X-Gitlab-Token`) is checked
//! before this parser runs. System hooks (`System Hook`) are read by their `object_kind`.

use std::collections::BTreeMap;

use cistern_core::{
    Commit, FieldError, InstanceRef, Param, PipelineRef, RunReport, RunResult, Stage,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::fields::{truncate, type_name, Errors, Obj};
use crate::{json, times, Headers, Inbound, ParseOptions, Rejection};

/// The header naming the event.
pub const EVENT_HEADER: &str = "X-Gitlab-Event";
/// The instance kind of every GitLab sender.
pub const INSTANCE_KIND: &str = "gitlab";
/// The dialect name recorded on runs (`RunReport::source`).
pub const SOURCE: &str = "gitlab";

/// GitLab's pipeline and job status words and the results they stand for.
const STATUSES: &[(&str, RunResult)] = &[
    ("created", RunResult::Queued),
    ("pending", RunResult::Queued),
    ("waiting_for_resource", RunResult::Queued),
    ("preparing", RunResult::Queued),
    ("scheduled", RunResult::Queued),
    ("running", RunResult::Running),
    ("success", RunResult::Success),
    ("failed", RunResult::Failure),
    ("canceled", RunResult::Aborted),
    ("canceling", RunResult::Aborted),
    ("skipped", RunResult::Skipped),
    // Waiting for someone to start a manual job.
    ("manual", RunResult::OnHold),
];

/// Maps a GitLab status word (case-insensitive) to a result.
pub fn status_result(word: &str) -> Option<RunResult> {
    let word = word.trim();
    STATUSES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|(_, r)| *r)
}

/// Parses a GitLab webhook delivery.
///
/// A `Job Hook` becomes a partial report of its pipeline with one stage (`build_stage`) that holds
/// only that job as its step, and no stage-level result or times (one job does not say them).
/// The store merges stages by name and, within a stage, steps by name, so the job updates its
/// own step without wiping the stage's other jobs.
pub fn parse(
    headers: &Headers,
    body: &[u8],
    opts: &ParseOptions,
) -> Result<Vec<Inbound>, Rejection> {
    let Some(event) = headers.get(EVENT_HEADER).map(str::trim) else {
        return Err(Rejection::Invalid(vec![FieldError::new(
            EVENT_HEADER,
            "header is required (GitLab sends the event name in it: Pipeline Hook or Job Hook)",
        )]));
    };
    let kind = match event.to_ascii_lowercase().as_str() {
        "pipeline hook" => Kind::Pipeline,
        "job hook" => Kind::Job,
        "system hook" => Kind::System,
        _ => return Ok(vec![Inbound::Ignored(event.to_owned())]),
    };
    let value = json::parse(body, "").map_err(Rejection::Malformed)?;
    let Value::Object(map) = value else {
        return Err(Rejection::Invalid(vec![FieldError::new(
            "",
            format!(
                "the body must be a JSON object (a GitLab {event}), got {}",
                type_name(&value)
            ),
        )]));
    };
    let root = Obj::new(&map, "");
    let kind = match kind {
        Kind::System => match map.get("object_kind").and_then(Value::as_str) {
            Some("pipeline") => Kind::Pipeline,
            Some("build") => Kind::Job,
            other => {
                return Ok(vec![Inbound::Ignored(format!(
                    "System Hook {}",
                    other.unwrap_or("without object_kind")
                ))])
            }
        },
        k => k,
    };
    let mut errs = Errors::default();
    let report = match kind {
        Kind::Job => job_hook(&root, opts, &mut errs),
        _ => pipeline_hook(&root, opts, &mut errs),
    };
    match report {
        Some(r) if errs.is_empty() => Ok(vec![Inbound::Run(Box::new(r))]),
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Pipeline,
    Job,
    System,
}

/// The project, as both hooks name it.
struct Project {
    path: String,
    web_url: String,
    host: String,
    scheme: String,
}

impl Project {
    fn instance(&self) -> InstanceRef {
        InstanceRef {
            guid: self.host.clone(),
            name: Some(self.host.clone()),
            url: Some(format!("{}://{}", self.scheme, self.host)),
            kind: Some(INSTANCE_KIND.to_owned()),
        }
    }

    fn pipeline(&self) -> PipelineRef {
        PipelineRef {
            full_name: self.path.clone(),
            name: self.path.clone(),
            qualified_name: None,
            project: Some(self.path.clone()),
            module: None,
        }
    }

    fn pipeline_url(&self, id: i64) -> String {
        format!("{}/-/pipelines/{id}", self.web_url)
    }

    fn job_url(&self, id: i64) -> String {
        format!("{}/-/jobs/{id}", self.web_url)
    }
}

/// Reads `project` (`path_with_namespace`, `web_url`); Job Hooks from before GitLab 16 have no
/// `project` and name it through `repository.homepage` instead.
fn project(root: &Obj<'_>, errs: &mut Errors) -> Option<Project> {
    let (path, web_url) = match root.opt_object("project", errs) {
        Some(p) => (
            p.req_str("path_with_namespace", errs),
            p.req_str("web_url", errs),
        ),
        None => {
            let homepage = root
                .opt_object("repository", errs)
                .and_then(|r| r.opt_str("homepage", errs));
            let path = homepage
                .as_deref()
                .and_then(split_url)
                .map(|(_, _, path)| path.trim_matches('/').to_owned())
                .filter(|p| !p.is_empty());
            if path.is_none() {
                errs.push(
                    "project.path_with_namespace",
                    "is required (the project object GitLab sends; repository.homepage is accepted instead)",
                );
            }
            (path, homepage)
        }
    };
    let web_url = web_url?.trim_end_matches('/').to_owned();
    let Some((scheme, host, _)) = split_url(&web_url) else {
        errs.push(
            "project.web_url",
            format!(
                "must be an absolute URL (e.g. https://gitlab.com/group/project), got \"{}\"",
                truncate(&web_url, 60)
            ),
        );
        return None;
    };
    Some(Project {
        path: path?,
        web_url,
        host,
        scheme,
    })
}

fn pipeline_hook(root: &Obj<'_>, opts: &ParseOptions, errs: &mut Errors) -> Option<RunReport> {
    let project = project(root, errs);
    let Some(attrs) = root.opt_object("object_attributes", errs) else {
        if !root.has("object_attributes") {
            errs.push(
                "object_attributes",
                "is required (the pipeline object of a Pipeline Hook)",
            );
        }
        return None;
    };
    let id = attrs.req_int("id", "the pipeline id", errs);
    let iid = attrs.opt_int("iid", "the project-scoped pipeline number", errs);
    let status = attrs.req_str("status", errs);
    let result = status
        .as_deref()
        .and_then(|w| result_of(&attrs, "status", w, errs));
    let mark = errs.0.len();
    let created_at = opt_time(&attrs, "created_at", opts, errs);
    // Absent or blank, as opposed to wrong (which recorded its own error).
    if created_at.is_none() && errs.0.len() == mark {
        errs.push(
            attrs.path("created_at"),
            "is required (when the pipeline was created, e.g. 2016-08-12 15:23:28 UTC)",
        );
    }
    let finished_at = opt_time(&attrs, "finished_at", opts, errs);
    let duration_ms = seconds(&attrs, "duration", errs);
    let branch = attrs.opt_str("ref", errs);
    let sha = attrs.opt_str("sha", errs);
    let web_url = attrs.opt_str("url", errs);
    let stage_order = attrs.opt_str_list("stages", errs);
    let mut params = Vec::new();
    for key in ["name", "source"] {
        if let Some(v) = attrs.opt_str(key, errs) {
            params.push(param(key, Value::String(v)));
        }
    }
    if let Some(tag) = attrs.opt_bool("tag", errs) {
        params.push(param("tag", Value::Bool(tag)));
    }
    // The pipeline's variables may hold secrets: only a correlation id (set by a Cistern trigger,
    // which links the run to its event) is kept.
    for v in attrs.opt_array("variables", errs).into_iter().flatten() {
        let key = v.get("key").and_then(Value::as_str).unwrap_or("");
        if key.eq_ignore_ascii_case("correlation_id") {
            if let Some(value) = v.get("value").and_then(Value::as_str) {
                params.push(param(key, Value::String(value.to_owned())));
            }
        }
    }
    let commit = root.opt_object("commit", errs);
    let committed_at = commit
        .as_ref()
        .and_then(|c| opt_time(c, "timestamp", opts, errs));
    let commit_id = commit.as_ref().and_then(|c| c.opt_str("id", errs));
    let commits = match sha.or(commit_id.clone()) {
        Some(sha) => {
            let same = commit_id.as_deref().is_none_or(|c| c == sha);
            vec![Commit {
                sha,
                committed_at: if same { committed_at } else { None },
            }]
        }
        None => Vec::new(),
    };
    let triggered_by = root
        .opt_object("user", errs)
        .and_then(|u| u.opt_str_any(&["username", "name"], errs));
    let stages = match root.opt_array("builds", errs) {
        Some(builds) => stages_of(builds, &stage_order, project.as_ref(), opts, errs),
        None => Vec::new(),
    };

    let project = project?;
    let id = id?;
    Some(RunReport {
        instance: project.instance(),
        pipeline: project.pipeline(),
        run_key: id.to_string(),
        build_number: iid,
        execution_id: Some(id.to_string()),
        result: result?,
        source_result: status?,
        started_at: created_at?,
        finished_at,
        duration_ms,
        triggered_by,
        branch,
        repo_url: Some(project.web_url.clone()),
        repo: Some(project.path.clone()),
        commits,
        ci: true,
        cd: false,
        environment: None,
        cfr_status: None,
        params,
        artifacts: Vec::new(),
        trigger_chain: Vec::new(),
        themes: Vec::new(),
        web_url: web_url.or_else(|| Some(project.pipeline_url(id))),
        job_type: None,
        custom_fields: Vec::new(),
        stages,
        log: None,
        source: SOURCE.to_owned(),
        partial: true,
    })
}

/// Groups `builds[]` by `stage`, in the order of `stages` (then of first appearance), jobs by id.
fn stages_of(
    builds: &[Value],
    order: &[String],
    project: Option<&Project>,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Vec<Stage> {
    let mut groups: BTreeMap<String, Vec<(i64, Job)>> = BTreeMap::new();
    let mut seen: Vec<String> = Vec::new();
    for (i, v) in builds.iter().enumerate() {
        let path = format!("builds[{i}]");
        let Value::Object(m) = v else {
            errs.push(
                path,
                format!("must be an object (a job), got {}", type_name(v)),
            );
            continue;
        };
        let b = Obj::new(m, path);
        let job_id = b.opt_int("id", "the job id", errs);
        let stage = b.req_str("stage", errs);
        let job = job(&b, "", job_id, project, opts, errs);
        if let (Some(stage), Some(job)) = (stage, job) {
            if !seen.contains(&stage) {
                seen.push(stage.clone());
            }
            groups
                .entry(stage)
                .or_default()
                .push((job_id.unwrap_or(i as i64), job));
        }
    }
    let mut names: Vec<String> = order
        .iter()
        .filter(|s| groups.contains_key(*s))
        .cloned()
        .collect();
    names.extend(seen.into_iter().filter(|s| !order.contains(s)));
    names
        .into_iter()
        .filter_map(|name| {
            let mut jobs = groups.remove(&name)?;
            jobs.sort_by_key(|(id, _)| *id);
            let jobs: Vec<Job> = jobs.into_iter().map(|(_, j)| j).collect();
            let started_at = jobs.iter().filter_map(|j| j.step.started_at).min();
            let ended = jobs.iter().filter_map(|j| j.finished_at).max();
            let duration_ms = match (started_at, ended) {
                (Some(s), Some(e)) => i64::try_from((e - s).whole_milliseconds())
                    .ok()
                    .filter(|ms| *ms >= 0),
                _ => None,
            };
            Some(Stage {
                result: stage_result(&jobs),
                name,
                description: None,
                source_result: None,
                state: None,
                started_at,
                duration_ms,
                log: None,
                log_truncated: false,
                url: None,
                steps: jobs.into_iter().map(|j| j.step).collect(),
            })
        })
        .collect()
}

/// A job as a step, with what the stage needs to know about it.
struct Job {
    step: Stage,
    finished_at: Option<OffsetDateTime>,
    allow_failure: bool,
}

/// Reads a job. `prefix` is `build_` in a Job Hook, where the job's fields are top-level. The
/// project, when known, gives the job's link.
fn job(
    o: &Obj<'_>,
    prefix: &str,
    job_id: Option<i64>,
    project: Option<&Project>,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<Job> {
    let key = |k: &str| format!("{prefix}{k}");
    let name = o.req_str(&key("name"), errs);
    let status = o.req_str(&key("status"), errs);
    let result = status
        .as_deref()
        .and_then(|w| result_of(o, &key("status"), w, errs));
    let started_at = opt_time(o, &key("started_at"), opts, errs);
    let finished_at = opt_time(o, &key("finished_at"), opts, errs);
    let duration_ms = seconds(o, &key("duration"), errs).or_else(|| {
        let (s, f) = (started_at?, finished_at?);
        i64::try_from((f - s).whole_milliseconds())
            .ok()
            .filter(|ms| *ms >= 0)
    });
    let failure_reason = o.opt_str(&key("failure_reason"), errs);
    let allow_failure = o.opt_bool(&key("allow_failure"), errs).unwrap_or(false);
    let failed = result.is_some_and(RunResult::is_failed);
    let mut notes = Vec::new();
    if let Some(r) = failure_reason.filter(|_| failed) {
        notes.push(format!("failure reason: {r}"));
    }
    if allow_failure {
        notes.push("allowed to fail".to_owned());
    }
    Some(Job {
        step: Stage {
            name: name?,
            description: (!notes.is_empty()).then(|| notes.join("; ")),
            result,
            source_result: status.clone(),
            state: status,
            started_at,
            duration_ms,
            log: None,
            log_truncated: false,
            url: project.zip(job_id).map(|(p, id)| p.job_url(id)),
            steps: Vec::new(),
        },
        finished_at,
        allow_failure,
    })
}

/// A stage's result from its jobs, as GitLab shows it: running while any job runs; failed when a
/// job that may not fail failed (unstable when only jobs allowed to fail did); else canceled,
/// waiting, passed, manual or skipped, in that order.
fn stage_result(jobs: &[Job]) -> Option<RunResult> {
    STAGE_RULES
        .iter()
        .find(|(rule, _)| {
            jobs.iter()
                .any(|j| j.step.result.is_some_and(|r| rule(r, j.allow_failure)))
        })
        .map(|(_, r)| *r)
}

/// A test on a job's result (and whether the job may fail), and the stage result it gives.
type StageRule = (fn(RunResult, bool) -> bool, RunResult);

/// The stage results by precedence: the first rule a job meets gives the stage's result.
const STAGE_RULES: [StageRule; 8] = [
    (|r, _| r == RunResult::Running, RunResult::Running),
    (|r, may_fail| r.is_failed() && !may_fail, RunResult::Failure),
    (|r, _| r == RunResult::Aborted, RunResult::Aborted),
    (|r, _| r == RunResult::Queued, RunResult::Queued),
    (|r, _| r.is_failed(), RunResult::Unstable),
    (|r, _| r == RunResult::Success, RunResult::Success),
    (|r, _| r == RunResult::OnHold, RunResult::OnHold),
    (|r, _| r == RunResult::Skipped, RunResult::Skipped),
];

fn job_hook(root: &Obj<'_>, opts: &ParseOptions, errs: &mut Errors) -> Option<RunReport> {
    let project = project(root, errs);
    let pipeline_id = root.req_int("pipeline_id", "the pipeline id", errs);
    let build_id = root.opt_int("build_id", "the job id", errs);
    let stage_name = root.req_str("build_stage", errs);
    let branch = root.opt_str("ref", errs);
    let sha = root.opt_str("sha", errs);
    let mark = errs.0.len();
    let created_at = opt_time(root, "build_created_at", opts, errs);
    let job = job(root, "build_", build_id, project.as_ref(), opts, errs);
    let started_at = job.as_ref().and_then(|j| j.step.started_at).or(created_at);
    if started_at.is_none() && errs.0.len() == mark {
        errs.push(
            "build_created_at",
            "is required (when the job was created, e.g. 2021-02-23 02:41:37 UTC)",
        );
    }

    let project = project?;
    let pipeline_id = pipeline_id?;
    let job = job?;
    // What one job says of its pipeline: it waits while the job does, and runs otherwise.
    let (result, source_result) = if job.step.result == Some(RunResult::Queued) {
        (RunResult::Queued, "pending")
    } else {
        (RunResult::Running, "running")
    };
    Some(RunReport {
        instance: project.instance(),
        pipeline: project.pipeline(),
        run_key: pipeline_id.to_string(),
        build_number: None,
        execution_id: Some(pipeline_id.to_string()),
        result,
        source_result: source_result.to_owned(),
        started_at: started_at?,
        finished_at: None,
        duration_ms: None,
        triggered_by: None,
        branch,
        repo_url: Some(project.web_url.clone()),
        repo: Some(project.path.clone()),
        commits: sha
            .map(|sha| {
                vec![Commit {
                    sha,
                    committed_at: None,
                }]
            })
            .unwrap_or_default(),
        ci: true,
        cd: false,
        environment: None,
        cfr_status: None,
        params: Vec::new(),
        artifacts: Vec::new(),
        trigger_chain: Vec::new(),
        themes: Vec::new(),
        web_url: Some(project.pipeline_url(pipeline_id)),
        job_type: None,
        custom_fields: Vec::new(),
        stages: vec![Stage {
            name: stage_name?,
            steps: vec![job.step],
            ..Stage::default()
        }],
        log: None,
        source: SOURCE.to_owned(),
        partial: true,
    })
}

fn result_of(o: &Obj<'_>, key: &str, word: &str, errs: &mut Errors) -> Option<RunResult> {
    let r = status_result(word);
    if r.is_none() {
        errs.push(
            o.path(key),
            format!(
                "unknown GitLab status \"{}\"; accepted: {}",
                truncate(word, 40),
                STATUSES
                    .iter()
                    .map(|(w, _)| *w)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    r
}

/// An optional duration in seconds (GitLab sends whole or fractional seconds), as milliseconds.
fn seconds(o: &Obj<'_>, key: &str, errs: &mut Errors) -> Option<i64> {
    let v = o.get(key)?;
    match v.as_f64() {
        Some(s) if (0.0..1.0e12).contains(&s) => Some((s * 1000.0).round() as i64),
        Some(s) => {
            errs.push(
                o.path(key),
                format!("must be a number of seconds, 0 or more, got {s}"),
            );
            None
        }
        None => {
            errs.push(
                o.path(key),
                format!("must be a number of seconds, got {}", type_name(v)),
            );
            None
        }
    }
}

fn param(name: &str, value: Value) -> Param {
    Param {
        name: name.to_owned(),
        value,
        kind: None,
    }
}

/// An optional time field in GitLab's `2016-08-12 15:23:28 UTC` or RFC 3339 form, range-checked.
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
                "\"{}\" is not a date-time (GitLab's 2016-08-12 15:23:28 UTC, or RFC 3339)",
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

/// (scheme, host with port in lower case, path) of an absolute URL.
fn split_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || scheme.is_empty() {
        return None;
    }
    let path = rest[end..].split(['?', '#']).next().unwrap_or("");
    Some((
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase(),
        path.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_with(result: RunResult, allow_failure: bool) -> Job {
        Job {
            step: Stage {
                result: Some(result),
                ..Stage::default()
            },
            finished_at: None,
            allow_failure,
        }
    }

    #[test]
    fn stage_results() {
        use RunResult::*;
        let r = |jobs: &[(RunResult, bool)]| {
            stage_result(
                &jobs
                    .iter()
                    .map(|(r, a)| job_with(*r, *a))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(r(&[(Success, false), (Failure, false)]), Some(Failure));
        assert_eq!(r(&[(Success, false), (Failure, true)]), Some(Unstable));
        assert_eq!(r(&[(Success, false), (Running, false)]), Some(Running));
        assert_eq!(r(&[(Skipped, false), (Queued, false)]), Some(Queued));
        assert_eq!(r(&[(Skipped, false), (OnHold, false)]), Some(OnHold));
        assert_eq!(r(&[(Skipped, false)]), Some(Skipped));
        assert_eq!(r(&[]), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://192.168.64.1:3005/gitlab-org/gitlab-test"),
            Some((
                "http".into(),
                "192.168.64.1:3005".into(),
                "/gitlab-org/gitlab-test".into()
            ))
        );
        assert_eq!(split_url("gitlab.com/a/b"), None);
    }
}
