-- When the job behind a pipeline last had its configuration changed (the Jenkins Job Reporter's
-- JenkinsPluginJobConfigChange), epoch milliseconds.
ALTER TABLE pipelines ADD COLUMN config_changed_at BIGINT;

-- A partial report of an unnamed pipeline (a GitHub workflow_job without workflow_name) finds
-- its run by key within its instance, whatever the pipeline.
CREATE INDEX runs_instance_key ON runs(tenant_id, instance_id, run_key);
