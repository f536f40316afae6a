-- Cistern schema, PostgreSQL. Times are BIGINT milliseconds since the Unix epoch (UTC), like the
-- SQLite schema. Ids, slugs and names that are ordered or compared by range use the "C" collation,
-- so that ordering and cursors are byte-wise exactly as in SQLite whatever the database's locale.
CREATE TABLE tenants (
    id TEXT COLLATE "C" PRIMARY KEY,
    slug TEXT COLLATE "C" NOT NULL UNIQUE,
    strict BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE instances (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    guid TEXT NOT NULL,
    name TEXT,
    url TEXT,
    kind TEXT,
    integration_id TEXT,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT,
    UNIQUE (tenant_id, guid)
);

CREATE TABLE pipelines (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL,
    instance_id TEXT COLLATE "C" NOT NULL REFERENCES instances(id),
    full_name TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    qualified_name TEXT,
    project TEXT,
    module TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, instance_id, full_name)
);

CREATE TABLE runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL,
    pipeline_id TEXT COLLATE "C" NOT NULL REFERENCES pipelines(id),
    instance_id TEXT COLLATE "C" NOT NULL REFERENCES instances(id),
    run_key TEXT NOT NULL,
    build_number BIGINT,
    execution_id TEXT,
    result TEXT NOT NULL,
    source_result TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    duration_ms BIGINT,
    triggered_by TEXT,
    branch TEXT,
    repo_url TEXT,
    ci BOOLEAN NOT NULL,
    cd BOOLEAN NOT NULL,
    environment TEXT,
    cfr_status BOOLEAN,
    web_url TEXT,
    job_type TEXT,
    source TEXT NOT NULL,
    event_id TEXT COLLATE "C",
    detail TEXT NOT NULL,
    log TEXT,
    log_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    received_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, instance_id, pipeline_id, run_key)
);
CREATE INDEX runs_tenant_started ON runs(tenant_id, started_at DESC, id DESC);
CREATE INDEX runs_pipeline_started ON runs(pipeline_id, started_at DESC);

CREATE TABLE stages (
    run_id TEXT COLLATE "C" NOT NULL,
    idx BIGINT NOT NULL,
    parent_idx BIGINT,
    name TEXT NOT NULL,
    description TEXT,
    result TEXT,
    source_result TEXT,
    state TEXT,
    started_at BIGINT,
    duration_ms BIGINT,
    log TEXT,
    log_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    url TEXT,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE run_commits (
    run_id TEXT COLLATE "C" NOT NULL,
    sha TEXT NOT NULL,
    tenant_id TEXT COLLATE "C" NOT NULL,
    committed_at BIGINT,
    PRIMARY KEY (run_id, sha)
);
CREATE INDEX run_commits_sha ON run_commits(tenant_id, sha);

CREATE TABLE events (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT COLLATE "C",
    received_at BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    dialect TEXT NOT NULL,
    request_type TEXT,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    errors TEXT,
    run_ids TEXT,
    content_type TEXT,
    body BYTEA,
    body_size BIGINT NOT NULL,
    body_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    key_id TEXT
);
CREATE INDEX events_tenant_received ON events(tenant_id, received_at DESC, id DESC);
