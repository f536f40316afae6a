//! Satellites and their heartbeats on SQLite.

use cistern_core::{from_millis, to_millis};
use rusqlite::{params, Connection};

use crate::*;

pub(super) fn put_heartbeat(
    c: &Connection,
    tenant_id: &str,
    hb: &SatelliteHeartbeat,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO satellites (tenant_id, id, version, config_hash, first_seen_at, last_heartbeat_at, sent_at,
           interval_seconds, spool_depth, last_forward_at, last_error, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (tenant_id, id) DO UPDATE SET version = excluded.version, config_hash = excluded.config_hash,
           last_heartbeat_at = excluded.last_heartbeat_at, sent_at = excluded.sent_at,
           interval_seconds = excluded.interval_seconds, spool_depth = excluded.spool_depth,
           last_forward_at = excluded.last_forward_at, last_error = excluded.last_error, details = excluded.details",
        params![
            tenant_id,
            hb.satellite_id,
            hb.version,
            hb.config_hash,
            to_millis(hb.received_at),
            to_millis(hb.sent_at),
            hb.interval_seconds,
            hb.spool_depth,
            hb.last_forward_at.map(to_millis),
            hb.last_error,
            hb.details.to_string(),
        ],
    )?;
    Ok(())
}

pub(super) fn list(c: &Connection, tenant_id: &str) -> Result<Vec<SatelliteInfo>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT id, version, config_hash, first_seen_at, last_heartbeat_at, sent_at, interval_seconds, spool_depth,
           last_forward_at, last_error, details FROM satellites WHERE tenant_id = ?1 ORDER BY id",
    )?;
    let rows = st
        .query_map([tenant_id], |r| {
            let details: String = r.get(10)?;
            Ok(SatelliteInfo {
                first_seen_at: from_millis(r.get(3)?),
                heartbeat: SatelliteHeartbeat {
                    satellite_id: r.get(0)?,
                    version: r.get(1)?,
                    config_hash: r.get(2)?,
                    received_at: from_millis(r.get(4)?),
                    sent_at: from_millis(r.get(5)?),
                    interval_seconds: r.get(6)?,
                    spool_depth: r.get(7)?,
                    last_forward_at: r.get::<_, Option<i64>>(8)?.map(from_millis),
                    last_error: r.get(9)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                },
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
