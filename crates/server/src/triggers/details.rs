//! What a caller reads about a trigger event, in Harness's words: the webhook processing status
//! (`TARGET_EXECUTION_REQUESTED`, `TARGET_DID_NOT_EXECUTE`, …) and the pipeline execution
//! summary (`Queued`, `Running`, `Success`, `Failed`, `Aborted`, `Expired`) built from the run
//! the CI reported for it.

use std::time::Duration;

use cistern_core::{to_millis, RunResult};
use cistern_store::{DispatchState, LinkedRun, LinkedStage, TriggerEvent};
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::template;

/// The execution was asked of the target (it answered 2xx, or its run has been reported).
pub const TARGET_EXECUTION_REQUESTED: &str = "TARGET_EXECUTION_REQUESTED";
/// The target refused the request, or could not be reached in time.
pub const TARGET_DID_NOT_EXECUTE: &str = "TARGET_DID_NOT_EXECUTE";
/// The request could not be made (a missing secret, a template that does not render).
pub const EXCEPTION_WHILE_PROCESSING: &str = "EXCEPTION_WHILE_PROCESSING";
/// No enabled trigger has these identifiers.
pub const NO_ENABLED_CUSTOM_TRIGGER_FOUND: &str = "NO_ENABLED_CUSTOM_TRIGGER_FOUND";
/// The account identifier is not the caller's.
pub const NO_ENABLED_CUSTOM_TRIGGER_FOUND_FOR_ACCOUNT: &str =
    "NO_ENABLED_CUSTOM_TRIGGER_FOUND_FOR_ACCOUNT";
/// The body is not JSON.
pub const INVALID_PAYLOAD: &str = "INVALID_PAYLOAD";
/// No key, a bad key, or a bad token.
pub const TRIGGER_AUTHENTICATION_FAILED: &str = "TRIGGER_AUTHENTICATION_FAILED";
/// Cistern's word for an event waiting to be sent (Harness has none: it answers
/// `eventFound: false` until it has processed an event).
pub const QUEUED: &str = "QUEUED";

/// The seed's message for a requested execution.
pub const REQUESTED_MESSAGE: &str = "Pipeline execution was requested successfully";

/// The processing status of an event: its word, message, and whether an exception occurred.
pub fn processing_status(e: &TriggerEvent) -> (&'static str, String, bool) {
    // Callers without a key read this (token URLs): no target URL beyond its origin, even in
    // messages stored before errors were stripped.
    let msg = |fallback: &str| {
        e.message
            .as_deref()
            .map(crate::delivery::redact::strip_urls)
            .unwrap_or_else(|| fallback.to_owned())
    };
    if e.run.is_some() {
        // The CI reported the run: whatever the worker recorded, the target executed.
        return (
            TARGET_EXECUTION_REQUESTED,
            REQUESTED_MESSAGE.to_owned(),
            false,
        );
    }
    match e.state {
        DispatchState::Delivered => (
            TARGET_EXECUTION_REQUESTED,
            REQUESTED_MESSAGE.to_owned(),
            false,
        ),
        DispatchState::Pending => (QUEUED, msg(cistern_store::triggers::QUEUED_MESSAGE), false),
        DispatchState::Failed => (TARGET_DID_NOT_EXECUTE, msg("Target did not execute"), false),
        DispatchState::Exception => (
            EXCEPTION_WHILE_PROCESSING,
            msg("Exception while processing"),
            true,
        ),
        DispatchState::Refused => {
            let word = match e.refusal.as_deref() {
                Some(INVALID_PAYLOAD) => INVALID_PAYLOAD,
                _ => NO_ENABLED_CUSTOM_TRIGGER_FOUND,
            };
            (word, msg("No enabled custom trigger found"), false)
        }
    }
}

/// A run result in Harness's execution-status words.
pub fn harness_status(r: RunResult) -> &'static str {
    match r {
        RunResult::Success => "Success",
        RunResult::Failure | RunResult::Unstable | RunResult::Error => "Failed",
        RunResult::Aborted => "Aborted",
        RunResult::Running => "Running",
        RunResult::Queued => "Queued",
        RunResult::OnHold => "ApprovalWaiting",
        RunResult::Skipped => "Skipped",
    }
}

/// Stage counts: (successful, running, failed, total), top-level stages only. Failed counts
/// failure, unstable, error and aborted; stages without a result count only in the total.
pub fn stage_counts(run: &LinkedRun) -> (i64, i64, i64, i64) {
    let (mut ok, mut running, mut failed, mut total) = (0, 0, 0, 0);
    for (result, n) in &run.stage_results {
        total += n;
        match result {
            Some(RunResult::Success) => ok += n,
            Some(RunResult::Running) => running += n,
            Some(
                RunResult::Failure | RunResult::Unstable | RunResult::Error | RunResult::Aborted,
            ) => failed += n,
            _ => {}
        }
    }
    (ok, running, failed, total)
}

/// The body the target receives, with secrets left as their placeholders (Harness's
/// `runtimeInput`: what the pipeline was given).
pub fn runtime_input(e: &TriggerEvent) -> String {
    let Some(t) = &e.target else {
        return String::new();
    };
    let Some(body) = &t.body else {
        return String::new();
    };
    let payload: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
    let ctx = template::Context {
        correlation_id: &e.id,
        payload: &payload,
        secrets: None,
    };
    let content_type = t
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| h.value.as_str());
    template::render_body(body, template::body_kind(body, content_type), &ctx).unwrap_or_default()
}

/// `webhookProcessingDetails`, its members in the seed's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingDetails {
    event_found: bool,
    event_id: String,
    account_identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_execution_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exception_occured: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime_input: Option<String>,
}

/// `webhookProcessingDetails` of an event.
pub fn processing_details(e: &TriggerEvent, account: &str) -> ProcessingDetails {
    let (status, message, exception) = processing_status(e);
    ProcessingDetails {
        event_found: true,
        event_id: e.id.clone(),
        account_identifier: account.to_owned(),
        org_identifier: Some(e.key.org.clone()),
        project_identifier: Some(e.key.project.clone()),
        trigger_identifier: Some(e.key.trigger.clone()),
        pipeline_identifier: Some(e.key.pipeline.clone()),
        pipeline_execution_id: Some(e.run.as_ref().map(|r| r.id.clone())),
        exception_occured: Some(exception),
        status: Some(status),
        message: Some(message),
        payload: Some(e.payload.clone()),
        event_created_at: Some(to_millis(e.created_at)),
        runtime_input: Some(runtime_input(e)),
    }
}

/// `webhookProcessingDetails` of an id that names no event the caller may read.
pub fn not_found(id: &str, account: &str) -> ProcessingDetails {
    ProcessingDetails {
        event_found: false,
        event_id: id.to_owned(),
        account_identifier: account.to_owned(),
        org_identifier: None,
        project_identifier: None,
        trigger_identifier: None,
        pipeline_identifier: None,
        pipeline_execution_id: None,
        exception_occured: None,
        status: None,
        message: None,
        payload: None,
        event_created_at: None,
        runtime_input: None,
    }
}

/// The pipeline status: from the linked run; `Queued` while the run is awaited; `Expired` once
/// it has been awaited longer than `expire_after`; `None` when no execution was requested.
pub fn pipeline_status(
    e: &TriggerEvent,
    now: OffsetDateTime,
    expire_after: Duration,
) -> Option<&'static str> {
    if let Some(run) = &e.run {
        return Some(harness_status(run.result));
    }
    match e.state {
        DispatchState::Pending | DispatchState::Delivered => {
            if now - e.created_at > expire_after {
                Some("Expired")
            } else {
                Some("Queued")
            }
        }
        _ => None,
    }
}

/// Who started an execution.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TriggerInfo {
    trigger_type: &'static str,
    triggered_by: Value,
    is_rerun: bool,
}

/// One stage in `layoutNodeMap` (Harness's graph of the execution): the linked run's top-level
/// stages, each pointing at the next.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LayoutNode {
    node_type: &'static str,
    node_group: &'static str,
    node_identifier: String,
    name: String,
    node_uuid: String,
    status: &'static str,
    start_ts: Option<i64>,
    end_ts: Option<i64>,
    module: Option<()>,
    module_info: Map<String, Value>,
    edge_layout_list: EdgeLayout,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EdgeLayout {
    current_node_children: Vec<String>,
    next_ids: Vec<String>,
}

/// A stage's node id: the run and the stage's position (stable, unique in the map).
fn node_id(run: &LinkedRun, s: &LinkedStage) -> String {
    format!("{}.{}", run.id, s.idx)
}

/// `layoutNodeMap` and `startingNodeId` of a linked run (empty and null without stages).
fn layout(run: Option<&LinkedRun>) -> (Map<String, Value>, Option<String>) {
    let Some(run) = run else {
        return (Map::new(), None);
    };
    let ids: Vec<String> = run.stages.iter().map(|s| node_id(run, s)).collect();
    let mut map = Map::new();
    for (i, s) in run.stages.iter().enumerate() {
        let start = s.started_at.map(to_millis);
        let node = LayoutNode {
            node_type: "Stage",
            node_group: "STAGE",
            node_identifier: s.name.clone(),
            name: s.name.clone(),
            node_uuid: ids[i].clone(),
            status: s.result.map(harness_status).unwrap_or("NotStarted"),
            start_ts: start,
            end_ts: match (start, s.duration_ms, s.result) {
                (Some(t), Some(d), Some(r)) if r.is_finished() => Some(t.saturating_add(d)),
                _ => None,
            },
            module: None,
            module_info: Map::new(),
            edge_layout_list: EdgeLayout {
                current_node_children: Vec::new(),
                next_ids: ids.get(i + 1).cloned().into_iter().collect(),
            },
        };
        map.insert(
            ids[i].clone(),
            serde_json::to_value(node).unwrap_or(Value::Null),
        );
    }
    (map, ids.first().cloned())
}

/// `pipelineExecutionSummary`: Harness's members in its order, then Cistern's own. Where
/// Cistern has nothing of Harness's (governance, modules, retries, execution inputs, stage
/// selection), the member is an empty object or list, or `false`: true of every run here.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    pipeline_identifier: String,
    plan_execution_id: Option<String>,
    name: String,
    status: &'static str,
    tags: Vec<Value>,
    execution_trigger_info: TriggerInfo,
    /// No policy engine: nothing to report.
    governance_metadata: Map<String, Value>,
    /// No Harness modules: nothing to report.
    module_info: Map<String, Value>,
    /// The linked run's top-level stages.
    layout_node_map: Map<String, Value>,
    modules: Vec<String>,
    /// The first stage's node, when the run has stages.
    starting_node_id: Option<String>,
    start_ts: Option<i64>,
    end_ts: Option<i64>,
    created_at: i64,
    /// Cistern does not retry a run (fire the trigger again).
    can_retry: bool,
    show_retry_history: bool,
    run_sequence: Option<i64>,
    successful_stages_count: i64,
    running_stages_count: i64,
    failed_stages_count: i64,
    total_stages_count: i64,
    execution_input_configured: bool,
    allow_stage_executions: bool,
    stages_execution: bool,
    /// The CI's own id of the run.
    execution_id: Option<String>,
    /// The pipeline's full name in this hub.
    pipeline_full_name: Option<String>,
    /// The run in its CI.
    web_url: Option<String>,
    /// The run in this hub's API.
    run_url: Option<String>,
}

/// `executionDetails`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetails {
    pipeline_execution_summary: ExecutionSummary,
}

/// `executionDetails`, or `None` (null) when no execution was requested.
pub fn execution_details(
    e: &TriggerEvent,
    now: OffsetDateTime,
    expire_after: Duration,
    public_url: &str,
) -> Option<ExecutionDetails> {
    let status = pipeline_status(e, now, expire_after)?;
    let run = e.run.as_ref();
    let (ok, running, failed, total) = run.map(stage_counts).unwrap_or((0, 0, 0, 0));
    let end = match run {
        // A running run may carry a finish time derived from a duration so far: not an end.
        Some(r) => r
            .finished_at
            .filter(|_| r.result.is_finished())
            .map(to_millis),
        None if status == "Expired" => {
            let ms = i64::try_from(expire_after.as_millis()).unwrap_or(i64::MAX);
            Some(to_millis(e.created_at).saturating_add(ms))
        }
        None => None,
    };
    let (layout_node_map, starting_node_id) = layout(run);
    Some(ExecutionDetails {
        pipeline_execution_summary: ExecutionSummary {
            pipeline_identifier: e.key.pipeline.clone(),
            plan_execution_id: run.map(|r| r.id.clone()),
            name: run
                .map(|r| r.pipeline_name.clone())
                .unwrap_or_else(|| e.key.pipeline.clone()),
            status,
            tags: Vec::new(),
            execution_trigger_info: TriggerInfo {
                trigger_type: "WEBHOOK_CUSTOM",
                triggered_by: json!({"identifier": e.key.trigger, "extraInfo": {"eventCorrelationId": e.id}}),
                is_rerun: false,
            },
            governance_metadata: Map::new(),
            module_info: Map::new(),
            layout_node_map,
            modules: Vec::new(),
            starting_node_id,
            start_ts: run.map(|r| to_millis(r.started_at)),
            end_ts: end,
            created_at: to_millis(e.created_at),
            can_retry: false,
            show_retry_history: false,
            run_sequence: run.and_then(|r| r.build_number),
            successful_stages_count: ok,
            running_stages_count: running,
            failed_stages_count: failed,
            total_stages_count: total,
            execution_input_configured: false,
            allow_stage_executions: false,
            stages_execution: false,
            execution_id: run.and_then(|r| r.execution_id.clone()),
            pipeline_full_name: run.map(|r| r.pipeline_full_name.clone()),
            web_url: run.and_then(|r| r.web_url.clone()),
            run_url: run.map(|r| format!("{public_url}/api/v1/runs/{}", r.id)),
        },
    })
}

/// The reply envelope of every Harness-compatible answer, its members in the seed's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T: Serialize> {
    /// `SUCCESS`.
    pub status: &'static str,
    /// The answer.
    pub data: T,
    /// Always null.
    pub meta_data: Option<()>,
    /// The request's id.
    pub correlation_id: String,
}

/// `data` of `triggerExecutionDetails`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionData {
    /// What happened to the event.
    pub webhook_processing_details: ProcessingDetails,
    /// The pipeline run it started.
    pub execution_details: Option<ExecutionDetails>,
}
