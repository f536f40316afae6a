//! The database's own check of itself, for operators and the crash test (`cistern dev
//! verify-acks`): the engine's check (SQLite `PRAGMA integrity_check` and `foreign_key_check`;
//! PostgreSQL `amcheck` on every B-tree index when that extension is installed) and the links
//! between tables that the writers keep (no stage, commit, delivery or attempt outlives what it
//! belongs to; no run identity twice).

use serde::Serialize;

/// What an integrity check ran and what it found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IntegrityReport {
    /// The checks that ran.
    pub checks: Vec<String>,
    /// What they found wrong (empty: the database is sound).
    pub problems: Vec<String>,
}

impl IntegrityReport {
    /// True when no check found a problem.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Counting queries shared by both backends: each counts rows that break one link. Each query
/// returns one integer.
pub const LINKS: &[(&str, &str)] = &[
    (
        "stages of a missing run",
        "SELECT COUNT(*) FROM stages s WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id)",
    ),
    (
        "commits of a missing run",
        "SELECT COUNT(*) FROM run_commits c WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = c.run_id)",
    ),
    (
        "runs of a missing pipeline",
        "SELECT COUNT(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM pipelines p WHERE p.id = r.pipeline_id)",
    ),
    (
        "runs of a missing instance",
        "SELECT COUNT(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = r.instance_id)",
    ),
    (
        "pipelines of a missing instance",
        "SELECT COUNT(*) FROM pipelines p WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = p.instance_id)",
    ),
    (
        "run identities stored twice",
        "SELECT COUNT(*) FROM (SELECT 1 FROM runs GROUP BY tenant_id, instance_id, pipeline_id, run_key HAVING COUNT(*) > 1) d",
    ),
    (
        "outbox messages of a missing run",
        "SELECT COUNT(*) FROM outbound_messages m WHERE m.run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = m.run_id)",
    ),
    (
        "deliveries of a missing message",
        "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM outbound_messages m WHERE m.id = d.message_id)",
    ),
    (
        "deliveries of a missing subscription",
        "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = d.subscription_id)",
    ),
    (
        "attempts of a missing delivery",
        "SELECT COUNT(*) FROM delivery_attempts a WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
    ),
];
