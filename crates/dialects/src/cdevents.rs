//! CDEvents (spec 0.4 and 0.5) over CloudEvents 1.0 HTTP: binary mode (`ce-*` headers),
//! structured mode (`Content-Type: application/cloudevents+json`), batches
//! (`application/cloudevents-batch+json`) and a bare CDEvent body.
//!
//! The CDEvent is `{context: {id, source, type, timestamp, …}, subject: {id, source?, content}}`.
//! In binary mode the body is the CloudEvent's data: usually that whole CDEvent (what the CDEvents
//! SDKs send), else the subject alone (or `{subject}`), its context taken from the `ce-*` headers.
//! Structured mode carries the same in `data` with the attributes beside it. Where both the
//! CloudEvent and the CDEvent give a type they must agree.
//!
//! Event types `dev.cdevents.<subject>.<predicate>.<version>` (any 0.x version) map to:
//!
//! - `pipelinerun.queued|started|finished` → a partial run. CDEvents identifies a pipeline run
//!   only by its source and id: a `taskRun` names its `pipelineRun` by `{id, source?}` and never by
//!   pipeline name, and `pipelineName` is optional even on `pipelineRun` events. So every event of
//!   a run is keyed by what they all carry: instance GUID = the pipeline run's source
//!   (`subject.source`, else `context.source`), pipeline full name = that same source, run key =
//!   the pipeline run's id. `pipelineName` is kept as the run's `pipelineName` param. A finished
//!   run's result comes from `content.outcome` (`success`, `failure`, `error`, `cancel`), its
//!   `errors` become the run log and `url` its link.
//! - `taskrun.started|finished` (and `queued`) → a partial run of its pipeline run
//!   (instance and pipeline = `content.pipelineRun.source`, else `context.source`; run key =
//!   `content.pipelineRun.id`) with one stage: the task (`taskName`, else the task run's id).
//!   Emitters must give a pipeline run and its task runs the same source, or name it in
//!   `pipelineRun.source`, as CDEvents recommends one source per producer.
//! - `service.deployed|upgraded|rolledback` → a complete deployment run (`cd = true`): instance =
//!   `context.source`, pipeline = the service (`subject.id`, the same id incidents name in
//!   `content.service.id`), run key = `context.id` (each event is one deployment), environment =
//!   `content.environment.id`, artifact = `content.artifactId`, result success. A rollback is a
//!   successful deployment that marks a change failure (`cfr_status = true`): the dialect cannot
//!   reach back to flag the deployment it reverts, so the rollback stands for it.
//! - `incident.detected|reported|resolved` → an incident (`subject.id` within `subject.source`,
//!   else `context.source`); `change.merged` → the time a change landed (`subject.id`).
//! - Every other CDEvents type is acknowledged and ignored; anything else is refused.

use cistern_core::{
    FieldError, IncidentReport, InstanceRef, LogText, Param, PipelineRef, RunReport, RunResult,
    Stage,
};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::fields::{truncate, type_name, Errors, Obj};
use crate::{json, times, Headers, Inbound, ParseOptions, Rejection};

/// Content type of a structured-mode CloudEvent.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// Content type of a batch of structured-mode CloudEvents.
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The instance kind of every CDEvents sender.
pub const INSTANCE_KIND: &str = "cdevents";
/// The dialect name recorded on runs (`RunReport::source`).
pub const SOURCE: &str = "cdevents";
/// Prefix of every CDEvents type.
pub const TYPE_PREFIX: &str = "dev.cdevents.";

/// The CDEvents subjects (spec 0.4 and 0.5); events about those not mapped are ignored.
const SUBJECTS: &[&str] = &[
    "pipelinerun",
    "taskrun",
    "build",
    "artifact",
    "environment",
    "service",
    "incident",
    "ticket",
    "repository",
    "branch",
    "change",
    "testcase",
    "testsuite",
    "testcaserun",
    "testsuiterun",
    "testoutput",
    "changewindow",
    "deployment",
    "migration",
    "targetrollout",
    "reconciliation",
    "scheduledexecution",
];

/// `content.outcome` words and the results they stand for.
const OUTCOMES: &[(&str, RunResult)] = &[
    ("success", RunResult::Success),
    ("failure", RunResult::Failure),
    ("error", RunResult::Error),
    ("cancel", RunResult::Aborted),
    ("canceled", RunResult::Aborted),
    ("cancelled", RunResult::Aborted),
];

/// A CDEvents type, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType {
    /// Subject, lower case (`pipelinerun`).
    pub subject: String,
    /// Predicate, lower case (`finished`).
    pub predicate: String,
    /// The event's version (`0.2.0`, `0.3.0-draft`).
    pub version: String,
}

impl EventType {
    /// Splits `dev.cdevents.<subject>.<predicate>.<version>`; the message says what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        let shape = "expected dev.cdevents.<subject>.<predicate>.<version>, \
                     e.g. dev.cdevents.pipelinerun.finished.0.2.0";
        let Some(rest) = s.trim().strip_prefix(TYPE_PREFIX) else {
            return Err(format!(
                "\"{}\" is not a CDEvents type; {shape}",
                truncate(s, 60)
            ));
        };
        let mut parts = rest.splitn(3, '.');
        let (Some(subject), Some(predicate), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("\"{}\": {shape}", truncate(s, 60)));
        };
        if subject.is_empty() || predicate.is_empty() || version.is_empty() {
            return Err(format!("\"{}\": {shape}", truncate(s, 60)));
        }
        let major = version.split('.').next().unwrap_or("");
        if major != "0" {
            return Err(format!(
                "version {} of {subject}.{predicate} is not supported; accepted: 0.x (CDEvents spec 0.4 and 0.5)",
                truncate(version, 20)
            ));
        }
        Ok(Self {
            subject: subject.to_ascii_lowercase(),
            predicate: predicate.to_ascii_lowercase(),
            version: version.to_owned(),
        })
    }
}

/// Parses a CDEvents delivery (one event, or a batch).
pub fn parse(
    headers: &Headers,
    body: &[u8],
    opts: &ParseOptions,
) -> Result<Vec<Inbound>, Rejection> {
    let value = json::parse(body, "").map_err(Rejection::Malformed)?;
    let content_type = headers
        .get("content-type")
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let mut errs = Errors::default();
    let mut out = Vec::new();
    if content_type == BATCH {
        let Value::Array(items) = &value else {
            return Err(Rejection::Invalid(vec![FieldError::new(
                "",
                format!(
                    "a {BATCH} body must be a JSON array of CloudEvents, got {}",
                    type_name(&value)
                ),
            )]));
        };
        for (i, item) in items.iter().enumerate() {
            out.extend(structured(item, &format!("[{i}]"), opts, &mut errs));
        }
    } else {
        let is_structured = content_type == STRUCTURED
            || matches!(&value, Value::Object(m) if m.contains_key("specversion") && !m.contains_key("context"));
        let is_binary = headers.get("ce-specversion").is_some() || headers.get("ce-type").is_some();
        let item = if is_structured {
            structured(&value, "", opts, &mut errs)
        } else if is_binary {
            binary(headers, &value, opts, &mut errs)
        } else {
            cdevent(&value, "", None, opts, &mut errs)
        };
        out.extend(item);
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(Rejection::Invalid(errs.0))
    }
}

/// CloudEvent attributes standing in for a CDEvent context that does not carry them.
struct Envelope {
    id: Option<String>,
    source: Option<String>,
    kind: Option<String>,
    time: Option<String>,
    /// The field names to cite: `ce-id`… for headers, `id`… for a structured event.
    names: [String; 4],
}

fn binary(
    headers: &Headers,
    value: &Value,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<Inbound> {
    check_specversion(headers.get("ce-specversion"), "ce-specversion", errs)?;
    let get = |k: &str| {
        headers
            .get(k)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let env = Envelope {
        id: get("ce-id"),
        source: get("ce-source"),
        kind: get("ce-type"),
        time: get("ce-time"),
        names: ["ce-id", "ce-source", "ce-type", "ce-time"].map(str::to_owned),
    };
    cdevent(value, "", Some(&env), opts, errs)
}

fn structured(
    value: &Value,
    path: &str,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<Inbound> {
    let Value::Object(m) = value else {
        errs.push(
            path,
            format!(
                "must be a CloudEvent (a JSON object with specversion, id, source, type and data), got {}",
                type_name(value)
            ),
        );
        return None;
    };
    let o = Obj::new(m, path);
    let specversion = o.req_str("specversion", errs)?;
    check_specversion(Some(&specversion), &o.path("specversion"), errs)?;
    if o.has("data_base64") {
        errs.push(
            o.path("data_base64"),
            "is not accepted: send the CDEvent as JSON in data",
        );
        return None;
    }
    let env = Envelope {
        id: o.opt_str("id", errs),
        source: o.opt_str("source", errs),
        kind: o.opt_str("type", errs),
        time: o.opt_str("time", errs),
        names: ["id", "source", "type", "time"].map(|k| o.path(k)),
    };
    let data_path = o.path("data");
    let data = match o.get("data") {
        None => {
            errs.push(
                &data_path,
                "is required (the CDEvent, or its subject, as a JSON object)",
            );
            return None;
        }
        Some(Value::String(s)) => match json::parse(s.as_bytes(), &data_path) {
            Ok(v) => v,
            Err(e) => {
                errs.0.push(e);
                return None;
            }
        },
        Some(v) => v.clone(),
    };
    cdevent(&data, &data_path, Some(&env), opts, errs)
}

fn check_specversion(v: Option<&str>, field: &str, errs: &mut Errors) -> Option<()> {
    match v.map(str::trim) {
        Some("1.0") => Some(()),
        None => {
            errs.push(
                field,
                "is required with the other ce-* headers (CloudEvents binary mode; 1.0)",
            );
            None
        }
        Some(other) => {
            errs.push(
                field,
                format!(
                    "CloudEvents {} is not supported; accepted: 1.0",
                    truncate(other, 20)
                ),
            );
            None
        }
    }
}

/// The CDEvent context, resolved.
struct Context {
    id: String,
    source: String,
    kind: EventType,
    type_text: String,
    /// The field that gave the type (`context.type`, `ce-type`…), for errors.
    type_field: String,
    at: OffsetDateTime,
}

/// Reads a CDEvent (or, with an envelope, a subject alone) at `path`.
fn cdevent(
    value: &Value,
    path: &str,
    env: Option<&Envelope>,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<Inbound> {
    let Value::Object(m) = value else {
        errs.push(
            path,
            format!(
                "must be a CDEvent (a JSON object with context and subject), got {}",
                type_name(value)
            ),
        );
        return None;
    };
    let root = Obj::new(m, path);
    let empty = Map::new();
    if env.is_none() && !root.has("context") && !root.has("subject") {
        errs.push(
            path,
            "must be a CDEvent ({\"context\": {id, source, type, timestamp}, \"subject\": {id, content}}), \
             or a CloudEvent carrying one (ce-* headers, or Content-Type: application/cloudevents+json)",
        );
        return None;
    }
    // A whole CDEvent, `{subject}` with its context in the envelope, or the subject alone.
    let (ctx_obj, subject) = if root.has("context") || root.has("subject") {
        let ctx = root.opt_object("context", errs);
        if ctx.is_none() && env.is_none() && !root.has("context") {
            errs.push(
                root.path("context"),
                "is required (id, source, type and timestamp of the CDEvent)",
            );
        }
        let subject = root.opt_object("subject", errs);
        if subject.is_none() && !root.has("subject") {
            errs.push(
                root.path("subject"),
                "is required (the subject of the CDEvent: id and content)",
            );
        }
        (ctx, subject)
    } else {
        (None, Some(Obj::new(m, path)))
    };
    let context = context(ctx_obj.as_ref(), &root, env, opts, errs);
    let subject = subject?;
    let subject_id = subject.req_str("id", errs);
    let subject_source = subject.opt_str("source", errs);
    let content = subject
        .opt_object("content", errs)
        .unwrap_or_else(|| Obj::new(&empty, subject.path("content")));
    let context = context?;
    // Mapped even when the id is missing, so that the content's errors are reported too;
    // nothing is returned when any error was recorded.
    let s = Subject {
        id: subject_id.unwrap_or_default(),
        source: subject_source,
        content,
    };
    let kind = context.kind.clone();
    match (kind.subject.as_str(), kind.predicate.as_str()) {
        ("pipelinerun", "queued" | "started" | "finished") => {
            pipeline_run(&context, &s, opts, errs).map(|r| Inbound::Run(Box::new(r)))
        }
        ("taskrun", "queued" | "started" | "finished") => {
            task_run(&context, &s, opts, errs).map(|r| Inbound::Run(Box::new(r)))
        }
        ("service", "deployed" | "upgraded" | "rolledback") => {
            Some(Inbound::Run(Box::new(deployment(&context, &s, errs))))
        }
        ("incident", "detected" | "reported" | "resolved") => {
            Some(Inbound::Incident(incident(&context, &s, errs)))
        }
        ("change", "merged") => {
            let repo = s
                .content
                .opt_object("repository", errs)
                .and_then(|r| r.opt_str_any(&["id", "name"], errs));
            Some(Inbound::CommitTime {
                sha: s.id,
                at: context.at,
                repo,
            })
        }
        (subject, _) if SUBJECTS.contains(&subject) => Some(Inbound::Ignored(context.type_text)),
        (subject, _) => {
            errs.push(
                context.type_field.clone(),
                format!(
                    "unknown CDEvents subject \"{}\"; accepted: {}",
                    truncate(subject, 40),
                    SUBJECTS.join(", ")
                ),
            );
            None
        }
    }
}

fn context(
    ctx: Option<&Obj<'_>>,
    root: &Obj<'_>,
    env: Option<&Envelope>,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<Context> {
    if ctx.is_none() && env.is_none() {
        // Already reported: the CDEvent has no context.
        return None;
    }
    let ctx_path = |k: &str| match ctx {
        Some(c) => c.path(k),
        None => root.path(&format!("context.{k}")),
    };
    // A context field, else its envelope stand-in: (value, the field it came from).
    let field = |key: &str, idx: usize, errs: &mut Errors| -> Option<(String, String)> {
        if let Some(c) = ctx.filter(|c| c.has(key)) {
            return c.req_str(key, errs).map(|v| (v, ctx_path(key)));
        }
        let from_env = env.and_then(|e| {
            let v = match idx {
                0 => e.id.clone(),
                1 => e.source.clone(),
                2 => e.kind.clone(),
                _ => e.time.clone(),
            };
            v.map(|v| (v, e.names[idx].clone()))
        });
        if from_env.is_none() {
            let alt = env
                .map(|e| format!(" or {}", e.names[idx]))
                .unwrap_or_default();
            errs.push(ctx_path(key), format!("is required{alt}"));
        }
        from_env
    };
    let id = field("id", 0, errs);
    let source = field("source", 1, errs);
    let kind = field("type", 2, errs);
    let at = field("timestamp", 3, errs);

    // The CloudEvent type and the CDEvent type name the same event.
    if let (Some(c), Some(e)) = (ctx.and_then(|c| c.get("type")), env) {
        if let (Value::String(c), Some(t)) = (c, &e.kind) {
            if c.trim() != t.trim() {
                errs.push(
                    e.names[2].clone(),
                    format!(
                        "\"{}\" does not match context.type \"{}\"; a CDEvent's CloudEvent type is its context.type",
                        truncate(t, 60),
                        truncate(c, 60)
                    ),
                );
            }
        }
    }
    let kind = kind.and_then(|(t, field)| match EventType::parse(&t) {
        Ok(k) => Some((k, t, field)),
        Err(m) => {
            errs.push(field, m);
            None
        }
    });
    let at = at.and_then(|(s, field)| {
        // Every accepted shape is ASCII, and `parse_datetime` splits text at byte offsets.
        let Some(t) = s.is_ascii().then(|| times::parse_datetime(&s)).flatten() else {
            errs.push(
                field,
                format!(
                    "\"{}\" is not a date-time (RFC 3339, e.g. 2023-03-20T14:27:05.315384Z)",
                    truncate(&s, 40)
                ),
            );
            return None;
        };
        match times::check_range(t, opts.now) {
            Ok(t) => Some(t),
            Err(m) => {
                errs.push(field, m);
                None
            }
        }
    });
    // With a known type the event is still mapped, so that every error is reported at once;
    // the stand-ins for missing fields are never returned (the errors are).
    let (kind, type_text, type_field) = kind?;
    Some(Context {
        id: id.map(|v| v.0).unwrap_or_default(),
        source: source.map(|v| v.0).unwrap_or_default(),
        kind,
        type_text,
        type_field,
        at: at.unwrap_or(OffsetDateTime::UNIX_EPOCH),
    })
}

struct Subject<'a> {
    id: String,
    source: Option<String>,
    content: Obj<'a>,
}

fn pipeline_run(
    ctx: &Context,
    s: &Subject<'_>,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<RunReport> {
    let source = s.source.clone().unwrap_or_else(|| ctx.source.clone());
    let pipeline_name = s.content.opt_str("pipelineName", errs);
    let url = s.content.opt_str_any(&["url", "uri"], errs);
    let errors = s.content.opt_str("errors", errs);
    let (result, word) = predicate_result(ctx, &s.content, errs)?;
    let mut r = run(&source, &s.id, result, word, ctx.at);
    if ctx.kind.predicate == "finished" {
        r.finished_at = Some(ctx.at);
    }
    r.web_url = url;
    r.log = errors.map(|e| LogText::capped(&e, opts.max_log_bytes));
    if let Some(n) = pipeline_name {
        r.params.push(Param {
            name: "pipelineName".to_owned(),
            value: Value::String(n),
            kind: None,
        });
    }
    Some(r)
}

fn task_run(
    ctx: &Context,
    s: &Subject<'_>,
    opts: &ParseOptions,
    errs: &mut Errors,
) -> Option<RunReport> {
    let parent = s.content.opt_object("pipelineRun", errs);
    let parent_id = parent.as_ref().and_then(|p| p.opt_str("id", errs));
    if parent_id.is_none() {
        errs.push(
            s.content.path("pipelineRun.id"),
            "is required: a task run is stored as a stage of its pipeline run",
        );
    }
    let parent_source = parent
        .as_ref()
        .and_then(|p| p.opt_str("source", errs))
        .unwrap_or_else(|| ctx.source.clone());
    let task_name = s.content.opt_str("taskName", errs);
    let url = s.content.opt_str_any(&["url", "uri"], errs);
    let errors = s.content.opt_str("errors", errs);
    let (stage_result, word) = predicate_result(ctx, &s.content, errs)?;
    let started = ctx.kind.predicate == "started";
    let (log, log_truncated) = match errors.map(|e| LogText::capped(&e, opts.max_log_bytes)) {
        Some(l) => (Some(l.text), l.truncated),
        None => (None, false),
    };
    let stage = Stage {
        name: task_name.unwrap_or_else(|| s.id.clone()),
        description: Some(format!("task run {}", s.id)),
        result: Some(stage_result),
        source_result: Some(word),
        state: Some(ctx.kind.predicate.clone()),
        started_at: started.then_some(ctx.at),
        duration_ms: None,
        log,
        log_truncated,
        url,
        steps: Vec::new(),
    };
    // A task that is queued, running or done says its pipeline run is running.
    let mut r = run(
        &parent_source,
        &parent_id?,
        RunResult::Running,
        "started".to_owned(),
        ctx.at,
    );
    r.stages.push(stage);
    Some(r)
}

/// The result a pipeline-run or task-run predicate stands for: (result, the word).
fn predicate_result(
    ctx: &Context,
    content: &Obj<'_>,
    errs: &mut Errors,
) -> Option<(RunResult, String)> {
    match ctx.kind.predicate.as_str() {
        "queued" => Some((RunResult::Queued, "queued".to_owned())),
        "started" => Some((RunResult::Running, "started".to_owned())),
        _ => {
            let mark = errs.0.len();
            let Some(outcome) = content.opt_str("outcome", errs) else {
                if errs.0.len() == mark {
                    errs.push(
                        content.path("outcome"),
                        format!("is required for a finished run; {}", accepted_outcomes()),
                    );
                }
                return None;
            };
            let word = outcome.trim().to_ascii_lowercase();
            match OUTCOMES.iter().find(|(w, _)| *w == word) {
                Some((_, r)) => Some((*r, outcome)),
                None => {
                    errs.push(
                        content.path("outcome"),
                        format!(
                            "unknown outcome \"{}\"; {}",
                            truncate(&outcome, 40),
                            accepted_outcomes()
                        ),
                    );
                    None
                }
            }
        }
    }
}

fn accepted_outcomes() -> String {
    "accepted: success, failure, error, cancel".to_owned()
}

fn deployment(ctx: &Context, s: &Subject<'_>, errs: &mut Errors) -> RunReport {
    let environment = s
        .content
        .opt_object("environment", errs)
        .and_then(|e| e.opt_str("id", errs));
    let artifact = s.content.opt_str("artifactId", errs);
    let predicate = ctx.kind.predicate.clone();
    let mut r = run(
        &ctx.source,
        &ctx.id,
        RunResult::Success,
        predicate.clone(),
        ctx.at,
    );
    r.pipeline = PipelineRef {
        full_name: s.id.clone(),
        name: s.id.clone(),
        qualified_name: None,
        project: None,
        module: None,
    };
    r.finished_at = Some(ctx.at);
    r.duration_ms = Some(0);
    r.ci = false;
    r.cd = true;
    r.environment = environment;
    r.cfr_status = (predicate == "rolledback").then_some(true);
    r.job_type = Some(predicate);
    r.execution_id = Some(ctx.id.clone());
    if let Some(a) = artifact {
        let mut art = json!({ "name": a, "location": a });
        if a.starts_with("pkg:") {
            art["type"] = Value::String("purl".to_owned());
        }
        r.artifacts.push(art);
    }
    r.partial = false;
    r
}

fn incident(ctx: &Context, s: &Subject<'_>, errs: &mut Errors) -> IncidentReport {
    let id_of = |key: &str, errs: &mut Errors| {
        s.content
            .opt_object(key, errs)
            .and_then(|o| o.opt_str("id", errs))
    };
    let service = id_of("service", errs);
    let environment = id_of("environment", errs);
    let description = s.content.opt_str("description", errs);
    let url = s.content.opt_str_any(&["ticketURI", "url", "uri"], errs);
    let resolved = ctx.kind.predicate == "resolved";
    IncidentReport {
        id: s.id.clone(),
        source: s.source.clone().unwrap_or_else(|| ctx.source.clone()),
        service,
        environment,
        detected_at: (!resolved).then_some(ctx.at),
        resolved_at: resolved.then_some(ctx.at),
        description,
        url,
    }
}

/// A partial CI run report at `at`, keyed by source and run id (see the module docs).
fn run(
    source: &str,
    run_key: &str,
    result: RunResult,
    word: String,
    at: OffsetDateTime,
) -> RunReport {
    RunReport {
        instance: InstanceRef {
            guid: source.to_owned(),
            name: Some(source.to_owned()),
            url: (source.starts_with("http://") || source.starts_with("https://"))
                .then(|| source.to_owned()),
            kind: Some(INSTANCE_KIND.to_owned()),
        },
        pipeline: PipelineRef {
            full_name: source.to_owned(),
            name: source.to_owned(),
            qualified_name: None,
            project: None,
            module: None,
        },
        run_key: run_key.to_owned(),
        build_number: None,
        execution_id: Some(run_key.to_owned()),
        result,
        source_result: word,
        started_at: at,
        finished_at: None,
        duration_ms: None,
        triggered_by: None,
        branch: None,
        repo_url: None,
        repo: None,
        commits: Vec::new(),
        ci: true,
        cd: false,
        environment: None,
        cfr_status: None,
        params: Vec::new(),
        artifacts: Vec::new(),
        trigger_chain: Vec::new(),
        themes: Vec::new(),
        web_url: None,
        job_type: None,
        custom_fields: Vec::new(),
        stages: Vec::new(),
        log: None,
        source: SOURCE.to_owned(),
        partial: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        let t = EventType::parse("dev.cdevents.pipelinerun.finished.0.2.0").unwrap();
        assert_eq!(
            (t.subject.as_str(), t.predicate.as_str(), t.version.as_str()),
            ("pipelinerun", "finished", "0.2.0")
        );
        let t = EventType::parse("dev.cdevents.taskrun.started.0.3.0-draft").unwrap();
        assert_eq!(t.version, "0.3.0-draft");
        assert!(EventType::parse("dev.cdevents.pipelinerun.finished")
            .unwrap_err()
            .contains("expected"));
        assert!(EventType::parse("com.example.build")
            .unwrap_err()
            .contains("not a CDEvents type"));
        assert!(EventType::parse("dev.cdevents.pipelinerun.finished.1.0.0")
            .unwrap_err()
            .contains("not supported"));
    }
}
