//! Outbound notifications on SQLite: subscriptions, the outbox (queued by the writer inside the
//! run's transaction), delivery claims with a lease, and the attempt log. Every write here runs on
//! the writer thread, inside its group-commit transaction.

use cistern_core::{from_millis, to_millis, IncidentReport};
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::outbox::{self, headers_from_text, RunFacts};
use crate::*;

const SUB_COLS: &str = "id, tenant_id, url, secret_name, format, events, only_failures, pipeline_glob, branch_glob, project,
    enabled, disabled_reason, disabled_at, failing_since, created_at, updated_at, headers";

fn sub_row(r: &Row<'_>) -> rusqlite::Result<Subscription> {
    let format: String = r.get(4)?;
    let events: String = r.get(5)?;
    Ok(Subscription {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        url: r.get(2)?,
        secret_name: r.get(3)?,
        format: DeliveryFormat::parse(&format).unwrap_or(DeliveryFormat::Native),
        events: outbox::events_from_text(&events),
        only_failures: r.get(6)?,
        pipeline: r.get(7)?,
        branch: r.get(8)?,
        project: r.get(9)?,
        enabled: r.get(10)?,
        disabled_reason: r.get(11)?,
        disabled_at: r.get::<_, Option<i64>>(12)?.map(from_millis),
        failing_since: r.get::<_, Option<i64>>(13)?.map(from_millis),
        created_at: from_millis(r.get(14)?),
        updated_at: from_millis(r.get(15)?),
        headers: headers_from_text(&r.get::<_, String>(16)?),
    })
}

const DELIVERY_COLS: &str = "d.id, d.subscription_id, d.message_id, m.event_type, m.run_id, d.status, d.attempt_count,
    d.next_attempt_at, d.created_at, d.last_attempt_at, d.last_status_code, d.last_error, d.delivered_at";

const DELIVERY_FROM: &str = "FROM deliveries d JOIN outbound_messages m ON m.id = d.message_id";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let event: String = r.get(3)?;
    let status: String = r.get(5)?;
    let status = DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending);
    Ok(Delivery {
        id: r.get(0)?,
        subscription_id: r.get(1)?,
        message_id: r.get(2)?,
        event_type: EventType::parse(&event).unwrap_or(EventType::RunCompleted),
        run_id: r.get(4)?,
        status,
        attempts: r.get(6)?,
        next_attempt_at: r
            .get::<_, Option<i64>>(7)?
            .filter(|_| status == DeliveryStatus::Pending)
            .map(from_millis),
        created_at: from_millis(r.get(8)?),
        last_attempt_at: r.get::<_, Option<i64>>(9)?.map(from_millis),
        last_status_code: r
            .get::<_, Option<i64>>(10)?
            .and_then(|c| u16::try_from(c).ok()),
        last_error: r.get(11)?,
        delivered_at: r.get::<_, Option<i64>>(12)?.map(from_millis),
    })
}

// ---- inside the writer's transaction -------------------------------------------------------

/// The tenant's enabled subscriptions (read by the writer once per write).
pub(super) fn enabled_subscriptions(
    c: &Connection,
    tenant_id: &str,
) -> Result<Vec<Subscription>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE tenant_id = ?1 AND enabled = 1"
    ))?;
    let rows = st
        .query_map([tenant_id], sub_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Queues the deliveries a run write causes; returns how many.
pub(super) fn enqueue_run(
    c: &Connection,
    tenant_id: &str,
    subs: &[Subscription],
    facts: &RunFacts,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let mut snapshot: Option<String> = None;
    let mut queued = 0;
    let mut facts = std::borrow::Cow::Borrowed(facts);
    if facts.project.is_none() && subs.iter().any(|s| s.project.is_some()) {
        // A report without a project keeps its pipeline's stored one.
        let stored: Option<String> = c
            .prepare_cached(
                "SELECT p.project FROM runs r JOIN pipelines p ON p.id = r.pipeline_id WHERE r.id = ?1",
            )?
            .query_row([&facts.run_id], |r| r.get(0))
            .optional()?
            .flatten();
        facts.to_mut().project = stored;
    }
    let facts = facts.as_ref();
    for event in outbox::run_events(facts) {
        let targets: Vec<&Subscription> = subs
            .iter()
            .filter(|s| outbox::run_matches(s, event, facts))
            .collect();
        if targets.is_empty() {
            continue;
        }
        if snapshot.is_none() {
            // Read back inside the transaction: exactly what the API will show for this write.
            let run = super::read::get_run(c, tenant_id, &facts.run_id)?.ok_or_else(|| {
                StoreError::Backend("a run vanished inside its transaction".into())
            })?;
            snapshot = Some(outbox::run_snapshot(run));
        }
        let body = snapshot.as_deref().unwrap_or("{}");
        queued += enqueue(
            c,
            tenant_id,
            event,
            Some(&facts.run_id),
            body,
            &targets,
            now,
        )?;
    }
    Ok(queued)
}

/// Queues `incident.opened` for a newly recorded incident; returns how many deliveries.
pub(super) fn enqueue_incident(
    c: &Connection,
    tenant_id: &str,
    subs: &[Subscription],
    inc: &IncidentReport,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let targets: Vec<&Subscription> = subs
        .iter()
        .filter(|s| outbox::incident_matches(s, inc))
        .collect();
    if targets.is_empty() {
        return Ok(0);
    }
    let body = outbox::incident_snapshot(inc);
    enqueue(
        c,
        tenant_id,
        EventType::IncidentOpened,
        None,
        &body,
        &targets,
        now,
    )
}

fn enqueue(
    c: &Connection,
    tenant_id: &str,
    event: EventType,
    run_id: Option<&str>,
    body: &str,
    targets: &[&Subscription],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let at = to_millis(now);
    let message_id = new_id();
    c.prepare_cached(
        "INSERT INTO outbound_messages (id, tenant_id, event_type, run_id, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![message_id, tenant_id, event.as_str(), run_id, body, at])?;
    let mut st = c.prepare_cached(
        "INSERT INTO deliveries (id, tenant_id, subscription_id, message_id, status, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
    )?;
    for s in targets {
        st.execute(params![new_id(), tenant_id, s.id, message_id, at])?;
    }
    Ok(targets.len())
}

// ---- subscriptions -------------------------------------------------------------------------

pub(super) fn create_subscription(c: &Connection, s: &Subscription) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO subscriptions ({SUB_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"),
        params![
            s.id,
            s.tenant_id,
            s.url,
            s.secret_name,
            s.format.as_str(),
            outbox::events_text(&s.events),
            s.only_failures,
            s.pipeline,
            s.branch,
            s.project,
            s.enabled,
            s.disabled_reason,
            s.disabled_at.map(to_millis),
            s.failing_since.map(to_millis),
            to_millis(s.created_at),
            to_millis(s.updated_at),
            outbox::headers_text(&s.headers)
        ],
    )?;
    Ok(())
}

pub(super) fn list_subscriptions(
    c: &Connection,
    tenant_id: &str,
) -> Result<Vec<Subscription>, StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE tenant_id = ?1 ORDER BY created_at, id"
    ))?;
    let rows = st
        .query_map([tenant_id], sub_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn get_subscription(
    c: &Connection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Subscription>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE tenant_id = ?1 AND id = ?2"
    ))?
    .query_row(params![tenant_id, id], sub_row)
    .optional()?)
}

pub(super) fn update_subscription(c: &Connection, s: &Subscription) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE subscriptions SET url = ?3, secret_name = ?4, format = ?5, events = ?6, only_failures = ?7,
           pipeline_glob = ?8, branch_glob = ?9, project = ?10, updated_at = ?11, headers = ?12
         WHERE tenant_id = ?1 AND id = ?2",
        params![
            s.tenant_id,
            s.id,
            s.url,
            s.secret_name,
            s.format.as_str(),
            outbox::events_text(&s.events),
            s.only_failures,
            s.pipeline,
            s.branch,
            s.project,
            to_millis(s.updated_at),
            outbox::headers_text(&s.headers)
        ],
    )? > 0)
}

pub(super) fn set_subscription_enabled(
    c: &Connection,
    tenant_id: &str,
    id: &str,
    enabled: bool,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let at = to_millis(now);
    let n = if enabled {
        c.execute(
            "UPDATE subscriptions SET enabled = 1, disabled_reason = NULL, disabled_at = NULL, failing_since = NULL, updated_at = ?3
             WHERE tenant_id = ?1 AND id = ?2",
            params![tenant_id, id, at],
        )?
    } else {
        // Keeps the first reason when it is already disabled.
        c.execute(
            "UPDATE subscriptions SET disabled_reason = CASE WHEN enabled = 1 THEN ?3 ELSE disabled_reason END,
               disabled_at = CASE WHEN enabled = 1 THEN ?4 ELSE disabled_at END, enabled = 0, updated_at = ?4
             WHERE tenant_id = ?1 AND id = ?2",
            params![tenant_id, id, reason, at],
        )?
    };
    if n > 0 && enabled {
        // Resume the queue: what waited while disabled is due now, on a fresh schedule.
        c.execute(
            "UPDATE deliveries SET next_attempt_at = ?2, tries = 0 WHERE subscription_id = ?1 AND status = 'pending'",
            params![id, at],
        )?;
    }
    Ok(n > 0)
}

pub(super) fn delete_subscription(
    c: &Connection,
    tenant_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let n = c.execute(
        "DELETE FROM subscriptions WHERE tenant_id = ?1 AND id = ?2",
        params![tenant_id, id],
    )?;
    if n == 0 {
        return Ok(false);
    }
    c.execute(
        "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscription_id = ?1)",
        [id],
    )?;
    c.execute("DELETE FROM deliveries WHERE subscription_id = ?1", [id])?;
    c.execute(
        "DELETE FROM outbound_messages WHERE tenant_id = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = outbound_messages.id)",
        [tenant_id],
    )?;
    Ok(true)
}

// ---- deliveries ----------------------------------------------------------------------------

pub(super) fn list_deliveries(
    c: &Connection,
    tenant_id: &str,
    subscription_id: &str,
    filter: &DeliveryFilter,
    page: &PageRequest,
) -> Result<Page<Delivery>, StoreError> {
    let after = match &page.cursor {
        Some(cur) => Some(crate::cursor::decode(cur)?.1),
        None => None,
    };
    let mut st = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLS} {DELIVERY_FROM}
         WHERE d.tenant_id = ?1 AND d.subscription_id = ?2 AND (?3 IS NULL OR d.status = ?3) AND (?4 IS NULL OR d.id < ?4)
           AND (?6 IS NULL OR d.created_at >= ?6) AND (?7 IS NULL OR d.created_at < ?7)
         ORDER BY d.id DESC LIMIT ?5"
    ))?;
    let mut items = st
        .query_map(
            params![
                tenant_id,
                subscription_id,
                filter.status.map(|s| s.as_str()),
                after,
                (page.limit + 1) as i64,
                filter.since.map(to_millis),
                filter.until.map(to_millis),
            ],
            delivery_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > page.limit {
        items.truncate(page.limit);
        items
            .last()
            .map(|d| crate::cursor::encode(to_millis(d.created_at), &d.id))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

pub(super) fn get_delivery(
    c: &Connection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<DeliveryDetail>, StoreError> {
    let found = c
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLS}, m.body {DELIVERY_FROM} WHERE d.tenant_id = ?1 AND d.id = ?2"
        ))?
        .query_row(params![tenant_id, id], |r| {
            Ok((delivery_row(r)?, r.get::<_, String>(13)?))
        })
        .optional()?;
    let Some((delivery, body)) = found else {
        return Ok(None);
    };
    let mut st = c.prepare_cached(
        "SELECT attempt, started_at, duration_ms, status_code, response_body, error, node
         FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY attempt",
    )?;
    let attempt_log = st
        .query_map([id], |r| {
            Ok(DeliveryAttempt {
                attempt: r.get(0)?,
                started_at: from_millis(r.get(1)?),
                duration_ms: r.get(2)?,
                status_code: r
                    .get::<_, Option<i64>>(3)?
                    .and_then(|c| u16::try_from(c).ok()),
                response_body: r.get(4)?,
                error: r.get(5)?,
                node: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(DeliveryDetail {
        delivery,
        message: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        attempt_log,
    }))
}

pub(super) fn redeliver(
    c: &Connection,
    tenant_id: &str,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE deliveries SET status = 'pending', tries = 0, next_attempt_at = ?3, delivered_at = NULL
         WHERE tenant_id = ?1 AND id = ?2",
        params![tenant_id, id, to_millis(now)],
    )? > 0)
}

pub(super) fn replay(
    c: &Connection,
    tenant_id: &str,
    subscription_id: &str,
    since: OffsetDateTime,
    until: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    Ok(c.execute(
        "UPDATE deliveries SET status = 'pending', tries = 0, next_attempt_at = ?5, delivered_at = NULL
         WHERE tenant_id = ?1 AND subscription_id = ?2 AND created_at >= ?3 AND created_at < ?4",
        params![
            tenant_id,
            subscription_id,
            to_millis(since),
            to_millis(until),
            to_millis(now)
        ],
    )? as u64)
}

// ---- the worker ----------------------------------------------------------------------------

pub(super) fn claim(
    c: &Connection,
    req: &ClaimRequest,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let now = to_millis(req.now);
    // Each enabled subscription with due work, and how many of its deliveries are leased.
    let mut st = c.prepare_cached(
        "SELECT s.id, (SELECT COUNT(*) FROM deliveries x WHERE x.subscription_id = s.id AND x.locked_until > ?1 AND x.status = 'pending')
         FROM subscriptions s
         WHERE s.enabled = 1 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = s.id AND d.status = 'pending'
           AND d.next_attempt_at <= ?1 AND (d.locked_until IS NULL OR d.locked_until <= ?1))",
    )?;
    let mut subs: Vec<(String, i64)> = st
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    outbox::fair_order(&mut subs);
    let mut ids: Vec<String> = Vec::new();
    let mut pick = c.prepare_cached(
        "SELECT id FROM deliveries WHERE subscription_id = ?1 AND status = 'pending' AND next_attempt_at <= ?2
           AND (locked_until IS NULL OR locked_until <= ?2)
         ORDER BY next_attempt_at, id LIMIT ?3",
    )?;
    for (sub, in_flight) in subs {
        let room = (req.per_subscription as i64 - in_flight).min((req.limit - ids.len()) as i64);
        if room <= 0 {
            continue;
        }
        let found: Vec<String> = pick
            .query_map(params![sub, now, room], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.extend(found);
        if ids.len() >= req.limit {
            break;
        }
    }
    let mut lease =
        c.prepare_cached("UPDATE deliveries SET locked_until = ?2, lock_token = ?3 WHERE id = ?1")?;
    let mut load = c.prepare_cached(&format!(
        "SELECT d.id, d.tenant_id, d.message_id, m.event_type, m.body, m.created_at, d.tries, d.attempt_count, {}
         FROM deliveries d JOIN outbound_messages m ON m.id = d.message_id JOIN subscriptions s ON s.id = d.subscription_id
         WHERE d.id = ?1",
        SUB_COLS
            .split(',')
            .map(|c| format!("s.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        lease.execute(params![id, to_millis(req.lease_until), req.token])?;
        let claimed = load.query_row([&id], |r| {
            let event: String = r.get(3)?;
            let subscription = sub_row_at(r, 8)?;
            Ok(ClaimedDelivery {
                id: r.get(0)?,
                tenant_id: r.get(1)?,
                message_id: r.get(2)?,
                event_type: EventType::parse(&event).unwrap_or(EventType::RunCompleted),
                message: r.get(4)?,
                created_at: from_millis(r.get(5)?),
                tries: r.get(6)?,
                attempts: r.get(7)?,
                subscription,
                token: req.token.clone(),
            })
        })?;
        out.push(claimed);
    }
    Ok(out)
}

/// [`sub_row`] for columns starting at `at`.
fn sub_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<Subscription> {
    let format: String = r.get(at + 4)?;
    let events: String = r.get(at + 5)?;
    Ok(Subscription {
        id: r.get(at)?,
        tenant_id: r.get(at + 1)?,
        url: r.get(at + 2)?,
        secret_name: r.get(at + 3)?,
        format: DeliveryFormat::parse(&format).unwrap_or(DeliveryFormat::Native),
        events: outbox::events_from_text(&events),
        only_failures: r.get(at + 6)?,
        pipeline: r.get(at + 7)?,
        branch: r.get(at + 8)?,
        project: r.get(at + 9)?,
        enabled: r.get(at + 10)?,
        disabled_reason: r.get(at + 11)?,
        disabled_at: r.get::<_, Option<i64>>(at + 12)?.map(from_millis),
        failing_since: r.get::<_, Option<i64>>(at + 13)?.map(from_millis),
        created_at: from_millis(r.get(at + 14)?),
        updated_at: from_millis(r.get(at + 15)?),
        headers: headers_from_text(&r.get::<_, String>(at + 16)?),
    })
}

pub(super) fn record_attempts(
    c: &Connection,
    records: &[AttemptRecord],
    now: OffsetDateTime,
) -> Result<Vec<SubscriptionHealth>, StoreError> {
    let at = to_millis(now);
    let mut log = c.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response_body, error, node)
         VALUES (?1, (SELECT COALESCE(MAX(attempt), 0) + 1 FROM delivery_attempts WHERE delivery_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut count = c.prepare_cached(
        "UPDATE deliveries SET attempt_count = attempt_count + 1, last_attempt_at = ?2, last_status_code = ?3, last_error = ?4
         WHERE id = ?1",
    )?;
    // Only the lease holder moves the delivery on: a worker that lost its lease (and whose
    // delivery another took) must not overwrite the other's outcome.
    let mut step = c.prepare_cached(
        "UPDATE deliveries SET status = ?3, tries = tries + 1, next_attempt_at = ?4, delivered_at = ?5,
           locked_until = NULL, lock_token = NULL
         WHERE id = ?1 AND lock_token = ?2",
    )?;
    let mut health_ok =
        c.prepare_cached("UPDATE subscriptions SET failing_since = NULL WHERE id = ?1")?;
    let mut health_bad = c.prepare_cached(
        "UPDATE subscriptions SET failing_since = COALESCE(failing_since, ?2) WHERE id = ?1",
    )?;
    let mut disable = c.prepare_cached(
        "UPDATE subscriptions SET enabled = 0, disabled_reason = ?2, disabled_at = ?3, updated_at = ?3 WHERE id = ?1 AND enabled = 1",
    )?;
    let mut health =
        c.prepare_cached("SELECT failing_since, enabled FROM subscriptions WHERE id = ?1")?;
    let mut out = Vec::with_capacity(records.len());
    for rec in records {
        let a = &rec.attempt;
        let started = to_millis(a.started_at);
        log.execute(params![
            rec.delivery_id,
            started,
            a.duration_ms,
            a.status_code,
            a.response_body,
            a.error,
            a.node
        ])?;
        count.execute(params![rec.delivery_id, started, a.status_code, a.error])?;
        let (status, next, delivered) = match &rec.next {
            NextStep::Delivered => ("delivered", None, Some(at)),
            NextStep::RetryAt(t) => ("pending", Some(to_millis(*t)), None),
            NextStep::GiveUp => ("failed", None, None),
        };
        step.execute(params![rec.delivery_id, rec.token, status, next, delivered])?;
        if rec.next == NextStep::Delivered {
            health_ok.execute([&rec.subscription_id])?;
        } else {
            health_bad.execute(params![rec.subscription_id, started])?;
        }
        if let Some(reason) = &rec.disable {
            disable.execute(params![rec.subscription_id, reason, at])?;
        }
        let h = health
            .query_row([&rec.subscription_id], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, bool>(1)?))
            })
            .optional()?;
        if let Some((failing, enabled)) = h {
            out.push(SubscriptionHealth {
                tenant_id: rec.tenant_id.clone(),
                subscription_id: rec.subscription_id.clone(),
                failing_since: failing.map(from_millis),
                enabled,
            });
        }
    }
    Ok(out)
}

pub(super) fn release(c: &Connection, token: &str, ids: &[String]) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(
        "UPDATE deliveries SET locked_until = NULL, lock_token = NULL WHERE id = ?1 AND lock_token = ?2",
    )?;
    for id in ids {
        st.execute(params![id, token])?;
    }
    Ok(())
}
