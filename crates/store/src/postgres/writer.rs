//! The PostgreSQL writer tasks. Each takes one queued write, drains more without waiting (up to
//! `max_batch`), applies them in one transaction on one pooled connection, commits, then answers.
//! Writes go straight into the transaction; only when one fails is the batch rolled back and
//! applied again with a savepoint per write, so the failing one sinks alone (as on SQLite).
//!
//! Several writers (of this node and of others) commit side by side. What they must not do is
//! interleave on one run: a run's new state is decided from its stored one (merge rules), so each
//! batch takes, up front and in one ascending order shared by every writer of every node, a
//! transaction-level advisory lock per run it writes. Batches writing different runs never wait
//! for each other. Instances and pipelines are written with `INSERT … ON CONFLICT … DO UPDATE …
//! RETURNING id`, for the whole batch before its runs and in key order (so two batches never
//! deadlock on them), and only when something about them changed: their ids and stored
//! attributes are kept by the node (see [`Known`]), and re-checked at least once a second.
//! A batch that loses a deadlock anyway is rolled back and replayed whole; nobody has been
//! answered yet, so that is invisible to callers.

use std::sync::Arc;
use std::time::Duration;

use cistern_core::{to_millis, FieldError, RunReport};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tokio::sync::{mpsc, Mutex};

use super::Job;
use crate::*;

/// How long a cached instance or pipeline is trusted without touching its row: an instance's
/// `last_seen_at` lags by at most this much, and a change to a pipeline or instance made by
/// another node is noticed within it.
const KNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// An instance as its row holds it, and when that was last checked.
#[derive(Debug, Clone)]
struct KnownInstance {
    id: String,
    name: Option<String>,
    url: Option<String>,
    kind: Option<String>,
    at: std::time::Instant,
}

impl KnownInstance {
    /// True when writing `i` would change nothing but `last_seen_at`.
    fn covers(&self, i: &cistern_core::InstanceRef) -> bool {
        (i.name.is_none() || i.name == self.name)
            && (i.url.is_none() || i.url == self.url)
            && (self.kind.is_some() || i.kind.is_none())
    }
}

/// A pipeline as its row holds it, and when that was last checked.
#[derive(Debug, Clone)]
struct KnownPipeline {
    id: String,
    name: String,
    qualified_name: Option<String>,
    project: Option<String>,
    module: Option<String>,
    at: std::time::Instant,
}

impl KnownPipeline {
    /// True when writing `p` would change nothing.
    fn covers(&self, p: &cistern_core::PipelineRef) -> bool {
        p.name == self.name
            && (p.qualified_name.is_none() || p.qualified_name == self.qualified_name)
            && (p.project.is_none() || p.project == self.project)
            && (p.module.is_none() || p.module == self.module)
    }
}

type InstanceKey = (String, String);
type PipelineKey = (String, String, String);

/// The instances and pipelines this node's writers have seen committed, shared by its writers.
/// Rows of both are never deleted, so a cached id stays valid; entries are only added after the
/// batch that wrote them committed.
#[derive(Debug, Default)]
pub(super) struct Known {
    instances: std::sync::Mutex<std::collections::HashMap<InstanceKey, KnownInstance>>,
    pipelines: std::sync::Mutex<std::collections::HashMap<PipelineKey, KnownPipeline>>,
}

/// The instances and pipelines of one batch attempt: looked up in [`Known`], written when
/// missing or changed; what this batch wrote joins [`Known`] once it has committed.
struct Ids<'a> {
    known: &'a Known,
    /// False in a write-by-write replay: a write may be rolled back to its savepoint, so what it
    /// wrote is not remembered.
    remember: bool,
    instances: std::collections::HashMap<InstanceKey, KnownInstance>,
    pipelines: std::collections::HashMap<PipelineKey, KnownPipeline>,
}

impl<'a> Ids<'a> {
    fn new(known: &'a Known, remember: bool) -> Self {
        Self {
            known,
            remember,
            instances: Default::default(),
            pipelines: Default::default(),
        }
    }

    fn cached_instance(&self, key: &InstanceKey) -> Option<KnownInstance> {
        self.instances.get(key).cloned().or_else(|| {
            self.known
                .instances
                .lock()
                .ok()
                .and_then(|m| m.get(key).cloned())
        })
    }

    fn cached_pipeline(&self, key: &PipelineKey) -> Option<KnownPipeline> {
        self.pipelines.get(key).cloned().or_else(|| {
            self.known
                .pipelines
                .lock()
                .ok()
                .and_then(|m| m.get(key).cloned())
        })
    }

    /// Drops what is known of an instance another kind of write (a heartbeat) is changing.
    fn forget_instance(&mut self, tenant_id: &str, guid: &str) {
        let key = (tenant_id.to_owned(), guid.to_owned());
        self.instances.remove(&key);
        if let Ok(mut m) = self.known.instances.lock() {
            m.remove(&key);
        }
    }

    /// After commit: what this batch wrote is now known to every writer of the node.
    fn committed(self) {
        if !self.remember {
            return;
        }
        if let Ok(mut m) = self.known.instances.lock() {
            m.extend(self.instances);
        }
        if let Ok(mut m) = self.known.pipelines.lock() {
            m.extend(self.pipelines);
        }
    }

    /// Writes the instances and pipelines of every run of the batch that need it, in key order,
    /// before any run: rows locked in one order by every writer cannot deadlock.
    async fn prepare(
        &mut self,
        conn: &mut PgConnection,
        batch: &[Job],
        now_of: impl Fn(&Job) -> i64,
    ) -> Result<(), Fail> {
        let mut runs: Vec<(&Tenant, &RunReport, i64)> = Vec::new();
        for job in batch {
            if let WriteOp::Runs {
                tenant, runs: rs, ..
            }
            | WriteOp::Signals {
                tenant, runs: rs, ..
            } = &job.op
            {
                if crate::keys::check_reports(rs, &[], &[]).is_ok() {
                    runs.extend(rs.iter().map(|r| (tenant, r, now_of(job))));
                }
            }
        }
        // Stable: a batch's several reports of one instance are written in the order they came.
        runs.sort_by(|a, b| (&a.0.id, &a.1.instance.guid).cmp(&(&b.0.id, &b.1.instance.guid)));
        let mut keyed: Vec<(PipelineKey, &RunReport, i64)> = Vec::with_capacity(runs.len());
        for (tenant, r, now) in &runs {
            match self.instance(conn, tenant, &r.instance, *now, "").await {
                // A partial report's pipeline is decided with its run (see `resolve_pipeline`).
                Ok(_) if r.partial => {}
                Ok(id) => keyed.push((
                    (tenant.id.clone(), id, r.pipeline.full_name.clone()),
                    r,
                    *now,
                )),
                // Refused (an unregistered instance of a strict tenant): its write says so.
                Err(Fail::Store(StoreError::Rejected(_))) => {}
                Err(f) => return Err(f),
            }
        }
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        for ((tenant_id, instance_id, _), r, now) in &keyed {
            self.pipeline(conn, tenant_id, instance_id, &r.pipeline, *now)
                .await?;
        }
        Ok(())
    }

    /// The id of an instance, created on first sight unless the tenant is strict.
    async fn instance(
        &mut self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        i: &cistern_core::InstanceRef,
        now: i64,
        field_prefix: &str,
    ) -> Result<String, Fail> {
        let key = (tenant.id.clone(), i.guid.clone());
        if let Some(k) = self.cached_instance(&key).filter(|k| k.covers(i)) {
            if k.at.elapsed() < KNOWN_FOR {
                return Ok(k.id);
            }
            // Known but not checked for a while: move `last_seen_at` on and read the row back,
            // without waiting when another transaction holds the row (it is writing it now, so
            // it is seen; the next run tries again).
            let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
                "UPDATE instances SET last_seen_at = GREATEST(last_seen_at, $2)
                 WHERE id = (SELECT id FROM instances WHERE id = $1 FOR UPDATE SKIP LOCKED)
                 RETURNING name, url, kind",
            )
            .bind(&k.id)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                None => return Ok(k.id),
                Some((name, url, kind)) => {
                    let fresh = KnownInstance {
                        name,
                        url,
                        kind,
                        at: std::time::Instant::now(),
                        ..k
                    };
                    if fresh.covers(i) {
                        let id = fresh.id.clone();
                        if self.remember {
                            self.instances.insert(key, fresh);
                        }
                        return Ok(id);
                    }
                }
            }
        }
        let row = instance_row(conn, tenant, i, now, field_prefix).await?;
        let id = row.id.clone();
        if self.remember {
            self.instances.insert(key, row);
        }
        Ok(id)
    }

    /// The id of a pipeline, created on first sight. An unnamed placeholder (a partial report's,
    /// empty name) is never kept: it is the one kind of pipeline that is ever deleted.
    async fn pipeline(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: &str,
        instance_id: &str,
        p: &cistern_core::PipelineRef,
        now: i64,
    ) -> Result<String, Fail> {
        if p.name.is_empty() {
            return Ok(pipeline_row(conn, tenant_id, instance_id, p, now).await?.id);
        }
        let key = (
            tenant_id.to_owned(),
            instance_id.to_owned(),
            p.full_name.clone(),
        );
        if let Some(k) = self.cached_pipeline(&key).filter(|k| k.covers(p)) {
            if k.at.elapsed() < KNOWN_FOR {
                return Ok(k.id);
            }
            // Known but not checked for a while: read it back (no lock taken).
            let (name, qualified_name, project, module): (
                String,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = sqlx::query_as(
                "SELECT name, qualified_name, project, module FROM pipelines WHERE id = $1",
            )
            .bind(&k.id)
            .fetch_one(&mut *conn)
            .await?;
            let fresh = KnownPipeline {
                name,
                qualified_name,
                project,
                module,
                at: std::time::Instant::now(),
                ..k
            };
            if fresh.covers(p) {
                let id = fresh.id.clone();
                if self.remember {
                    self.pipelines.insert(key, fresh);
                }
                return Ok(id);
            }
        }
        let row = pipeline_row(conn, tenant_id, instance_id, p, now).await?;
        let id = row.id.clone();
        if self.remember {
            self.pipelines.insert(key, row);
        }
        Ok(id)
    }
}

/// Enabled subscriptions by tenant id.
type Subscriptions = std::collections::HashMap<String, Vec<Subscription>>;

/// Attempts of a batch that keeps losing deadlocks or serialization checks.
const MAX_ATTEMPTS: u32 = 5;

/// Why a write failed.
enum Fail {
    /// A store-level refusal or error, answered as is.
    Store(StoreError),
    /// The database failed; some failures are worth replaying the batch for.
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Store(e) => e,
            Fail::Db(e) => e.into(),
        }
    }
}

impl From<super::outbound::EnqueueError> for Fail {
    fn from(e: super::outbound::EnqueueError) -> Self {
        match e {
            super::outbound::EnqueueError::Db(e) => Fail::Db(e),
            super::outbound::EnqueueError::Store(e) => Fail::Store(e),
        }
    }
}

impl Fail {
    /// True for a deadlock or serialization failure: the transaction may succeed when replayed.
    fn retryable(&self) -> bool {
        match self {
            Fail::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40P01") | Some("40001"))
            }
            _ => false,
        }
    }
}

/// One writer task: runs until every sender is gone.
pub(super) async fn run(
    n: usize,
    pool: PgPool,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    settings: StoreSettings,
    signal: Arc<tokio::sync::Notify>,
    stats: Arc<WriterStats>,
    known: Arc<Known>,
) {
    loop {
        let batch = {
            // The lock is held while waiting, so one writer at a time gathers a batch and the
            // others queue up behind it, ready for the next one.
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { break };
            let mut batch = vec![first];
            while batch.len() < settings.max_batch {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        let started = std::time::Instant::now();
        let (results, committed) = apply_batch(&pool, &batch, &settings, &known).await;
        stats.record(batch.len(), started.elapsed(), committed);
        if results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|o| o.deliveries > 0))
        {
            // Committed: wake this node's delivery worker (other nodes poll).
            signal.notify_one();
        }
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
    tracing::debug!(writer = n, "PostgreSQL writer stopped: all senders gone");
}

async fn apply_batch(
    pool: &PgPool,
    batch: &[Job],
    settings: &StoreSettings,
    known: &Known,
) -> (Vec<Result<WriteOutcome, StoreError>>, bool) {
    let mut attempt = 1;
    // Optimistic first: every write straight into the transaction. When one fails for its own
    // reasons, the batch is applied again write by write, each in its own savepoint.
    let mut isolated = false;
    loop {
        match try_batch(pool, batch, settings, known, isolated).await {
            Ok(Some(results)) => return (results, true),
            Ok(None) => isolated = true,
            Err(f) if f.retryable() && attempt < MAX_ATTEMPTS => {
                // Jitter, so the two losers of a deadlock do not meet again at once.
                let ms = 5 * u64::from(attempt) + (uuid::Uuid::new_v4().as_u128() % 20) as u64;
                tracing::debug!(attempt, size = batch.len(), error = %StoreError::from(f), "replaying a write batch");
                tokio::time::sleep(Duration::from_millis(ms)).await;
                attempt += 1;
            }
            Err(f) => {
                let msg = match StoreError::from(f) {
                    StoreError::Backend(m) => m,
                    other => other.to_string(),
                };
                tracing::error!(error = %msg, size = batch.len(), "group commit failed");
                let failed = batch
                    .iter()
                    .map(|_| Err(StoreError::Backend(msg.clone())))
                    .collect();
                return (failed, false);
            }
        }
    }
}

async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), Fail> {
    // A plain &str runs through the simple-query protocol: no statement to prepare.
    sqlx::Executor::execute(conn, sql).await?;
    Ok(())
}

/// One attempt at a batch. `Err` means the whole batch failed and nothing was committed: a
/// control statement failed, the commit failed, or a job hit a retryable error. `Ok(None)`: a
/// write failed in the optimistic pass; nothing was committed and the batch must be applied
/// again write by write.
async fn try_batch(
    pool: &PgPool,
    batch: &[Job],
    settings: &StoreSettings,
    known: &Known,
    isolated: bool,
) -> Result<Option<Vec<Result<WriteOutcome, StoreError>>>, Fail> {
    let mut tx = pool.begin().await?;
    let mut ids = Ids::new(known, !isolated);
    let applied = if isolated {
        apply_isolated(&mut tx, batch, settings, &mut ids)
            .await
            .map(Some)
    } else {
        apply_all(&mut tx, batch, settings, &mut ids).await
    };
    let results = match applied {
        Ok(Some(results)) => results,
        Ok(None) => {
            tx.rollback().await?;
            return Ok(None);
        }
        Err(f) => {
            // Roll back now rather than when the connection is next used, so that the locks
            // go at once (a deadlock's other side is waiting for them).
            let _ = tx.rollback().await;
            return Err(f);
        }
    };
    // A failed COMMIT is never replayed: the outcome of a COMMIT lost in transit is unknown.
    tx.commit().await.map_err(|e| {
        Fail::Store(StoreError::Backend(format!(
            "commit of {} writes failed: {e}",
            batch.len()
        )))
    })?;
    ids.committed();
    Ok(Some(results))
}

/// What every pass over a batch starts with: the runs' locks, then every tenant's enabled
/// subscriptions in one round trip (the outbox rows of each write are decided from them).
async fn begin_pass(tx: &mut PgConnection, batch: &[Job]) -> Result<Subscriptions, Fail> {
    lock_runs(tx, batch).await?;
    let tenants: Vec<&str> = batch
        .iter()
        .filter_map(|job| match &job.op {
            WriteOp::Runs { tenant, .. } | WriteOp::Signals { tenant, .. } => {
                Some(tenant.id.as_str())
            }
            _ => None,
        })
        .collect();
    Ok(super::outbound::enabled_subscriptions(tx, &tenants).await?)
}

/// The optimistic pass: every write straight into the transaction, no savepoints. `None` when a
/// write failed for its own reasons (the caller rolls back and replays write by write).
async fn apply_all(
    tx: &mut PgConnection,
    batch: &[Job],
    settings: &StoreSettings,
    ids: &mut Ids<'_>,
) -> Result<Option<Vec<Result<WriteOutcome, StoreError>>>, Fail> {
    let subs = begin_pass(tx, batch).await?;
    ids.prepare(tx, batch, |job| match &job.op {
        WriteOp::Runs { event, .. } | WriteOp::Signals { event, .. } => {
            to_millis(event.received_at)
        }
        _ => 0,
    })
    .await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        match apply(tx, &job.op, &subs, settings, ids).await {
            Ok(out) => results.push(Ok(out)),
            Err(f) if f.retryable() => return Err(f),
            Err(f) => {
                // Replayed write by write; worth knowing when it happens often.
                tracing::debug!(size = batch.len(), error = %StoreError::from(f), "a write failed in the optimistic pass");
                return Ok(None);
            }
        }
    }
    Ok(Some(results))
}

/// Applies each job of a batch in its own savepoint inside the open transaction. A job's
/// ordinary failure is rolled back to its savepoint and becomes its answer; any other failure
/// (a savepoint statement failing, a deadlock) fails the whole batch.
async fn apply_isolated(
    tx: &mut PgConnection,
    batch: &[Job],
    settings: &StoreSettings,
    ids: &mut Ids<'_>,
) -> Result<Vec<Result<WriteOutcome, StoreError>>, Fail> {
    let subs = begin_pass(tx, batch).await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        exec(tx, "SAVEPOINT w").await?;
        match apply(tx, &job.op, &subs, settings, ids).await {
            Ok(out) => {
                exec(tx, "RELEASE SAVEPOINT w").await?;
                results.push(Ok(out));
            }
            Err(f) if f.retryable() => return Err(f),
            Err(f) => {
                exec(tx, "ROLLBACK TO SAVEPOINT w").await?;
                let mut e = StoreError::from(f);
                let refused_event = match &job.op {
                    WriteOp::Runs { event, .. }
                    | WriteOp::Signals { event, .. }
                    | WriteOp::Heartbeat { event, .. }
                    | WriteOp::JobConfigChange { event, .. } => Some(event),
                    _ => None,
                };
                if let (StoreError::Rejected(errors), Some(event)) = (&e, refused_event) {
                    // Keep the raw request, marked rejected with the reason, like any refusal.
                    let mut ev = event.clone();
                    ev.status = EventStatus::Rejected;
                    ev.http_status = 422;
                    ev.errors = errors.clone();
                    let id = new_id();
                    match insert_event(tx, &id, &ev, &[], settings).await {
                        Ok(()) => e = StoreError::RejectedLogged(errors.clone(), id),
                        Err(e2) => {
                            if e2.retryable() {
                                return Err(e2);
                            }
                            tracing::error!(error = %StoreError::from(e2), "could not log a rejected event");
                            exec(tx, "ROLLBACK TO SAVEPOINT w").await?;
                        }
                    }
                }
                exec(tx, "RELEASE SAVEPOINT w").await?;
                results.push(Err(e));
            }
        }
    }
    Ok(results)
}

/// A stable 64-bit hash (FNV-1a), the same in every process and every build.
fn fnv1a(parts: &[&str]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h as i64
}

/// Takes, in one ascending order shared by every writer of every node, a transaction-level
/// advisory lock per run the batch writes (tenant, instance and run key: a run's identity
/// within its instance), one per instance with partial reports, and one per instance a
/// heartbeat or a configuration change writes. A run's new state is decided from its stored
/// one, so two transactions must not write one run at once; transactions writing different
/// runs do not wait for each other.
async fn lock_runs(conn: &mut PgConnection, batch: &[Job]) -> Result<(), Fail> {
    // A run of a closed day (one the CI-day rollups may already hold) makes the `runs` trigger
    // bump that day's mark in `ci_days_dirty`, a row lock held to commit. Two batches writing
    // the same past days in different orders would deadlock on those rows (a backfill, a
    // satellite's spool after an outage, `dev seed`), so such batches take turns per tenant;
    // batches of live runs (today's) do not touch the marks and stay side by side. The horizon
    // is the trigger's (a day ending within the hour), with a minute of margin for the clock.
    let horizon = cistern_core::to_millis(OffsetDateTime::now_utc()) + 3_660_000;
    let closed_day = |r: &RunReport| {
        let day = cistern_core::to_millis(r.started_at).div_euclid(86_400_000);
        (day + 1) * 86_400_000 <= horizon
    };
    let mut keys: Vec<i64> = batch
        .iter()
        .filter_map(|job| match &job.op {
            WriteOp::Runs { tenant, runs, .. } | WriteOp::Signals { tenant, runs, .. } => Some(
                runs.iter()
                    .flat_map(|r| {
                        // Not the pipeline: a partial report may name its run's pipeline late
                        // (see `resolve_pipeline`), and must still wait for the run's writers.
                        let run = fnv1a(&["run", &tenant.id, &r.instance.guid, &r.run_key]);
                        // Partial reports of an instance also share its unnamed placeholder
                        // pipeline, which one of them may delete: they take turns.
                        let partial = r
                            .partial
                            .then(|| fnv1a(&["partial", &tenant.id, &r.instance.guid]));
                        let past = closed_day(r).then(|| fnv1a(&["past-days", &tenant.id]));
                        std::iter::once(run).chain(partial).chain(past)
                    })
                    .collect::<Vec<_>>(),
            ),
            WriteOp::Heartbeat {
                tenant, heartbeat, ..
            } => Some(vec![fnv1a(&[
                "instance",
                &tenant.id,
                &heartbeat.instance_guid,
            ])]),
            WriteOp::JobConfigChange { tenant, change, .. } => Some(vec![fnv1a(&[
                "instance",
                &tenant.id,
                &change.instance.guid,
            ])]),
            _ => None,
        })
        .flatten()
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    // UNNEST yields the array in order, and each row's lock is taken as the row is produced.
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::bigint[]) AS k")
        .bind(keys)
        .execute(conn)
        .await?;
    Ok(())
}

async fn apply(
    conn: &mut PgConnection,
    op: &WriteOp,
    subs: &Subscriptions,
    settings: &StoreSettings,
    ids: &mut Ids<'_>,
) -> Result<WriteOutcome, Fail> {
    match op {
        WriteOp::Reject { event } => {
            let id = new_id();
            insert_event(conn, &id, event, &[], settings).await?;
            Ok(WriteOutcome {
                event_id: id,
                runs: vec![],
                instance: None,
                deliveries: 0,
            })
        }
        WriteOp::Runs {
            event,
            tenant,
            runs,
        } => apply_runs(conn, event, tenant, runs, &[], &[], subs, settings, ids).await,
        WriteOp::Signals {
            event,
            tenant,
            runs,
            incidents,
            commit_times,
        } => {
            apply_runs(
                conn,
                event,
                tenant,
                runs,
                incidents,
                commit_times,
                subs,
                settings,
                ids,
            )
            .await
        }
        WriteOp::Heartbeat {
            event,
            tenant,
            heartbeat,
        } => {
            ids.forget_instance(&tenant.id, &heartbeat.instance_guid);
            apply_heartbeat(conn, event, tenant, heartbeat, settings).await
        }
        WriteOp::JobConfigChange {
            event,
            tenant,
            change,
        } => {
            crate::keys::check_guid("payload.jenkins_instance_guid", &change.instance.guid)
                .map_err(Fail::Store)?;
            let now = to_millis(event.received_at);
            let instance = ids
                .instance(conn, tenant, &change.instance, now, "payload.")
                .await?;
            let pipeline = ids
                .pipeline(conn, &tenant.id, &instance, &change.pipeline, now)
                .await?;
            // A change reported late never moves the recorded time back.
            sqlx::query(
                "UPDATE pipelines SET config_changed_at = GREATEST(config_changed_at, $2) WHERE id = $1",
            )
            .bind(&pipeline)
            .bind(to_millis(change.changed_at))
            .execute(&mut *conn)
            .await?;
            let event_id = new_id();
            insert_event(conn, &event_id, event, &[], settings).await?;
            Ok(WriteOutcome {
                event_id,
                runs: vec![],
                instance: None,
                deliveries: 0,
            })
        }
        WriteOp::RegisterInstance {
            event,
            tenant_id,
            instance,
        } => {
            if let Some(guid) = &instance.guid {
                crate::keys::check_guid("guid", guid).map_err(Fail::Store)?;
            }
            let now = to_millis(event.received_at);
            // The same instance registered again (same integration id, name and type, and the
            // same GUID when one is asked for) gets the instance it already has. Registrations
            // of one instance are serialized so that two at once make one.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(fnv1a(&[
                    "register",
                    tenant_id,
                    &instance.integration_id,
                    &instance.name,
                    &instance.kind,
                ]))
                .execute(&mut *conn)
                .await?;
            let known: Option<(String, String, Option<String>, i64)> = sqlx::query_as(
                "SELECT id, guid, url, created_at FROM instances
                 WHERE tenant_id = $1 AND integration_id = $2 AND name = $3 AND kind = $4
                   AND ($5::text IS NULL OR guid = $5)
                 ORDER BY created_at, id LIMIT 1",
            )
            .bind(tenant_id)
            .bind(&instance.integration_id)
            .bind(&instance.name)
            .bind(&instance.kind)
            .bind(&instance.guid)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((id, guid, url, created_at)) = known {
                let event_id = new_id();
                insert_event(conn, &event_id, event, &[], settings).await?;
                return Ok(WriteOutcome {
                    event_id,
                    runs: vec![],
                    instance: Some(Instance {
                        id,
                        guid,
                        name: Some(instance.name.clone()),
                        url,
                        kind: Some(instance.kind.clone()),
                        integration_id: Some(instance.integration_id.clone()),
                        created_at: cistern_core::from_millis(created_at),
                        last_seen_at: None,
                        last_heartbeat_at: None,
                        details: None,
                    }),
                    deliveries: 0,
                });
            }
            let inst = Instance {
                id: new_id(),
                guid: instance
                    .guid
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                name: Some(instance.name.clone()),
                url: instance.url.clone(),
                kind: Some(instance.kind.clone()),
                integration_id: Some(instance.integration_id.clone()),
                created_at: cistern_core::from_millis(now),
                last_seen_at: None,
                last_heartbeat_at: None,
                details: None,
            };
            let done = sqlx::query(
                "INSERT INTO instances (id, tenant_id, guid, name, url, kind, integration_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant_id, guid) DO NOTHING",
            )
            .bind(&inst.id)
            .bind(tenant_id)
            .bind(&inst.guid)
            .bind(&inst.name)
            .bind(&inst.url)
            .bind(&inst.kind)
            .bind(&inst.integration_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 0 {
                return Err(Fail::Store(StoreError::Conflict(format!(
                    "an instance with guid {:?} already exists",
                    inst.guid
                ))));
            }
            let event_id = new_id();
            insert_event(conn, &event_id, event, &[], settings).await?;
            Ok(WriteOutcome {
                event_id,
                runs: vec![],
                instance: Some(inst),
                deliveries: 0,
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply_runs(
    conn: &mut PgConnection,
    event: &EventRecord,
    tenant: &Tenant,
    runs: &[RunReport],
    incidents: &[cistern_core::IncidentReport],
    commit_times: &[(String, OffsetDateTime, Option<String>)],
    subs: &Subscriptions,
    settings: &StoreSettings,
    ids: &mut Ids<'_>,
) -> Result<WriteOutcome, Fail> {
    crate::keys::check_reports(runs, incidents, commit_times).map_err(Fail::Store)?;
    if let Some(key) = &event.dedupe_key {
        let first: Option<String> =
            sqlx::query_scalar("SELECT id FROM events WHERE tenant_id = $1 AND dedupe_key = $2")
                .bind(&tenant.id)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(first) = first {
            return Err(Fail::Store(StoreError::Duplicate(first)));
        }
    }
    let event_id = new_id();
    // The outbox rows go in this same transaction: an acknowledged run always has them.
    let subs: &[Subscription] = subs.get(&tenant.id).map(Vec::as_slice).unwrap_or(&[]);
    let mut queued = 0;
    let mut written = Vec::with_capacity(runs.len());
    for (i, r) in runs.iter().enumerate() {
        let (w, facts) = upsert_run(
            conn,
            ids,
            tenant,
            &event_id,
            event.received_at,
            r,
            i,
            runs.len(),
        )
        .await?;
        if !subs.is_empty() {
            queued +=
                super::outbound::enqueue_run(conn, &tenant.id, subs, &facts, event.received_at)
                    .await?;
        }
        written.push(w);
    }
    let now = to_millis(event.received_at);
    for inc in incidents {
        // Insert first, alone: whether it inserted is exactly "first sight of this incident",
        // even when another node records the same incident at the same time.
        let opened = sqlx::query(
            "INSERT INTO incidents (tenant_id, source, incident_id, service, environment, detected_at, resolved_at, description, url, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant_id, source, incident_id) DO NOTHING",
        )
        .bind(&tenant.id)
        .bind(&inc.source)
        .bind(&inc.id)
        .bind(&inc.service)
        .bind(&inc.environment)
        .bind(inc.detected_at.map(to_millis))
        .bind(inc.resolved_at.map(to_millis))
        .bind(&inc.description)
        .bind(&inc.url)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            > 0;
        if opened {
            if !subs.is_empty() {
                queued += super::outbound::enqueue_incident(
                    conn,
                    &tenant.id,
                    subs,
                    inc,
                    event.received_at,
                )
                .await?;
            }
            continue;
        }
        sqlx::query(
            "INSERT INTO incidents (tenant_id, source, incident_id, service, environment, detected_at, resolved_at, description, url, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant_id, source, incident_id) DO UPDATE SET
               service = COALESCE(EXCLUDED.service, incidents.service),
               environment = COALESCE(EXCLUDED.environment, incidents.environment),
               detected_at = LEAST(incidents.detected_at, EXCLUDED.detected_at),
               resolved_at = COALESCE(EXCLUDED.resolved_at, incidents.resolved_at),
               description = COALESCE(EXCLUDED.description, incidents.description),
               url = COALESCE(EXCLUDED.url, incidents.url), updated_at = EXCLUDED.updated_at",
        )
        .bind(&tenant.id)
        .bind(&inc.source)
        .bind(&inc.id)
        .bind(&inc.service)
        .bind(&inc.environment)
        .bind(inc.detected_at.map(to_millis))
        .bind(inc.resolved_at.map(to_millis))
        .bind(&inc.description)
        .bind(&inc.url)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    for (sha, at, repo) in commit_times {
        sqlx::query(
            "INSERT INTO commit_times (tenant_id, sha, committed_at, repo) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, sha) DO UPDATE SET committed_at = LEAST(commit_times.committed_at, EXCLUDED.committed_at),
               repo = COALESCE(commit_times.repo, EXCLUDED.repo)",
        )
        .bind(&tenant.id)
        .bind(sha)
        .bind(to_millis(*at))
        .bind(repo)
        .execute(&mut *conn)
        .await?;
    }
    let ids: Vec<String> = written.iter().map(|w| w.id.clone()).collect();
    insert_event(conn, &event_id, event, &ids, settings).await?;
    Ok(WriteOutcome {
        event_id,
        runs: written,
        instance: None,
        deliveries: queued,
    })
}

async fn insert_event(
    conn: &mut PgConnection,
    id: &str,
    ev: &EventRecord,
    run_ids: &[String],
    settings: &StoreSettings,
) -> Result<(), Fail> {
    let (raw, truncated) = kept_body(&ev.body, settings.max_event_body_bytes);
    let compressed = compress_body(&ev.body, settings.max_event_body_bytes);
    let (body, codec) = match &compressed {
        Some(z) => (z.as_slice(), Some(BODY_CODEC_ZSTD)),
        None => (raw, None),
    };
    let errors = if ev.errors.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&ev.errors).unwrap_or_default())
    };
    let run_ids = if run_ids.is_empty() {
        None
    } else {
        Some(serde_json::to_string(run_ids).unwrap_or_default())
    };
    sqlx::query(
        "INSERT INTO events (id, tenant_id, received_at, endpoint, dialect, request_type, status, http_status, errors, run_ids,
           content_type, body, body_size, body_truncated, key_id, source_id, dedupe_key, body_codec)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(id)
    .bind(&ev.tenant_id)
    .bind(to_millis(ev.received_at))
    .bind(&ev.endpoint)
    .bind(&ev.dialect)
    .bind(&ev.request_type)
    .bind(ev.status.as_str())
    .bind(i32::from(ev.http_status))
    .bind(errors)
    .bind(run_ids)
    .bind(&ev.content_type)
    .bind(body)
    .bind(ev.body.len() as i64)
    .bind(truncated)
    .bind(&ev.key_id)
    .bind(&ev.source_id)
    // Only an accepted delivery claims its id: a refused one may be sent again, fixed.
    .bind(ev.dedupe_key.as_ref().filter(|_| ev.status == EventStatus::Accepted))
    .bind(codec)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the run's instance (created on first sight unless the tenant is strict) and returns
/// its row as stored.
async fn instance_row(
    conn: &mut PgConnection,
    tenant: &Tenant,
    i: &cistern_core::InstanceRef,
    now: i64,
    field_prefix: &str,
) -> Result<KnownInstance, Fail> {
    type Row = (String, Option<String>, Option<String>, Option<String>);
    let row: Option<Row> = if tenant.strict {
        // The existence check and the update in one statement: no row, no instance.
        sqlx::query_as(
            "UPDATE instances SET name = COALESCE($3, name), url = COALESCE($4, url), kind = COALESCE(kind, $5),
             last_seen_at = GREATEST(last_seen_at, $6)
             WHERE tenant_id = $1 AND guid = $2 RETURNING id, name, url, kind",
        )
        .bind(&tenant.id)
        .bind(&i.guid)
        .bind(&i.name)
        .bind(&i.url)
        .bind(&i.kind)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?
    } else if let Some(k) = existing_instance(conn, tenant, i, now).await? {
        // Known to the database and nothing to change: no lock that a foreign key check of
        // another transaction's runs would conflict with (the upsert below locks the row
        // exclusively, which is how two batches could deadlock).
        return Ok(k);
    } else {
        sqlx::query_as(
            "INSERT INTO instances (id, tenant_id, guid, name, url, kind, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (tenant_id, guid) DO UPDATE SET
                name = COALESCE(EXCLUDED.name, instances.name),
                url = COALESCE(EXCLUDED.url, instances.url),
                kind = COALESCE(instances.kind, EXCLUDED.kind),
                last_seen_at = GREATEST(instances.last_seen_at, EXCLUDED.last_seen_at)
             RETURNING id, name, url, kind",
        )
        .bind(new_id())
        .bind(&tenant.id)
        .bind(&i.guid)
        .bind(&i.name)
        .bind(&i.url)
        .bind(&i.kind)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?
    };
    let Some((id, name, url, kind)) = row else {
        return Err(Fail::Store(StoreError::Rejected(vec![FieldError::new(
            format!("{field_prefix}instance_guid"),
            format!(
                "instance {:?} is not registered and tenant {:?} only accepts registered instances; register it first (POST /api/v1/instances or /v1/custom-cicd with integration_id, name, type and optionally its guid)",
                i.guid, tenant.slug
            ),
        )])));
    };
    Ok(KnownInstance {
        id,
        name,
        url,
        kind,
        at: std::time::Instant::now(),
    })
}

/// The instance when its row exists (or is inserted now, on first sight) and already holds the
/// report's attributes; its `last_seen_at` moved on unless another transaction holds the row.
async fn existing_instance(
    conn: &mut PgConnection,
    tenant: &Tenant,
    i: &cistern_core::InstanceRef,
    now: i64,
) -> Result<Option<KnownInstance>, Fail> {
    type Row = (String, Option<String>, Option<String>, Option<String>);
    let known = |(id, name, url, kind): Row| KnownInstance {
        id,
        name,
        url,
        kind,
        at: std::time::Instant::now(),
    };
    let inserted: Option<Row> = sqlx::query_as(
        "INSERT INTO instances (id, tenant_id, guid, name, url, kind, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (tenant_id, guid) DO NOTHING RETURNING id, name, url, kind",
    )
    .bind(new_id())
    .bind(&tenant.id)
    .bind(&i.guid)
    .bind(&i.name)
    .bind(&i.url)
    .bind(&i.kind)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok(Some(known(row)));
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, name, url, kind FROM instances WHERE tenant_id = $1 AND guid = $2",
    )
    .bind(&tenant.id)
    .bind(&i.guid)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(k) = row.map(known).filter(|k| k.covers(i)) else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE instances SET last_seen_at = GREATEST(last_seen_at, $2)
         WHERE id = (SELECT id FROM instances WHERE id = $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(&k.id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Some(k))
}

/// Writes the run's pipeline (created on first sight) and returns its row as stored.
async fn pipeline_row(
    conn: &mut PgConnection,
    tenant_id: &str,
    instance_id: &str,
    p: &cistern_core::PipelineRef,
    now: i64,
) -> Result<KnownPipeline, Fail> {
    type Row = (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let known = |(id, name, qualified_name, project, module): Row| KnownPipeline {
        id,
        name,
        qualified_name,
        project,
        module,
        at: std::time::Instant::now(),
    };
    // First sight, or nothing to change: no exclusive row lock (see `existing_instance`).
    let inserted: Option<Row> = sqlx::query_as(
        "INSERT INTO pipelines (id, tenant_id, instance_id, full_name, name, qualified_name, project, module, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, instance_id, full_name) DO NOTHING
         RETURNING id, name, qualified_name, project, module",
    )
    .bind(new_id())
    .bind(tenant_id)
    .bind(instance_id)
    .bind(&p.full_name)
    .bind(&p.name)
    .bind(&p.qualified_name)
    .bind(&p.project)
    .bind(&p.module)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok(known(row));
    }
    let stored: Option<Row> = sqlx::query_as(
        "SELECT id, name, qualified_name, project, module FROM pipelines
         WHERE tenant_id = $1 AND instance_id = $2 AND full_name = $3",
    )
    .bind(tenant_id)
    .bind(instance_id)
    .bind(&p.full_name)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(k) = stored.map(known).filter(|k| k.covers(p)) {
        return Ok(k);
    }
    let (id, name, qualified_name, project, module): Row = sqlx::query_as(
        "INSERT INTO pipelines (id, tenant_id, instance_id, full_name, name, qualified_name, project, module, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, instance_id, full_name) DO UPDATE SET
            name = EXCLUDED.name,
            qualified_name = COALESCE(EXCLUDED.qualified_name, pipelines.qualified_name),
            project = COALESCE(EXCLUDED.project, pipelines.project),
            module = COALESCE(EXCLUDED.module, pipelines.module)
         RETURNING id, name, qualified_name, project, module",
    )
    .bind(new_id())
    .bind(tenant_id)
    .bind(instance_id)
    .bind(&p.full_name)
    .bind(&p.name)
    .bind(&p.qualified_name)
    .bind(&p.project)
    .bind(&p.module)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(KnownPipeline {
        id,
        name,
        qualified_name,
        project,
        module,
        at: std::time::Instant::now(),
    })
}

/// The pipeline a run report goes to. A partial report names its run by key within its
/// instance and source: an unnamed one (empty pipeline name) goes to the pipeline of the run of
/// that key when there is one, else to its placeholder pipeline; a named one takes over a run of
/// its key left in an unnamed placeholder (moving it, and dropping the emptied placeholder).
/// The batch holds an advisory lock per instance with partial reports (see [`lock_runs`]), which
/// keeps this consistent between writers and nodes.
async fn resolve_pipeline(
    conn: &mut PgConnection,
    ids: &mut Ids<'_>,
    tenant_id: &str,
    instance_id: &str,
    r: &RunReport,
    now: i64,
) -> Result<String, Fail> {
    if !r.partial {
        return ids
            .pipeline(conn, tenant_id, instance_id, &r.pipeline, now)
            .await;
    }
    let found: Option<(String, String, bool)> = sqlx::query_as(
        "SELECT r.id, r.pipeline_id, p.name = '' FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
         WHERE r.tenant_id = $1 AND r.instance_id = $2 AND r.run_key = $3 AND r.source = $4
         ORDER BY p.name = '', r.id LIMIT 1",
    )
    .bind(tenant_id)
    .bind(instance_id)
    .bind(&r.run_key)
    .bind(&r.source)
    .fetch_optional(&mut *conn)
    .await?;
    if r.pipeline.name.is_empty() {
        if let Some((_, pipeline, _)) = found {
            return Ok(pipeline);
        }
        return ids
            .pipeline(conn, tenant_id, instance_id, &r.pipeline, now)
            .await;
    }
    let target = ids
        .pipeline(conn, tenant_id, instance_id, &r.pipeline, now)
        .await?;
    if let Some((run, placeholder, true)) = found {
        if placeholder != target {
            sqlx::query("UPDATE runs SET pipeline_id = $2 WHERE id = $1")
                .bind(&run)
                .bind(&target)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "DELETE FROM pipelines WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM runs WHERE pipeline_id = $1)",
            )
            .bind(&placeholder)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(target)
}

/// The columns and values of a run row (`$1` its proposed id, `$27` the time received).
macro_rules! run_insert {
    ($tail:literal) => {
        concat!(
            "INSERT INTO runs (id, tenant_id, pipeline_id, instance_id, run_key, build_number, execution_id, result, source_result,
            started_at, finished_at, duration_ms, triggered_by, branch, repo_url, ci, cd, environment, cfr_status, web_url, job_type,
            source, event_id, detail, log, log_truncated, received_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $27)
         ",
            $tail
        )
    };
}

/// Inserts a run unless it exists (then no row comes back).
const RUN_INSERT_NEW: &str = run_insert!(
    "ON CONFLICT (tenant_id, instance_id, pipeline_id, run_key) DO NOTHING RETURNING id"
);

/// Inserts a run or replaces the stored one's state, keeping its id.
const RUN_UPSERT: &str = run_insert!(
    "ON CONFLICT (tenant_id, instance_id, pipeline_id, run_key) DO UPDATE SET
            build_number = EXCLUDED.build_number, execution_id = EXCLUDED.execution_id, result = EXCLUDED.result,
            source_result = EXCLUDED.source_result, started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
            duration_ms = EXCLUDED.duration_ms, triggered_by = EXCLUDED.triggered_by, branch = EXCLUDED.branch,
            repo_url = EXCLUDED.repo_url, ci = EXCLUDED.ci, cd = EXCLUDED.cd, environment = EXCLUDED.environment,
            cfr_status = EXCLUDED.cfr_status, web_url = EXCLUDED.web_url, job_type = EXCLUDED.job_type,
            source = EXCLUDED.source, event_id = EXCLUDED.event_id, detail = EXCLUDED.detail, log = EXCLUDED.log,
            log_truncated = EXCLUDED.log_truncated, updated_at = EXCLUDED.updated_at
         RETURNING id"
);

/// Writes a run row with `sql` (one of the two above); the id it returns, if any.
#[allow(clippy::too_many_arguments)]
async fn write_run_row(
    conn: &mut PgConnection,
    sql: &'static str,
    new: &str,
    tenant: &Tenant,
    pipeline_id: &str,
    instance_id: &str,
    r: &RunReport,
    event_id: &str,
    now: i64,
) -> Result<Option<String>, Fail> {
    let detail =
        serde_json::to_string(&RunDetail::of(r)).map_err(|e| StoreError::Backend(e.to_string()))?;
    let (log, log_truncated) = match &r.log {
        Some(l) => (Some(l.text.as_str()), l.truncated),
        None => (None, false),
    };
    Ok(sqlx::query_scalar(sql)
        .bind(new)
        .bind(&tenant.id)
        .bind(pipeline_id)
        .bind(instance_id)
        .bind(&r.run_key)
        .bind(r.build_number)
        .bind(&r.execution_id)
        .bind(r.result.as_str())
        .bind(&r.source_result)
        .bind(to_millis(r.started_at))
        .bind(r.finished_at.map(to_millis))
        .bind(r.duration_ms)
        .bind(&r.triggered_by)
        .bind(&r.branch)
        .bind(&r.repo_url)
        .bind(r.ci)
        .bind(r.cd)
        .bind(&r.environment)
        .bind(r.cfr_status)
        .bind(&r.web_url)
        .bind(&r.job_type)
        .bind(&r.source)
        .bind(event_id)
        .bind(&detail)
        .bind(log)
        .bind(log_truncated)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?)
}

#[allow(clippy::too_many_arguments)]
async fn upsert_run(
    conn: &mut PgConnection,
    ids: &mut Ids<'_>,
    tenant: &Tenant,
    event_id: &str,
    received_at: OffsetDateTime,
    r: &RunReport,
    index: usize,
    count: usize,
) -> Result<(RunWritten, crate::outbox::RunFacts), Fail> {
    let now = to_millis(received_at);
    let prefix = if count > 1 {
        format!("runs[{index}].")
    } else {
        String::new()
    };
    let instance_id = ids
        .instance(conn, tenant, &r.instance, now, &prefix)
        .await?;
    let pipeline_id = resolve_pipeline(conn, ids, &tenant.id, &instance_id, r, now).await?;
    // Most reports are of new runs: insert first, and only when the run exists read its stored
    // state to merge with. The run's advisory lock (taken for the batch) serializes writers of
    // this run, so what is read here stays true until commit.
    let first = new_id();
    let fresh = write_run_row(
        conn,
        RUN_INSERT_NEW,
        &first,
        tenant,
        &pipeline_id,
        &instance_id,
        r,
        event_id,
        now,
    )
    .await?;
    if let Some(id) = &fresh {
        if *id != first {
            return Err(Fail::Store(StoreError::Backend(
                "a new run came back with another id".into(),
            )));
        }
    }
    let existing: Option<crate::merge::StoredState> = if fresh.is_some() {
        None
    } else {
        sqlx::query_as(
            "SELECT id, result, source_result, finished_at, duration_ms FROM runs
         WHERE tenant_id = $1 AND instance_id = $2 AND pipeline_id = $3 AND run_key = $4",
        )
        .bind(&tenant.id)
        .bind(&instance_id)
        .bind(&pipeline_id)
        .bind(&r.run_key)
        .fetch_optional(&mut *conn)
        .await?
    };
    let combined;
    let r: &RunReport = match &existing {
        Some((id, ..)) if r.partial => {
            let stored = super::read::get_run(conn, &tenant.id, id)
                .await?
                .ok_or_else(|| {
                    StoreError::Backend("a run vanished inside its transaction".into())
                })?;
            combined = crate::merge::merge(crate::merge::report_of(stored), r.clone());
            &combined
        }
        Some((_, result, source, end, duration)) => {
            let stored = cistern_core::RunResult::from_normalized(result)
                .unwrap_or(cistern_core::RunResult::Error);
            if crate::merge::rank(r.result) < crate::merge::rank(stored) {
                let mut copy = r.clone();
                crate::merge::keep_state(
                    stored,
                    source,
                    end.map(cistern_core::from_millis),
                    *duration,
                    &mut copy,
                );
                combined = copy;
                &combined
            } else {
                r
            }
        }
        None => r,
    };
    let previous = existing.as_ref().map(|e| {
        cistern_core::RunResult::from_normalized(&e.1).unwrap_or(cistern_core::RunResult::Error)
    });
    let new = new_id();
    // The row keeps its id on conflict, so getting the proposed id back means it was inserted.
    // (Unlike the `xmax = 0` trick, this does not depend on how PostgreSQL locks tuples.)
    let was_new = fresh.is_some();
    let id = match fresh {
        Some(id) => id,
        None => write_run_row(
            conn,
            RUN_UPSERT,
            &new,
            tenant,
            &pipeline_id,
            &instance_id,
            r,
            event_id,
            now,
        )
        .await?
        .ok_or_else(|| StoreError::Backend("the run upsert returned no row".into()))?,
    };
    let created = was_new || id == new;
    if !created {
        // The upsert holds the run's row lock until commit, so no other writer interleaves here.
        sqlx::query(
            "WITH gone AS (DELETE FROM stages WHERE run_id = $1) DELETE FROM run_commits WHERE run_id = $1",
        )
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    }

    // Stages and commits in one statement (one round trip).
    let rows = stage_rows(&r.stages);
    let commits = unique_commits(r);
    if !rows.is_empty() || !commits.is_empty() {
        let mut idx = Vec::with_capacity(rows.len());
        let mut parent = Vec::with_capacity(rows.len());
        let mut name = Vec::with_capacity(rows.len());
        let mut description = Vec::with_capacity(rows.len());
        let mut result = Vec::with_capacity(rows.len());
        let mut source_result = Vec::with_capacity(rows.len());
        let mut state = Vec::with_capacity(rows.len());
        let mut started_at = Vec::with_capacity(rows.len());
        let mut duration_ms = Vec::with_capacity(rows.len());
        let mut slog = Vec::with_capacity(rows.len());
        let mut slog_truncated = Vec::with_capacity(rows.len());
        let mut url = Vec::with_capacity(rows.len());
        for (i, p, s) in rows {
            idx.push(i);
            parent.push(p);
            name.push(s.name.as_str());
            description.push(s.description.as_deref());
            result.push(s.result.map(|x| x.as_str()));
            source_result.push(s.source_result.as_deref());
            state.push(s.state.as_deref());
            started_at.push(s.started_at.map(to_millis));
            duration_ms.push(s.duration_ms);
            slog.push(s.log.as_deref());
            slog_truncated.push(s.log_truncated);
            url.push(s.url.as_deref());
        }
        let shas: Vec<&str> = commits.iter().map(|c| c.sha.as_str()).collect();
        let at: Vec<Option<i64>> = commits
            .iter()
            .map(|c| c.committed_at.map(to_millis))
            .collect();
        sqlx::query(
            "WITH s AS (
               INSERT INTO stages (run_id, idx, parent_idx, name, description, result, source_result, state, started_at, duration_ms, log, log_truncated, url)
               SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                        $9::bigint[], $10::bigint[], $11::text[], $12::boolean[], $13::text[]))
             INSERT INTO run_commits (run_id, sha, tenant_id, committed_at)
             SELECT $1, u.sha, $14, u.at FROM UNNEST($15::text[], $16::bigint[]) AS u(sha, at)",
        )
        .bind(&id)
        .bind(idx)
        .bind(parent)
        .bind(name)
        .bind(description)
        .bind(result)
        .bind(source_result)
        .bind(state)
        .bind(started_at)
        .bind(duration_ms)
        .bind(slog)
        .bind(slog_truncated)
        .bind(url)
        .bind(&tenant.id)
        .bind(shas)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    super::triggers::link_run(conn, &tenant.id, &id, r, received_at).await?;
    let facts = crate::outbox::RunFacts {
        run_id: id.clone(),
        created,
        previous,
        result: r.result,
        cd: r.cd,
        pipeline_full_name: r.pipeline.full_name.clone(),
        pipeline_name: r.pipeline.name.clone(),
        project: r.pipeline.project.clone(),
        branch: r.branch.clone(),
    };
    Ok((RunWritten { id, created }, facts))
}

async fn apply_heartbeat(
    conn: &mut PgConnection,
    event: &EventRecord,
    tenant: &Tenant,
    hb: &HeartbeatRecord,
    settings: &StoreSettings,
) -> Result<WriteOutcome, Fail> {
    crate::keys::check_guid("payload.instance_id", &hb.instance_guid).map_err(Fail::Store)?;
    let at = to_millis(hb.at);
    let details = hb.details.to_string();
    // A late heartbeat never moves the instance's last heartbeat (or its details) back.
    let updated: Option<String> = if tenant.strict {
        sqlx::query_scalar(
            "UPDATE instances SET name = COALESCE($3, name), url = COALESCE($4, url),
               details = CASE WHEN $5 >= COALESCE(last_heartbeat_at, 0) THEN $6 ELSE details END,
               last_heartbeat_at = GREATEST(COALESCE(last_heartbeat_at, 0), $5)
             WHERE tenant_id = $1 AND guid = $2 RETURNING id",
        )
        .bind(&tenant.id)
        .bind(&hb.instance_guid)
        .bind(&hb.name)
        .bind(&hb.url)
        .bind(at)
        .bind(&details)
        .fetch_optional(&mut *conn)
        .await?
    } else {
        sqlx::query_scalar(
            "INSERT INTO instances (id, tenant_id, guid, name, url, kind, created_at, last_heartbeat_at, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, guid) DO UPDATE SET
               name = COALESCE(EXCLUDED.name, instances.name), url = COALESCE(EXCLUDED.url, instances.url),
               details = CASE WHEN EXCLUDED.last_heartbeat_at >= COALESCE(instances.last_heartbeat_at, 0)
                         THEN EXCLUDED.details ELSE instances.details END,
               last_heartbeat_at = GREATEST(COALESCE(instances.last_heartbeat_at, 0), EXCLUDED.last_heartbeat_at)
             RETURNING id",
        )
        .bind(new_id())
        .bind(&tenant.id)
        .bind(&hb.instance_guid)
        .bind(&hb.name)
        .bind(&hb.url)
        .bind(&hb.kind)
        .bind(to_millis(event.received_at))
        .bind(at)
        .bind(&details)
        .fetch_optional(&mut *conn)
        .await?
    };
    if updated.is_none() {
        return Err(Fail::Store(StoreError::Rejected(vec![FieldError::new(
            "payload.instance_id",
            format!(
                "instance {:?} is not registered and tenant {:?} only accepts registered instances",
                hb.instance_guid, tenant.slug
            ),
        )])));
    }
    let event_id = new_id();
    insert_event(conn, &event_id, event, &[], settings).await?;
    Ok(WriteOutcome {
        event_id,
        runs: vec![],
        instance: None,
        deliveries: 0,
    })
}
