//! Satellites and their heartbeats on PostgreSQL.

use cistern_core::{from_millis, to_millis};
use sqlx::{PgPool, Row};

use crate::*;

pub(super) async fn put_heartbeat(
    pool: &PgPool,
    tenant_id: &str,
    hb: &SatelliteHeartbeat,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO satellites (tenant_id, id, version, config_hash, first_seen_at, last_heartbeat_at, sent_at,
           interval_seconds, spool_depth, last_forward_at, last_error, details)
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (tenant_id, id) DO UPDATE SET version = EXCLUDED.version, config_hash = EXCLUDED.config_hash,
           last_heartbeat_at = EXCLUDED.last_heartbeat_at, sent_at = EXCLUDED.sent_at,
           interval_seconds = EXCLUDED.interval_seconds, spool_depth = EXCLUDED.spool_depth,
           last_forward_at = EXCLUDED.last_forward_at, last_error = EXCLUDED.last_error, details = EXCLUDED.details",
    )
    .bind(tenant_id)
    .bind(&hb.satellite_id)
    .bind(&hb.version)
    .bind(&hb.config_hash)
    .bind(to_millis(hb.received_at))
    .bind(to_millis(hb.sent_at))
    .bind(hb.interval_seconds)
    .bind(hb.spool_depth)
    .bind(hb.last_forward_at.map(to_millis))
    .bind(&hb.last_error)
    .bind(hb.details.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list(pool: &PgPool, tenant_id: &str) -> Result<Vec<SatelliteInfo>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, version, config_hash, first_seen_at, last_heartbeat_at, sent_at, interval_seconds, spool_depth,
           last_forward_at, last_error, details FROM satellites WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let details: String = r.try_get(10)?;
            Ok(SatelliteInfo {
                first_seen_at: from_millis(r.try_get(3)?),
                heartbeat: SatelliteHeartbeat {
                    satellite_id: r.try_get(0)?,
                    version: r.try_get(1)?,
                    config_hash: r.try_get(2)?,
                    received_at: from_millis(r.try_get(4)?),
                    sent_at: from_millis(r.try_get(5)?),
                    interval_seconds: r.try_get(6)?,
                    spool_depth: r.try_get(7)?,
                    last_forward_at: r.try_get::<Option<i64>, _>(8)?.map(from_millis),
                    last_error: r.try_get(9)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                },
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::from)
}
