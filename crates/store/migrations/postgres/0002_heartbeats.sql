-- Heartbeats of CI/CD instances (Jenkins Job Reporter) and their reported versions.
ALTER TABLE instances ADD COLUMN last_heartbeat_at BIGINT;
ALTER TABLE instances ADD COLUMN details TEXT;
