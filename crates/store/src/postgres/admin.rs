//! Secrets, sources, settings and incidents on PostgreSQL.

use cistern_core::{from_millis, to_millis};
use sqlx::{PgPool, Row};
use time::OffsetDateTime;

use crate::*;

pub(super) async fn meta_get(pool: &PgPool, key: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn meta_init(pool: &PgPool, key: &str, value: &str) -> Result<String, StoreError> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(pool)
        .await?;
    meta_get(pool, key)
        .await?
        .ok_or_else(|| StoreError::Backend("setting vanished".into()))
}

pub(super) async fn put_secret(
    pool: &PgPool,
    tenant_id: &str,
    name: &str,
    nonce: &[u8],
    ct: &[u8],
    grace_until: OffsetDateTime,
) -> Result<bool, StoreError> {
    let now = to_millis(OffsetDateTime::now_utc());
    // One statement: insert, or rotate the current value into `previous`.
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO secrets (tenant_id, name, nonce, ciphertext, created_at, updated_at) VALUES ($1, $2, $3, $4, $6, $6)
         ON CONFLICT (tenant_id, name) DO UPDATE SET previous_nonce = secrets.nonce, previous_ciphertext = secrets.ciphertext,
           previous_until = $5, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, updated_at = EXCLUDED.updated_at
         RETURNING (previous_until IS NULL)",
    )
    .bind(tenant_id)
    .bind(name)
    .bind(nonce)
    .bind(ct)
    .bind(to_millis(grace_until))
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(inserted)
}

pub(super) async fn get_secret(
    pool: &PgPool,
    tenant_id: &str,
    name: &str,
) -> Result<Option<StoredSecret>, StoreError> {
    let row = sqlx::query(
        "SELECT nonce, ciphertext, previous_nonce, previous_ciphertext, previous_until, created_at, updated_at
         FROM secrets WHERE tenant_id = $1 AND name = $2",
    )
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let prev: (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>) =
        (r.try_get(2)?, r.try_get(3)?, r.try_get(4)?);
    Ok(Some(StoredSecret {
        nonce: r.try_get(0)?,
        ciphertext: r.try_get(1)?,
        previous: match prev {
            (Some(n), Some(ct), Some(until)) => Some((n, ct, from_millis(until))),
            _ => None,
        },
        created_at: from_millis(r.try_get(5)?),
        updated_at: from_millis(r.try_get(6)?),
    }))
}

pub(super) async fn list_secrets(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Vec<SecretInfo>, StoreError> {
    let now = to_millis(OffsetDateTime::now_utc());
    let rows = sqlx::query("SELECT name, created_at, updated_at, previous_until FROM secrets WHERE tenant_id = $1 ORDER BY name")
        .bind(tenant_id)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(SecretInfo {
                name: r.try_get(0)?,
                created_at: from_millis(r.try_get(1)?),
                updated_at: from_millis(r.try_get(2)?),
                previous_valid_until: r
                    .try_get::<Option<i64>, _>(3)?
                    .filter(|u| *u > now)
                    .map(from_millis),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?)
}

pub(super) async fn delete_secret(
    pool: &PgPool,
    tenant_id: &str,
    name: &str,
) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
        .bind(tenant_id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

fn source_row(r: &sqlx::postgres::PgRow) -> Result<Source, sqlx::Error> {
    Ok(Source {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        name: r.try_get(3)?,
        secret_name: r.try_get(4)?,
        created_at: from_millis(r.try_get(5)?),
    })
}

pub(super) async fn create_source(pool: &PgPool, s: &Source) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO sources (id, tenant_id, kind, name, secret_name, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&s.id)
        .bind(&s.tenant_id)
        .bind(&s.kind)
        .bind(&s.name)
        .bind(&s.secret_name)
        .bind(to_millis(s.created_at))
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn source_by_id(pool: &PgPool, id: &str) -> Result<Option<Source>, StoreError> {
    let row = sqlx::query(
        "SELECT id, tenant_id, kind, name, secret_name, created_at FROM sources WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(source_row).transpose()?)
}

pub(super) async fn list_sources(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Vec<Source>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, kind, name, secret_name, created_at FROM sources WHERE tenant_id = $1 ORDER BY created_at, id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(source_row).collect::<Result<Vec<_>, _>>()?)
}

pub(super) async fn delete_source(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let r = sqlx::query("DELETE FROM sources WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn incidents(
    pool: &PgPool,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<cistern_core::metrics::Incident>, StoreError> {
    let from = to_millis(crate::metrics_sql::history_start(since));
    let rows = sqlx::query(
        "SELECT service, environment, detected_at, resolved_at FROM incidents
         WHERE tenant_id = $1 AND COALESCE(detected_at, resolved_at) >= $2 AND COALESCE(detected_at, resolved_at) < $3
           AND ($4::text IS NULL OR environment = $4)",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to_millis(until))
    .bind(&f.environment)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let detected: Option<i64> = r.try_get(2)?;
            let resolved: Option<i64> = r.try_get(3)?;
            Ok(cistern_core::metrics::Incident {
                pipeline: r.try_get(0)?,
                environment: r.try_get(1)?,
                detected_at: from_millis(detected.or(resolved).unwrap_or_default()),
                resolved_at: resolved.map(from_millis),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?)
}
