//! The CI day rollups on PostgreSQL (the logic is shared with SQLite in `crate::rollups`).
//! Reads run in one repeatable-read snapshot; a refresh holds a per-tenant advisory lock, so
//! several nodes never build the same rows at once.

use std::collections::{BTreeSet, HashMap};

use cistern_core::metrics::CiHealth;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use crate::rollups::{self, Assembler, PipelineRow, RawRun, RawStage, Segment, DAY_MS};
use crate::{metrics_sql, MetricsFilter, StoreError};

fn ph(n: usize) -> String {
    format!("${n}")
}

async fn raw(
    c: &mut PgConnection,
    tenant: &str,
    from: i64,
    to: i64,
) -> Result<(Vec<RawRun>, Vec<RawStage>), StoreError> {
    let runs = sqlx::query(&rollups::sql(rollups::RAW_RUNS_SQL, ph))
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| {
            Ok(RawRun {
                pipeline_id: r.try_get(0)?,
                branch: r.try_get(1)?,
                environment: r.try_get(2)?,
                result: r.try_get(3)?,
                started: r.try_get(4)?,
                finished: r.try_get(5)?,
                duration: r.try_get(6)?,
                commit: r.try_get(7)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let stages = sqlx::query(&rollups::sql(rollups::RAW_STAGES_SQL, ph))
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| {
            Ok(RawStage {
                pipeline_id: r.try_get(0)?,
                day: r.try_get(1)?,
                environment: r.try_get(2)?,
                name: r.try_get(3)?,
                is_step: r.try_get(4)?,
                count: r.try_get(5)?,
                failures: r.try_get::<Option<i64>, _>(6)?.unwrap_or(0),
                sum: r.try_get(7)?,
                n: r.try_get(8)?,
                max: r.try_get(9)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((runs, stages))
}

async fn sealed_until(c: &mut PgConnection, tenant: &str) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT sealed_until FROM rollup_state WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *c)
            .await?,
    )
}

async fn ids_of(
    c: &mut PgConnection,
    tenant: &str,
    shas: &[String],
) -> Result<HashMap<String, u64>, StoreError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sha, id FROM commit_ids WHERE tenant_id = $1 AND sha = ANY($2)")
            .bind(tenant)
            .bind(shas)
            .fetch_all(&mut *c)
            .await?;
    Ok(rows.into_iter().map(|(s, i)| (s, i as u64)).collect())
}

/// CI health from the rollups; `None` when the filter needs the runs. The flag is true when
/// the rollups have work due.
pub(super) async fn ci_health(
    pool: &PgPool,
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
    let mut tx = pool.begin().await?;
    // One snapshot: the rows, the dirty marks and the runs read agree.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let pipelines = sqlx::query(&rollups::sql(rollups::PIPELINES_SQL, ph))
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(PipelineRow {
                id: r.try_get(0)?,
                full_name: r.try_get(1)?,
                name: r.try_get(2)?,
                project: r.try_get(3)?,
                instance_guid: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let mut a = Assembler::new(&pipelines, f);
    let sealed = sealed_until(&mut tx, tenant).await?;
    let dirty: BTreeSet<i64> =
        sqlx::query_scalar("SELECT DISTINCT day FROM ci_days_dirty WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let pending = sealed.is_none_or(|s| s < rollups::sealable_until(now_ms)) || !dirty.is_empty();
    if !a.is_empty() {
        for seg in rollups::plan(since, until, sealed.unwrap_or(i64::MIN), &dirty) {
            match seg {
                Segment::Raw(from, to) => {
                    let (runs, stages) = raw(&mut tx, tenant, from, to).await?;
                    let known = ids_of(&mut tx, tenant, &Assembler::shas(&runs)).await?;
                    a.add_raw(runs, stages, &known);
                }
                Segment::Days(from, to) => {
                    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
                        "SELECT pipeline_id, day, data FROM ci_days WHERE tenant_id = $1 AND day >= $2 AND day < $3 ORDER BY day, pipeline_id",
                    )
                    .bind(tenant)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *tx)
                    .await?;
                    for (p, day, data) in rows {
                        a.add_blob(&p, day, &data)?;
                    }
                }
            }
        }
    }
    let mut stages = a.stage_stats();
    for i in metrics_sql::most_failing(&stages) {
        stages[i].last_failure_log =
            super::metrics::last_failure_log(&mut tx, tenant, &stages[i].pipeline, &stages[i].name)
                .await?;
    }
    let computed = rollups::compute(&a, &stages, since, until, buckets);
    let ids: Vec<i64> = computed.wanted.iter().map(|i| *i as i64).collect();
    let names: HashMap<u64, String> = if ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (i64, String)>("SELECT id, sha FROM commit_ids WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(i, s)| (i as u64, s))
            .collect()
    };
    tx.commit().await?;
    let (whole, series) = rollups::finish(computed, &a.data, names);
    Ok(Some((whole, series, pending)))
}

/// Builds the rows of the runs started in `[from, to)` ms (whose old rows are gone).
async fn build(c: &mut PgConnection, tenant: &str, from: i64, to: i64) -> Result<(), StoreError> {
    let (runs, stages) = raw(&mut *c, tenant, from, to).await?;
    let shas = Assembler::shas(&runs);
    if !shas.is_empty() {
        sqlx::query(
            "INSERT INTO commit_ids (tenant_id, sha) SELECT $1, s FROM unnest($2::text[]) AS s ON CONFLICT (tenant_id, sha) DO NOTHING",
        )
        .bind(tenant)
        .bind(&shas)
        .execute(&mut *c)
        .await?;
    }
    let ids = ids_of(&mut *c, tenant, &shas).await?;
    let blobs = rollups::build_blobs(runs, stages, |sha| {
        ids.get(sha)
            .copied()
            .ok_or_else(|| StoreError::Backend("a commit without an id".into()))
    })?;
    if blobs.is_empty() {
        return Ok(());
    }
    let mut days = Vec::with_capacity(blobs.len());
    let mut pipes = Vec::with_capacity(blobs.len());
    let mut datas = Vec::with_capacity(blobs.len());
    for (p, d, data) in blobs {
        pipes.push(p);
        days.push(d);
        datas.push(data);
    }
    sqlx::query(
        "INSERT INTO ci_days (tenant_id, day, pipeline_id, data) SELECT $1, d, p, b FROM unnest($2::bigint[], $3::text[], $4::bytea[]) AS t(d, p, b)
         ON CONFLICT (tenant_id, day, pipeline_id) DO UPDATE SET data = excluded.data",
    )
    .bind(tenant)
    .bind(&days)
    .bind(&pipes)
    .bind(&datas)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// One refresh step for a tenant: rebuilds a few dirty sealed days and seals up to a week, in
/// one transaction under the tenant's rollup lock. True when more is due.
pub(super) async fn refresh_step(
    pool: &PgPool,
    tenant: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('cistern-ci-days:' || $1, 0))")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    let target = rollups::sealable_until(now_ms);
    let mut sealed = match sealed_until(&mut tx, tenant).await? {
        Some(s) => s,
        None => {
            let first: Option<i64> =
                sqlx::query_scalar("SELECT MIN(started_at) FROM runs WHERE tenant_id = $1")
                    .bind(tenant)
                    .fetch_one(&mut *tx)
                    .await?;
            first.map_or(target, |ms| rollups::day_of(ms).min(target))
        }
    };
    let dirty: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT day FROM ci_days_dirty WHERE tenant_id = $1 AND day < $2 ORDER BY day LIMIT $3",
    )
    .bind(tenant)
    .bind(sealed)
    .bind(rollups::SEAL_DAYS_PER_STEP)
    .fetch_all(&mut *tx)
    .await?;
    for d in dirty {
        // The marks go first: a writer still holding one is waited for, so its runs are read.
        sqlx::query("DELETE FROM ci_days_dirty WHERE tenant_id = $1 AND day = $2")
            .bind(tenant)
            .bind(d)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ci_days WHERE tenant_id = $1 AND day = $2")
            .bind(tenant)
            .bind(d)
            .execute(&mut *tx)
            .await?;
        build(&mut tx, tenant, d * DAY_MS, (d + 1) * DAY_MS).await?;
    }
    if sealed < target {
        let to = target.min(sealed + rollups::SEAL_DAYS_PER_STEP);
        sqlx::query("DELETE FROM ci_days_dirty WHERE tenant_id = $1 AND day >= $2 AND day < $3")
            .bind(tenant)
            .bind(sealed)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ci_days WHERE tenant_id = $1 AND day >= $2 AND day < $3")
            .bind(tenant)
            .bind(sealed)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        build(&mut tx, tenant, sealed * DAY_MS, to * DAY_MS).await?;
        sealed = to;
    }
    sqlx::query(
        "INSERT INTO rollup_state (tenant_id, sealed_until) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET sealed_until = excluded.sealed_until",
    )
    .bind(tenant)
    .bind(sealed)
    .execute(&mut *tx)
    .await?;
    let more_dirty: Option<i64> = sqlx::query_scalar(
        "SELECT day FROM ci_days_dirty WHERE tenant_id = $1 AND day < $2 LIMIT 1",
    )
    .bind(tenant)
    .bind(sealed)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(sealed < target || more_dirty.is_some())
}

/// Refreshes every tenant's rollups, a step (one transaction) at a time.
pub(super) async fn refresh_all(pool: &PgPool) -> Result<(), StoreError> {
    let tenants: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
        .fetch_all(pool)
        .await?;
    for t in tenants {
        loop {
            let now = cistern_core::to_millis(OffsetDateTime::now_utc());
            if !refresh_step(pool, &t, now).await? {
                break;
            }
        }
    }
    Ok(())
}
