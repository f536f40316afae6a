//! GitHub Actions webhooks: `workflow_run` and `workflow_job` events (`X-GitHub-Event`).
//!
//! Both events report one run, partially (`partial = true`), and the store merges them in
//! whatever order they arrive. Every event of a run names it the same way:
//!
//! - instance GUID: the host of `repository.html_url` (`github.com`, or a GitHub Enterprise
//!   Server host);
//! - pipeline full name: `<repository.full_name>/<workflow name>`. A `workflow_job` payload names
//!   the workflow (`workflow_name`) but not its file, so the name is what both events share; a
//!   `workflow_run` whose `name` is empty falls back to `workflow.name`, then to the file path.
//!   A `workflow_job` without `workflow_name` (older deliveries) leaves its pipeline unnamed and
//!   is attached to its run by the run key (run id and attempt);
//! - run key: `<run id>-<run_attempt>`: a re-run attempt is a run of its own.
//!
//! `workflow_run` carries the run's own fields (status or conclusion, times, branch, head commit,
//! actor, links). `workflow_job` carries one stage (the job, with its `steps` as steps) and only
//! the run-level fields it knows: the run is queued while the job is, running otherwise (a
//! finished job does not finish its run); the store keeps a newer or finished state of the run.
//! `ping` and every other event are acknowledged and ignored. The signature
//! (`X-Hub-Signature-256`) and delivery de-duplication happen before this parser runs.

use cistern_core::{
    Commit, FieldError, InstanceRef, Param, PipelineRef, RunReport, RunResult, Stage,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::fields::{truncate, type_name, Errors, Obj};
use crate::{json, times, Headers, Inbound, ParseOptions, Rejection};

/// The header naming the event.
pub const EVENT_HEADER: &str = "X-GitHub-Event";
/// The instance GUID when the repository's URL names no host.
pub const DEFAULT_HOST: &str = "github.com";
/// The instance kind of every GitHub sender.
pub const INSTANCE_KIND: &str = "github";
/// The dialect name recorded on runs (`RunReport::source`).
pub const SOURCE: &str = "github";

/// The words of `status` (runs, jobs and steps) and the results they stand for while not completed.
const STATUSES: &[(&str, RunResult)] = &[
    ("requested", RunResult::Queued),
    ("queued", RunResult::Queued),
    ("waiting", RunResult::Queued),
    ("pending", RunResult::Queued),
    ("in_progress", RunResult::Running),
];

/// The words of `conclusion` and the results they stand for.
const CONCLUSIONS: &[(&str, RunResult)] = &[
    ("success", RunResult::Success),
    ("failure", RunResult::Failure),
    ("cancelled", RunResult::Aborted),
    ("skipped", RunResult::Skipped),
    ("timed_out", RunResult::Error),
    ("action_required", RunResult::OnHold),
    // Completed with neither success nor failure.
    ("neutral", RunResult::Skipped),
    // Marked stale by GitHub after too long without completing.
    ("stale", RunResult::Aborted),
    ("startup_failure", RunResult::Error),
];

/// The identity every event of one workflow run shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    /// Instance GUID (the GitHub host).
    pub host: String,
    /// Pipeline full name: `<owner>/<repo>/<workflow name>`.
    pub full_name: String,
    /// `<run id>-<run attempt>`.
    pub run_key: String,
}

/// Parses a GitHub webhook delivery.
pub fn parse(
    headers: &Headers,
    body: &[u8],
    opts: &ParseOptions,
) -> Result<Vec<Inbound>, Rejection> {
    let Some(event) = headers.get(EVENT_HEADER).map(str::trim) else {
        return Err(Rejection::Invalid(vec![FieldError::new(
            EVENT_HEADER,
            "header is required (GitHub sends the event name in it: workflow_run, workflow_job or ping)",
        )]));
    };
    let event = event.to_ascii_lowercase();
    if event != "workflow_run" && event != "workflow_job" {
        return Ok(vec![Inbound::Ignored(event)]);
    }
    let value = json::parse(body, "").map_err(Rejection::Malformed)?;
    let Value::Object(map) = value else {
        return Err(Rejection::Invalid(vec![FieldError::new(
            "",
            format!(
                "the body must be a JSON object (a GitHub {event} event), got {}",
                type_name(&value)
            ),
        )]));
    };
    let root = Obj::new(&map, "");
    let mut errs = Errors::default();
    let report = if event == "workflow_run" {
        workflow_run(&root, opts, &mut errs)
    } else {
        workflow_job(&root, opts, &mut errs)
    };
    match report {
        Some(r) if errs.is_empty() => Ok(vec![Inbound::Run(Box::new(r))]),
        _ => Err(Rejection::Invalid(errs.0)),
    }
}

/// What both events read from `repository`.
struct Repository {
    full_name: String,
    html_url: Option<String>,
    host: String,
}

fn repository(root: &Obj<'_>, errs: &mut Errors) -> Option<Repository> {
    let Some(repo) = root.opt_object("repository", errs) else {
        if !root.has("repository") {
            errs.push(
                "repository",
                "is required (the repository object GitHub sends with every workflow event)",
            );
        }
        return None;
    };
    let full_name = repo.req_str("full_name", errs);
    let html_url = repo.opt_str("html_url", errs);
    let host = html_url
        .as_deref()
        .and_then(host_of)
        .unwrap_or_else(|| DEFAULT_HOST.to_owned());
    Some(Repository {
        full_name: full_name?,
        html_url,
        host,
    })
}

fn workflow_run(root: &Obj<'_>, opts: &ParseOptions, errs: &mut Errors) -> Option<RunReport> {
    let repo = repository(root, errs);
    let Some(run) = root.opt_object("workflow_run", errs) else {
        if !root.has("workflow_run") {
            errs.push(
                "workflow_run",
                "is required (the run object of a workflow_run event)",
            );
        }
        return None;
    };
    let workflow = root.opt_object("workflow", errs);
    let run_id = run.req_int("id", "the workflow run id", errs);
    let attempt = attempt(&run, errs);
    let name = run
        .opt_str("name", errs)
        .or_else(|| workflow.as_ref().and_then(|w| w.opt_str("name", errs)));
    let path = run
        .opt_str("path", errs)
        .or_else(|| workflow.as_ref().and_then(|w| w.opt_str("path", errs)));
    let workflow_name = name.clone().or_else(|| path.clone());
    if workflow_name.is_none() {
        errs.push(
            run.path("name"),
            "is required (the workflow's name; workflow.name or workflow_run.path are accepted instead)",
        );
    }

    let status = run.opt_str("status", errs).or_else(|| {
        // Old payloads without `status`: the action says as much.
        root.opt_str("action", errs)
    });
    let conclusion = run.opt_str("conclusion", errs);
    let outcome = run_result(&run, status.as_deref(), conclusion, errs);

    let mark = errs.0.len();
    let created = opt_time(&run, "created_at", opts, errs);
    let run_started = opt_time(&run, "run_started_at", opts, errs);
    let started_at = run_started.or(created);
    // Absent or blank, as opposed to wrong (which recorded its own error).
    if started_at.is_none() && errs.0.len() == mark {
        errs.push(
            run.path("run_started_at"),
            "is required (run_started_at, or created_at, RFC 3339)",
        );
    }
    let updated = opt_time(&run, "updated_at", opts, errs);
    let finished = outcome.as_ref().is_some_and(|(r, _)| r.is_finished());
    let finished_at = if finished { updated } else { None };
    let duration_ms = match (started_at, finished_at) {
        (Some(s), Some(f)) => i64::try_from((f - s).whole_milliseconds())
            .ok()
            .filter(|ms| *ms >= 0),
        _ => None,
    };

    let head_sha = run.opt_str("head_sha", errs);
    let head_commit = run.opt_object("head_commit", errs);
    let committed_at = head_commit
        .as_ref()
        .and_then(|c| opt_time(c, "timestamp", opts, errs));
    let head_commit_id = head_commit.as_ref().and_then(|c| c.opt_str("id", errs));
    let commits = match head_sha.or(head_commit_id.clone()) {
        Some(sha) => {
            let same = head_commit_id.as_deref().is_none_or(|id| id == sha);
            vec![Commit {
                sha,
                committed_at: if same { committed_at } else { None },
            }]
        }
        None => Vec::new(),
    };
    let login = |key: &str, errs: &mut Errors| {
        run.opt_object(key, errs)
            .and_then(|a| a.opt_str("login", errs))
    };
    let triggered_by = login("triggering_actor", errs).or_else(|| login("actor", errs));
    let branch = run.opt_str("head_branch", errs);
    let web_url = run.opt_str("html_url", errs);
    let build_number = run.opt_int("run_number", "the run number", errs);
    let mut params = Vec::new();
    if let Some(e) = run.opt_str("event", errs) {
        params.push(param("event", &e));
    }
    if let Some(t) = run.opt_str("display_title", errs) {
        params.push(param("display_title", &t));
    }

    let repo = repo?;
    let run_id = run_id?;
    let workflow_name = workflow_name?;
    let (result, source_result) = outcome?;
    let id = identity(&repo, &workflow_name, run_id, attempt?);
    Some(RunReport {
        instance: instance(&repo),
        pipeline: pipeline(&repo, &id, &workflow_name, path),
        run_key: id.run_key,
        build_number,
        execution_id: Some(run_id.to_string()),
        result,
        source_result,
        started_at: started_at?,
        finished_at,
        duration_ms,
        triggered_by,
        branch,
        repo_url: repo.html_url.clone(),
        repo: Some(repo.full_name.clone()),
        commits,
        ci: true,
        cd: false,
        environment: None,
        cfr_status: None,
        params,
        artifacts: Vec::new(),
        trigger_chain: Vec::new(),
        themes: Vec::new(),
        web_url,
        job_type: None,
        custom_fields: Vec::new(),
        stages: Vec::new(),
        log: None,
        source: SOURCE.to_owned(),
        partial: true,
    })
}

/// A job: one stage of its run, with its steps.
fn workflow_job(root: &Obj<'_>, opts: &ParseOptions, errs: &mut Errors) -> Option<RunReport> {
    let repo = repository(root, errs);
    let Some(job) = root.opt_object("workflow_job", errs) else {
        if !root.has("workflow_job") {
            errs.push(
                "workflow_job",
                "is required (the job object of a workflow_job event)",
            );
        }
        return None;
    };
    let run_id = job.req_int("run_id", "the workflow run id", errs);
    let attempt = attempt(&job, errs);
    // Older deliveries and many published examples have no `workflow_name`: such a job names
    // no pipeline, and the store attaches it to its run by the run's key (see below).
    let workflow_name = job.opt_str("workflow_name", errs);
    let mark = errs.0.len();
    let stage = job_stage(&job, opts, errs);
    let created = opt_time(&job, "created_at", opts, errs);
    let started_at = stage.as_ref().and_then(|s| s.started_at).or(created);
    if started_at.is_none() && errs.0.len() == mark {
        errs.push(
            job.path("started_at"),
            "is required (when the job started, RFC 3339)",
        );
    }
    let branch = job.opt_str("head_branch", errs);
    let head_sha = job.opt_str("head_sha", errs);

    let repo = repo?;
    let run_id = run_id?;
    let stage = stage?;
    // What a job says of its run: it is queued while the job is, and running otherwise.
    let (result, source_result) = if stage.result == Some(RunResult::Queued) {
        (RunResult::Queued, "queued")
    } else {
        (RunResult::Running, "in_progress")
    };
    // Without the workflow's name the pipeline is left unnamed (an empty name): the store puts
    // the job on the run of the same key if it knows one, else on a run of its own in a
    // placeholder pipeline, which the run's named report later replaces.
    let (id_name, workflow_name) = match workflow_name {
        Some(n) => (n.clone(), n),
        None => (format!("workflow run {run_id}"), String::new()),
    };
    let id = identity(&repo, &id_name, run_id, attempt?);
    let web_url = repo
        .html_url
        .as_deref()
        .map(|u| format!("{}/actions/runs/{run_id}", u.trim_end_matches('/')));
    Some(RunReport {
        instance: instance(&repo),
        pipeline: pipeline(&repo, &id, &workflow_name, None),
        run_key: id.run_key,
        build_number: None,
        execution_id: Some(run_id.to_string()),
        result,
        source_result: source_result.to_owned(),
        started_at: started_at?,
        finished_at: None,
        duration_ms: None,
        triggered_by: None,
        branch,
        repo_url: repo.html_url.clone(),
        repo: Some(repo.full_name.clone()),
        commits: head_sha
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
        web_url,
        job_type: None,
        custom_fields: Vec::new(),
        stages: vec![stage],
        log: None,
        source: SOURCE.to_owned(),
        partial: true,
    })
}

fn job_stage(job: &Obj<'_>, opts: &ParseOptions, errs: &mut Errors) -> Option<Stage> {
    let name = job.req_str("name", errs);
    let (result, source_result, state) = step_result(job, errs);
    let started_at = opt_time(job, "started_at", opts, errs);
    let completed_at = opt_time(job, "completed_at", opts, errs);
    let url = job.opt_str("html_url", errs);
    let runner = job.opt_str("runner_name", errs);
    let labels = job.opt_str_list("labels", errs);
    let mut notes = Vec::new();
    if let Some(r) = runner {
        notes.push(format!("runner: {r}"));
    }
    if !labels.is_empty() {
        notes.push(format!("labels: {}", labels.join(", ")));
    }
    let mut steps: Vec<(i64, Stage)> = Vec::new();
    if let Some(items) = job.opt_array("steps", errs) {
        for (i, v) in items.iter().enumerate() {
            let path = format!("{}[{i}]", job.path("steps"));
            let Value::Object(m) = v else {
                errs.push(
                    path,
                    format!("must be an object (a job step), got {}", type_name(v)),
                );
                continue;
            };
            let s = Obj::new(m, path);
            let name = s.req_str("name", errs);
            let number = s.opt_int("number", "the step number", errs);
            let (result, source_result, state) = step_result(&s, errs);
            let started = opt_time(&s, "started_at", opts, errs);
            let completed = opt_time(&s, "completed_at", opts, errs);
            if let Some(name) = name {
                steps.push((
                    number.unwrap_or(i as i64 + 1),
                    Stage {
                        name,
                        description: number.map(|n| format!("step {n}")),
                        result,
                        source_result,
                        state,
                        started_at: started,
                        duration_ms: span(started, completed),
                        log: None,
                        log_truncated: false,
                        url: None,
                        steps: Vec::new(),
                    },
                ));
            }
        }
    }
    steps.sort_by_key(|(n, _)| *n);
    Some(Stage {
        name: name?,
        description: (!notes.is_empty()).then(|| notes.join("; ")),
        result,
        source_result,
        state,
        started_at,
        duration_ms: span(started_at, completed_at),
        log: None,
        log_truncated: false,
        url,
        steps: steps.into_iter().map(|(_, s)| s).collect(),
    })
}

/// A job's or step's result from `status` and `conclusion`: (result, the word it came from, state).
fn step_result(
    o: &Obj<'_>,
    errs: &mut Errors,
) -> (Option<RunResult>, Option<String>, Option<String>) {
    let status = o.opt_str("status", errs);
    let conclusion = o.opt_str("conclusion", errs);
    match (status.as_deref(), conclusion) {
        (_, Some(c)) => {
            let r = lookup(CONCLUSIONS, &c);
            if r.is_none() {
                errs.push(o.path("conclusion"), unknown("conclusion", &c, CONCLUSIONS));
            }
            (r, Some(c), status)
        }
        (Some(s), None) if s.eq_ignore_ascii_case("completed") => (None, None, status),
        (Some(s), None) => {
            let r = lookup(STATUSES, s);
            if r.is_none() {
                errs.push(o.path("status"), unknown_status(s));
            }
            (r, Some(s.to_owned()), status.clone())
        }
        (None, None) => (None, None, None),
    }
}

/// A run's result from `status` and `conclusion`: (result, the word it came from).
fn run_result(
    run: &Obj<'_>,
    status: Option<&str>,
    conclusion: Option<String>,
    errs: &mut Errors,
) -> Option<(RunResult, String)> {
    let Some(status) = status else {
        errs.push(
            run.path("status"),
            "is required (requested, queued, waiting, pending, in_progress or completed)",
        );
        return None;
    };
    if status.eq_ignore_ascii_case("completed") {
        let Some(c) = conclusion else {
            errs.push(
                run.path("conclusion"),
                format!(
                    "is required when status is completed; {}",
                    accepted(CONCLUSIONS)
                ),
            );
            return None;
        };
        let Some(r) = lookup(CONCLUSIONS, &c) else {
            errs.push(
                run.path("conclusion"),
                unknown("conclusion", &c, CONCLUSIONS),
            );
            return None;
        };
        return Some((r, c));
    }
    let Some(r) = lookup(STATUSES, status) else {
        errs.push(run.path("status"), unknown_status(status));
        return None;
    };
    Some((r, status.to_owned()))
}

fn attempt(o: &Obj<'_>, errs: &mut Errors) -> Option<i64> {
    match o.opt_int("run_attempt", "the attempt number, from 1", errs) {
        // Payloads from before re-runs existed carry no attempt: it was the first.
        None if !o.has("run_attempt") => Some(1),
        None => None,
        Some(n) if n >= 1 => Some(n),
        Some(n) => {
            errs.push(o.path("run_attempt"), format!("must be 1 or more, got {n}"));
            None
        }
    }
}

/// The identity of a workflow run, as both events compute it.
pub fn identity_of(
    repo_html_url: Option<&str>,
    repo_full_name: &str,
    workflow_name: &str,
    run_id: i64,
    run_attempt: i64,
) -> RunIdentity {
    RunIdentity {
        host: repo_html_url
            .and_then(host_of)
            .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
        full_name: format!("{repo_full_name}/{workflow_name}"),
        run_key: format!("{run_id}-{run_attempt}"),
    }
}

fn identity(repo: &Repository, workflow_name: &str, run_id: i64, attempt: i64) -> RunIdentity {
    identity_of(
        repo.html_url.as_deref(),
        &repo.full_name,
        workflow_name,
        run_id,
        attempt,
    )
}

fn instance(repo: &Repository) -> InstanceRef {
    InstanceRef {
        guid: repo.host.clone(),
        name: Some(repo.host.clone()),
        url: Some(format!("https://{}", repo.host)),
        kind: Some(INSTANCE_KIND.to_owned()),
    }
}

fn pipeline(
    repo: &Repository,
    id: &RunIdentity,
    workflow_name: &str,
    path: Option<String>,
) -> PipelineRef {
    PipelineRef {
        full_name: id.full_name.clone(),
        name: workflow_name.to_owned(),
        qualified_name: path,
        project: Some(repo.full_name.clone()),
        module: None,
    }
}

fn lookup(table: &[(&str, RunResult)], word: &str) -> Option<RunResult> {
    let word = word.trim();
    table
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|(_, r)| *r)
}

fn accepted(table: &[(&str, RunResult)]) -> String {
    format!(
        "accepted: {}",
        table.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(", ")
    )
}

fn unknown(what: &str, word: &str, table: &[(&str, RunResult)]) -> String {
    format!(
        "unknown {what} \"{}\"; {}",
        truncate(word, 40),
        accepted(table)
    )
}

fn unknown_status(word: &str) -> String {
    format!(
        "unknown status \"{}\"; accepted: {}, completed",
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

fn span(start: Option<OffsetDateTime>, end: Option<OffsetDateTime>) -> Option<i64> {
    let ms = (end? - start?).whole_milliseconds();
    i64::try_from(ms).ok().filter(|ms| *ms >= 0)
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
                "\"{}\" is not a date-time (RFC 3339, e.g. 2020-10-05T16:33:24Z)",
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

/// The host (with its port, lower case) of an absolute URL.
fn host_of(url: &str) -> Option<String> {
    let (_, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            host_of("https://github.com/octo-org/octo-repo").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            host_of("https://GHE.example.com:8443/o/r").as_deref(),
            Some("ghe.example.com:8443")
        );
        assert_eq!(host_of("github.com/o/r"), None);
    }

    #[test]
    fn identity_is_shared() {
        let a = identity_of(Some("https://github.com/o/r"), "o/r", "CI", 42, 2);
        assert_eq!(a.full_name, "o/r/CI");
        assert_eq!(a.run_key, "42-2");
        assert_eq!(a.host, "github.com");
        assert_eq!(identity_of(None, "o/r", "CI", 42, 2), a);
    }
}
