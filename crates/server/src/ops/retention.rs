//! Retention: a periodic task of `cistern serve` that deletes raw inbound events and finished
//! deliveries older than their configured ages, in small batches (each its own short transaction;
//! on SQLite, one slot of the group-commit writer), pausing between batches so ingestion always
//! gets the database in between.

use std::sync::Arc;
use std::time::Duration;

use cistern_store::Store;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::{parse_duration, parse_retention, Config};
use crate::ops::telemetry::Telemetry;

/// Rows per batch.
pub const BATCH: usize = 500;
/// Pause between two batches of one pass.
const PAUSE: Duration = Duration::from_millis(20);

/// The retention settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    /// Age after which raw events go; `None` keeps them.
    pub events: Option<Duration>,
    /// Age after which finished deliveries go; `None` keeps them.
    pub deliveries: Option<Duration>,
    /// Time between passes.
    pub interval: Duration,
}

impl RetentionSettings {
    /// Checks the configuration's retention settings; the error names the setting.
    pub fn from_config(c: &Config) -> Result<Self, String> {
        let interval = parse_duration(&c.retention_interval)
            .map_err(|e| format!("retention_interval: {e}"))?;
        if interval < Duration::from_secs(1) {
            return Err("retention_interval must be at least 1s".into());
        }
        Ok(Self {
            events: parse_retention(&c.retention_events)
                .map_err(|e| format!("retention_events: {e}"))?,
            deliveries: parse_retention(&c.retention_deliveries)
                .map_err(|e| format!("retention_deliveries: {e}"))?,
            interval,
        })
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Raw events.
    pub events: u64,
    /// Finished deliveries.
    pub deliveries: u64,
    /// Their attempt-log rows.
    pub attempts: u64,
    /// Outbound messages.
    pub messages: u64,
}

/// One pass: everything older than the ages at `now`, batch after batch until none is left
/// (or `stop` turns true).
pub async fn pass(
    store: &dyn Store,
    settings: &RetentionSettings,
    now: OffsetDateTime,
    telemetry: Option<&Telemetry>,
    stop: &watch::Receiver<bool>,
) -> Result<PassReport, cistern_store::StoreError> {
    let mut report = PassReport::default();
    let age = |d: Duration| now - time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
    if let Some(keep) = settings.events {
        let before = age(keep);
        loop {
            let n = store.prune_events(before, BATCH).await?;
            report.events += n;
            if let Some(t) = telemetry {
                t.pruned("events", n);
            }
            if (n as usize) < BATCH || *stop.borrow() {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    if let Some(keep) = settings.deliveries {
        let before = age(keep);
        loop {
            let p = store.prune_deliveries(before, BATCH).await?;
            report.deliveries += p.deliveries;
            report.attempts += p.attempts;
            report.messages += p.messages;
            if let Some(t) = telemetry {
                t.pruned("deliveries", p.deliveries);
                t.pruned("delivery_attempts", p.attempts);
                t.pruned("messages", p.messages);
            }
            if ((p.deliveries as usize) < BATCH && (p.messages as usize) < BATCH) || *stop.borrow()
            {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    Ok(report)
}

/// The periodic task: a pass at start, then every `interval`, until `stop`.
pub fn spawn(
    store: Arc<dyn Store>,
    settings: RetentionSettings,
    telemetry: Arc<Telemetry>,
    limits: Arc<crate::ops::limits::Limits>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if settings.events.is_some() || settings.deliveries.is_some() {
                match pass(
                    store.as_ref(),
                    &settings,
                    OffsetDateTime::now_utc(),
                    Some(&telemetry),
                    &stop,
                )
                .await
                {
                    Ok(r) if r != PassReport::default() => tracing::info!(
                        events = r.events,
                        deliveries = r.deliveries,
                        attempts = r.attempts,
                        messages = r.messages,
                        "retention: deleted old rows"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "retention pass failed; retrying at the next interval")
                    }
                }
            }
            limits.forget_idle();
            tokio::select! {
                _ = tokio::time::sleep(settings.interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    })
}
