//! The pollers against fake Jenkins and GitLab servers (in-process, on loopback, answering
//! JSON shaped like the real APIs'): paging, builds and pipelines appearing and finishing
//! between polls, restarts that neither miss nor repeat a run, and payloads the hub accepts.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cistern_agent::satellite::config::{Application, Integration};
use cistern_agent::satellite::pollers::{gitlab::Gitlab, jenkins::Jenkins, Context};
use cistern_agent::satellite::spool::Spool;
use cistern_agent::satellite::Status;
use serde_json::{json, Value};
use tokio::sync::Notify;

const T0: i64 = 1_711_603_545_000;

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

fn integration(app: Application, url: &str, user: Option<&str>, key: &str) -> Integration {
    Integration {
        id: "42".into(),
        application: app,
        url: Some(url.into()),
        username: user.map(str::to_owned),
        api_key: Some(key.into()),
        metadata: json!({}),
    }
}

fn context(i: &Integration, spool: &Arc<Spool>, dir: &Path) -> Context {
    Context {
        integration: i.clone(),
        spool: spool.clone(),
        wake: Arc::new(Notify::new()),
        status: Arc::new(Status::default()),
        state_file: dir.join("pollers").join("42.json"),
    }
}

/// Takes every spooled run out of the spool (as the forwarder would), checking each is a run
/// the hub's SEI parser accepts.
fn drain(spool: &Spool) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(seq) = spool.first() {
        let e = spool.read(seq).unwrap();
        assert_eq!(e.header.endpoint, "/v1/custom-cicd");
        assert_eq!(e.header.origin, "poller:42");
        let parsed =
            cistern_dialects::sei::parse(&e.body, &cistern_dialects::ParseOptions::new(1 << 20));
        assert!(
            parsed.is_ok(),
            "the hub would refuse {}: {parsed:?}",
            String::from_utf8_lossy(&e.body)
        );
        out.push(serde_json::from_slice(&e.body).unwrap());
        spool.remove(seq).unwrap();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Jenkins

#[derive(Clone)]
struct Build {
    number: u64,
    result: Option<&'static str>,
}

#[derive(Default)]
struct FakeJenkins {
    /// `team/api` (a Pipeline job in a folder).
    api: Vec<Build>,
    /// `nightly` (a freestyle job).
    nightly: Vec<Build>,
    /// Requests for build pages.
    build_pages: usize,
    auth_seen: Option<String>,
}

fn sha(n: u64) -> String {
    format!("{n:040x}")
}

fn jenkins_build(job_url: &str, b: &Build) -> Value {
    json!({
        "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
        "building": b.result.is_none(),
        "duration": if b.result.is_some() { 61_000 } else { 0 },
        "number": b.number,
        "result": b.result,
        "timestamp": T0 + b.number as i64 * 3_600_000,
        "url": format!("{job_url}{}/", b.number),
        "changeSets": [{
            "_class": "hudson.plugins.git.GitChangeSetList",
            "kind": "git",
            "items": [{"_class": "hudson.plugins.git.GitChangeSet", "commitId": sha(b.number)},
                      {"_class": "hudson.scm.SubversionChangeLogSet$LogEntry", "commitId": "1234"}]
        }]
    })
}

/// `allBuilds[…]{from,to}` out of the query.
fn range(query: &str) -> (usize, usize) {
    let q = query
        .replace("%7B", "{")
        .replace("%7D", "}")
        .replace("%2C", ",");
    let Some(open) = q.rfind('{') else {
        return (0, usize::MAX);
    };
    let inner = &q[open + 1..q[open..].find('}').map(|i| open + i).unwrap_or(q.len())];
    let mut it = inner.split(',').map(|n| n.parse::<usize>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(usize::MAX))
}

async fn jenkins(state: Arc<Mutex<FakeJenkins>>, uri: Uri, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    s.auth_seen = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let query = uri.query().unwrap_or("");
    let page = |builds: &[Build], url: &str, from: usize, to: usize| -> Value {
        let mut newest_first = builds.to_vec();
        newest_first.sort_by_key(|b| std::cmp::Reverse(b.number));
        let items: Vec<Value> = newest_first
            .iter()
            .skip(from)
            .take(to.saturating_sub(from))
            .map(|b| jenkins_build(url, b))
            .collect();
        json!({"_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "allBuilds": items})
    };
    match uri.path() {
        "/api/json" => Json(json!({"_class": "hudson.model.Hudson", "jobs": [
            {"_class": "com.cloudbees.hudson.plugins.folder.Folder", "name": "team"},
            {"_class": "hudson.model.FreeStyleProject", "name": "nightly"},
        ]}))
        .into_response(),
        "/job/team/api/json" => Json(json!({"_class": "com.cloudbees.hudson.plugins.folder.Folder", "jobs": [
            {"_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "name": "api"},
        ]}))
        .into_response(),
        "/job/team/job/api/api/json" => {
            s.build_pages += 1;
            let (from, to) = range(query);
            Json(page(&s.api, "http://jenkins.local/job/team/job/api/", from, to)).into_response()
        }
        "/job/nightly/api/json" => {
            s.build_pages += 1;
            let (from, to) = range(query);
            Json(page(&s.nightly, "http://jenkins.local/job/nightly/", from, to)).into_response()
        }
        p if p.starts_with("/blue/rest/organizations/jenkins/pipelines/team/pipelines/api/runs/") => {
            Json(json!([
                {"_class": "io.jenkins.blueocean.rest.impl.pipeline.PipelineNodeImpl", "displayName": "Build",
                 "durationInMillis": 20_000, "id": "6", "result": "SUCCESS", "startTime": "2024-03-28T05:25:45.123+0000",
                 "state": "FINISHED", "type": "STAGE"},
                {"_class": "io.jenkins.blueocean.rest.impl.pipeline.PipelineNodeImpl", "displayName": "Test",
                 "durationInMillis": 40_000, "id": "12", "result": "FAILURE", "startTime": "2024-03-28T05:26:05.123+0000",
                 "state": "FINISHED", "type": "STAGE"},
                {"_class": "io.jenkins.blueocean.rest.impl.pipeline.PipelineNodeImpl", "displayName": "Deploy",
                 "durationInMillis": null, "id": "20", "result": null, "startTime": null,
                 "state": null, "type": "STAGE"},
            ]))
            .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

fn finished(from: u64, to: u64) -> Vec<Build> {
    (from..=to)
        .map(|n| Build {
            number: n,
            result: Some(if n % 7 == 0 { "FAILURE" } else { "SUCCESS" }),
        })
        .collect()
}

#[tokio::test]
async fn jenkins_builds_are_reported_once_each_across_polls_and_restarts() {
    let fake = Arc::new(Mutex::new(FakeJenkins::default()));
    {
        let mut f = fake.lock().unwrap();
        f.api = finished(1, 59);
        f.api.push(Build {
            number: 60,
            result: None,
        });
        f.nightly = finished(1, 3);
    }
    let st = fake.clone();
    let base = serve(
        axum::Router::new().fallback(move |uri: Uri, h: HeaderMap| jenkins(st.clone(), uri, h)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), 1 << 30).unwrap());
    let i = integration(Application::Jenkins, &base, Some("bot"), "t0k");
    let client = || reqwest::Client::new();

    // First poll: the whole history, 60 builds of `team/api` in two pages; the running one
    // waits.
    let ctx = context(&i, &spool, dir.path());
    let poller = Jenkins::new(&i, client()).unwrap();
    assert_eq!(poller.poll(&ctx).await.unwrap(), 62);
    let runs = drain(&spool);
    assert_eq!(runs.len(), 62);
    assert_eq!(
        fake.lock().unwrap().build_pages,
        3,
        "two pages of api, one of nightly"
    );
    assert!(fake
        .lock()
        .unwrap()
        .auth_seen
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic ")));
    let api_7 = runs
        .iter()
        .find(|r| r["execution_id"] == "team/api#7")
        .expect("build 7");
    assert_eq!(api_7["pipeline"], "api");
    assert_eq!(api_7["job_full_name"], "team/api");
    assert_eq!(api_7["result"], "FAILURE");
    assert_eq!(api_7["start_time"], T0 + 7 * 3_600_000);
    assert_eq!(api_7["duration"], 61_000);
    assert_eq!(
        api_7["scm_commit_ids"],
        json!([sha(7)]),
        "svn revisions left out"
    );
    let stages = api_7["job_run"]["stages"]
        .as_array()
        .expect("Blue Ocean stages");
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[1]["displayName"], "Test");
    assert_eq!(stages[1]["result"], "FAILURE");
    let nightly = runs
        .iter()
        .find(|r| r["execution_id"] == "nightly#2")
        .expect("nightly 2");
    assert!(
        nightly.get("job_run").is_none(),
        "freestyle jobs have no stages"
    );
    let mut ids: HashSet<String> = runs
        .iter()
        .map(|r| r["execution_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 62);

    // Between polls: 60 finishes, 61 starts, 62 finishes. A restarted poller (new instance,
    // same state file) reports exactly 60 and 62, reading only the newest page.
    {
        let mut f = fake.lock().unwrap();
        f.api[59].result = Some("FAILURE");
        f.api.push(Build {
            number: 61,
            result: None,
        });
        f.api.push(Build {
            number: 62,
            result: Some("SUCCESS"),
        });
        f.build_pages = 0;
    }
    let poller = Jenkins::new(&i, client()).unwrap();
    let ctx = context(&i, &spool, dir.path());
    assert_eq!(poller.poll(&ctx).await.unwrap(), 2);
    let runs = drain(&spool);
    let got: Vec<&str> = runs
        .iter()
        .map(|r| r["execution_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec!["team/api#60", "team/api#62"]);
    assert_eq!(fake.lock().unwrap().build_pages, 2, "one page per job");

    // Nothing new: nothing reported.
    assert_eq!(poller.poll(&ctx).await.unwrap(), 0);

    // 61 finishes.
    fake.lock().unwrap().api[60].result = Some("ABORTED");
    let poller = Jenkins::new(&i, client()).unwrap();
    assert_eq!(poller.poll(&ctx).await.unwrap(), 1);
    let runs = drain(&spool);
    assert_eq!(runs[0]["execution_id"], "team/api#61");
    assert_eq!(runs[0]["result"], "ABORTED");
    for r in &runs {
        assert!(ids.insert(r["execution_id"].as_str().unwrap().to_owned()));
    }
}

// ---------------------------------------------------------------------------------------------
// GitLab

struct Pipeline {
    id: u64,
    project: u64,
    status: &'static str,
    updated_ms: i64,
}

#[derive(Default)]
struct FakeGitlab {
    pipelines: Vec<Pipeline>,
    tokens: HashSet<String>,
    pipeline_list_requests: usize,
}

fn iso(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap()
}

fn query(uri: &Uri) -> std::collections::HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.replace("%3A", ":")
                    .replace("%2B", "+")
                    .replace("%2F", "/"),
            )
        })
        .collect()
}

/// A page of `items` with GitLab's pagination headers.
fn paged(items: Vec<Value>, q: &std::collections::HashMap<String, String>) -> Response {
    let per: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(20);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let total = items.len();
    let slice: Vec<Value> = items.into_iter().skip((page - 1) * per).take(per).collect();
    let mut resp = Json(Value::Array(slice)).into_response();
    let next = if page * per < total {
        (page + 1).to_string()
    } else {
        String::new()
    };
    let h = resp.headers_mut();
    h.insert("x-next-page", HeaderValue::from_str(&next).unwrap());
    h.insert("x-page", HeaderValue::from_str(&page.to_string()).unwrap());
    h.insert(
        "x-total",
        HeaderValue::from_str(&total.to_string()).unwrap(),
    );
    resp
}

fn pipeline_json(p: &Pipeline) -> Value {
    json!({
        "id": p.id, "iid": p.id - 1000, "project_id": p.project, "sha": sha(p.id),
        "ref": "main", "status": p.status, "source": "push",
        "created_at": iso(p.updated_ms - 120_000), "updated_at": iso(p.updated_ms),
        "web_url": format!("http://gitlab.local/group/app/-/pipelines/{}", p.id),
    })
}

async fn gitlab(state: Arc<Mutex<FakeGitlab>>, uri: Uri, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    let token = headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !s.tokens.contains(token) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "401 Unauthorized"})),
        )
            .into_response();
    }
    let q = query(&uri);
    let parts: Vec<&str> = uri
        .path()
        .trim_start_matches("/api/v4/")
        .split('/')
        .collect();
    match parts.as_slice() {
        ["projects"] => paged(
            vec![
                json!({"id": 1, "name": "app", "path_with_namespace": "group/app",
                       "web_url": "http://gitlab.local/group/app"}),
                json!({"id": 2, "name": "lib", "path_with_namespace": "group/lib",
                       "web_url": "http://gitlab.local/group/lib"}),
            ],
            &q,
        ),
        ["projects", id, "pipelines"] => {
            s.pipeline_list_requests += 1;
            let project: u64 = id.parse().unwrap();
            assert_eq!(q.get("order_by").map(String::as_str), Some("updated_at"));
            assert_eq!(q.get("sort").map(String::as_str), Some("asc"));
            let after = q.get("updated_after").map(|a| {
                time::OffsetDateTime::parse(a, &time::format_description::well_known::Rfc3339)
                    .unwrap()
            });
            let mut items: Vec<&Pipeline> = s
                .pipelines
                .iter()
                .filter(|p| p.project == project)
                // Inclusive, to exercise the boundary.
                .filter(|p| {
                    after.is_none_or(|a| {
                        p.updated_ms >= (a.unix_timestamp_nanos() / 1_000_000) as i64
                    })
                })
                .collect();
            items.sort_by_key(|p| (p.updated_ms, p.id));
            paged(items.into_iter().map(pipeline_json).collect(), &q)
        }
        ["projects", _, "pipelines", pid] => {
            let pid: u64 = pid.parse().unwrap();
            let p = s.pipelines.iter().find(|p| p.id == pid).unwrap();
            let mut v = pipeline_json(p);
            v["started_at"] = json!(iso(p.updated_ms - 100_000));
            v["finished_at"] = json!(iso(p.updated_ms));
            v["duration"] = json!(100);
            v["user"] = json!({"id": 5, "username": "dev", "name": "Dev"});
            Json(v).into_response()
        }
        ["projects", _, "pipelines", pid, "jobs"] => {
            let pid: u64 = pid.parse().unwrap();
            let p = s.pipelines.iter().find(|p| p.id == pid).unwrap();
            // Newest job first, as GitLab lists them.
            let jobs = vec![
                json!({"id": pid * 10 + 2, "name": "test", "stage": "test", "status": p.status,
                       "started_at": iso(p.updated_ms - 60_000), "finished_at": iso(p.updated_ms),
                       "duration": 60.0, "web_url": "http://gitlab.local/jobs/2"}),
                json!({"id": pid * 10 + 1, "name": "build", "stage": "build", "status": "success",
                       "started_at": iso(p.updated_ms - 100_000), "finished_at": iso(p.updated_ms - 60_000),
                       "duration": 40.0, "web_url": "http://gitlab.local/jobs/1"}),
            ];
            paged(jobs, &q)
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Not found"})),
        )
            .into_response(),
    }
}

#[tokio::test]
async fn gitlab_pipelines_are_reported_once_each_across_polls_and_restarts() {
    let fake = Arc::new(Mutex::new(FakeGitlab::default()));
    {
        let mut f = fake.lock().unwrap();
        f.tokens.insert("glpat-x".into());
        // Project 1: 150 pipelines a minute apart (two pages of 100); the last still running.
        for n in 0..150u64 {
            f.pipelines.push(Pipeline {
                id: 1000 + n,
                project: 1,
                status: if n == 149 {
                    "running"
                } else if n % 10 == 0 {
                    "failed"
                } else {
                    "success"
                },
                updated_ms: T0 + n as i64 * 60_000,
            });
        }
        // Project 2: two pipelines updated at the same instant (the cursor's boundary).
        for id in [5001, 5002] {
            f.pipelines.push(Pipeline {
                id,
                project: 2,
                status: "canceled",
                updated_ms: T0,
            });
        }
    }
    let st = fake.clone();
    let base = serve(
        axum::Router::new().fallback(move |uri: Uri, h: HeaderMap| gitlab(st.clone(), uri, h)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), 1 << 30).unwrap());
    let i = integration(Application::Gitlab, &base, None, "glpat-x");
    let ctx = context(&i, &spool, dir.path());

    let poller = Gitlab::new(&i, reqwest::Client::new()).unwrap();
    assert_eq!(poller.poll(&ctx).await.unwrap(), 151);
    let runs = drain(&spool);
    let mut ids: HashSet<String> = runs
        .iter()
        .map(|r| r["execution_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 151);
    let r = runs
        .iter()
        .find(|r| r["execution_id"] == "pipeline-1010")
        .unwrap();
    assert_eq!(r["job_full_name"], "group/app");
    assert_eq!(r["pipeline"], "app");
    assert_eq!(r["result"], "failed");
    assert_eq!(r["build_number"], 10);
    assert_eq!(r["branch_name"], "main");
    assert_eq!(r["user_id"], "dev");
    assert_eq!(r["duration"], 100_000);
    assert_eq!(r["scm_commit_ids"], json!([sha(1010)]));
    let stages = r["job_run"]["stages"].as_array().unwrap();
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["build", "test"],
        "stages in the order their jobs ran"
    );
    assert_eq!(stages[1]["result"], "failed");

    // A restart with nothing new: nothing repeated, though GitLab hands the boundary back.
    let poller = Gitlab::new(&i, reqwest::Client::new()).unwrap();
    assert_eq!(poller.poll(&ctx).await.unwrap(), 0);
    assert!(drain(&spool).is_empty());

    // The running pipeline finishes and a new one fails, both at the same instant.
    {
        let mut f = fake.lock().unwrap();
        let last = T0 + 200 * 60_000;
        let p = f.pipelines.iter_mut().find(|p| p.id == 1149).unwrap();
        p.status = "success";
        p.updated_ms = last;
        f.pipelines.push(Pipeline {
            id: 1150,
            project: 1,
            status: "failed",
            updated_ms: last,
        });
    }
    let poller = Gitlab::new(&i, reqwest::Client::new()).unwrap();
    assert_eq!(poller.poll(&ctx).await.unwrap(), 2);
    let runs = drain(&spool);
    for r in &runs {
        assert!(ids.insert(r["execution_id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(poller.poll(&ctx).await.unwrap(), 0);

    // A bad token is an error naming the fix, and the position is kept.
    let bad = integration(Application::Gitlab, &base, None, "nope");
    let err = Gitlab::new(&bad, reqwest::Client::new())
        .unwrap()
        .poll(&context(&bad, &spool, dir.path()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("api_key"), "{err}");
    assert!(drain(&spool).is_empty());
}
