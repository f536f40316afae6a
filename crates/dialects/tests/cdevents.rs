//! CDEvents over CloudEvents (binary, structured, batch, bare) to runs, incidents and commit times.

mod common;

use cistern_core::RunResult;
use cistern_dialects::{cdevents, Inbound, Rejection};
use common::*;
use serde_json::{json, Value};

fn plain(body: &[u8]) -> Result<Vec<Inbound>, Rejection> {
    cdevents::parse(
        &headers(&[("Content-Type", "application/json")]),
        body,
        &opts(),
    )
}

fn fx(name: &str) -> Vec<Inbound> {
    plain(&fixture("cdevents", name)).unwrap()
}

/// Binary mode: the CloudEvent attributes in `ce-*` headers, the CDEvent as the body.
fn binary(event: &Value, body: &Value) -> Result<Vec<Inbound>, Rejection> {
    let c = &event["context"];
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    let h = vec![
        ("ce-specversion".to_owned(), "1.0".to_owned()),
        ("ce-id".to_owned(), s(&c["id"])),
        ("ce-source".to_owned(), s(&c["source"])),
        ("ce-type".to_owned(), s(&c["type"])),
        ("ce-time".to_owned(), s(&c["timestamp"])),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    cdevents::parse(
        &cistern_dialects::Headers(h),
        body.to_string().as_bytes(),
        &opts(),
    )
}

/// Structured mode: the attributes beside the CDEvent in `data`.
fn envelope(event: &Value) -> Value {
    let c = &event["context"];
    json!({
        "specversion": "1.0",
        "id": c["id"],
        "source": c["source"],
        "type": c["type"],
        "time": c["timestamp"],
        "datacontenttype": "application/json",
        "data": event,
    })
}

fn structured(body: &Value) -> Result<Vec<Inbound>, Rejection> {
    cdevents::parse(
        &headers(&[(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8",
        )]),
        body.to_string().as_bytes(),
        &opts(),
    )
}

#[test]
fn a_pipeline_run_and_its_task_runs_are_one_run() {
    let queued = one_run(fx("pipelinerun_queued.json"));
    let started = one_run(fx("pipelinerun_started.json"));
    let task_started = one_run(fx("taskrun_started.json"));
    let task_finished = one_run(fx("taskrun_finished.json"));
    let finished = one_run(fx("pipelinerun_finished.json"));
    let id = (
        "/tekton/cluster-a".to_owned(),
        "/tekton/cluster-a".to_owned(),
        "pipelinerun-1234".to_owned(),
    );
    for r in [&queued, &started, &task_started, &task_finished, &finished] {
        assert_eq!(identity(r), id);
        assert_eq!(r.pipeline, queued.pipeline);
        assert!(r.partial);
        assert!(r.ci && !r.cd);
        assert_eq!(r.source, "cdevents");
    }
    assert_eq!(queued.result, RunResult::Queued);
    assert_eq!(queued.started_at, t("2024-05-14T09:00:00Z"));
    assert_eq!(started.result, RunResult::Running);
    assert_eq!(started.finished_at, None);
    assert_eq!(finished.result, RunResult::Failure);
    assert_eq!(finished.source_result, "failure");
    assert_eq!(finished.finished_at, Some(t("2024-05-14T09:07:42Z")));
    assert_eq!(
        finished.web_url.as_deref(),
        Some("https://dashboard.example.com/#/namespaces/ci/pipelineruns/pipelinerun-1234")
    );
    let log = finished.log.as_ref().unwrap();
    assert_eq!(log.text, "task unit-tests failed\nexit code 1");
    assert!(finished
        .params
        .iter()
        .any(|p| p.name == "pipelineName" && p.value == "build-and-deploy"));

    assert_eq!(task_started.result, RunResult::Running);
    let stage = &task_started.stages[0];
    assert_eq!(stage.name, "unit-tests");
    assert_eq!(stage.result, Some(RunResult::Running));
    assert_eq!(stage.started_at, Some(t("2024-05-14T09:00:07Z")));
    assert_eq!(
        stage.description.as_deref(),
        Some("task run pipelinerun-1234-unit-tests")
    );
    let stage = &task_finished.stages[0];
    assert_eq!(stage.name, "unit-tests");
    assert_eq!(stage.result, Some(RunResult::Failure));
    assert_eq!(stage.started_at, None);
    assert_eq!(stage.log.as_deref(), Some("exit code 1"));
    assert_eq!(
        stage.url.as_deref(),
        Some("https://dashboard.example.com/#/namespaces/ci/taskruns/pipelinerun-1234-unit-tests")
    );
}

#[test]
fn the_spec_conformance_example_parses() {
    let r = one_run(fx("conformance_pipelinerun_finished.json"));
    assert_eq!(
        identity(&r),
        (
            "/event/source/123".into(),
            "/event/source/123".into(),
            "mySubject123".into()
        )
    );
    assert_eq!(r.result, RunResult::Failure);
    assert_eq!(r.started_at, t("2023-03-20T14:27:05.315384Z"));
}

#[test]
fn outcomes_map() {
    for (word, expected) in [
        ("success", RunResult::Success),
        ("failure", RunResult::Failure),
        ("error", RunResult::Error),
        ("cancel", RunResult::Aborted),
    ] {
        let mut v = fixture_json("cdevents", "pipelinerun_finished.json");
        v["subject"]["content"]["outcome"] = word.into();
        let r = one_run(plain(v.to_string().as_bytes()).unwrap());
        assert_eq!(r.result, expected, "{word}");
    }
}

#[test]
fn service_events_are_complete_deployments() {
    let deployed = one_run(fx("service_deployed.json"));
    assert_eq!(
        identity(&deployed),
        (
            "/spinnaker/prod".into(),
            "myApp".into(),
            "271069a8-fc18-44f1-b38f-9d70a1695819".into()
        )
    );
    assert!(!deployed.partial);
    assert!(deployed.cd && !deployed.ci);
    assert_eq!(deployed.result, RunResult::Success);
    assert_eq!(deployed.environment.as_deref(), Some("prod1"));
    assert_eq!(deployed.started_at, t("2024-05-14T09:30:00Z"));
    assert_eq!(deployed.finished_at, Some(deployed.started_at));
    assert_eq!(deployed.cfr_status, None);
    assert_eq!(deployed.job_type.as_deref(), Some("deployed"));
    assert_eq!(
        deployed.artifacts,
        [json!({
            "name": "pkg:oci/myapp@sha256%3A0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427",
            "location": "pkg:oci/myapp@sha256%3A0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427",
            "type": "purl"
        })]
    );
    let upgraded = one_run(fx("service_upgraded.json"));
    assert_eq!(upgraded.pipeline, deployed.pipeline);
    assert_ne!(upgraded.run_key, deployed.run_key);
    assert_eq!(upgraded.job_type.as_deref(), Some("upgraded"));
    let rolled = one_run(fx("service_rolledback.json"));
    assert_eq!(rolled.pipeline, deployed.pipeline);
    assert_eq!(rolled.result, RunResult::Success);
    assert_eq!(rolled.cfr_status, Some(true));
    assert_eq!(rolled.job_type.as_deref(), Some("rolledback"));
}

#[test]
fn incidents_open_and_resolve() {
    let [Inbound::Incident(detected)] = &fx("incident_detected.json")[..] else {
        panic!()
    };
    let [Inbound::Incident(resolved)] = &fx("incident_resolved.json")[..] else {
        panic!()
    };
    assert_eq!(
        (&detected.id, &detected.source),
        (&resolved.id, &resolved.source)
    );
    assert_eq!(detected.id, "incident-123");
    assert_eq!(detected.source, "/monitoring/prod1");
    assert_eq!(detected.service.as_deref(), Some("myApp"));
    assert_eq!(detected.environment.as_deref(), Some("prod1"));
    assert_eq!(detected.detected_at, Some(t("2024-05-15T10:05:20.079Z")));
    assert_eq!(detected.resolved_at, None);
    assert_eq!(
        detected.description.as_deref(),
        Some("Response time above threshold of 100ms")
    );
    assert_eq!(resolved.detected_at, None);
    assert_eq!(resolved.resolved_at, Some(t("2024-05-15T10:25:02.500Z")));
    // The incident names the service the way deployments name their pipeline.
    let deployed = one_run(fx("service_deployed.json"));
    assert_eq!(
        detected.service.as_deref(),
        Some(deployed.pipeline.full_name.as_str())
    );
}

#[test]
fn a_merged_change_is_a_commit_time() {
    assert_eq!(
        fx("change_merged.json"),
        vec![Inbound::CommitTime {
            sha: "3484a3fb816e0859fd6e1cea078d76385ff50625".into(),
            at: t("2024-05-14T08:55:00Z"),
            repo: Some("demo/my-app".into()),
        }]
    );
}

#[test]
fn untracked_cdevents_are_ignored() {
    assert_eq!(
        fx("artifact_published.json"),
        vec![Inbound::Ignored(
            "dev.cdevents.artifact.published.0.1.1".into()
        )]
    );
}

#[test]
fn binary_structured_batch_and_bare_deliveries_agree() {
    for (name, bytes) in fixtures("cdevents") {
        let event: Value = serde_json::from_slice(&bytes).unwrap();
        let bare = plain(&bytes).unwrap();
        // Binary mode with the whole CDEvent as the body (what the SDKs send)…
        assert_eq!(binary(&event, &event).unwrap(), bare, "{name}: binary");
        // …with `{subject}` only, or the subject alone, the context coming from the headers.
        let subject_only = json!({ "subject": event["subject"] });
        assert_eq!(
            binary(&event, &subject_only).unwrap(),
            bare,
            "{name}: binary subject"
        );
        assert_eq!(
            binary(&event, &event["subject"]).unwrap(),
            bare,
            "{name}: binary bare subject"
        );
        // Structured mode, with data as an object or as a JSON string.
        let env = envelope(&event);
        assert_eq!(structured(&env).unwrap(), bare, "{name}: structured");
        let mut as_text = env.clone();
        as_text["data"] = Value::String(event.to_string());
        assert_eq!(
            structured(&as_text).unwrap(),
            bare,
            "{name}: structured text"
        );
        // A structured event is recognised by its shape even under a plain JSON content type.
        assert_eq!(
            plain(env.to_string().as_bytes()).unwrap(),
            bare,
            "{name}: sniffed"
        );
        // A batch of two.
        let batch = json!([env, env]);
        let both = cdevents::parse(
            &headers(&[("Content-Type", "application/cloudevents-batch+json")]),
            batch.to_string().as_bytes(),
            &opts(),
        )
        .unwrap();
        assert_eq!(both.len(), 2, "{name}: batch");
        assert_eq!(both[..1], bare[..], "{name}: batch");
    }
}

#[test]
fn the_cloudevent_and_the_cdevent_must_name_the_same_type() {
    let event = fixture_json("cdevents", "pipelinerun_finished.json");
    let mut other = event.clone();
    other["context"]["type"] = "dev.cdevents.pipelinerun.started.0.2.0".into();
    let err = binary(&event, &other).unwrap_err();
    assert_eq!(fields(&err), ["ce-type"]);
    let mut env = envelope(&event);
    env["type"] = "dev.cdevents.pipelinerun.started.0.2.0".into();
    let err = structured(&env).unwrap_err();
    assert_eq!(fields(&err), ["type"]);
}

#[test]
fn cloudevents_versions_and_encodings_are_checked() {
    let event = fixture_json("cdevents", "pipelinerun_finished.json");
    let mut env = envelope(&event);
    env["specversion"] = "0.3".into();
    let err = structured(&env).unwrap_err();
    assert_eq!(fields(&err), ["specversion"]);
    assert!(err.summary().contains("accepted: 1.0"));

    let mut env = envelope(&event);
    env.as_object_mut().unwrap().remove("data");
    env["data_base64"] = "eyJ9".into();
    let err = structured(&env).unwrap_err();
    assert_eq!(fields(&err), ["data_base64"]);

    let err = cdevents::parse(
        &headers(&[("ce-type", "dev.cdevents.pipelinerun.finished.0.2.0")]),
        event.to_string().as_bytes(),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(fields(&err), ["ce-specversion"]);

    // A bare subject without headers to give its context.
    let err = plain(event["subject"].to_string().as_bytes()).unwrap_err();
    assert_eq!(fields(&err), [""]);
    assert!(err.summary().contains("must be a CDEvent"));
    let mut no_context = event.clone();
    no_context.as_object_mut().unwrap().remove("context");
    let err = plain(no_context.to_string().as_bytes()).unwrap_err();
    assert_eq!(fields(&err), ["context"]);

    let err = cdevents::parse(
        &headers(&[("Content-Type", "application/cloudevents-batch+json")]),
        b"{}",
        &opts(),
    )
    .unwrap_err();
    assert!(err.summary().contains("JSON array"));
}

#[test]
fn malformed_cdevents_name_their_fields() {
    let mut v = fixture_json("cdevents", "pipelinerun_finished.json");
    v["context"].as_object_mut().unwrap().remove("timestamp");
    v["context"].as_object_mut().unwrap().remove("id");
    v["subject"]["content"]["outcome"] = "meh".into();
    let err = plain(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        fields(&err),
        ["context.id", "context.timestamp", "subject.content.outcome"]
    );

    let mut v = fixture_json("cdevents", "pipelinerun_finished.json");
    v["subject"]["content"]
        .as_object_mut()
        .unwrap()
        .remove("outcome");
    let err = plain(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(fields(&err), ["subject.content.outcome"]);

    let mut v = fixture_json("cdevents", "taskrun_started.json");
    v["subject"]["content"]
        .as_object_mut()
        .unwrap()
        .remove("pipelineRun");
    let err = plain(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(fields(&err), ["subject.content.pipelineRun.id"]);

    for (ty, says) in [
        (
            "dev.cdevents.spaceship.launched.0.1.0",
            "unknown CDEvents subject",
        ),
        ("com.example.build.done", "not a CDEvents type"),
        ("dev.cdevents.pipelinerun.finished", "expected dev.cdevents"),
        ("dev.cdevents.pipelinerun.finished.1.0.0", "not supported"),
    ] {
        let mut v = fixture_json("cdevents", "pipelinerun_finished.json");
        v["context"]["type"] = ty.into();
        let err = plain(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(fields(&err), ["context.type"], "{ty}");
        assert!(err.summary().contains(says), "{ty}: {}", err.summary());
    }

    let mut v = fixture_json("cdevents", "pipelinerun_finished.json");
    v["context"]["timestamp"] = "2023-03-20 14:27".into();
    v["subject"].as_object_mut().unwrap().remove("id");
    let err = plain(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(fields(&err), ["context.timestamp", "subject.id"]);

    let err = plain(b"[]").unwrap_err();
    assert!(err.summary().contains("CDEvent"));
    assert!(matches!(plain(b"{"), Err(Rejection::Malformed(_))));
}
