//! How a new report of a run combines with the stored one. Shared by both backends so they agree.
//!
//! - A run's state only moves forward: queued → running/on hold → finished. A report older in
//!   that order (a late `started` event after `finished`) never moves the run back; its other
//!   fields still apply.
//! - A partial report (one GitHub job, one GitLab job, a start event) is merged: its present
//!   fields win, absent ones keep the stored value, stages and steps are matched by name.

use cistern_core::{Commit, Run, RunReport, RunResult, Stage};

/// What a writer reads of a stored run before updating it: id, result, the sender's word,
/// finished_at (ms), duration (ms).
pub type StoredState = (String, String, String, Option<i64>, Option<i64>);

/// How far along a result is.
pub fn rank(r: RunResult) -> u8 {
    match r {
        RunResult::Queued => 0,
        RunResult::Running | RunResult::OnHold => 1,
        _ => 2,
    }
}

/// The stored run as a report (to merge into).
pub fn report_of(run: Run) -> RunReport {
    RunReport {
        instance: cistern_core::InstanceRef {
            guid: run.instance.guid,
            name: run.instance.name,
            url: run.instance.url,
            kind: run.instance.kind,
        },
        pipeline: cistern_core::PipelineRef {
            full_name: run.pipeline.full_name,
            name: run.pipeline.name,
            qualified_name: run.pipeline.qualified_name,
            project: run.pipeline.project,
            module: run.pipeline.module,
        },
        run_key: run.run_key,
        build_number: run.build_number,
        execution_id: run.execution_id,
        result: run.result,
        source_result: run.source_result,
        started_at: run.started_at,
        finished_at: run.finished_at,
        duration_ms: run.duration_ms,
        triggered_by: run.triggered_by,
        branch: run.branch,
        repo_url: run.repo_url,
        repo: run.repo,
        commits: run.commits,
        ci: run.ci,
        cd: run.cd,
        environment: run.environment,
        cfr_status: run.cfr_status,
        params: run.params,
        artifacts: run.artifacts,
        trigger_chain: run.trigger_chain,
        themes: run.themes,
        web_url: run.web_url,
        job_type: run.job_type,
        custom_fields: run.custom_fields,
        stages: run.stages,
        log: run.log.map(|text| cistern_core::LogText {
            text,
            truncated: run.log_truncated,
        }),
        source: run.source,
        partial: false,
    }
}

/// Keeps a finished run finished when a report of an earlier state arrives late.
pub fn keep_state(
    stored: RunResult,
    stored_source: &str,
    stored_end: Option<time::OffsetDateTime>,
    stored_duration: Option<i64>,
    incoming: &mut RunReport,
) {
    if rank(incoming.result) < rank(stored) {
        incoming.result = stored;
        incoming.source_result = stored_source.to_owned();
        incoming.finished_at = stored_end;
        incoming.duration_ms = stored_duration;
    }
}

fn non_empty<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    if a.is_empty() {
        b
    } else {
        a
    }
}

/// Merges a partial report into the stored run.
pub fn merge(stored: RunReport, mut new: RunReport) -> RunReport {
    let forward = rank(new.result) >= rank(stored.result);
    let mut commits: Vec<Commit> = stored.commits;
    for c in new.commits.drain(..) {
        match commits.iter_mut().find(|x| x.sha == c.sha) {
            Some(x) => x.committed_at = x.committed_at.or(c.committed_at),
            None => commits.push(c),
        }
    }
    let mut stages = stored.stages;
    for s in new.stages.drain(..) {
        match stages.iter_mut().find(|x| x.name == s.name) {
            Some(x) => merge_stage(x, s),
            None => stages.push(s),
        }
    }
    RunReport {
        instance: cistern_core::InstanceRef {
            guid: stored.instance.guid,
            name: new.instance.name.or(stored.instance.name),
            url: new.instance.url.or(stored.instance.url),
            kind: new.instance.kind.or(stored.instance.kind),
        },
        pipeline: cistern_core::PipelineRef {
            full_name: stored.pipeline.full_name,
            name: if new.pipeline.name.is_empty() {
                stored.pipeline.name
            } else {
                new.pipeline.name
            },
            qualified_name: new
                .pipeline
                .qualified_name
                .or(stored.pipeline.qualified_name),
            project: new.pipeline.project.or(stored.pipeline.project),
            module: new.pipeline.module.or(stored.pipeline.module),
        },
        run_key: stored.run_key,
        build_number: new.build_number.or(stored.build_number),
        execution_id: new.execution_id.or(stored.execution_id),
        result: if forward { new.result } else { stored.result },
        source_result: if forward {
            new.source_result
        } else {
            stored.source_result
        },
        started_at: stored.started_at.min(new.started_at),
        finished_at: if forward {
            new.finished_at.or(stored.finished_at)
        } else {
            stored.finished_at
        },
        duration_ms: if forward {
            new.duration_ms.or(stored.duration_ms)
        } else {
            stored.duration_ms
        },
        triggered_by: new.triggered_by.or(stored.triggered_by),
        branch: new.branch.or(stored.branch),
        repo_url: new.repo_url.or(stored.repo_url),
        repo: new.repo.or(stored.repo),
        commits,
        ci: stored.ci || new.ci,
        cd: stored.cd || new.cd,
        environment: new.environment.or(stored.environment),
        cfr_status: new.cfr_status.or(stored.cfr_status),
        params: non_empty(new.params, stored.params),
        artifacts: non_empty(new.artifacts, stored.artifacts),
        trigger_chain: non_empty(new.trigger_chain, stored.trigger_chain),
        themes: non_empty(new.themes, stored.themes),
        web_url: new.web_url.or(stored.web_url),
        job_type: new.job_type.or(stored.job_type),
        custom_fields: non_empty(new.custom_fields, stored.custom_fields),
        stages,
        log: new.log.or(stored.log),
        source: stored.source,
        partial: false,
    }
}

fn merge_stage(stored: &mut Stage, new: Stage) {
    let forward = match (stored.result, new.result) {
        (Some(s), Some(n)) => rank(n) >= rank(s),
        (_, Some(_)) => true,
        _ => false,
    };
    if forward {
        stored.result = new.result;
        stored.source_result = new.source_result.or(stored.source_result.take());
        stored.duration_ms = new.duration_ms.or(stored.duration_ms);
    }
    stored.description = new.description.or(stored.description.take());
    stored.state = new.state.or(stored.state.take());
    stored.started_at = match (stored.started_at, new.started_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if new.log.is_some() {
        stored.log = new.log;
        stored.log_truncated = new.log_truncated;
    }
    stored.url = new.url.or(stored.url.take());
    for step in new.steps {
        match stored.steps.iter_mut().find(|x| x.name == step.name) {
            Some(x) => merge_stage(x, step),
            None => stored.steps.push(step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(result: RunResult, stages: Vec<Stage>) -> RunReport {
        RunReport {
            instance: Default::default(),
            pipeline: Default::default(),
            run_key: "1".into(),
            build_number: None,
            execution_id: None,
            result,
            source_result: result.as_str().into(),
            started_at: cistern_core::from_millis(1_700_000_000_000),
            finished_at: None,
            duration_ms: None,
            triggered_by: None,
            branch: None,
            repo_url: None,
            repo: None,
            commits: vec![],
            ci: true,
            cd: false,
            environment: None,
            cfr_status: None,
            params: vec![],
            artifacts: vec![],
            trigger_chain: vec![],
            themes: vec![],
            web_url: None,
            job_type: None,
            custom_fields: vec![],
            stages,
            log: None,
            source: "github".into(),
            partial: true,
        }
    }

    fn stage(name: &str, result: RunResult, steps: &[&str]) -> Stage {
        Stage {
            name: name.into(),
            result: Some(result),
            steps: steps
                .iter()
                .map(|s| Stage {
                    name: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn jobs_accumulate_and_state_never_moves_back() {
        let finished = report(
            RunResult::Success,
            vec![stage("build", RunResult::Success, &["a"])],
        );
        let late_job = report(
            RunResult::Running,
            vec![stage("test", RunResult::Running, &["t1"])],
        );
        let merged = merge(finished, late_job);
        assert_eq!(
            merged.result,
            RunResult::Success,
            "a job event does not reopen the run"
        );
        assert_eq!(merged.stages.len(), 2);
        let again = merge(
            merged,
            report(
                RunResult::Running,
                vec![stage("test", RunResult::Success, &["t2"])],
            ),
        );
        let test = again.stages.iter().find(|s| s.name == "test").unwrap();
        assert_eq!(test.result, Some(RunResult::Success));
        assert_eq!(test.steps.len(), 2, "steps merge by name");
        let mut late = report(RunResult::Queued, vec![]);
        keep_state(RunResult::Success, "success", None, Some(5), &mut late);
        assert_eq!(
            (late.result, late.duration_ms),
            (RunResult::Success, Some(5))
        );
    }
}
