-- Satellites (on-premise relays) and their last heartbeat, one row per tenant and satellite id.
CREATE TABLE satellites (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    config_hash TEXT,
    first_seen_at INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    interval_seconds INTEGER NOT NULL,
    spool_depth INTEGER NOT NULL DEFAULT 0,
    last_forward_at INTEGER,
    last_error TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id)
);
