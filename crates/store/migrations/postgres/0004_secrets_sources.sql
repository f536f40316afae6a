-- Named secrets (encrypted), signed sources, delivery-id deduplication, incidents, commit times.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE secrets (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    previous_nonce BYTEA,
    previous_ciphertext BYTEA,
    previous_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE sources (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_name TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX sources_tenant ON sources(tenant_id);

ALTER TABLE events ADD COLUMN dedupe_key TEXT;
ALTER TABLE events ADD COLUMN source_id TEXT;
CREATE UNIQUE INDEX events_dedupe ON events(tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;

CREATE TABLE incidents (
    tenant_id TEXT NOT NULL,
    source TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    service TEXT,
    environment TEXT,
    detected_at BIGINT,
    resolved_at BIGINT,
    description TEXT,
    url TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, source, incident_id)
);

CREATE TABLE commit_times (
    tenant_id TEXT NOT NULL,
    sha TEXT NOT NULL,
    committed_at BIGINT NOT NULL,
    repo TEXT,
    PRIMARY KEY (tenant_id, sha)
);
