//! Data crossing the store boundary.

use cistern_core::{FieldError, RunReport, RunResult};
use serde::Serialize;
use time::OffsetDateTime;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist (for this tenant).
    #[error("not found: {0}")]
    NotFound(String),
    /// It already exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The write breaks a rule only the store can check (e.g. an unknown instance on a strict tenant).
    #[error("rejected: {0:?}")]
    Rejected(Vec<FieldError>),
    /// A [`StoreError::Rejected`] write whose request was kept in the events log as rejected:
    /// the reasons, and the id of that event (the refusal's reply names it).
    #[error("rejected (event {1}): {0:?}")]
    RejectedLogged(Vec<FieldError>, String),
    /// The caller gave a bad argument (e.g. an unreadable cursor).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The event was delivered before (same delivery id); nothing was stored again. Holds the
    /// id of the first event.
    #[error("duplicate delivery of event {0}")]
    Duplicate(String),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(String),
}

impl StoreError {
    /// The reasons of a refusal by the store's rules, logged or not.
    pub fn rejection(&self) -> Option<&[FieldError]> {
        match self {
            StoreError::Rejected(e) | StoreError::RejectedLogged(e, _) => Some(e),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Tunables of a store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Most writes in one transaction.
    pub max_batch: usize,
    /// Most raw-body bytes kept per inbound event.
    pub max_event_body_bytes: usize,
    /// Read connections (SQLite) or pool size (PostgreSQL).
    pub pool_size: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_event_body_bytes: 1 << 20,
            pool_size: 8,
        }
    }
}

/// A tenant: every row belongs to one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tenant {
    /// Id.
    pub id: String,
    /// Slug (`default`, `acme`).
    pub slug: String,
    /// When true, runs naming an unregistered instance are refused.
    pub strict: bool,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Post runs and events.
    Ingest,
    /// Read runs, pipelines, metrics.
    Read,
    /// Manage keys, secrets, sources, subscriptions, triggers.
    Admin,
    /// Fire triggers (start pipelines) and follow their events.
    Trigger,
}

impl Scope {
    /// Parses `ingest`, `read` or `admin`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            "trigger" => Some(Scope::Trigger),
            _ => None,
        }
    }
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Trigger => "trigger",
        }
    }
}

/// A key to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Owning tenant.
    pub tenant_id: String,
    /// Name given by the user.
    pub name: String,
    /// First characters of the key, to recognise it in lists.
    pub prefix: String,
    /// SHA-256 hex of the key.
    pub hash: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
}

/// A stored key (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    /// Id.
    pub id: String,
    /// Owning tenant id.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Prefix of the key.
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Revoked, when it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Outcome of an inbound event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Stored.
    Accepted,
    /// Refused, with the reason.
    Rejected,
}

impl EventStatus {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Accepted => "accepted",
            EventStatus::Rejected => "rejected",
        }
    }
}

/// The raw log entry of one inbound request.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Tenant, when the caller could be identified.
    pub tenant_id: Option<String>,
    /// The route (`/v1/custom-cicd`).
    pub endpoint: String,
    /// Dialect (`sei`, …).
    pub dialect: String,
    /// Envelope request type, if any.
    pub request_type: Option<String>,
    /// Content-Type header.
    pub content_type: Option<String>,
    /// The raw body (the store keeps at most its configured cap).
    pub body: bytes_like::Body,
    /// When it arrived.
    pub received_at: OffsetDateTime,
    /// Accepted or rejected.
    pub status: EventStatus,
    /// HTTP status answered.
    pub http_status: u16,
    /// Why it was rejected; for an accepted event, the warnings it was accepted with (a value
    /// that follows the rules but looks wrong, a log the run names that did not come).
    pub errors: Vec<FieldError>,
    /// The key used, if any.
    pub key_id: Option<String>,
    /// The signed source it came through, if any.
    pub source_id: Option<String>,
    /// The sender's delivery id (`X-GitHub-Delivery`, `webhook-id`): a second event with the same
    /// key is a duplicate and stores nothing.
    pub dedupe_key: Option<String>,
}

/// Raw bodies, shared without copying.
pub mod bytes_like {
    /// A shared byte buffer.
    pub type Body = std::sync::Arc<[u8]>;
}

/// A CI/CD instance to register.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// The GUID to give it; a random one when absent.
    pub guid: Option<String>,
    /// Integration it belongs to.
    pub integration_id: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// URL.
    pub url: Option<String>,
}

/// A heartbeat of a CI/CD instance.
#[derive(Debug, Clone)]
pub struct HeartbeatRecord {
    /// The instance GUID.
    pub instance_guid: String,
    /// Name, when given.
    pub name: Option<String>,
    /// URL, when given.
    pub url: Option<String>,
    /// Kind, for an instance seen first through its heartbeat.
    pub kind: Option<String>,
    /// When it was sent.
    pub at: OffsetDateTime,
    /// Versions and settings reported (kept as sent).
    pub details: serde_json::Value,
}

/// One write.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// An accepted event and the runs it reports.
    Runs {
        /// The event.
        event: EventRecord,
        /// The tenant (strictness is checked inside the transaction).
        tenant: Tenant,
        /// The runs.
        runs: Vec<RunReport>,
    },
    /// A heartbeat: the instance is alive (registered on first sight unless the tenant is strict).
    Heartbeat {
        /// The event.
        event: EventRecord,
        /// The tenant.
        tenant: Tenant,
        /// The heartbeat.
        heartbeat: HeartbeatRecord,
    },
    /// What a signed source reported: runs, incidents, commit times (any may be empty).
    Signals {
        /// The event.
        event: EventRecord,
        /// The tenant.
        tenant: Tenant,
        /// Runs.
        runs: Vec<RunReport>,
        /// Incidents opened or resolved.
        incidents: Vec<cistern_core::IncidentReport>,
        /// Commit times: sha, time, repository.
        commit_times: Vec<(String, OffsetDateTime, Option<String>)>,
    },
    /// A job's configuration changed: its pipeline (and instance, unless the tenant is strict)
    /// is created on first sight and records the time.
    JobConfigChange {
        /// The event.
        event: EventRecord,
        /// The tenant.
        tenant: Tenant,
        /// The change.
        change: cistern_core::JobConfigChange,
    },
    /// A rejected event (stores nothing else).
    Reject {
        /// The event.
        event: EventRecord,
    },
    /// An instance registration.
    RegisterInstance {
        /// The event.
        event: EventRecord,
        /// Tenant id.
        tenant_id: String,
        /// What to register.
        instance: NewInstance,
    },
}

/// A run written by a [`WriteOp::Runs`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunWritten {
    /// Run id.
    pub id: String,
    /// True when the run is new, false when an earlier report was updated.
    pub created: bool,
}

/// What a write did.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    /// Id of the event row.
    pub event_id: String,
    /// Runs created or updated.
    pub runs: Vec<RunWritten>,
    /// The instance registered.
    pub instance: Option<Instance>,
    /// Deliveries queued in the outbox by this write (same transaction).
    pub deliveries: usize,
}

/// Filters of the run list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Pipeline full name or name.
    pub pipeline: Option<String>,
    /// Normalized result.
    pub result: Option<RunResult>,
    /// Branch.
    pub branch: Option<String>,
    /// Instance GUID.
    pub instance: Option<String>,
    /// Started at or after.
    pub since: Option<OffsetDateTime>,
    /// Started before.
    pub until: Option<OffsetDateTime>,
}

/// Filters of the event list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events with this status.
    pub status: Option<EventStatus>,
    /// Only events that came through this signed source.
    pub source_id: Option<String>,
    /// Received at or after.
    pub since: Option<OffsetDateTime>,
    /// Received before.
    pub until: Option<OffsetDateTime>,
}

/// A page request: at most `limit` items after `cursor`.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// Page size (1..=500).
    pub limit: usize,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
}

/// A page of items and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
}

/// A pipeline with its latest run.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineSummary {
    /// Id.
    pub id: String,
    /// Full name.
    pub full_name: String,
    /// Name.
    pub name: String,
    /// Qualified name.
    pub qualified_name: Option<String>,
    /// Project.
    pub project: Option<String>,
    /// Module.
    pub module: Option<String>,
    /// Instance GUID.
    pub instance_guid: String,
    /// Instance name.
    pub instance_name: Option<String>,
    /// Number of runs.
    pub runs: i64,
    /// Result of the latest run.
    pub last_result: Option<RunResult>,
    /// Start of the latest run.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_run_at: Option<OffsetDateTime>,
    /// When the job's configuration last changed, as its CI reported it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub config_changed_at: Option<OffsetDateTime>,
}

/// A CI/CD instance.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// Internal id.
    pub id: String,
    /// GUID.
    pub guid: String,
    /// Name.
    pub name: Option<String>,
    /// URL.
    pub url: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Integration id.
    pub integration_id: Option<String>,
    /// Registered or first seen.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last run received.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    /// Last heartbeat received.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat_at: Option<OffsetDateTime>,
    /// What the last heartbeat reported (versions, settings).
    pub details: Option<serde_json::Value>,
}

/// An inbound event as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// Id.
    pub id: String,
    /// Received.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Route.
    pub endpoint: String,
    /// Dialect.
    pub dialect: String,
    /// Request type.
    pub request_type: Option<String>,
    /// accepted / rejected.
    pub status: EventStatus,
    /// HTTP status answered.
    pub http_status: u16,
    /// Reasons of a rejection.
    pub errors: Vec<FieldError>,
    /// Warnings an accepted event was accepted with.
    pub warnings: Vec<FieldError>,
    /// Runs written.
    pub run_ids: Vec<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// Size of the body received.
    pub body_size: i64,
    /// The body as text (lossy UTF-8), possibly cut to the store's cap.
    pub body: Option<String>,
    /// True when the body was cut.
    pub body_truncated: bool,
    /// The signed source it came through, if any. Not serialized: a source's id is the
    /// capability in its hook URL, and the events API answers keys with the `read` scope only.
    #[serde(skip)]
    pub source_id: Option<String>,
}

/// The JSON blob kept beside a run's columns: its lists that are not queried by column.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RunDetail {
    /// Repository name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Commits.
    #[serde(default)]
    pub commits: Vec<cistern_core::Commit>,
    /// Params.
    #[serde(default)]
    pub params: Vec<cistern_core::Param>,
    /// Artifacts.
    #[serde(default)]
    pub artifacts: Vec<serde_json::Value>,
    /// Trigger chain.
    #[serde(default)]
    pub trigger_chain: Vec<serde_json::Value>,
    /// Themes.
    #[serde(default)]
    pub themes: Vec<String>,
    /// Custom fields.
    #[serde(default)]
    pub custom_fields: Vec<cistern_core::CustomField>,
}

impl RunDetail {
    /// The detail of a report.
    pub fn of(r: &RunReport) -> Self {
        Self {
            repo: r.repo.clone(),
            commits: r.commits.clone(),
            params: r.params.clone(),
            artifacts: r.artifacts.clone(),
            trigger_chain: r.trigger_chain.clone(),
            themes: r.themes.clone(),
            custom_fields: r.custom_fields.clone(),
        }
    }
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The part of a raw body the store keeps.
pub fn kept_body(body: &[u8], cap: usize) -> (&[u8], bool) {
    if body.len() > cap {
        (&body[..cap], true)
    } else {
        (body, false)
    }
}

/// The `body_codec` of an event body stored compressed with zstd.
pub const BODY_CODEC_ZSTD: &str = "zstd";

/// Bodies shorter than this are stored as they are.
const COMPRESS_FROM: usize = 256;

/// The kept part of a raw body compressed with zstd (level 1: fast, and JSON shrinks 3–5×), or
/// `None` when it is short or does not shrink: then it is stored as it is.
pub fn compress_body(body: &[u8], cap: usize) -> Option<Vec<u8>> {
    let (kept, _) = kept_body(body, cap);
    if kept.len() < COMPRESS_FROM {
        return None;
    }
    zstd::bulk::compress(kept, 1)
        .ok()
        .filter(|z| z.len() + 32 < kept.len())
}

/// A stored body as it was received.
pub fn decode_body(stored: Vec<u8>, codec: Option<&str>) -> Vec<u8> {
    match codec {
        Some(BODY_CODEC_ZSTD) => zstd::stream::decode_all(stored.as_slice()).unwrap_or_else(|e| {
            format!("(the stored body could not be decompressed: {e})").into_bytes()
        }),
        _ => stored,
    }
}

impl WriteOp {
    /// The inbound event the write records.
    pub fn event(&self) -> &EventRecord {
        match self {
            WriteOp::Runs { event, .. }
            | WriteOp::Heartbeat { event, .. }
            | WriteOp::JobConfigChange { event, .. }
            | WriteOp::Signals { event, .. }
            | WriteOp::Reject { event }
            | WriteOp::RegisterInstance { event, .. } => event,
        }
    }
}

/// Flattens stages and steps into rows: `(index, parent index, stage)`.
pub fn stage_rows(stages: &[cistern_core::Stage]) -> Vec<(i64, Option<i64>, &cistern_core::Stage)> {
    let mut rows = Vec::new();
    for stage in stages {
        let idx = rows.len() as i64;
        rows.push((idx, None, stage));
        for step in &stage.steps {
            let sidx = rows.len() as i64;
            rows.push((sidx, Some(idx), step));
        }
    }
    rows
}

/// Rebuilds stages with their steps from rows ordered by index.
pub fn stages_from_rows(
    rows: Vec<(i64, Option<i64>, cistern_core::Stage)>,
) -> Vec<cistern_core::Stage> {
    let mut stages: Vec<(i64, cistern_core::Stage)> = Vec::new();
    for (idx, parent, stage) in rows {
        match parent {
            None => stages.push((idx, stage)),
            Some(p) => {
                if let Some((_, s)) = stages.iter_mut().rev().find(|(i, _)| *i == p) {
                    s.steps.push(stage);
                }
            }
        }
    }
    stages.into_iter().map(|(_, s)| s).collect()
}

/// Commits of a report without repeated shas (first occurrence kept).
pub fn unique_commits(r: &RunReport) -> Vec<&cistern_core::Commit> {
    let mut seen = std::collections::HashSet::new();
    r.commits
        .iter()
        .filter(|c| seen.insert(c.sha.as_str()))
        .collect()
}

/// The slice of runs a metric is computed over.
#[derive(Debug, Clone, Default)]
pub struct MetricsFilter {
    /// Project.
    pub project: Option<String>,
    /// Pipeline full name or name.
    pub pipeline: Option<String>,
    /// Repository URL or name.
    pub repo: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// Environment.
    pub environment: Option<String>,
    /// Instance GUID.
    pub instance: Option<String>,
}

/// A named secret as stored: encrypted, never in the clear.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    /// Nonce of the current value.
    pub nonce: Vec<u8>,
    /// Ciphertext of the current value.
    pub ciphertext: Vec<u8>,
    /// The value before the last rotation, while its grace period lasts: nonce, ciphertext, until.
    pub previous: Option<(Vec<u8>, Vec<u8>, OffsetDateTime)>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last set.
    pub updated_at: OffsetDateTime,
}

/// A secret's ciphertexts as a master-key rotation reads and rewrites them (every tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Tenant.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Nonce of the current value.
    pub nonce: Vec<u8>,
    /// Ciphertext of the current value.
    pub ciphertext: Vec<u8>,
    /// The value before the last `secrets set`, when one is kept: nonce and ciphertext (its
    /// grace period is left as it is).
    pub previous: Option<(Vec<u8>, Vec<u8>)>,
}

/// A secret sealed again under a new master key.
#[derive(Debug, Clone)]
pub struct ResealedSecret {
    /// The row as read: it is rewritten only if it is still so.
    pub old: SealedSecret,
    /// The same values under the new key.
    pub new: SealedSecret,
}

/// A named secret as listed (no value).
#[derive(Debug, Clone, Serialize)]
pub struct SecretInfo {
    /// Name.
    pub name: String,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last set.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The previous value still verifies until then (rotation grace).
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_valid_until: Option<OffsetDateTime>,
}

/// A signed webhook source.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// Unguessable id (its URL is `/v1/hooks/{id}`).
    pub id: String,
    /// Owning tenant.
    #[serde(skip)]
    pub tenant_id: String,
    /// `jobserv`, `github`, `gitlab`, `cdevents` or `standard`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// The named secret that signs its requests.
    pub secret_name: Option<String>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A heartbeat of a satellite (`cistern satellite`, the on-premise relay).
#[derive(Debug, Clone, PartialEq)]
pub struct SatelliteHeartbeat {
    /// The satellite's id, unique within its tenant.
    pub satellite_id: String,
    /// Its version.
    pub version: String,
    /// Hash of its configuration, to tell which configuration runs where.
    pub config_hash: Option<String>,
    /// When the satellite sent it (its clock).
    pub sent_at: OffsetDateTime,
    /// When the hub received it (the hub's clock: staleness is measured on it).
    pub received_at: OffsetDateTime,
    /// Seconds between heartbeats.
    pub interval_seconds: i64,
    /// Requests waiting in its spool.
    pub spool_depth: i64,
    /// When it last delivered something to the hub.
    pub last_forward_at: Option<OffsetDateTime>,
    /// Its last error, if any.
    pub last_error: Option<String>,
    /// Everything else it reported (spool bytes and bound, integrations, …), as sent.
    pub details: serde_json::Value,
}

/// A satellite as the hub knows it: its last heartbeat and when it was first seen.
#[derive(Debug, Clone, PartialEq)]
pub struct SatelliteInfo {
    /// The last heartbeat.
    pub heartbeat: SatelliteHeartbeat,
    /// The first heartbeat's arrival.
    pub first_seen_at: OffsetDateTime,
}

/// What a subscription can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum EventType {
    /// A run reached a finished result (created finished, or updated into one).
    #[serde(rename = "run.completed")]
    RunCompleted,
    /// A run was created queued or running.
    #[serde(rename = "run.started")]
    RunStarted,
    /// A deployment (a run with `cd = true`) finished.
    #[serde(rename = "deployment.completed")]
    DeploymentCompleted,
    /// An incident was recorded for the first time.
    #[serde(rename = "incident.opened")]
    IncidentOpened,
}

/// Every event type, in documentation order.
pub const ALL_EVENT_TYPES: [EventType; 4] = [
    EventType::RunCompleted,
    EventType::RunStarted,
    EventType::DeploymentCompleted,
    EventType::IncidentOpened,
];

impl EventType {
    /// The dotted name (`run.completed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RunCompleted => "run.completed",
            EventType::RunStarted => "run.started",
            EventType::DeploymentCompleted => "deployment.completed",
            EventType::IncidentOpened => "incident.opened",
        }
    }
    /// Parses a dotted name.
    pub fn parse(s: &str) -> Option<Self> {
        ALL_EVENT_TYPES
            .iter()
            .copied()
            .find(|e| e.as_str() == s.trim())
    }
}

/// The body format of a subscription's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryFormat {
    /// The Foundries JobServ build webhook body (seed 004), signed also with `X-JobServ-Sig`.
    Jobserv,
    /// A CDEvent in a structured-mode CloudEvent.
    Cdevents,
    /// The run (or incident) as the API shows it, with the event type.
    Native,
    /// An OpenTelemetry trace of a finished run (OTLP/HTTP protobuf), for `run.completed`.
    Otlp,
}

impl DeliveryFormat {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryFormat::Jobserv => "jobserv",
            DeliveryFormat::Cdevents => "cdevents",
            DeliveryFormat::Native => "native",
            DeliveryFormat::Otlp => "otlp",
        }
    }
    /// Parses the word.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jobserv" => Some(DeliveryFormat::Jobserv),
            "cdevents" => Some(DeliveryFormat::Cdevents),
            "native" => Some(DeliveryFormat::Native),
            "otlp" => Some(DeliveryFormat::Otlp),
            _ => None,
        }
    }
}

/// A webhook subscription: where to send which events, signed with which named secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscription {
    /// Id.
    pub id: String,
    /// Owning tenant.
    #[serde(skip)]
    pub tenant_id: String,
    /// Target URL (http or https).
    pub url: String,
    /// The named secret that signs the deliveries; empty for an unsigned `otlp` exporter (OTLP
    /// receivers authenticate by header).
    pub secret_name: String,
    /// Body format.
    pub format: DeliveryFormat,
    /// Headers added to every request; values may name a secret (`{{secret.NAME}}`), revealed
    /// only when a request is sent.
    pub headers: Vec<TargetHeader>,
    /// Events delivered.
    pub events: Vec<EventType>,
    /// Only failed runs (and incidents).
    pub only_failures: bool,
    /// Glob on the pipeline's full name or name.
    pub pipeline: Option<String>,
    /// Glob on the branch.
    pub branch: Option<String>,
    /// The pipeline's project, exactly.
    pub project: Option<String>,
    /// False once disabled (by a user, a 410 answer or sustained failure).
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// Start of the current run of failed attempts (none since the last success).
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or for its subscription to be enabled again).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt of the schedule failed.
    Failed,
}

impl DeliveryStatus {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
    /// Parses the word.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One delivery: a message for one subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Id; also the `webhook-id` header, the same on every attempt.
    pub id: String,
    /// The subscription.
    pub subscription_id: String,
    /// The message (one per event, shared by the subscriptions it matched).
    pub message_id: String,
    /// Event type.
    pub event_type: EventType,
    /// The run concerned, for run events.
    pub run_id: Option<String>,
    /// Pending, delivered or failed.
    pub status: DeliveryStatus,
    /// Attempts made so far (all of them, redeliveries included).
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Created (the time of the event).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last attempt.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// HTTP status of the last attempt, when one came back.
    pub last_status_code: Option<u16>,
    /// Error of the last attempt (timeout, refused address, non-2xx…).
    pub last_error: Option<String>,
    /// When a 2xx came back.
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
}

/// One attempt of a delivery, as logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryAttempt {
    /// 1 for the first attempt.
    pub attempt: i64,
    /// When the request started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// How long until the answer (or the failure), in milliseconds.
    pub duration_ms: i64,
    /// HTTP status, when an answer came.
    pub status_code: Option<u16>,
    /// The first 4 KiB of the answer's body (lossy UTF-8).
    pub response_body: Option<String>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The node that made the attempt.
    pub node: Option<String>,
}

/// A delivery with its message and every attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// The event as recorded when it happened (the run or incident), before formatting.
    pub message: serde_json::Value,
    /// Attempts, oldest first.
    pub attempt_log: Vec<DeliveryAttempt>,
}

/// Filters of a subscription's delivery list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only deliveries in this state.
    pub status: Option<DeliveryStatus>,
    /// Created (the event happened) at or after.
    pub since: Option<OffsetDateTime>,
    /// Created before.
    pub until: Option<OffsetDateTime>,
}

/// A worker's request for due deliveries.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The claiming node (shown in the attempt log).
    pub node: String,
    /// A fresh token: only its holder may record the outcome.
    pub token: String,
    /// Now.
    pub now: OffsetDateTime,
    /// The lease's end: after it, another worker may take the delivery again.
    pub lease_until: OffsetDateTime,
    /// Most deliveries to claim.
    pub limit: usize,
    /// Most deliveries of one subscription in flight at once (leased and unexpired).
    pub per_subscription: usize,
}

/// A delivery handed to a worker, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Delivery id (`webhook-id`).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The subscription.
    pub subscription: Subscription,
    /// Message id.
    pub message_id: String,
    /// Event type.
    pub event_type: EventType,
    /// The event's snapshot (JSON text).
    pub message: String,
    /// When the event happened.
    pub created_at: OffsetDateTime,
    /// Attempts already made in the current round (the position in the retry schedule).
    pub tries: i64,
    /// Attempts logged so far (all rounds).
    pub attempts: i64,
    /// The claim's token.
    pub token: String,
}

/// What comes next for a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    /// Done: a 2xx came back.
    Delivered,
    /// Try again at this time.
    RetryAt(OffsetDateTime),
    /// The schedule is spent.
    GiveUp,
}

/// The outcome of one attempt, to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Delivery id.
    pub delivery_id: String,
    /// The claim's token (an attempt made after the lease was lost changes nothing but the log).
    pub token: String,
    /// Tenant.
    pub tenant_id: String,
    /// Subscription.
    pub subscription_id: String,
    /// The attempt, for the log.
    pub attempt: DeliveryAttempt,
    /// What comes next.
    pub next: NextStep,
    /// Disable the subscription with this reason (the receiver answered 410 Gone).
    pub disable: Option<String>,
}

/// A subscription's health after an attempt was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionHealth {
    /// Tenant.
    pub tenant_id: String,
    /// Subscription.
    pub subscription_id: String,
    /// Start of its current run of failures; `None` when the last attempt succeeded.
    pub failing_since: Option<OffsetDateTime>,
    /// Still enabled.
    pub enabled: bool,
}

/// One header of a trigger's target. Its value may hold placeholders (`{{correlation_id}}`,
/// `{{payload.a.b}}`, `{{secret.NAME}}`), rendered when the request is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TargetHeader {
    /// Header name.
    pub name: String,
    /// Value template.
    pub value: String,
}

/// Where a trigger sends its request: the CI system's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TriggerTarget {
    /// HTTP method (`POST` by default).
    pub method: String,
    /// URL (http or https; checked against the private-address guard).
    pub url: String,
    /// Headers (value templates).
    #[serde(default)]
    pub headers: Vec<TargetHeader>,
    /// Body template, when the request has a body.
    #[serde(default)]
    pub body: Option<String>,
}

/// What identifies a trigger within a tenant (Harness's custom-webhook query parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerKey {
    /// `orgIdentifier`.
    pub org: String,
    /// `projectIdentifier`.
    pub project: String,
    /// `pipelineIdentifier`.
    pub pipeline: String,
    /// `triggerIdentifier`.
    pub trigger: String,
}

/// A trigger: a custom webhook that fires a pipeline on a CI system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trigger {
    /// Id (`trg_…`).
    pub id: String,
    /// Owning tenant.
    #[serde(skip)]
    pub tenant_id: String,
    /// The identifiers callers name it by.
    #[serde(flatten)]
    pub key: TriggerKey,
    /// False: calls are refused (`NO_ENABLED_CUSTOM_TRIGGER_FOUND`).
    pub enabled: bool,
    /// True: the token URL (`…/custom/{token}/v3`) fires it without an API key.
    pub allow_token: bool,
    /// Whether its webhook URL asks for an API key (`key`, the default) or not (`none`).
    pub auth: TriggerAuth,
    /// SHA-256 (hex) of the secret of its token URL: the token itself is shown once, when it is
    /// made or rotated, and never stored.
    #[serde(skip)]
    pub token_hash: String,
    /// The preset it was made from (`jenkins`, `github`, `gitlab`), if any.
    pub preset: Option<String>,
    /// Where its requests go.
    pub target: TriggerTarget,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Who may fire a trigger through its webhook URL (`…/api/webhook/custom?…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TriggerAuth {
    /// A key with the `trigger` scope (the default).
    #[default]
    Key,
    /// Anyone who knows the identifiers, as the seed's keyless curl does. Its events can be
    /// followed without a key by their (unguessable) correlation id.
    None,
}

impl TriggerAuth {
    /// The word (`key`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerAuth::Key => "key",
            TriggerAuth::None => "none",
        }
    }
    /// Parses the word.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "key" => Some(TriggerAuth::Key),
            "none" => Some(TriggerAuth::None),
            _ => None,
        }
    }
}

/// Where a trigger event's request to the target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatchState {
    /// Waiting for its (next) attempt.
    Pending,
    /// The target answered 2xx.
    Delivered,
    /// The target refused it, or every attempt failed, or it expired first.
    Failed,
    /// The request could not be made (a missing secret, a template that does not render).
    Exception,
    /// The call itself was refused (unknown or disabled trigger, bad payload): nothing is sent.
    Refused,
}

impl DispatchState {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchState::Pending => "pending",
            DispatchState::Delivered => "delivered",
            DispatchState::Failed => "failed",
            DispatchState::Exception => "exception",
            DispatchState::Refused => "refused",
        }
    }
    /// Parses the word.
    pub fn parse(s: &str) -> Option<Self> {
        [
            DispatchState::Pending,
            DispatchState::Delivered,
            DispatchState::Failed,
            DispatchState::Exception,
            DispatchState::Refused,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// A trigger event to store.
#[derive(Debug, Clone)]
pub struct NewTriggerEvent {
    /// Its id: the `eventCorrelationId` (see [`new_correlation_id`]).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The trigger, when one matched.
    pub trigger_id: Option<String>,
    /// The identifiers the caller named.
    pub key: TriggerKey,
    /// `Pending` (to send) or `Refused`.
    pub state: DispatchState,
    /// The status word of a refused call (`NO_ENABLED_CUSTOM_TRIGGER_FOUND`, `INVALID_PAYLOAD`).
    pub refusal: Option<String>,
    /// A human message.
    pub message: Option<String>,
    /// The body the caller posted (text).
    pub payload: String,
    /// The trigger's target at the time of the call (what is sent, whatever changes later).
    pub target: Option<TriggerTarget>,
    /// The API key that fired it; `None` for the token URL.
    pub key_id: Option<String>,
    /// When it arrived (and when the first attempt is due).
    pub created_at: OffsetDateTime,
}

/// The run a CI reported for a trigger event.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkedRun {
    /// Run id.
    pub id: String,
    /// Pipeline name.
    pub pipeline_name: String,
    /// Pipeline full name.
    pub pipeline_full_name: String,
    /// The CI's execution id.
    pub execution_id: Option<String>,
    /// Build number.
    pub build_number: Option<i64>,
    /// Result.
    pub result: RunResult,
    /// Started.
    pub started_at: OffsetDateTime,
    /// Finished.
    pub finished_at: Option<OffsetDateTime>,
    /// Link to the run in its CI.
    pub web_url: Option<String>,
    /// When it was linked.
    pub linked_at: OffsetDateTime,
    /// Top-level stages by result (`None`: no result reported), with their counts.
    pub stage_results: Vec<(Option<RunResult>, i64)>,
    /// The top-level stages, in the run's order.
    pub stages: Vec<LinkedStage>,
}

/// A top-level stage of a linked run (what a trigger's execution summary lays out).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkedStage {
    /// Its position in the run.
    pub idx: i64,
    /// Name.
    pub name: String,
    /// Result, when reported.
    pub result: Option<RunResult>,
    /// Started, when known.
    pub started_at: Option<OffsetDateTime>,
    /// Duration in milliseconds, when known.
    pub duration_ms: Option<i64>,
}

impl LinkedRun {
    /// Fills `stages` and the counts of `stage_results` from the top-level stages.
    pub fn set_stages(&mut self, stages: Vec<LinkedStage>) {
        let mut counts: Vec<(Option<RunResult>, i64)> = Vec::new();
        for s in &stages {
            match counts.iter_mut().find(|(r, _)| *r == s.result) {
                Some((_, n)) => *n += 1,
                None => counts.push((s.result, 1)),
            }
        }
        self.stage_results = counts;
        self.stages = stages;
    }
}

/// A stored trigger event with its dispatch state and linked run.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerEvent {
    /// The `eventCorrelationId`.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The trigger, when one matched.
    pub trigger_id: Option<String>,
    /// The identifiers the caller named.
    pub key: TriggerKey,
    /// Dispatch state.
    pub state: DispatchState,
    /// The status word of a refused call.
    pub refusal: Option<String>,
    /// Human message (why it was refused, failed or is waiting).
    pub message: Option<String>,
    /// The body the caller posted.
    pub payload: String,
    /// The target it is sent to.
    pub target: Option<TriggerTarget>,
    /// The key that fired it; `None` for the token URL.
    pub key_id: Option<String>,
    /// Attempts made.
    pub attempts: i64,
    /// Next attempt (pending only).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Last attempt.
    pub last_attempt_at: Option<OffsetDateTime>,
    /// HTTP status of the last attempt.
    pub last_status_code: Option<u16>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// When the target answered 2xx.
    pub dispatched_at: Option<OffsetDateTime>,
    /// When the call arrived.
    pub created_at: OffsetDateTime,
    /// The run the CI reported for it, once linked.
    pub run: Option<LinkedRun>,
}

/// A trigger event handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedDispatch {
    /// The event id (the correlation id).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The target.
    pub target: TriggerTarget,
    /// The caller's payload.
    pub payload: String,
    /// When the call arrived.
    pub created_at: OffsetDateTime,
    /// Attempts already made (the position in the retry schedule).
    pub tries: i64,
    /// The claim's token.
    pub token: String,
}

/// The outcome of one dispatch attempt.
#[derive(Debug, Clone)]
pub struct DispatchRecord {
    /// The event id.
    pub event_id: String,
    /// The claim's token (an outcome recorded after the lease was lost changes only the log).
    pub token: String,
    /// The attempt, for the log.
    pub attempt: DeliveryAttempt,
    /// What comes next (`GiveUp` fails the event).
    pub next: NextStep,
    /// True when the request could not even be made (`Exception` instead of `Failed`).
    pub exception: bool,
    /// The event's new message.
    pub message: Option<String>,
}

/// A new correlation id: 24 lowercase hexadecimal characters (the shape of Harness's ids),
/// 90 of its bits random so that it cannot be guessed.
pub fn new_correlation_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..24].to_owned()
}

/// True when `s` has the shape of a correlation id. Run writers only look for a trigger event
/// when a run carries such a value, so runs that cannot be linked cost nothing.
pub fn is_correlation_id(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The correlation ids a run report carries: its `execution_id`, and its parameters named
/// `correlation_id` (any case), when they have the shape of one.
pub fn correlation_candidates(r: &RunReport) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let params = r
        .params
        .iter()
        .filter(|p| p.name.trim().eq_ignore_ascii_case("correlation_id"))
        .filter_map(|p| p.value.as_str());
    for c in r.execution_id.as_deref().into_iter().chain(params) {
        let c = c.trim();
        if is_correlation_id(c) && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}
