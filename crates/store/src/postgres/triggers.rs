//! Triggers and their events on PostgreSQL. Dispatches are claimed with `FOR UPDATE SKIP
//! LOCKED`, so several nodes share them without sending one twice at the same time.

use cistern_core::{from_millis, to_millis, RunResult};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use crate::triggers::{target_from_text, target_text, DELETED_MESSAGE, EXPIRED_MESSAGE};
use crate::*;

const TRIGGER_COLS: &str =
    "id, tenant_id, org_identifier, project_identifier, pipeline_identifier, identifier, enabled,
    allow_token, token_hash, preset, target, created_at, updated_at, auth";

fn trigger_row(r: &PgRow) -> Result<Trigger, sqlx::Error> {
    let target: String = r.try_get(10)?;
    Ok(Trigger {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        key: TriggerKey {
            org: r.try_get(2)?,
            project: r.try_get(3)?,
            pipeline: r.try_get(4)?,
            trigger: r.try_get(5)?,
        },
        enabled: r.try_get(6)?,
        allow_token: r.try_get(7)?,
        token_hash: r.try_get::<Option<String>, _>(8)?.unwrap_or_default(),
        preset: r.try_get(9)?,
        target: target_from_text(&target).unwrap_or_else(|| TriggerTarget {
            method: "POST".into(),
            url: String::new(),
            headers: Vec::new(),
            body: None,
        }),
        created_at: from_millis(r.try_get(11)?),
        updated_at: from_millis(r.try_get(12)?),
        auth: TriggerAuth::parse(&r.try_get::<String, _>(13)?).unwrap_or_default(),
    })
}

fn conflict(e: sqlx::Error, key: &TriggerKey) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
            StoreError::Conflict(format!(
                "a trigger {:?} already exists for pipeline {:?} of {}/{}",
                key.trigger, key.pipeline, key.org, key.project
            ))
        }
        _ => e.into(),
    }
}

pub(super) async fn create_trigger(pool: &PgPool, t: &Trigger) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO triggers ({TRIGGER_COLS}, token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, '')"
    ))
    .bind(&t.id)
    .bind(&t.tenant_id)
    .bind(&t.key.org)
    .bind(&t.key.project)
    .bind(&t.key.pipeline)
    .bind(&t.key.trigger)
    .bind(t.enabled)
    .bind(t.allow_token)
    .bind(&t.token_hash)
    .bind(&t.preset)
    .bind(target_text(&t.target))
    .bind(to_millis(t.created_at))
    .bind(to_millis(t.updated_at))
    .bind(t.auth.as_str())
    .execute(pool)
    .await
    .map_err(|e| conflict(e, &t.key))?;
    Ok(())
}

pub(super) async fn list_triggers(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Vec<Trigger>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {TRIGGER_COLS} FROM triggers WHERE tenant_id = $1 ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(trigger_row).collect::<Result<_, _>>()?)
}

pub(super) async fn get_trigger(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Trigger>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {TRIGGER_COLS} FROM triggers WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(trigger_row).transpose()?)
}

pub(super) async fn find_trigger(
    pool: &PgPool,
    tenant_id: &str,
    key: &TriggerKey,
) -> Result<Option<Trigger>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {TRIGGER_COLS} FROM triggers WHERE tenant_id = $1 AND org_identifier = $2 AND project_identifier = $3
           AND pipeline_identifier = $4 AND identifier = $5"
    ))
    .bind(tenant_id)
    .bind(&key.org)
    .bind(&key.project)
    .bind(&key.pipeline)
    .bind(&key.trigger)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(trigger_row).transpose()?)
}

pub(super) async fn update_trigger(pool: &PgPool, t: &Trigger) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE triggers SET org_identifier = $3, project_identifier = $4, pipeline_identifier = $5, identifier = $6,
           enabled = $7, allow_token = $8, preset = $9, target = $10, updated_at = $11, auth = $12
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(&t.tenant_id)
    .bind(&t.id)
    .bind(&t.key.org)
    .bind(&t.key.project)
    .bind(&t.key.pipeline)
    .bind(&t.key.trigger)
    .bind(t.enabled)
    .bind(t.allow_token)
    .bind(&t.preset)
    .bind(target_text(&t.target))
    .bind(to_millis(t.updated_at))
    .bind(t.auth.as_str())
    .execute(pool)
    .await
    .map_err(|e| conflict(e, &t.key))?
    .rows_affected();
    Ok(n > 0)
}

/// Replaces a trigger's token (its hash): the old one is refused from the commit on.
pub(super) async fn set_trigger_token(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
    token_hash: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE triggers SET token_hash = $3, token = '', updated_at = $4 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(token_hash)
    .bind(to_millis(now))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n > 0)
}

pub(super) async fn delete_trigger(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("DELETE FROM triggers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n > 0 {
        sqlx::query(
            "UPDATE trigger_events SET state = 'failed', message = $3, next_attempt_at = NULL, locked_until = NULL,
               lock_token = NULL, last_attempt_at = COALESCE(last_attempt_at, $4)
             WHERE tenant_id = $1 AND trigger_id = $2 AND state = 'pending'",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(DELETED_MESSAGE)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(n > 0)
}

pub(super) async fn create_event(pool: &PgPool, e: &NewTriggerEvent) -> Result<(), StoreError> {
    let at = to_millis(e.created_at);
    let due = (e.state == DispatchState::Pending).then_some(at);
    sqlx::query(
        "INSERT INTO trigger_events (id, tenant_id, trigger_id, org_identifier, project_identifier, pipeline_identifier,
           trigger_identifier, state, refusal, message, payload, target, key_id, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&e.id)
    .bind(&e.tenant_id)
    .bind(&e.trigger_id)
    .bind(&e.key.org)
    .bind(&e.key.project)
    .bind(&e.key.pipeline)
    .bind(&e.key.trigger)
    .bind(e.state.as_str())
    .bind(&e.refusal)
    .bind(&e.message)
    .bind(&e.payload)
    .bind(e.target.as_ref().map(target_text))
    .bind(&e.key_id)
    .bind(due)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

const EVENT_COLS: &str = "e.id, e.tenant_id, e.trigger_id, e.org_identifier, e.project_identifier, e.pipeline_identifier,
    e.trigger_identifier, e.state, e.refusal, e.message, e.payload, e.target, e.key_id, e.attempt_count, e.next_attempt_at,
    e.last_attempt_at, e.last_status_code, e.last_error, e.dispatched_at, e.created_at,
    l.run_id, l.linked_at, p.name, p.full_name, r.execution_id, r.build_number, r.result, r.started_at, r.finished_at, r.web_url";

const EVENT_FROM: &str = "FROM trigger_events e LEFT JOIN trigger_links l ON l.event_id = e.id
    LEFT JOIN runs r ON r.id = l.run_id LEFT JOIN pipelines p ON p.id = r.pipeline_id";

fn event_row(r: &PgRow) -> Result<TriggerEvent, sqlx::Error> {
    let state: String = r.try_get(7)?;
    let target: Option<String> = r.try_get(11)?;
    let run_id: Option<String> = r.try_get(20)?;
    let result: Option<String> = r.try_get(26)?;
    let run = match (run_id, result) {
        (Some(id), Some(result)) => Some(LinkedRun {
            id,
            linked_at: from_millis(r.try_get(21)?),
            pipeline_name: r.try_get::<Option<String>, _>(22)?.unwrap_or_default(),
            pipeline_full_name: r.try_get::<Option<String>, _>(23)?.unwrap_or_default(),
            execution_id: r.try_get(24)?,
            build_number: r.try_get(25)?,
            result: RunResult::from_normalized(&result).unwrap_or(RunResult::Error),
            started_at: from_millis(r.try_get(27)?),
            finished_at: r.try_get::<Option<i64>, _>(28)?.map(from_millis),
            web_url: r.try_get(29)?,
            stage_results: Vec::new(),
            stages: Vec::new(),
        }),
        _ => None,
    };
    Ok(TriggerEvent {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        trigger_id: r.try_get(2)?,
        key: TriggerKey {
            org: r.try_get(3)?,
            project: r.try_get(4)?,
            pipeline: r.try_get(5)?,
            trigger: r.try_get(6)?,
        },
        state: DispatchState::parse(&state).unwrap_or(DispatchState::Failed),
        refusal: r.try_get(8)?,
        message: r.try_get(9)?,
        payload: r.try_get(10)?,
        target: target.as_deref().and_then(target_from_text),
        key_id: r.try_get(12)?,
        attempts: r.try_get(13)?,
        next_attempt_at: r.try_get::<Option<i64>, _>(14)?.map(from_millis),
        last_attempt_at: r.try_get::<Option<i64>, _>(15)?.map(from_millis),
        last_status_code: r
            .try_get::<Option<i64>, _>(16)?
            .and_then(|c| u16::try_from(c).ok()),
        last_error: r.try_get(17)?,
        dispatched_at: r.try_get::<Option<i64>, _>(18)?.map(from_millis),
        created_at: from_millis(r.try_get(19)?),
        run,
    })
}

/// A top-level stage as read: idx, name, result, started_at, duration_ms.
type StageRow = (i64, String, Option<String>, Option<i64>, Option<i64>);

async fn with_stages(pool: &PgPool, mut e: TriggerEvent) -> Result<TriggerEvent, StoreError> {
    if let Some(run) = &mut e.run {
        let rows: Vec<StageRow> = sqlx::query_as(
            "SELECT idx, name, result, started_at, duration_ms FROM stages WHERE run_id = $1 AND parent_idx IS NULL ORDER BY idx",
        )
        .bind(&run.id)
        .fetch_all(pool)
        .await?;
        run.set_stages(
            rows.into_iter()
                .map(|(idx, name, w, started, duration)| LinkedStage {
                    idx,
                    name,
                    result: w.as_deref().and_then(RunResult::from_normalized),
                    started_at: started.map(from_millis),
                    duration_ms: duration,
                })
                .collect(),
        );
    }
    Ok(e)
}

pub(super) async fn get_event(pool: &PgPool, id: &str) -> Result<Option<TriggerEvent>, StoreError> {
    let row = sqlx::query(&format!("SELECT {EVENT_COLS} {EVENT_FROM} WHERE e.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    match row.as_ref().map(event_row).transpose()? {
        Some(e) => Ok(Some(with_stages(pool, e).await?)),
        None => Ok(None),
    }
}

pub(super) async fn list_events(
    pool: &PgPool,
    tenant_id: &str,
    trigger_id: Option<&str>,
    limit: usize,
) -> Result<Vec<TriggerEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLS} {EVENT_FROM} WHERE e.tenant_id = $1 AND ($2::text IS NULL OR e.trigger_id = $2)
         ORDER BY e.created_at DESC, e.id DESC LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(trigger_id)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(with_stages(pool, event_row(r)?).await?);
    }
    Ok(out)
}

/// Links the trigger events a run carries the correlation ids of (in the run's transaction).
/// Inserting into `trigger_links` takes no lock on the event rows the delivery worker updates.
pub(super) async fn link_run(
    conn: &mut PgConnection,
    tenant_id: &str,
    run_id: &str,
    r: &cistern_core::RunReport,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    for id in correlation_candidates(r) {
        sqlx::query(
            "INSERT INTO trigger_links (event_id, tenant_id, run_id, linked_at)
             SELECT id, tenant_id, $3, $4 FROM trigger_events WHERE id = $1 AND tenant_id = $2 AND state <> 'refused'
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(run_id)
        .bind(to_millis(now))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

// ---- the worker ----------------------------------------------------------------------------

pub(super) async fn claim(
    pool: &PgPool,
    req: &ClaimRequest,
    expire_before: OffsetDateTime,
) -> Result<Vec<ClaimedDispatch>, StoreError> {
    let now = to_millis(req.now);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE trigger_events SET state = 'failed', message = $2, next_attempt_at = NULL, locked_until = NULL, lock_token = NULL
         WHERE id IN (SELECT id FROM trigger_events WHERE state = 'pending' AND created_at < $1
                        AND (locked_until IS NULL OR locked_until <= $3) FOR UPDATE SKIP LOCKED)",
    )
    .bind(to_millis(expire_before))
    .bind(EXPIRED_MESSAGE)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(
        "UPDATE trigger_events SET locked_until = $3, lock_token = $4
         WHERE id IN (SELECT id FROM trigger_events WHERE state = 'pending' AND next_attempt_at <= $1
                        AND (locked_until IS NULL OR locked_until <= $1)
                      ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, tenant_id, target, payload, created_at, tries",
    )
    .bind(now)
    .bind(req.limit as i64)
    .bind(to_millis(req.lease_until))
    .bind(&req.token)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get(0)?;
        let target: Option<String> = r.try_get(2)?;
        let Some(target) = target.as_deref().and_then(target_from_text) else {
            sqlx::query(
                "UPDATE trigger_events SET state = 'exception', message = 'the event has no target', locked_until = NULL, lock_token = NULL WHERE id = $1",
            )
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            continue;
        };
        out.push(ClaimedDispatch {
            id,
            tenant_id: r.try_get(1)?,
            target,
            payload: r.try_get(3)?,
            created_at: from_millis(r.try_get(4)?),
            tries: r.try_get(5)?,
            token: req.token.clone(),
        });
    }
    tx.commit().await?;
    out.sort_by_key(|d| d.created_at);
    Ok(out)
}

pub(super) async fn record(
    pool: &PgPool,
    records: &[DispatchRecord],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let at = to_millis(now);
    // One lock order for every recorder of every node.
    let mut sorted: Vec<&DispatchRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let mut tx = pool.begin().await?;
    for rec in sorted {
        let a = &rec.attempt;
        let started = to_millis(a.started_at);
        let code = a.status_code.map(i64::from);
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response_body, error, node)
             VALUES ($1, (SELECT COALESCE(MAX(attempt), 0) + 1 FROM delivery_attempts WHERE delivery_id = $1), $2, $3, $4, $5, $6, $7)",
        )
        .bind(&rec.event_id)
        .bind(started)
        .bind(a.duration_ms)
        .bind(code)
        .bind(&a.response_body)
        .bind(&a.error)
        .bind(&a.node)
        .execute(&mut *tx)
        .await?;
        let (state, next, dispatched) = match &rec.next {
            NextStep::Delivered => (DispatchState::Delivered, None, Some(at)),
            NextStep::RetryAt(t) => (DispatchState::Pending, Some(to_millis(*t)), None),
            NextStep::GiveUp if rec.exception => (DispatchState::Exception, None, None),
            NextStep::GiveUp => (DispatchState::Failed, None, None),
        };
        sqlx::query(
            "UPDATE trigger_events SET attempt_count = attempt_count + 1, last_attempt_at = $2, last_status_code = $3, last_error = $4,
               state = CASE WHEN lock_token = $5 AND state = 'pending' THEN $6 ELSE state END,
               tries = CASE WHEN lock_token = $5 AND state = 'pending' THEN tries + 1 ELSE tries END,
               next_attempt_at = CASE WHEN lock_token = $5 AND state = 'pending' THEN $7 ELSE next_attempt_at END,
               dispatched_at = CASE WHEN lock_token = $5 AND state = 'pending' THEN COALESCE($8, dispatched_at) ELSE dispatched_at END,
               message = CASE WHEN lock_token = $5 AND state = 'pending' THEN COALESCE($9, message) ELSE message END,
               locked_until = CASE WHEN lock_token = $5 THEN NULL ELSE locked_until END,
               lock_token = CASE WHEN lock_token = $5 THEN NULL ELSE lock_token END
             WHERE id = $1",
        )
        .bind(&rec.event_id)
        .bind(started)
        .bind(code)
        .bind(&a.error)
        .bind(&rec.token)
        .bind(state.as_str())
        .bind(next)
        .bind(dispatched)
        .bind(&rec.message)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn release(pool: &PgPool, token: &str, ids: &[String]) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE trigger_events SET locked_until = NULL, lock_token = NULL WHERE id = ANY($1) AND lock_token = $2",
    )
    .bind(ids)
    .bind(token)
    .execute(pool)
    .await?;
    Ok(())
}
