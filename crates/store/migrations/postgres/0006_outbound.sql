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
    only_failures BOOLEAN NOT NULL DEFAULT FALSE,
    pipeline_glob TEXT,
    branch_glob TEXT,
    project TEXT,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason TEXT,
    disabled_at BIGINT,
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_tenant ON subscriptions(tenant_id);

CREATE TABLE outbound_messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    run_id TEXT,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    tries BIGINT NOT NULL DEFAULT 0,
    attempt_count BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    locked_until BIGINT,
    lock_token TEXT,
    created_at BIGINT NOT NULL,
    last_attempt_at BIGINT,
    last_status_code BIGINT,
    last_error TEXT,
    delivered_at BIGINT
);
-- The worker's two questions: what is due per subscription, and how much is in flight.
CREATE INDEX deliveries_pending ON deliveries(subscription_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries(subscription_id) WHERE locked_until IS NOT NULL;
CREATE INDEX deliveries_subscription ON deliveries(subscription_id, id DESC);

CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code BIGINT,
    response_body TEXT,
    error TEXT,
    node TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
