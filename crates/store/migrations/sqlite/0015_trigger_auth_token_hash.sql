-- Triggers: a per-trigger choice of whether the webhook URL asks for an API key ('key', the
-- default, or 'none' as the seed's keyless curl), and the token of the token URL kept as its
-- SHA-256 only. SQLite has no SHA-256 function: the existing clear tokens are hashed by the
-- store right after this migration (rows whose token_hash is NULL), then cleared.
ALTER TABLE triggers ADD COLUMN auth TEXT NOT NULL DEFAULT 'key';
ALTER TABLE triggers ADD COLUMN token_hash TEXT;
