//! GitHub Actions `workflow_run` and `workflow_job` webhooks to partial runs.

mod common;

use cistern_core::RunResult;
use cistern_dialects::{github, Inbound, Rejection};
use common::*;

fn parse(event: &str, body: &[u8]) -> Result<Vec<Inbound>, Rejection> {
    github::parse(&headers(&[("X-GitHub-Event", event)]), body, &opts())
}

fn run_of(event: &str, name: &str) -> cistern_core::RunReport {
    one_run(parse(event, &fixture("github", name)).unwrap())
}

const RUN: (&str, &str, &str) = (
    "github.com",
    "wolfy1339/github-events-schemas/Test",
    "5373506832-1",
);

fn own(id: (&str, &str, &str)) -> (String, String, String) {
    (id.0.into(), id.1.into(), id.2.into())
}

#[test]
fn workflow_run_moves_through_its_life_as_one_run() {
    let requested = run_of("workflow_run", "workflow_run.requested.json");
    let in_progress = run_of("workflow_run", "workflow_run.in_progress.json");
    let completed = run_of("workflow_run", "workflow_run.completed.json");
    for r in [&requested, &in_progress, &completed] {
        assert_eq!(identity(r), own(RUN));
        assert!(r.partial);
        assert_eq!(r.started_at, t("2023-06-26T03:31:28Z"));
    }
    assert_eq!(requested.result, RunResult::Queued);
    assert_eq!(requested.source_result, "queued");
    assert_eq!(requested.finished_at, None);
    assert_eq!(in_progress.result, RunResult::Running);
    assert_eq!(in_progress.finished_at, None);
    assert_eq!(completed.result, RunResult::Failure);
    assert_eq!(completed.source_result, "failure");
    assert_eq!(completed.finished_at, Some(t("2023-06-26T03:33:02Z")));
    assert_eq!(completed.duration_ms, Some(94_000));

    let r = completed;
    assert_eq!(r.instance.url.as_deref(), Some("https://github.com"));
    assert_eq!(r.pipeline.name, "Test");
    assert_eq!(
        r.pipeline.qualified_name.as_deref(),
        Some(".github/workflows/test.yml")
    );
    assert_eq!(
        r.pipeline.project.as_deref(),
        Some("wolfy1339/github-events-schemas")
    );
    assert_eq!(r.build_number, Some(212));
    assert_eq!(r.execution_id.as_deref(), Some("5373506832"));
    assert_eq!(r.branch.as_deref(), Some("renovate/got-13.x"));
    assert_eq!(r.commits.len(), 1);
    assert_eq!(r.commits[0].sha, "eeeb91cc89453bff9ce51f450d8badd4eb41ae8b");
    assert_eq!(r.commits[0].committed_at, Some(t("2023-06-26T03:31:20Z")));
    assert_eq!(r.triggered_by.as_deref(), Some("renovate[bot]"));
    assert_eq!(
        r.web_url.as_deref(),
        Some("https://github.com/wolfy1339/github-events-schemas/actions/runs/5373506832")
    );
    assert_eq!(
        r.repo_url.as_deref(),
        Some("https://github.com/wolfy1339/github-events-schemas")
    );
    assert_eq!(r.repo.as_deref(), Some("wolfy1339/github-events-schemas"));
    assert!(r
        .params
        .iter()
        .any(|p| p.name == "event" && p.value == "pull_request"));
    assert!(r.stages.is_empty());
}

#[test]
fn workflow_job_attaches_the_job_as_a_stage_of_the_same_run() {
    let queued = run_of("workflow_job", "workflow_job.queued.json");
    let in_progress = run_of("workflow_job", "workflow_job.in_progress.json");
    let completed = run_of("workflow_job", "workflow_job.completed.json");
    // Whatever arrives first, job or run, names the same run.
    let run = run_of("workflow_run", "workflow_run.completed.json");
    for r in [&queued, &in_progress, &completed] {
        assert_eq!(identity(r), identity(&run));
        assert_eq!(r.pipeline, run.pipeline_without_path());
        assert!(r.partial);
        assert_eq!(r.stages.len(), 1);
        assert_eq!(r.stages[0].name, "Do examples need to be regenerated?");
        assert_eq!(r.finished_at, None);
        assert_eq!(r.web_url, run.web_url);
    }
    assert_eq!(queued.result, RunResult::Queued);
    assert_eq!(in_progress.result, RunResult::Running);
    // A finished job does not finish its run.
    assert_eq!(completed.result, RunResult::Running);
    assert!(queued.stages[0].steps.is_empty());

    let job = &in_progress.stages[0];
    assert_eq!(job.result, Some(RunResult::Running));
    assert_eq!(job.started_at, Some(t("2023-06-26T03:31:36Z")));
    assert_eq!(
        job.url.as_deref(),
        Some("https://github.com/wolfy1339/github-events-schemas/actions/runs/5373506832/jobs/9747952373")
    );
    let results: Vec<_> = job.steps.iter().map(|s| s.result).collect();
    assert_eq!(
        results[..4],
        [
            Some(RunResult::Success),
            Some(RunResult::Success),
            Some(RunResult::Running),
            Some(RunResult::Queued)
        ]
    );

    let job = &completed.stages[0];
    assert_eq!(job.result, Some(RunResult::Failure));
    assert_eq!(job.source_result.as_deref(), Some("failure"));
    assert_eq!(job.state.as_deref(), Some("completed"));
    assert_eq!(job.duration_ms, Some(76_000));
    assert_eq!(job.steps.len(), 10);
    assert_eq!(job.steps[0].name, "Set up job");
    assert_eq!(job.steps[0].duration_ms, Some(1_000));
    assert_eq!(job.steps[0].description.as_deref(), Some("step 1"));
    assert_eq!(job.steps[3].name, "Run npm ci");
    assert_eq!(job.steps[3].duration_ms, Some(49_000));
    assert_eq!(job.steps[6].result, Some(RunResult::Failure));
    assert_eq!(job.steps[9].name, "Complete job");
    let d = job.description.as_deref().unwrap();
    assert!(
        d.contains("runner: GitHub Actions 6") && d.contains("labels: ubuntu-latest"),
        "{d}"
    );
}

trait WithoutPath {
    fn pipeline_without_path(&self) -> cistern_core::PipelineRef;
}

impl WithoutPath for cistern_core::RunReport {
    /// A job does not know the workflow file: everything else of the pipeline is the same.
    fn pipeline_without_path(&self) -> cistern_core::PipelineRef {
        cistern_core::PipelineRef {
            qualified_name: None,
            ..self.pipeline.clone()
        }
    }
}

#[test]
fn steps_are_ordered_by_number() {
    let mut v = fixture_json("github", "workflow_job.completed.json");
    v["workflow_job"]["steps"].as_array_mut().unwrap().reverse();
    let r = one_run(parse("workflow_job", v.to_string().as_bytes()).unwrap());
    let names: Vec<&str> = r.stages[0].steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"Set up job"));
    assert_eq!(names.last(), Some(&"Complete job"));
}

#[test]
fn a_run_without_a_name_is_named_after_its_workflow() {
    // GitHub's documented example: `workflow_run.name` is empty, `workflow.name` is "test".
    let r = run_of("workflow_run", "workflow_run.completed.octokit.json");
    assert_eq!(
        identity(&r),
        (
            "github.com".into(),
            "octo-org/octo-repo/test".into(),
            "289782451-1".into()
        )
    );
    assert_eq!(r.result, RunResult::Success);
    assert_eq!(r.started_at, t("2020-10-05T16:33:49Z"));
    assert_eq!(r.finished_at, Some(t("2020-10-05T16:33:49Z")));
    assert_eq!(r.triggered_by.as_deref(), Some("Codertocat"));
    assert_eq!(r.commits[0].committed_at, Some(t("2020-10-05T16:32:07Z")));
}

#[test]
fn a_re_run_attempt_is_a_run_of_its_own() {
    let mut v = fixture_json("github", "workflow_run.completed.json");
    v["workflow_run"]["run_attempt"] = 2.into();
    let r = one_run(parse("workflow_run", v.to_string().as_bytes()).unwrap());
    assert_eq!(r.run_key, "5373506832-2");
    let mut j = fixture_json("github", "workflow_job.completed.json");
    j["workflow_job"]["run_attempt"] = 2.into();
    let job = one_run(parse("workflow_job", j.to_string().as_bytes()).unwrap());
    assert_eq!(identity(&job), identity(&r));
}

#[test]
fn github_enterprise_server_is_its_own_instance() {
    for (event, name) in [
        ("workflow_run", "workflow_run.in_progress.json"),
        ("workflow_job", "workflow_job.in_progress.json"),
    ] {
        let mut v = fixture_json("github", name);
        v["repository"]["html_url"] =
            "https://GHE.example.com/wolfy1339/github-events-schemas".into();
        let r = one_run(parse(event, v.to_string().as_bytes()).unwrap());
        assert_eq!(r.instance.guid, "ghe.example.com");
        assert_eq!(r.instance.url.as_deref(), Some("https://ghe.example.com"));
    }
}

#[test]
fn every_conclusion_maps() {
    for (word, expected) in [
        ("success", RunResult::Success),
        ("failure", RunResult::Failure),
        ("cancelled", RunResult::Aborted),
        ("skipped", RunResult::Skipped),
        ("timed_out", RunResult::Error),
        ("action_required", RunResult::OnHold),
        ("neutral", RunResult::Skipped),
        ("stale", RunResult::Aborted),
        ("startup_failure", RunResult::Error),
    ] {
        let mut v = fixture_json("github", "workflow_run.completed.json");
        v["workflow_run"]["conclusion"] = word.into();
        let r = one_run(parse("workflow_run", v.to_string().as_bytes()).unwrap());
        assert_eq!(r.result, expected, "{word}");
    }
    for (word, expected) in [
        ("requested", RunResult::Queued),
        ("waiting", RunResult::Queued),
        ("pending", RunResult::Queued),
        ("queued", RunResult::Queued),
        ("in_progress", RunResult::Running),
    ] {
        let mut v = fixture_json("github", "workflow_run.requested.json");
        v["workflow_run"]["status"] = word.into();
        let r = one_run(parse("workflow_run", v.to_string().as_bytes()).unwrap());
        assert_eq!(r.result, expected, "{word}");
    }
}

#[test]
fn ping_and_untracked_events_are_ignored() {
    assert_eq!(
        parse("ping", &fixture("github", "ping.json")).unwrap(),
        vec![Inbound::Ignored("ping".into())]
    );
    assert_eq!(
        parse("push", b"{}").unwrap(),
        vec![Inbound::Ignored("push".into())]
    );
}

#[test]
fn the_event_header_is_required() {
    let err = github::parse(
        &headers(&[]),
        &fixture("github", "workflow_run.completed.json"),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(fields(&err), ["X-GitHub-Event"]);
}

#[test]
fn malformed_payloads_name_their_fields() {
    let mut v = fixture_json("github", "workflow_run.completed.json");
    v["workflow_run"]["conclusion"] = "sort_of".into();
    v["workflow_run"]["run_started_at"] = "soon".into();
    v["workflow_run"]["id"] = "abc".into();
    v["repository"].as_object_mut().unwrap().remove("full_name");
    let err = parse("workflow_run", v.to_string().as_bytes()).unwrap_err();
    let f = fields(&err);
    for name in [
        "workflow_run.conclusion",
        "workflow_run.run_started_at",
        "workflow_run.id",
        "repository.full_name",
    ] {
        assert!(f.contains(&name.to_owned()), "{name} not in {f:?}");
    }
    assert!(err.summary().contains("accepted: success, failure"));

    let mut v = fixture_json("github", "workflow_run.completed.json");
    v["workflow_run"]["conclusion"] = serde_json::Value::Null;
    let err = parse("workflow_run", v.to_string().as_bytes()).unwrap_err();
    assert_eq!(fields(&err), ["workflow_run.conclusion"]);

    // A job payload from before `workflow_name` existed is read (its pipeline left unnamed);
    // its own bad fields are still named.
    let mut v = fixture_json("github", "workflow_job.completed.json");
    v["workflow_job"]
        .as_object_mut()
        .unwrap()
        .remove("workflow_name");
    v["workflow_job"]["steps"][2]["conclusion"] = "meh".into();
    let err = parse("workflow_job", v.to_string().as_bytes()).unwrap_err();
    assert_eq!(fields(&err), ["workflow_job.steps[2].conclusion"]);

    let err = parse("workflow_run", br#"{"action": "completed"}"#).unwrap_err();
    assert_eq!(fields(&err), ["repository", "workflow_run"]);
    assert!(matches!(
        parse("workflow_job", b"not json"),
        Err(Rejection::Malformed(_))
    ));
}

#[test]
fn a_job_without_workflow_name_names_no_pipeline_but_its_run() {
    let mut v = fixture_json("github", "workflow_job.completed.json");
    v["workflow_job"]
        .as_object_mut()
        .unwrap()
        .remove("workflow_name");
    let named = run_of("workflow_job", "workflow_job.completed.json");
    let r = one_run(parse("workflow_job", v.to_string().as_bytes()).unwrap());
    assert_eq!(r.pipeline.name, "", "unnamed");
    assert_eq!(r.run_key, named.run_key, "the same run key as its run's");
    assert!(r.partial);
    assert_eq!(r.stages.len(), 1);
}
