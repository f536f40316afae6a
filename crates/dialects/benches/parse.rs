//! Parsing and validation throughput of each dialect, in bytes per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

fn sei_body(n: u64) -> Vec<u8> {
    // ~2 KB: 2 stages × 3 steps, 2 commits, params, an artifact (the load test's payload).
    let stage = |name: &str| {
        json!({"displayName": name, "displayDescription": format!("{name} stage"), "result": "SUCCESS", "state": "FINISHED",
               "durationInMillis": 20_000, "startTime": 1_700_000_000_000i64 + n as i64,
               "steps": (0..3).map(|i| json!({"displayName": format!("{name}-step-{i}"), "result": "SUCCESS",
                   "state": "FINISHED", "durationInMillis": 6_000})).collect::<Vec<_>>()})
    };
    json!({"pipeline": "service-1", "job_full_name": "org/service-1/main", "qualified_name": "org/service-1/main",
        "instance_name": "jenkins", "instance_guid": "b0000000-0000-4000-8000-000000000001",
        "start_time": 1_700_000_000_000i64 + n as i64, "duration": 65_000, "result": "SUCCESS", "execution_id": format!("exec-{n}"),
        "build_number": n, "user_id": "SCMTrigger", "repo_url": "https://github.com/acme/service.git", "branch_name": "main",
        "project_name": "Platform", "scm_commit_ids": ["64be72b2c1f7d2a33082f98a40a848880fcdcd5e", "6ce2cfec186fbf9ae9429ad22e32e7770f1eb1fb"],
        "job_run_params": [{"type": "StringParameterValue", "name": "TARGET", "value": "qa"}], "ci": true, "cd": false,
        "artifacts": [{"input": false, "output": true, "type": "container", "location": "registry/service", "name": "service", "qualifier": "1.0"}],
        "trigger_chain": [{"id": "SCMTrigger", "type": "SCMTriggerCause"}],
        "job_run": {"stages": [stage("build"), stage("test")]}, "web_url": "https://jenkins.acme.com/job/service/1/"})
    .to_string()
    .into_bytes()
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .expect("fixture")
}

fn bench(c: &mut Criterion) {
    let opts = cistern_dialects::ParseOptions::new(1 << 20);
    let mut g = c.benchmark_group("parse");
    let sei = sei_body(1);
    g.throughput(Throughput::Bytes(sei.len() as u64));
    g.bench_function("sei", |b| {
        b.iter(|| cistern_dialects::sei::parse(std::hint::black_box(&sei), &opts).unwrap())
    });
    let propelo = json!({"request_type": "JenkinsPluginJobRunComplete", "payload": String::from_utf8(sei.clone()).unwrap()}).to_string().into_bytes();
    g.throughput(Throughput::Bytes(propelo.len() as u64));
    g.bench_function("propelo", |b| {
        b.iter(|| cistern_dialects::propelo::parse(std::hint::black_box(&propelo), &opts).unwrap())
    });
    let allstacks = json!({"job_id": "1", "status": "Succeeded", "commit_sha": "a2e7da86cc392417b0d9f605b28038aae80b002f",
        "repo_id": "12345", "service_id": 2, "job_start_time": 1_704_018_030, "job_duration": 300, "job_type": "Production Deploy",
        "optional": [{"key": "microservice", "value": ["frontend", "backend"], "type": "string"}, {"key": "lead_time", "value": 20, "type": "duration"}]})
    .to_string()
    .into_bytes();
    g.throughput(Throughput::Bytes(allstacks.len() as u64));
    g.bench_function("allstacks", |b| {
        b.iter(|| {
            cistern_dialects::allstacks::parse(std::hint::black_box(&allstacks), &opts).unwrap()
        })
    });
    let headers = |pairs: &[(&str, &str)]| {
        cistern_dialects::Headers(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    for (name, path, hs) in [
        ("jobserv", "jobserv/build_passed.json", headers(&[])),
        (
            "github",
            "github/workflow_run.completed.json",
            headers(&[("X-GitHub-Event", "workflow_run")]),
        ),
        (
            "gitlab",
            "gitlab/pipeline_hook.json",
            headers(&[("X-Gitlab-Event", "Pipeline Hook")]),
        ),
        (
            "cdevents",
            "cdevents/pipelinerun_finished.json",
            headers(&[]),
        ),
    ] {
        let body = fixture(path);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = match name {
                    "jobserv" => {
                        cistern_dialects::jobserv::parse(&hs, std::hint::black_box(&body), &opts)
                    }
                    "github" => {
                        cistern_dialects::github::parse(&hs, std::hint::black_box(&body), &opts)
                    }
                    "gitlab" => {
                        cistern_dialects::gitlab::parse(&hs, std::hint::black_box(&body), &opts)
                    }
                    _ => cistern_dialects::cdevents::parse(&hs, std::hint::black_box(&body), &opts),
                };
                r.unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
