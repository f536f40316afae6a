-- Outbound notifications: subscriptions, the transactional outbox (messages written in the same
-- transaction as the run or incident that causes them, one delivery per matching subscription)
-- and the attempt log.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret_name TEXT NOT NULL,
    format TEXT NOT NULL,
    events TEXT NOT NULL,
    only_failures INTEGER NOT NULL DEFAULT 0,
    pipeline_glob TEXT,
    branch_glob TEXT,
    project TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    disabled_at INTEGER,
    failing_since INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX subscriptions_tenant ON subscriptions(tenant_id);

CREATE TABLE outbound_messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    run_id TEXT,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    locked_until INTEGER,
    lock_token TEXT,
    created_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    delivered_at INTEGER
);
-- The worker's two questions: what is due per subscription, and how much is in flight.
CREATE INDEX deliveries_pending ON deliveries(subscription_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries(subscription_id) WHERE locked_until IS NOT NULL;
CREATE INDEX deliveries_subscription ON deliveries(subscription_id, id DESC);

CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    response_body TEXT,
    error TEXT,
    node TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;
