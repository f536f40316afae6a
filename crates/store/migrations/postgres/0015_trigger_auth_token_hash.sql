-- Triggers: a per-trigger choice of whether the webhook URL asks for an API key ('key', the
-- default, or 'none' as the seed's keyless curl), and the token of the token URL kept as its
-- SHA-256 only: existing clear tokens are hashed here and cleared.
ALTER TABLE triggers ADD COLUMN auth TEXT NOT NULL DEFAULT 'key';
ALTER TABLE triggers ADD COLUMN token_hash TEXT;
UPDATE triggers SET token_hash = encode(sha256(convert_to(token, 'UTF8')), 'hex'), token = '' WHERE token_hash IS NULL;
