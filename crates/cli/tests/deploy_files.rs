//! The deployment files (hub and satellite Dockerfiles, docker-compose.yml, the Helm chart, the
//! CI templates) checked against what the real binary accepts: every CISTERN_* variable is a
//! setting the hub (or the satellite) reads, every command and flag exists, every port, path and
//! probe answers when the binary is started with the file's own settings. The files cannot rot
//! silently: a renamed setting or route fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use marked_yaml::Node;

const BIN: &str = env!("CARGO_BIN_EXE_cistern");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Node {
    marked_yaml::parse_yaml(0, read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `cistern ARGS… --help` succeeds and prints its text.
fn help(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .expect("run cistern");
    assert!(
        out.status.success(),
        "`cistern {} --help` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The CISTERN_* variables the hub reads: its settings, and the ones clap reads for `args`.
fn accepted_env(args: &[&[&str]]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = cistern_server::config::ENV_KEYS
        .iter()
        .map(|k| format!("CISTERN_{}", k.to_uppercase()))
        .collect();
    for a in args {
        let text = help(a);
        for part in text.split("[env: ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// Checks that a command line (as a list of words after `cistern`) names a real subcommand and
/// only flags that subcommand takes.
fn check_command(words: &[String], origin: &str) {
    let subcommand: Vec<&str> = words
        .iter()
        .take_while(|w| !w.starts_with('-'))
        .map(String::as_str)
        .collect();
    let text = help(&subcommand);
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        let flag = flag.split('=').next().unwrap_or(flag);
        assert!(
            text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}\n")),
            "{origin}: `cistern {}` takes no {flag}",
            subcommand.join(" ")
        );
    }
}

fn str_of(n: &Node) -> String {
    n.as_scalar()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|| panic!("not a scalar: {n:?}"))
}

fn list_of(n: &Node) -> Vec<String> {
    n.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {n:?}"))
        .iter()
        .map(str_of)
        .collect()
}

/// `ENV K=V K=V` and `ENV K V` lines of a Dockerfile (with `\` continuations).
fn dockerfile_env(text: &str) -> Vec<(String, String)> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let Some(rest) = line.trim().strip_prefix("ENV ") else {
            continue;
        };
        for pair in rest.split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cistern serve` with `env` only (no flags, no config file), waits for its port.
fn start(env: &[(String, String)], dir: &Path, port: u16) -> Hub {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let hub = Hub(cmd.spawn().expect("start cistern serve"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the hub did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    hub
}

fn get(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listen}"))
}

#[test]
fn the_hub_dockerfile_runs_as_written() {
    let text = read("deploy/hub/Dockerfile");
    let accepted = accepted_env(&[&["serve"]]);
    let env = dockerfile_env(&text);
    assert!(!env.is_empty());
    for (k, _) in &env {
        assert!(
            k == "SSL_CERT_FILE" || accepted.contains(k),
            "deploy/hub/Dockerfile sets {k}, which the hub does not read"
        );
    }
    let get_env = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the Dockerfile sets no {k}"))
    };
    let listen = get_env("CISTERN_LISTEN");
    let port = port_of(&listen);
    assert!(text.contains(&format!("EXPOSE {port}")), "EXPOSE {port}");
    let db = get_env("CISTERN_DATABASE_URL");
    let key = get_env("CISTERN_MASTER_KEY_FILE");
    assert!(db.starts_with("sqlite:///data/") && key.starts_with("/data/"));
    assert!(text.contains("VOLUME [\"/data\"]"), "the data volume");
    assert!(text.contains("USER 10001"), "non-root");
    assert!(text.contains("FROM scratch"), "nothing but the binary");
    assert!(text.contains("CMD [\"/cistern\", \"healthcheck\"]"));
    assert!(text.contains("ENTRYPOINT [\"/cistern\"]") && text.contains("CMD [\"serve\"]"));
    for stage in ["AS prebuilt", "AS hub"] {
        assert!(text.contains(stage), "stage {stage}");
    }
    assert!(
        text.contains("COPY dist/cistern /cistern"),
        "built from scripts/release.sh's dist/"
    );
    let release = read("scripts/release.sh");
    for f in ["dist/cistern", "dist/ca-certificates.crt", "dist/data"] {
        assert!(release.contains(f), "scripts/release.sh makes {f}");
        assert!(text.contains(f), "the Dockerfile copies {f}");
    }

    // Started with the file's own environment (the address moved to a free loopback port and
    // /data to a temporary folder), the hub answers its probes and the health check passes.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let port = free_port();
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .replace("0.0.0.0:8080", &format!("127.0.0.1:{port}"))
                .replace("/data", &data);
            (k, v)
        })
        .collect();
    let _hub = start(&env, dir.path(), port);
    assert_eq!(get(port, "/healthz"), 200);
    assert_eq!(get(port, "/readyz"), 200);
    assert!(
        dir.path().join("cistern.db").exists(),
        "the database in /data"
    );
    assert!(
        dir.path().join("cistern.key").exists(),
        "the master key in /data"
    );
    let check = Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .env("CISTERN_LISTEN", format!("0.0.0.0:{port}"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let down = Command::new(BIN)
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{}/healthz", free_port()),
        ])
        .env_clear()
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        !down.status.success(),
        "a hub that is not there fails the check"
    );
}

#[test]
fn the_compose_file_names_real_settings_and_commands() {
    let doc = yaml("docker-compose.yml");
    let services = doc
        .as_mapping()
        .and_then(|m| m.get_node("services"))
        .and_then(Node::as_mapping)
        .expect("services");
    let accepted = accepted_env(&[&["serve"], &["keys", "create"]]);
    let mut hub_services = 0;
    let dockerfile = read("deploy/hub/Dockerfile");
    for (name, svc) in services.iter() {
        let name = name.as_str();
        let svc = svc.as_mapping().expect("a service is a mapping");
        let image = svc.get_scalar("image").map(|s| s.as_str().to_owned());
        if !image.as_deref().unwrap_or("").starts_with("cistern") {
            continue;
        }
        hub_services += 1;
        let env = svc.get_mapping("environment").expect("environment");
        for (k, _) in env.iter() {
            assert!(
                accepted.contains(k.as_str()),
                "docker-compose.yml service {name} sets {}, which the hub does not read",
                k.as_str()
            );
        }
        let command = list_of(svc.get_node("command").expect("command"));
        check_command(&command, &format!("docker-compose.yml service {name}"));
        if command[0] == "serve" {
            let listen = env.get_scalar("CISTERN_LISTEN").expect("listen").as_str();
            let port = port_of(listen);
            let ports = list_of(svc.get_node("ports").expect("ports"));
            assert!(
                ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
                "{name} publishes the port it listens on ({port}): {ports:?}"
            );
            let test = list_of(
                svc.get_mapping("healthcheck")
                    .and_then(|h| h.get_node("test"))
                    .expect("healthcheck"),
            );
            assert_eq!(test[0], "CMD");
            assert_eq!(test[1], "/cistern", "the binary's path in the image");
            check_command(&test[2..], "the compose health check");
            let db = env.get_scalar("CISTERN_DATABASE_URL").unwrap().as_str();
            assert!(db.starts_with("postgres://"), "compose runs on PostgreSQL");
        }
        if let Some(build) = svc.get_mapping("build") {
            let file = build.get_scalar("dockerfile").unwrap().as_str();
            assert!(repo().join(file).exists(), "{file}");
            let target = build.get_scalar("target").unwrap().as_str();
            assert!(
                dockerfile.contains(&format!("AS {target}")),
                "stage {target}"
            );
        }
    }
    assert_eq!(hub_services, 2, "the hub and the one-shot first key");

    // The one-shot first key, run as compose runs it (again on each `up`): a key the first
    // time, nothing after.
    let first = services
        .get_mapping("first-key")
        .and_then(|m| m.get_node("command"))
        .map(list_of)
        .expect("first-key command");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/cistern.db", dir.path().display());
    let run = || {
        Command::new(BIN)
            .args(&first)
            .env_clear()
            .env("CISTERN_DATABASE_URL", &db)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let once = run();
    assert!(once.status.success(), "{once:?}");
    let key = String::from_utf8_lossy(&once.stdout).trim().to_owned();
    assert!(key.starts_with("cst_"), "the key alone on stdout: {key:?}");
    let again = run();
    assert!(again.status.success(), "{again:?}");
    assert!(again.stdout.is_empty(), "no second key");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no key created"));
}

#[test]
fn the_helm_chart_names_real_settings_probes_and_ports() {
    let chart = "deploy/helm/cistern";
    let values = yaml(&format!("{chart}/values.yaml"));
    let values = values.as_mapping().expect("values");
    assert_eq!(
        values
            .get_mapping("database")
            .and_then(|d| d.get_scalar("mode"))
            .map(|s| s.as_str()),
        Some("sqlite"),
        "SQLite by default"
    );
    let metrics_port: u16 = values
        .get_mapping("metrics")
        .and_then(|m| m.get_scalar("port"))
        .and_then(|p| p.as_str().parse().ok())
        .expect("metrics.port");
    let deployment = read(&format!("{chart}/templates/deployment.yaml"));
    let accepted = accepted_env(&[&["serve"]]);
    let mut names = 0;
    for line in deployment.lines() {
        if let Some(name) = line.trim().strip_prefix("- name: CISTERN_") {
            names += 1;
            let name = format!("CISTERN_{name}");
            assert!(
                accepted.contains(&name),
                "the chart sets {name}, which the hub does not read"
            );
        }
    }
    assert!(names >= 5, "the chart sets the hub's settings");
    for needle in [
        "httpGet: {path: /readyz, port: http}",
        "httpGet: {path: /healthz, port: http}",
        "containerPort: 8080",
        "value: \"0.0.0.0:8080\"",
        "prometheus.io/scrape: \"true\"",
        "prometheus.io/path: /metrics",
        "value: \"0.0.0.0:{{ .Values.metrics.port }}\"",
        "replicas: {{ if eq .Values.database.mode \"sqlite\" }}1{{ else }}{{ .Values.replicas }}{{ end }}",
        "claimName:",
        "runAsNonRoot: true",
    ] {
        assert!(deployment.contains(needle), "deployment.yaml: {needle}");
    }
    for t in ["service.yaml", "secret.yaml", "pvc.yaml"] {
        assert!(repo().join(chart).join("templates").join(t).exists(), "{t}");
    }

    // What the chart sets, the binary serves: the probes on the main port and /metrics on the
    // metrics port, with the chart's own settings (addresses moved to free loopback ports).
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    let _ = metrics_port;
    let env = vec![
        ("CISTERN_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
        (
            "CISTERN_METRICS_LISTEN".to_owned(),
            format!("127.0.0.1:{mport}"),
        ),
        (
            "CISTERN_DATABASE_URL".to_owned(),
            format!("sqlite://{}/cistern.db", dir.path().display()),
        ),
        (
            "CISTERN_MASTER_KEY_FILE".to_owned(),
            format!("{}/cistern.key", dir.path().display()),
        ),
        ("CISTERN_LOG_FORMAT".to_owned(), "json".to_owned()),
    ];
    let _hub = start(&env, dir.path(), port);
    let probes: Vec<&str> = deployment
        .split("httpGet: {path: ")
        .skip(1)
        .filter_map(|rest| rest.split(',').next())
        .collect();
    assert_eq!(probes.len(), 2, "a readiness and a liveness probe");
    for path in probes {
        assert_eq!(get(port, path), 200, "the chart's probe {path}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", mport)).is_err() {
        assert!(Instant::now() < deadline, "metrics listener");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(mport, "/metrics"), 200);
    assert_eq!(get(port, "/metrics"), 404, "metrics only on their own port");
}

#[test]
fn the_satellite_files_name_real_settings() {
    let mut accepted = accepted_env(&[&["satellite", "run"]]);
    accepted.extend(
        cistern_agent::satellite::config::ENV_VARS
            .iter()
            .map(|v| (*v).to_owned()),
    );
    let text = read("deploy/satellite/Dockerfile");
    for (k, _) in dockerfile_env(&text) {
        assert!(
            accepted.contains(&k),
            "deploy/satellite/Dockerfile sets {k}, which `cistern satellite run` does not read"
        );
    }
    assert!(text.contains("ENTRYPOINT [\"cistern\", \"satellite\"]"));
}

#[test]
fn the_ci_templates_call_real_commands() {
    let action = yaml("deploy/ci/github/action.yml");
    let action = action.as_mapping().expect("action");
    assert_eq!(
        action
            .get_mapping("runs")
            .and_then(|r| r.get_scalar("using"))
            .map(|s| s.as_str()),
        Some("composite")
    );
    let reporter_env = accepted_env(&[&["report", "run"], &["report", "end"]]);
    let mut texts = vec![read("deploy/ci/github/action.yml")];
    texts.push(read("deploy/ci/gitlab/cistern-report.gitlab-ci.yml"));
    texts.push(read("deploy/ci/jenkins/vars/cisternReport.groovy"));
    let mut calls = 0;
    for text in &texts {
        for line in text.lines() {
            for name in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if name.starts_with("CISTERN_")
                    && ![
                        "CISTERN_VERSION",
                        "CISTERN_DOWNLOAD_URL",
                        "CISTERN_COMMAND",
                        "CISTERN_RESULT",
                        "CISTERN_ARGS",
                    ]
                    .contains(&name)
                {
                    assert!(
                        reporter_env.contains(name),
                        "a CI template uses {name}, which `cistern report` does not read"
                    );
                }
            }
            let Some(at) = line.find("cistern report ") else {
                continue;
            };
            let words: Vec<String> = line[at + "cistern ".len()..]
                .split_whitespace()
                .map(|w| w.trim_matches('\''))
                .filter(|w| !w.contains("${"))
                // The command line ends at `--`, a variable, or prose (`run` in backticks).
                .take_while(|w| {
                    *w != "--"
                        && !w.is_empty()
                        && w.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_=".contains(c))
                })
                .map(str::to_owned)
                .collect();
            // `report step NAME`: the step's name is not a subcommand.
            let words: Vec<String> = if words.get(1).map(String::as_str) == Some("step") {
                words
                    .iter()
                    .take(2)
                    .cloned()
                    .chain(words.iter().skip(3).cloned())
                    .collect()
            } else {
                words
            };
            check_command(&words, "a CI template");
            calls += 1;
        }
    }
    assert!(calls >= 6, "the templates report runs ({calls} calls)");
}
