//! The pure DORA and CI-health computations over large histories.

use cistern_core::metrics::{ci_health, dora, CiRun, Deployment};
use cistern_core::RunResult;
use criterion::{criterion_group, criterion_main, Criterion};
use time::{Duration, OffsetDateTime};

fn history(n: usize) -> (Vec<Deployment>, Vec<CiRun>, OffsetDateTime, OffsetDateTime) {
    let start = OffsetDateTime::UNIX_EPOCH + Duration::days(19_700);
    let step = Duration::seconds(60);
    let deployments = (0..n)
        .map(|i| Deployment {
            run_id: format!("r{i}"),
            pipeline: format!("svc-{}", i % 40),
            environment: Some(if i % 3 == 0 { "staging" } else { "prod" }.into()),
            finished_at: start + step * i as i32,
            succeeded: i % 9 != 0,
            failed: i % 9 == 0,
            cfr_status: false,
            commits: vec![(
                format!("{:040x}", i),
                Some(start + step * i as i32 - Duration::hours(5)),
            )],
        })
        .collect();
    let runs = (0..n)
        .map(|i| CiRun {
            pipeline: format!("svc-{}", i % 40),
            branch: Some("main".into()),
            result: if i % 7 == 0 {
                RunResult::Failure
            } else {
                RunResult::Success
            },
            started_at: start + step * i as i32,
            finished_at: Some(start + step * i as i32 + Duration::minutes(5)),
            duration_ms: Some(300_000 + (i as i64 % 1000)),
            commit: Some(format!("{:040x}", i / 2)),
        })
        .collect();
    (deployments, runs, start, start + step * n as i32)
}

fn bench(c: &mut Criterion) {
    for n in [10_000usize, 100_000] {
        let (deps, runs, since, until) = history(n);
        c.bench_function(&format!("dora/{n}-deployments"), |b| {
            b.iter(|| dora(std::hint::black_box(&deps), &[], since, until))
        });
        c.bench_function(&format!("ci_health/{n}-runs"), |b| {
            b.iter(|| ci_health(std::hint::black_box(&runs), &[], since, until))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
