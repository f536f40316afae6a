//! Triggers and their events on SQLite. Writes run on the writer thread (inside its group-commit
//! transaction); reads on the read pool.

use cistern_core::{from_millis, to_millis, RunResult};
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::triggers::{target_from_text, target_text, DELETED_MESSAGE, EXPIRED_MESSAGE};
use crate::*;

const TRIGGER_COLS: &str =
    "id, tenant_id, org_identifier, project_identifier, pipeline_identifier, identifier, enabled,
    allow_token, token_hash, preset, target, created_at, updated_at, auth";

fn trigger_row(r: &Row<'_>) -> rusqlite::Result<Trigger> {
    let target: String = r.get(10)?;
    Ok(Trigger {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        key: TriggerKey {
            org: r.get(2)?,
            project: r.get(3)?,
            pipeline: r.get(4)?,
            trigger: r.get(5)?,
        },
        enabled: r.get(6)?,
        allow_token: r.get(7)?,
        token_hash: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
        preset: r.get(9)?,
        target: target_from_text(&target).unwrap_or_else(|| TriggerTarget {
            method: "POST".into(),
            url: String::new(),
            headers: Vec::new(),
            body: None,
        }),
        created_at: from_millis(r.get(11)?),
        updated_at: from_millis(r.get(12)?),
        auth: TriggerAuth::parse(&r.get::<_, String>(13)?).unwrap_or_default(),
    })
}

fn conflict(e: rusqlite::Error, key: &TriggerKey) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!(
                "a trigger {:?} already exists for pipeline {:?} of {}/{}",
                key.trigger, key.pipeline, key.org, key.project
            ))
        }
        _ => e.into(),
    }
}

pub(super) fn create_trigger(c: &Connection, t: &Trigger) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO triggers ({TRIGGER_COLS}, token) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, '')"),
        params![
            t.id,
            t.tenant_id,
            t.key.org,
            t.key.project,
            t.key.pipeline,
            t.key.trigger,
            t.enabled,
            t.allow_token,
            t.token_hash,
            t.preset,
            target_text(&t.target),
            to_millis(t.created_at),
            to_millis(t.updated_at),
            t.auth.as_str()
        ],
    )
    .map_err(|e| conflict(e, &t.key))?;
    Ok(())
}

pub(super) fn list_triggers(c: &Connection, tenant_id: &str) -> Result<Vec<Trigger>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {TRIGGER_COLS} FROM triggers WHERE tenant_id = ?1 ORDER BY created_at, id"
    ))?;
    let rows = st
        .query_map([tenant_id], trigger_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn get_trigger(
    c: &Connection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Trigger>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TRIGGER_COLS} FROM triggers WHERE tenant_id = ?1 AND id = ?2"
    ))?
    .query_row(params![tenant_id, id], trigger_row)
    .optional()?)
}

pub(super) fn find_trigger(
    c: &Connection,
    tenant_id: &str,
    key: &TriggerKey,
) -> Result<Option<Trigger>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {TRIGGER_COLS} FROM triggers WHERE tenant_id = ?1 AND org_identifier = ?2 AND project_identifier = ?3
           AND pipeline_identifier = ?4 AND identifier = ?5"
    ))?
    .query_row(
        params![tenant_id, key.org, key.project, key.pipeline, key.trigger],
        trigger_row,
    )
    .optional()?)
}

pub(super) fn update_trigger(c: &Connection, t: &Trigger) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "UPDATE triggers SET org_identifier = ?3, project_identifier = ?4, pipeline_identifier = ?5, identifier = ?6,
               enabled = ?7, allow_token = ?8, preset = ?9, target = ?10, updated_at = ?11, auth = ?12
             WHERE tenant_id = ?1 AND id = ?2",
            params![
                t.tenant_id,
                t.id,
                t.key.org,
                t.key.project,
                t.key.pipeline,
                t.key.trigger,
                t.enabled,
                t.allow_token,
                t.preset,
                target_text(&t.target),
                to_millis(t.updated_at),
                t.auth.as_str()
            ],
        )
        .map_err(|e| conflict(e, &t.key))?;
    Ok(n > 0)
}

/// Replaces a trigger's token (its hash): the old one is refused from the commit on.
pub(super) fn set_trigger_token(
    c: &Connection,
    tenant_id: &str,
    id: &str,
    token_hash: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE triggers SET token_hash = ?3, token = '', updated_at = ?4 WHERE tenant_id = ?1 AND id = ?2",
        params![tenant_id, id, token_hash, to_millis(now)],
    )?;
    Ok(n > 0)
}

/// Hashes the clear tokens left by databases made before tokens were hashed (SQLite has no
/// SHA-256 in SQL, so this follows migration 0015 in the store). Idempotent.
pub(super) fn hash_clear_tokens(c: &Connection) -> Result<(), StoreError> {
    let clear: Vec<(String, String)> = c
        .prepare("SELECT id, token FROM triggers WHERE token_hash IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut st = c.prepare("UPDATE triggers SET token_hash = ?2, token = '' WHERE id = ?1")?;
    for (id, token) in clear {
        st.execute(params![id, crate::triggers::token_hash(&token)])?;
    }
    Ok(())
}

pub(super) fn delete_trigger(
    c: &Connection,
    tenant_id: &str,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = c.execute(
        "DELETE FROM triggers WHERE tenant_id = ?1 AND id = ?2",
        params![tenant_id, id],
    )?;
    if n > 0 {
        c.execute(
            "UPDATE trigger_events SET state = 'failed', message = ?3, next_attempt_at = NULL, locked_until = NULL,
               lock_token = NULL, last_attempt_at = COALESCE(last_attempt_at, ?4)
             WHERE tenant_id = ?1 AND trigger_id = ?2 AND state = 'pending'",
            params![tenant_id, id, DELETED_MESSAGE, to_millis(now)],
        )?;
    }
    Ok(n > 0)
}

pub(super) fn create_event(c: &Connection, e: &NewTriggerEvent) -> Result<(), StoreError> {
    let at = to_millis(e.created_at);
    let due = (e.state == DispatchState::Pending).then_some(at);
    c.prepare_cached(
        "INSERT INTO trigger_events (id, tenant_id, trigger_id, org_identifier, project_identifier, pipeline_identifier,
           trigger_identifier, state, refusal, message, payload, target, key_id, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        e.id,
        e.tenant_id,
        e.trigger_id,
        e.key.org,
        e.key.project,
        e.key.pipeline,
        e.key.trigger,
        e.state.as_str(),
        e.refusal,
        e.message,
        e.payload,
        e.target.as_ref().map(target_text),
        e.key_id,
        due,
        at
    ])?;
    Ok(())
}

const EVENT_COLS: &str = "e.id, e.tenant_id, e.trigger_id, e.org_identifier, e.project_identifier, e.pipeline_identifier,
    e.trigger_identifier, e.state, e.refusal, e.message, e.payload, e.target, e.key_id, e.attempt_count, e.next_attempt_at,
    e.last_attempt_at, e.last_status_code, e.last_error, e.dispatched_at, e.created_at,
    l.run_id, l.linked_at, p.name, p.full_name, r.execution_id, r.build_number, r.result, r.started_at, r.finished_at, r.web_url";

const EVENT_FROM: &str = "FROM trigger_events e LEFT JOIN trigger_links l ON l.event_id = e.id
    LEFT JOIN runs r ON r.id = l.run_id LEFT JOIN pipelines p ON p.id = r.pipeline_id";

fn event_row(r: &Row<'_>) -> rusqlite::Result<TriggerEvent> {
    let state: String = r.get(7)?;
    let target: Option<String> = r.get(11)?;
    let run_id: Option<String> = r.get(20)?;
    let result: Option<String> = r.get(26)?;
    let run = match (run_id, result) {
        (Some(id), Some(result)) => Some(LinkedRun {
            id,
            linked_at: from_millis(r.get(21)?),
            pipeline_name: r.get::<_, Option<String>>(22)?.unwrap_or_default(),
            pipeline_full_name: r.get::<_, Option<String>>(23)?.unwrap_or_default(),
            execution_id: r.get(24)?,
            build_number: r.get(25)?,
            result: RunResult::from_normalized(&result).unwrap_or(RunResult::Error),
            started_at: from_millis(r.get(27)?),
            finished_at: r.get::<_, Option<i64>>(28)?.map(from_millis),
            web_url: r.get(29)?,
            stage_results: Vec::new(),
            stages: Vec::new(),
        }),
        _ => None,
    };
    Ok(TriggerEvent {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        trigger_id: r.get(2)?,
        key: TriggerKey {
            org: r.get(3)?,
            project: r.get(4)?,
            pipeline: r.get(5)?,
            trigger: r.get(6)?,
        },
        state: DispatchState::parse(&state).unwrap_or(DispatchState::Failed),
        refusal: r.get(8)?,
        message: r.get(9)?,
        payload: r.get(10)?,
        target: target.as_deref().and_then(target_from_text),
        key_id: r.get(12)?,
        attempts: r.get(13)?,
        next_attempt_at: r.get::<_, Option<i64>>(14)?.map(from_millis),
        last_attempt_at: r.get::<_, Option<i64>>(15)?.map(from_millis),
        last_status_code: r
            .get::<_, Option<i64>>(16)?
            .and_then(|c| u16::try_from(c).ok()),
        last_error: r.get(17)?,
        dispatched_at: r.get::<_, Option<i64>>(18)?.map(from_millis),
        created_at: from_millis(r.get(19)?),
        run,
    })
}

fn with_stages(c: &Connection, mut e: TriggerEvent) -> Result<TriggerEvent, StoreError> {
    if let Some(run) = &mut e.run {
        let mut st = c.prepare_cached(
            "SELECT idx, name, result, started_at, duration_ms FROM stages WHERE run_id = ?1 AND parent_idx IS NULL ORDER BY idx",
        )?;
        let stages = st
            .query_map([&run.id], |r| {
                let word: Option<String> = r.get(2)?;
                Ok(LinkedStage {
                    idx: r.get(0)?,
                    name: r.get(1)?,
                    result: word.as_deref().and_then(RunResult::from_normalized),
                    started_at: r.get::<_, Option<i64>>(3)?.map(from_millis),
                    duration_ms: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        run.set_stages(stages);
    }
    Ok(e)
}

pub(super) fn get_event(c: &Connection, id: &str) -> Result<Option<TriggerEvent>, StoreError> {
    let found = c
        .prepare_cached(&format!("SELECT {EVENT_COLS} {EVENT_FROM} WHERE e.id = ?1"))?
        .query_row([id], event_row)
        .optional()?;
    found.map(|e| with_stages(c, e)).transpose()
}

pub(super) fn list_events(
    c: &Connection,
    tenant_id: &str,
    trigger_id: Option<&str>,
    limit: usize,
) -> Result<Vec<TriggerEvent>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {EVENT_COLS} {EVENT_FROM} WHERE e.tenant_id = ?1 AND (?2 IS NULL OR e.trigger_id = ?2)
         ORDER BY e.created_at DESC, e.id DESC LIMIT ?3"
    ))?;
    let rows = st
        .query_map(params![tenant_id, trigger_id, limit as i64], event_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(|e| with_stages(c, e)).collect()
}

/// Links the trigger events a run carries the correlation ids of (in the run's transaction).
pub(super) fn link_run(
    c: &Connection,
    tenant_id: &str,
    run_id: &str,
    r: &cistern_core::RunReport,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let candidates = correlation_candidates(r);
    if candidates.is_empty() {
        return Ok(());
    }
    let mut st = c.prepare_cached(
        "INSERT INTO trigger_links (event_id, tenant_id, run_id, linked_at)
         SELECT id, tenant_id, ?3, ?4 FROM trigger_events WHERE id = ?1 AND tenant_id = ?2 AND state <> 'refused'
         ON CONFLICT (event_id) DO NOTHING",
    )?;
    for id in candidates {
        st.execute(params![id, tenant_id, run_id, to_millis(now)])?;
    }
    Ok(())
}

// ---- the worker ----------------------------------------------------------------------------

pub(super) fn claim(
    c: &Connection,
    req: &ClaimRequest,
    expire_before: OffsetDateTime,
) -> Result<Vec<ClaimedDispatch>, StoreError> {
    let now = to_millis(req.now);
    c.prepare_cached(
        "UPDATE trigger_events SET state = 'failed', message = ?2, next_attempt_at = NULL, locked_until = NULL, lock_token = NULL
         WHERE state = 'pending' AND created_at < ?1 AND (locked_until IS NULL OR locked_until <= ?3)",
    )?
    .execute(params![to_millis(expire_before), EXPIRED_MESSAGE, now])?;
    let ids: Vec<String> = c
        .prepare_cached(
            "SELECT id FROM trigger_events WHERE state = 'pending' AND next_attempt_at <= ?1
               AND (locked_until IS NULL OR locked_until <= ?1)
             ORDER BY next_attempt_at, id LIMIT ?2",
        )?
        .query_map(params![now, req.limit as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut lease = c.prepare_cached(
        "UPDATE trigger_events SET locked_until = ?2, lock_token = ?3 WHERE id = ?1",
    )?;
    let mut load = c.prepare_cached(
        "SELECT id, tenant_id, target, payload, created_at, tries FROM trigger_events WHERE id = ?1",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        lease.execute(params![id, to_millis(req.lease_until), req.token])?;
        let (tenant_id, target, payload, created_at, tries): (
            String,
            Option<String>,
            String,
            i64,
            i64,
        ) = load.query_row([&id], |r| {
            Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?;
        let Some(target) = target.as_deref().and_then(target_from_text) else {
            // Nothing to send: cannot happen for an event stored pending; fail it rather than
            // leave it claimed forever.
            c.execute(
                "UPDATE trigger_events SET state = 'exception', message = 'the event has no target', locked_until = NULL, lock_token = NULL WHERE id = ?1",
                [&id],
            )?;
            continue;
        };
        out.push(ClaimedDispatch {
            id,
            tenant_id,
            target,
            payload,
            created_at: from_millis(created_at),
            tries,
            token: req.token.clone(),
        });
    }
    Ok(out)
}

pub(super) fn record(
    c: &Connection,
    records: &[DispatchRecord],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let at = to_millis(now);
    let mut log = c.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response_body, error, node)
         VALUES (?1, (SELECT COALESCE(MAX(attempt), 0) + 1 FROM delivery_attempts WHERE delivery_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut count = c.prepare_cached(
        "UPDATE trigger_events SET attempt_count = attempt_count + 1, last_attempt_at = ?2, last_status_code = ?3, last_error = ?4
         WHERE id = ?1",
    )?;
    // Only the lease holder moves the event on.
    let mut step = c.prepare_cached(
        "UPDATE trigger_events SET state = ?3, tries = tries + 1, next_attempt_at = ?4, dispatched_at = COALESCE(?5, dispatched_at),
           message = COALESCE(?6, message), locked_until = NULL, lock_token = NULL
         WHERE id = ?1 AND lock_token = ?2 AND state = 'pending'",
    )?;
    for rec in records {
        let a = &rec.attempt;
        let started = to_millis(a.started_at);
        log.execute(params![
            rec.event_id,
            started,
            a.duration_ms,
            a.status_code,
            a.response_body,
            a.error,
            a.node
        ])?;
        count.execute(params![rec.event_id, started, a.status_code, a.error])?;
        let (state, next, dispatched) = match &rec.next {
            NextStep::Delivered => (DispatchState::Delivered, None, Some(at)),
            NextStep::RetryAt(t) => (DispatchState::Pending, Some(to_millis(*t)), None),
            NextStep::GiveUp if rec.exception => (DispatchState::Exception, None, None),
            NextStep::GiveUp => (DispatchState::Failed, None, None),
        };
        step.execute(params![
            rec.event_id,
            rec.token,
            state.as_str(),
            next,
            dispatched,
            rec.message
        ])?;
    }
    Ok(())
}

pub(super) fn release(c: &Connection, token: &str, ids: &[String]) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(
        "UPDATE trigger_events SET locked_until = NULL, lock_token = NULL WHERE id = ?1 AND lock_token = ?2",
    )?;
    for id in ids {
        st.execute(params![id, token])?;
    }
    Ok(())
}
