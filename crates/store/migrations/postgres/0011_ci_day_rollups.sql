-- Day rollups of CI health (see crates/store/src/rollups.rs): one compact row per tenant,
-- pipeline and closed UTC day, built from the runs; days a late write changed are marked dirty
-- by the trigger below and read from the runs until rebuilt. The backfill of existing runs is
-- done by sealing, from the tenant's first run, at startup and on the first metrics read.
CREATE TABLE ci_days (
    tenant_id TEXT COLLATE "C" NOT NULL,
    day BIGINT NOT NULL,
    pipeline_id TEXT COLLATE "C" NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, day, pipeline_id)
);

-- `n` is bumped (not just inserted) so a marking transaction holds the row until it commits: a
-- refresh deleting the mark waits for it, and then reads its runs.
CREATE TABLE ci_days_dirty (
    tenant_id TEXT COLLATE "C" NOT NULL,
    day BIGINT NOT NULL,
    pipeline_id TEXT COLLATE "C" NOT NULL,
    n BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, day, pipeline_id)
);

-- Days before `sealed_until` have their rows in ci_days (or are marked dirty).
CREATE TABLE rollup_state (
    tenant_id TEXT COLLATE "C" PRIMARY KEY,
    sealed_until BIGINT NOT NULL
);

-- Commits by a small id, so a rollup row holds an integer per run instead of a sha.
CREATE TABLE commit_ids (
    id BIGSERIAL PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL,
    sha TEXT COLLATE "C" NOT NULL,
    UNIQUE (tenant_id, sha)
);

-- A write to a day ending within the hour marks it (old and new day of the run). Live days are
-- left alone: they are read from the runs and sealed only two hours after they end.
CREATE FUNCTION cistern_mark_ci_day() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    horizon BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT + 3600000;
    d BIGINT;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        d := floor(OLD.started_at / 86400000.0)::BIGINT;
        IF (d + 1) * 86400000 <= horizon THEN
            INSERT INTO ci_days_dirty (tenant_id, day, pipeline_id) VALUES (OLD.tenant_id, d, OLD.pipeline_id)
            ON CONFLICT (tenant_id, day, pipeline_id) DO UPDATE SET n = ci_days_dirty.n + 1;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        d := floor(NEW.started_at / 86400000.0)::BIGINT;
        IF (d + 1) * 86400000 <= horizon THEN
            INSERT INTO ci_days_dirty (tenant_id, day, pipeline_id) VALUES (NEW.tenant_id, d, NEW.pipeline_id)
            ON CONFLICT (tenant_id, day, pipeline_id) DO UPDATE SET n = ci_days_dirty.n + 1;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_ci_days AFTER INSERT OR UPDATE OR DELETE ON runs
FOR EACH ROW EXECUTE FUNCTION cistern_mark_ci_day();
