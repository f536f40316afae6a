-- Triggers: a custom webhook (Harness-style identifiers) that fires a pipeline on the CI system
-- that runs it (Jenkins, GitHub, GitLab, any URL). Each call is a trigger event, which is also
-- its own outbox row: committed first, then leased, sent and retried by the delivery worker
-- (attempts are logged in delivery_attempts under the event's id).
CREATE TABLE triggers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    org_identifier TEXT NOT NULL,
    project_identifier TEXT NOT NULL,
    pipeline_identifier TEXT NOT NULL,
    identifier TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    allow_token INTEGER NOT NULL DEFAULT 0,
    token TEXT NOT NULL,
    preset TEXT,
    target TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX triggers_identity ON triggers(tenant_id, org_identifier, project_identifier, pipeline_identifier, identifier);

CREATE TABLE trigger_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    trigger_id TEXT,
    org_identifier TEXT NOT NULL,
    project_identifier TEXT NOT NULL,
    pipeline_identifier TEXT NOT NULL,
    trigger_identifier TEXT NOT NULL,
    state TEXT NOT NULL,
    refusal TEXT,
    message TEXT,
    payload TEXT NOT NULL,
    target TEXT,
    key_id TEXT,
    tries INTEGER NOT NULL DEFAULT 0,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    locked_until INTEGER,
    lock_token TEXT,
    last_attempt_at INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    dispatched_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX trigger_events_due ON trigger_events(next_attempt_at) WHERE state = 'pending';
CREATE INDEX trigger_events_tenant ON trigger_events(tenant_id, created_at DESC);
CREATE INDEX trigger_events_trigger ON trigger_events(trigger_id, created_at DESC);

-- The run a CI reported for an event (its execution_id, or a correlation_id parameter, was the
-- event's id). A table of its own rather than a column of trigger_events: run writers insert
-- here and never lock the rows the delivery worker updates. The first run linked stays linked.
CREATE TABLE trigger_links (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    linked_at INTEGER NOT NULL
) WITHOUT ROWID;
