//! JobServ build webhooks (seed 004) to runs.

mod common;

use cistern_core::RunResult;
use cistern_dialects::{jobserv, Headers, Rejection};
use common::*;

fn parse(body: &[u8]) -> Result<Vec<cistern_dialects::Inbound>, Rejection> {
    jobserv::parse(&Headers::default(), body, &opts())
}

#[test]
fn the_seed_build_is_one_complete_run_with_a_stage_per_jobserv_run() {
    let r = one_run(parse(&fixture("jobserv", "build_passed.json")).unwrap());
    assert_eq!(
        identity(&r),
        (
            "api.foundries.io".into(),
            "andy-corp/lmp".into(),
            "67".into()
        )
    );
    assert_eq!(r.instance.url.as_deref(), Some("https://api.foundries.io"));
    assert_eq!(r.instance.kind.as_deref(), Some("jobserv"));
    assert_eq!(r.pipeline.name, "andy-corp/lmp");
    assert_eq!(r.build_number, Some(67));
    assert_eq!(r.result, RunResult::Success);
    assert_eq!(r.source_result, "PASSED");
    assert_eq!(r.started_at, t("2021-07-26T18:10:33+00:00"));
    assert_eq!(r.finished_at, Some(t("2021-07-26T18:19:24+00:00")));
    assert_eq!(r.duration_ms, Some(531_000));
    // The trigger is the trigger, not a user.
    assert_eq!(r.triggered_by, None);
    assert_eq!(
        r.trigger_chain,
        vec![serde_json::json!({"id": "containers-devel", "type": "JobServTrigger"})]
    );
    assert_eq!(
        r.web_url.as_deref(),
        Some("https://ci.foundries.io/projects/andy-corp/lmp/builds/67")
    );
    assert!(!r.partial);
    assert!(r.ci && !r.cd);
    assert_eq!(r.source, "jobserv");
    let params: Vec<(&str, &str)> = r
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str().unwrap()))
        .collect();
    assert_eq!(
        params,
        [
            ("trigger_name", "containers-devel"),
            (
                "api_url",
                "https://api.foundries.io/projects/andy-corp/lmp/builds/67/"
            )
        ]
    );

    let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "build-amd64-partner",
            "build-armhf",
            "build-aarch64",
            "publish-compose-apps"
        ]
    );
    let s = &r.stages[0];
    assert_eq!(s.result, Some(RunResult::Success));
    assert_eq!(s.source_result.as_deref(), Some("PASSED"));
    assert_eq!(s.started_at, Some(t("2021-07-26T18:10:37+00:00")));
    assert_eq!(s.duration_ms, Some(65_000));
    // Each JobServ run field keeps a place of its own: the API url is the stage's link, the
    // others are custom fields `<run>.<field>`.
    assert_eq!(
        s.url.as_deref(),
        Some("https://api.foundries.io/projects/andy-corp/lmp/builds/67/runs/build-amd64-partner/")
    );
    assert_eq!(s.description, None, "no free text");
    let field = |k: &str| {
        r.custom_fields
            .iter()
            .find(|f| f.key == k)
            .map(|f| (f.kind, f.value.as_str().unwrap().to_owned()))
    };
    use cistern_core::CustomFieldType::String as Text;
    assert_eq!(
        field("build-amd64-partner.log_url"),
        Some((Text, "https://api.foundries.io/projects/andy-corp/lmp/builds/67/runs/build-amd64-partner/console.log".into()))
    );
    assert_eq!(
        field("build-amd64-partner.web_url"),
        Some((
            Text,
            "https://ci.foundries.io/projects/andy-corp/lmp/builds/67/build-amd64-partner/".into()
        ))
    );
    assert_eq!(
        field("build-amd64-partner.host_tag"),
        Some((Text, "amd64-partner".into()))
    );
    assert_eq!(
        field("build-amd64-partner.tests"),
        Some((Text, "https://api.foundries.io/projects/andy-corp/lmp/builds/67/runs/build-amd64-partner/tests/".into()))
    );
    // The last run has no tests link.
    assert_eq!(field("publish-compose-apps.tests"), None);
    assert_eq!(
        field("publish-compose-apps.host_tag"),
        Some((Text, "amd64-partner".into()))
    );
    assert_eq!(r.custom_fields.len(), 15);
    assert_eq!(r.stages[3].duration_ms, Some(455_000));
}

#[test]
fn a_failed_build_keeps_each_runs_status() {
    let r = one_run(parse(&fixture("jobserv", "build_failed.json")).unwrap());
    assert_eq!(r.run_key, "68");
    assert_eq!(r.result, RunResult::Failure);
    assert_eq!(r.trigger_chain[0]["id"], "platform-devel");
    assert_eq!(r.stages[0].result, Some(RunResult::Failure));
    assert_eq!(r.stages[1].result, Some(RunResult::Aborted));
    assert_eq!(r.stages[1].state.as_deref(), Some("CANCELLING"));
    // Not completed: no duration.
    assert_eq!(r.stages[1].duration_ms, None);
}

#[test]
fn every_jobserv_status_maps() {
    for (word, expected) in [
        ("QUEUED", RunResult::Queued),
        ("RUNNING", RunResult::Running),
        ("UPLOADING", RunResult::Running),
        ("RUNNING_WITH_FAILURES", RunResult::Running),
        ("PASSED", RunResult::Success),
        ("PROMOTED", RunResult::Success),
        ("FAILED", RunResult::Failure),
        ("SKIPPED", RunResult::Skipped),
        ("CANCELLING", RunResult::Aborted),
        ("running", RunResult::Running),
    ] {
        let mut v = fixture_json("jobserv", "build_passed.json");
        v["status"] = word.into();
        v["completed"] = serde_json::Value::Null;
        let r = one_run(parse(v.to_string().as_bytes()).unwrap());
        assert_eq!(r.result, expected, "{word}");
        assert_eq!(r.source_result, word);
    }
}

#[test]
fn without_an_api_url_the_instance_is_jobserv_and_the_project_comes_from_web_url() {
    let mut v = fixture_json("jobserv", "build_passed.json");
    v.as_object_mut().unwrap().remove("url");
    let r = one_run(parse(v.to_string().as_bytes()).unwrap());
    assert_eq!(
        identity(&r),
        ("jobserv".into(), "andy-corp/lmp".into(), "67".into())
    );
}

#[test]
fn bad_fields_are_all_named_at_once() {
    let mut v = fixture_json("jobserv", "build_passed.json");
    let o = v.as_object_mut().unwrap();
    o.remove("url");
    o.remove("web_url");
    o.remove("build_id");
    o.insert("status".into(), "GREENISH".into());
    o.insert("created".into(), "yesterday".into());
    v["runs"][1]["status"] = "BLUE".into();
    v["runs"][2]["completed"] = "2021-07-26T18:00:00+00:00".into();
    let err = parse(v.to_string().as_bytes()).unwrap_err();
    let f = fields(&err);
    for name in [
        "url",
        "build_id",
        "status",
        "created",
        "runs[1].status",
        "runs[2].completed",
    ] {
        assert!(f.contains(&name.to_owned()), "{name} not in {f:?}");
    }
    let msg = err.summary();
    assert!(msg.contains("accepted: QUEUED, RUNNING"), "{msg}");
    assert!(msg.contains("is before"), "{msg}");
}

#[test]
fn a_body_that_is_not_one_build_is_refused() {
    assert!(matches!(parse(b""), Err(Rejection::Malformed(_))));
    assert!(matches!(
        parse(b"{\"build_id\": 1,"),
        Err(Rejection::Malformed(_))
    ));
    let err = parse(b"[]").unwrap_err();
    assert!(err.summary().contains("JSON object"), "{}", err.summary());
    let err = parse(br#"{"build_id": "sixty", "status": "PASSED"}"#).unwrap_err();
    assert!(fields(&err).contains(&"build_id".to_owned()));
}

#[test]
fn tests_given_with_their_results_become_the_runs_steps() {
    let mut v = fixture_json("jobserv", "build_passed.json");
    v["runs"][0]["tests"] = serde_json::json!([
        {"name": "unit", "status": "PASSED", "created": "2021-07-26T18:10:40+00:00", "completed": "2021-07-26T18:10:50+00:00"},
        {"name": "smoke", "status": "FAILED", "url": "https://api.foundries.io/projects/andy-corp/lmp/builds/67/runs/build-amd64-partner/tests/smoke/"}
    ]);
    let r = one_run(parse(v.to_string().as_bytes()).unwrap());
    let steps = &r.stages[0].steps;
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].name, "unit");
    assert_eq!(steps[0].result, Some(RunResult::Success));
    assert_eq!(steps[0].duration_ms, Some(10_000));
    assert_eq!(steps[1].result, Some(RunResult::Failure));
    assert!(steps[1].url.as_deref().unwrap().ends_with("/tests/smoke/"));
    assert!(!r
        .custom_fields
        .iter()
        .any(|f| f.key == "build-amd64-partner.tests"));
    // A test with an unknown status is named by its path.
    v["runs"][0]["tests"][1]["status"] = "MAYBE".into();
    let Err(Rejection::Invalid(errs)) = parse(v.to_string().as_bytes()) else {
        panic!("refused")
    };
    assert_eq!(errs[0].field, "runs[0].tests[1].status");
}
