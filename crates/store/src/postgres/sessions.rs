//! Dashboard sessions on PostgreSQL.

use cistern_core::{from_millis, to_millis};
use sqlx::{PgPool, Row};
use time::OffsetDateTime;

use crate::sessions::DashboardSession;
use crate::StoreError;

pub(super) async fn create(pool: &PgPool, s: &DashboardSession) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO dashboard_sessions (id_hash, key_id, key_hash, tenant_id, created_at, last_seen_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&s.id_hash)
    .bind(&s.key_id)
    .bind(&s.key_hash)
    .bind(&s.tenant_id)
    .bind(to_millis(s.created_at))
    .bind(to_millis(s.last_seen_at))
    .bind(to_millis(s.expires_at))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn by_hash(
    pool: &PgPool,
    id_hash: &str,
) -> Result<Option<DashboardSession>, StoreError> {
    let row = sqlx::query(
        "SELECT id_hash, key_id, key_hash, tenant_id, created_at, last_seen_at, expires_at
         FROM dashboard_sessions WHERE id_hash = $1",
    )
    .bind(id_hash)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(Some(DashboardSession {
        id_hash: r.try_get(0)?,
        key_id: r.try_get(1)?,
        key_hash: r.try_get(2)?,
        tenant_id: r.try_get(3)?,
        created_at: from_millis(r.try_get(4)?),
        last_seen_at: from_millis(r.try_get(5)?),
        expires_at: from_millis(r.try_get(6)?),
    }))
}

pub(super) async fn touch(
    pool: &PgPool,
    id_hash: &str,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dashboard_sessions SET last_seen_at = GREATEST(last_seen_at, $1) WHERE id_hash = $2",
    )
    .bind(to_millis(at))
    .bind(id_hash)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn end(pool: &PgPool, id_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn end_of_key(pool: &PgPool, key_id: &str) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM dashboard_sessions WHERE key_id = $1")
            .bind(key_id)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
