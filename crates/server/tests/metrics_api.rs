//! DORA and CI health over HTTP, on a history built by hand with the figures computed by hand.

mod common;

use common::*;
use serde_json::{json, Value};

const SEI: &str = "/v1/custom-cicd";

fn ms(rfc: &str) -> i64 {
    let t =
        time::OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn run(
    pipeline: &str,
    id: &str,
    start: &str,
    minutes: i64,
    result: &str,
    cd: bool,
    commits: &[&str],
) -> Value {
    json!({
        "pipeline": pipeline, "job_full_name": pipeline, "qualified_name": pipeline,
        "instance_name": "ci", "instance_guid": "9d0f4f0e-1111-4222-8333-444455556666",
        "start_time": ms(start), "duration": minutes * 60_000, "result": result,
        "execution_id": id, "cd": cd, "ci": !cd, "environment": if cd { Some("prod") } else { None },
        "scm_commit_ids": commits, "branch_name": "main", "project_name": "shop",
    })
}

async fn seed(app: &TestApp) {
    let history = [
        run(
            "deploy",
            "d0",
            "2023-12-31T11:00:00Z",
            60,
            "SUCCESS",
            true,
            &["c0"],
        ),
        run(
            "build",
            "ci1",
            "2024-01-02T08:00:00Z",
            10,
            "SUCCESS",
            false,
            &["c1"],
        ),
        run(
            "deploy",
            "d1",
            "2024-01-02T09:00:00Z",
            60,
            "SUCCESS",
            true,
            &["c0", "c1"],
        ),
        run(
            "build",
            "ci2",
            "2024-01-03T09:00:00Z",
            10,
            "SUCCESS",
            false,
            &["c2"],
        ),
        run(
            "deploy",
            "d2",
            "2024-01-03T09:30:00Z",
            30,
            "FAILURE",
            true,
            &["c2"],
        ),
        run(
            "deploy",
            "d3",
            "2024-01-03T12:00:00Z",
            60,
            "SUCCESS",
            true,
            &["c2"],
        ),
        run(
            "build",
            "ci3",
            "2024-01-08T10:00:00Z",
            10,
            "SUCCESS",
            false,
            &["c3"],
        ),
        run(
            "deploy",
            "d4",
            "2024-01-10T09:00:00Z",
            60,
            "SUCCESS",
            true,
            &["c3"],
        ),
    ];
    for r in history {
        let (status, body) = app.post(SEI, &r).await;
        assert_eq!(status, 201, "{body}");
    }
}

const WINDOW: &str = "since=2024-01-01T00:00:00Z&until=2024-01-15T00:00:00Z";

#[tokio::test]
async fn dora_on_a_hand_built_history() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        seed(&app).await;
        let (status, d) = app.get(&format!("/api/v1/metrics/dora?{WINDOW}")).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["since"], "2024-01-01T00:00:00Z");
        let df = &d["deployment_frequency"];
        assert_eq!(df["deployments"], 3, "{d}");
        assert!((df["per_day"].as_f64().unwrap() - 3.0 / 14.0).abs() < 1e-9);
        assert_eq!(df["deploy_days_per_week"], 1.5);
        assert_eq!(df["band"], "high");
        let lt = &d["lead_time"];
        assert_eq!(lt["count"], 3, "c0 was shipped before the window: {d}");
        assert_eq!(lt["median_seconds"], 4.0 * 3600.0);
        assert!((lt["p90_seconds"].as_f64().unwrap() - 39.2 * 3600.0).abs() < 1e-6);
        assert_eq!(lt["band"], "elite");
        let cfr = &d["change_failure_rate"];
        assert_eq!(
            (cfr["failed"].as_u64(), cfr["deployments"].as_u64()),
            (Some(1), Some(4))
        );
        assert_eq!(cfr["rate"], 0.25);
        assert_eq!(cfr["band"], "low");
        let ttr = &d["time_to_restore"];
        assert_eq!(ttr["median_seconds"], 3.0 * 3600.0);
        assert_eq!(ttr["count"], 1);
        assert_eq!(ttr["band"], "high");

        // A slice without deployments has no bands, and filters partition the counts.
        let (_, none) = app
            .get(&format!(
                "/api/v1/metrics/dora?{WINDOW}&environment=staging"
            ))
            .await;
        assert_eq!(none["deployment_frequency"]["deployments"], 0);
        assert_eq!(none["deployment_frequency"]["band"], Value::Null);
        assert_eq!(none["change_failure_rate"]["rate"], Value::Null);
        let (_, other) = app
            .get(&format!("/api/v1/metrics/dora?{WINDOW}&pipeline=build"))
            .await;
        assert_eq!(other["change_failure_rate"]["deployments"], 0);

        // Filters partition the counts: prod + staging = all.
        let mut staging = run(
            "deploy-staging",
            "s1",
            "2024-01-05T09:00:00Z",
            10,
            "SUCCESS",
            true,
            &["c9"],
        );
        staging["environment"] = json!("staging");
        let (status, _) = app.post(SEI, &staging).await;
        assert_eq!(status, 201);
        let count = |q: &'static str| {
            let app = &app;
            async move {
                let (_, d) = app.get(&format!("/api/v1/metrics/dora?{WINDOW}{q}")).await;
                d["change_failure_rate"]["deployments"].as_u64().unwrap()
            }
        };
        let (all, prod, stg) = (
            count("").await,
            count("&environment=prod").await,
            count("&environment=staging").await,
        );
        assert_eq!((all, prod, stg), (5, 4, 1));
        assert_eq!(all, prod + stg);

        // A weekly series splits the window.
        let (_, s) = app
            .get(&format!("/api/v1/metrics/dora?{WINDOW}&interval=week"))
            .await;
        let series = s["series"].as_array().unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0]["deployment_frequency"]["deployments"], 3,
            "d1, d3 and the staging one"
        );
        assert_eq!(series[1]["deployment_frequency"]["deployments"], 1);

        // CSV for spreadsheets.
        let resp = app
            .client
            .get(app.url(&format!("/api/v1/metrics/dora?{WINDOW}")))
            .header("Authorization", format!("Bearer {}", app.key))
            .header("Accept", "text/csv")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
        let text = resp.text().await.unwrap();
        let mut lines = text.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("since,until,deployments,per_day"));
        assert!(lines
            .next()
            .unwrap()
            .starts_with("2024-01-01T00:00:00Z,2024-01-15T00:00:00Z,4,"));
    }
}

#[tokio::test]
async fn ci_health_and_csv_runs() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        seed(&app).await;
        let (status, h) = app.get(&format!("/api/v1/metrics/ci?{WINDOW}")).await;
        assert_eq!(status, 200, "{h}");
        assert_eq!(h["runs"], 7);
        assert!((h["success_rate"].as_f64().unwrap() - 6.0 / 7.0).abs() < 1e-9);
        assert_eq!(h["duration_p50_ms"], 3_600_000.0 * 0.5); // durations: 10,10,10,30,60,60,60 min → median 30 min
        let (_, h2) = app
            .get(&format!("/api/v1/metrics/ci?{WINDOW}&pipeline=deploy"))
            .await;
        assert_eq!(h2["runs"], 4);
        assert_eq!(
            h2["flaky"][0]["commit"], "c2",
            "c2 failed and passed on deploy: {h2}"
        );
        assert_eq!(h2["red_to_green"][0]["median_seconds"], 3.0 * 3600.0);

        let (status, bad) = app.get("/api/v1/metrics/dora?interval=hourly").await;
        assert_eq!(
            (status, error_fields(&bad)),
            (400, vec!["interval".to_owned()])
        );
        let (status, bad) = app
            .get("/api/v1/metrics/dora?since=2024-02-01&until=2024-01-01")
            .await;
        assert_eq!(
            (status, error_fields(&bad)),
            (400, vec!["since".to_owned()])
        );

        let resp = app
            .client
            .get(app.url("/api/v1/runs?format=csv&pipeline=deploy"))
            .header("Authorization", format!("Bearer {}", app.key))
            .send()
            .await
            .unwrap();
        let text = resp.text().await.unwrap();
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text
            .lines()
            .next()
            .unwrap()
            .starts_with("id,pipeline,project,result"));
    }
}

/// Names come from senders: a CSV export must not hand a spreadsheet a live formula.
#[tokio::test]
async fn csv_exports_never_start_a_cell_with_a_formula() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let names = [
            "=HYPERLINK(\"http://evil.example\",\"x\")",
            "+1+cmd",
            "-2+3",
            "@SUM(A1)",
        ];
        for (i, name) in names.iter().enumerate() {
            let mut r = run(
                name,
                &format!("x{i}"),
                "2024-01-03T08:00:00Z",
                5,
                "SUCCESS",
                false,
                &["c9"],
            );
            r["project_name"] = json!("=1+1");
            r["branch_name"] = json!("@main");
            let (status, body) = app.post(SEI, &r).await;
            assert!(status < 300, "{name}: {status} {body}");
        }
        let resp = app
            .client
            .get(app.url("/api/v1/runs?format=csv&limit=500"))
            .header("Authorization", format!("Bearer {}", app.key))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let mut rows = csv::Reader::from_reader(text.as_bytes());
        let header = rows.headers().unwrap().clone();
        let col = |n: &str| header.iter().position(|h| h == n).unwrap();
        let mut pipelines = Vec::new();
        for row in rows.records() {
            let row = row.unwrap();
            for cell in row.iter() {
                let formula = cell.starts_with(['=', '+', '@', '\t', '\r'])
                    || (cell.starts_with('-') && cell.parse::<f64>().is_err());
                assert!(!formula, "a live formula in {row:?}");
            }
            assert_eq!(&row[col("project")], "'=1+1");
            assert_eq!(&row[col("branch")], "'@main");
            pipelines.push(row[col("pipeline")].to_owned());
        }
        pipelines.sort();
        let mut want: Vec<String> = names.iter().map(|n| format!("'{n}")).collect();
        want.sort();
        assert_eq!(pipelines, want, "{text}");
    }
}

/// SEI and Allstacks deployments name their environment in their own ways (a job run
/// parameter, an Allstacks optional field); DORA filters by it.
#[tokio::test]
async fn sei_and_allstacks_deployments_carry_their_environment_into_dora() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        // Seed 000's data example as a deployment, its environment a job run parameter.
        let mut sei: Value = serde_json::from_slice(&fixture("sei/data_example.json")).unwrap();
        sei["ci"] = json!(false);
        sei["cd"] = json!(true);
        sei["job_run_params"].as_array_mut().unwrap().push(
            json!({"type": "StringParameterValue", "name": "deploy_env", "value": "staging"}),
        );
        let (status, body) = app.post(SEI, &sei).await;
        assert_eq!(status, 201, "{body}");
        let (_, run) = app
            .get(&format!("/api/v1/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(run["environment"], "staging");

        // Seed 003's sample, its environment an optional field; then one with the field itself.
        let mut allstacks: Value =
            serde_json::from_slice(&fixture("allstacks/sample_payload_fixed.json")).unwrap();
        allstacks["optional"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "environment", "value": "production", "type": "string"}));
        let (status, body) = app
            .post("/webhook/company/default/cicd_job", &allstacks)
            .await;
        assert_eq!(status, 201, "{body}");
        allstacks["job_id"] = json!("2");
        allstacks["environment"] = json!("production-eu");
        let (status, _) = app
            .post("/webhook/company/default/cicd_job", &allstacks)
            .await;
        assert_eq!(status, 201);

        let count = |q: &'static str| {
            let app = &app;
            async move {
                let (_, d) = app
                    .get(&format!(
                        "/api/v1/metrics/dora?since=2023-01-01&until=2024-02-01{q}"
                    ))
                    .await;
                d["deployment_frequency"]["deployments"].as_u64().unwrap()
            }
        };
        assert_eq!(count("").await, 3, "{b:?}");
        assert_eq!(count("&environment=staging").await, 1);
        assert_eq!(count("&environment=production").await, 1);
        assert_eq!(count("&environment=production-eu").await, 1);
    }
}
