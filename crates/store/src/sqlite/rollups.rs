//! The CI day rollups on SQLite (the logic is shared with PostgreSQL in `crate::rollups`).
//! Reads run on a read connection in one snapshot; refreshes run on the writer thread.

use std::collections::{BTreeSet, HashMap};

use cistern_core::metrics::CiHealth;
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use crate::rollups::{self, Assembler, PipelineRow, RawRun, RawStage, Segment, DAY_MS};
use crate::{metrics_sql, MetricsFilter, StoreError};

fn ph(n: usize) -> String {
    format!("?{n}")
}

fn raw(
    c: &Connection,
    tenant: &str,
    from: i64,
    to: i64,
) -> Result<(Vec<RawRun>, Vec<RawStage>), StoreError> {
    let runs = c
        .prepare_cached(&rollups::sql(rollups::RAW_RUNS_SQL, ph))?
        .query_map(params![tenant, from, to], |r| {
            Ok(RawRun {
                pipeline_id: r.get(0)?,
                branch: r.get(1)?,
                environment: r.get(2)?,
                result: r.get(3)?,
                started: r.get(4)?,
                finished: r.get(5)?,
                duration: r.get(6)?,
                commit: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let stages = c
        .prepare_cached(&rollups::sql(rollups::RAW_STAGES_SQL, ph))?
        .query_map(params![tenant, from, to], |r| {
            Ok(RawStage {
                pipeline_id: r.get(0)?,
                day: r.get(1)?,
                environment: r.get(2)?,
                name: r.get(3)?,
                is_step: r.get(4)?,
                count: r.get(5)?,
                failures: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                sum: r.get(7)?,
                n: r.get(8)?,
                max: r.get(9)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((runs, stages))
}

fn sealed_until(c: &Connection, tenant: &str) -> Result<Option<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT sealed_until FROM rollup_state WHERE tenant_id = ?1")?
            .query_row([tenant], |r| r.get(0))
            .optional()?,
    )
}

/// CI health from the rollups; `None` when the filter needs the runs. The flag is true when
/// the rollups have work due (a refresh would make the next read cheaper).
pub(super) fn ci_health(
    c: &Connection,
    tenant: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
    buckets: &[(OffsetDateTime, OffsetDateTime)],
    now_ms: i64,
) -> Result<Option<(CiHealth, Vec<CiHealth>, bool)>, StoreError> {
    if !rollups::supports(f) {
        return Ok(None);
    }
    // One snapshot: the rows, the dirty marks and the runs read agree.
    let tx = c.unchecked_transaction()?;
    let pipelines = tx
        .prepare_cached(&rollups::sql(rollups::PIPELINES_SQL, ph))?
        .query_map([tenant], |r| {
            Ok(PipelineRow {
                id: r.get(0)?,
                full_name: r.get(1)?,
                name: r.get(2)?,
                project: r.get(3)?,
                instance_guid: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut a = Assembler::new(&pipelines, f);
    let sealed = sealed_until(&tx, tenant)?;
    let dirty: BTreeSet<i64> = tx
        .prepare_cached("SELECT DISTINCT day FROM ci_days_dirty WHERE tenant_id = ?1")?
        .query_map([tenant], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let pending = sealed.is_none_or(|s| s < rollups::sealable_until(now_ms)) || !dirty.is_empty();
    if !a.is_empty() {
        for seg in rollups::plan(since, until, sealed.unwrap_or(i64::MIN), &dirty) {
            match seg {
                Segment::Raw(from, to) => {
                    let (runs, stages) = raw(&tx, tenant, from, to)?;
                    let mut known = HashMap::new();
                    let mut st = tx.prepare_cached(
                        "SELECT id FROM commit_ids WHERE tenant_id = ?1 AND sha = ?2",
                    )?;
                    for sha in Assembler::shas(&runs) {
                        if let Some(id) = st
                            .query_row(params![tenant, sha], |r| r.get::<_, i64>(0))
                            .optional()?
                        {
                            known.insert(sha, id as u64);
                        }
                    }
                    a.add_raw(runs, stages, &known);
                }
                Segment::Days(from, to) => {
                    let mut st = tx.prepare_cached(
                        "SELECT pipeline_id, day, data FROM ci_days WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3 ORDER BY day, pipeline_id",
                    )?;
                    let mut rows = st.query(params![tenant, from, to])?;
                    while let Some(r) = rows.next()? {
                        let p: String = r.get(0)?;
                        let day: i64 = r.get(1)?;
                        let data = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
                        a.add_blob(&p, day, data)?;
                    }
                }
            }
        }
    }
    let mut stages = a.stage_stats();
    for i in metrics_sql::most_failing(&stages) {
        stages[i].last_failure_log =
            super::metrics::last_failure_log(&tx, tenant, &stages[i].pipeline, &stages[i].name)?;
    }
    let computed = rollups::compute(&a, &stages, since, until, buckets);
    let mut names = HashMap::new();
    {
        let mut st = tx.prepare_cached("SELECT sha FROM commit_ids WHERE id = ?1")?;
        for id in &computed.wanted {
            if let Some(sha) = st
                .query_row([*id as i64], |r| r.get::<_, String>(0))
                .optional()?
            {
                names.insert(*id, sha);
            }
        }
    }
    let (whole, series) = rollups::finish(computed, &a.data, names);
    tx.commit()?;
    Ok(Some((whole, series, pending)))
}

/// Builds the rows of the runs started in `[from, to)` ms (whose old rows are gone).
fn build(c: &Connection, tenant: &str, from: i64, to: i64) -> Result<(), StoreError> {
    let (runs, stages) = raw(c, tenant, from, to)?;
    let mut ids: HashMap<String, u64> = HashMap::new();
    {
        let mut ins =
            c.prepare_cached("INSERT OR IGNORE INTO commit_ids (tenant_id, sha) VALUES (?1, ?2)")?;
        let mut sel =
            c.prepare_cached("SELECT id FROM commit_ids WHERE tenant_id = ?1 AND sha = ?2")?;
        for sha in Assembler::shas(&runs) {
            ins.execute(params![tenant, sha])?;
            let id: i64 = sel.query_row(params![tenant, sha], |r| r.get(0))?;
            ids.insert(sha, id as u64);
        }
    }
    let blobs = rollups::build_blobs(runs, stages, |sha| {
        ids.get(sha)
            .copied()
            .ok_or_else(|| StoreError::Backend("a commit without an id".into()))
    })?;
    let mut ins = c.prepare_cached(
        "INSERT OR REPLACE INTO ci_days (tenant_id, day, pipeline_id, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (p, day, data) in blobs {
        ins.execute(params![tenant, day, p, data])?;
    }
    Ok(())
}

/// One refresh step for a tenant, on the writer: rebuilds a few dirty sealed days and seals up
/// to a week. True when more is due.
pub(super) fn refresh_step(c: &Connection, tenant: &str, now_ms: i64) -> Result<bool, StoreError> {
    let target = rollups::sealable_until(now_ms);
    let mut sealed = match sealed_until(c, tenant)? {
        Some(s) => s,
        None => {
            let first: Option<i64> = c
                .prepare_cached("SELECT MIN(started_at) FROM runs WHERE tenant_id = ?1")?
                .query_row([tenant], |r| r.get(0))?;
            first.map_or(target, |ms| rollups::day_of(ms).min(target))
        }
    };
    let dirty: Vec<i64> = c
        .prepare_cached("SELECT DISTINCT day FROM ci_days_dirty WHERE tenant_id = ?1 AND day < ?2 ORDER BY day LIMIT ?3")?
        .query_map(params![tenant, sealed, rollups::SEAL_DAYS_PER_STEP], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for d in dirty {
        c.prepare_cached("DELETE FROM ci_days_dirty WHERE tenant_id = ?1 AND day = ?2")?
            .execute(params![tenant, d])?;
        c.prepare_cached("DELETE FROM ci_days WHERE tenant_id = ?1 AND day = ?2")?
            .execute(params![tenant, d])?;
        build(c, tenant, d * DAY_MS, (d + 1) * DAY_MS)?;
    }
    if sealed < target {
        let to = target.min(sealed + rollups::SEAL_DAYS_PER_STEP);
        c.prepare_cached(
            "DELETE FROM ci_days_dirty WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3",
        )?
        .execute(params![tenant, sealed, to])?;
        c.prepare_cached("DELETE FROM ci_days WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3")?
            .execute(params![tenant, sealed, to])?;
        build(c, tenant, sealed * DAY_MS, to * DAY_MS)?;
        sealed = to;
    }
    c.prepare_cached(
        "INSERT INTO rollup_state (tenant_id, sealed_until) VALUES (?1, ?2)
         ON CONFLICT (tenant_id) DO UPDATE SET sealed_until = excluded.sealed_until",
    )?
    .execute(params![tenant, sealed])?;
    let more_dirty: Option<i64> = c
        .prepare_cached("SELECT day FROM ci_days_dirty WHERE tenant_id = ?1 AND day < ?2 LIMIT 1")?
        .query_row(params![tenant, sealed], |r| r.get(0))
        .optional()?;
    Ok(sealed < target || more_dirty.is_some())
}

/// The ids of every tenant.
pub(super) fn tenants(c: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(c.prepare_cached("SELECT id FROM tenants ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}
