//! Dashboard sessions on SQLite. Writes run on the writer thread; reads on the read pool.

use cistern_core::{from_millis, to_millis};
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use crate::sessions::DashboardSession;
use crate::StoreError;

pub(super) fn create(c: &Connection, s: &DashboardSession) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO dashboard_sessions (id_hash, key_id, key_hash, tenant_id, created_at, last_seen_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        s.id_hash,
        s.key_id,
        s.key_hash,
        s.tenant_id,
        to_millis(s.created_at),
        to_millis(s.last_seen_at),
        to_millis(s.expires_at),
    ])?;
    Ok(())
}

pub(super) fn by_hash(
    c: &Connection,
    id_hash: &str,
) -> Result<Option<DashboardSession>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id_hash, key_id, key_hash, tenant_id, created_at, last_seen_at, expires_at
             FROM dashboard_sessions WHERE id_hash = ?1",
    )?
    .query_row([id_hash], |r| {
        Ok(DashboardSession {
            id_hash: r.get(0)?,
            key_id: r.get(1)?,
            key_hash: r.get(2)?,
            tenant_id: r.get(3)?,
            created_at: from_millis(r.get(4)?),
            last_seen_at: from_millis(r.get(5)?),
            expires_at: from_millis(r.get(6)?),
        })
    })
    .optional()?)
}

pub(super) fn touch(c: &Connection, id_hash: &str, at: OffsetDateTime) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE dashboard_sessions SET last_seen_at = MAX(last_seen_at, ?1) WHERE id_hash = ?2",
    )?
    .execute(params![to_millis(at), id_hash])?;
    Ok(())
}

pub(super) fn end(c: &Connection, id_hash: &str) -> Result<(), StoreError> {
    c.prepare_cached("DELETE FROM dashboard_sessions WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

pub(super) fn end_of_key(c: &Connection, key_id: &str) -> Result<u64, StoreError> {
    Ok(
        c.prepare_cached("DELETE FROM dashboard_sessions WHERE key_id = ?1")?
            .execute([key_id])? as u64,
    )
}
