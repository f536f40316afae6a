//! `/metrics/delivery`: DORA and CI health as Prometheus gauges, the same numbers as the JSON
//! API for the same window, and the Grafana dashboard's queries against what is exported.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{backends, TestApp};
use serde_json::{json, Value};

/// Runs in the last days: two pipelines, deployments with commits (some failed), CI runs.
async fn history(app: &TestApp) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let hour = 3_600_000i64;
    for n in 0..24i64 {
        let cd = n % 3 == 0;
        let pipeline = if cd { "deploy-web" } else { "build-web" };
        let failed = n % 5 == 0;
        let body = json!({
            "pipeline": pipeline,
            "job_full_name": format!("web/{pipeline}"),
            "qualified_name": format!("web/{pipeline}"),
            "instance_name": "ci-1",
            "instance_guid": "2f1b2b4e-0000-4000-8000-000000000001",
            "execution_id": format!("g-{n}"),
            "start_time": now - (48 - n) * hour,
            "duration": 60_000 + n * 1_000,
            "result": if failed { "FAILURE" } else { "SUCCESS" },
            "ci": !cd,
            "cd": cd,
            "branch_name": "main",
            "scm_commit_ids": [format!("{:040x}", 0xabc000 + n)],
        });
        let (status, reply) = app.post("/v1/custom-cicd", &body).await;
        assert!((200..300).contains(&status), "{status} {reply}");
    }
}

/// `name{labels} value` lines of an exposition, by name and label set.
fn samples(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (head, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut set = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label");
            set.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
        }
        out.insert((name.to_owned(), set), value.parse().expect("number"));
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn scrape(app: &TestApp, key: Option<&str>) -> (u16, String) {
    let mut req = app.client.get(app.url("/metrics/delivery"));
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let resp = req.send().await.expect("scrape");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("text"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

#[tokio::test]
async fn gauges_match_the_api_and_the_dashboard_queries_exist() {
    for backend in backends() {
        let app = TestApp::spawn(&backend).await;
        history(&app).await;
        let (status, _) = scrape(&app, None).await;
        assert_eq!(
            status, 401,
            "pipeline names are tenant data: a key is needed"
        );
        let (status, text) = scrape(&app, Some(&app.key)).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics");
        let s = samples(&text);
        let get = |name: &str, l: &[(&str, &str)]| s.get(&(name.to_owned(), labels(l))).copied();

        for pipeline in ["", "web/deploy-web", "web/build-web"] {
            let q = if pipeline.is_empty() {
                String::new()
            } else {
                format!("?pipeline={pipeline}")
            };
            let (_, dora) = app.get(&format!("/api/v1/metrics/dora{q}")).await;
            let (_, ci) = app.get(&format!("/api/v1/metrics/ci{q}")).await;
            let at = [("pipeline", pipeline), ("tenant", "default")];
            let want = |v: &Value| v.as_f64();
            assert_eq!(
                get("cistern_dora_deployments", &at),
                want(&dora["deployment_frequency"]["deployments"]),
                "{backend:?} {pipeline}: {text}"
            );
            let per_day = get("cistern_dora_deployment_frequency_per_day", &at).unwrap();
            assert!(close(
                per_day,
                want(&dora["deployment_frequency"]["per_day"]).unwrap()
            ));
            assert_eq!(
                get("cistern_dora_change_failure_rate", &at),
                want(&dora["change_failure_rate"]["rate"])
            );
            assert_eq!(
                get(
                    "cistern_dora_lead_time_seconds",
                    &[
                        ("pipeline", pipeline),
                        ("quantile", "0.5"),
                        ("tenant", "default")
                    ]
                ),
                want(&dora["lead_time"]["median_seconds"])
            );
            assert_eq!(get("cistern_ci_runs", &at), want(&ci["runs"]));
            assert_eq!(
                get("cistern_ci_success_rate", &at),
                want(&ci["success_rate"])
            );
            let p50 = get(
                "cistern_ci_duration_seconds",
                &[
                    ("pipeline", pipeline),
                    ("quantile", "0.5"),
                    ("tenant", "default"),
                ],
            );
            assert_eq!(p50, want(&ci["duration_p50_ms"]).map(|v| v / 1000.0));
        }
        let deployed = get(
            "cistern_dora_deployments",
            &[("pipeline", ""), ("tenant", "default")],
        )
        .unwrap();
        assert!(deployed >= 6.0, "{deployed}: {text}");
        let (status, body) = app.get("/metrics/delivery?days=0").await;
        assert_eq!(status, 400, "{body}");

        // Every query of the Grafana board names an exported metric and only exported labels.
        let board: Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../deploy/grafana/cistern-delivery.json"),
            )
            .expect("the dashboard"),
        )
        .expect("JSON");
        let exported: BTreeSet<&str> = s.keys().map(|(n, _)| n.as_str()).collect();
        let exported_labels: BTreeSet<&str> = s
            .keys()
            .flat_map(|(_, l)| l.keys().map(String::as_str))
            .collect();
        let mut exprs = Vec::new();
        for panel in board["panels"].as_array().expect("panels") {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
            for t in targets {
                exprs.push(t["expr"].as_str().expect("expr").to_owned());
            }
        }
        for v in board["templating"]["list"].as_array().unwrap() {
            if let Some(q) = v["definition"].as_str() {
                exprs.push(q.to_owned());
            }
        }
        assert!(exprs.len() >= 12);
        for expr in &exprs {
            let metrics: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("cistern_"))
                .collect();
            assert!(!metrics.is_empty(), "{expr} names no metric of the hub");
            for m in metrics {
                assert!(exported.contains(m), "{expr}: the hub exports no {m}");
            }
            for sel in expr.split('{').skip(1) {
                let inner = sel.split('}').next().unwrap_or("");
                for matcher in inner.split(',') {
                    let label = matcher.split(['=', '!', '~']).next().unwrap_or("").trim();
                    assert!(
                        exported_labels.contains(label),
                        "{expr}: the hub's gauges have no label {label:?}"
                    );
                }
            }
        }
    }
}
