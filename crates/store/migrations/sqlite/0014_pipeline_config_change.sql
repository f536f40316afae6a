-- When the job behind a pipeline last had its configuration changed (the Jenkins Job Reporter's
-- JenkinsPluginJobConfigChange), epoch milliseconds.
ALTER TABLE pipelines ADD COLUMN config_changed_at INTEGER;
