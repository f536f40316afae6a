//! Heartbeats: every `scheduling_interval` the satellite tells the hub it is alive, which
//! configuration it runs, how much waits in its spool, when it last delivered and what last
//! went wrong (`POST /api/v1/satellites/heartbeat`). The hub marks it stale after three missed
//! intervals. Heartbeats are not spooled: an old one says nothing worth delivering late.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::config::{Application, SatelliteConfig};
use super::forward::{Answer, HubClient};
use super::spool::Spool;
use super::Status;

/// The hub's heartbeat path.
pub const PATH: &str = "/api/v1/satellites/heartbeat";

/// An application's name, as the configuration gave it.
pub fn application_name(a: &Application) -> &str {
    match a {
        Application::Jenkins => "jenkins",
        Application::Gitlab => "gitlab",
        Application::Other(o) => o.as_str(),
    }
}

/// The heartbeat body. `unpolled` lists the integrations no poller reads (an application other
/// than jenkins and gitlab): their tools must push to the relay, and the hub shows them.
pub fn body(config: &SatelliteConfig, spool: &Spool, status: &Status) -> Value {
    let usage = spool.usage();
    let report = status.report(&usage);
    let integrations: Vec<Value> = config
        .integrations
        .iter()
        .map(|i| json!({"id": i.id, "application": application_name(&i.application)}))
        .collect();
    let unpolled: Vec<Value> = config
        .integrations
        .iter()
        .filter(|i| matches!(i.application, Application::Other(_)))
        .map(|i| {
            json!({
                "id": i.id,
                "application": application_name(&i.application),
                "message": "no poller for this application (jenkins and gitlab are polled): its tools must push to the relay",
            })
        })
        .collect();
    json!({
        "id": config.hub.id,
        "version": env!("CARGO_PKG_VERSION"),
        "config_hash": config.hash,
        "time": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "interval_seconds": config.hub.scheduling_interval.as_secs().max(1),
        "spool_depth": usage.depth,
        "spool_bytes": usage.bytes,
        "spool_limit_bytes": usage.limit,
        "spool_near_full": usage.near_full(),
        "last_forward": report["last_forward"],
        "last_error": report["last_error"],
        "forwarded": report["forwarded"],
        "rejected": report["rejected"],
        "tenant": config.hub.tenant,
        "integrations": integrations,
        "unpolled": unpolled,
    })
}

/// Sends heartbeats until `stop`; the first at once.
pub async fn run(
    config: Arc<SatelliteConfig>,
    spool: Arc<Spool>,
    status: Arc<Status>,
    hub: Arc<HubClient>,
    mut stop: watch::Receiver<bool>,
) {
    let every = config.hub.scheduling_interval.max(Duration::from_secs(1));
    loop {
        let hb = body(&config, &spool, &status);
        match hub.post_json(PATH, &hb).await {
            Answer::Taken { .. } => tracing::debug!("heartbeat sent"),
            Answer::Refused { message, .. } => {
                tracing::warn!(reason = %message, "the hub refused the heartbeat")
            }
            Answer::Later { reason, .. } => {
                tracing::warn!(reason = %reason, "heartbeat not delivered")
            }
        }
        if usage_warning(&spool, &status) {
            tracing::warn!(
                spool = %spool.dir().display(),
                bytes = spool.usage().bytes,
                limit = spool.usage().limit,
                "the spool is over 80% of its bound; when full, new requests are refused"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

fn usage_warning(spool: &Spool, status: &Status) -> bool {
    let u = spool.usage();
    status.check_usage(&u);
    u.near_full()
}
