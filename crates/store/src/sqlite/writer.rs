//! The SQLite writer thread: takes every queued write, applies them in one transaction, commits,
//! then answers. Writes go straight into the transaction; only when one fails is the batch
//! rolled back and applied again with a savepoint per write, so the failing one sinks alone.
//!
//! The thread keeps the instances and pipelines it has written ([`Known`]): a run of a known
//! instance and pipeline whose attributes did not change costs no read and no write of either,
//! and each instance's `last_seen_at` is written once per batch. What the cache holds is only
//! what committed, and it is emptied whenever another connection committed to the database
//! (`PRAGMA data_version`), so it never disagrees with the rows.

use cistern_core::{to_millis, FieldError, RunReport};
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::Job;
use crate::*;

/// Work run inside the writer's group-commit transaction besides the writes (the delivery
/// worker's claims and records): on SQLite, the writer thread is the only writer that never
/// waits for the database lock, so work queued here is never starved by heavy ingestion.
pub(super) trait Task: Send {
    /// Runs in its own savepoint; `false` rolls the savepoint back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers once the batch has committed (`Ok`) or failed.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A [`Task`] made of a closure and the channel its result goes back on.
pub(super) struct FnTask<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> FnTask<T, F> {
    pub(super) fn new(f: F, reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>) -> Self {
        Self {
            f: Some(f),
            out: None,
            reply,
        }
    }
}

impl<T, F> Task for FnTask<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let out = match self.f.take() {
            Some(f) => f(conn),
            None => Err(StoreError::Backend("a writer task ran twice".into())),
        };
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match committed {
            Ok(()) => self
                .out
                .unwrap_or_else(|| Err(StoreError::Backend("a writer task never ran".into()))),
            Err(e) => Err(e),
        };
        let _ = self.reply.send(result);
    }
}

/// An instance as its row holds it.
#[derive(Debug, Clone)]
struct KnownInstance {
    id: String,
    name: Option<String>,
    url: Option<String>,
    kind: Option<String>,
}

impl KnownInstance {
    /// True when writing `i` would change nothing but `last_seen_at`.
    fn covers(&self, i: &cistern_core::InstanceRef) -> bool {
        (i.name.is_none() || i.name == self.name)
            && (i.url.is_none() || i.url == self.url)
            && (self.kind.is_some() || i.kind.is_none())
    }
}

/// A pipeline as its row holds it.
#[derive(Debug, Clone)]
struct KnownPipeline {
    id: String,
    name: String,
    qualified_name: Option<String>,
    project: Option<String>,
    module: Option<String>,
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

/// Instances and pipelines, and the instances seen (id → latest `last_seen_at` to write).
#[derive(Debug, Default)]
struct Layer {
    instances: std::collections::HashMap<(String, String), KnownInstance>,
    pipelines: std::collections::HashMap<(String, String, String), KnownPipeline>,
    seen: std::collections::HashMap<String, i64>,
}

impl Layer {
    fn absorb(&mut self, other: &mut Layer) {
        self.instances.extend(other.instances.drain());
        self.pipelines.extend(other.pipelines.drain());
        for (id, at) in other.seen.drain() {
            let e = self.seen.entry(id).or_insert(at);
            *e = (*e).max(at);
        }
    }

    fn clear(&mut self) {
        self.instances.clear();
        self.pipelines.clear();
        self.seen.clear();
    }
}

/// What the writer knows, in three layers: committed, written by this batch, written by the
/// write being applied. A write's layer joins the batch's when the write succeeds, the batch's
/// joins the committed one when the batch commits; a rollback drops its layer.
#[derive(Debug, Default)]
struct Known {
    committed: Layer,
    batch: Layer,
    write: Layer,
    /// `PRAGMA data_version` when the committed layer was last checked.
    data_version: i64,
    /// Enabled subscriptions by tenant, read once per batch.
    subs: std::collections::HashMap<String, Vec<Subscription>>,
}

impl Known {
    /// At the start of a batch: drops everything if another connection committed since.
    fn begin(&mut self, conn: &Connection) {
        self.batch.clear();
        self.write.clear();
        self.subs.clear();
        let v: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap_or(-1);
        if v != self.data_version || v < 0 {
            self.committed.clear();
            self.data_version = v;
        }
    }

    fn instance(&self, key: &(String, String)) -> Option<&KnownInstance> {
        self.write
            .instances
            .get(key)
            .or_else(|| self.batch.instances.get(key))
            .or_else(|| self.committed.instances.get(key))
    }

    fn pipeline(&self, key: &(String, String, String)) -> Option<&KnownPipeline> {
        self.write
            .pipelines
            .get(key)
            .or_else(|| self.batch.pipelines.get(key))
            .or_else(|| self.committed.pipelines.get(key))
    }

    fn forget_instance(&mut self, key: &(String, String)) {
        self.write.instances.remove(key);
        self.batch.instances.remove(key);
        self.committed.instances.remove(key);
    }

    /// The write being applied succeeded.
    fn write_kept(&mut self) {
        let mut w = std::mem::take(&mut self.write);
        self.batch.absorb(&mut w);
    }

    /// The batch is about to commit: writes the instances' `last_seen_at`.
    fn flush_seen(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let mut st = conn.prepare_cached(
            "UPDATE instances SET last_seen_at = MAX(COALESCE(last_seen_at, ?2), ?2) WHERE id = ?1",
        )?;
        for (id, at) in self.batch.seen.drain() {
            st.execute(params![id, at])?;
        }
        Ok(())
    }

    /// The batch committed.
    fn committed(&mut self) {
        let mut b = std::mem::take(&mut self.batch);
        self.committed.absorb(&mut b);
        self.committed.seen.clear();
    }

    /// The transaction was rolled back.
    fn rolled_back(&mut self) {
        self.batch.clear();
        self.write.clear();
    }
}

pub(super) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    settings: StoreSettings,
    signal: std::sync::Arc<tokio::sync::Notify>,
    stats: std::sync::Arc<WriterStats>,
) {
    let max_batch = settings.max_batch.max(1);
    let mut known = Known::default();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Writes only: the tasks riding along (delivery claims, rollup work) are not writes, and
        // a batch of tasks alone is not a write batch.
        let size = batch
            .iter()
            .filter(|j| matches!(j, Job::Write { .. }))
            .count();
        let started = std::time::Instant::now();
        let committed = apply_batch(&mut conn, batch, &settings, &signal, &mut known);
        if size > 0 {
            stats.record(size, started.elapsed(), committed);
        }
    }
    tracing::debug!("SQLite writer stopped: all senders gone");
}

/// Where a write's outcome is sent once its batch has committed (or failed).
type Reply = tokio::sync::oneshot::Sender<Result<WriteOutcome, StoreError>>;

/// A write waiting in a batch: the operation, where its outcome goes, its compressed body.
type Pending = (WriteOp, Reply, Option<Vec<u8>>);

fn apply_batch(
    conn: &mut Connection,
    batch: Vec<Job>,
    settings: &StoreSettings,
    signal: &tokio::sync::Notify,
    known: &mut Known,
) -> bool {
    let mut writes = Vec::with_capacity(batch.len());
    let mut tasks = Vec::new();
    for job in batch {
        match job {
            Job::Write {
                op,
                reply,
                compressed,
            } => writes.push((op, reply, compressed)),
            Job::Task(t) => tasks.push(t),
        }
    }
    let fail_all = |writes: Vec<Pending>, tasks: Vec<Box<dyn Task>>, e: StoreError| {
        // Keep the message as is: re-wrapping a `Backend` error's Display would say
        // "database error: database error: …".
        let msg = match e {
            StoreError::Backend(m) => m,
            other => other.to_string(),
        };
        for (_, reply, _) in writes {
            let _ = reply.send(Err(StoreError::Backend(msg.clone())));
        }
        for t in tasks {
            t.answer(Err(StoreError::Backend(msg.clone())));
        }
    };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        fail_all(writes, tasks, e.into());
        return false;
    }
    known.begin(conn);
    // Fast path: every write straight into the transaction. Writes seldom fail, and a savepoint
    // per write costs a copy of every page it touches (the statement journal). When one fails,
    // the whole transaction is rolled back and the batch is applied again with a savepoint per
    // write, so the failing one sinks alone.
    let mut results = Vec::with_capacity(writes.len());
    for (op, _, z) in &writes {
        match apply(conn, op, settings, z.as_deref(), known) {
            Ok(out) => {
                known.write_kept();
                results.push(Ok(out));
            }
            Err(_) => {
                results.clear();
                break;
            }
        }
    }
    if results.len() != writes.len() {
        known.rolled_back();
        let restarted = conn
            .execute_batch("ROLLBACK")
            .and_then(|_| conn.execute_batch("BEGIN IMMEDIATE"));
        if let Err(e) = restarted {
            let _ = conn.execute_batch("ROLLBACK");
            fail_all(writes, tasks, e.into());
            return false;
        }
        results = writes
            .iter()
            .map(|(op, _, z)| apply_isolated(conn, op, settings, z.as_deref(), known))
            .collect();
    }
    if let Err(e) = known.flush_seen(conn) {
        let _ = conn.execute_batch("ROLLBACK");
        known.rolled_back();
        fail_all(writes, tasks, e);
        return false;
    }
    for t in tasks.iter_mut() {
        let kept = conn.execute_batch("SAVEPOINT w").is_ok() && t.run(conn);
        let released = if kept {
            conn.execute_batch("RELEASE w").is_ok()
        } else {
            conn.execute_batch("ROLLBACK TO w; RELEASE w").is_ok()
        };
        if !released {
            tracing::error!("a writer task's savepoint failed");
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        known.rolled_back();
        tracing::error!(error = %e, "group commit failed");
        fail_all(writes, tasks, e.into());
        return false;
    }
    known.committed();
    if results
        .iter()
        .any(|r| matches!(r, Ok(o) if o.deliveries > 0))
    {
        // Committed: wake the delivery worker.
        signal.notify_one();
    }
    for ((_, reply, _), r) in writes.into_iter().zip(results) {
        let _ = reply.send(r);
    }
    for t in tasks {
        t.answer(Ok(()));
    }
    true
}

/// Applies one write in its own savepoint: on failure only its changes are undone, and a refused
/// run write still leaves its event in the log, marked rejected with the reasons.
fn apply_isolated(
    conn: &Connection,
    op: &WriteOp,
    settings: &StoreSettings,
    z: Option<&[u8]>,
    known: &mut Known,
) -> Result<WriteOutcome, StoreError> {
    let r = conn
        .execute_batch("SAVEPOINT w")
        .map_err(StoreError::from)
        .and_then(|_| apply(conn, op, settings, z, known));
    match r {
        Ok(out) => {
            let released = conn
                .execute_batch("RELEASE w")
                .map(|_| out)
                .map_err(StoreError::from);
            if released.is_ok() {
                known.write_kept();
            } else {
                known.write.clear();
            }
            released
        }
        Err(e) => {
            known.write.clear();
            let _ = conn.execute_batch("ROLLBACK TO w; RELEASE w");
            let refused_event = match op {
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
                match insert_event(conn, &id, &ev, &[], settings, z) {
                    Ok(()) => return Err(StoreError::RejectedLogged(errors.clone(), id)),
                    Err(e2) => tracing::error!(error = %e2, "could not log a rejected event"),
                }
            }
            Err(e)
        }
    }
}

fn apply(
    conn: &Connection,
    op: &WriteOp,
    settings: &StoreSettings,
    z: Option<&[u8]>,
    known: &mut Known,
) -> Result<WriteOutcome, StoreError> {
    match op {
        WriteOp::Reject { event } => {
            let id = new_id();
            insert_event(conn, &id, event, &[], settings, z)?;
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
        } => apply_runs(conn, event, tenant, runs, &[], &[], settings, z, known),
        WriteOp::Signals {
            event,
            tenant,
            runs,
            incidents,
            commit_times,
        } => apply_runs(
            conn,
            event,
            tenant,
            runs,
            incidents,
            commit_times,
            settings,
            z,
            known,
        ),
        WriteOp::Heartbeat {
            event,
            tenant,
            heartbeat,
        } => {
            known.forget_instance(&(tenant.id.clone(), heartbeat.instance_guid.clone()));
            apply_heartbeat(conn, event, tenant, heartbeat, settings, z)
        }
        WriteOp::JobConfigChange {
            event,
            tenant,
            change,
        } => {
            crate::keys::check_guid("payload.jenkins_instance_guid", &change.instance.guid)?;
            let now = to_millis(event.received_at);
            let instance = instance_id(conn, known, tenant, &change.instance, now, "payload.")?;
            let pipeline = pipeline_id(conn, known, &tenant.id, &instance, &change.pipeline, now)?;
            // A change reported late never moves the recorded time back.
            conn.prepare_cached(
                "UPDATE pipelines SET config_changed_at = MAX(COALESCE(config_changed_at, ?2), ?2) WHERE id = ?1",
            )?
            .execute(params![pipeline, to_millis(change.changed_at)])?;
            let event_id = new_id();
            insert_event(conn, &event_id, event, &[], settings, z)?;
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
                crate::keys::check_guid("guid", guid)?;
            }
            let now = to_millis(event.received_at);
            // The same instance registered again (same integration id, name and type, and the
            // same GUID when one is asked for) gets the instance it already has (the single
            // writer serializes registrations).
            let known: Option<(String, String, Option<String>, i64)> = conn
                .prepare_cached(
                    "SELECT id, guid, url, created_at FROM instances
                     WHERE tenant_id = ?1 AND integration_id = ?2 AND name = ?3 AND kind = ?4
                       AND (?5 IS NULL OR guid = ?5)
                     ORDER BY created_at, id LIMIT 1",
                )?
                .query_row(
                    params![
                        tenant_id,
                        instance.integration_id,
                        instance.name,
                        instance.kind,
                        instance.guid
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .optional()?;
            if let Some((id, guid, url, created_at)) = known {
                let event_id = new_id();
                insert_event(conn, &event_id, event, &[], settings, z)?;
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
            let n = conn.prepare_cached(
                "INSERT INTO instances (id, tenant_id, guid, name, url, kind, integration_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (tenant_id, guid) DO NOTHING",
            )?
            .execute(params![inst.id, tenant_id, inst.guid, inst.name, inst.url, inst.kind, inst.integration_id, now])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "an instance with guid {:?} already exists",
                    inst.guid
                )));
            }
            let event_id = new_id();
            insert_event(conn, &event_id, event, &[], settings, z)?;
            Ok(WriteOutcome {
                event_id,
                runs: vec![],
                instance: Some(inst),
                deliveries: 0,
            })
        }
    }
}

#[allow(clippy::too_many_arguments)] // the parts of the three run-writing operations
fn apply_runs(
    conn: &Connection,
    event: &EventRecord,
    tenant: &Tenant,
    runs: &[RunReport],
    incidents: &[cistern_core::IncidentReport],
    commit_times: &[(String, OffsetDateTime, Option<String>)],
    settings: &StoreSettings,
    z: Option<&[u8]>,
    known: &mut Known,
) -> Result<WriteOutcome, StoreError> {
    crate::keys::check_reports(runs, incidents, commit_times)?;
    if let Some(key) = &event.dedupe_key {
        let first: Option<String> = conn
            .prepare_cached("SELECT id FROM events WHERE tenant_id = ?1 AND dedupe_key = ?2")?
            .query_row(params![tenant.id, key], |row| row.get(0))
            .optional()?;
        if let Some(first) = first {
            return Err(StoreError::Duplicate(first));
        }
    }
    let event_id = new_id();
    // The outbox rows go in this same transaction: an acknowledged run always has them.
    // Read once per batch: subscriptions change through other connections, which committed
    // before this batch's transaction began.
    if !known.subs.contains_key(&tenant.id) {
        let subs = super::outbound::enabled_subscriptions(conn, &tenant.id)?;
        known.subs.insert(tenant.id.clone(), subs);
    }
    let subs = known.subs.get(&tenant.id).cloned().unwrap_or_default();
    let mut queued = 0;
    let mut written = Vec::with_capacity(runs.len());
    for (i, r) in runs.iter().enumerate() {
        let (w, facts) = upsert_run(
            conn,
            known,
            tenant,
            &event_id,
            event.received_at,
            r,
            i,
            runs.len(),
        )?;
        if !subs.is_empty() {
            queued +=
                super::outbound::enqueue_run(conn, &tenant.id, &subs, &facts, event.received_at)?;
        }
        written.push(w);
    }
    let now = to_millis(event.received_at);
    for inc in incidents {
        // First sight of this incident (the upsert below cannot tell a new row from an update).
        let opened = conn
            .prepare_cached(
                "SELECT 1 FROM incidents WHERE tenant_id = ?1 AND source = ?2 AND incident_id = ?3",
            )?
            .query_row(params![tenant.id, inc.source, inc.id], |_| Ok(()))
            .optional()?
            .is_none();
        conn.prepare_cached(
            "INSERT INTO incidents (tenant_id, source, incident_id, service, environment, detected_at, resolved_at, description, url, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (tenant_id, source, incident_id) DO UPDATE SET
               service = COALESCE(excluded.service, incidents.service),
               environment = COALESCE(excluded.environment, incidents.environment),
               detected_at = COALESCE(MIN(incidents.detected_at, excluded.detected_at), incidents.detected_at, excluded.detected_at),
               resolved_at = COALESCE(excluded.resolved_at, incidents.resolved_at),
               description = COALESCE(excluded.description, incidents.description),
               url = COALESCE(excluded.url, incidents.url), updated_at = excluded.updated_at",
        )?
        .execute(params![
            tenant.id,
            inc.source,
            inc.id,
            inc.service,
            inc.environment,
            inc.detected_at.map(to_millis),
            inc.resolved_at.map(to_millis),
            inc.description,
            inc.url,
            now
        ])?;
        if opened && !subs.is_empty() {
            queued +=
                super::outbound::enqueue_incident(conn, &tenant.id, &subs, inc, event.received_at)?;
        }
    }
    for (sha, at, repo) in commit_times {
        conn.prepare_cached(
            "INSERT INTO commit_times (tenant_id, sha, committed_at, repo) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant_id, sha) DO UPDATE SET committed_at = MIN(commit_times.committed_at, excluded.committed_at),
               repo = COALESCE(commit_times.repo, excluded.repo)",
        )?
        .execute(params![tenant.id, sha, to_millis(*at), repo])?;
    }
    let ids: Vec<String> = written.iter().map(|w| w.id.clone()).collect();
    insert_event(conn, &event_id, event, &ids, settings, z)?;
    Ok(WriteOutcome {
        event_id,
        runs: written,
        instance: None,
        deliveries: queued,
    })
}

fn insert_event(
    conn: &Connection,
    id: &str,
    ev: &EventRecord,
    run_ids: &[String],
    settings: &StoreSettings,
    compressed: Option<&[u8]>,
) -> Result<(), StoreError> {
    let (raw, truncated) = kept_body(&ev.body, settings.max_event_body_bytes);
    let (body, codec) = match compressed {
        Some(z) => (z, Some(BODY_CODEC_ZSTD)),
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
    conn.prepare_cached(
        "INSERT INTO events (id, tenant_id, received_at, endpoint, dialect, request_type, status, http_status, errors, run_ids,
           content_type, body, body_size, body_truncated, key_id, source_id, dedupe_key, body_codec)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        id,
        ev.tenant_id,
        to_millis(ev.received_at),
        ev.endpoint,
        ev.dialect,
        ev.request_type,
        ev.status.as_str(),
        ev.http_status,
        errors,
        run_ids,
        ev.content_type,
        body,
        ev.body.len() as i64,
        truncated as i64,
        ev.key_id,
        ev.source_id,
        // Only an accepted delivery claims its id: a refused one may be sent again, fixed.
        ev.dedupe_key.as_ref().filter(|_| ev.status == EventStatus::Accepted),
        codec,
    ])?;
    Ok(())
}

fn instance_id(
    conn: &Connection,
    known: &mut Known,
    tenant: &Tenant,
    instance: &cistern_core::InstanceRef,
    now: i64,
    field_prefix: &str,
) -> Result<String, StoreError> {
    let key = (tenant.id.clone(), instance.guid.clone());
    if let Some(k) = known.instance(&key).filter(|k| k.covers(instance)) {
        // Nothing to write but `last_seen_at`, written once for the batch.
        let id = k.id.clone();
        let e = known.write.seen.entry(id.clone()).or_insert(now);
        *e = (*e).max(now);
        return Ok(id);
    }
    let existing: Option<String> = conn
        .prepare_cached("SELECT id FROM instances WHERE tenant_id = ?1 AND guid = ?2")?
        .query_row(params![tenant.id, instance.guid], |row| row.get(0))
        .optional()?;
    let row = match existing {
        Some(id) => conn
            .prepare_cached(
                "UPDATE instances SET name = COALESCE(?2, name), url = COALESCE(?3, url), kind = COALESCE(kind, ?4), last_seen_at = MAX(COALESCE(last_seen_at, ?5), ?5) WHERE id = ?1
                 RETURNING id, name, url, kind",
            )?
            .query_row(params![id, instance.name, instance.url, instance.kind, now], |row| {
                Ok(KnownInstance { id: row.get(0)?, name: row.get(1)?, url: row.get(2)?, kind: row.get(3)? })
            })?,
        None if tenant.strict => return Err(StoreError::Rejected(vec![FieldError::new(
            format!("{field_prefix}instance_guid"),
            format!(
                "instance {:?} is not registered and tenant {:?} only accepts registered instances; register it first (POST /api/v1/instances or /v1/custom-cicd with integration_id, name, type and optionally its guid)",
                instance.guid, tenant.slug
            ),
        )])),
        None => {
            let id = new_id();
            conn.prepare_cached(
                "INSERT INTO instances (id, tenant_id, guid, name, url, kind, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            )?
            .execute(params![id, tenant.id, instance.guid, instance.name, instance.url, instance.kind, now])?;
            KnownInstance {
                id,
                name: instance.name.clone(),
                url: instance.url.clone(),
                kind: instance.kind.clone(),
            }
        }
    };
    let id = row.id.clone();
    known.write.instances.insert(key, row);
    Ok(id)
}

fn pipeline_id(
    conn: &Connection,
    known: &mut Known,
    tenant_id: &str,
    instance_id: &str,
    p: &cistern_core::PipelineRef,
    now: i64,
) -> Result<String, StoreError> {
    let key = (
        tenant_id.to_owned(),
        instance_id.to_owned(),
        p.full_name.clone(),
    );
    if let Some(k) = known.pipeline(&key).filter(|k| k.covers(p)) {
        return Ok(k.id.clone());
    }
    let existing: Option<String> = conn
        .prepare_cached(
            "SELECT id FROM pipelines WHERE tenant_id = ?1 AND instance_id = ?2 AND full_name = ?3",
        )?
        .query_row(params![tenant_id, instance_id, p.full_name], |row| {
            row.get(0)
        })
        .optional()?;
    let row = match existing {
        Some(id) => conn
            .prepare_cached(
                "UPDATE pipelines SET name = ?2, qualified_name = COALESCE(?3, qualified_name), project = COALESCE(?4, project), module = COALESCE(?5, module) WHERE id = ?1
                 RETURNING id, name, qualified_name, project, module",
            )?
            .query_row(
                params![id, p.name, p.qualified_name, p.project, p.module],
                |row| {
                    Ok(KnownPipeline {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        qualified_name: row.get(2)?,
                        project: row.get(3)?,
                        module: row.get(4)?,
                    })
                },
            )?,
        None => {
            let id = new_id();
            conn.prepare_cached(
                "INSERT INTO pipelines (id, tenant_id, instance_id, full_name, name, qualified_name, project, module, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![id, tenant_id, instance_id, p.full_name, p.name, p.qualified_name, p.project, p.module, now])?;
            KnownPipeline {
                id,
                name: p.name.clone(),
                qualified_name: p.qualified_name.clone(),
                project: p.project.clone(),
                module: p.module.clone(),
            }
        }
    };
    let id = row.id.clone();
    // An unnamed placeholder (a partial report's, empty name) is never kept: it is the one kind
    // of pipeline that is ever deleted.
    if !p.name.is_empty() {
        known.write.pipelines.insert(key, row);
    }
    Ok(id)
}

/// The pipeline a run report goes to. A partial report names its run by key within its
/// instance and source: an unnamed one (empty pipeline name) goes to the pipeline of the run of
/// that key when there is one, else to its placeholder pipeline; a named one takes over a run of
/// its key left in an unnamed placeholder (moving it, and dropping the emptied placeholder).
fn resolve_pipeline(
    conn: &Connection,
    known: &mut Known,
    tenant_id: &str,
    instance_id: &str,
    r: &RunReport,
    now: i64,
) -> Result<String, StoreError> {
    if !r.partial {
        return pipeline_id(conn, known, tenant_id, instance_id, &r.pipeline, now);
    }
    let mut same_key = conn.prepare_cached(
        "SELECT r.id, r.pipeline_id, p.name = '' FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
         WHERE r.tenant_id = ?1 AND r.instance_id = ?2 AND r.run_key = ?3 AND r.source = ?4
         ORDER BY p.name = '', r.id LIMIT 1",
    )?;
    let found: Option<(String, String, bool)> = same_key
        .query_row(
            params![tenant_id, instance_id, r.run_key, r.source],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    if r.pipeline.name.is_empty() {
        if let Some((_, pipeline, _)) = found {
            return Ok(pipeline);
        }
        return pipeline_id(conn, known, tenant_id, instance_id, &r.pipeline, now);
    }
    let target = pipeline_id(conn, known, tenant_id, instance_id, &r.pipeline, now)?;
    if let Some((run, placeholder, true)) = found {
        if placeholder != target {
            conn.prepare_cached("UPDATE runs SET pipeline_id = ?2 WHERE id = ?1")?
                .execute(params![run, target])?;
            conn.prepare_cached(
                "DELETE FROM pipelines WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM runs WHERE pipeline_id = ?1)",
            )?
            .execute([&placeholder])?;
        }
    }
    Ok(target)
}

#[allow(clippy::too_many_arguments)]
fn upsert_run(
    conn: &Connection,
    known: &mut Known,
    tenant: &Tenant,
    event_id: &str,
    received_at: OffsetDateTime,
    r: &RunReport,
    index: usize,
    count: usize,
) -> Result<(RunWritten, crate::outbox::RunFacts), StoreError> {
    let now = to_millis(received_at);
    let prefix = if count > 1 {
        format!("runs[{index}].")
    } else {
        String::new()
    };
    let instance_id = instance_id(conn, known, tenant, &r.instance, now, &prefix)?;
    let pipeline_id = resolve_pipeline(conn, known, &tenant.id, &instance_id, r, now)?;
    let existing: Option<crate::merge::StoredState> = conn
        .prepare_cached(
            "SELECT id, result, source_result, finished_at, duration_ms FROM runs
             WHERE tenant_id = ?1 AND instance_id = ?2 AND pipeline_id = ?3 AND run_key = ?4",
        )?
        .query_row(
            params![tenant.id, instance_id, pipeline_id, r.run_key],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .optional()?;
    let combined;
    let r: &RunReport = match &existing {
        Some((id, ..)) if r.partial => {
            let stored = super::read::get_run(conn, &tenant.id, id)?.ok_or_else(|| {
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
    let existing = existing.map(|e| e.0);
    let detail =
        serde_json::to_string(&RunDetail::of(r)).map_err(|e| StoreError::Backend(e.to_string()))?;
    let (log, log_truncated) = match &r.log {
        Some(l) => (Some(l.text.as_str()), l.truncated),
        None => (None, false),
    };
    let (id, created) = match existing {
        Some(id) => {
            conn.prepare_cached(
                "UPDATE runs SET build_number = ?2, execution_id = ?3, result = ?4, source_result = ?5, started_at = ?6, finished_at = ?7,
                 duration_ms = ?8, triggered_by = ?9, branch = ?10, repo_url = ?11, ci = ?12, cd = ?13, environment = ?14, cfr_status = ?15,
                 web_url = ?16, job_type = ?17, source = ?18, event_id = ?19, detail = ?20, log = ?21, log_truncated = ?22, updated_at = ?23
                 WHERE id = ?1",
            )?
            .execute(params![
                id, r.build_number, r.execution_id, r.result.as_str(), r.source_result, to_millis(r.started_at),
                r.finished_at.map(to_millis), r.duration_ms, r.triggered_by, r.branch, r.repo_url, r.ci, r.cd,
                r.environment, r.cfr_status, r.web_url, r.job_type, r.source, event_id, detail, log, log_truncated, now
            ])?;
            conn.prepare_cached("DELETE FROM stages WHERE run_id = ?1")?
                .execute([&id])?;
            conn.prepare_cached("DELETE FROM run_commits WHERE run_id = ?1")?
                .execute([&id])?;
            (id, false)
        }
        None => {
            let id = new_id();
            conn.prepare_cached(
                "INSERT INTO runs (id, tenant_id, pipeline_id, instance_id, run_key, build_number, execution_id, result, source_result,
                 started_at, finished_at, duration_ms, triggered_by, branch, repo_url, ci, cd, environment, cfr_status, web_url, job_type,
                 source, event_id, detail, log, log_truncated, received_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?27)",
            )?
            .execute(params![
                id, tenant.id, pipeline_id, instance_id, r.run_key, r.build_number, r.execution_id, r.result.as_str(),
                r.source_result, to_millis(r.started_at), r.finished_at.map(to_millis), r.duration_ms, r.triggered_by,
                r.branch, r.repo_url, r.ci, r.cd, r.environment, r.cfr_status, r.web_url, r.job_type, r.source,
                event_id, detail, log, log_truncated, now
            ])?;
            (id, true)
        }
    };
    let mut st = conn.prepare_cached(
        "INSERT INTO stages (run_id, idx, parent_idx, name, description, result, source_result, state, started_at, duration_ms, log, log_truncated, url)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for (idx, parent, s) in stage_rows(&r.stages) {
        st.execute(params![
            id,
            idx,
            parent,
            s.name,
            s.description,
            s.result.map(|x| x.as_str()),
            s.source_result,
            s.state,
            s.started_at.map(to_millis),
            s.duration_ms,
            s.log,
            s.log_truncated,
            s.url
        ])?;
    }
    let mut cst = conn.prepare_cached(
        "INSERT INTO run_commits (run_id, sha, tenant_id, committed_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for c in unique_commits(r) {
        cst.execute(params![id, c.sha, tenant.id, c.committed_at.map(to_millis)])?;
    }
    super::triggers::link_run(conn, &tenant.id, &id, r, received_at)?;
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

fn apply_heartbeat(
    conn: &Connection,
    event: &EventRecord,
    tenant: &Tenant,
    hb: &HeartbeatRecord,
    settings: &StoreSettings,
    z: Option<&[u8]>,
) -> Result<WriteOutcome, StoreError> {
    crate::keys::check_guid("payload.instance_id", &hb.instance_guid)?;
    let existing: Option<String> = conn
        .prepare_cached("SELECT id FROM instances WHERE tenant_id = ?1 AND guid = ?2")?
        .query_row(params![tenant.id, hb.instance_guid], |row| row.get(0))
        .optional()?;
    let at = to_millis(hb.at);
    let details = hb.details.to_string();
    match existing {
        Some(id) => {
            // A late heartbeat never moves the instance's last heartbeat back.
            conn.prepare_cached(
                "UPDATE instances SET name = COALESCE(?2, name), url = COALESCE(?3, url),
                 details = CASE WHEN ?4 >= COALESCE(last_heartbeat_at, 0) THEN ?5 ELSE details END,
                 last_heartbeat_at = MAX(COALESCE(last_heartbeat_at, 0), ?4) WHERE id = ?1",
            )?
            .execute(params![id, hb.name, hb.url, at, details])?;
        }
        None if tenant.strict => {
            return Err(StoreError::Rejected(vec![FieldError::new(
                "payload.instance_id",
                format!(
                "instance {:?} is not registered and tenant {:?} only accepts registered instances",
                hb.instance_guid, tenant.slug
            ),
            )]))
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO instances (id, tenant_id, guid, name, url, kind, created_at, last_heartbeat_at, details)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                new_id(),
                tenant.id,
                hb.instance_guid,
                hb.name,
                hb.url,
                hb.kind,
                to_millis(event.received_at),
                at,
                details
            ])?;
        }
    }
    let event_id = new_id();
    insert_event(conn, &event_id, event, &[], settings, z)?;
    Ok(WriteOutcome {
        event_id,
        runs: vec![],
        instance: None,
        deliveries: 0,
    })
}
