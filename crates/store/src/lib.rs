//! Cistern's storage. The [`Store`] trait is what the server talks to; [`sqlite`] (embedded, the
//! default) and [`postgres`] (scale-out) implement it, each with its own migrations. Writes go
//! through a group-commit writer: many requests, one transaction, and each request is answered
//! only after the commit that holds it.

pub mod copy;
pub mod cursor;
pub mod integrity;
pub mod key_rotation;
pub mod keys;
pub mod merge;
pub mod metrics_sql;
pub mod outbox;
pub mod postgres;
pub mod rollups;
pub mod sessions;
pub mod sqlite;
mod stats;
pub mod triggers;
mod types;

pub use key_rotation::KeyForAuth;
pub use stats::*;
pub use types::*;

use async_trait::async_trait;
use std::sync::Arc;

/// Everything the hub stores and reads. Every method that touches tenant data takes the caller's
/// tenant id and never returns another tenant's rows.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is (`sqlite` or `postgres`).
    fn backend(&self) -> &'static str;

    /// The concrete store, for tools and tests that need a backend's own methods.
    fn as_any(&self) -> &dyn std::any::Any;

    /// Applies one write (an inbound event with its runs, a rejection, a registration) through the
    /// group-commit writer; returns after the transaction holding it has committed.
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a tenant; `Conflict` when the slug exists.
    async fn create_tenant(&self, slug: &str, strict: bool) -> Result<Tenant, StoreError>;
    /// Finds a tenant by slug.
    async fn tenant_by_slug(&self, slug: &str) -> Result<Option<Tenant>, StoreError>;
    /// Finds a tenant by id.
    async fn tenant_by_id(&self, id: &str) -> Result<Option<Tenant>, StoreError>;
    /// All tenants.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Sets whether unknown instances are refused.
    async fn set_tenant_strict(&self, tenant_id: &str, strict: bool) -> Result<(), StoreError>;

    /// Stores a new API key (only its hash).
    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKeyInfo, StoreError>;
    /// Finds the key with this hash, revoked or not.
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyInfo>, StoreError>;
    /// The keys of a tenant.
    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError>;
    /// Revokes the tenant's key with this id or name; `NotFound` when none matches.
    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id_or_name: &str,
    ) -> Result<ApiKeyInfo, StoreError>;

    /// Rotates the tenant's key `key_id`: stores `new` (its hash is `hash`) as its replacement,
    /// renames the old key (`<name> (rotated <time>)`) and records that it works until
    /// `expires_at`, in one transaction. `NotFound` for no such key; `Conflict` when it is
    /// revoked or already rotated.
    async fn rotate_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        new: &ApiKeyInfo,
        hash: &str,
        expires_at: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Result<key_rotation::KeyRotation, StoreError>;
    /// What authenticating a request needs of a key, by hash, in one trip to the database:
    /// the key, its tenant (`None` when the tenant is gone) and its rotation.
    async fn key_for_auth(&self, hash: &str) -> Result<Option<KeyForAuth>, StoreError>;
    /// The rotation of a key, when it was rotated.
    async fn api_key_rotation(
        &self,
        key_id: &str,
    ) -> Result<Option<key_rotation::KeyRotation>, StoreError>;
    /// The rotations of a tenant's keys.
    async fn list_api_key_rotations(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<key_rotation::KeyRotation>, StoreError>;

    /// Runs of a tenant, newest first, filtered and paginated.
    async fn list_runs(
        &self,
        tenant_id: &str,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<cistern_core::Run>, StoreError>;
    /// One run with its stages and steps.
    async fn get_run(
        &self,
        tenant_id: &str,
        run_id: &str,
    ) -> Result<Option<cistern_core::Run>, StoreError>;
    /// Pipelines of a tenant with their latest run.
    async fn list_pipelines(&self, tenant_id: &str) -> Result<Vec<PipelineSummary>, StoreError>;
    /// Instances of a tenant.
    async fn list_instances(&self, tenant_id: &str) -> Result<Vec<Instance>, StoreError>;
    /// Inbound events of a tenant, newest first.
    async fn list_events(
        &self,
        tenant_id: &str,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<EventView>, StoreError>;
    /// One inbound event with its body.
    async fn get_event(
        &self,
        tenant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventView>, StoreError>;

    /// A server-wide setting (e.g. the master key's check value).
    async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a server-wide setting unless it is set; returns the value in force.
    async fn meta_init(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Stores a secret's encrypted value. On a change, the previous value stays valid until
    /// `grace_until` (signatures made with either verify). Returns true when the name is new.
    async fn put_secret(
        &self,
        tenant_id: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        grace_until: time::OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// A secret's encrypted value.
    async fn get_secret(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<StoredSecret>, StoreError>;
    /// The tenant's secrets (names and dates only).
    async fn list_secrets(&self, tenant_id: &str) -> Result<Vec<SecretInfo>, StoreError>;
    /// Deletes a secret; false when there was none.
    async fn delete_secret(&self, tenant_id: &str, name: &str) -> Result<bool, StoreError>;
    /// Every secret of every tenant, sealed (for a master-key rotation).
    async fn all_sealed_secrets(&self) -> Result<Vec<SealedSecret>, StoreError>;
    /// Rewrites every secret with its new ciphertexts and sets the setting `check_key` (the
    /// master key's check value) to `check_value`, in one transaction. Refused (`Conflict`),
    /// changing nothing, when the secrets are no longer exactly those read (one set, added or
    /// deleted meanwhile would be left under the old key).
    async fn reseal_secrets(
        &self,
        resealed: Vec<ResealedSecret>,
        check_key: &str,
        check_value: &str,
    ) -> Result<(), StoreError>;

    /// Creates a signed source.
    async fn create_source(&self, source: &Source) -> Result<(), StoreError>;
    /// A source by its id, whatever its tenant (the id is the capability).
    async fn source_by_id(&self, id: &str) -> Result<Option<Source>, StoreError>;
    /// The tenant's sources.
    async fn list_sources(&self, tenant_id: &str) -> Result<Vec<Source>, StoreError>;
    /// Deletes a source; false when the tenant has none with this id.
    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError>;

    /// Records a satellite's heartbeat (the latest replaces the one before).
    async fn put_satellite_heartbeat(
        &self,
        tenant_id: &str,
        heartbeat: &SatelliteHeartbeat,
    ) -> Result<(), StoreError>;
    /// The tenant's satellites with their last heartbeat, by id.
    async fn list_satellites(&self, tenant_id: &str) -> Result<Vec<SatelliteInfo>, StoreError>;

    /// Incidents detected or resolved in `[since, until)` (from 90 days before `since`).
    async fn incidents(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::Incident>, StoreError>;

    /// Deployments finished before `until` (from 90 days before `since`, for history) with their
    /// commits' earliest known times.
    async fn deployments(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::Deployment>, StoreError>;
    /// Runs started in `[since, until)`, summarized for CI health.
    async fn ci_runs(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::CiRun>, StoreError>;
    /// Stage and step aggregates of runs started in `[since, until)`, with the latest failure log
    /// of the most failing ones.
    async fn stage_stats(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::StageStat>, StoreError>;

    /// CI health of `[since, until)` and of each of `buckets` (inside it), equal to
    /// `core::metrics::ci_health` over [`Store::ci_runs`] and [`Store::stage_stats`], read from
    /// the day rollups (`rollups`) and the runs of the days they do not cover. `None` when the
    /// filter slices by branch or repository (read the runs then).
    async fn ci_health_fast(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
        buckets: &[(time::OffsetDateTime, time::OffsetDateTime)],
    ) -> Result<
        Option<(
            cistern_core::metrics::CiHealth,
            Vec<cistern_core::metrics::CiHealth>,
        )>,
        StoreError,
    >;
    /// Brings the day rollups up to date for every tenant (seals the closed days, rebuilds the
    /// days late writes changed); returns when nothing is left. Reads are exact without it, and
    /// faster after it.
    async fn refresh_rollups(&self) -> Result<(), StoreError>;

    /// Creates a webhook subscription.
    async fn create_subscription(&self, s: &Subscription) -> Result<(), StoreError>;
    /// The tenant's subscriptions, oldest first.
    async fn list_subscriptions(&self, tenant_id: &str) -> Result<Vec<Subscription>, StoreError>;
    /// One subscription of the tenant.
    async fn get_subscription(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<Subscription>, StoreError>;
    /// Saves a subscription's settings (URL, secret, format, events, filters, `updated_at`);
    /// false when the tenant has none with this id.
    async fn update_subscription(&self, s: &Subscription) -> Result<bool, StoreError>;
    /// Enables a subscription (its pending deliveries become due at `now`, on a fresh schedule)
    /// or disables it with a reason; false when the tenant has none with this id.
    async fn set_subscription_enabled(
        &self,
        tenant_id: &str,
        id: &str,
        enabled: bool,
        reason: Option<&str>,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Deletes a subscription with its deliveries and their attempt log.
    async fn delete_subscription(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError>;
    /// A subscription's deliveries, newest first.
    async fn list_deliveries(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError>;
    /// One delivery with its message and attempt log.
    async fn get_delivery(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<DeliveryDetail>, StoreError>;
    /// Queues a delivery again, due at `now` on a fresh schedule; false when unknown.
    async fn redeliver(
        &self,
        tenant_id: &str,
        id: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Queues again every delivery of a subscription created in `[since, until)`; returns how
    /// many.
    async fn replay(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Result<u64, StoreError>;
    /// Leases due deliveries of enabled subscriptions to one worker (of any node): at most
    /// `limit`, and never more than `per_subscription` leased at once for one subscription.
    async fn claim_deliveries(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;
    /// Records attempts (log, delivery state, subscription health) in one transaction.
    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        now: time::OffsetDateTime,
    ) -> Result<Vec<SubscriptionHealth>, StoreError>;
    /// Gives back leases that were not used.
    async fn release_deliveries(&self, token: &str, ids: &[String]) -> Result<(), StoreError>;
    /// Notified when a write of this process queued deliveries (other nodes' writes are found
    /// by polling).
    fn delivery_signal(&self) -> Arc<tokio::sync::Notify>;

    /// The writer's and the pool's counters, for monitoring; cheap (atomics, no database).
    fn stats(&self) -> StoreStats;
    /// Deliveries waiting in the outbox, counted at `now`.
    async fn outbox_depth(&self, now: time::OffsetDateTime) -> Result<OutboxDepth, StoreError>;
    /// Retention: deletes at most `limit` raw inbound events received before `before`, oldest
    /// first; returns how many. Runs take no part (a run outlives the event that reported it).
    async fn prune_events(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError>;
    /// Retention: deletes at most `limit` finished deliveries (delivered or failed) whose last
    /// attempt (or creation) was before `before`, with their attempt log, then at most `limit`
    /// outbound messages older than `before` that no delivery refers to. Pending deliveries are
    /// kept, however old.
    async fn prune_deliveries(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<PrunedDeliveries, StoreError>;
    /// Creates a trigger; `Conflict` when the tenant has one with the same identifiers.
    async fn create_trigger(&self, t: &Trigger) -> Result<(), StoreError>;
    /// The tenant's triggers, oldest first.
    async fn list_triggers(&self, tenant_id: &str) -> Result<Vec<Trigger>, StoreError>;
    /// One trigger of the tenant.
    async fn get_trigger(&self, tenant_id: &str, id: &str) -> Result<Option<Trigger>, StoreError>;
    /// The tenant's trigger with these identifiers.
    async fn find_trigger(
        &self,
        tenant_id: &str,
        key: &TriggerKey,
    ) -> Result<Option<Trigger>, StoreError>;
    /// Saves a trigger's identifiers, target, flags and `updated_at`; `Conflict` when the new
    /// identifiers are another trigger's; false when the tenant has none with this id.
    async fn update_trigger(&self, t: &Trigger) -> Result<bool, StoreError>;
    /// Replaces a trigger's token by a new one (given as its hash): the old token is refused
    /// from the commit on. False when the tenant has no trigger with this id.
    async fn set_trigger_token(
        &self,
        tenant_id: &str,
        id: &str,
        token_hash: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Deletes a trigger; its events stay (they are history), and those not yet sent fail.
    async fn delete_trigger(
        &self,
        tenant_id: &str,
        id: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Stores a trigger event; returns after the commit. A pending one is then due at once
    /// (this process's delivery worker is woken).
    async fn create_trigger_event(&self, e: &NewTriggerEvent) -> Result<(), StoreError>;
    /// A trigger event by its id, whatever its tenant (the caller checks the tenant), with the
    /// run linked to it.
    async fn trigger_event(&self, id: &str) -> Result<Option<TriggerEvent>, StoreError>;
    /// The tenant's latest trigger events (of one trigger, or all), newest first.
    async fn list_trigger_events(
        &self,
        tenant_id: &str,
        trigger_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TriggerEvent>, StoreError>;
    /// Leases due trigger events to one worker (at most `req.limit`; `per_subscription` is not
    /// used). Pending events created before `expire_before` fail instead: too late to start a
    /// pipeline.
    async fn claim_dispatches(
        &self,
        req: &ClaimRequest,
        expire_before: time::OffsetDateTime,
    ) -> Result<Vec<ClaimedDispatch>, StoreError>;
    /// Records dispatch attempts (log and event state) in one transaction.
    async fn record_dispatches(
        &self,
        records: &[DispatchRecord],
        now: time::OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Gives back dispatch leases that were not used.
    async fn release_dispatches(&self, token: &str, ids: &[String]) -> Result<(), StoreError>;
    /// Checks the database: the engine's own check and the links between tables (see
    /// [`integrity`]). Reads only; can take a while on a large database.
    async fn integrity_check(&self) -> Result<integrity::IntegrityReport, StoreError>;

    /// Stores a new dashboard session.
    async fn create_session(&self, s: &sessions::DashboardSession) -> Result<(), StoreError>;
    /// The session whose id hashes to `id_hash`.
    async fn session_by_hash(
        &self,
        id_hash: &str,
    ) -> Result<Option<sessions::DashboardSession>, StoreError>;
    /// Records that the session was used at `at`.
    async fn touch_session(
        &self,
        id_hash: &str,
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Ends a session (sign-out, expiry, a revoked key).
    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError>;
    /// Ends every session of a key; returns how many there were.
    async fn end_sessions_of_key(&self, key_id: &str) -> Result<u64, StoreError>;
}

/// Opens the store named by a database URL: `sqlite://path`, `sqlite:path`, a bare path, or
/// `postgres://…`. Migrations are applied and the `default` tenant exists afterwards.
pub async fn open(url: &str, settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url, settings).await?))
    } else {
        let path = sqlite::path_from_url(url)?;
        Ok(Arc::new(sqlite::SqliteStore::open(&path, settings).await?))
    }
}
