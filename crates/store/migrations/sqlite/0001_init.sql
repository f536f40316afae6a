-- Cistern schema, SQLite. Times are integer milliseconds since the Unix epoch (UTC).
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    strict INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    guid TEXT NOT NULL,
    name TEXT,
    url TEXT,
    kind TEXT,
    integration_id TEXT,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER,
    UNIQUE (tenant_id, guid)
);

CREATE TABLE pipelines (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    instance_id TEXT NOT NULL REFERENCES instances(id),
    full_name TEXT NOT NULL,
    name TEXT NOT NULL,
    qualified_name TEXT,
    project TEXT,
    module TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, instance_id, full_name)
);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    pipeline_id TEXT NOT NULL REFERENCES pipelines(id),
    instance_id TEXT NOT NULL REFERENCES instances(id),
    run_key TEXT NOT NULL,
    build_number INTEGER,
    execution_id TEXT,
    result TEXT NOT NULL,
    source_result TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    duration_ms INTEGER,
    triggered_by TEXT,
    branch TEXT,
    repo_url TEXT,
    ci INTEGER NOT NULL,
    cd INTEGER NOT NULL,
    environment TEXT,
    cfr_status INTEGER,
    web_url TEXT,
    job_type TEXT,
    source TEXT NOT NULL,
    event_id TEXT,
    detail TEXT NOT NULL,
    log TEXT,
    log_truncated INTEGER NOT NULL DEFAULT 0,
    received_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, instance_id, pipeline_id, run_key)
);
CREATE INDEX runs_tenant_started ON runs(tenant_id, started_at DESC, id DESC);
CREATE INDEX runs_pipeline_started ON runs(pipeline_id, started_at DESC);

CREATE TABLE stages (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    parent_idx INTEGER,
    name TEXT NOT NULL,
    description TEXT,
    result TEXT,
    source_result TEXT,
    state TEXT,
    started_at INTEGER,
    duration_ms INTEGER,
    log TEXT,
    log_truncated INTEGER NOT NULL DEFAULT 0,
    url TEXT,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;

CREATE TABLE run_commits (
    run_id TEXT NOT NULL,
    sha TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    committed_at INTEGER,
    PRIMARY KEY (run_id, sha)
) WITHOUT ROWID;
CREATE INDEX run_commits_sha ON run_commits(tenant_id, sha);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    received_at INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    dialect TEXT NOT NULL,
    request_type TEXT,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    errors TEXT,
    run_ids TEXT,
    content_type TEXT,
    body BLOB,
    body_size INTEGER NOT NULL,
    body_truncated INTEGER NOT NULL DEFAULT 0,
    key_id TEXT
);
CREATE INDEX events_tenant_received ON events(tenant_id, received_at DESC, id DESC);
