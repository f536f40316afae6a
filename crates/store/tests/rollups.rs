//! The CI day rollups answer exactly what `core::metrics::ci_health` answers over the runs
//! (`Store::ci_runs` and `Store::stage_stats`): random histories, with late and repeated reports
//! of the same run, result changes, reruns and refreshes in between, on SQLite and (when
//! `CISTERN_TEST_PG` is set) PostgreSQL.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use cistern_core::metrics::{ci_health, CiHealth};
use cistern_core::{from_millis, Commit, InstanceRef, PipelineRef, RunReport, RunResult, Stage};
use cistern_store::postgres::PgStore;
use cistern_store::sqlite::SqliteStore;
use cistern_store::*;
use futures::FutureExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::Connection;

const PG_ENV: &str = "CISTERN_TEST_PG";
const DAY: i64 = 86_400_000;

fn settings() -> StoreSettings {
    StoreSettings {
        max_batch: 64,
        max_event_body_bytes: 1 << 16,
        pool_size: 4,
    }
}

/// One report of a generated history.
#[derive(Debug, Clone)]
struct Op {
    pipeline: usize,
    run: usize,
    result: usize,
    /// Start: days before today's midnight (negative: today), and ms into that day.
    day_back: i64,
    at: i64,
    finished_after: Option<i64>,
    duration: Option<i64>,
    branch: usize,
    env: usize,
    commits: Vec<usize>,
    stages: Vec<(usize, usize, Option<i64>, bool)>,
    /// Refresh the rollups after this write.
    refresh: bool,
}

const RESULTS: [RunResult; 6] = [
    RunResult::Success,
    RunResult::Failure,
    RunResult::Unstable,
    RunResult::Aborted,
    RunResult::Error,
    RunResult::Running,
];
/// (instance guid, full name, project): two pipelines share a full name on two instances.
const PIPELINES: [(&str, &str, &str); 3] = [
    ("inst-a", "shop/build", "shop"),
    ("inst-b", "shop/build", "shop"),
    ("inst-a", "pay/deploy", "pay"),
];
const BRANCHES: [Option<&str>; 3] = [None, Some("main"), Some("dev")];
const ENVS: [Option<&str>; 3] = [None, Some("prod"), Some("staging")];

fn op() -> impl Strategy<Value = Op> {
    (
        (
            0usize..3,
            0usize..6,
            0usize..RESULTS.len(),
            -1i64..8,
            0i64..DAY,
        ),
        (
            proptest::option::of(0i64..3_600_000),
            proptest::option::of(0i64..600_000),
            0usize..3,
            0usize..3,
            proptest::collection::vec(0usize..4, 0..3),
            proptest::collection::vec(
                (
                    0usize..3,
                    0usize..3,
                    proptest::option::of(0i64..9_000),
                    any::<bool>(),
                ),
                0..3,
            ),
            proptest::bool::weighted(0.15),
        ),
    )
        .prop_map(
            |(
                (pipeline, run, result, day_back, at),
                (fin, dur, branch, env, commits, stages, refresh),
            )| Op {
                pipeline,
                run,
                result,
                day_back,
                at,
                finished_after: fin,
                duration: dur,
                branch,
                env,
                commits,
                stages,
                refresh,
            },
        )
}

fn report(o: &Op, today: i64, now_ms: i64) -> RunReport {
    let (guid, full_name, project) = PIPELINES[o.pipeline];
    // Today's runs start before now (a report from the future is refused).
    let started = if o.day_back < 0 {
        today + o.at % (now_ms - today).max(1)
    } else {
        today - (o.day_back + 1) * DAY + o.at
    };
    let result = RESULTS[o.result];
    let stage_names = ["Build", "Test", "Deploy"];
    let stages = o
        .stages
        .iter()
        .map(|(name, res, dur, step)| Stage {
            name: stage_names[*name].into(),
            result: Some(RESULTS[*res]),
            duration_ms: *dur,
            log: (RESULTS[*res].is_failed())
                .then(|| format!("log of {} at {started}", stage_names[*name])),
            steps: if *step {
                vec![Stage {
                    name: "step".into(),
                    result: Some(RESULTS[*res]),
                    duration_ms: dur.map(|d| d / 2),
                    ..Stage::default()
                }]
            } else {
                vec![]
            },
            ..Stage::default()
        })
        .collect();
    RunReport {
        instance: InstanceRef {
            guid: guid.into(),
            ..InstanceRef::default()
        },
        pipeline: PipelineRef {
            full_name: full_name.into(),
            name: full_name.rsplit('/').next().unwrap_or(full_name).into(),
            project: Some(project.into()),
            ..PipelineRef::default()
        },
        run_key: format!("run-{}", o.run),
        build_number: None,
        execution_id: None,
        result,
        source_result: result.as_str().to_uppercase(),
        started_at: from_millis(started),
        finished_at: o
            .finished_after
            .map(|f| from_millis((started + f).min(now_ms))),
        duration_ms: o.duration,
        triggered_by: None,
        branch: BRANCHES[o.branch].map(String::from),
        repo_url: None,
        repo: None,
        commits: o
            .commits
            .iter()
            .map(|c| Commit {
                sha: format!("sha{c}"),
                committed_at: None,
            })
            .collect(),
        ci: true,
        cd: false,
        environment: ENVS[o.env].map(String::from),
        cfr_status: None,
        params: vec![],
        artifacts: vec![],
        trigger_chain: vec![],
        themes: vec![],
        web_url: None,
        job_type: None,
        custom_fields: vec![],
        stages,
        log: None,
        source: "sei".into(),
        partial: false,
    }
}

fn filters() -> Vec<MetricsFilter> {
    vec![
        MetricsFilter::default(),
        MetricsFilter {
            pipeline: Some("shop/build".into()),
            ..MetricsFilter::default()
        },
        MetricsFilter {
            pipeline: Some("deploy".into()),
            ..MetricsFilter::default()
        },
        MetricsFilter {
            environment: Some("prod".into()),
            ..MetricsFilter::default()
        },
        MetricsFilter {
            project: Some("shop".into()),
            environment: Some("staging".into()),
            ..MetricsFilter::default()
        },
        MetricsFilter {
            instance: Some("inst-b".into()),
            ..MetricsFilter::default()
        },
    ]
}

async fn slow(
    s: &Arc<dyn Store>,
    tenant: &str,
    f: &MetricsFilter,
    since: time::OffsetDateTime,
    until: time::OffsetDateTime,
    buckets: &[(time::OffsetDateTime, time::OffsetDateTime)],
) -> (CiHealth, Vec<CiHealth>) {
    let runs = s.ci_runs(tenant, f, since, until).await.expect("ci_runs");
    let stages = s
        .stage_stats(tenant, f, since, until)
        .await
        .expect("stage_stats");
    let whole = ci_health(&runs, &stages, since, until);
    let series = buckets
        .iter()
        .map(|(a, b)| ci_health(&runs, &[], *a, *b))
        .collect();
    (whole, series)
}

/// Every window and filter: the fast path equals the pure function over the runs.
async fn compare(
    s: &Arc<dyn Store>,
    tenant: &str,
    today: i64,
    now: time::OffsetDateTime,
    offs: (i64, i64),
) -> Result<(), String> {
    let (a, b) = offs;
    let windows = [
        (now - time::Duration::days(30), now),
        (now - time::Duration::days(365), now),
        (from_millis(today - 5 * DAY), from_millis(today - DAY)),
        (
            from_millis(today - 6 * DAY + a),
            from_millis(today - 2 * DAY + b) + time::Duration::nanoseconds(a % 1_000_000),
        ),
        (from_millis(today - 3 * DAY + b), now),
    ];
    for (since, until) in windows {
        let buckets: Vec<_> = {
            let mut out = Vec::new();
            let mut t = since;
            while t < until && out.len() < 40 {
                let e = (t + time::Duration::days(1)).min(until);
                out.push((t, e));
                t = e;
            }
            out
        };
        for f in filters() {
            let fast = s
                .ci_health_fast(tenant, &f, since, until, &buckets)
                .await
                .map_err(|e| format!("ci_health_fast: {e}"))?
                .ok_or("the fast path declined a filter it supports")?;
            let want = slow(s, tenant, &f, since, until, &buckets).await;
            if fast != want {
                return Err(format!(
                    "window {since} .. {until}, filter {f:?}:\nfast {:#?}\nslow {:#?}",
                    fast, want
                ));
            }
        }
    }
    Ok(())
}

fn check_backend(s: Arc<dyn Store>, rt: &tokio::runtime::Runtime, cases: u32) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let strategy = (proptest::collection::vec(op(), 1..40), 0i64..DAY, 0i64..DAY);
    let outcome = runner.run(&strategy, |(ops, a, b)| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let tenant = s
                .create_tenant(&format!("t{n}-{}", uuid::Uuid::new_v4().simple()), false)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let now = time::OffsetDateTime::now_utc();
            let now_ms = cistern_core::to_millis(now);
            let today = now_ms.div_euclid(DAY) * DAY;
            for o in &ops {
                s.write(WriteOp::Runs {
                    event: EventRecord {
                        tenant_id: Some(tenant.id.clone()),
                        endpoint: "/v1/custom-cicd".into(),
                        dialect: "sei".into(),
                        request_type: None,
                        content_type: Some("application/json".into()),
                        body: Arc::from(&b"{}"[..]),
                        received_at: now,
                        status: EventStatus::Accepted,
                        http_status: 202,
                        errors: vec![],
                        key_id: None,
                        source_id: None,
                        dedupe_key: None,
                    },
                    tenant: tenant.clone(),
                    runs: vec![report(o, today, now_ms)],
                })
                .await
                .map_err(|e| TestCaseError::fail(format!("write: {e}")))?;
                if o.refresh {
                    s.refresh_rollups()
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            compare(&s, &tenant.id, today, now, (a, b))
                .await
                .map_err(TestCaseError::fail)?;
            s.refresh_rollups()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            compare(&s, &tenant.id, today, now, (a, b))
                .await
                .map_err(|e| TestCaseError::fail(format!("after a refresh: {e}")))?;
            Ok(())
        })
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[test]
fn rollups_answer_what_ci_health_answers_on_sqlite() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        rt.block_on(SqliteStore::open(
            &dir.path().join("cistern.db"),
            &settings(),
        ))
        .expect("open SQLite store"),
    );
    check_backend(store, &rt, 48);
}

#[test]
fn rollups_answer_what_ci_health_answers_on_postgres() {
    let Some(base) = std::env::var(PG_ENV).ok().filter(|b| !b.trim().is_empty()) else {
        eprintln!("note: {PG_ENV} is not set; the PostgreSQL half is skipped");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = format!("cistern_test_{}", uuid::Uuid::new_v4().simple());
    let url = {
        let (head, _) = base.split_once('?').unwrap_or((&base, ""));
        let cut = head.rfind('/').expect("a database in the URL");
        format!("{}/{db}", &head[..cut])
    };
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect");
        sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {db}").as_str())
            .await
            .expect("create the test database");
        let _ = admin.close().await;
    });
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let store: Arc<dyn Store> = Arc::new(
            rt.block_on(PgStore::open(&url, &settings()))
                .expect("open PostgreSQL store"),
        );
        check_backend(store, &rt, 32);
    }));
    rt.block_on(
        async {
            let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect");
            let _ = sqlx::Executor::execute(
                &mut admin,
                format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str(),
            )
            .await;
            let _ = admin.close().await;
        }
        .boxed(),
    );
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
