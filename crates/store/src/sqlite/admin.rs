//! Secrets, sources, settings and incidents on SQLite.

use cistern_core::{from_millis, to_millis};
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use crate::*;

pub(super) fn meta_get(c: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub(super) fn meta_init(c: &Connection, key: &str, value: &str) -> Result<String, StoreError> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        params![key, value],
    )?;
    meta_get(c, key)?.ok_or_else(|| StoreError::Backend("setting vanished".into()))
}

pub(super) fn put_secret(
    c: &Connection,
    tenant_id: &str,
    name: &str,
    nonce: &[u8],
    ct: &[u8],
    grace_until: OffsetDateTime,
) -> Result<bool, StoreError> {
    let now = to_millis(OffsetDateTime::now_utc());
    let n = c.execute(
        "UPDATE secrets SET previous_nonce = nonce, previous_ciphertext = ciphertext, previous_until = ?5,
           nonce = ?3, ciphertext = ?4, updated_at = ?6 WHERE tenant_id = ?1 AND name = ?2",
        params![tenant_id, name, nonce, ct, to_millis(grace_until), now],
    )?;
    if n > 0 {
        return Ok(false);
    }
    c.execute(
        "INSERT INTO secrets (tenant_id, name, nonce, ciphertext, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![tenant_id, name, nonce, ct, now],
    )?;
    Ok(true)
}

pub(super) fn get_secret(
    c: &Connection,
    tenant_id: &str,
    name: &str,
) -> Result<Option<StoredSecret>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT nonce, ciphertext, previous_nonce, previous_ciphertext, previous_until, created_at, updated_at
         FROM secrets WHERE tenant_id = ?1 AND name = ?2",
    )?
    .query_row(params![tenant_id, name], |r| {
        let prev: (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>) = (r.get(2)?, r.get(3)?, r.get(4)?);
        Ok(StoredSecret {
            nonce: r.get(0)?,
            ciphertext: r.get(1)?,
            previous: match prev {
                (Some(n), Some(ct), Some(until)) => Some((n, ct, from_millis(until))),
                _ => None,
            },
            created_at: from_millis(r.get(5)?),
            updated_at: from_millis(r.get(6)?),
        })
    })
    .optional()?)
}

pub(super) fn list_secrets(c: &Connection, tenant_id: &str) -> Result<Vec<SecretInfo>, StoreError> {
    let now = to_millis(OffsetDateTime::now_utc());
    let mut st = c.prepare_cached("SELECT name, created_at, updated_at, previous_until FROM secrets WHERE tenant_id = ?1 ORDER BY name")?;
    let rows = st
        .query_map([tenant_id], |r| {
            Ok(SecretInfo {
                name: r.get(0)?,
                created_at: from_millis(r.get(1)?),
                updated_at: from_millis(r.get(2)?),
                previous_valid_until: r
                    .get::<_, Option<i64>>(3)?
                    .filter(|u| *u > now)
                    .map(from_millis),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn delete_secret(
    c: &Connection,
    tenant_id: &str,
    name: &str,
) -> Result<bool, StoreError> {
    Ok(c.execute(
        "DELETE FROM secrets WHERE tenant_id = ?1 AND name = ?2",
        params![tenant_id, name],
    )? > 0)
}

fn source_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Source> {
    Ok(Source {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        secret_name: r.get(4)?,
        created_at: from_millis(r.get(5)?),
    })
}

pub(super) fn create_source(c: &Connection, s: &Source) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO sources (id, tenant_id, kind, name, secret_name, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![s.id, s.tenant_id, s.kind, s.name, s.secret_name, to_millis(s.created_at)],
    )?;
    Ok(())
}

pub(super) fn source_by_id(c: &Connection, id: &str) -> Result<Option<Source>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id, tenant_id, kind, name, secret_name, created_at FROM sources WHERE id = ?1",
    )?
    .query_row([id], source_row)
    .optional()?)
}

pub(super) fn list_sources(c: &Connection, tenant_id: &str) -> Result<Vec<Source>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT id, tenant_id, kind, name, secret_name, created_at FROM sources WHERE tenant_id = ?1 ORDER BY created_at, id",
    )?;
    let rows = st
        .query_map([tenant_id], source_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn delete_source(c: &Connection, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
    Ok(c.execute(
        "DELETE FROM sources WHERE tenant_id = ?1 AND id = ?2",
        params![tenant_id, id],
    )? > 0)
}

pub(super) fn incidents(
    c: &Connection,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<cistern_core::metrics::Incident>, StoreError> {
    let from = to_millis(crate::metrics_sql::history_start(since));
    let mut st = c.prepare_cached(
        "SELECT service, environment, detected_at, resolved_at FROM incidents
         WHERE tenant_id = ?1 AND COALESCE(detected_at, resolved_at) >= ?2 AND COALESCE(detected_at, resolved_at) < ?3
           AND (?4 IS NULL OR environment = ?4)",
    )?;
    let rows = st
        .query_map(
            params![tenant_id, from, to_millis(until), f.environment],
            |r| {
                let detected: Option<i64> = r.get(2)?;
                let resolved: Option<i64> = r.get(3)?;
                Ok(cistern_core::metrics::Incident {
                    pipeline: r.get(0)?,
                    environment: r.get(1)?,
                    detected_at: from_millis(detected.or(resolved).unwrap_or_default()),
                    resolved_at: resolved.map(from_millis),
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
