//! What a caller reads about a trigger event, in Harness's words: the webhook processing status
//! (`TARGET_EXECUTION_REQUESTED`, `TARGET_DID_NOT_EXECUTE`, …) and the pipeline execution
//! summary (`Queued`, `Running`, `Success`, `Failed`, `Aborted`, `Expired`) built from the run
//! the CI reported for it.

use std::time::Duration;

use cistern_core::{to_millis, RunResult};
use cistern_store::{DispatchState, LinkedRun, TriggerEvent};
use serde_json::{json, Value};
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
    let msg = |fallback: &str| e.message.clone().unwrap_or_else(|| fallback.to_owned());
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

/// `webhookProcessingDetails`.
pub fn processing_details(e: &TriggerEvent, account: &str) -> Value {
    let (status, message, exception) = processing_status(e);
    json!({
        "eventFound": true,
        "eventId": e.id,
        "accountIdentifier": account,
        "orgIdentifier": e.key.org,
        "projectIdentifier": e.key.project,
        "triggerIdentifier": e.key.trigger,
        "pipelineIdentifier": e.key.pipeline,
        "pipelineExecutionId": e.run.as_ref().map(|r| r.id.clone()),
        "exceptionOccured": exception,
        "status": status,
        "message": message,
        "payload": e.payload,
        "eventCreatedAt": to_millis(e.created_at),
        "runtimeInput": runtime_input(e),
    })
}

/// `webhookProcessingDetails` of an id that names no event the caller may read.
pub fn not_found(id: &str, account: &str) -> Value {
    json!({"eventFound": false, "eventId": id, "accountIdentifier": account})
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

/// `executionDetails`: `{"pipelineExecutionSummary": …}`, or null when no execution was
/// requested.
pub fn execution_details(
    e: &TriggerEvent,
    now: OffsetDateTime,
    expire_after: Duration,
    public_url: &str,
) -> Value {
    let Some(status) = pipeline_status(e, now, expire_after) else {
        return Value::Null;
    };
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
    json!({"pipelineExecutionSummary": {
        "pipelineIdentifier": e.key.pipeline,
        "planExecutionId": run.map(|r| r.id.clone()),
        "name": run.map(|r| r.pipeline_name.clone()).unwrap_or_else(|| e.key.pipeline.clone()),
        "status": status,
        "tags": [],
        "executionTriggerInfo": {
            "triggerType": "WEBHOOK_CUSTOM",
            "triggeredBy": {
                "identifier": e.key.trigger,
                "extraInfo": {"eventCorrelationId": e.id},
            },
            "isRerun": false,
        },
        "startTs": run.map(|r| to_millis(r.started_at)),
        "endTs": end,
        "createdAt": to_millis(e.created_at),
        "runSequence": run.and_then(|r| r.build_number),
        "successfulStagesCount": ok,
        "runningStagesCount": running,
        "failedStagesCount": failed,
        "totalStagesCount": total,
        "executionId": run.and_then(|r| r.execution_id.clone()),
        "pipelineFullName": run.map(|r| r.pipeline_full_name.clone()),
        "webUrl": run.and_then(|r| r.web_url.clone()),
        "runUrl": run.map(|r| format!("{public_url}/api/v1/runs/{}", r.id)),
    }})
}
