-- Day rollups of CI health (see crates/store/src/rollups.rs): one compact row per tenant,
-- pipeline and closed UTC day, built from the runs; days a late write changed are marked dirty
-- by the triggers below and read from the runs until rebuilt. The backfill of existing runs is
-- done by sealing, from the tenant's first run, at startup and on the first metrics read.
CREATE TABLE ci_days (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    pipeline_id TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tenant_id, day, pipeline_id)
) WITHOUT ROWID;

CREATE TABLE ci_days_dirty (
    tenant_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    pipeline_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, day, pipeline_id)
) WITHOUT ROWID;

-- Days before `sealed_until` have their rows in ci_days (or are marked dirty).
CREATE TABLE rollup_state (
    tenant_id TEXT PRIMARY KEY,
    sealed_until INTEGER NOT NULL
);

-- Commits by a small id, so a rollup row holds an integer per run instead of a sha.
CREATE TABLE commit_ids (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    sha TEXT NOT NULL,
    UNIQUE (tenant_id, sha)
);

-- A write to a day ending within the hour marks it (old and new day of the run). Live days are
-- left alone: they are read from the runs and sealed only two hours after they end.
CREATE TRIGGER runs_ci_days_insert AFTER INSERT ON runs
WHEN (NEW.started_at - ((NEW.started_at % 86400000) + 86400000) % 86400000) + 86400000
     <= CAST(unixepoch('subsec') * 1000 AS INTEGER) + 3600000
BEGIN
    INSERT OR IGNORE INTO ci_days_dirty (tenant_id, day, pipeline_id)
    VALUES (NEW.tenant_id, (NEW.started_at - ((NEW.started_at % 86400000) + 86400000) % 86400000) / 86400000, NEW.pipeline_id);
END;

CREATE TRIGGER runs_ci_days_update_old AFTER UPDATE ON runs
WHEN (OLD.started_at - ((OLD.started_at % 86400000) + 86400000) % 86400000) + 86400000
     <= CAST(unixepoch('subsec') * 1000 AS INTEGER) + 3600000
BEGIN
    INSERT OR IGNORE INTO ci_days_dirty (tenant_id, day, pipeline_id)
    VALUES (OLD.tenant_id, (OLD.started_at - ((OLD.started_at % 86400000) + 86400000) % 86400000) / 86400000, OLD.pipeline_id);
END;

CREATE TRIGGER runs_ci_days_update_new AFTER UPDATE ON runs
WHEN (NEW.started_at - ((NEW.started_at % 86400000) + 86400000) % 86400000) + 86400000
     <= CAST(unixepoch('subsec') * 1000 AS INTEGER) + 3600000
BEGIN
    INSERT OR IGNORE INTO ci_days_dirty (tenant_id, day, pipeline_id)
    VALUES (NEW.tenant_id, (NEW.started_at - ((NEW.started_at % 86400000) + 86400000) % 86400000) / 86400000, NEW.pipeline_id);
END;

CREATE TRIGGER runs_ci_days_delete AFTER DELETE ON runs
WHEN (OLD.started_at - ((OLD.started_at % 86400000) + 86400000) % 86400000) + 86400000
     <= CAST(unixepoch('subsec') * 1000 AS INTEGER) + 3600000
BEGIN
    INSERT OR IGNORE INTO ci_days_dirty (tenant_id, day, pipeline_id)
    VALUES (OLD.tenant_id, (OLD.started_at - ((OLD.started_at % 86400000) + 86400000) % 86400000) / 86400000, OLD.pipeline_id);
END;
