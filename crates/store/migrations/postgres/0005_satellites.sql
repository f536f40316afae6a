-- Satellites (on-premise relays) and their last heartbeat, one row per tenant and satellite id.
CREATE TABLE satellites (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    config_hash TEXT,
    first_seen_at BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    sent_at BIGINT NOT NULL,
    interval_seconds BIGINT NOT NULL,
    spool_depth BIGINT NOT NULL DEFAULT 0,
    last_forward_at BIGINT,
    last_error TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id)
);
