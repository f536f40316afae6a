-- Key rotation: a rotated key keeps working until expires_at (its grace), then is refused with
-- a 401 that says it was rotated. Its replacement is a new row of api_keys. A table of its own
-- so that the keys table and its readers stay as they are.
CREATE TABLE api_key_rotations (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    replaced_by TEXT NOT NULL,
    rotated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX api_key_rotations_tenant ON api_key_rotations(tenant_id);
