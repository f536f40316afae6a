//! `cistern dev verify-acks`: checks a database against the acknowledgement logs of
//! `cistern bench ingest --ack-log` — every acknowledged request stored exactly once, its event
//! kept, its outbox notification present — and runs the store's integrity check. The crash test
//! (`scripts/crash-test.sh`) runs it after killing the hub under load.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::{Context, Result};
use cistern_store::{
    DeliveryFilter, EventFilter, EventStatus, EventType, PageRequest, RunFilter, Store,
};
use clap::Args;
use serde::Deserialize;
use serde_json::json;

/// Options of `cistern dev verify-acks`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An acknowledgement log written by `cistern bench ingest --ack-log` (repeatable: the logs
    /// of load generators posting the same runs to several nodes are checked together).
    #[arg(long = "ack-log", required = true, value_name = "FILE")]
    pub ack_logs: Vec<PathBuf>,
    /// A subscription that matches every run: each acknowledged run must have its
    /// `run.completed` delivery in the outbox, once.
    #[arg(long)]
    pub subscription: Option<String>,
    /// The execution-id prefix of the load generator's runs: runs with it are checked for
    /// duplicates.
    #[arg(long, default_value = "exec")]
    pub run_prefix: String,
    /// Tenant slug the runs were posted to.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One line of an acknowledgement log.
#[derive(Debug, Deserialize)]
struct Ack {
    execution_id: String,
    run_id: Option<String>,
    event_id: Option<String>,
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Acknowledged requests read from the logs.
    pub acknowledged: u64,
    /// Distinct runs they acknowledged.
    pub runs: u64,
    /// Acknowledged requests whose run is not in the database.
    pub lost: u64,
    /// Extra rows: runs stored more than once for one execution id.
    pub duplicated: u64,
    /// Acknowledged requests whose event is not in the events log.
    pub events_missing: u64,
    /// Acknowledged runs without their `run.completed` delivery.
    pub notifications_missing: u64,
    /// Extra `run.completed` deliveries of one run.
    pub notifications_duplicated: u64,
    /// Problems found by the store's integrity check.
    pub integrity_problems: Vec<String>,
    /// Checks the integrity check ran.
    pub integrity_checks: usize,
}

impl Findings {
    /// True when nothing was lost, doubled or broken.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.events_missing == 0
            && self.notifications_missing == 0
            && self.notifications_duplicated == 0
            && self.integrity_problems.is_empty()
    }
}

fn read_acks(paths: &[PathBuf]) -> Result<Vec<Ack>> {
    let mut out = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{} line {}", path.display(), i + 1))?,
            );
        }
    }
    Ok(out)
}

fn page(cursor: Option<String>) -> PageRequest {
    PageRequest { limit: 500, cursor }
}

/// Checks the store against the logs.
pub async fn verify(store: &dyn Store, args: &VerifyArgs) -> Result<Findings> {
    let acks = read_acks(&args.ack_logs)?;
    let tenant = store
        .tenant_by_slug(&args.tenant)
        .await?
        .with_context(|| format!("no tenant {:?}", args.tenant))?;
    let mut f = Findings {
        acknowledged: acks.len() as u64,
        ..Findings::default()
    };

    // Every run of the load generator, by execution id.
    let mut by_execution: HashMap<String, Vec<String>> = HashMap::new();
    let mut cursor = None;
    loop {
        let found = store
            .list_runs(&tenant.id, &RunFilter::default(), &page(cursor))
            .await?;
        for run in found.items {
            if let Some(e) = run.execution_id.filter(|e| e.starts_with(&args.run_prefix)) {
                by_execution.entry(e).or_default().push(run.id);
            }
        }
        match found.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    f.duplicated = by_execution
        .values()
        .map(|ids| ids.len().saturating_sub(1) as u64)
        .sum();

    let mut events = HashSet::new();
    let mut cursor = None;
    loop {
        let found = store
            .list_events(
                &tenant.id,
                &EventFilter {
                    status: Some(EventStatus::Accepted),
                    ..Default::default()
                },
                &page(cursor),
            )
            .await?;
        events.extend(found.items.into_iter().map(|e| e.id));
        match found.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }

    let mut acked_runs = HashSet::new();
    for ack in &acks {
        // The run acknowledged is the one stored for its execution id.
        let stored = by_execution
            .get(&ack.execution_id)
            .is_some_and(|ids| ack.run_id.as_ref().is_some_and(|r| ids.contains(r)));
        if !stored {
            f.lost += 1;
        }
        if let Some(id) = &ack.run_id {
            acked_runs.insert(id.clone());
        }
        if ack.event_id.as_ref().is_some_and(|e| !events.contains(e)) {
            f.events_missing += 1;
        }
    }
    f.runs = acked_runs.len() as u64;

    if let Some(sub) = &args.subscription {
        let mut completed: HashMap<String, u64> = HashMap::new();
        let mut cursor = None;
        loop {
            let found = store
                .list_deliveries(&tenant.id, sub, &DeliveryFilter::default(), &page(cursor))
                .await?;
            for d in found.items {
                if let (EventType::RunCompleted, Some(run)) = (d.event_type, d.run_id) {
                    *completed.entry(run).or_default() += 1;
                }
            }
            match found.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        for run in &acked_runs {
            match completed.get(run).copied().unwrap_or(0) {
                0 => f.notifications_missing += 1,
                n => f.notifications_duplicated += n - 1,
            }
        }
    }

    let report = store.integrity_check().await?;
    f.integrity_checks = report.checks.len();
    f.integrity_problems = report.problems;
    Ok(f)
}

/// Prints the findings; fails when anything was lost, doubled or broken.
pub fn report(f: &Findings, as_json: bool) -> Result<()> {
    if as_json {
        println!(
            "{}",
            json!({
                "acknowledged": f.acknowledged,
                "runs": f.runs,
                "lost": f.lost,
                "duplicated": f.duplicated,
                "events_missing": f.events_missing,
                "notifications_missing": f.notifications_missing,
                "notifications_duplicated": f.notifications_duplicated,
                "integrity_checks": f.integrity_checks,
                "integrity_problems": f.integrity_problems,
                "ok": f.ok(),
            })
        );
    } else {
        println!(
            "{} requests acknowledged ({} runs): {} lost, {} duplicated, {} events missing, {} notifications missing, {} notifications duplicated; integrity: {} ({} checks)",
            f.acknowledged,
            f.runs,
            f.lost,
            f.duplicated,
            f.events_missing,
            f.notifications_missing,
            f.notifications_duplicated,
            if f.integrity_problems.is_empty() {
                "ok".to_owned()
            } else {
                f.integrity_problems.join("; ")
            },
            f.integrity_checks
        );
    }
    if f.ok() {
        Ok(())
    } else {
        anyhow::bail!("the database does not hold every acknowledged request exactly once")
    }
}
