//! Metrics reads on PostgreSQL (the SQL is shared with SQLite in `metrics_sql`).

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;

use crate::metrics_sql::{self, Arg, Dialect, Stmt};
use crate::{MetricsFilter, StoreError};

const PG: Dialect = Dialect {
    ph: |n| format!("${n}"),
    json_repo: "(r.detail::jsonb ->> 'repo')",
};

async fn query(pool: &PgPool, s: &Stmt<'_>) -> Result<Vec<PgRow>, StoreError> {
    let mut q = sqlx::query(&s.sql);
    for a in &s.args {
        q = match a {
            Arg::Text(t) => q.bind(t.clone()),
            Arg::Int(i) => q.bind(*i),
        };
    }
    Ok(q.fetch_all(pool).await?)
}

pub(super) async fn deployments(
    pool: &PgPool,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<cistern_core::metrics::Deployment>, StoreError> {
    let from = metrics_sql::history_start(since);
    let rows = query(
        pool,
        &metrics_sql::deployments(&PG, tenant_id, f, from, until),
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
        ))
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let commits = query(
        pool,
        &metrics_sql::deployment_commits(&PG, tenant_id, f, from, until),
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let first_seen = query(
        pool,
        &metrics_sql::commit_first_seen(&PG, tenant_id, f, from, until),
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(metrics_sql::assemble_deployments(rows, commits, first_seen))
}

pub(super) async fn ci_runs(
    pool: &PgPool,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<cistern_core::metrics::CiRun>, StoreError> {
    Ok(
        query(pool, &metrics_sql::ci_runs(&PG, tenant_id, f, since, until))
            .await?
            .iter()
            .map(|r| {
                let result: String = r.try_get(2)?;
                Ok(cistern_core::metrics::CiRun {
                    pipeline: r.try_get(0)?,
                    branch: r.try_get(1)?,
                    result: cistern_core::RunResult::from_normalized(&result)
                        .unwrap_or(cistern_core::RunResult::Error),
                    started_at: cistern_core::from_millis(r.try_get(3)?),
                    finished_at: r
                        .try_get::<Option<i64>, _>(4)?
                        .map(cistern_core::from_millis),
                    duration_ms: r.try_get(5)?,
                    commit: r.try_get(6)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?,
    )
}

pub(super) async fn stage_stats(
    pool: &PgPool,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<cistern_core::metrics::StageStat>, StoreError> {
    let rows = query(
        pool,
        &metrics_sql::stage_stats(&PG, tenant_id, f, since, until),
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
            r.try_get(6)?,
        ))
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let mut stats = metrics_sql::assemble_stage_stats(rows);
    let mut c = pool.acquire().await?;
    for i in metrics_sql::most_failing(&stats) {
        stats[i].last_failure_log =
            last_failure_log(&mut c, tenant_id, &stats[i].pipeline, &stats[i].name).await?;
    }
    Ok(stats)
}

/// The end of the latest failure log of a stage (or `stage / step`) of a pipeline.
pub(super) async fn last_failure_log(
    c: &mut sqlx::PgConnection,
    tenant_id: &str,
    pipeline: &str,
    name: &str,
) -> Result<Option<String>, StoreError> {
    let s = metrics_sql::last_failure_log(&PG, tenant_id, pipeline, name);
    let mut q = sqlx::query(&s.sql);
    for a in &s.args {
        q = match a {
            Arg::Text(t) => q.bind(t.clone()),
            Arg::Int(i) => q.bind(*i),
        };
    }
    let row = q.fetch_optional(&mut *c).await?;
    let log: Option<String> = match row {
        Some(r) => r.try_get(0)?,
        None => None,
    };
    Ok(log.map(|l| metrics_sql::excerpt(&l)))
}
