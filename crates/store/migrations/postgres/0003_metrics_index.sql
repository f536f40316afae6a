-- Deployments by finish time, for the DORA metrics.
CREATE INDEX runs_tenant_cd_finished ON runs(tenant_id, cd, finished_at);
