-- Named secrets (encrypted), signed sources, delivery-id deduplication, incidents, commit times.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE secrets (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    previous_nonce BLOB,
    previous_ciphertext BLOB,
    previous_until INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE sources (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_name TEXT,
    created_at INTEGER NOT NULL
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
    detected_at INTEGER,
    resolved_at INTEGER,
    description TEXT,
    url TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source, incident_id)
);

CREATE TABLE commit_times (
    tenant_id TEXT NOT NULL,
    sha TEXT NOT NULL,
    committed_at INTEGER NOT NULL,
    repo TEXT,
    PRIMARY KEY (tenant_id, sha)
);
