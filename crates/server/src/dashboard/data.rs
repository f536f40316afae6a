//! What the pages show, gathered from the store and summarized with the metrics module's own
//! functions (so a success rate here is the CI API's success rate).

use std::collections::BTreeMap;

use cistern_core::metrics::{ci_health, CiRun};
use cistern_core::{Run, RunResult, Stage};
use cistern_store::{PageRequest, PipelineSummary, StoreError};
use time::OffsetDateTime;

use super::filters::Filters;
use crate::AppState;

/// A pipeline's health over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineHealth {
    /// Runs started in the window.
    pub runs: u64,
    /// Success rate (the CI API's definition).
    pub success_rate: Option<f64>,
    /// Median duration, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile duration, ms.
    pub p95_ms: Option<f64>,
}

/// Health per pipeline full name.
pub fn health_by_pipeline(
    runs: &[CiRun],
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> BTreeMap<String, PipelineHealth> {
    let mut groups: BTreeMap<String, Vec<CiRun>> = BTreeMap::new();
    for r in runs {
        groups
            .entry(r.pipeline.clone())
            .or_default()
            .push(r.clone());
    }
    groups
        .into_iter()
        .map(|(name, rs)| {
            let h = ci_health(&rs, &[], since, until);
            (
                name,
                PipelineHealth {
                    runs: h.runs,
                    success_rate: h.success_rate,
                    p50_ms: h.duration_p50_ms,
                    p95_ms: h.duration_p95_ms,
                },
            )
        })
        .collect()
}

/// A pipeline whose latest run failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failing {
    /// Pipeline full name.
    pub pipeline: String,
    /// Result of the latest run.
    pub result: RunResult,
    /// Failed runs in a row, up to the latest.
    pub streak: usize,
    /// Start of the first run of the streak.
    pub since: OffsetDateTime,
    /// Start of the latest run.
    pub last_at: OffsetDateTime,
}

/// Pipelines whose latest run (in the slice) failed or errored, longest-broken first.
pub fn failing_now(runs: &[CiRun]) -> Vec<Failing> {
    let mut by: BTreeMap<&str, Vec<&CiRun>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.result.is_finished()) {
        by.entry(r.pipeline.as_str()).or_default().push(r);
    }
    let mut out: Vec<Failing> = by
        .into_iter()
        .filter_map(|(name, mut rs)| {
            rs.sort_by_key(|r| r.started_at);
            let last = *rs.last()?;
            if !last.result.is_failed() {
                return None;
            }
            let streak: Vec<&&CiRun> = rs
                .iter()
                .rev()
                .take_while(|r| r.result.is_failed())
                .collect();
            Some(Failing {
                pipeline: name.to_owned(),
                result: last.result,
                streak: streak.len(),
                since: streak
                    .last()
                    .map(|r| r.started_at)
                    .unwrap_or(last.started_at),
                last_at: last.started_at,
            })
        })
        .collect();
    out.sort_by(|a, b| a.since.cmp(&b.since).then(a.pipeline.cmp(&b.pipeline)));
    out
}

/// The newest runs of the slice, at most `limit`. The store filters pipeline, branch and window;
/// project and environment are checked here, over at most a few pages.
pub async fn latest_runs(
    state: &AppState,
    tenant_id: &str,
    f: &Filters,
    limit: usize,
) -> Result<Vec<Run>, StoreError> {
    let filter = f.run_filter();
    let narrow = f.project.is_some() || f.environment.is_some();
    let mut page = PageRequest {
        limit: if narrow { 200 } else { limit },
        cursor: None,
    };
    let mut out = Vec::new();
    for _ in 0..10 {
        let found = state.store.list_runs(tenant_id, &filter, &page).await?;
        out.extend(found.items.into_iter().filter(|r| f.keeps(r)));
        if out.len() >= limit || found.next_cursor.is_none() {
            break;
        }
        page.cursor = found.next_cursor;
    }
    out.truncate(limit);
    Ok(out)
}

/// The runs of one pipeline in the window (newest first), at most `limit`.
pub async fn pipeline_runs(
    state: &AppState,
    tenant_id: &str,
    pipeline_id: &str,
    full_name: &str,
    f: &Filters,
    limit: usize,
) -> Result<Vec<Run>, StoreError> {
    let mut filter = f.run_filter();
    filter.pipeline = Some(full_name.to_owned());
    let mut page = PageRequest {
        limit: 500,
        cursor: None,
    };
    let mut out = Vec::new();
    loop {
        let found = state.store.list_runs(tenant_id, &filter, &page).await?;
        out.extend(
            found
                .items
                .into_iter()
                .filter(|r| r.pipeline.id == pipeline_id && f.keeps(r)),
        );
        if out.len() >= limit || found.next_cursor.is_none() {
            break;
        }
        page.cursor = found.next_cursor;
    }
    out.truncate(limit);
    Ok(out)
}

/// The choices of the filter form.
#[derive(Debug, Clone, Default)]
pub struct FilterOptions {
    /// Projects.
    pub projects: Vec<String>,
    /// Pipeline full names (of the chosen project).
    pub pipelines: Vec<String>,
    /// Environments seen lately.
    pub environments: Vec<String>,
}

/// Projects and pipelines from the catalogue; environments from the latest few hundred runs.
pub async fn filter_options(
    state: &AppState,
    tenant_id: &str,
    pipelines: &[PipelineSummary],
    f: &Filters,
) -> Result<FilterOptions, StoreError> {
    let mut projects: Vec<String> = pipelines.iter().filter_map(|p| p.project.clone()).collect();
    projects.sort();
    projects.dedup();
    let mut names: Vec<String> = pipelines
        .iter()
        .filter(|p| f.project.is_none() || p.project == f.project)
        .map(|p| p.full_name.clone())
        .collect();
    names.sort();
    names.dedup();
    let recent = state
        .store
        .list_runs(
            tenant_id,
            &cistern_store::RunFilter::default(),
            &PageRequest {
                limit: 300,
                cursor: None,
            },
        )
        .await?;
    let mut environments: Vec<String> = recent
        .items
        .into_iter()
        .filter_map(|r| r.environment)
        .collect();
    environments.sort();
    environments.dedup();
    Ok(FilterOptions {
        projects,
        pipelines: names,
        environments,
    })
}

/// One bar of a run's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Stage (0) or step (1).
    pub depth: u8,
    /// Name.
    pub name: String,
    /// Result.
    pub result: Option<RunResult>,
    /// Offset from the run's start, ms.
    pub offset_ms: i64,
    /// Length, ms.
    pub duration_ms: i64,
    /// Anchor of its section on the page.
    pub anchor: String,
    /// True when the start was not reported and was placed after the previous bar.
    pub estimated: bool,
}

/// The timeline of a run: its stages and their steps as bars on one time axis, and the axis's
/// length. Items without a start time are placed after the previous one.
pub fn timeline(run: &Run) -> (Vec<Bar>, i64) {
    let origin = run.started_at;
    let mut bars = Vec::new();
    let mut cursor = 0i64;
    let offset = |t: Option<OffsetDateTime>, fallback: i64| match t {
        Some(t) => ((t - origin).whole_milliseconds() as i64, false),
        None => (fallback, true),
    };
    for (i, stage) in run.stages.iter().enumerate() {
        let (start, estimated) = offset(stage.started_at, cursor);
        let dur = stage_duration(stage);
        bars.push(Bar {
            depth: 0,
            name: stage.name.clone(),
            result: stage.result,
            offset_ms: start.max(0),
            duration_ms: dur,
            anchor: format!("stage-{i}"),
            estimated,
        });
        let mut step_cursor = start.max(0);
        for (j, step) in stage.steps.iter().enumerate() {
            let (s, est) = offset(step.started_at, step_cursor);
            let d = step.duration_ms.unwrap_or(0).max(0);
            bars.push(Bar {
                depth: 1,
                name: step.name.clone(),
                result: step.result,
                offset_ms: s.max(0),
                duration_ms: d,
                anchor: format!("stage-{i}-step-{j}"),
                estimated: est,
            });
            step_cursor = s.max(0) + d;
        }
        cursor = cursor.max(start.max(0) + dur).max(step_cursor);
    }
    let end = bars
        .iter()
        .map(|b| b.offset_ms + b.duration_ms)
        .max()
        .unwrap_or(0)
        .max(run.duration_ms.unwrap_or(0))
        .max(1);
    (bars, end)
}

fn stage_duration(stage: &Stage) -> i64 {
    stage
        .duration_ms
        .unwrap_or_else(|| stage.steps.iter().filter_map(|s| s.duration_ms).sum())
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Duration;

    fn ci(p: &str, minutes: i64, result: RunResult, dur: i64) -> CiRun {
        CiRun {
            pipeline: p.into(),
            branch: Some("main".into()),
            result,
            started_at: datetime!(2024-06-01 0:00 UTC) + Duration::minutes(minutes),
            finished_at: None,
            duration_ms: Some(dur),
            commit: None,
        }
    }

    #[test]
    fn failing_pipelines_and_their_streaks() {
        use RunResult::*;
        let runs = vec![
            ci("a", 0, Success, 10),
            ci("a", 10, Failure, 10),
            ci("a", 20, Error, 10),
            ci("b", 0, Failure, 10),
            ci("b", 10, Success, 10),
            ci("c", 5, Failure, 10),
            ci("c", 30, Running, 10),
        ];
        let f = failing_now(&runs);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].pipeline, "c");
        assert_eq!(f[0].streak, 1);
        assert_eq!(f[1].pipeline, "a");
        assert_eq!(f[1].streak, 2);
        assert_eq!(f[1].result, Error);
        assert_eq!(f[1].since, datetime!(2024-06-01 0:10 UTC));
    }

    #[test]
    fn health_per_pipeline_uses_the_ci_definitions() {
        use RunResult::*;
        let since = datetime!(2024-05-01 0:00 UTC);
        let until = datetime!(2024-07-01 0:00 UTC);
        let runs = vec![
            ci("a", 0, Success, 100),
            ci("a", 1, Failure, 300),
            ci("a", 2, Aborted, 200),
            ci("b", 0, Success, 50),
        ];
        let h = health_by_pipeline(&runs, since, until);
        assert_eq!(h["a"].runs, 3);
        assert_eq!(
            h["a"].success_rate,
            Some(0.5),
            "aborted runs are not judged"
        );
        assert_eq!(h["a"].p50_ms, Some(200.0));
        assert_eq!(h["b"].success_rate, Some(1.0));
    }

    fn stage(name: &str, start: Option<i64>, dur: i64, steps: Vec<Stage>) -> Stage {
        Stage {
            name: name.into(),
            started_at: start.map(|s| datetime!(2024-06-01 0:00 UTC) + Duration::milliseconds(s)),
            duration_ms: Some(dur),
            steps,
            ..Stage::default()
        }
    }

    #[test]
    fn timeline_places_bars_to_scale() {
        let run: Run = serde_json::from_value(serde_json::json!({
            "id": "r", "pipeline": {"id": "p", "full_name": "p", "name": "p", "qualified_name": null, "project": null, "module": null},
            "instance": {"guid": "g", "name": null, "url": null, "kind": null},
            "run_key": "1", "build_number": 1, "execution_id": null, "result": "failure", "source_result": "FAILURE",
            "started_at": "2024-06-01T00:00:00Z", "finished_at": null, "duration_ms": 10000,
            "triggered_by": null, "branch": null, "repo_url": null, "repo": null, "commits": [], "ci": true, "cd": false,
            "environment": null, "cfr_status": null, "params": [], "artifacts": [], "trigger_chain": [], "themes": [],
            "web_url": null, "job_type": null, "custom_fields": [], "stages": [], "log": null, "log_truncated": false,
            "source": "sei", "event_id": null, "received_at": "2024-06-01T00:00:00Z", "updated_at": "2024-06-01T00:00:00Z"
        }))
        .unwrap();
        let mut run = run;
        run.stages = vec![
            stage(
                "build",
                Some(1_000),
                4_000,
                vec![stage("compile", Some(1_500), 3_000, vec![])],
            ),
            // No start reported: placed after the previous stage.
            stage(
                "test",
                None,
                2_000,
                vec![stage("unit", None, 1_000, vec![])],
            ),
        ];
        let (bars, end) = timeline(&run);
        assert_eq!(end, 10_000, "the run's own duration is the axis");
        let names: Vec<(&str, i64, i64, bool)> = bars
            .iter()
            .map(|b| (b.name.as_str(), b.offset_ms, b.duration_ms, b.estimated))
            .collect();
        assert_eq!(
            names,
            vec![
                ("build", 1_000, 4_000, false),
                ("compile", 1_500, 3_000, false),
                ("test", 5_000, 2_000, true),
                ("unit", 5_000, 1_000, true),
            ]
        );
        assert_eq!(bars[3].depth, 1);
        assert_eq!(bars[3].anchor, "stage-1-step-0");
    }
}
