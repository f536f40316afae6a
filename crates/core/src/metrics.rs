//! Delivery metrics as pure functions: the DORA four keys and CI health, over summaries the
//! store returns. Definitions (also in the README):
//!
//! - A **deployment** is a finished run with `cd = true`, counted in the window by its finish time.
//! - **Deployment frequency**: successful deployments per day over the window, and deploy-days per
//!   week: the median, over the window's weeks, of the days that had a successful deployment.
//! - **Lead time for changes**: for each commit of a successful deployment, the deployment's finish
//!   minus the commit's earliest known time (its own timestamp when a payload carried one, else the
//!   start of the first run that carried the sha). A commit counts once, for the first successful
//!   deployment that ships it, per pipeline and environment. Median, p90.
//! - **Change failure rate**: deployments that failed, carry `cfr_status = true`, or are followed
//!   by an incident attributed to them (the latest successful deployment of the same service and
//!   environment before the incident), over all finished deployments.
//! - **Time to restore**: from a failed deployment to the next successful deployment of the same
//!   pipeline and environment; from an incident's detection to its resolution. Median.
//!
//! Percentiles interpolate linearly between ranks (the median of an even count is the mean of
//! the two middle values). Bands are DORA 2023's.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use time::{Duration, OffsetDateTime};

/// A finished deployment, as the store summarizes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Run id.
    pub run_id: String,
    /// Pipeline full name (deployments of one pipeline and environment form a service's history).
    pub pipeline: String,
    /// Environment, when known.
    pub environment: Option<String>,
    /// When it finished.
    pub finished_at: OffsetDateTime,
    /// True when it succeeded.
    pub succeeded: bool,
    /// True when it failed (failure or error); neither for aborted or skipped runs.
    pub failed: bool,
    /// The sender flagged it as a change failure.
    pub cfr_status: bool,
    /// Commits it shipped, with their earliest known time.
    pub commits: Vec<(String, Option<OffsetDateTime>)>,
}

/// An incident (from CDEvents `incident.*` or similar).
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Pipeline (service) it concerns, when known.
    pub pipeline: Option<String>,
    /// Environment.
    pub environment: Option<String>,
    /// Detected.
    pub detected_at: OffsetDateTime,
    /// Resolved, when it is.
    pub resolved_at: Option<OffsetDateTime>,
}

/// DORA performance band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    /// Elite.
    Elite,
    /// High.
    High,
    /// Medium.
    Medium,
    /// Low.
    Low,
}

/// Deployment frequency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentFrequency {
    /// Successful deployments in the window.
    pub deployments: u64,
    /// Per day.
    pub per_day: f64,
    /// Median deploy-days per week.
    pub deploy_days_per_week: f64,
    /// Band, or null without deployments.
    pub band: Option<Band>,
}

/// Lead time for changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadTime {
    /// Median, seconds.
    pub median_seconds: Option<f64>,
    /// 90th percentile, seconds.
    pub p90_seconds: Option<f64>,
    /// Commits measured.
    pub count: u64,
    /// Band.
    pub band: Option<Band>,
}

/// Change failure rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeFailureRate {
    /// failed / deployments.
    pub rate: Option<f64>,
    /// Failed deployments.
    pub failed: u64,
    /// All finished deployments.
    pub deployments: u64,
    /// Band.
    pub band: Option<Band>,
}

/// Time to restore.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeToRestore {
    /// Median, seconds.
    pub median_seconds: Option<f64>,
    /// Restorations measured.
    pub count: u64,
    /// Band.
    pub band: Option<Band>,
}

/// The four keys over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dora {
    /// Window start.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Window end (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// Deployment frequency.
    pub deployment_frequency: DeploymentFrequency,
    /// Lead time.
    pub lead_time: LeadTime,
    /// Change failure rate.
    pub change_failure_rate: ChangeFailureRate,
    /// Time to restore.
    pub time_to_restore: TimeToRestore,
}

/// The `q`-quantile (0..=1) of `values`, interpolating linearly between ranks.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

fn key(d: &Deployment) -> (String, Option<String>) {
    (d.pipeline.clone(), d.environment.clone())
}

/// Computes the four keys. `deployments` must hold every deployment finished before `until`
/// (earlier ones too: they decide which commits were already shipped and which deployment an
/// incident follows); only those finished in `[since, until)` are counted.
pub fn dora(
    deployments: &[Deployment],
    incidents: &[Incident],
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Dora {
    let mut sorted: Vec<&Deployment> = deployments
        .iter()
        .filter(|d| d.finished_at < until)
        .collect();
    sorted.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then(a.run_id.cmp(&b.run_id))
    });
    let in_window = |t: OffsetDateTime| t >= since && t < until;

    // Deployment frequency.
    let successes: Vec<&&Deployment> = sorted
        .iter()
        .filter(|d| d.succeeded && in_window(d.finished_at))
        .collect();
    let window_days = ((until - since).as_seconds_f64() / 86_400.0).max(1.0 / 24.0);
    let weeks = ((until - since).as_seconds_f64() / (7.0 * 86_400.0))
        .ceil()
        .max(1.0) as usize;
    let mut days_per_week: Vec<HashSet<i64>> = vec![HashSet::new(); weeks];
    for d in &successes {
        let offset = (d.finished_at - since).as_seconds_f64();
        let week = ((offset / (7.0 * 86_400.0)) as usize).min(weeks - 1);
        days_per_week[week].insert((d.finished_at.unix_timestamp()).div_euclid(86_400));
    }
    let mut ddpw: Vec<f64> = days_per_week.iter().map(|s| s.len() as f64).collect();
    let deploy_days_per_week = quantile(&mut ddpw, 0.5).unwrap_or(0.0);
    let per_day = successes.len() as f64 / window_days;
    let df_band = if successes.is_empty() {
        None
    } else if deploy_days_per_week >= 5.0 {
        Some(Band::Elite)
    } else if deploy_days_per_week >= 1.0 {
        Some(Band::High)
    } else if per_day * 30.0 >= 1.0 {
        Some(Band::Medium)
    } else {
        Some(Band::Low)
    };

    // Lead time: a commit counts for the first successful deployment that ships it, per
    // pipeline and environment (earlier deployments, even before the window, claim it first).
    let mut shipped: HashMap<(String, Option<String>), HashSet<&str>> = HashMap::new();
    let mut leads: Vec<f64> = Vec::new();
    for d in sorted.iter().filter(|d| d.succeeded) {
        let seen = shipped.entry(key(d)).or_default();
        for (sha, at) in &d.commits {
            if !seen.insert(sha.as_str()) {
                continue;
            }
            if let (true, Some(at)) = (in_window(d.finished_at), at) {
                leads.push((d.finished_at - *at).as_seconds_f64().max(0.0));
            }
        }
    }
    let count = leads.len() as u64;
    let median = quantile(&mut leads, 0.5);
    let p90 = quantile(&mut leads, 0.9);
    let lead_time = LeadTime {
        median_seconds: median,
        p90_seconds: p90,
        count,
        band: median.map(|m| band_by_duration(m, 86_400.0, 7.0 * 86_400.0, 30.0 * 86_400.0)),
    };

    // Change failure rate.
    let culprits = Culprits::new(&sorted);
    let mut blamed: HashSet<&str> = HashSet::new();
    for inc in incidents {
        if let Some(d) = culprits.find(inc) {
            blamed.insert(d.run_id.as_str());
        }
    }
    let counted: Vec<&&Deployment> = sorted
        .iter()
        .filter(|d| in_window(d.finished_at) && (d.succeeded || d.failed))
        .collect();
    let failed = counted
        .iter()
        .filter(|d| d.failed || d.cfr_status || blamed.contains(d.run_id.as_str()))
        .count() as u64;
    let total = counted.len() as u64;
    let rate = (total > 0).then(|| failed as f64 / total as f64);
    let change_failure_rate = ChangeFailureRate {
        rate,
        failed,
        deployments: total,
        band: rate.map(|r| {
            if r <= 0.05 {
                Band::Elite
            } else if r <= 0.10 {
                Band::High
            } else if r <= 0.15 {
                Band::Medium
            } else {
                Band::Low
            }
        }),
    };

    // Time to restore.
    let mut restores: Vec<f64> = Vec::new();
    let mut by_service: BTreeMap<(String, Option<String>), Vec<&Deployment>> = BTreeMap::new();
    for d in &sorted {
        by_service.entry(key(d)).or_default().push(d);
    }
    for history in by_service.values() {
        let mut failing_since: Option<OffsetDateTime> = None;
        for d in history {
            if d.failed {
                failing_since.get_or_insert(d.finished_at);
            } else if d.succeeded {
                if let Some(start) = failing_since.take() {
                    if in_window(d.finished_at) {
                        restores.push((d.finished_at - start).as_seconds_f64());
                    }
                }
            }
        }
    }
    for inc in incidents {
        if let Some(resolved) = inc.resolved_at {
            if in_window(resolved) {
                restores.push((resolved - inc.detected_at).as_seconds_f64().max(0.0));
            }
        }
    }
    let restore_count = restores.len() as u64;
    let restore_median = quantile(&mut restores, 0.5);
    let time_to_restore = TimeToRestore {
        median_seconds: restore_median,
        count: restore_count,
        band: restore_median.map(|m| band_by_duration(m, 3600.0, 86_400.0, 7.0 * 86_400.0)),
    };

    Dora {
        since,
        until,
        deployment_frequency: DeploymentFrequency {
            deployments: successes.len() as u64,
            per_day,
            deploy_days_per_week,
            band: df_band,
        },
        lead_time,
        change_failure_rate,
        time_to_restore,
    }
}

/// The deployment an incident is blamed on: the latest successful one (in the order of
/// `sorted`: finish time, then run id) finished by the incident's detection, of its pipeline
/// and environment when the incident names them. Successful deployments are kept in that order
/// per slice, so each incident is one binary search: scanning every deployment per incident
/// was quadratic, and took minutes over a year of a busy tenant's history.
struct Culprits<'a> {
    all: Vec<&'a Deployment>,
    by_pipeline: HashMap<&'a str, Vec<&'a Deployment>>,
    by_environment: HashMap<&'a str, Vec<&'a Deployment>>,
    by_both: HashMap<(&'a str, &'a str), Vec<&'a Deployment>>,
}

impl<'a> Culprits<'a> {
    fn new(sorted: &[&'a Deployment]) -> Self {
        let mut c = Culprits {
            all: Vec::new(),
            by_pipeline: HashMap::new(),
            by_environment: HashMap::new(),
            by_both: HashMap::new(),
        };
        for &d in sorted.iter().filter(|d| d.succeeded) {
            c.all.push(d);
            c.by_pipeline
                .entry(d.pipeline.as_str())
                .or_default()
                .push(d);
            if let Some(env) = d.environment.as_deref() {
                c.by_environment.entry(env).or_default().push(d);
                c.by_both
                    .entry((d.pipeline.as_str(), env))
                    .or_default()
                    .push(d);
            }
        }
        c
    }

    fn find(&self, inc: &Incident) -> Option<&'a Deployment> {
        let list = match (inc.pipeline.as_deref(), inc.environment.as_deref()) {
            (None, None) => Some(&self.all),
            (Some(p), None) => self.by_pipeline.get(p),
            (None, Some(e)) => self.by_environment.get(e),
            (Some(p), Some(e)) => self.by_both.get(&(p, e)),
        }?;
        // Sorted by finish time, so those finished by the detection are a prefix.
        let n = list.partition_point(|d| d.finished_at <= inc.detected_at);
        n.checked_sub(1).map(|i| list[i])
    }
}

fn band_by_duration(seconds: f64, elite: f64, high: f64, medium: f64) -> Band {
    if seconds < elite {
        Band::Elite
    } else if seconds < high {
        Band::High
    } else if seconds < medium {
        Band::Medium
    } else {
        Band::Low
    }
}

/// A run, summarized for CI health.
#[derive(Debug, Clone, PartialEq)]
pub struct CiRun {
    /// Pipeline full name.
    pub pipeline: String,
    /// Branch.
    pub branch: Option<String>,
    /// Result.
    pub result: crate::RunResult,
    /// Start.
    pub started_at: OffsetDateTime,
    /// End, when finished.
    pub finished_at: Option<OffsetDateTime>,
    /// Duration, ms.
    pub duration_ms: Option<i64>,
    /// The commit built (first of the run's commits).
    pub commit: Option<String>,
}

/// Aggregates of one stage or step name over the window (computed by the store).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageStat {
    /// Pipeline full name.
    pub pipeline: String,
    /// Stage name (for a step: `stage / step`).
    pub name: String,
    /// `stage` or `step`.
    pub kind: String,
    /// Executions.
    pub runs: u64,
    /// Failed executions.
    pub failures: u64,
    /// Mean duration, ms.
    pub avg_duration_ms: Option<f64>,
    /// Longest duration, ms.
    pub max_duration_ms: Option<i64>,
    /// The end of the latest failure's log.
    pub last_failure_log: Option<String>,
}

/// Time from red to green of one pipeline and branch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedToGreen {
    /// Pipeline.
    pub pipeline: String,
    /// Branch.
    pub branch: Option<String>,
    /// Median seconds from the first failure to the next success.
    pub median_seconds: f64,
    /// Recoveries measured.
    pub count: u64,
}

/// A pipeline that both passed and failed on the same commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flaky {
    /// Pipeline.
    pub pipeline: String,
    /// Commit.
    pub commit: String,
    /// Passing runs on it.
    pub passes: u64,
    /// Failing runs on it.
    pub failures: u64,
}

/// CI health over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CiHealth {
    /// Window start.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Window end.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// Runs started in the window.
    pub runs: u64,
    /// Finished runs that succeeded, over finished runs (success + failure + unstable + error).
    pub success_rate: Option<f64>,
    /// Median duration, ms.
    pub duration_p50_ms: Option<f64>,
    /// 95th percentile duration, ms.
    pub duration_p95_ms: Option<f64>,
    /// Red to green per pipeline and branch.
    pub red_to_green: Vec<RedToGreen>,
    /// Flaky pipelines.
    pub flaky: Vec<Flaky>,
    /// Slowest stages and steps (by mean duration).
    pub slowest_stages: Vec<StageStat>,
    /// Most failing stages and steps.
    pub failing_stages: Vec<StageStat>,
}

/// Computes CI health from the runs started in `[since, until)` and their stage aggregates.
pub fn ci_health(
    runs: &[CiRun],
    stages: &[StageStat],
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> CiHealth {
    use crate::RunResult as R;
    let runs: Vec<&CiRun> = runs
        .iter()
        .filter(|r| r.started_at >= since && r.started_at < until)
        .collect();
    let judged: Vec<&&CiRun> = runs
        .iter()
        .filter(|r| matches!(r.result, R::Success | R::Failure | R::Unstable | R::Error))
        .collect();
    let success_rate = (!judged.is_empty()).then(|| {
        judged.iter().filter(|r| r.result == R::Success).count() as f64 / judged.len() as f64
    });
    let mut durations: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.duration_ms)
        .map(|d| d as f64)
        .collect();
    let duration_p50_ms = quantile(&mut durations, 0.5);
    let duration_p95_ms = quantile(&mut durations, 0.95);

    let mut by_branch: BTreeMap<(String, Option<String>), Vec<&CiRun>> = BTreeMap::new();
    for r in &runs {
        by_branch
            .entry((r.pipeline.clone(), r.branch.clone()))
            .or_default()
            .push(r);
    }
    let mut red_to_green = Vec::new();
    for ((pipeline, branch), mut history) in by_branch {
        history.sort_by_key(|r| r.started_at);
        let mut red_since: Option<OffsetDateTime> = None;
        let mut spans = Vec::new();
        for r in history {
            let end = r.finished_at.unwrap_or(r.started_at);
            if r.result.is_failed() || r.result == R::Unstable {
                red_since.get_or_insert(end);
            } else if r.result == R::Success {
                if let Some(start) = red_since.take() {
                    spans.push((end - start).as_seconds_f64().max(0.0));
                }
            }
        }
        if let Some(median) = quantile(&mut spans, 0.5) {
            red_to_green.push(RedToGreen {
                pipeline,
                branch,
                median_seconds: median,
                count: spans.len() as u64,
            });
        }
    }

    let mut by_commit: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for r in &runs {
        if let Some(c) = &r.commit {
            let e = by_commit
                .entry((r.pipeline.clone(), c.clone()))
                .or_default();
            if r.result == R::Success {
                e.0 += 1;
            } else if r.result.is_failed() {
                e.1 += 1;
            }
        }
    }
    let flaky = by_commit
        .into_iter()
        .filter(|(_, (p, f))| *p > 0 && *f > 0)
        .map(|((pipeline, commit), (passes, failures))| Flaky {
            pipeline,
            commit,
            passes,
            failures,
        })
        .collect();

    let mut slowest: Vec<StageStat> = stages
        .iter()
        .filter(|s| s.avg_duration_ms.is_some())
        .cloned()
        .collect();
    slowest.sort_by(|a, b| {
        b.avg_duration_ms
            .unwrap_or(0.0)
            .total_cmp(&a.avg_duration_ms.unwrap_or(0.0))
    });
    slowest.truncate(10);
    let mut failing: Vec<StageStat> = stages.iter().filter(|s| s.failures > 0).cloned().collect();
    failing.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.name.cmp(&b.name)));
    failing.truncate(10);

    CiHealth {
        since,
        until,
        runs: runs.len() as u64,
        success_rate,
        duration_p50_ms,
        duration_p95_ms,
        red_to_green,
        flaky,
        slowest_stages: slowest,
        failing_stages: failing,
    }
}

/// A run reduced to what CI health reads: names are indexes into the tables of a [`CompactCi`]
/// and the commit is an id the store gives each sha. The store's day rollups hold runs this way,
/// so a year of history is read without a string per run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactRun {
    /// Index into [`CompactCi::pipelines`] (full names; two pipelines of one name share it).
    pub pipeline: u32,
    /// Index into [`CompactCi::branches`].
    pub branch: u32,
    /// Result.
    pub result: crate::RunResult,
    /// Start, ms since the epoch.
    pub started_ms: i64,
    /// End, ms since the epoch, when finished.
    pub finished_ms: Option<i64>,
    /// Duration, ms.
    pub duration_ms: Option<i64>,
    /// The commit built (the least sha of the run's commits), as an id.
    pub commit: Option<u64>,
}

/// Runs in compact form with their name tables. For the answer to equal [`ci_health`]'s, the
/// runs must come in the order the store lists [`CiRun`]s (by start, pipeline id, run id), which
/// decides the order of runs of one pipeline and branch that started in the same millisecond.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactCi {
    /// Pipeline full names.
    pub pipelines: Vec<String>,
    /// Branches.
    pub branches: Vec<Option<String>>,
    /// The runs.
    pub runs: Vec<CompactRun>,
}

/// A flaky pipeline and commit found by [`ci_health_compact`], before the commit's sha is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlakyId {
    /// Index into [`CompactCi::pipelines`].
    pub pipeline: u32,
    /// Commit id.
    pub commit: u64,
    /// Passing runs.
    pub passes: u64,
    /// Failing runs.
    pub failures: u64,
}

fn window_nanos(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos()
}

/// The `q`-quantile of integer values, equal to [`quantile`] over the same values as `f64`
/// (it selects the two ranks instead of sorting everything).
fn quantile_i64(values: &mut [i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (_, lo_v, rest) = values.select_nth_unstable(lo);
    let lo_v = *lo_v as f64;
    let hi_v = if hi == lo {
        lo_v
    } else {
        rest.iter().copied().min().map_or(lo_v, |v| v as f64)
    };
    Some(lo_v + (hi_v - lo_v) * (pos - lo as f64))
}

/// [`ci_health`] over compact runs: the same answer, with the flaky commits as ids (see
/// [`finish_flaky`]). `stages` are the window's aggregates, as for [`ci_health`].
pub fn ci_health_compact(
    data: &CompactCi,
    stages: &[StageStat],
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> (CiHealth, Vec<FlakyId>) {
    use crate::RunResult as R;
    let (lo, hi) = (window_nanos(since), window_nanos(until));
    let inside = |r: &&CompactRun| {
        let t = i128::from(r.started_ms) * 1_000_000;
        t >= lo && t < hi
    };
    let mut count = 0u64;
    let mut judged = 0u64;
    let mut passed = 0u64;
    let mut durations: Vec<i64> = Vec::new();
    // Red to green: per pipeline and branch, the runs in the given order, then by start (stable).
    let mut by_branch: HashMap<(u32, u32), Vec<&CompactRun>> = HashMap::new();
    let mut by_commit: HashMap<(u32, u64), (u64, u64)> = HashMap::new();
    for r in data.runs.iter().filter(inside) {
        count += 1;
        if matches!(r.result, R::Success | R::Failure | R::Unstable | R::Error) {
            judged += 1;
            if r.result == R::Success {
                passed += 1;
            }
        }
        if let Some(d) = r.duration_ms {
            durations.push(d);
        }
        by_branch.entry((r.pipeline, r.branch)).or_default().push(r);
        if let Some(c) = r.commit {
            let e = by_commit.entry((r.pipeline, c)).or_default();
            if r.result == R::Success {
                e.0 += 1;
            } else if r.result.is_failed() {
                e.1 += 1;
            }
        }
    }
    let success_rate = (judged > 0).then(|| passed as f64 / judged as f64);
    let duration_p50_ms = quantile_i64(&mut durations, 0.5);
    let duration_p95_ms = quantile_i64(&mut durations, 0.95);

    let mut red_to_green = Vec::new();
    for ((pipeline, branch), mut history) in by_branch {
        history.sort_by_key(|r| r.started_ms);
        let mut red_since: Option<i64> = None;
        let mut spans = Vec::new();
        for r in history {
            let end = r.finished_ms.unwrap_or(r.started_ms);
            if r.result.is_failed() || r.result == R::Unstable {
                red_since.get_or_insert(end);
            } else if r.result == R::Success {
                if let Some(start) = red_since.take() {
                    spans.push(
                        Duration::milliseconds(end - start)
                            .as_seconds_f64()
                            .max(0.0),
                    );
                }
            }
        }
        if let Some(median) = quantile(&mut spans, 0.5) {
            red_to_green.push(RedToGreen {
                pipeline: data.pipelines[pipeline as usize].clone(),
                branch: data.branches[branch as usize].clone(),
                median_seconds: median,
                count: spans.len() as u64,
            });
        }
    }
    red_to_green.sort_by(|a, b| (&a.pipeline, &a.branch).cmp(&(&b.pipeline, &b.branch)));

    let flaky: Vec<FlakyId> = by_commit
        .into_iter()
        .filter(|(_, (p, f))| *p > 0 && *f > 0)
        .map(|((pipeline, commit), (passes, failures))| FlakyId {
            pipeline,
            commit,
            passes,
            failures,
        })
        .collect();
    let mut health = ci_health(&[], stages, since, until);
    health.runs = count;
    health.success_rate = success_rate;
    health.duration_p50_ms = duration_p50_ms;
    health.duration_p95_ms = duration_p95_ms;
    health.red_to_green = red_to_green;
    (health, flaky)
}

/// Puts the flaky commits found by [`ci_health_compact`] into `health`, with their shas (`sha`
/// answers each commit id; an unknown one leaves the entry out), in [`ci_health`]'s order.
pub fn finish_flaky(
    health: &mut CiHealth,
    data: &CompactCi,
    flaky: &[FlakyId],
    sha: impl Fn(u64) -> Option<String>,
) {
    let mut out: Vec<Flaky> = flaky
        .iter()
        .filter_map(|f| {
            Some(Flaky {
                pipeline: data.pipelines[f.pipeline as usize].clone(),
                commit: sha(f.commit)?,
                passes: f.passes,
                failures: f.failures,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.pipeline, &a.commit).cmp(&(&b.pipeline, &b.commit)));
    health.flaky = out;
}

/// Window helper: `days` days ending at `until`.
pub fn window(until: OffsetDateTime, days: i64) -> (OffsetDateTime, OffsetDateTime) {
    (until - Duration::days(days), until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn dep(
        id: &str,
        at: OffsetDateTime,
        ok: bool,
        commits: &[(&str, Option<OffsetDateTime>)],
    ) -> Deployment {
        Deployment {
            run_id: id.into(),
            pipeline: "svc".into(),
            environment: Some("prod".into()),
            finished_at: at,
            succeeded: ok,
            failed: !ok,
            cfr_status: false,
            commits: commits.iter().map(|(s, t)| (s.to_string(), *t)).collect(),
        }
    }

    #[test]
    fn a_small_history_by_hand() {
        let since = datetime!(2024-01-01 0:00 UTC);
        let until = datetime!(2024-01-15 0:00 UTC);
        let deps = vec![
            // Shipped before the window: claims c0.
            dep(
                "d0",
                datetime!(2023-12-31 12:00 UTC),
                true,
                &[("c0", Some(datetime!(2023-12-31 0:00 UTC)))],
            ),
            dep(
                "d1",
                datetime!(2024-01-02 10:00 UTC),
                true,
                &[("c0", None), ("c1", Some(datetime!(2024-01-02 8:00 UTC)))],
            ),
            dep(
                "d2",
                datetime!(2024-01-03 10:00 UTC),
                false,
                &[("c2", Some(datetime!(2024-01-03 9:00 UTC)))],
            ),
            dep(
                "d3",
                datetime!(2024-01-03 13:00 UTC),
                true,
                &[("c2", Some(datetime!(2024-01-03 9:00 UTC)))],
            ),
            dep(
                "d4",
                datetime!(2024-01-10 10:00 UTC),
                true,
                &[("c3", Some(datetime!(2024-01-08 10:00 UTC)))],
            ),
        ];
        let d = dora(&deps, &[], since, until);
        assert_eq!(d.deployment_frequency.deployments, 3);
        assert!((d.deployment_frequency.per_day - 3.0 / 14.0).abs() < 1e-9);
        // Week 1: Jan 2 and Jan 3 → 2 days; week 2: Jan 10 → 1 day. Median of [2, 1] = 1.5.
        assert_eq!(d.deployment_frequency.deploy_days_per_week, 1.5);
        assert_eq!(d.deployment_frequency.band, Some(Band::High));
        // Lead times: c1 2h, c2 4h (first success d3), c3 48h → median 4h, p90 = 4h + 0.8*(44h).
        assert_eq!(d.lead_time.count, 3);
        assert_eq!(d.lead_time.median_seconds, Some(4.0 * 3600.0));
        assert!((d.lead_time.p90_seconds.unwrap() - (4.0 + 0.8 * 44.0) * 3600.0).abs() < 1e-6);
        assert_eq!(d.lead_time.band, Some(Band::Elite));
        // CFR: 1 failed of 4.
        assert_eq!(
            (
                d.change_failure_rate.failed,
                d.change_failure_rate.deployments
            ),
            (1, 4)
        );
        assert_eq!(d.change_failure_rate.band, Some(Band::Low));
        // Restore: d2 → d3 = 3h.
        assert_eq!(d.time_to_restore.median_seconds, Some(3.0 * 3600.0));
        assert_eq!(d.time_to_restore.band, Some(Band::High));
    }

    #[test]
    fn incidents_blame_the_last_success_and_restore() {
        let since = datetime!(2024-01-01 0:00 UTC);
        let until = datetime!(2024-01-08 0:00 UTC);
        let deps = vec![
            dep("a", datetime!(2024-01-02 0:00 UTC), true, &[]),
            dep("b", datetime!(2024-01-03 0:00 UTC), true, &[]),
        ];
        let inc = Incident {
            pipeline: Some("svc".into()),
            environment: Some("prod".into()),
            detected_at: datetime!(2024-01-03 6:00 UTC),
            resolved_at: Some(datetime!(2024-01-03 6:30 UTC)),
        };
        let d = dora(&deps, &[inc], since, until);
        assert_eq!(d.change_failure_rate.failed, 1);
        assert_eq!(d.change_failure_rate.rate, Some(0.5));
        assert_eq!(d.time_to_restore.median_seconds, Some(1800.0));
        assert_eq!(d.time_to_restore.band, Some(Band::Elite));
    }

    #[test]
    fn ci_health_by_hand() {
        use crate::RunResult as R;
        let t0 = datetime!(2024-01-01 0:00 UTC);
        let run = |h: i64, result: R, commit: &str, d: i64| CiRun {
            pipeline: "p".into(),
            branch: Some("main".into()),
            result,
            started_at: t0 + Duration::hours(h),
            finished_at: Some(t0 + Duration::hours(h) + Duration::minutes(10)),
            duration_ms: Some(d),
            commit: Some(commit.into()),
        };
        let runs = vec![
            run(1, R::Success, "a", 100),
            run(2, R::Failure, "b", 200),
            run(3, R::Failure, "b", 300),
            run(5, R::Success, "b", 400),
            run(6, R::Aborted, "c", 500),
        ];
        let h = ci_health(&runs, &[], t0, t0 + Duration::days(1));
        assert_eq!(h.runs, 5);
        assert_eq!(h.success_rate, Some(0.5)); // 2 of 4 judged (the aborted one is not judged)
        assert_eq!(h.duration_p50_ms, Some(300.0));
        assert_eq!(h.red_to_green.len(), 1);
        assert_eq!(h.red_to_green[0].median_seconds, 3.0 * 3600.0); // 02:10 → 05:10
        assert_eq!(
            h.flaky,
            vec![Flaky {
                pipeline: "p".into(),
                commit: "b".into(),
                passes: 1,
                failures: 2
            }]
        );
    }

    #[test]
    fn no_data_no_band() {
        let d = dora(
            &[],
            &[],
            datetime!(2024-01-01 0:00 UTC),
            datetime!(2024-02-01 0:00 UTC),
        );
        assert_eq!(d.deployment_frequency.band, None);
        assert_eq!(d.lead_time.band, None);
        assert_eq!(d.change_failure_rate.rate, None);
        assert_eq!(d.time_to_restore.count, 0);
    }

    #[test]
    fn adding_a_success_never_raises_the_failure_rate() {
        let since = datetime!(2024-01-01 0:00 UTC);
        let until = datetime!(2024-02-01 0:00 UTC);
        let mut deps = Vec::new();
        for i in 0..20i64 {
            let at = since + Duration::hours(7 * i + 3);
            deps.push(dep(&format!("d{i}"), at, i % 3 != 0, &[]));
            let before = dora(&deps, &[], since, until)
                .change_failure_rate
                .rate
                .unwrap();
            let mut with = deps.clone();
            with.push(dep(&format!("s{i}"), at + Duration::minutes(1), true, &[]));
            let after = dora(&with, &[], since, until)
                .change_failure_rate
                .rate
                .unwrap();
            assert!(after <= before, "{after} > {before}");
        }
    }
}

#[cfg(test)]
mod compact_tests {
    use super::*;
    use crate::RunResult;
    use proptest::prelude::*;

    const RESULTS: [RunResult; 6] = [
        RunResult::Success,
        RunResult::Failure,
        RunResult::Unstable,
        RunResult::Aborted,
        RunResult::Error,
        RunResult::Running,
    ];

    fn run_strategy() -> impl Strategy<Value = CiRun> {
        (
            0usize..3,
            0usize..3,
            0usize..RESULTS.len(),
            0i64..40,
            proptest::option::of(0i64..30),
            proptest::option::of(0i64..5_000),
            proptest::option::of(0usize..5),
        )
            .prop_map(|(p, b, res, start, fin, dur, commit)| {
                let base = 1_700_000_000_000i64;
                let started = base + start * 3_600_000;
                CiRun {
                    pipeline: ["a/x", "b", "a/y"][p].into(),
                    branch: [None, Some("main"), Some("dev")][b].map(String::from),
                    result: RESULTS[res],
                    started_at: crate::from_millis(started),
                    finished_at: fin.map(|f| crate::from_millis(started + f * 60_000)),
                    duration_ms: dur,
                    commit: commit.map(|c| format!("c{c}")),
                }
            })
    }

    fn compact(runs: &[CiRun]) -> (CompactCi, HashMap<u64, String>) {
        let mut data = CompactCi::default();
        let mut shas: HashMap<String, u64> = HashMap::new();
        for r in runs {
            let pipeline = match data.pipelines.iter().position(|p| *p == r.pipeline) {
                Some(i) => i,
                None => {
                    data.pipelines.push(r.pipeline.clone());
                    data.pipelines.len() - 1
                }
            } as u32;
            let branch = match data.branches.iter().position(|b| *b == r.branch) {
                Some(i) => i,
                None => {
                    data.branches.push(r.branch.clone());
                    data.branches.len() - 1
                }
            } as u32;
            let n = shas.len() as u64 + 7;
            let commit = r.commit.clone().map(|c| *shas.entry(c).or_insert(n));
            data.runs.push(CompactRun {
                pipeline,
                branch,
                result: r.result,
                started_ms: crate::to_millis(r.started_at),
                finished_ms: r.finished_at.map(crate::to_millis),
                duration_ms: r.duration_ms,
                commit,
            });
        }
        (data, shas.into_iter().map(|(s, i)| (i, s)).collect())
    }

    fn deployment_strategy() -> impl Strategy<Value = Deployment> {
        (0usize..3, 0usize..3, 0i64..20, 0usize..3, 0u32..1000).prop_map(
            |(p, e, at, outcome, id)| Deployment {
                run_id: format!("r{id}"),
                pipeline: ["deploy/a", "b", "deploy/c"][p].into(),
                environment: [None, Some("prod"), Some("staging")][e].map(String::from),
                finished_at: crate::from_millis(1_700_000_000_000 + at * 3_600_000),
                succeeded: outcome == 0,
                failed: outcome == 1,
                cfr_status: false,
                commits: Vec::new(),
            },
        )
    }

    fn incident_strategy() -> impl Strategy<Value = Incident> {
        (0usize..4, 0usize..4, 0i64..24).prop_map(|(p, e, at)| Incident {
            pipeline: [None, Some("deploy/a"), Some("b"), Some("other")][p].map(String::from),
            environment: [None, Some("prod"), Some("staging"), Some("qa")][e].map(String::from),
            detected_at: crate::from_millis(1_700_000_000_000 + at * 3_600_000 - 1_800_000),
            resolved_at: None,
        })
    }

    proptest! {
        /// The indexed lookup blames exactly the deployment that a scan of every deployment
        /// (the definition) blames.
        #[test]
        fn culprits_equal_the_scan(
            deployments in proptest::collection::vec(deployment_strategy(), 0..40),
            incidents in proptest::collection::vec(incident_strategy(), 0..12),
        ) {
            let mut sorted: Vec<&Deployment> = deployments.iter().collect();
            sorted.sort_by(|a, b| a.finished_at.cmp(&b.finished_at).then(a.run_id.cmp(&b.run_id)));
            let culprits = Culprits::new(&sorted);
            for inc in &incidents {
                let scanned = sorted.iter().rfind(|d| {
                    d.succeeded
                        && d.finished_at <= inc.detected_at
                        && inc.pipeline.as_ref().is_none_or(|p| *p == d.pipeline)
                        && (inc.environment.is_none() || inc.environment == d.environment)
                });
                prop_assert_eq!(culprits.find(inc).map(|d| d as *const Deployment), scanned.map(|d| *d as *const Deployment));
            }
        }

        #[test]
        fn compact_ci_health_equals_ci_health(
            runs in proptest::collection::vec(run_strategy(), 0..60),
            from in 0i64..40,
            len in 1i64..45,
            nanos in 0i64..1_000_000,
        ) {
            let base = 1_700_000_000_000i64;
            let since = crate::from_millis(base + from * 3_600_000 - 1_800_000) + Duration::nanoseconds(nanos);
            let until = since + Duration::hours(len);
            let expected = ci_health(&runs, &[], since, until);
            let (data, names) = compact(&runs);
            let (mut got, flaky) = ci_health_compact(&data, &[], since, until);
            finish_flaky(&mut got, &data, &flaky, |id| names.get(&id).cloned());
            prop_assert_eq!(got, expected);
        }
    }
}
