//! Metrics reads on SQLite (the SQL is shared with PostgreSQL in `metrics_sql`).

use rusqlite::{Connection, ToSql};
use time::OffsetDateTime;

use crate::metrics_sql::{self, Arg, Dialect, Stmt};
use crate::{MetricsFilter, StoreError};

const SQLITE: Dialect = Dialect {
    ph: |n| format!("?{n}"),
    json_repo: "json_extract(r.detail, '$.repo')",
};

fn params(s: &Stmt<'_>) -> Vec<Box<dyn ToSql>> {
    s.args
        .iter()
        .map(|a| -> Box<dyn ToSql> {
            match a {
                Arg::Text(t) => Box::new(t.clone()),
                Arg::Int(i) => Box::new(*i),
            }
        })
        .collect()
}

fn query<T>(
    c: &Connection,
    s: &Stmt<'_>,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let args = params(s);
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let mut st = c.prepare_cached(&s.sql)?;
    let rows = st
        .query_map(refs.as_slice(), map)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn deployments(
    c: &Connection,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<cistern_core::metrics::Deployment>, StoreError> {
    let from = metrics_sql::history_start(since);
    let rows = query(
        c,
        &metrics_sql::deployments(&SQLITE, tenant_id, f, from, until),
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )?;
    let commits = query(
        c,
        &metrics_sql::deployment_commits(&SQLITE, tenant_id, f, from, until),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let first_seen = query(
        c,
        &metrics_sql::commit_first_seen(&SQLITE, tenant_id, f, from, until),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(metrics_sql::assemble_deployments(rows, commits, first_seen))
}

pub(super) fn ci_runs(
    c: &Connection,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<cistern_core::metrics::CiRun>, StoreError> {
    query(
        c,
        &metrics_sql::ci_runs(&SQLITE, tenant_id, f, since, until),
        |r| {
            let result: String = r.get(2)?;
            Ok(cistern_core::metrics::CiRun {
                pipeline: r.get(0)?,
                branch: r.get(1)?,
                result: cistern_core::RunResult::from_normalized(&result)
                    .unwrap_or(cistern_core::RunResult::Error),
                started_at: cistern_core::from_millis(r.get(3)?),
                finished_at: r.get::<_, Option<i64>>(4)?.map(cistern_core::from_millis),
                duration_ms: r.get(5)?,
                commit: r.get(6)?,
            })
        },
    )
}

pub(super) fn stage_stats(
    c: &Connection,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<cistern_core::metrics::StageStat>, StoreError> {
    let rows = query(
        c,
        &metrics_sql::stage_stats(&SQLITE, tenant_id, f, since, until),
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        },
    )?;
    let mut stats = metrics_sql::assemble_stage_stats(rows);
    for i in metrics_sql::most_failing(&stats) {
        stats[i].last_failure_log =
            last_failure_log(c, tenant_id, &stats[i].pipeline, &stats[i].name)?;
    }
    Ok(stats)
}

/// The end of the latest failure log of a stage (or `stage / step`) of a pipeline.
pub(super) fn last_failure_log(
    c: &Connection,
    tenant_id: &str,
    pipeline: &str,
    name: &str,
) -> Result<Option<String>, StoreError> {
    let s = metrics_sql::last_failure_log(&SQLITE, tenant_id, pipeline, name);
    let log: Vec<Option<String>> = query(c, &s, |r| r.get(0))?;
    Ok(log
        .into_iter()
        .flatten()
        .next()
        .map(|l| metrics_sql::excerpt(&l)))
}
