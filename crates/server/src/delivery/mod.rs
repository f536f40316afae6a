//! Outbound delivery: the worker that takes due deliveries from the outbox, signs and POSTs
//! them, and records every attempt.
//!
//! At-least-once: a delivery leaves the outbox only when a 2xx came back. The worker leases what
//! it claims (`locked_until`), so several nodes on one PostgreSQL share the work without sending
//! one delivery twice at the same time, and a node that dies mid-attempt only delays its
//! deliveries until the lease ends. Concurrency is bounded in total (per node) and per
//! subscription (across nodes). Outcomes are recorded in batches, one transaction each.

pub mod dispatch;
pub mod format;
pub mod headers;
pub mod otlp;
pub mod redact;
pub mod schedule;
pub mod sign;
pub mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cistern_store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, DeliveryAttempt, DeliveryFormat, DispatchRecord,
    NextStep, Store, SubscriptionHealth,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::config::{parse_duration, Config};
use crate::secrets::MasterKey;
use schedule::RetrySchedule;
use sign::SigningKeys;

/// Bytes of a response body kept in the attempt log.
pub const RESPONSE_CAP: usize = 4096;

/// Added to the attempt timeout to make a lease: the time to record the outcome.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Most attempt outcomes recorded per transaction.
const RECORD_BATCH: usize = 256;

/// The delivery settings, checked.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Run the worker on this node.
    pub worker: bool,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Retry schedule.
    pub schedule: RetrySchedule,
    /// Disable a subscription failing for this long.
    pub disable_after: Duration,
    /// Most attempts in flight on this node.
    pub concurrency: usize,
    /// Most attempts in flight per subscription.
    pub per_subscription: usize,
    /// How often to look for due work nobody signalled.
    pub poll_interval: Duration,
    /// Where requests may go, and through which proxy.
    pub targets: target::TargetPolicy,
    /// Base URL of the hub, for links in payloads.
    pub public_url: String,
    /// Retry schedule of trigger events.
    pub trigger_schedule: RetrySchedule,
    /// A trigger event without a run after this long is expired.
    pub trigger_expire_after: Duration,
}

impl DeliverySettings {
    /// Checks the configuration's delivery settings; the error names the setting.
    pub fn from_config(c: &Config) -> Result<Self, String> {
        let named = |key: &str, r: Result<Duration, String>| r.map_err(|e| format!("{key}: {e}"));
        let timeout = named("delivery_timeout", parse_duration(&c.delivery_timeout))?;
        if timeout.is_zero() {
            return Err("delivery_timeout must be more than 0".into());
        }
        let public_url = c
            .public_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| format!("http://{}", c.listen));
        Ok(Self {
            worker: c.delivery_worker,
            timeout,
            schedule: RetrySchedule::parse(&c.delivery_schedule)
                .map_err(|e| format!("delivery_schedule: {e}"))?,
            disable_after: named(
                "delivery_disable_after",
                parse_duration(&c.delivery_disable_after),
            )?,
            concurrency: c.delivery_concurrency.max(1),
            per_subscription: c.delivery_concurrency_per_subscription.max(1),
            poll_interval: named(
                "delivery_poll_interval",
                parse_duration(&c.delivery_poll_interval),
            )?
            .max(Duration::from_millis(10)),
            targets: target::TargetPolicy::from_config(c)?,
            public_url: public_url.trim_end_matches('/').to_owned(),
            trigger_schedule: RetrySchedule::parse(&c.trigger_schedule)
                .map_err(|e| format!("trigger_schedule: {e}"))?,
            trigger_expire_after: named(
                "trigger_expire_after",
                parse_duration(&c.trigger_expire_after),
            )?
            .max(Duration::from_secs(1)),
        })
    }
}

/// What every attempt needs.
struct Ctx {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    settings: DeliverySettings,
    client: reqwest::Client,
    node: String,
    /// Wakes the dispatcher (outcomes recorded: leases freed).
    kick: Notify,
    /// Where attempts are counted.
    telemetry: Option<Arc<crate::ops::telemetry::Telemetry>>,
}

/// A running delivery worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Starts the worker.
    pub fn start(
        store: Arc<dyn Store>,
        master: Arc<MasterKey>,
        settings: DeliverySettings,
        telemetry: Option<Arc<crate::ops::telemetry::Telemetry>>,
    ) -> Result<Self, String> {
        let client = settings.targets.client(settings.timeout)?;
        let node = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let ctx = Arc::new(Ctx {
            store,
            master,
            settings,
            client,
            node,
            kick: Notify::new(),
            telemetry,
        });
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(dispatch(ctx, rx));
        Ok(Self { stop, handle })
    }

    /// Stops claiming, lets attempts in flight finish (each is bounded by the timeout), records
    /// them, and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "the delivery worker failed");
        }
    }
}

async fn dispatch(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let signal = ctx.store.delivery_signal();
    let permits = Arc::new(Semaphore::new(ctx.settings.concurrency));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<AttemptRecord>();
    let recorder = tokio::spawn(record(ctx.clone(), done_rx));
    let (sent_tx, sent_rx) = mpsc::unbounded_channel::<DispatchRecord>();
    let dispatch_recorder = tokio::spawn(record_dispatches(ctx.clone(), sent_rx));
    // Leases in flight: id → (token, is a trigger event).
    let in_flight: Arc<Mutex<HashMap<String, (String, bool)>>> = Arc::default();
    let mut tasks = JoinSet::new();
    tracing::info!(node = %ctx.node, concurrency = ctx.settings.concurrency, "delivery worker started");
    let mut backoff = Duration::ZERO;
    loop {
        if *stop.borrow() {
            break;
        }
        let mut claimed_all = false;
        // Trigger events first: someone is waiting for their pipeline to start, and they are
        // few next to notifications.
        let free = permits.available_permits();
        if free > 0 {
            let now = OffsetDateTime::now_utc();
            let req = claim_request(&ctx, now, free);
            match ctx
                .store
                .claim_dispatches(&req, now - ctx.settings.trigger_expire_after)
                .await
            {
                Ok(batch) => {
                    claimed_all |= batch.len() == free;
                    for d in batch {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            break;
                        };
                        if let Ok(mut m) = in_flight.lock() {
                            m.insert(d.id.clone(), (d.token.clone(), true));
                        }
                        let (ctx, done, flight) = (ctx.clone(), sent_tx.clone(), in_flight.clone());
                        tasks.spawn(async move {
                            let id = d.id.clone();
                            let rec = dispatch::attempt(&ctx, d).await;
                            let _ = done.send(rec);
                            if let Ok(mut m) = flight.lock() {
                                m.remove(&id);
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in = ?backoff, "could not claim trigger events");
                }
            }
        }
        let free = permits.available_permits();
        if free > 0 {
            let req = claim_request(&ctx, OffsetDateTime::now_utc(), free);
            match ctx.store.claim_deliveries(&req).await {
                Ok(batch) => {
                    backoff = Duration::ZERO;
                    claimed_all |= batch.len() == free;
                    for d in batch {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            break;
                        };
                        if let Ok(mut m) = in_flight.lock() {
                            m.insert(d.id.clone(), (d.token.clone(), false));
                        }
                        let (ctx, done, flight) = (ctx.clone(), done_tx.clone(), in_flight.clone());
                        tasks.spawn(async move {
                            let id = d.id.clone();
                            let rec = attempt(&ctx, d).await;
                            let _ = done.send(rec);
                            if let Ok(mut m) = flight.lock() {
                                m.remove(&id);
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in = ?backoff, "could not claim deliveries");
                }
            }
        }
        while tasks.try_join_next().is_some() {}
        if claimed_all && backoff.is_zero() {
            // There may be more due right now.
            continue;
        }
        let wait = if backoff.is_zero() {
            ctx.settings.poll_interval
        } else {
            backoff
        };
        tokio::select! {
            _ = signal.notified() => {}
            _ = ctx.kick.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Attempts in flight end within their timeout; wait for them (a little longer, for the
    // answer to be read), then give back the leases of any that did not.
    let deadline = ctx.settings.timeout + Duration::from_secs(2);
    if tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.abort_all();
        let left: Vec<(String, (String, bool))> = in_flight
            .lock()
            .map(|m| m.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
            .unwrap_or_default();
        for (id, (token, trigger_event)) in left {
            let _ = if trigger_event {
                ctx.store.release_dispatches(&token, &[id]).await
            } else {
                ctx.store.release_deliveries(&token, &[id]).await
            };
        }
    }
    drop(done_tx);
    drop(sent_tx);
    let _ = recorder.await;
    let _ = dispatch_recorder.await;
    tracing::info!(node = %ctx.node, "delivery worker stopped");
}

fn claim_request(ctx: &Ctx, now: OffsetDateTime, limit: usize) -> ClaimRequest {
    ClaimRequest {
        node: ctx.node.clone(),
        token: uuid::Uuid::new_v4().to_string(),
        now,
        lease_until: now + ctx.settings.timeout + LEASE_MARGIN,
        limit,
        per_subscription: ctx.settings.per_subscription,
    }
}

/// Records trigger events' attempts in batches.
async fn record_dispatches(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<DispatchRecord>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        loop {
            match ctx
                .store
                .record_dispatches(&batch, OffsetDateTime::now_utc())
                .await
            {
                Ok(()) => break,
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::warn!(error = %e, tries, "could not record trigger attempts; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, size = batch.len(), "could not record trigger attempts; they will be retried when their lease ends");
                    break;
                }
            }
        }
        ctx.kick.notify_one();
    }
}

/// Records outcomes in batches; disables subscriptions failing for too long.
async fn record(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<AttemptRecord>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        let health = loop {
            match ctx
                .store
                .record_attempts(&batch, OffsetDateTime::now_utc())
                .await
            {
                Ok(h) => break h,
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::warn!(error = %e, tries, "could not record delivery attempts; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(e) => {
                    // The leases run out and the deliveries are attempted again: at least once.
                    tracing::error!(error = %e, size = batch.len(), "could not record delivery attempts; they will be retried when their lease ends");
                    break Vec::new();
                }
            }
        };
        let now = OffsetDateTime::now_utc();
        for (tenant_id, subscription_id, reason) in
            to_disable(&health, &batch, now, ctx.settings.disable_after)
        {
            tracing::warn!(subscription = %subscription_id, %reason, "disabling a failing subscription");
            if let Err(e) = ctx
                .store
                .set_subscription_enabled(&tenant_id, &subscription_id, false, Some(&reason), now)
                .await
            {
                tracing::error!(error = %e, "could not disable a failing subscription");
            }
        }
        ctx.kick.notify_one();
    }
}

/// The subscriptions a recorded batch leaves failing for at least `disable_after` (every attempt
/// failed since), each with the reason to record: (tenant, subscription, reason). The worker
/// disables them; the fixture generator replays the same rule.
pub fn to_disable(
    health: &[SubscriptionHealth],
    batch: &[AttemptRecord],
    now: OffsetDateTime,
    disable_after: Duration,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for h in health.iter().rev() {
        if !seen.insert(h.subscription_id.clone()) || !h.enabled {
            continue;
        }
        let Some(since) = h.failing_since else {
            continue;
        };
        let failing_for = now - since;
        if failing_for < disable_after {
            continue;
        }
        let last = batch
            .iter()
            .rev()
            .find(|r| r.subscription_id == h.subscription_id)
            .map(|r| describe_failure(&r.attempt))
            .unwrap_or_default();
        let reason = format!(
            "disabled automatically: every delivery attempt failed since {} ({} h, the limit is delivery_disable_after = {} h); last attempt: {last}. Fix the receiver, then enable the subscription again: its queue resumes",
            format::rfc3339(since),
            failing_for.whole_hours(),
            disable_after.as_secs() / 3600,
        );
        out.push((h.tenant_id.clone(), h.subscription_id.clone(), reason));
    }
    out
}

/// What an attempt's outcome means for its delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What comes next.
    pub next: NextStep,
    /// The error to log with the attempt.
    pub error: Option<String>,
    /// Disable the subscription with this reason (410 Gone).
    pub disable: Option<String>,
}

/// The verdict on attempt number `made` of delivery `id`, started at `started_at` and judged at
/// `now`: `answer` is the HTTP status with the wait a `Retry-After` asked for, or why no answer
/// came. 2xx delivers; 410 disables the subscription and keeps the delivery queued; anything
/// else is retried on the schedule (or after `Retry-After` on 429 and 503, while the schedule
/// allows attempts) until the schedule is spent. Shared by the worker and the fixture generator.
pub fn verdict(
    schedule: &RetrySchedule,
    made: usize,
    answer: Result<(u16, Option<Duration>), String>,
    id: &str,
    started_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Verdict {
    let retry_or_give_up = |wait: Option<Duration>| match wait {
        Some(w) => NextStep::RetryAt(now + w),
        None => NextStep::GiveUp,
    };
    match answer {
        Ok((status, _)) if (200..300).contains(&status) => Verdict {
            next: NextStep::Delivered,
            error: None,
            disable: None,
        },
        Ok((410, _)) => Verdict {
            // Stays queued: re-enabling the subscription resumes it.
            next: NextStep::RetryAt(now),
            error: Some("410 Gone: the receiver asked for no more deliveries".into()),
            disable: Some(format!(
                "disabled automatically: the receiver answered 410 Gone at {} (delivery {id}); enable the subscription again once the URL is right: its queue resumes",
                format::rfc3339(started_at),
            )),
        },
        Ok((status, retry_after)) => {
            let asked = retry_after.filter(|_| matches!(status, 429 | 503));
            let next = match (asked, schedule.delay_after(made)) {
                // Retry-After is the receiver's word on when to come back; it stands in for the
                // schedule's delay, while the schedule still allows attempts.
                (Some(wait), Some(_)) => retry_or_give_up(Some(wait)),
                _ => retry_or_give_up(schedule.next_delay(made)),
            };
            Verdict {
                next,
                error: Some(format!("HTTP {status} (not 2xx)")),
                disable: None,
            }
        }
        Err(err) => Verdict {
            next: retry_or_give_up(schedule.next_delay(made)),
            error: Some(err),
            disable: None,
        },
    }
}

fn describe_failure(a: &DeliveryAttempt) -> String {
    match (&a.status_code, &a.error) {
        (_, Some(e)) => e.clone(),
        (Some(code), None) => format!("HTTP {code}"),
        (None, None) => "no answer".into(),
    }
}

/// The error chain of a failed request, without repeats (reqwest nests its causes) and without
/// the request's URL (it may carry credentials: see `redact`).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let e: &(dyn std::error::Error + 'static) = &e;
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// One attempt of one delivery; never fails (a failure is an outcome to record).
async fn attempt(ctx: &Ctx, d: ClaimedDelivery) -> AttemptRecord {
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let sub = &d.subscription;
    let s = &ctx.settings;
    let made = (d.tries + 1) as usize;
    let mut rec = AttemptRecord {
        delivery_id: d.id.clone(),
        token: d.token.clone(),
        tenant_id: d.tenant_id.clone(),
        subscription_id: sub.id.clone(),
        attempt: DeliveryAttempt {
            attempt: d.attempts + 1,
            started_at,
            duration_ms: 0,
            status_code: None,
            response_body: None,
            error: None,
            node: Some(ctx.node.clone()),
        },
        next: NextStep::GiveUp,
        disable: None,
    };
    let outcome = send(ctx, &d).await;
    rec.attempt.duration_ms = clock.elapsed().as_millis() as i64;
    let answer = match outcome {
        Ok(answer) => {
            rec.attempt.status_code = Some(answer.status);
            rec.attempt.response_body = Some(answer.body);
            Ok((answer.status, answer.retry_after))
        }
        Err(err) => Err(err),
    };
    let v = verdict(
        &s.schedule,
        made,
        answer,
        &d.id,
        started_at,
        OffsetDateTime::now_utc(),
    );
    rec.next = v.next;
    // Stored and shown to read-only sessions: no URL beyond its origin.
    rec.attempt.error = v.error.map(|e| redact::strip_urls(&e));
    rec.disable = v.disable;
    if rec.next == NextStep::GiveUp {
        tracing::warn!(delivery = %d.id, subscription = %sub.id, attempts = made, "delivery failed: retry schedule spent");
    }
    if let Some(t) = &ctx.telemetry {
        let outcome = match rec.next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "retry",
            NextStep::GiveUp => "failed",
        };
        t.attempt(outcome, clock.elapsed());
    }
    rec
}

/// What came back.
struct Answer {
    status: u16,
    body: String,
    retry_after: Option<Duration>,
}

/// Signs and sends one delivery; `Err` when no HTTP answer came (or it could not be sent).
async fn send(ctx: &Ctx, d: &ClaimedDelivery) -> Result<Answer, String> {
    let sub = &d.subscription;
    let s = &ctx.settings;
    // An `otlp` exporter may have no signing secret (receivers authenticate by header).
    let keys = if sub.secret_name.is_empty() {
        None
    } else {
        match crate::secrets::reveal(
            ctx.store.as_ref(),
            &ctx.master,
            &d.tenant_id,
            &sub.secret_name,
        )
        .await
        {
            Ok(Some((current, previous))) => Some(SigningKeys { current, previous }),
            Ok(None) => {
                return Err(format!(
                "the subscription's secret {:?} does not exist; set it (`cistern secrets set {}=…`)",
                sub.secret_name, sub.secret_name
            ))
            }
            Err(e) => return Err(format!("cannot read the secret {:?}: {e}", sub.secret_name)),
        }
    };
    let extra =
        headers::render(ctx.store.as_ref(), &ctx.master, &d.tenant_id, &sub.headers).await?;
    let msg = format::Message {
        tenant: &d.tenant_id,
        id: &d.message_id,
        event: d.event_type,
        at: d.created_at,
        snapshot: &d.message,
    };
    let rendered = format::render(sub.format, &msg, &s.public_url)?;
    let url = s.targets.check_url(&sub.url)?;
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let mut req = ctx
        .client
        .post(url)
        .header("content-type", rendered.content_type)
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("x-cistern-event", d.event_type.as_str())
        .headers(extra);
    if let Some(keys) = &keys {
        req = req.header(
            "webhook-signature",
            sign::webhook_signature(keys, &d.id, timestamp, &rendered.body),
        );
        if sub.format == DeliveryFormat::Jobserv {
            req = req.header(
                "x-jobserv-sig",
                sign::jobserv_signature(keys, &rendered.body),
            );
        }
    }
    let exchange = async {
        let mut resp = req.body(rendered.body).send().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "timed out after {} ms (delivery_timeout)",
                    s.timeout.as_millis()
                )
            } else {
                error_chain(e)
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| schedule::retry_after(v, OffsetDateTime::now_utc()));
        // Only the first bytes are kept; the rest is not read (the connection is dropped).
        let mut kept: Vec<u8> = Vec::new();
        while kept.len() < RESPONSE_CAP {
            match resp.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(_) => break,
            }
        }
        kept.truncate(RESPONSE_CAP);
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&kept).into_owned(),
            retry_after,
        })
    };
    match tokio::time::timeout(s.timeout + Duration::from_millis(500), exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timed out after {} ms (delivery_timeout)",
            s.timeout.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule::parse("0s,5s,5m").unwrap()
    }

    #[test]
    fn verdicts_follow_the_answer() {
        let t = time::macros::datetime!(2024-06-01 12:00 UTC);
        let ok = verdict(&schedule(), 1, Ok((204, None)), "d", t, t);
        assert_eq!(ok.next, NextStep::Delivered);
        assert_eq!(ok.error, None);
        let gone = verdict(&schedule(), 1, Ok((410, None)), "d1", t, t);
        assert_eq!(gone.next, NextStep::RetryAt(t));
        assert!(gone
            .disable
            .unwrap()
            .contains("410 Gone at 2024-06-01T12:00:00Z (delivery d1)"));
        let bad = verdict(&schedule(), 1, Ok((500, None)), "d", t, t);
        assert_eq!(bad.error.as_deref(), Some("HTTP 500 (not 2xx)"));
        let NextStep::RetryAt(at) = bad.next else {
            panic!("retried")
        };
        assert!(at >= t + time::Duration::seconds(4) && at < t + time::Duration::seconds(6));
        // Retry-After stands in for the schedule's delay on 503, not on 500.
        let wait = Some(Duration::from_secs(120));
        assert_eq!(
            verdict(&schedule(), 1, Ok((503, wait)), "d", t, t).next,
            NextStep::RetryAt(t + time::Duration::seconds(120))
        );
        assert_ne!(
            verdict(&schedule(), 1, Ok((500, wait)), "d", t, t).next,
            NextStep::RetryAt(t + time::Duration::seconds(120))
        );
        // The third attempt of a three-attempt schedule is the last.
        let spent = verdict(&schedule(), 3, Err("timed out".into()), "d", t, t);
        assert_eq!(spent.next, NextStep::GiveUp);
        assert_eq!(spent.error.as_deref(), Some("timed out"));
    }

    #[test]
    fn subscriptions_failing_too_long_are_named_once() {
        let t = time::macros::datetime!(2024-06-01 12:00 UTC);
        let health = |sub: &str, since: Option<OffsetDateTime>, enabled: bool| SubscriptionHealth {
            tenant_id: "t".into(),
            subscription_id: sub.into(),
            failing_since: since,
            enabled,
        };
        let rec = |sub: &str, code: u16| AttemptRecord {
            delivery_id: "d".into(),
            token: "k".into(),
            tenant_id: "t".into(),
            subscription_id: sub.into(),
            attempt: DeliveryAttempt {
                attempt: 1,
                started_at: t,
                duration_ms: 5,
                status_code: Some(code),
                response_body: None,
                error: None,
                node: None,
            },
            next: NextStep::GiveUp,
            disable: None,
        };
        let day = time::Duration::days(1);
        let found = to_disable(
            &[
                health("old", Some(t - day * 6), true),
                health("old", Some(t - day * 6), true),
                health("young", Some(t - day), true),
                health("healthy", None, true),
                health("off", Some(t - day * 9), false),
            ],
            &[rec("old", 502), rec("young", 500)],
            t,
            Duration::from_secs(5 * 86_400),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, "old");
        assert!(
            found[0].2.contains("since 2024-05-26T12:00:00Z (144 h"),
            "{}",
            found[0].2
        );
        assert!(found[0].2.contains("last attempt: HTTP 502"));
    }
}
