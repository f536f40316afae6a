//! Outbound notifications on PostgreSQL: subscriptions, the outbox (queued by the writer inside
//! the run's transaction), delivery claims shared by every node (`FOR UPDATE SKIP LOCKED` plus a
//! lease), and the attempt log.

use std::collections::HashMap;

use cistern_core::{from_millis, to_millis, IncidentReport};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use crate::outbox::{self, RunFacts};
use crate::*;

/// Key of the advisory lock that serializes claims across nodes (the bytes of `outbox`), so the
/// per-subscription bound holds for the whole cluster, not per node.
const CLAIM_LOCK: i64 = 0x6f75_7462_6f78;

const SUB_COLS: &str = "id, tenant_id, url, secret_name, format, events, only_failures, pipeline_glob, branch_glob, project,
    enabled, disabled_reason, disabled_at, failing_since, created_at, updated_at, headers";

fn sub_row_at(r: &PgRow, at: usize) -> Result<Subscription, sqlx::Error> {
    let format: String = r.try_get(at + 4)?;
    let events: String = r.try_get(at + 5)?;
    Ok(Subscription {
        id: r.try_get(at)?,
        tenant_id: r.try_get(at + 1)?,
        url: r.try_get(at + 2)?,
        secret_name: r.try_get(at + 3)?,
        format: DeliveryFormat::parse(&format).unwrap_or(DeliveryFormat::Native),
        events: outbox::events_from_text(&events),
        only_failures: r.try_get(at + 6)?,
        pipeline: r.try_get(at + 7)?,
        branch: r.try_get(at + 8)?,
        project: r.try_get(at + 9)?,
        enabled: r.try_get(at + 10)?,
        disabled_reason: r.try_get(at + 11)?,
        disabled_at: r.try_get::<Option<i64>, _>(at + 12)?.map(from_millis),
        failing_since: r.try_get::<Option<i64>, _>(at + 13)?.map(from_millis),
        created_at: from_millis(r.try_get(at + 14)?),
        updated_at: from_millis(r.try_get(at + 15)?),
        headers: outbox::headers_from_text(&r.try_get::<String, _>(at + 16)?),
    })
}

fn sub_row(r: &PgRow) -> Result<Subscription, sqlx::Error> {
    sub_row_at(r, 0)
}

const DELIVERY_COLS: &str = "d.id, d.subscription_id, d.message_id, m.event_type, m.run_id, d.status, d.attempt_count,
    d.next_attempt_at, d.created_at, d.last_attempt_at, d.last_status_code, d.last_error, d.delivered_at";

const DELIVERY_FROM: &str = "FROM deliveries d JOIN outbound_messages m ON m.id = d.message_id";

fn delivery_row(r: &PgRow) -> Result<Delivery, sqlx::Error> {
    let event: String = r.try_get(3)?;
    let status: String = r.try_get(5)?;
    let status = DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending);
    Ok(Delivery {
        id: r.try_get(0)?,
        subscription_id: r.try_get(1)?,
        message_id: r.try_get(2)?,
        event_type: EventType::parse(&event).unwrap_or(EventType::RunCompleted),
        run_id: r.try_get(4)?,
        status,
        attempts: r.try_get(6)?,
        next_attempt_at: r
            .try_get::<Option<i64>, _>(7)?
            .filter(|_| status == DeliveryStatus::Pending)
            .map(from_millis),
        created_at: from_millis(r.try_get(8)?),
        last_attempt_at: r.try_get::<Option<i64>, _>(9)?.map(from_millis),
        last_status_code: r
            .try_get::<Option<i64>, _>(10)?
            .and_then(|c| u16::try_from(c).ok()),
        last_error: r.try_get(11)?,
        delivered_at: r.try_get::<Option<i64>, _>(12)?.map(from_millis),
    })
}

// ---- inside the writer's transaction -------------------------------------------------------

/// The enabled subscriptions of these tenants, by tenant (read by the writer once per batch).
pub(super) async fn enabled_subscriptions(
    conn: &mut PgConnection,
    tenant_ids: &[&str],
) -> Result<HashMap<String, Vec<Subscription>>, sqlx::Error> {
    let mut out: HashMap<String, Vec<Subscription>> = HashMap::new();
    if tenant_ids.is_empty() {
        return Ok(out);
    }
    let rows = sqlx::query(&format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE tenant_id = ANY($1) AND enabled"
    ))
    .bind(tenant_ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let s = sub_row(row)?;
        out.entry(s.tenant_id.clone()).or_default().push(s);
    }
    Ok(out)
}

/// Why queueing failed: the database (possibly worth replaying the batch), or the store.
pub(super) enum EnqueueError {
    Db(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for EnqueueError {
    fn from(e: sqlx::Error) -> Self {
        EnqueueError::Db(e)
    }
}

impl From<StoreError> for EnqueueError {
    fn from(e: StoreError) -> Self {
        EnqueueError::Store(e)
    }
}

/// Queues the deliveries a run write causes; returns how many.
pub(super) async fn enqueue_run(
    conn: &mut PgConnection,
    tenant_id: &str,
    subs: &[Subscription],
    facts: &RunFacts,
    now: OffsetDateTime,
) -> Result<usize, EnqueueError> {
    let mut facts = std::borrow::Cow::Borrowed(facts);
    if facts.project.is_none() && subs.iter().any(|s| s.project.is_some()) {
        // A report without a project keeps its pipeline's stored one.
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT p.project FROM runs r JOIN pipelines p ON p.id = r.pipeline_id WHERE r.id = $1",
        )
        .bind(&facts.run_id)
        .fetch_optional(&mut *conn)
        .await?
        .flatten();
        facts.to_mut().project = stored;
    }
    let facts = facts.as_ref();
    let mut snapshot: Option<String> = None;
    let mut queued = 0;
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
            let run = super::read::get_run(conn, tenant_id, &facts.run_id)
                .await?
                .ok_or_else(|| {
                    StoreError::Backend("a run vanished inside its transaction".into())
                })?;
            snapshot = Some(outbox::run_snapshot(run));
        }
        let body = snapshot.as_deref().unwrap_or("{}");
        queued += enqueue(
            conn,
            tenant_id,
            event,
            Some(&facts.run_id),
            body,
            &targets,
            now,
        )
        .await?;
    }
    Ok(queued)
}

/// Queues `incident.opened` for a newly recorded incident; returns how many deliveries.
pub(super) async fn enqueue_incident(
    conn: &mut PgConnection,
    tenant_id: &str,
    subs: &[Subscription],
    inc: &IncidentReport,
    now: OffsetDateTime,
) -> Result<usize, sqlx::Error> {
    let targets: Vec<&Subscription> = subs
        .iter()
        .filter(|s| outbox::incident_matches(s, inc))
        .collect();
    if targets.is_empty() {
        return Ok(0);
    }
    let body = outbox::incident_snapshot(inc);
    enqueue(
        conn,
        tenant_id,
        EventType::IncidentOpened,
        None,
        &body,
        &targets,
        now,
    )
    .await
}

async fn enqueue(
    conn: &mut PgConnection,
    tenant_id: &str,
    event: EventType,
    run_id: Option<&str>,
    body: &str,
    targets: &[&Subscription],
    now: OffsetDateTime,
) -> Result<usize, sqlx::Error> {
    let at = to_millis(now);
    let message_id = new_id();
    sqlx::query(
        "INSERT INTO outbound_messages (id, tenant_id, event_type, run_id, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&message_id)
    .bind(tenant_id)
    .bind(event.as_str())
    .bind(run_id)
    .bind(body)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let ids: Vec<String> = targets.iter().map(|_| new_id()).collect();
    let subs: Vec<&str> = targets.iter().map(|s| s.id.as_str()).collect();
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, subscription_id, message_id, status, next_attempt_at, created_at)
         SELECT u.id, $3, u.sub, $4, 'pending', $5, $5 FROM UNNEST($1::text[], $2::text[]) AS u(id, sub)",
    )
    .bind(ids)
    .bind(subs)
    .bind(tenant_id)
    .bind(&message_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(targets.len())
}

// ---- subscriptions -------------------------------------------------------------------------

pub(super) async fn create_subscription(pool: &PgPool, s: &Subscription) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO subscriptions ({SUB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    ))
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.url)
    .bind(&s.secret_name)
    .bind(s.format.as_str())
    .bind(outbox::events_text(&s.events))
    .bind(s.only_failures)
    .bind(&s.pipeline)
    .bind(&s.branch)
    .bind(&s.project)
    .bind(s.enabled)
    .bind(&s.disabled_reason)
    .bind(s.disabled_at.map(to_millis))
    .bind(s.failing_since.map(to_millis))
    .bind(to_millis(s.created_at))
    .bind(to_millis(s.updated_at))
    .bind(outbox::headers_text(&s.headers))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list_subscriptions(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Vec<Subscription>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE tenant_id = $1 ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(sub_row).collect::<Result<_, _>>()?)
}

pub(super) async fn get_subscription(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Subscription>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(sub_row).transpose()?)
}

pub(super) async fn update_subscription(
    pool: &PgPool,
    s: &Subscription,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE subscriptions SET url = $3, secret_name = $4, format = $5, events = $6, only_failures = $7,
           pipeline_glob = $8, branch_glob = $9, project = $10, updated_at = $11, headers = $12
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(&s.tenant_id)
    .bind(&s.id)
    .bind(&s.url)
    .bind(&s.secret_name)
    .bind(s.format.as_str())
    .bind(outbox::events_text(&s.events))
    .bind(s.only_failures)
    .bind(&s.pipeline)
    .bind(&s.branch)
    .bind(&s.project)
    .bind(to_millis(s.updated_at))
    .bind(outbox::headers_text(&s.headers))
    .execute(pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn set_subscription_enabled(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
    enabled: bool,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let at = to_millis(now);
    let mut tx = pool.begin().await?;
    let n = if enabled {
        sqlx::query(
            "UPDATE subscriptions SET enabled = TRUE, disabled_reason = NULL, disabled_at = NULL, failing_since = NULL, updated_at = $3
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
    } else {
        // Keeps the first reason when it is already disabled.
        sqlx::query(
            "UPDATE subscriptions SET disabled_reason = CASE WHEN enabled THEN $3 ELSE disabled_reason END,
               disabled_at = CASE WHEN enabled THEN $4 ELSE disabled_at END, enabled = FALSE, updated_at = $4
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(reason)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
    };
    if n > 0 && enabled {
        // Resume the queue: what waited while disabled is due now, on a fresh schedule.
        sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $2, tries = 0 WHERE subscription_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(n > 0)
}

pub(super) async fn delete_subscription(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("DELETE FROM subscriptions WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    sqlx::query(
        "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscription_id = $1)",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM deliveries WHERE subscription_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM outbound_messages m WHERE m.tenant_id = $1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)",
    )
    .bind(tenant_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

// ---- deliveries ----------------------------------------------------------------------------

pub(super) async fn list_deliveries(
    pool: &PgPool,
    tenant_id: &str,
    subscription_id: &str,
    filter: &DeliveryFilter,
    page: &PageRequest,
) -> Result<Page<Delivery>, StoreError> {
    let after = match &page.cursor {
        Some(cur) => Some(crate::cursor::decode(cur)?.1),
        None => None,
    };
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLS} {DELIVERY_FROM}
         WHERE d.tenant_id = $1 AND d.subscription_id = $2 AND ($3::text IS NULL OR d.status = $3) AND ($4::text IS NULL OR d.id < $4)
           AND ($6::bigint IS NULL OR d.created_at >= $6) AND ($7::bigint IS NULL OR d.created_at < $7)
         ORDER BY d.id DESC LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(subscription_id)
    .bind(filter.status.map(|s| s.as_str()))
    .bind(after)
    .bind((page.limit + 1) as i64)
    .bind(filter.since.map(to_millis))
    .bind(filter.until.map(to_millis))
    .fetch_all(pool)
    .await?;
    let mut items = rows
        .iter()
        .map(delivery_row)
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

pub(super) async fn get_delivery(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
) -> Result<Option<DeliveryDetail>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {DELIVERY_COLS}, m.body {DELIVERY_FROM} WHERE d.tenant_id = $1 AND d.id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let delivery = delivery_row(&row)?;
    let body: String = row.try_get(13)?;
    let rows = sqlx::query(
        "SELECT attempt, started_at, duration_ms, status_code, response_body, error, node
         FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let attempt_log = rows
        .iter()
        .map(|r| {
            Ok(DeliveryAttempt {
                attempt: r.try_get(0)?,
                started_at: from_millis(r.try_get(1)?),
                duration_ms: r.try_get(2)?,
                status_code: r
                    .try_get::<Option<i64>, _>(3)?
                    .and_then(|c| u16::try_from(c).ok()),
                response_body: r.try_get(4)?,
                error: r.try_get(5)?,
                node: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(DeliveryDetail {
        delivery,
        message: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        attempt_log,
    }))
}

pub(super) async fn redeliver(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE deliveries SET status = 'pending', tries = 0, next_attempt_at = $3, delivered_at = NULL
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(to_millis(now))
    .execute(pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn replay(
    pool: &PgPool,
    tenant_id: &str,
    subscription_id: &str,
    since: OffsetDateTime,
    until: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    let r = sqlx::query(
        "UPDATE deliveries SET status = 'pending', tries = 0, next_attempt_at = $5, delivered_at = NULL
         WHERE tenant_id = $1 AND subscription_id = $2 AND created_at >= $3 AND created_at < $4",
    )
    .bind(tenant_id)
    .bind(subscription_id)
    .bind(to_millis(since))
    .bind(to_millis(until))
    .bind(to_millis(now))
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

// ---- the worker ----------------------------------------------------------------------------

pub(super) async fn claim(
    pool: &PgPool,
    req: &ClaimRequest,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let now = to_millis(req.now);
    let mut tx = pool.begin().await?;
    // Claims of all nodes take turns (each lasts a few milliseconds), so the in-flight count
    // below cannot be read by two claimers at once.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CLAIM_LOCK)
        .execute(&mut *tx)
        .await?;
    let subs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.id, (SELECT COUNT(*) FROM deliveries x WHERE x.subscription_id = s.id AND x.locked_until > $1 AND x.status = 'pending')
         FROM subscriptions s
         WHERE s.enabled AND EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = s.id AND d.status = 'pending'
           AND d.next_attempt_at <= $1 AND (d.locked_until IS NULL OR d.locked_until <= $1))",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let mut subs = subs;
    outbox::fair_order(&mut subs);
    let mut ids: Vec<String> = Vec::new();
    for (sub, in_flight) in subs {
        let room = (req.per_subscription as i64 - in_flight).min((req.limit - ids.len()) as i64);
        if room <= 0 {
            continue;
        }
        // SKIP LOCKED: a row another transaction is finishing (an attempt being recorded, a
        // redelivery) is left to it rather than waited for.
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE subscription_id = $1 AND status = 'pending' AND next_attempt_at <= $2
               AND (locked_until IS NULL OR locked_until <= $2)
             ORDER BY next_attempt_at, id LIMIT $3
             FOR UPDATE SKIP LOCKED",
        )
        .bind(&sub)
        .bind(now)
        .bind(room)
        .fetch_all(&mut *tx)
        .await?;
        ids.extend(found);
        if ids.len() >= req.limit {
            break;
        }
    }
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    sqlx::query("UPDATE deliveries SET locked_until = $2, lock_token = $3 WHERE id = ANY($1)")
        .bind(&ids)
        .bind(to_millis(req.lease_until))
        .bind(&req.token)
        .execute(&mut *tx)
        .await?;
    let sub_cols = SUB_COLS
        .split(',')
        .map(|c| format!("s.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT d.id, d.tenant_id, d.message_id, m.event_type, m.body, m.created_at, d.tries, d.attempt_count, {sub_cols}
         FROM deliveries d JOIN outbound_messages m ON m.id = d.message_id JOIN subscriptions s ON s.id = d.subscription_id
         WHERE d.id = ANY($1) ORDER BY d.next_attempt_at, d.id"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let out = rows
        .iter()
        .map(|r| {
            let event: String = r.try_get(3)?;
            Ok(ClaimedDelivery {
                id: r.try_get(0)?,
                tenant_id: r.try_get(1)?,
                message_id: r.try_get(2)?,
                event_type: EventType::parse(&event).unwrap_or(EventType::RunCompleted),
                message: r.try_get(4)?,
                created_at: from_millis(r.try_get(5)?),
                tries: r.try_get(6)?,
                attempts: r.try_get(7)?,
                subscription: sub_row_at(r, 8)?,
                token: req.token.clone(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(out)
}

pub(super) async fn record_attempts(
    pool: &PgPool,
    records: &[AttemptRecord],
    now: OffsetDateTime,
) -> Result<Vec<SubscriptionHealth>, StoreError> {
    let at = to_millis(now);
    // One lock order for every recorder of every node: by subscription, then delivery.
    let mut sorted: Vec<&AttemptRecord> = records.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.subscription_id, &a.delivery_id).cmp(&(&b.subscription_id, &b.delivery_id))
    });
    let mut tx = pool.begin().await?;
    let mut out = Vec::with_capacity(records.len());
    for rec in sorted {
        let a = &rec.attempt;
        let started = to_millis(a.started_at);
        let code = a.status_code.map(i64::from);
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response_body, error, node)
             VALUES ($1, (SELECT COALESCE(MAX(attempt), 0) + 1 FROM delivery_attempts WHERE delivery_id = $1), $2, $3, $4, $5, $6, $7)",
        )
        .bind(&rec.delivery_id)
        .bind(started)
        .bind(a.duration_ms)
        .bind(code)
        .bind(&a.response_body)
        .bind(&a.error)
        .bind(&a.node)
        .execute(&mut *tx)
        .await?;
        let (status, next, delivered) = match &rec.next {
            NextStep::Delivered => ("delivered", None, Some(at)),
            NextStep::RetryAt(t) => ("pending", Some(to_millis(*t)), None),
            NextStep::GiveUp => ("failed", None, None),
        };
        // Only the lease holder moves the delivery on: a worker that lost its lease (and whose
        // delivery another took) must not overwrite the other's outcome.
        sqlx::query(
            "UPDATE deliveries SET attempt_count = attempt_count + 1, last_attempt_at = $3, last_status_code = $4, last_error = $5,
               status = CASE WHEN lock_token = $2 THEN $6 ELSE status END,
               tries = CASE WHEN lock_token = $2 THEN tries + 1 ELSE tries END,
               next_attempt_at = CASE WHEN lock_token = $2 THEN $7 ELSE next_attempt_at END,
               delivered_at = CASE WHEN lock_token = $2 THEN $8 ELSE delivered_at END,
               locked_until = CASE WHEN lock_token = $2 THEN NULL ELSE locked_until END,
               lock_token = CASE WHEN lock_token = $2 THEN NULL ELSE lock_token END
             WHERE id = $1",
        )
        .bind(&rec.delivery_id)
        .bind(&rec.token)
        .bind(started)
        .bind(code)
        .bind(&a.error)
        .bind(status)
        .bind(next)
        .bind(delivered)
        .execute(&mut *tx)
        .await?;
        let row: Option<(Option<i64>, bool)> = if rec.next == NextStep::Delivered {
            sqlx::query_as(
                "UPDATE subscriptions SET failing_since = NULL WHERE id = $1 RETURNING failing_since, enabled",
            )
            .bind(&rec.subscription_id)
            .fetch_optional(&mut *tx)
            .await?
        } else {
            sqlx::query_as(
                "UPDATE subscriptions SET failing_since = COALESCE(failing_since, $2) WHERE id = $1 RETURNING failing_since, enabled",
            )
            .bind(&rec.subscription_id)
            .bind(started)
            .fetch_optional(&mut *tx)
            .await?
        };
        let mut enabled = row.as_ref().is_some_and(|r| r.1);
        if let Some(reason) = &rec.disable {
            sqlx::query(
                "UPDATE subscriptions SET enabled = FALSE, disabled_reason = $2, disabled_at = $3, updated_at = $3 WHERE id = $1 AND enabled",
            )
            .bind(&rec.subscription_id)
            .bind(reason)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            enabled = false;
        }
        if let Some((failing, _)) = row {
            out.push(SubscriptionHealth {
                tenant_id: rec.tenant_id.clone(),
                subscription_id: rec.subscription_id.clone(),
                failing_since: failing.map(from_millis),
                enabled,
            });
        }
    }
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn release(pool: &PgPool, token: &str, ids: &[String]) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE deliveries SET locked_until = NULL, lock_token = NULL WHERE id = ANY($1) AND lock_token = $2",
    )
    .bind(ids)
    .bind(token)
    .execute(pool)
    .await?;
    Ok(())
}
