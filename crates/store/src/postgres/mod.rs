//! The PostgreSQL store (scale-out): several `cistern serve` nodes share one database.
//!
//! Writes go through a group-commit writer like the SQLite store's, but with several writer tasks
//! (each using its own pooled connection per batch) and upserts that stay correct when several
//! processes report the same run at the same time. Reads run directly on the pool.

mod admin;
mod key_rotation;
mod metrics;
mod outbound;
mod read;
mod rekey;
mod rollups;
mod satellites;
mod sessions;
mod triggers;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::*;

/// Migrations: `(version, SQL)`, applied in order, each at most once per database.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_heartbeats.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_metrics_index.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_secrets_sources.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_satellites.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_outbound.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_triggers.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_source_events.sql"),
    ),
    (
        9,
        include_str!("../../migrations/postgres/0009_retention.sql"),
    ),
    (
        10,
        include_str!("../../migrations/postgres/0010_event_body_codec.sql"),
    ),
    (
        11,
        include_str!("../../migrations/postgres/0011_ci_day_rollups.sql"),
    ),
    (
        13,
        include_str!("../../migrations/postgres/0013_dashboard_sessions.sql"),
    ),
    (
        14,
        include_str!("../../migrations/postgres/0014_config_change_run_key.sql"),
    ),
    (
        15,
        include_str!("../../migrations/postgres/0015_trigger_auth_token_hash.sql"),
    ),
    (
        16,
        include_str!("../../migrations/postgres/0016_api_key_rotations.sql"),
    ),
    (
        17,
        include_str!("../../migrations/postgres/0017_subscription_headers.sql"),
    ),
];

/// Key of the advisory lock that serializes migrators (the bytes of `cistern`).
const MIGRATION_LOCK: i64 = 0x0063_6973_7465_726e;

/// How long to wait for the first connection, and for a pooled connection later.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most writer tasks (each holds one pooled connection while it writes a batch).
const MAX_WRITERS: usize = 4;

/// A job for the writer tasks.
pub(super) struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: PgPool,
    writer: mpsc::Sender<Job>,
    signal: Arc<tokio::sync::Notify>,
    writer_stats: Arc<WriterStats>,
    /// A background refresh of the day rollups is running.
    refreshing: Arc<std::sync::atomic::AtomicBool>,
}

/// Where a URL points, without its password, for error messages.
fn describe(opts: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("(default database)")
    )
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Taken before anything else, so that nodes starting together migrate one after another.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await?;
    let known = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
    if let Some(newest) = applied.iter().copied().max().filter(|v| *v > known) {
        tracing::warn!(
            newest,
            known,
            "the database has migrations this binary does not know; is an older version running?"
        );
    }
    let now = cistern_core::to_millis(time::OffsetDateTime::now_utc());
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Backend(format!("migration {version} failed: {e}")))?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    sqlx::query(
        "INSERT INTO tenants (id, slug, strict, created_at) VALUES ($1, 'default', FALSE, $2) ON CONFLICT (slug) DO NOTHING",
    )
    .bind(new_id())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

impl PgStore {
    /// Connects (pool of `settings.pool_size`), applies migrations, ensures the `default` tenant
    /// and starts the writer tasks. Must be called inside a Tokio runtime.
    pub async fn open(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        let opts = opts.application_name("cistern");
        let target = describe(&opts);
        let pool_size = settings.pool_size.max(1);
        // One direct connection first: the pool would retry a refused connection until its
        // timeout and then only say it timed out; this says why (refused, bad password, no such
        // database…).
        let unreachable = |why: String| {
            StoreError::Backend(format!("cannot connect to PostgreSQL at {target}: {why}"))
        };
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts))
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(pool_size).unwrap_or(u32::MAX))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        migrate(&pool).await?;

        let max_batch = settings.max_batch.max(1);
        let (tx, rx) = mpsc::channel::<Job>(max_batch * 8);
        let rx = Arc::new(Mutex::new(rx));
        // Leave at least half of the pool to reads.
        let writers = (pool_size / 2).clamp(1, MAX_WRITERS);
        let signal = Arc::new(tokio::sync::Notify::new());
        let writer_stats = Arc::new(WriterStats::default());
        let known = Arc::new(writer::Known::default());
        for n in 0..writers {
            tokio::spawn(writer::run(
                n,
                pool.clone(),
                rx.clone(),
                StoreSettings {
                    max_batch,
                    ..settings.clone()
                },
                signal.clone(),
                writer_stats.clone(),
                known.clone(),
            ));
        }
        Ok(Self {
            pool,
            writer: tx,
            signal,
            writer_stats,
            refreshing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }
}

fn tenant_row(r: &sqlx::postgres::PgRow) -> Result<Tenant, sqlx::Error> {
    tenant_row_at(r, 0)
}

/// A tenant from the [`TENANT_COLS`] starting at column `at`.
fn tenant_row_at(r: &sqlx::postgres::PgRow, at: usize) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: r.try_get(at)?,
        slug: r.try_get(at + 1)?,
        strict: r.try_get(at + 2)?,
        created_at: cistern_core::from_millis(r.try_get(at + 3)?),
    })
}

fn key_row(r: &sqlx::postgres::PgRow) -> Result<ApiKeyInfo, sqlx::Error> {
    let scopes: String = r.try_get(4)?;
    Ok(ApiKeyInfo {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        name: r.try_get(2)?,
        prefix: r.try_get(3)?,
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
        created_at: cistern_core::from_millis(r.try_get(5)?),
        revoked_at: r
            .try_get::<Option<i64>, _>(6)?
            .map(cistern_core::from_millis),
    })
}

const TENANT_COLS: &str = "id, slug, strict, created_at";

/// `cols` (a column list) with each column qualified by `table`, for joins.
fn prefixed(table: &str, cols: &str) -> String {
    cols.split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
const KEY_COLS: &str = "id, tenant_id, name, prefix, scopes, created_at, revoked_at";

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the writer dropped the request".into()))?
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_tenant(&self, slug: &str, strict: bool) -> Result<Tenant, StoreError> {
        let t = Tenant {
            id: new_id(),
            slug: slug.to_owned(),
            strict,
            created_at: time::OffsetDateTime::now_utc(),
        };
        let n = sqlx::query(
            "INSERT INTO tenants (id, slug, strict, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (slug) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.slug)
        .bind(t.strict)
        .bind(cistern_core::to_millis(t.created_at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "tenant {:?} already exists",
                t.slug
            )));
        }
        Ok(t)
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLS} FROM tenants WHERE slug = $1"
        ))
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(tenant_row).transpose()?)
    }

    async fn tenant_by_id(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(tenant_row).transpose()?)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants ORDER BY slug"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(tenant_row).collect::<Result<_, _>>()?)
    }

    async fn set_tenant_strict(&self, tenant_id: &str, strict: bool) -> Result<(), StoreError> {
        let n = sqlx::query("UPDATE tenants SET strict = $1 WHERE id = $2")
            .bind(strict)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("tenant".into()));
        }
        Ok(())
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKeyInfo, StoreError> {
        let info = ApiKeyInfo {
            id: new_id(),
            tenant_id: key.tenant_id,
            name: key.name,
            prefix: key.prefix,
            scopes: key.scopes,
            created_at: time::OffsetDateTime::now_utc(),
            revoked_at: None,
        };
        let scopes: Vec<&str> = info.scopes.iter().map(|s| s.as_str()).collect();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&info.id)
        .bind(&info.tenant_id)
        .bind(&info.name)
        .bind(&info.prefix)
        .bind(&key.hash)
        .bind(scopes.join(","))
        .bind(cistern_core::to_millis(info.created_at))
        .execute(&self.pool)
        .await?;
        Ok(info)
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLS} FROM api_keys WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(key_row).transpose()?)
    }

    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_row).collect::<Result<_, _>>()?)
    }

    async fn rotate_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        new: &ApiKeyInfo,
        hash: &str,
        expires_at: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Result<crate::key_rotation::KeyRotation, StoreError> {
        key_rotation::rotate(&self.pool, tenant_id, key_id, new, hash, expires_at, now).await
    }

    async fn key_for_auth(&self, hash: &str) -> Result<Option<KeyForAuth>, StoreError> {
        // One round trip: the key, its tenant and its rotation joined.
        let row = sqlx::query(&format!(
            "SELECT {}, {}, {} FROM api_keys k
             LEFT JOIN tenants t ON t.id = k.tenant_id
             LEFT JOIN api_key_rotations r ON r.key_id = k.id
             WHERE k.hash = $1",
            prefixed("k", KEY_COLS),
            prefixed("t", TENANT_COLS),
            prefixed("r", key_rotation::COLS),
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let keys = KEY_COLS.split(',').count();
        let tenants = TENANT_COLS.split(',').count();
        let tenant = match row.try_get::<Option<String>, _>(keys)? {
            Some(_) => Some(tenant_row_at(&row, keys)?),
            None => None,
        };
        let rotation = match row.try_get::<Option<String>, _>(keys + tenants)? {
            Some(_) => Some(key_rotation::row_at(&row, keys + tenants)?),
            None => None,
        };
        Ok(Some(KeyForAuth {
            key: key_row(&row)?,
            tenant,
            rotation,
        }))
    }

    async fn api_key_rotation(
        &self,
        key_id: &str,
    ) -> Result<Option<crate::key_rotation::KeyRotation>, StoreError> {
        key_rotation::get(&self.pool, key_id).await
    }

    async fn list_api_key_rotations(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<crate::key_rotation::KeyRotation>, StoreError> {
        key_rotation::list(&self.pool, tenant_id).await
    }

    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id_or_name: &str,
    ) -> Result<ApiKeyInfo, StoreError> {
        let now = cistern_core::to_millis(time::OffsetDateTime::now_utc());
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND (id = $2 OR name = $2 OR prefix = $2)"
        ))
        .bind(tenant_id)
        .bind(id_or_name)
        .fetch_all(&self.pool)
        .await?;
        let mut found = rows.iter().map(key_row).collect::<Result<Vec<_>, _>>()?;
        match found.len() {
            0 => Err(StoreError::NotFound(format!(
                "no key with id or name {id_or_name:?}"
            ))),
            1 => {
                let mut k = found.remove(0);
                // COALESCE keeps the first revocation time; RETURNING gives the stored one even
                // when another node revoked the key meanwhile.
                let at: Option<i64> = sqlx::query_scalar(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING revoked_at",
                )
                .bind(now)
                .bind(&k.id)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
                k.revoked_at = Some(cistern_core::from_millis(at.unwrap_or(now)));
                Ok(k)
            }
            n => Err(StoreError::Conflict(format!(
                "{n} keys are named {id_or_name:?}; revoke by id (see `cistern keys list`)"
            ))),
        }
    }

    async fn list_runs(
        &self,
        tenant_id: &str,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<cistern_core::Run>, StoreError> {
        read::list_runs(&self.pool, tenant_id, filter, page).await
    }

    async fn get_run(
        &self,
        tenant_id: &str,
        run_id: &str,
    ) -> Result<Option<cistern_core::Run>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        read::get_run(&mut conn, tenant_id, run_id).await
    }

    async fn list_pipelines(&self, tenant_id: &str) -> Result<Vec<PipelineSummary>, StoreError> {
        read::list_pipelines(&self.pool, tenant_id).await
    }

    async fn list_instances(&self, tenant_id: &str) -> Result<Vec<Instance>, StoreError> {
        read::list_instances(&self.pool, tenant_id).await
    }

    async fn list_events(
        &self,
        tenant_id: &str,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<EventView>, StoreError> {
        read::list_events(&self.pool, tenant_id, filter, page).await
    }

    async fn get_event(
        &self,
        tenant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventView>, StoreError> {
        read::get_event(&self.pool, tenant_id, event_id).await
    }

    async fn deployments(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::Deployment>, StoreError> {
        metrics::deployments(&self.pool, tenant_id, filter, since, until).await
    }

    async fn ci_runs(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::CiRun>, StoreError> {
        metrics::ci_runs(&self.pool, tenant_id, filter, since, until).await
    }

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
    > {
        let now = cistern_core::to_millis(time::OffsetDateTime::now_utc());
        let out =
            rollups::ci_health(&self.pool, tenant_id, filter, since, until, buckets, now).await?;
        Ok(out.map(|(whole, series, pending)| {
            if pending
                && !self
                    .refreshing
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                let (pool, flag) = (self.pool.clone(), self.refreshing.clone());
                tokio::spawn(async move {
                    if let Err(e) = rollups::refresh_all(&pool).await {
                        tracing::warn!(error = %e, "refreshing the CI day rollups failed");
                    }
                    flag.store(false, std::sync::atomic::Ordering::Release);
                });
            }
            (whole, series)
        }))
    }

    async fn refresh_rollups(&self) -> Result<(), StoreError> {
        rollups::refresh_all(&self.pool).await
    }

    async fn stage_stats(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::StageStat>, StoreError> {
        metrics::stage_stats(&self.pool, tenant_id, filter, since, until).await
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        admin::meta_get(&self.pool, key).await
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
        admin::meta_init(&self.pool, key, value).await
    }

    async fn all_sealed_secrets(&self) -> Result<Vec<SealedSecret>, StoreError> {
        rekey::all_sealed_secrets(&self.pool).await
    }

    async fn reseal_secrets(
        &self,
        resealed: Vec<ResealedSecret>,
        check_key: &str,
        check_value: &str,
    ) -> Result<(), StoreError> {
        rekey::reseal_secrets(&self.pool, &resealed, check_key, check_value).await
    }

    async fn put_secret(
        &self,
        tenant_id: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        grace_until: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        admin::put_secret(&self.pool, tenant_id, name, nonce, ciphertext, grace_until).await
    }

    async fn get_secret(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<StoredSecret>, StoreError> {
        admin::get_secret(&self.pool, tenant_id, name).await
    }

    async fn list_secrets(&self, tenant_id: &str) -> Result<Vec<SecretInfo>, StoreError> {
        admin::list_secrets(&self.pool, tenant_id).await
    }

    async fn delete_secret(&self, tenant_id: &str, name: &str) -> Result<bool, StoreError> {
        admin::delete_secret(&self.pool, tenant_id, name).await
    }

    async fn create_source(&self, source: &Source) -> Result<(), StoreError> {
        admin::create_source(&self.pool, source).await
    }

    async fn source_by_id(&self, id: &str) -> Result<Option<Source>, StoreError> {
        admin::source_by_id(&self.pool, id).await
    }

    async fn list_sources(&self, tenant_id: &str) -> Result<Vec<Source>, StoreError> {
        admin::list_sources(&self.pool, tenant_id).await
    }

    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        admin::delete_source(&self.pool, tenant_id, id).await
    }

    async fn put_satellite_heartbeat(
        &self,
        tenant_id: &str,
        heartbeat: &SatelliteHeartbeat,
    ) -> Result<(), StoreError> {
        satellites::put_heartbeat(&self.pool, tenant_id, heartbeat).await
    }

    async fn list_satellites(&self, tenant_id: &str) -> Result<Vec<SatelliteInfo>, StoreError> {
        satellites::list(&self.pool, tenant_id).await
    }

    async fn incidents(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::Incident>, StoreError> {
        admin::incidents(&self.pool, tenant_id, filter, since, until).await
    }

    async fn create_subscription(&self, s: &Subscription) -> Result<(), StoreError> {
        outbound::create_subscription(&self.pool, s).await
    }

    async fn list_subscriptions(&self, tenant_id: &str) -> Result<Vec<Subscription>, StoreError> {
        outbound::list_subscriptions(&self.pool, tenant_id).await
    }

    async fn get_subscription(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        outbound::get_subscription(&self.pool, tenant_id, id).await
    }

    async fn update_subscription(&self, s: &Subscription) -> Result<bool, StoreError> {
        outbound::update_subscription(&self.pool, s).await
    }

    async fn set_subscription_enabled(
        &self,
        tenant_id: &str,
        id: &str,
        enabled: bool,
        reason: Option<&str>,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let out =
            outbound::set_subscription_enabled(&self.pool, tenant_id, id, enabled, reason, now)
                .await?;
        if enabled {
            self.signal.notify_one();
        }
        Ok(out)
    }

    async fn delete_subscription(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        outbound::delete_subscription(&self.pool, tenant_id, id).await
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        outbound::list_deliveries(&self.pool, tenant_id, subscription_id, filter, page).await
    }

    async fn get_delivery(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<DeliveryDetail>, StoreError> {
        outbound::get_delivery(&self.pool, tenant_id, id).await
    }

    async fn redeliver(
        &self,
        tenant_id: &str,
        id: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let out = outbound::redeliver(&self.pool, tenant_id, id, now).await?;
        self.signal.notify_one();
        Ok(out)
    }

    async fn replay(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let out =
            outbound::replay(&self.pool, tenant_id, subscription_id, since, until, now).await?;
        self.signal.notify_one();
        Ok(out)
    }

    async fn claim_deliveries(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        outbound::claim(&self.pool, req).await
    }

    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        now: time::OffsetDateTime,
    ) -> Result<Vec<SubscriptionHealth>, StoreError> {
        outbound::record_attempts(&self.pool, records, now).await
    }

    async fn release_deliveries(&self, token: &str, ids: &[String]) -> Result<(), StoreError> {
        outbound::release(&self.pool, token, ids).await
    }

    fn delivery_signal(&self) -> Arc<tokio::sync::Notify> {
        self.signal.clone()
    }

    fn stats(&self) -> StoreStats {
        let capacity = self.writer.max_capacity() as u64;
        StoreStats {
            queue_depth: capacity.saturating_sub(self.writer.capacity() as u64),
            queue_capacity: capacity,
            writer: self.writer_stats.snapshot(),
            pool_size: u64::from(self.pool.size()),
            pool_idle: self.pool.num_idle() as u64,
        }
    }

    async fn outbox_depth(&self, now: time::OffsetDateTime) -> Result<OutboxDepth, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE next_attempt_at <= $1)
             FROM deliveries WHERE status = 'pending'",
        )
        .bind(cistern_core::to_millis(now))
        .fetch_one(&self.pool)
        .await?;
        let (pending, due): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(OutboxDepth {
            pending: pending.max(0) as u64,
            due: due.max(0) as u64,
        })
    }

    async fn prune_events(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        // SKIP LOCKED: two nodes pruning at once take different rows instead of waiting.
        let done = sqlx::query(
            "DELETE FROM events WHERE id IN
               (SELECT id FROM events WHERE received_at < $1 ORDER BY received_at LIMIT $2
                FOR UPDATE SKIP LOCKED)",
        )
        .bind(cistern_core::to_millis(before))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn prune_deliveries(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<PrunedDeliveries, StoreError> {
        let before = cistern_core::to_millis(before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        // Locked and re-checked, so a delivery queued again meanwhile (redeliver) stays.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE status <> 'pending'
               AND COALESCE(last_attempt_at, created_at) < $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let attempts = sqlx::query("DELETE FROM delivery_attempts WHERE delivery_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let deliveries = sqlx::query("DELETE FROM deliveries WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let messages = sqlx::query(
            "DELETE FROM outbound_messages WHERE id IN
               (SELECT m.id FROM outbound_messages m WHERE m.created_at < $1
                  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)
                LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(PrunedDeliveries {
            deliveries,
            attempts,
            messages,
        })
    }

    async fn create_trigger(&self, t: &Trigger) -> Result<(), StoreError> {
        triggers::create_trigger(&self.pool, t).await
    }

    async fn list_triggers(&self, tenant_id: &str) -> Result<Vec<Trigger>, StoreError> {
        triggers::list_triggers(&self.pool, tenant_id).await
    }

    async fn get_trigger(&self, tenant_id: &str, id: &str) -> Result<Option<Trigger>, StoreError> {
        triggers::get_trigger(&self.pool, tenant_id, id).await
    }

    async fn find_trigger(
        &self,
        tenant_id: &str,
        key: &TriggerKey,
    ) -> Result<Option<Trigger>, StoreError> {
        triggers::find_trigger(&self.pool, tenant_id, key).await
    }

    async fn update_trigger(&self, t: &Trigger) -> Result<bool, StoreError> {
        triggers::update_trigger(&self.pool, t).await
    }

    async fn set_trigger_token(
        &self,
        tenant_id: &str,
        id: &str,
        token_hash: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        triggers::set_trigger_token(&self.pool, tenant_id, id, token_hash, now).await
    }

    async fn delete_trigger(
        &self,
        tenant_id: &str,
        id: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        triggers::delete_trigger(&self.pool, tenant_id, id, now).await
    }

    async fn create_trigger_event(&self, e: &NewTriggerEvent) -> Result<(), StoreError> {
        triggers::create_event(&self.pool, e).await?;
        if e.state == DispatchState::Pending {
            // Committed: this node's worker sends it now (other nodes poll).
            self.signal.notify_one();
        }
        Ok(())
    }

    async fn trigger_event(&self, id: &str) -> Result<Option<TriggerEvent>, StoreError> {
        triggers::get_event(&self.pool, id).await
    }

    async fn list_trigger_events(
        &self,
        tenant_id: &str,
        trigger_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TriggerEvent>, StoreError> {
        triggers::list_events(&self.pool, tenant_id, trigger_id, limit).await
    }

    async fn claim_dispatches(
        &self,
        req: &ClaimRequest,
        expire_before: time::OffsetDateTime,
    ) -> Result<Vec<ClaimedDispatch>, StoreError> {
        triggers::claim(&self.pool, req, expire_before).await
    }

    async fn record_dispatches(
        &self,
        records: &[DispatchRecord],
        now: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        triggers::record(&self.pool, records, now).await
    }

    async fn release_dispatches(&self, token: &str, ids: &[String]) -> Result<(), StoreError> {
        triggers::release(&self.pool, token, ids).await
    }

    async fn create_session(
        &self,
        s: &crate::sessions::DashboardSession,
    ) -> Result<(), StoreError> {
        sessions::create(&self.pool, s).await
    }

    async fn session_by_hash(
        &self,
        id_hash: &str,
    ) -> Result<Option<crate::sessions::DashboardSession>, StoreError> {
        sessions::by_hash(&self.pool, id_hash).await
    }

    async fn touch_session(
        &self,
        id_hash: &str,
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        sessions::touch(&self.pool, id_hash, at).await
    }

    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sessions::end(&self.pool, id_hash).await
    }

    async fn end_sessions_of_key(&self, key_id: &str) -> Result<u64, StoreError> {
        sessions::end_of_key(&self.pool, key_id).await
    }

    async fn integrity_check(&self) -> Result<crate::integrity::IntegrityReport, StoreError> {
        let mut report = crate::integrity::IntegrityReport::default();
        let amcheck: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'amcheck')",
        )
        .fetch_one(&self.pool)
        .await?;
        if amcheck {
            // Every B-tree index of this schema, checked against its table (heapallindexed).
            let indexes: Vec<String> = sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_am am ON am.oid = c.relam
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE am.amname = 'btree' AND n.nspname = current_schema()
                 ORDER BY 1",
            )
            .fetch_all(&self.pool)
            .await?;
            report.checks.push(format!(
                "amcheck bt_index_check on {} indexes",
                indexes.len()
            ));
            for index in indexes {
                if let Err(e) = sqlx::query("SELECT bt_index_check($1::regclass, true)")
                    .bind(&index)
                    .execute(&self.pool)
                    .await
                {
                    report.problems.push(format!("index {index}: {e}"));
                }
            }
        } else {
            report
                .checks
                .push("amcheck skipped (CREATE EXTENSION amcheck to run it)".into());
        }
        for (what, sql) in crate::integrity::LINKS {
            report.checks.push((*what).to_owned());
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await?;
            if n > 0 {
                report.problems.push(format!("{n} {what}"));
            }
        }
        Ok(report)
    }
}
