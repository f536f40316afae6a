//! Key rotation on PostgreSQL (one transaction per rotation).

use cistern_core::{from_millis, to_millis};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;

use crate::key_rotation::{rotated_name, KeyRotation};
use crate::*;

pub(super) const COLS: &str = "key_id, tenant_id, replaced_by, rotated_at, expires_at";

fn row(r: &PgRow) -> Result<KeyRotation, sqlx::Error> {
    row_at(r, 0)
}

/// A rotation from the [`COLS`] starting at column `at`.
pub(super) fn row_at(r: &PgRow, at: usize) -> Result<KeyRotation, sqlx::Error> {
    Ok(KeyRotation {
        key_id: r.try_get(at)?,
        tenant_id: r.try_get(at + 1)?,
        replaced_by: r.try_get(at + 2)?,
        rotated_at: from_millis(r.try_get(at + 3)?),
        expires_at: from_millis(r.try_get(at + 4)?),
    })
}

pub(super) async fn rotate(
    pool: &PgPool,
    tenant_id: &str,
    key_id: &str,
    new: &ApiKeyInfo,
    hash: &str,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<KeyRotation, StoreError> {
    let mut tx = pool.begin().await?;
    // FOR UPDATE: two rotations of one key at once give one replacement, not two.
    let old: Option<(String, Option<i64>)> = sqlx::query_as(
        "SELECT name, revoked_at FROM api_keys WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(key_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((name, revoked)) = old else {
        return Err(StoreError::NotFound(format!("no key {key_id:?}")));
    };
    if revoked.is_some() {
        return Err(StoreError::Conflict(format!(
            "the key {key_id:?} is revoked; create a new one instead"
        )));
    }
    let done: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_key_rotations WHERE key_id = $1)")
            .bind(key_id)
            .fetch_one(&mut *tx)
            .await?;
    if done {
        return Err(StoreError::Conflict(format!(
            "the key {key_id:?} was already rotated; rotate its replacement"
        )));
    }
    let scopes: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&new.id)
    .bind(tenant_id)
    .bind(&new.name)
    .bind(&new.prefix)
    .bind(hash)
    .bind(scopes.join(","))
    .bind(to_millis(new.created_at))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE api_keys SET name = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(key_id)
        .bind(rotated_name(&name, now))
        .execute(&mut *tx)
        .await?;
    let r = KeyRotation {
        key_id: key_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        replaced_by: new.id.clone(),
        rotated_at: now,
        expires_at,
    };
    sqlx::query(&format!(
        "INSERT INTO api_key_rotations ({COLS}) VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(&r.key_id)
    .bind(&r.tenant_id)
    .bind(&r.replaced_by)
    .bind(to_millis(r.rotated_at))
    .bind(to_millis(r.expires_at))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(r)
}

pub(super) async fn get(pool: &PgPool, key_id: &str) -> Result<Option<KeyRotation>, StoreError> {
    let r = sqlx::query(&format!(
        "SELECT {COLS} FROM api_key_rotations WHERE key_id = $1"
    ))
    .bind(key_id)
    .fetch_optional(pool)
    .await?;
    Ok(r.as_ref().map(row).transpose()?)
}

pub(super) async fn list(pool: &PgPool, tenant_id: &str) -> Result<Vec<KeyRotation>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM api_key_rotations WHERE tenant_id = $1 ORDER BY rotated_at"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
}
