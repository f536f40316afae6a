//! Day rollups of CI health, shared by both backends.
//!
//! `GET /api/v1/metrics/ci` over a year of history would read every run of the year. Instead,
//! each closed UTC day of each pipeline is kept as one compact row of `ci_days`: its runs reduced
//! to what CI health reads (start, end, duration, result, branch, environment, a commit id) and
//! its stage and step aggregates (count, failures, duration sum, count and max). A read takes the
//! window's whole days from there and the rest (the partial first and last days, today, and any
//! day a late report changed since its row was built) from the runs themselves, all in one
//! snapshot, and computes with `core::metrics::ci_health_compact`, which answers exactly what
//! `ci_health` answers over the same runs. Nothing is approximated: the rollups are a lossless,
//! smaller copy of what the pure function reads.
//!
//! How rows stay true:
//! - A trigger on `runs` (migration 0011) marks `(tenant, pipeline, day)` in `ci_days_dirty` when
//!   a run of a day that ends within the hour is inserted, updated or deleted (old and new day).
//!   Live days are not marked: they are never sealed while live.
//! - `rollup_state.sealed_until` is the first day not yet sealed, per tenant. Sealing builds the
//!   rows of the days that ended more than [`SEAL_LAG_MS`] ago from the runs; it starts at the
//!   tenant's first run (the backfill of existing data, done at startup and by the first read).
//! - A dirty day is read from the runs until a refresh rebuilds its rows.
//!
//! The same runs in the same order give the same answer: rows hold runs by start, then run id,
//! and pipelines of a day are read by id, the order `ci_runs` lists them in.

use std::collections::{BTreeSet, HashMap};

use cistern_core::metrics::{CompactCi, CompactRun, FlakyId, StageStat};
use cistern_core::result::ALL_RESULTS;
use cistern_core::RunResult;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{MetricsFilter, StoreError};

/// A UTC day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// A day is sealed once it ended this long ago (the trigger marks days ending within the hour,
/// so a write would have to stay uncommitted for three hours to be missed).
pub const SEAL_LAG_MS: i64 = 2 * 3_600_000;
/// Days sealed per refresh step (one transaction; the SQLite writer serves writes between steps).
pub const SEAL_DAYS_PER_STEP: i64 = 7;

/// The UTC day of a time in ms.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The first day that may not be sealed yet at `now_ms`.
pub fn sealable_until(now_ms: i64) -> i64 {
    day_of(now_ms - SEAL_LAG_MS)
}

/// One day of one pipeline, as stored in `ci_days.data` (postcard).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DayBlob {
    /// Branch table.
    pub branches: Vec<Option<String>>,
    /// Environment table.
    pub envs: Vec<Option<String>>,
    /// Runs by start, then run id.
    pub runs: Vec<BlobRun>,
    /// Stage and step aggregates by environment.
    pub stages: Vec<BlobStage>,
}

/// A run in a [`DayBlob`].
#[derive(Debug, Serialize, Deserialize)]
pub struct BlobRun {
    /// Start, ms after the day's start.
    pub start: i64,
    /// End, ms after the start.
    pub finish: Option<i64>,
    /// Duration, ms.
    pub duration: Option<i64>,
    /// Index into [`ALL_RESULTS`].
    pub result: u8,
    /// Index into the branch table.
    pub branch: u32,
    /// Index into the environment table.
    pub env: u32,
    /// Commit id (`commit_ids.id`).
    pub commit: Option<u64>,
}

/// Stage or step aggregates of a day, pipeline and environment.
#[derive(Debug, Serialize, Deserialize)]
pub struct BlobStage {
    /// Index into the environment table.
    pub env: u32,
    /// Name (`stage / step` for a step).
    pub name: String,
    /// A step.
    pub is_step: bool,
    /// Executions.
    pub count: i64,
    /// Failed executions.
    pub failures: i64,
    /// Sum of the known durations.
    pub sum: i64,
    /// Known durations.
    pub n: i64,
    /// Longest.
    pub max: Option<i64>,
}

/// A run as the raw queries return it.
#[derive(Debug, Clone)]
pub struct RawRun {
    /// Pipeline id.
    pub pipeline_id: String,
    /// Branch.
    pub branch: Option<String>,
    /// Environment.
    pub environment: Option<String>,
    /// Normalized result.
    pub result: String,
    /// Start, ms.
    pub started: i64,
    /// End, ms.
    pub finished: Option<i64>,
    /// Duration, ms.
    pub duration: Option<i64>,
    /// Least sha of its commits.
    pub commit: Option<String>,
}

/// Stage aggregates as the raw queries return them (grouped by pipeline, day, environment, name).
#[derive(Debug, Clone)]
pub struct RawStage {
    /// Pipeline id.
    pub pipeline_id: String,
    /// Day.
    pub day: i64,
    /// Environment.
    pub environment: Option<String>,
    /// Name.
    pub name: String,
    /// 1 for a step.
    pub is_step: i64,
    /// Executions.
    pub count: i64,
    /// Failures.
    pub failures: i64,
    /// Sum of durations.
    pub sum: Option<i64>,
    /// Known durations.
    pub n: i64,
    /// Longest.
    pub max: Option<i64>,
}

/// The raw runs of a range: by start, pipeline id, run id (as `metrics_sql::ci_runs` orders).
pub const RAW_RUNS_SQL: &str = "SELECT r.pipeline_id, r.branch, r.environment, r.result, r.started_at, r.finished_at, r.duration_ms, \
     (SELECT MIN(c.sha) FROM run_commits c WHERE c.run_id = r.id) FROM runs r \
     WHERE r.tenant_id = {1} AND r.started_at >= {2} AND r.started_at < {3} ORDER BY r.started_at, r.pipeline_id, r.id";

/// The raw stage aggregates of a range, by pipeline, day and environment.
pub const RAW_STAGES_SQL: &str = "SELECT r.pipeline_id, (r.started_at - ((r.started_at % 86400000) + 86400000) % 86400000) / 86400000 AS day, r.environment, \
     CASE WHEN s.parent_idx IS NULL THEN s.name ELSE ps.name || ' / ' || s.name END AS sname, \
     CAST(CASE WHEN s.parent_idx IS NULL THEN 0 ELSE 1 END AS BIGINT) AS is_step, COUNT(*), \
     CAST(SUM(CASE WHEN s.result IN ('failure', 'error') THEN 1 ELSE 0 END) AS BIGINT), \
     CAST(SUM(s.duration_ms) AS BIGINT), COUNT(s.duration_ms), MAX(s.duration_ms) \
     FROM stages s JOIN runs r ON r.id = s.run_id LEFT JOIN stages ps ON ps.run_id = s.run_id AND ps.idx = s.parent_idx \
     WHERE r.tenant_id = {1} AND r.started_at >= {2} AND r.started_at < {3} \
     GROUP BY r.pipeline_id, day, r.environment, sname, is_step";

/// A statement of this module with the backend's placeholders.
pub fn sql(template: &str, ph: fn(usize) -> String) -> String {
    let mut s = template.to_owned();
    for n in 1..=3 {
        s = s.replace(&format!("{{{n}}}"), &ph(n));
    }
    s
}

fn result_index(r: &str) -> u8 {
    let r = RunResult::from_normalized(r).unwrap_or(RunResult::Error);
    ALL_RESULTS.iter().position(|x| *x == r).unwrap_or(0) as u8
}

fn index_of<T: PartialEq + Clone>(table: &mut Vec<T>, v: &T) -> u32 {
    match table.iter().position(|x| x == v) {
        Some(i) => i as u32,
        None => {
            table.push(v.clone());
            (table.len() - 1) as u32
        }
    }
}

/// Builds the rows of the days of `runs` and `stages` (already in the raw queries' order), per
/// pipeline and day; `commit_id` gives each sha its id.
pub fn build_blobs(
    runs: Vec<RawRun>,
    stages: Vec<RawStage>,
    mut commit_id: impl FnMut(&str) -> Result<u64, StoreError>,
) -> Result<Vec<(String, i64, Vec<u8>)>, StoreError> {
    let mut days: HashMap<(String, i64), DayBlob> = HashMap::new();
    for r in runs {
        let day = day_of(r.started);
        let commit = match &r.commit {
            Some(c) => Some(commit_id(c)?),
            None => None,
        };
        let b = days.entry((r.pipeline_id, day)).or_default();
        let branch = index_of(&mut b.branches, &r.branch);
        let env = index_of(&mut b.envs, &r.environment);
        b.runs.push(BlobRun {
            start: r.started - day * DAY_MS,
            finish: r.finished.map(|f| f - r.started),
            duration: r.duration,
            result: result_index(&r.result),
            branch,
            env,
            commit,
        });
    }
    for s in stages {
        let b = days.entry((s.pipeline_id, s.day)).or_default();
        let env = index_of(&mut b.envs, &s.environment);
        b.stages.push(BlobStage {
            env,
            name: s.name,
            is_step: s.is_step != 0,
            count: s.count,
            failures: s.failures,
            sum: s.sum.unwrap_or(0),
            n: s.n,
            max: s.max,
        });
    }
    days.into_iter()
        .map(|((p, d), b)| {
            let bytes = postcard::to_stdvec(&b)
                .map_err(|e| StoreError::Backend(format!("encoding a day rollup: {e}")))?;
            Ok((p, d, bytes))
        })
        .collect()
}

/// A pipeline of the tenant, for the slice filters.
#[derive(Debug, Clone)]
pub struct PipelineRow {
    /// Id.
    pub id: String,
    /// Full name.
    pub full_name: String,
    /// Short name.
    pub name: String,
    /// Project.
    pub project: Option<String>,
    /// Instance GUID.
    pub instance_guid: String,
}

/// The tenant's pipelines with their instance, for [`Assembler::new`].
pub const PIPELINES_SQL: &str = "SELECT p.id, p.full_name, p.name, p.project, i.guid FROM pipelines p JOIN instances i ON i.id = p.instance_id WHERE p.tenant_id = {1}";

/// True when the rollups can answer this filter (branch and repository are per run: those
/// slices read the runs).
pub fn supports(f: &MetricsFilter) -> bool {
    f.branch.is_none() && f.repo.is_none()
}

/// Which parts of a window come from the rollups and which from the runs.
#[derive(Debug, PartialEq)]
pub enum Segment {
    /// Runs started in `[from, to)` ms, read from the runs.
    Raw(i64, i64),
    /// Whole days `[from, to)` read from `ci_days`.
    Days(i64, i64),
}

/// The segments of `[since, until)` given the sealed days and the dirty ones, in time order.
/// Times are truncated to ms as the SQL of the slow path does.
pub fn plan(
    since: OffsetDateTime,
    until: OffsetDateTime,
    sealed_until: i64,
    dirty: &BTreeSet<i64>,
) -> Vec<Segment> {
    let (s, u) = (
        cistern_core::to_millis(since),
        cistern_core::to_millis(until),
    );
    let lo = s.div_euclid(DAY_MS) + i64::from(s.rem_euclid(DAY_MS) != 0);
    let hi = u.div_euclid(DAY_MS).min(sealed_until);
    let mut out: Vec<Segment> = Vec::new();
    let mut push = |seg: Segment| {
        match (out.last_mut(), &seg) {
            (Some(Segment::Raw(_, to)), Segment::Raw(f, t)) if *to == *f => *to = *t,
            (Some(Segment::Days(_, to)), Segment::Days(f, t)) if *to == *f => *to = *t,
            _ => out.push(seg),
        };
    };
    if lo >= hi {
        if s < u {
            push(Segment::Raw(s, u));
        }
        return out;
    }
    if s < lo * DAY_MS {
        push(Segment::Raw(s, lo * DAY_MS));
    }
    for d in lo..hi {
        if dirty.contains(&d) {
            push(Segment::Raw(d * DAY_MS, (d + 1) * DAY_MS));
        } else {
            push(Segment::Days(d, d + 1));
        }
    }
    if hi * DAY_MS < u {
        push(Segment::Raw(hi * DAY_MS, u));
    }
    out
}

#[derive(Default, Clone, Copy)]
struct StageAcc {
    count: i64,
    failures: i64,
    sum: i64,
    n: i64,
    max: Option<i64>,
}

impl StageAcc {
    fn add(&mut self, count: i64, failures: i64, sum: i64, n: i64, max: Option<i64>) {
        self.count += count;
        self.failures += failures;
        self.sum += sum;
        self.n += n;
        self.max = match (self.max, max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Gathers a window's runs and stage aggregates from rows and raw reads, in order.
pub struct Assembler {
    /// The selected pipelines: id → index of its full name.
    selected: HashMap<String, u32>,
    env: Option<Option<String>>,
    /// The runs gathered.
    pub data: CompactCi,
    branch_idx: HashMap<Option<String>, u32>,
    stages: HashMap<(u32, String, bool), StageAcc>,
    /// Shas of raw runs: id by sha (ids known to `commit_ids`, or local ones above 2^62).
    pub raw_commits: HashMap<String, u64>,
    next_local: u64,
}

impl Assembler {
    /// Selects the pipelines of `filter` (its pipeline, project and instance slices).
    pub fn new(pipelines: &[PipelineRow], filter: &MetricsFilter) -> Self {
        let mut data = CompactCi::default();
        let mut names: HashMap<String, u32> = HashMap::new();
        let mut selected = HashMap::new();
        let mut rows: Vec<&PipelineRow> = pipelines.iter().collect();
        rows.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        for p in rows {
            let ok = filter
                .pipeline
                .as_ref()
                .is_none_or(|v| p.full_name == *v || p.name == *v)
                && filter
                    .project
                    .as_ref()
                    .is_none_or(|v| p.project.as_ref() == Some(v))
                && filter
                    .instance
                    .as_ref()
                    .is_none_or(|v| p.instance_guid == *v);
            if !ok {
                continue;
            }
            let idx = *names.entry(p.full_name.clone()).or_insert_with(|| {
                data.pipelines.push(p.full_name.clone());
                (data.pipelines.len() - 1) as u32
            });
            selected.insert(p.id.clone(), idx);
        }
        Self {
            selected,
            env: filter.environment.clone().map(Some),
            data,
            branch_idx: HashMap::new(),
            stages: HashMap::new(),
            raw_commits: HashMap::new(),
            next_local: 1 << 62,
        }
    }

    /// True when no pipeline is selected (nothing to read).
    pub fn is_empty(&self) -> bool {
        self.selected.is_empty()
    }

    fn branch(&mut self, b: &Option<String>) -> u32 {
        if let Some(i) = self.branch_idx.get(b) {
            return *i;
        }
        self.data.branches.push(b.clone());
        let i = (self.data.branches.len() - 1) as u32;
        self.branch_idx.insert(b.clone(), i);
        i
    }

    fn env_ok(&self, e: &Option<String>) -> bool {
        match &self.env {
            None => true,
            Some(want) => want.is_some() && e == want,
        }
    }

    /// Adds a stored day of a pipeline.
    pub fn add_blob(
        &mut self,
        pipeline_id: &str,
        day: i64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let Some(&pipeline) = self.selected.get(pipeline_id) else {
            return Ok(());
        };
        let b: DayBlob = postcard::from_bytes(bytes)
            .map_err(|e| StoreError::Backend(format!("decoding a day rollup: {e}")))?;
        let env_ok: Vec<bool> = b.envs.iter().map(|e| self.env_ok(e)).collect();
        let branches: Vec<u32> = b.branches.iter().map(|x| self.branch(x)).collect();
        let base = day * DAY_MS;
        self.data.runs.reserve(b.runs.len());
        for r in &b.runs {
            if !env_ok.get(r.env as usize).copied().unwrap_or(false) {
                continue;
            }
            let started = base + r.start;
            self.data.runs.push(CompactRun {
                pipeline,
                branch: branches.get(r.branch as usize).copied().unwrap_or(0),
                result: ALL_RESULTS
                    .get(r.result as usize)
                    .copied()
                    .unwrap_or(RunResult::Error),
                started_ms: started,
                finished_ms: r.finish.map(|f| started + f),
                duration_ms: r.duration,
                commit: r.commit,
            });
        }
        for s in b.stages {
            if !env_ok.get(s.env as usize).copied().unwrap_or(false) {
                continue;
            }
            self.stages
                .entry((pipeline, s.name, s.is_step))
                .or_default()
                .add(s.count, s.failures, s.sum, s.n, s.max);
        }
        Ok(())
    }

    /// The shas of raw runs that need an id (looked up in `commit_ids` by the caller, then given
    /// to [`Assembler::add_raw`]).
    pub fn shas(runs: &[RawRun]) -> Vec<String> {
        let set: BTreeSet<&String> = runs.iter().filter_map(|r| r.commit.as_ref()).collect();
        set.into_iter().cloned().collect()
    }

    /// Adds raw runs (in the raw query's order) and their stage aggregates; `known` gives the
    /// stored id of a sha.
    pub fn add_raw(
        &mut self,
        runs: Vec<RawRun>,
        stages: Vec<RawStage>,
        known: &HashMap<String, u64>,
    ) {
        for r in runs {
            let Some(&pipeline) = self.selected.get(&r.pipeline_id) else {
                continue;
            };
            if !self.env_ok(&r.environment) {
                continue;
            }
            let commit = r.commit.map(|c| {
                if let Some(id) = known.get(&c) {
                    return *id;
                }
                let next = &mut self.next_local;
                *self.raw_commits.entry(c).or_insert_with(|| {
                    *next += 1;
                    *next
                })
            });
            let branch = self.branch(&r.branch);
            self.data.runs.push(CompactRun {
                pipeline,
                branch,
                result: RunResult::from_normalized(&r.result).unwrap_or(RunResult::Error),
                started_ms: r.started,
                finished_ms: r.finished,
                duration_ms: r.duration,
                commit,
            });
        }
        for s in stages {
            let Some(&pipeline) = self.selected.get(&s.pipeline_id) else {
                continue;
            };
            if !self.env_ok(&s.environment) {
                continue;
            }
            self.stages
                .entry((pipeline, s.name, s.is_step != 0))
                .or_default()
                .add(s.count, s.failures, s.sum.unwrap_or(0), s.n, s.max);
        }
    }

    /// The stage aggregates, as `stage_stats` gives them (without the failure logs).
    pub fn stage_stats(&self) -> Vec<StageStat> {
        let mut out: Vec<StageStat> = self
            .stages
            .iter()
            .map(|((p, name, step), a)| StageStat {
                pipeline: self.data.pipelines[*p as usize].clone(),
                name: name.clone(),
                kind: if *step { "step".into() } else { "stage".into() },
                runs: a.count.max(0) as u64,
                failures: a.failures.max(0) as u64,
                avg_duration_ms: (a.n > 0).then(|| a.sum as f64 / a.n as f64),
                max_duration_ms: a.max,
                last_failure_log: None,
            })
            .collect();
        crate::metrics_sql::sort_stage_stats(&mut out);
        out
    }

    /// The sha of a local commit id.
    pub fn local_sha(&self) -> HashMap<u64, String> {
        self.raw_commits
            .iter()
            .map(|(s, i)| (*i, s.clone()))
            .collect()
    }
}

/// CI health of a window and its buckets, before the flaky commits' shas are known.
pub struct Computed {
    whole: (cistern_core::metrics::CiHealth, Vec<FlakyId>),
    series: Vec<(cistern_core::metrics::CiHealth, Vec<FlakyId>)>,
    local: HashMap<u64, String>,
    /// Stored commit ids whose sha is needed (`commit_ids.id`).
    pub wanted: Vec<u64>,
}

/// Computes CI health of the window and of each bucket from assembled data.
pub fn compute(
    a: &Assembler,
    stages: &[StageStat],
    since: OffsetDateTime,
    until: OffsetDateTime,
    buckets: &[(OffsetDateTime, OffsetDateTime)],
) -> Computed {
    use cistern_core::metrics::ci_health_compact;
    let whole = ci_health_compact(&a.data, stages, since, until);
    let series: Vec<_> = buckets
        .iter()
        .map(|(s, u)| ci_health_compact(&a.data, &[], *s, *u))
        .collect();
    let local = a.local_sha();
    let wanted: BTreeSet<u64> = whole
        .1
        .iter()
        .chain(series.iter().flat_map(|(_, f)| f.iter()))
        .map(|f| f.commit)
        .filter(|i| !local.contains_key(i))
        .collect();
    Computed {
        whole,
        series,
        local,
        wanted: wanted.into_iter().collect(),
    }
}

/// Puts the shas of the flaky commits in (`names` answers [`Computed::wanted`]).
pub fn finish(
    c: Computed,
    data: &CompactCi,
    mut names: HashMap<u64, String>,
) -> (
    cistern_core::metrics::CiHealth,
    Vec<cistern_core::metrics::CiHealth>,
) {
    use cistern_core::metrics::finish_flaky;
    names.extend(c.local);
    let (mut whole, flaky) = c.whole;
    finish_flaky(&mut whole, data, &flaky, |i| names.get(&i).cloned());
    let series = c
        .series
        .into_iter()
        .map(|(mut h, f)| {
            finish_flaky(&mut h, data, &f, |i| names.get(&i).cloned());
            h
        })
        .collect();
    (whole, series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_partial_days_raw_and_whole_sealed_days_from_rows() {
        let t = |ms: i64| cistern_core::from_millis(ms);
        let dirty: BTreeSet<i64> = [12].into_iter().collect();
        let p = plan(t(10 * DAY_MS + 5), t(15 * DAY_MS + 7), 14, &dirty);
        assert_eq!(
            p,
            vec![
                Segment::Raw(10 * DAY_MS + 5, 11 * DAY_MS),
                Segment::Days(11, 12),
                Segment::Raw(12 * DAY_MS, 13 * DAY_MS),
                Segment::Days(13, 14),
                Segment::Raw(14 * DAY_MS, 15 * DAY_MS + 7),
            ]
        );
        assert_eq!(
            plan(t(10 * DAY_MS), t(10 * DAY_MS + 9), 20, &dirty),
            vec![Segment::Raw(10 * DAY_MS, 10 * DAY_MS + 9)]
        );
    }
}
