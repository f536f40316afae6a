//! `cistern report` as a CI job runs it: the real binary, in a clean environment, against a
//! spawned hub. Each test checks what a person would look for afterwards through the API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_cistern");
const SHA: &str = "6ce2cfec186fbf9ae9429ad22e32e7770f1eb1fb";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hub on its own database, with a key that may ingest and read.
struct Hub {
    child: Option<Child>,
    base: String,
    key: String,
    db: String,
    _dir: TempDir,
}

impl Hub {
    async fn start() -> Self {
        let mut hub = Self::at(free_port());
        hub.up().await;
        hub
    }

    /// A hub that will listen on `port` once `up` is called.
    fn at(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("hub.db").display());
        let out = Command::new(BIN)
            .args(["keys", "create", "--name", "ci", "--scopes", "ingest,read"])
            .args(["--database", &db])
            .env_remove("CISTERN_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            key: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            db,
            _dir: dir,
        }
    }

    async fn up(&mut self) {
        let listen = self.base.trim_start_matches("http://").to_owned();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &listen, "--database", &self.db])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    self.child = Some(child);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("hub did not become ready");
    }

    async fn get(&self, path: &str) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .header("X-Api-Key", &self.key)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Every run (summaries).
    async fn runs(&self) -> Vec<Value> {
        self.get("/api/v1/runs?limit=500").await["runs"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The one run of `pipeline`, in full.
    async fn only_run(&self, pipeline: &str) -> Value {
        let list = self.get(&format!("/api/v1/runs?pipeline={pipeline}")).await;
        let runs = list["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "one run of {pipeline}: {list:#}");
        let id = runs[0]["id"].as_str().unwrap();
        self.get(&format!("/api/v1/runs/{id}")).await
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A CI job's workspace: a working directory, a HOME and a spool of its own.
struct Job {
    dir: TempDir,
    url: String,
    key: String,
    env: Vec<(String, String)>,
}

impl Job {
    fn new(hub: &Hub) -> Self {
        Self::to(&hub.base, &hub.key)
    }

    fn to(url: &str, key: &str) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            url: url.to_owned(),
            key: key.to_owned(),
            env: Vec::new(),
        }
    }

    fn with_env(mut self, vars: &[(&str, &str)]) -> Self {
        self.env
            .extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn workspace(&self) -> &Path {
        self.dir.path()
    }

    /// `cistern report <args>` with only this job's variables: the host's own CI variables
    /// (the tests may run inside a CI) are cleared.
    fn report(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("report")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("CISTERN_URL", &self.url)
            .env("CISTERN_API_KEY", &self.key)
            .env("CISTERN_SPOOL", self.spool())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn spooled(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.spool()) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_successful_command_passes_its_output_through_and_is_reported() {
    let hub = Hub::start().await;
    let job = Job::new(&hub);
    let out = job.report(&[
        "run",
        "--quiet",
        "--pipeline",
        "hello",
        "--",
        "sh",
        "-c",
        "printf 'out\\n'; printf 'err\\n' >&2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(
        out.stderr, b"err\n",
        "stderr passes through, nothing added when quiet"
    );
    let run = hub.only_run("hello").await;
    assert_eq!(run["result"], "success");
    assert_eq!(run["log"], Value::Null, "no log for a success");
    assert_eq!(run["instance"]["name"], "generic");
    assert!(run["duration_ms"].as_i64().unwrap() >= 0);
    assert!(job.spooled().is_empty());
}

#[tokio::test]
async fn a_failure_keeps_the_tail_of_the_output_as_its_log() {
    let hub = Hub::start().await;
    let job = Job::new(&hub);
    let script = "i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done; sleep 0.3; echo 'last words' >&2; exit 3";
    let out = job.report(&[
        "run",
        "--pipeline",
        "long",
        "--log-tail",
        "100",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        200,
        "the whole output passes through"
    );
    let run = hub.only_run("long").await;
    assert_eq!(run["result"], "failure");
    let log = run["log"].as_str().unwrap();
    assert!(log.len() <= 100, "{log:?}");
    // stdout and stderr are separate pipes, kept in the order they were read: the script pauses
    // before its last stderr line so that order is defined.
    assert!(log.ends_with("line199\nlast words\n"), "{log:?}");
    assert!(!log.contains("line0\n"));
    assert_eq!(run["log_truncated"], true);

    // With --stage the log goes on the stage; a short output is whole.
    let out = job.report(&[
        "run",
        "--pipeline",
        "short",
        "--stage",
        "compile",
        "--",
        "sh",
        "-c",
        "echo 'error: expected ;'; exit 1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let run = hub.only_run("short").await;
    let stage = &run["stages"][0];
    assert_eq!(stage["name"], "compile");
    assert_eq!(stage["result"], "failure");
    assert_eq!(stage["log"], "error: expected ;\n");
    assert_eq!(stage["log_truncated"], false);
}

#[tokio::test]
async fn a_command_killed_by_a_signal_is_aborted_and_exits_128_plus_the_signal() {
    let hub = Hub::start().await;
    let job = Job::new(&hub);
    let out = job.report(&[
        "run",
        "--pipeline",
        "killed",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let run = hub.only_run("killed").await;
    assert_eq!(run["result"], "aborted");
}

#[tokio::test]
async fn the_reporter_passes_a_cancel_on_to_the_command() {
    let hub = Hub::start().await;
    let job = Job::new(&hub);
    // The job is cancelled: only the reporter gets SIGTERM (as from `timeout` or `docker stop`).
    let mut child = Command::new(BIN)
        .args(["report", "run", "--pipeline", "cancelled", "--"])
        .args(["sh", "-c", "echo ready; exec sleep 30"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", job.workspace())
        .env("CISTERN_URL", &hub.base)
        .env("CISTERN_API_KEY", &hub.key)
        .env("CISTERN_SPOOL", job.spool())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the command runs, the reporter is catching signals.
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let run = hub.only_run("cancelled").await;
    assert_eq!(run["result"], "aborted");
    assert!(run["duration_ms"].as_i64().unwrap() < 10_000);
}

#[tokio::test]
async fn a_job_reported_in_steps_is_one_run_with_stages_and_steps() {
    let hub = Hub::start().await;
    let job = Job::new(&hub);
    let ok = |o: Output, code: i32| {
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        o
    };
    ok(job.report(&["begin", "--pipeline", "steps"]), 0);
    assert!(job.workspace().join(".cistern-report.json").exists());
    let o = ok(
        job.report(&[
            "step", "compile", "--stage", "build", "--", "echo", "compiled",
        ]),
        0,
    );
    assert_eq!(o.stdout, b"compiled\n");
    ok(
        job.report(&[
            "step",
            "unit",
            "--stage",
            "test",
            "--",
            "sh",
            "-c",
            "echo 'boom' >&2; exit 4",
        ]),
        4,
    );
    ok(
        job.report(&["step", "lint", "--stage", "test", "--", "true"]),
        0,
    );
    assert!(hub.runs().await.is_empty(), "nothing is posted before end");
    ok(job.report(&["end"]), 0);
    assert!(
        !job.workspace().join(".cistern-report.json").exists(),
        "end clears the state"
    );
    let run = hub.only_run("steps").await;
    assert_eq!(run["result"], "failure");
    let stages = run["stages"].as_array().unwrap();
    let shape: Vec<(String, Vec<String>)> = stages
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|st| st["name"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("build".to_owned(), vec!["compile".to_owned()]),
            (
                "test".to_owned(),
                vec!["unit".to_owned(), "lint".to_owned()]
            ),
        ]
    );
    assert_eq!(stages[0]["result"], "success");
    assert_eq!(stages[1]["result"], "failure");
    let unit = &stages[1]["steps"][0];
    assert_eq!(unit["result"], "failure");
    assert_eq!(unit["log"], "boom\n");
    assert_eq!(stages[1]["steps"][1]["log"], Value::Null);
    assert_eq!(stages[0]["steps"][0]["result"], "success");

    // `end --result` wins over the steps.
    ok(job.report(&["begin", "--pipeline", "forced"]), 0);
    ok(job.report(&["step", "one", "--", "true"]), 0);
    ok(job.report(&["end", "--result", "cancelled"]), 0);
    let run = hub.only_run("forced").await;
    assert_eq!(run["result"], "aborted");
    assert_eq!(run["stages"][0]["name"], "main");
}

#[tokio::test]
async fn a_github_actions_job_is_described_by_its_environment() {
    let hub = Hub::start().await;
    let job = Job::new(&hub).with_env(&[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_WORKFLOW", "CI"),
        ("GITHUB_REPOSITORY", "acme/app"),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_RUN_ID", "9123456789"),
        ("GITHUB_RUN_ATTEMPT", "2"),
        ("GITHUB_RUN_NUMBER", "42"),
        ("GITHUB_JOB", "test"),
        ("GITHUB_REF_NAME", "main"),
        ("GITHUB_SHA", SHA),
        ("GITHUB_ACTOR", "octocat"),
    ]);
    let out = job.report(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = hub.only_run("acme/app/CI").await;
    assert_eq!(run["pipeline"]["name"], "CI");
    assert_eq!(run["pipeline"]["full_name"], "acme/app/CI");
    assert_eq!(run["branch"], "main");
    assert_eq!(run["commits"][0]["sha"], SHA);
    assert_eq!(run["build_number"], 42);
    assert_eq!(run["execution_id"], "github-actions-9123456789-2-test");
    assert_eq!(
        run["web_url"],
        "https://github.com/acme/app/actions/runs/9123456789"
    );
    assert_eq!(run["repo_url"], "https://github.com/acme/app");
    assert_eq!(run["triggered_by"], "octocat");
    assert_eq!(run["instance"]["name"], "github-actions");
    assert_eq!(run["instance"]["url"], "https://github.com");
    assert_eq!(run["ci"], true);

    // The same report again (a retry) updates the run; it never adds one.
    let out = job.report(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("updated"), "{}", stderr(&out));
    assert_eq!(hub.runs().await.len(), 1);
}

#[tokio::test]
async fn a_gitlab_ci_deployment_is_described_by_its_environment() {
    let hub = Hub::start().await;
    let job = Job::new(&hub).with_env(&[
        ("GITLAB_CI", "true"),
        ("CI_SERVER_URL", "https://gitlab.example.com"),
        ("CI_PROJECT_PATH", "group/shop"),
        ("CI_PROJECT_NAME", "shop"),
        ("CI_PROJECT_URL", "https://gitlab.example.com/group/shop"),
        ("CI_PIPELINE_ID", "777"),
        ("CI_PIPELINE_IID", "31"),
        (
            "CI_PIPELINE_URL",
            "https://gitlab.example.com/group/shop/-/pipelines/777",
        ),
        ("CI_JOB_ID", "4242"),
        ("CI_JOB_STAGE", "deploy"),
        ("CI_COMMIT_REF_NAME", "release"),
        ("CI_COMMIT_SHA", SHA),
        ("GITLAB_USER_LOGIN", "alice"),
    ]);
    let out = job.report(&[
        "run",
        "--cd",
        "--environment",
        "prod",
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = hub.only_run("group/shop").await;
    assert_eq!(run["pipeline"]["name"], "shop");
    assert_eq!(run["branch"], "release");
    assert_eq!(run["commits"][0]["sha"], SHA);
    assert_eq!(run["build_number"], 31);
    assert_eq!(run["execution_id"], "gitlab-ci-777-4242");
    assert_eq!(
        run["web_url"],
        "https://gitlab.example.com/group/shop/-/pipelines/777"
    );
    assert_eq!(run["triggered_by"], "alice");
    assert_eq!(run["instance"]["name"], "gitlab-ci");
    assert_eq!(run["cd"], true);
    assert_eq!(run["ci"], false);
    assert_eq!(run["environment"], "prod");
}

#[tokio::test]
async fn a_report_made_while_the_hub_is_down_is_delivered_once_by_flush() {
    let port = free_port();
    let mut hub = Hub::at(port);
    let job = Job::new(&hub);
    let out = job.report(&[
        "run",
        "--retries",
        "1",
        "--pipeline",
        "offline",
        "--",
        "sh",
        "-c",
        "echo working; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the command's code, whatever the hub"
    );
    assert_eq!(out.stdout, b"working\n");
    let err = stderr(&out);
    assert!(err.contains("warning") && err.contains("waits in"), "{err}");
    assert_eq!(job.spooled().len(), 1, "the report waits in the spool");

    hub.up().await;
    let out = job.report(&["flush"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        job.spooled().is_empty(),
        "delivered reports leave the spool"
    );
    let run = hub.only_run("offline").await;
    assert_eq!(run["result"], "failure");
    assert_eq!(run["log"], "working\n");

    // Flushing again sends nothing more.
    let out = job.report(&["flush"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(hub.runs().await.len(), 1, "delivered once, not twice");
}

#[tokio::test]
async fn the_next_report_delivers_what_waited_first() {
    let port = free_port();
    let mut hub = Hub::at(port);
    let job = Job::new(&hub);
    for p in ["first", "second"] {
        let out = job.report(&["run", "--retries", "0", "--pipeline", p, "--", "true"]);
        assert_eq!(out.status.code(), Some(0));
    }
    assert_eq!(job.spooled().len(), 2);
    hub.up().await;
    let out = job.report(&["run", "--pipeline", "third", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(job.spooled().is_empty());
    let runs = hub.runs().await;
    let mut names: Vec<&str> = runs
        .iter()
        .map(|r| r["pipeline"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["first", "second", "third"]);
}

#[tokio::test]
async fn exit_codes_are_passed_on() {
    let hub = Hub::start().await;
    let job = Job::new(&hub);
    for code in [0, 3, 42] {
        let pipeline = format!("exit-{code}");
        let out = job.report(&[
            "run",
            "--pipeline",
            &pipeline,
            "--",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]);
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        let run = hub.only_run(&pipeline).await;
        assert_eq!(run["result"], if code == 0 { "success" } else { "failure" });
    }
    let out = job.report(&["run", "--", "/nonexistent/tool"]);
    assert_eq!(out.status.code(), Some(127), "like a shell");
}

#[tokio::test]
async fn a_refused_report_is_kept_aside_and_the_exit_code_stands() {
    let hub = Hub::start().await;
    let job = Job::to(&hub.base, "cst_not-a-key");
    let out = job.report(&["run", "--pipeline", "refused", "--", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    let err = stderr(&out);
    assert!(err.contains("refused") && err.contains("401"), "{err}");
    assert!(job.spooled().is_empty(), "a refused report is not retried");
    let rejected = std::fs::read_dir(job.spool().join("rejected"))
        .unwrap()
        .count();
    assert_eq!(rejected, 2, "the report and its reason");
    assert!(hub.runs().await.is_empty());
}

#[tokio::test]
async fn send_posts_prepared_payloads_to_their_endpoints() {
    let hub = Hub::start().await;
    let job = Job::new(&hub);
    let sei = json!({
        "pipeline": "prepared", "job_full_name": "prepared", "qualified_name": "prepared",
        "instance_name": "custom", "instance_guid": "c0ffee00-0000-4000-8000-000000000000",
        "start_time": 1_711_603_545_000u64, "duration": 1000, "result": "success",
        "execution_id": "prep-1"
    });
    let file = job.workspace().join("run.json");
    std::fs::write(&file, sei.to_string()).unwrap();
    let out = job.report(&["send", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(hub.only_run("prepared").await["execution_id"], "prep-1");

    // A Jenkins Job Reporter envelope goes to /v1/generic-requests.
    let plugin = json!({
        "request_type": "JenkinsPluginJobRunComplete",
        "payload": json!({
            "job_name": "legacy", "job_full_name": "legacy", "jenkins_instance_guid": "c0ffee00-0000-4000-8000-000000000001",
            "jenkins_instance_name": "old jenkins", "start_time": 1_711_603_545_000u64, "duration": 1000,
            "result": "SUCCESS", "build_number": 7
        }).to_string()
    });
    let file = job.workspace().join("plugin.json");
    std::fs::write(&file, plugin.to_string()).unwrap();
    let out = job.report(&["send", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = hub.only_run("legacy").await;
    assert_eq!(run["source"], "propelo");

    // A payload the hub refuses says why and fails `send`.
    std::fs::write(&file, json!({"pipeline": "x"}).to_string()).unwrap();
    let out = job.report(&["send", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("job_full_name"), "{}", stderr(&out));
}

#[tokio::test]
async fn the_exit_code_stands_when_the_output_is_closed() {
    // `cistern report run -- cmd 2>&1 | head -1`: the reader is gone before the reporter's
    // warning; the warning is lost, the exit code is not.
    let job = Job::to("http://127.0.0.1:1", "cst_x");
    let mut child = Command::new(BIN)
        .args([
            "report",
            "run",
            "--retries",
            "0",
            "--",
            "sh",
            "-c",
            "sleep 0.3; exit 7",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CISTERN_URL", &job.url)
        .env("CISTERN_API_KEY", &job.key)
        .env("CISTERN_SPOOL", job.spool())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(7));
    assert_eq!(
        job.spooled().len(),
        1,
        "and the report still waits in the spool"
    );
}
