//! Key rotation on SQLite (writes on the writer thread, in its transaction).

use cistern_core::{from_millis, to_millis};
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::key_rotation::{rotated_name, KeyRotation};
use crate::*;

const COLS: &str = "key_id, tenant_id, replaced_by, rotated_at, expires_at";

fn row(r: &Row<'_>) -> rusqlite::Result<KeyRotation> {
    Ok(KeyRotation {
        key_id: r.get(0)?,
        tenant_id: r.get(1)?,
        replaced_by: r.get(2)?,
        rotated_at: from_millis(r.get(3)?),
        expires_at: from_millis(r.get(4)?),
    })
}

pub(super) fn rotate(
    c: &Connection,
    tenant_id: &str,
    key_id: &str,
    new: &ApiKeyInfo,
    hash: &str,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<KeyRotation, StoreError> {
    let old: Option<(String, Option<i64>)> = c
        .query_row(
            "SELECT name, revoked_at FROM api_keys WHERE tenant_id = ?1 AND id = ?2",
            params![tenant_id, key_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((name, revoked)) = old else {
        return Err(StoreError::NotFound(format!("no key {key_id:?}")));
    };
    if revoked.is_some() {
        return Err(StoreError::Conflict(format!(
            "the key {key_id:?} is revoked; create a new one instead"
        )));
    }
    let done: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM api_key_rotations WHERE key_id = ?1)",
        [key_id],
        |r| r.get(0),
    )?;
    if done {
        return Err(StoreError::Conflict(format!(
            "the key {key_id:?} was already rotated; rotate its replacement"
        )));
    }
    let scopes: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
    c.execute(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![new.id, tenant_id, new.name, new.prefix, hash, scopes.join(","), to_millis(new.created_at)],
    )?;
    c.execute(
        "UPDATE api_keys SET name = ?3 WHERE tenant_id = ?1 AND id = ?2",
        params![tenant_id, key_id, rotated_name(&name, now)],
    )?;
    let r = KeyRotation {
        key_id: key_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        replaced_by: new.id.clone(),
        rotated_at: now,
        expires_at,
    };
    c.execute(
        &format!("INSERT INTO api_key_rotations ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            r.key_id,
            r.tenant_id,
            r.replaced_by,
            to_millis(r.rotated_at),
            to_millis(r.expires_at)
        ],
    )?;
    Ok(r)
}

pub(super) fn get(c: &Connection, key_id: &str) -> Result<Option<KeyRotation>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLS} FROM api_key_rotations WHERE key_id = ?1"
    ))?
    .query_row([key_id], row)
    .optional()?)
}

pub(super) fn list(c: &Connection, tenant_id: &str) -> Result<Vec<KeyRotation>, StoreError> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {COLS} FROM api_key_rotations WHERE tenant_id = ?1 ORDER BY rotated_at"
        ))?
        .query_map([tenant_id], row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
