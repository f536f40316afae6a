-- Dashboard sessions: an opaque id (only its SHA-256 is kept) bound to the API key that signed
-- in, with an absolute expiry and the last time it was used (for the idle timeout).
CREATE TABLE dashboard_sessions (
    id_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_key ON dashboard_sessions(key_id);
