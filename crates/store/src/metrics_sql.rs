//! The SQL of the metrics reads, written once for both backends: the builders take the
//! backend's placeholder style (`?1` or `$1`) and its JSON accessor, and return the statement
//! with its arguments in order.

use time::OffsetDateTime;

use crate::MetricsFilter;

/// An argument of a metrics statement.
#[derive(Debug, Clone)]
pub enum Arg {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
}

/// The backend's dialect details.
pub struct Dialect {
    /// Placeholder for argument `n` (1-based).
    pub ph: fn(usize) -> String,
    /// Expression reading the `repo` member of `r.detail`.
    pub json_repo: &'static str,
}

/// A statement under construction.
pub struct Stmt<'d> {
    d: &'d Dialect,
    /// SQL text.
    pub sql: String,
    /// Arguments.
    pub args: Vec<Arg>,
}

impl<'d> Stmt<'d> {
    fn new(d: &'d Dialect, head: &str) -> Self {
        Self {
            d,
            sql: head.to_owned(),
            args: Vec::new(),
        }
    }
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        (self.d.ph)(self.args.len())
    }
    fn push(&mut self, s: &str) {
        self.sql.push_str(s);
    }
    /// Tenant and slice filters over `runs r`, `pipelines p`, `instances i`.
    fn slice(&mut self, tenant_id: &str, f: &MetricsFilter) {
        let t = self.arg(Arg::Text(tenant_id.to_owned()));
        self.push(&format!(" WHERE r.tenant_id = {t}"));
        if let Some(v) = &f.project {
            let a = self.arg(Arg::Text(v.clone()));
            self.push(&format!(" AND p.project = {a}"));
        }
        if let Some(v) = &f.pipeline {
            let a = self.arg(Arg::Text(v.clone()));
            let b = self.arg(Arg::Text(v.clone()));
            self.push(&format!(" AND (p.full_name = {a} OR p.name = {b})"));
        }
        if let Some(v) = &f.repo {
            let a = self.arg(Arg::Text(v.clone()));
            let b = self.arg(Arg::Text(v.clone()));
            let repo = self.d.json_repo;
            self.push(&format!(" AND (r.repo_url = {a} OR {repo} = {b})"));
        }
        if let Some(v) = &f.branch {
            let a = self.arg(Arg::Text(v.clone()));
            self.push(&format!(" AND r.branch = {a}"));
        }
        if let Some(v) = &f.environment {
            let a = self.arg(Arg::Text(v.clone()));
            self.push(&format!(" AND r.environment = {a}"));
        }
        if let Some(v) = &f.instance {
            let a = self.arg(Arg::Text(v.clone()));
            self.push(&format!(" AND i.guid = {a}"));
        }
    }
    fn between(&mut self, column: &str, since: OffsetDateTime, until: OffsetDateTime) {
        let a = self.arg(Arg::Int(cistern_core::to_millis(since)));
        let b = self.arg(Arg::Int(cistern_core::to_millis(until)));
        self.push(&format!(" AND {column} >= {a} AND {column} < {b}"));
    }
}

const FROM: &str = " FROM runs r JOIN pipelines p ON p.id = r.pipeline_id JOIN instances i ON i.id = r.instance_id";

/// Deployments finished in `[since, until)`: id, pipeline full name, environment, finished_at, result, cfr_status.
pub fn deployments<'d>(
    d: &'d Dialect,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Stmt<'d> {
    let mut s = Stmt::new(
        d,
        "SELECT r.id, p.full_name, r.environment, r.finished_at, r.result, r.cfr_status",
    );
    s.push(FROM);
    s.slice(tenant_id, f);
    s.push(" AND r.cd = TRUE AND r.finished_at IS NOT NULL");
    s.between("r.finished_at", since, until);
    s
}

/// The commits of those deployments: run id, sha.
pub fn deployment_commits<'d>(
    d: &'d Dialect,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Stmt<'d> {
    let mut s = Stmt::new(
        d,
        "SELECT rc.run_id, rc.sha FROM run_commits rc WHERE rc.run_id IN (SELECT r.id",
    );
    s.push(FROM);
    s.slice(tenant_id, f);
    s.push(" AND r.cd = TRUE AND r.finished_at IS NOT NULL");
    s.between("r.finished_at", since, until);
    s.push(")");
    s
}

/// The earliest known time of each sha those deployments shipped: sha, time (ms). Each sha is
/// looked up once, however many deployments shipped it: a timestamp a payload carried (the
/// run's commit, a change.merged event) wins; else the start of the first run that carried it.
///
/// Joined to [`deployment_commits`] in Rust ([`assemble_deployments`]), not in SQL: joining the
/// two derived tables made SQLite's bundled planner compare every deployment commit with every
/// sha (no index on a CTE), minutes over a year of history.
pub fn commit_first_seen<'d>(
    d: &'d Dialect,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Stmt<'d> {
    let mut s = Stmt::new(
        d,
        "WITH dc AS (SELECT rc.sha, rc.tenant_id FROM run_commits rc WHERE rc.run_id IN (SELECT r.id",
    );
    s.push(FROM);
    s.slice(tenant_id, f);
    s.push(" AND r.cd = TRUE AND r.finished_at IS NOT NULL");
    s.between("r.finished_at", since, until);
    s.push(
        ")) SELECT s.sha, COALESCE(\
           (SELECT MIN(u.x) FROM (SELECT ct.committed_at AS x FROM commit_times ct WHERE ct.tenant_id = s.tenant_id AND ct.sha = s.sha \
              UNION ALL SELECT c2.committed_at FROM run_commits c2 WHERE c2.tenant_id = s.tenant_id AND c2.sha = s.sha) u), \
           (SELECT MIN(r2.started_at) FROM run_commits c3 JOIN runs r2 ON r2.id = c3.run_id \
              WHERE c3.tenant_id = s.tenant_id AND c3.sha = s.sha)) AS at \
         FROM (SELECT DISTINCT tenant_id, sha FROM dc) s",
    );
    s
}

/// Runs started in `[since, until)`: pipeline, branch, result, started_at, finished_at, duration_ms, a commit.
pub fn ci_runs<'d>(
    d: &'d Dialect,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Stmt<'d> {
    let mut s = Stmt::new(
        d,
        "SELECT p.full_name, r.branch, r.result, r.started_at, r.finished_at, r.duration_ms, \
         (SELECT MIN(c.sha) FROM run_commits c WHERE c.run_id = r.id)",
    );
    s.push(FROM);
    s.slice(tenant_id, f);
    s.between("r.started_at", since, until);
    // A fixed order (ids are compared bytewise on both backends): runs of one pipeline and
    // branch that started in the same millisecond are taken in this order by red-to-green, and
    // the day rollups (`rollups`) keep it.
    s.push(" ORDER BY r.started_at, r.pipeline_id, r.id");
    s
}

/// Stage and step aggregates of runs started in `[since, until)`: pipeline, name, is_step, count,
/// failures, mean duration, max duration.
pub fn stage_stats<'d>(
    d: &'d Dialect,
    tenant_id: &str,
    f: &MetricsFilter,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Stmt<'d> {
    let mut s = Stmt::new(
        d,
        "SELECT p.full_name, CASE WHEN s.parent_idx IS NULL THEN s.name ELSE ps.name || ' / ' || s.name END AS sname, \
         CAST(CASE WHEN s.parent_idx IS NULL THEN 0 ELSE 1 END AS BIGINT) AS is_step, COUNT(*), \
         CAST(SUM(CASE WHEN s.result IN ('failure', 'error') THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(AVG(s.duration_ms) AS DOUBLE PRECISION), MAX(s.duration_ms) \
         FROM stages s JOIN runs r ON r.id = s.run_id JOIN pipelines p ON p.id = r.pipeline_id \
         JOIN instances i ON i.id = r.instance_id LEFT JOIN stages ps ON ps.run_id = s.run_id AND ps.idx = s.parent_idx",
    );
    s.slice(tenant_id, f);
    s.between("r.started_at", since, until);
    s.push(" GROUP BY p.full_name, sname, is_step");
    s
}

/// The latest failure log of one stage (or `stage / step`) of one pipeline.
pub fn last_failure_log<'d>(
    d: &'d Dialect,
    tenant_id: &str,
    pipeline: &str,
    name: &str,
) -> Stmt<'d> {
    let mut s = Stmt::new(
        d,
        "SELECT s.log FROM stages s JOIN runs r ON r.id = s.run_id JOIN pipelines p ON p.id = r.pipeline_id \
         LEFT JOIN stages ps ON ps.run_id = s.run_id AND ps.idx = s.parent_idx",
    );
    let t = s.arg(Arg::Text(tenant_id.to_owned()));
    let pl = s.arg(Arg::Text(pipeline.to_owned()));
    let n = s.arg(Arg::Text(name.to_owned()));
    s.push(&format!(
        " WHERE r.tenant_id = {t} AND p.full_name = {pl} AND s.result IN ('failure', 'error') AND s.log IS NOT NULL \
         AND (CASE WHEN s.parent_idx IS NULL THEN s.name ELSE ps.name || ' / ' || s.name END) = {n} \
         ORDER BY r.started_at DESC LIMIT 1"
    ));
    s
}

/// One deployment row: id, pipeline id, environment, finished_at (ms), result, cfr_status.
pub type DeploymentRow = (String, String, Option<String>, i64, String, Option<bool>);

/// Builds deployments from their rows and their commits' rows (run id, sha, earliest time ms).
pub fn assemble_deployments(
    rows: Vec<DeploymentRow>,
    commits: Vec<(String, String)>,
    first_seen: Vec<(String, Option<i64>)>,
) -> Vec<cistern_core::metrics::Deployment> {
    use cistern_core::RunResult;
    let first_seen: std::collections::HashMap<String, Option<i64>> =
        first_seen.into_iter().collect();
    let mut by_run: std::collections::HashMap<String, Vec<(String, Option<OffsetDateTime>)>> =
        std::collections::HashMap::new();
    for (run, sha) in commits {
        let at = first_seen.get(&sha).copied().flatten();
        by_run
            .entry(run)
            .or_default()
            .push((sha, at.map(cistern_core::from_millis)));
    }
    rows.into_iter()
        .map(|(id, pipeline, environment, finished, result, cfr)| {
            let result = RunResult::from_normalized(&result).unwrap_or(RunResult::Error);
            let mut commits = by_run.remove(&id).unwrap_or_default();
            commits.sort();
            cistern_core::metrics::Deployment {
                run_id: id,
                pipeline,
                environment,
                finished_at: cistern_core::from_millis(finished),
                succeeded: result == RunResult::Success,
                failed: result.is_failed(),
                cfr_status: cfr.unwrap_or(false),
                commits,
            }
        })
        .collect()
}

/// One stage aggregate row: pipeline, name, is_step, count, failures, avg ms, max ms.
pub type StageRow = (
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<f64>,
    Option<i64>,
);

/// Builds stage aggregates from their rows.
pub fn assemble_stage_stats(rows: Vec<StageRow>) -> Vec<cistern_core::metrics::StageStat> {
    let mut out: Vec<_> = rows
        .into_iter()
        .map(|(pipeline, name, is_step, runs, failures, avg, max)| {
            cistern_core::metrics::StageStat {
                pipeline,
                name,
                kind: if is_step != 0 {
                    "step".into()
                } else {
                    "stage".into()
                },
                runs: runs.max(0) as u64,
                failures: failures.unwrap_or(0).max(0) as u64,
                avg_duration_ms: avg,
                max_duration_ms: max,
                last_failure_log: None,
            }
        })
        .collect();
    sort_stage_stats(&mut out);
    out
}

/// Puts stage aggregates in a fixed order (pipeline, name, kind, bytewise): the most failing and
/// the slowest keep it among equals, whichever backend or path computed them.
pub fn sort_stage_stats(stats: &mut [cistern_core::metrics::StageStat]) {
    stats.sort_by(|a, b| (&a.pipeline, &a.name, &a.kind).cmp(&(&b.pipeline, &b.name, &b.kind)));
}

/// The most failing aggregates, whose latest failure log is worth fetching.
pub fn most_failing(stats: &[cistern_core::metrics::StageStat]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..stats.len())
        .filter(|i| stats[*i].failures > 0)
        .collect();
    idx.sort_by(|a, b| stats[*b].failures.cmp(&stats[*a].failures));
    idx.truncate(10);
    idx
}

/// The end of a log, for excerpts.
pub fn excerpt(log: &str) -> String {
    cistern_core::LogText::capped(log, 2000).text
}

/// Where earlier deployments are looked up from (they decide which commits were already shipped
/// and which deployment an incident follows).
pub fn history_start(since: OffsetDateTime) -> OffsetDateTime {
    since - time::Duration::days(90)
}
