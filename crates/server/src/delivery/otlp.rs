//! The `otlp` format: a finished run as an OpenTelemetry trace, sent as OTLP/HTTP protobuf (an
//! `ExportTraceServiceRequest`, `Content-Type: application/x-protobuf`).
//!
//! One trace per run: a root span for the pipeline run (kind SERVER, named `RUN {pipeline}`) and
//! a child span (kind INTERNAL) for each stage, and under it for each of its steps, with the
//! times the CI system reported. Attributes follow the OpenTelemetry CI/CD semantic conventions
//! (`cicd.pipeline.*`, `cicd.pipeline.task.*`, `vcs.*`); a failed run or stage has status ERROR
//! with `error.type`; the resource's `service.name` is the CI instance.
//!
//! Ids are derived, not random: the trace id from the tenant and the run's identity (instance,
//! pipeline, run key), a span id from that and the stage's path. Every attempt of a delivery, and
//! a later report of the same run (a rerun that changes its result), carries the same ids, so a
//! tracing backend updates spans rather than duplicating them.
//!
//! The messages are the generated ones of `opentelemetry-proto`, encoded by `prost`.

use cistern_core::{Run, RunResult, Stage};
use cistern_store::EventType;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message as _;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::format::{Message, Rendered};

/// The content type of an OTLP/HTTP protobuf request.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// The semantic conventions version the attributes follow.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.37.0";

/// Renders a `run.completed` message as an `ExportTraceServiceRequest`.
pub fn render(msg: &Message<'_>, public_url: &str) -> Result<Rendered, String> {
    if msg.event != EventType::RunCompleted {
        return Err(format!(
            "the otlp format sends finished runs as traces: only run.completed, not {}",
            msg.event.as_str()
        ));
    }
    let run: Run = serde_json::from_str(msg.snapshot)
        .map_err(|e| format!("the stored run of message {} is unreadable: {e}", msg.id))?;
    let request = trace(msg.tenant, &run, public_url.trim_end_matches('/'));
    Ok(Rendered {
        body: request.encode_to_vec(),
        content_type: CONTENT_TYPE,
    })
}

/// The identity every id of a run's trace is derived from.
fn identity(tenant: &str, run: &Run) -> Vec<u8> {
    // Parts joined with NUL, which none of them holds, so distinct parts never collide.
    [
        "cistern-otlp",
        tenant,
        &run.instance.guid,
        &run.pipeline.full_name,
        &run.run_key,
    ]
    .join("\0")
    .into_bytes()
}

fn digest(identity: &[u8], extra: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(identity);
    h.update(b"\0");
    h.update(extra.as_bytes());
    h.finalize().into()
}

/// The trace id of a run (16 bytes, never all zero).
pub fn trace_id(tenant: &str, run: &Run) -> Vec<u8> {
    nonzero(digest(&identity(tenant, run), "trace")[..16].to_vec())
}

/// The span id of the stage at `path` (`""` for the run itself; 8 bytes, never all zero).
fn span_id(identity: &[u8], path: &str) -> Vec<u8> {
    nonzero(digest(identity, &format!("span:{path}"))[..8].to_vec())
}

/// An all-zero id is invalid in OTLP; a hash gives one with probability 2⁻⁶⁴, but never mind.
fn nonzero(mut id: Vec<u8>) -> Vec<u8> {
    if id.iter().all(|b| *b == 0) {
        if let Some(last) = id.last_mut() {
            *last = 1;
        }
    }
    id
}

/// The semantic conventions' result word (`cicd.pipeline.result`,
/// `cicd.pipeline.task.run.result`); `None` for a result that is not final.
pub fn result_word(r: RunResult) -> Option<&'static str> {
    match r {
        RunResult::Success => Some("success"),
        RunResult::Failure | RunResult::Unstable => Some("failure"),
        RunResult::Error => Some("error"),
        RunResult::Aborted => Some("cancellation"),
        RunResult::Skipped => Some("skipped"),
        RunResult::Running | RunResult::Queued | RunResult::OnHold => None,
    }
}

fn nanos(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos()).unwrap_or(0)
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// Status ERROR (with `error.type` added to `attrs`) for a failed result; unset otherwise, as
/// the conventions ask of operations that did not fail.
fn status(
    result: Option<RunResult>,
    source_word: Option<&str>,
    attrs: &mut Vec<KeyValue>,
) -> Option<Status> {
    let r = result?;
    if !r.is_failed() {
        return None;
    }
    let word = result_word(r).unwrap_or("failure");
    attrs.push(text("error.type", word));
    Some(Status {
        message: match source_word {
            Some(w) if !w.is_empty() => format!("{word} ({w})"),
            _ => word.to_owned(),
        },
        code: StatusCode::Error as i32,
    })
}

/// Builds the request (deterministic: the same run gives the same message).
pub fn trace(tenant: &str, run: &Run, base: &str) -> ExportTraceServiceRequest {
    let id = identity(tenant, run);
    let trace_id = trace_id(tenant, run);
    let root_id = span_id(&id, "");
    let start = run.started_at;
    let end = run
        .finished_at
        .or_else(|| {
            run.duration_ms
                .map(|ms| start + time::Duration::milliseconds(ms))
        })
        .unwrap_or(start)
        .max(start);
    let run_url = run
        .web_url
        .clone()
        .unwrap_or_else(|| format!("{base}/api/v1/runs/{}", run.id));

    let mut attrs = vec![
        text("cicd.pipeline.name", run.pipeline.full_name.clone()),
        text("cicd.pipeline.run.id", run.run_key.clone()),
        text("cicd.pipeline.action.name", "RUN"),
        text("cicd.pipeline.run.url.full", run_url),
        text("cistern.run.id", run.id.clone()),
        text("cistern.run.source_result", run.source_result.clone()),
    ];
    if let Some(w) = result_word(run.result) {
        attrs.push(text("cicd.pipeline.result", w));
    }
    if let Some(b) = run.build_number {
        attrs.push(int("cistern.run.build_number", b));
    }
    if let Some(sha) = run.commits.first().map(|c| c.sha.clone()) {
        attrs.push(text("vcs.ref.head.revision", sha));
    }
    if let Some(b) = &run.branch {
        attrs.push(text("vcs.ref.head.name", b.clone()));
    }
    if let Some(u) = &run.repo_url {
        attrs.push(text("vcs.repository.url.full", u.clone()));
    }
    if let Some(r) = &run.repo {
        attrs.push(text("vcs.repository.name", r.clone()));
    }
    if let Some(e) = &run.environment {
        attrs.push(text("deployment.environment.name", e.clone()));
    }
    let root_status = status(Some(run.result), Some(&run.source_result), &mut attrs);
    let mut spans = vec![Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: format!("RUN {}", run.pipeline.full_name),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: nanos(start),
        end_time_unix_nano: nanos(end),
        attributes: attrs,
        status: root_status,
        ..Default::default()
    }];
    let parent = Parent {
        id: &id,
        trace_id: &trace_id,
        span_id: &root_id,
        path: String::new(),
        start,
        run,
    };
    stage_spans(&parent, &run.stages, &mut spans);

    let mut resource = vec![text(
        "service.name",
        run.instance
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| run.instance.guid.clone()),
    )];
    resource.push(text("cistern.instance.guid", run.instance.guid.clone()));
    if let Some(k) = &run.instance.kind {
        resource.push(text("cistern.instance.kind", k.clone()));
    }
    if let Some(u) = &run.instance.url {
        resource.push(text("cistern.instance.url", u.clone()));
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "cistern".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: SCHEMA_URL.into(),
            }],
            schema_url: SCHEMA_URL.into(),
        }],
    }
}

/// Where child spans hang.
struct Parent<'a> {
    id: &'a [u8],
    trace_id: &'a [u8],
    span_id: &'a [u8],
    /// Path of the parent stage (`""` for the run).
    path: String,
    /// Start of the parent, for a stage that reports none.
    start: OffsetDateTime,
    run: &'a Run,
}

/// A stage's span and, under it, its steps' (stages nest: a step is a stage of a stage).
fn stage_spans(parent: &Parent<'_>, stages: &[Stage], out: &mut Vec<Span>) {
    for (i, s) in stages.iter().enumerate() {
        // The path holds each level's position and name: unique within the run, and the same on
        // every report of it.
        let path = if parent.path.is_empty() {
            format!("{i}:{}", s.name)
        } else {
            format!("{}/{i}:{}", parent.path, s.name)
        };
        // Unique within the run: `2` for the second stage, `2.1` for its first step.
        let task_run_id = task_number(&path);
        let sid = span_id(parent.id, &path);
        // A stage without a start starts with its parent; without a duration, it ends where it
        // starts (the conventions have no "unknown end").
        let start = s.started_at.unwrap_or(parent.start);
        let end = s
            .duration_ms
            .map(|ms| start + time::Duration::milliseconds(ms.max(0)))
            .unwrap_or(start);
        let mut attrs = vec![
            text("cicd.pipeline.name", parent.run.pipeline.full_name.clone()),
            text("cicd.pipeline.run.id", parent.run.run_key.clone()),
            text("cicd.pipeline.task.name", s.name.clone()),
            text("cicd.pipeline.task.run.id", task_run_id),
        ];
        if let Some(w) = s.result.and_then(result_word) {
            attrs.push(text("cicd.pipeline.task.run.result", w));
        }
        if let Some(u) = &s.url {
            attrs.push(text("cicd.pipeline.task.run.url.full", u.clone()));
        }
        let st = status(s.result, s.source_result.as_deref(), &mut attrs);
        out.push(Span {
            trace_id: parent.trace_id.to_vec(),
            span_id: sid.clone(),
            parent_span_id: parent.span_id.to_vec(),
            name: s.name.clone(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: nanos(start),
            end_time_unix_nano: nanos(end.max(start)),
            attributes: attrs,
            status: st,
            ..Default::default()
        });
        if !s.steps.is_empty() {
            let child = Parent {
                id: parent.id,
                trace_id: parent.trace_id,
                span_id: &sid,
                path,
                start,
                run: parent.run,
            };
            stage_spans(&child, &s.steps, out);
        }
    }
}

/// The dotted task number (`2.1`) of a stage path (`1:build/0:compile`).
fn task_number(path: &str) -> String {
    path.split('/')
        .filter_map(|p| p.split_once(':'))
        .filter_map(|(i, _)| i.parse::<usize>().ok())
        .map(|i| (i + 1).to_string())
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_json(result: &str, stages: serde_json::Value) -> String {
        json!({
            "id": "run-1", "pipeline": {"id": "p", "full_name": "team/build", "name": "build", "qualified_name": null, "project": null, "module": null},
            "instance": {"guid": "g", "name": "jenkins-a", "url": null, "kind": null},
            "run_key": "67", "build_number": 67, "execution_id": null, "result": result, "source_result": result.to_uppercase(),
            "started_at": "2021-07-26T18:10:33Z", "finished_at": "2021-07-26T18:19:24Z", "duration_ms": 531000,
            "triggered_by": null, "branch": "devel", "repo_url": "https://git.example/team/build", "repo": null,
            "commits": [{"sha": "abc123", "message": null, "author": null, "url": null, "committed_at": null}],
            "ci": true, "cd": false, "environment": null, "cfr_status": null, "params": [], "artifacts": [], "trigger_chain": [],
            "themes": [], "web_url": "https://ci.example/builds/67", "job_type": null, "custom_fields": [], "stages": stages,
            "log": null, "log_truncated": false, "source": "sei", "event_id": null,
            "received_at": "2021-07-26T18:19:25Z", "updated_at": "2021-07-26T18:19:25Z"
        })
        .to_string()
    }

    fn stage(
        name: &str,
        result: &str,
        start: &str,
        ms: i64,
        steps: serde_json::Value,
    ) -> serde_json::Value {
        json!({"name": name, "description": null, "result": result, "source_result": result.to_uppercase(), "state": null,
               "started_at": start, "duration_ms": ms, "log": null, "log_truncated": false, "url": null, "steps": steps})
    }

    fn decode(tenant: &str, snap: &str) -> ExportTraceServiceRequest {
        let out = render(
            &Message {
                tenant,
                id: "m1",
                event: EventType::RunCompleted,
                at: time::macros::datetime!(2021-07-26 18:19:25 UTC),
                snapshot: snap,
            },
            "https://hub.example/",
        )
        .unwrap();
        assert_eq!(out.content_type, "application/x-protobuf");
        ExportTraceServiceRequest::decode(out.body.as_slice()).unwrap()
    }

    #[test]
    fn a_run_is_a_tree_of_spans_with_stable_ids() {
        let snap = run_json(
            "failure",
            json!([
                stage(
                    "build",
                    "success",
                    "2021-07-26T18:10:40Z",
                    60_000,
                    json!([stage(
                        "compile",
                        "success",
                        "2021-07-26T18:10:41Z",
                        30_000,
                        json!([])
                    )])
                ),
                stage(
                    "test",
                    "failure",
                    "2021-07-26T18:11:40Z",
                    120_000,
                    json!([])
                )
            ]),
        );
        let req = decode("t1", &snap);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 4);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["RUN team/build", "build", "compile", "test"]);
        assert!(spans.iter().all(|s| s.trace_id == spans[0].trace_id));
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert_eq!(spans[2].parent_span_id, spans[1].span_id);
        assert_eq!(spans[3].parent_span_id, spans[0].span_id);
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert!(spans[1].status.is_none());
        assert_eq!(
            spans[3].end_time_unix_nano - spans[3].start_time_unix_nano,
            120_000_000_000
        );
        // The same run gives the same bytes; another tenant, other ids.
        assert_eq!(decode("t1", &snap), req);
        let other = decode("t2", &snap);
        assert_ne!(
            other.resource_spans[0].scope_spans[0].spans[0].trace_id,
            spans[0].trace_id
        );
        // A rerun's report (another result) keeps the ids.
        let rerun = decode("t1", &snap.replace("\"failure\"", "\"success\""));
        let again = &rerun.resource_spans[0].scope_spans[0].spans;
        for (a, b) in spans.iter().zip(again) {
            assert_eq!((&a.trace_id, &a.span_id), (&b.trace_id, &b.span_id));
        }
    }

    #[test]
    fn only_run_completed() {
        let snap = run_json("success", json!([]));
        let err = render(
            &Message {
                tenant: "t",
                id: "m1",
                event: EventType::RunStarted,
                at: OffsetDateTime::UNIX_EPOCH,
                snapshot: &snap,
            },
            "",
        )
        .unwrap_err();
        assert!(err.contains("only run.completed"), "{err}");
    }
}
