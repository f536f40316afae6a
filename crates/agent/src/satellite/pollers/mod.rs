//! Pollers: for tools that cannot push, the satellite asks them every `scheduling_interval`
//! for runs finished since last time and puts each into the spool as a Harness SEI run
//! (`/v1/custom-cicd`), so it is forwarded like anything the relay accepted.
//!
//! Each poller remembers its position in a state file under the spool
//! (`pollers/<integration id>.json`), written atomically after the runs it covers are in the
//! spool. A restart therefore misses nothing; at worst (killed between the two writes) a run is
//! spooled twice, and the hub takes the second as an update of the same run (each run carries a
//! stable `execution_id`), so it is never counted twice.

pub mod gitlab;
pub mod jenkins;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use super::config::{Application, HubSettings, Integration};
use super::spool::{Header, Spool, SpoolError};
use super::Status;

/// Folder of the pollers' state files, under the spool directory.
pub const STATE_DIR: &str = "pollers";
/// Where polled runs go at the hub.
pub const SEI_ENDPOINT: &str = "/v1/custom-cicd";

/// Why a poll stopped early (its position is then not advanced past what was spooled).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The tool could not be reached or answered an error.
    #[error("{0}")]
    Tool(String),
    /// The spool refused (full, or the disk failed).
    #[error("{0}")]
    Spool(#[from] SpoolError),
    /// The state file could not be written.
    #[error("saving the poller's position in {}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The pollers there are.
pub enum Poller {
    /// Jenkins.
    Jenkins(jenkins::Jenkins),
    /// GitLab.
    Gitlab(gitlab::Gitlab),
}

/// What a poller works with.
pub struct Context {
    /// Its integration.
    pub integration: Integration,
    /// Where runs go.
    pub spool: Arc<Spool>,
    /// Wakes the forwarder.
    pub wake: Arc<Notify>,
    /// Health.
    pub status: Arc<Status>,
    /// Its position.
    pub state_file: PathBuf,
}

impl Context {
    /// Spools one run (blocking I/O, off the async threads) and wakes the forwarder.
    pub async fn enqueue(&self, run: &Value) -> Result<u64, PollError> {
        let header = Header {
            v: 1,
            endpoint: SEI_ENDPOINT.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            accepted_at_ms: crate::report::now_ms(),
            origin: format!("poller:{}", self.integration.id),
        };
        let body = serde_json::to_vec(run).unwrap_or_default();
        let spool = self.spool.clone();
        let seq = tokio::task::spawn_blocking(move || spool.put(&header, &body))
            .await
            .map_err(|e| PollError::Tool(e.to_string()))??;
        self.wake.notify_one();
        Ok(seq)
    }

    /// The saved position (default when none).
    pub fn load<T: DeserializeOwned + Default>(&self) -> T {
        load_state(&self.state_file)
    }

    /// Saves the position durably.
    pub async fn save<T: Serialize>(&self, state: &T) -> Result<(), PollError> {
        let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        let path = self.state_file.clone();
        tokio::task::spawn_blocking(move || save_state(&path, &bytes))
            .await
            .map_err(|e| PollError::Tool(e.to_string()))?
    }
}

/// Reads a state file; a missing or unreadable one starts from scratch (with a warning for the
/// latter: the tool's history is then read again, and the hub takes it as updates).
pub fn load_state<T: DeserializeOwned + Default>(path: &Path) -> T {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "unreadable poller state; starting over");
            T::default()
        }),
        Err(_) => T::default(),
    }
}

fn save_state(path: &Path, bytes: &[u8]) -> Result<(), PollError> {
    let err = |source| PollError::State {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(err)
}

/// The state file's name for an integration id (any characters but letters, digits, `-`, `_`
/// and `.` are hex-escaped).
pub fn state_file_name(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c.to_string()
            } else {
                format!("%{:02x}", c as u32)
            }
        })
        .collect();
    format!("{safe}.json")
}

/// The poller of an integration, if its application has one.
pub fn for_integration(i: &Integration, hub: &HubSettings) -> Result<Option<Poller>, String> {
    let client = || super::forward::http_client(hub, false);
    Ok(match i.application {
        Application::Jenkins => Some(Poller::Jenkins(jenkins::Jenkins::new(i, client()?)?)),
        Application::Gitlab => Some(Poller::Gitlab(gitlab::Gitlab::new(i, client()?)?)),
        Application::Other(_) => None,
    })
}

/// Polls every `interval` until `stop`; the first poll at once.
pub async fn run(
    poller: Poller,
    ctx: Context,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let source = format!("poller:{}", ctx.integration.id);
    loop {
        let result = match &poller {
            Poller::Jenkins(j) => j.poll(&ctx).await,
            Poller::Gitlab(g) => g.poll(&ctx).await,
        };
        match result {
            Ok(n) => {
                ctx.status.source_ok(&source);
                if n > 0 {
                    tracing::info!(integration = ctx.integration.id, runs = n, "polled");
                }
            }
            Err(e) => {
                tracing::warn!(integration = ctx.integration.id, error = %e, "poll failed; trying again next interval");
                ctx.status
                    .source_error(&source, format!("integration {}: {e}", ctx.integration.id));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A stable GUID-shaped id for an integration's instance at the hub (the hub identifies runs
/// by instance, pipeline and run key, so it must not change between restarts).
pub fn instance_guid(i: &Integration) -> String {
    if let Some(g) = i.metadata.get("instance_guid").and_then(Value::as_str) {
        return g.to_owned();
    }
    let h = Sha256::digest(format!(
        "cistern-satellite\0{}\0{}",
        i.id,
        i.url.as_deref().unwrap_or("")
    ));
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The instance name: `metadata.instance_name`, else the tool's host.
pub fn instance_name(i: &Integration, kind: &str) -> String {
    if let Some(n) = i.metadata.get("instance_name").and_then(Value::as_str) {
        return n.to_owned();
    }
    let host = i
        .url
        .as_deref()
        .and_then(|u| u.split("://").nth(1))
        .and_then(|r| r.split('/').next())
        .unwrap_or(kind);
    format!("{kind} {host}")
}

/// A commit id the hub accepts (40 or 64 hexadecimal characters); others (Subversion revision
/// numbers, …) are left out.
pub fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Turns a reqwest failure into a poll error naming the URL once, then the causes
/// (`…: client error (Connect): dns error: …`).
pub fn tool_error(url: &str, e: &reqwest::Error) -> PollError {
    let mut s = format!("cannot reach {url}");
    let mut cur = std::error::Error::source(e);
    if cur.is_none() {
        s.push_str(&format!(": {e}"));
    }
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    PollError::Tool(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stable_and_guid_shaped() {
        let i = Integration {
            id: "7".into(),
            application: Application::Jenkins,
            url: Some("https://jenkins.local".into()),
            username: None,
            api_key: None,
            metadata: serde_json::json!({}),
        };
        let g = instance_guid(&i);
        assert_eq!(g, instance_guid(&i.clone()));
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "8");
        assert_eq!(instance_name(&i, "jenkins"), "jenkins jenkins.local");
        assert_eq!(state_file_name("a/b c"), "a%2fb%20c.json");
    }
}
