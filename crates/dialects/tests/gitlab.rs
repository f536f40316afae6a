//! GitLab CI Pipeline Hook and Job Hook webhooks to partial runs.

mod common;

use cistern_core::RunResult;
use cistern_dialects::{gitlab, Inbound, Rejection};
use common::*;

fn parse(event: &str, body: &[u8]) -> Result<Vec<Inbound>, Rejection> {
    gitlab::parse(&headers(&[("X-Gitlab-Event", event)]), body, &opts())
}

fn pipeline(name: &str) -> cistern_core::RunReport {
    one_run(parse("Pipeline Hook", &fixture("gitlab", name)).unwrap())
}

fn job(name: &str) -> cistern_core::RunReport {
    one_run(parse("Job Hook", &fixture("gitlab", name)).unwrap())
}

#[test]
fn a_pipeline_hook_is_a_run_with_stages_of_jobs() {
    let r = pipeline("pipeline_hook.json");
    assert_eq!(
        identity(&r),
        (
            "192.168.64.1:3005".into(),
            "gitlab-org/gitlab-test".into(),
            "31".into()
        )
    );
    assert_eq!(r.instance.url.as_deref(), Some("http://192.168.64.1:3005"));
    assert_eq!(r.instance.kind.as_deref(), Some("gitlab"));
    assert!(r.partial);
    assert_eq!(r.build_number, Some(3));
    assert_eq!(r.execution_id.as_deref(), Some("31"));
    assert_eq!(r.result, RunResult::Success);
    assert_eq!(r.source_result, "success");
    // GitLab's own time format and whole seconds.
    assert_eq!(r.started_at, t("2016-08-12T15:23:28Z"));
    assert_eq!(r.finished_at, Some(t("2016-08-12T15:26:29Z")));
    assert_eq!(r.duration_ms, Some(63_000));
    assert_eq!(r.branch.as_deref(), Some("master"));
    assert_eq!(r.commits.len(), 1);
    assert_eq!(r.commits[0].sha, "bcbb5ec396a2c0f828686f14fac9b80b780504f2");
    assert_eq!(r.commits[0].committed_at, Some(t("2016-08-12T15:23:21Z")));
    assert_eq!(r.triggered_by.as_deref(), Some("root"));
    assert_eq!(
        r.web_url.as_deref(),
        Some("http://example.com/gitlab-org/gitlab-test/-/pipelines/31")
    );
    assert_eq!(
        r.repo_url.as_deref(),
        Some("http://192.168.64.1:3005/gitlab-org/gitlab-test")
    );
    assert_eq!(r.repo.as_deref(), Some("gitlab-org/gitlab-test"));
    assert!(r
        .params
        .iter()
        .any(|p| p.name == "source" && p.value == "merge_request_event"));
    // Pipeline variables may hold secrets: they are not kept.
    assert!(!r.params.iter().any(|p| p.value == "us-west-1"));

    let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["build", "test", "deploy"]);
    let steps =
        |i: usize| -> Vec<&str> { r.stages[i].steps.iter().map(|s| s.name.as_str()).collect() };
    assert_eq!(steps(0), ["build-image"]);
    assert_eq!(steps(1), ["test-image", "test-build"]);
    assert_eq!(steps(2), ["staging", "production"]);

    let build = &r.stages[0];
    assert_eq!(build.result, Some(RunResult::Success));
    assert_eq!(build.started_at, Some(t("2016-08-12T15:24:56Z")));
    assert_eq!(build.duration_ms, Some(30_000));
    let test = &r.stages[1];
    assert_eq!(test.result, Some(RunResult::Failure));
    let failed = &test.steps[1];
    assert_eq!(failed.result, Some(RunResult::Failure));
    assert_eq!(failed.source_result.as_deref(), Some("failed"));
    assert_eq!(failed.started_at, Some(t("2016-08-12T15:26:12Z")));
    assert_eq!(failed.duration_ms, Some(17_000));
    assert_eq!(
        failed.url.as_deref(),
        Some("http://192.168.64.1:3005/gitlab-org/gitlab-test/-/jobs/378")
    );
    assert_eq!(
        failed.description.as_deref(),
        Some("failure reason: script_failure")
    );
    let deploy = &r.stages[2];
    assert_eq!(deploy.steps[0].result, Some(RunResult::Queued));
    assert_eq!(deploy.steps[1].result, Some(RunResult::Skipped));
    assert_eq!(deploy.steps[1].duration_ms, None);
    assert_eq!(deploy.result, Some(RunResult::Queued));
}

#[test]
fn a_running_pipeline_has_no_end_yet() {
    let r = pipeline("pipeline_hook.running.json");
    assert_eq!(r.result, RunResult::Running);
    assert_eq!(r.finished_at, None);
    assert_eq!(r.duration_ms, None);
    assert_eq!(r.stages[1].result, Some(RunResult::Running));
    assert_eq!(r.stages[1].steps[1].duration_ms, None);
}

#[test]
fn a_job_hook_updates_one_step_of_the_same_run() {
    let p = pipeline("pipeline_hook.json");
    for name in ["job_hook.pipeline_31.json", "job_hook.legacy.json"] {
        let r = job(name);
        assert_eq!(identity(&r), identity(&p), "{name}");
        assert_eq!(r.pipeline, p.pipeline, "{name}");
        assert_eq!(r.instance, p.instance, "{name}");
        assert!(r.partial);
        assert_eq!(r.result, RunResult::Running);
        assert_eq!(r.finished_at, None);
        assert_eq!(r.triggered_by, None);
        assert_eq!(r.build_number, None);
        assert_eq!(
            r.web_url.as_deref(),
            Some("http://192.168.64.1:3005/gitlab-org/gitlab-test/-/pipelines/31")
        );
        assert_eq!(r.stages.len(), 1);
        let stage = &r.stages[0];
        assert_eq!(stage.name, "test");
        // Only the job: the stage's own fields are left for the store to keep.
        assert_eq!(stage.result, None);
        assert_eq!(stage.started_at, None);
        assert_eq!(stage.steps.len(), 1);
        // The step is the same as in the Pipeline Hook.
        assert_eq!(stage.steps[0], p.stages[1].steps[1], "{name}");
    }
}

#[test]
fn the_documented_job_hook_parses() {
    let r = job("job_hook.json");
    assert_eq!(
        identity(&r),
        (
            "192.168.64.1:3005".into(),
            "gitlab-org/gitlab-test".into(),
            "2366".into()
        )
    );
    // A created job: the pipeline waits, since the job's creation.
    assert_eq!(r.result, RunResult::Queued);
    assert_eq!(r.started_at, t("2021-02-23T02:41:37.886Z"));
    let step = &r.stages[0].steps[0];
    assert_eq!(step.name, "test");
    assert_eq!(step.result, Some(RunResult::Queued));
    assert_eq!(step.started_at, None);
    assert_eq!(step.duration_ms, None);
    // The failure reason of a job that has not failed is noise.
    assert_eq!(step.description, None);
    assert_eq!(r.commits[0].sha, "2293ada6b400935a1378653304eaf6221e0fdb8f");
    assert_eq!(r.commits[0].committed_at, None);
}

#[test]
fn fractional_seconds_become_milliseconds() {
    let mut v = fixture_json("gitlab", "job_hook.pipeline_31.json");
    v["build_duration"] = 1.2345.into();
    let r = one_run(parse("Job Hook", v.to_string().as_bytes()).unwrap());
    assert_eq!(r.stages[0].steps[0].duration_ms, Some(1_235));
    // Without a duration, the times give it.
    v["build_duration"] = serde_json::Value::Null;
    let r = one_run(parse("Job Hook", v.to_string().as_bytes()).unwrap());
    assert_eq!(r.stages[0].steps[0].duration_ms, Some(17_000));
}

#[test]
fn every_gitlab_status_maps() {
    for (word, expected) in [
        ("created", RunResult::Queued),
        ("pending", RunResult::Queued),
        ("waiting_for_resource", RunResult::Queued),
        ("preparing", RunResult::Queued),
        ("scheduled", RunResult::Queued),
        ("running", RunResult::Running),
        ("success", RunResult::Success),
        ("failed", RunResult::Failure),
        ("canceled", RunResult::Aborted),
        ("skipped", RunResult::Skipped),
        ("manual", RunResult::OnHold),
    ] {
        let mut v = fixture_json("gitlab", "pipeline_hook.json");
        v["object_attributes"]["status"] = word.into();
        let r = one_run(parse("Pipeline Hook", v.to_string().as_bytes()).unwrap());
        assert_eq!(r.result, expected, "{word}");
    }
}

#[test]
fn stages_follow_the_pipelines_order_and_then_first_appearance() {
    let mut v = fixture_json("gitlab", "pipeline_hook.json");
    v["object_attributes"]["stages"] = serde_json::json!(["deploy", "build"]);
    let r = one_run(parse("Pipeline Hook", v.to_string().as_bytes()).unwrap());
    let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["deploy", "build", "test"]);
}

#[test]
fn other_events_are_ignored_and_system_hooks_read_by_kind() {
    assert_eq!(
        parse("Push Hook", b"{}").unwrap(),
        vec![Inbound::Ignored("Push Hook".into())]
    );
    let r = one_run(parse("System Hook", &fixture("gitlab", "pipeline_hook.json")).unwrap());
    assert_eq!(r.run_key, "31");
    let r = one_run(parse("System Hook", &fixture("gitlab", "job_hook.json")).unwrap());
    assert_eq!(r.run_key, "2366");
    assert_eq!(
        parse("System Hook", br#"{"object_kind": "push"}"#).unwrap(),
        vec![Inbound::Ignored("System Hook push".into())]
    );
    let err = gitlab::parse(&headers(&[]), b"{}", &opts()).unwrap_err();
    assert_eq!(fields(&err), ["X-Gitlab-Event"]);
}

#[test]
fn malformed_hooks_name_their_fields() {
    let mut v = fixture_json("gitlab", "pipeline_hook.json");
    v["object_attributes"]["status"] = "amber".into();
    v["object_attributes"]["created_at"] = "12/08/2016".into();
    v["object_attributes"]["duration"] = (-5).into();
    v["builds"][1]["duration"] = "17s".into();
    v["builds"][2]["status"] = "exploded".into();
    v["project"]
        .as_object_mut()
        .unwrap()
        .remove("path_with_namespace");
    let err = parse("Pipeline Hook", v.to_string().as_bytes()).unwrap_err();
    let f = fields(&err);
    for name in [
        "object_attributes.status",
        "object_attributes.created_at",
        "object_attributes.duration",
        "builds[1].duration",
        "builds[2].status",
        "project.path_with_namespace",
    ] {
        assert!(f.contains(&name.to_owned()), "{name} not in {f:?}");
    }
    assert!(err.summary().contains("2016-08-12 15:23:28 UTC"));

    let mut v = fixture_json("gitlab", "job_hook.json");
    let o = v.as_object_mut().unwrap();
    o.remove("pipeline_id");
    o.remove("build_stage");
    o.insert("build_status".into(), "weird".into());
    let err = parse("Job Hook", v.to_string().as_bytes()).unwrap_err();
    let f = fields(&err);
    for name in ["pipeline_id", "build_stage", "build_status"] {
        assert!(f.contains(&name.to_owned()), "{name} not in {f:?}");
    }

    let err = parse("Pipeline Hook", b"[1, 2]").unwrap_err();
    assert!(err.summary().contains("JSON object"));
    assert!(matches!(
        parse("Job Hook", b"{\"object_kind\": "),
        Err(Rejection::Malformed(_))
    ));
}

#[test]
fn a_correlation_id_variable_is_kept_and_no_other() {
    let mut v = fixture_json("gitlab", "pipeline_hook.json");
    v["object_attributes"]["variables"] = serde_json::json!([
        {"key": "DEPLOY_TOKEN", "value": "glpat-secret"},
        {"key": "CORRELATION_ID", "value": "62e2f35160958b611e494564"}
    ]);
    let r = one_run(parse("Pipeline Hook", v.to_string().as_bytes()).unwrap());
    let vars: Vec<(&str, &serde_json::Value)> = r
        .params
        .iter()
        .filter(|p| p.name != "name" && p.name != "source" && p.name != "tag")
        .map(|p| (p.name.as_str(), &p.value))
        .collect();
    assert_eq!(
        vars,
        [(
            "CORRELATION_ID",
            &serde_json::json!("62e2f35160958b611e494564")
        )]
    );
    let fixture = pipeline("pipeline_hook.json");
    assert!(fixture
        .params
        .iter()
        .all(|p| p.name != "NESTOR_PROD_ENVIRONMENT"));
}
