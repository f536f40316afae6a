//! The embedded SQLite store: WAL, `synchronous=FULL`, one writer thread doing group commit, and a
//! small pool of read connections used from blocking tasks.

mod admin;
mod metrics;
mod outbound;
mod read;
mod satellites;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::*;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_heartbeats.sql"),
    include_str!("../../migrations/sqlite/0003_metrics_index.sql"),
    include_str!("../../migrations/sqlite/0004_secrets_sources.sql"),
    include_str!("../../migrations/sqlite/0005_satellites.sql"),
    include_str!("../../migrations/sqlite/0006_outbound.sql"),
];

/// The path of a SQLite database URL (`sqlite://cistern.db`, `sqlite:cistern.db`, `cistern.db`).
pub fn path_from_url(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() {
        return Err(StoreError::Invalid(format!(
            "database URL {url:?} names no file; use sqlite://path/to/cistern.db or postgres://…"
        )));
    }
    if rest.contains("://") {
        return Err(StoreError::Invalid(format!(
            "database URL {url:?}: unknown scheme; use sqlite://path or postgres://user@host/db"
        )));
    }
    Ok(PathBuf::from(rest))
}

/// A job for the writer thread: a write, or a task run in the same group-commit transaction.
// Not boxed: writes are the hot path, and each is moved once through the channel.
#[allow(clippy::large_enum_variant)]
enum Job {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
    },
    Task(Box<dyn writer::Task>),
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    reads: Arc<ReadPool>,
    writer: mpsc::Sender<Job>,
    signal: Arc<tokio::sync::Notify>,
}

struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite did not switch to WAL journal mode");
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    let now = cistern_core::to_millis(time::OffsetDateTime::now_utc());
    tx.execute(
        "INSERT INTO tenants (id, slug, strict, created_at) VALUES (?1, 'default', 0, ?2) ON CONFLICT (slug) DO NOTHING",
        params![new_id(), now],
    )?;
    tx.commit()?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(path: &Path, settings: &StoreSettings) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path, &settings))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    fn open_blocking(path: &Path, settings: &StoreSettings) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let mut wconn = Connection::open(path).map_err(|e| {
            StoreError::Backend(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        })?;
        configure(&wconn)?;
        migrate(&mut wconn)?;
        let mut conns = Vec::with_capacity(settings.pool_size);
        for _ in 0..settings.pool_size.max(1) {
            let c = Connection::open(path)?;
            configure(&c)?;
            conns.push(c);
        }
        let reads = Arc::new(ReadPool {
            permits: Semaphore::new(conns.len()),
            conns: Mutex::new(conns),
        });
        // `max(1)`: a zero-sized channel panics, and a batch holds at least one write.
        let (tx, rx) = mpsc::channel::<Job>(settings.max_batch.max(1) * 8);
        let wsettings = settings.clone();
        let signal = Arc::new(tokio::sync::Notify::new());
        let wsignal = signal.clone();
        std::thread::Builder::new()
            .name("cistern-sqlite-writer".into())
            .spawn(move || writer::run(wconn, rx, wsettings, wsignal))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self {
            reads,
            writer: tx,
            signal,
        })
    }

    /// Runs `f` on the writer thread, inside its next group-commit transaction; answers after
    /// the commit.
    async fn in_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job::Task(Box::new(writer::FnTask::new(f, reply))))
            .await
            .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the writer dropped the request".into()))?
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .reads
            .permits
            .acquire()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let conn = self
            .reads
            .conns
            .lock()
            .map_err(|_| StoreError::Backend("read pool poisoned".into()))?
            .pop()
            .ok_or_else(|| StoreError::Backend("read pool empty".into()))?;
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&conn);
            (conn, out)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?;
        if let Ok(mut conns) = self.reads.conns.lock() {
            conns.push(conn);
        }
        out
    }
}

fn tenant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: r.get(0)?,
        slug: r.get(1)?,
        strict: r.get::<_, i64>(2)? != 0,
        created_at: cistern_core::from_millis(r.get(3)?),
    })
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    let scopes: String = r.get(4)?;
    Ok(ApiKeyInfo {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
        created_at: cistern_core::from_millis(r.get(5)?),
        revoked_at: r.get::<_, Option<i64>>(6)?.map(cistern_core::from_millis),
    })
}

const KEY_COLS: &str = "id, tenant_id, name, prefix, scopes, created_at, revoked_at";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job::Write { op, reply })
            .await
            .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the writer dropped the request".into()))?
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn create_tenant(&self, slug: &str, strict: bool) -> Result<Tenant, StoreError> {
        let slug = slug.to_owned();
        self.with_conn(move |c| {
            let t = Tenant {
                id: new_id(),
                slug,
                strict,
                created_at: time::OffsetDateTime::now_utc(),
            };
            let n = c.execute(
                "INSERT INTO tenants (id, slug, strict, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (slug) DO NOTHING",
                params![t.id, t.slug, t.strict as i64, cistern_core::to_millis(t.created_at)],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("tenant {:?} already exists", t.slug)));
            }
            Ok(t)
        })
        .await
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Option<Tenant>, StoreError> {
        let slug = slug.to_owned();
        self.with_conn(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, slug, strict, created_at FROM tenants WHERE slug = ?1",
            )?
            .query_row([slug], tenant_row)
            .optional()?)
        })
        .await
    }

    async fn tenant_by_id(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |c| {
            Ok(
                c.prepare_cached("SELECT id, slug, strict, created_at FROM tenants WHERE id = ?1")?
                    .query_row([id], tenant_row)
                    .optional()?,
            )
        })
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.with_conn(|c| {
            let mut st =
                c.prepare_cached("SELECT id, slug, strict, created_at FROM tenants ORDER BY slug")?;
            let rows = st
                .query_map([], tenant_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn set_tenant_strict(&self, tenant_id: &str, strict: bool) -> Result<(), StoreError> {
        let id = tenant_id.to_owned();
        self.with_conn(move |c| {
            let n = c.execute(
                "UPDATE tenants SET strict = ?1 WHERE id = ?2",
                params![strict as i64, id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("tenant".into()));
            }
            Ok(())
        })
        .await
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKeyInfo, StoreError> {
        self.with_conn(move |c| {
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
            c.execute(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![info.id, info.tenant_id, info.name, info.prefix, key.hash, scopes.join(","), cistern_core::to_millis(info.created_at)],
            )?;
            Ok(info)
        })
        .await
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        let hash = hash.to_owned();
        self.with_conn(move |c| {
            Ok(
                c.prepare_cached(&format!("SELECT {KEY_COLS} FROM api_keys WHERE hash = ?1"))?
                    .query_row([hash], key_row)
                    .optional()?,
            )
        })
        .await
    }

    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let id = tenant_id.to_owned();
        self.with_conn(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at, id"
            ))?;
            let rows = st
                .query_map([id], key_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id_or_name: &str,
    ) -> Result<ApiKeyInfo, StoreError> {
        let (tid, key) = (tenant_id.to_owned(), id_or_name.to_owned());
        self.with_conn(move |c| {
            let now = cistern_core::to_millis(time::OffsetDateTime::now_utc());
            let found: Vec<ApiKeyInfo> = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = ?1 AND (id = ?2 OR name = ?2 OR prefix = ?2)"
                ))?
                .query_map(params![tid, key], key_row)?
                .collect::<Result<_, _>>()?;
            match found.len() {
                0 => Err(StoreError::NotFound(format!("no key with id or name {key:?}"))),
                1 => {
                    let mut k = found.into_iter().next().expect("one key");
                    c.execute(
                        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2",
                        params![now, k.id],
                    )?;
                    k.revoked_at.get_or_insert(cistern_core::from_millis(now));
                    Ok(k)
                }
                n => Err(StoreError::Conflict(format!(
                    "{n} keys are named {key:?}; revoke by id (see `cistern keys list`)"
                ))),
            }
        })
        .await
    }

    async fn list_runs(
        &self,
        tenant_id: &str,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<cistern_core::Run>, StoreError> {
        let (tid, filter, page) = (tenant_id.to_owned(), filter.clone(), page.clone());
        self.with_conn(move |c| read::list_runs(c, &tid, &filter, &page))
            .await
    }

    async fn get_run(
        &self,
        tenant_id: &str,
        run_id: &str,
    ) -> Result<Option<cistern_core::Run>, StoreError> {
        let (tid, rid) = (tenant_id.to_owned(), run_id.to_owned());
        self.with_conn(move |c| read::get_run(c, &tid, &rid)).await
    }

    async fn list_pipelines(&self, tenant_id: &str) -> Result<Vec<PipelineSummary>, StoreError> {
        let tid = tenant_id.to_owned();
        self.with_conn(move |c| read::list_pipelines(c, &tid)).await
    }

    async fn list_instances(&self, tenant_id: &str) -> Result<Vec<Instance>, StoreError> {
        let tid = tenant_id.to_owned();
        self.with_conn(move |c| read::list_instances(c, &tid)).await
    }

    async fn list_events(
        &self,
        tenant_id: &str,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<EventView>, StoreError> {
        let (tid, filter, page) = (tenant_id.to_owned(), filter.clone(), page.clone());
        self.with_conn(move |c| read::list_events(c, &tid, &filter, &page))
            .await
    }

    async fn get_event(
        &self,
        tenant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventView>, StoreError> {
        let (tid, eid) = (tenant_id.to_owned(), event_id.to_owned());
        self.with_conn(move |c| read::get_event(c, &tid, &eid))
            .await
    }

    async fn deployments(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::Deployment>, StoreError> {
        let (tid, f) = (tenant_id.to_owned(), filter.clone());
        self.with_conn(move |c| metrics::deployments(c, &tid, &f, since, until))
            .await
    }

    async fn ci_runs(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::CiRun>, StoreError> {
        let (tid, f) = (tenant_id.to_owned(), filter.clone());
        self.with_conn(move |c| metrics::ci_runs(c, &tid, &f, since, until))
            .await
    }

    async fn stage_stats(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::StageStat>, StoreError> {
        let (tid, f) = (tenant_id.to_owned(), filter.clone());
        self.with_conn(move |c| metrics::stage_stats(c, &tid, &f, since, until))
            .await
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let k = key.to_owned();
        self.with_conn(move |c| admin::meta_get(c, &k)).await
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let (k, v) = (key.to_owned(), value.to_owned());
        self.with_conn(move |c| admin::meta_init(c, &k, &v)).await
    }

    async fn put_secret(
        &self,
        tenant_id: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        grace_until: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (t, n, no, ct) = (
            tenant_id.to_owned(),
            name.to_owned(),
            nonce.to_vec(),
            ciphertext.to_vec(),
        );
        self.with_conn(move |c| admin::put_secret(c, &t, &n, &no, &ct, grace_until))
            .await
    }

    async fn get_secret(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<StoredSecret>, StoreError> {
        let (t, n) = (tenant_id.to_owned(), name.to_owned());
        self.with_conn(move |c| admin::get_secret(c, &t, &n)).await
    }

    async fn list_secrets(&self, tenant_id: &str) -> Result<Vec<SecretInfo>, StoreError> {
        let t = tenant_id.to_owned();
        self.with_conn(move |c| admin::list_secrets(c, &t)).await
    }

    async fn delete_secret(&self, tenant_id: &str, name: &str) -> Result<bool, StoreError> {
        let (t, n) = (tenant_id.to_owned(), name.to_owned());
        self.with_conn(move |c| admin::delete_secret(c, &t, &n))
            .await
    }

    async fn create_source(&self, source: &Source) -> Result<(), StoreError> {
        let s = source.clone();
        self.with_conn(move |c| admin::create_source(c, &s)).await
    }

    async fn source_by_id(&self, id: &str) -> Result<Option<Source>, StoreError> {
        let i = id.to_owned();
        self.with_conn(move |c| admin::source_by_id(c, &i)).await
    }

    async fn list_sources(&self, tenant_id: &str) -> Result<Vec<Source>, StoreError> {
        let t = tenant_id.to_owned();
        self.with_conn(move |c| admin::list_sources(c, &t)).await
    }

    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let (t, i) = (tenant_id.to_owned(), id.to_owned());
        self.with_conn(move |c| admin::delete_source(c, &t, &i))
            .await
    }

    async fn put_satellite_heartbeat(
        &self,
        tenant_id: &str,
        heartbeat: &SatelliteHeartbeat,
    ) -> Result<(), StoreError> {
        let (t, hb) = (tenant_id.to_owned(), heartbeat.clone());
        self.with_conn(move |c| satellites::put_heartbeat(c, &t, &hb))
            .await
    }

    async fn list_satellites(&self, tenant_id: &str) -> Result<Vec<SatelliteInfo>, StoreError> {
        let t = tenant_id.to_owned();
        self.with_conn(move |c| satellites::list(c, &t)).await
    }

    async fn incidents(
        &self,
        tenant_id: &str,
        filter: &MetricsFilter,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Result<Vec<cistern_core::metrics::Incident>, StoreError> {
        let (t, f) = (tenant_id.to_owned(), filter.clone());
        self.with_conn(move |c| admin::incidents(c, &t, &f, since, until))
            .await
    }

    async fn create_subscription(&self, s: &Subscription) -> Result<(), StoreError> {
        let s = s.clone();
        self.in_writer(move |c| outbound::create_subscription(c, &s))
            .await
    }

    async fn list_subscriptions(&self, tenant_id: &str) -> Result<Vec<Subscription>, StoreError> {
        let t = tenant_id.to_owned();
        self.with_conn(move |c| outbound::list_subscriptions(c, &t))
            .await
    }

    async fn get_subscription(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        let (t, i) = (tenant_id.to_owned(), id.to_owned());
        self.with_conn(move |c| outbound::get_subscription(c, &t, &i))
            .await
    }

    async fn update_subscription(&self, s: &Subscription) -> Result<bool, StoreError> {
        let s = s.clone();
        self.in_writer(move |c| outbound::update_subscription(c, &s))
            .await
    }

    async fn set_subscription_enabled(
        &self,
        tenant_id: &str,
        id: &str,
        enabled: bool,
        reason: Option<&str>,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (t, i, r) = (
            tenant_id.to_owned(),
            id.to_owned(),
            reason.map(str::to_owned),
        );
        let out = self
            .in_writer(move |c| {
                outbound::set_subscription_enabled(c, &t, &i, enabled, r.as_deref(), now)
            })
            .await?;
        if enabled {
            self.signal.notify_one();
        }
        Ok(out)
    }

    async fn delete_subscription(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let (t, i) = (tenant_id.to_owned(), id.to_owned());
        self.in_writer(move |c| outbound::delete_subscription(c, &t, &i))
            .await
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        let (t, s, f, p) = (
            tenant_id.to_owned(),
            subscription_id.to_owned(),
            filter.clone(),
            page.clone(),
        );
        self.with_conn(move |c| outbound::list_deliveries(c, &t, &s, &f, &p))
            .await
    }

    async fn get_delivery(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<DeliveryDetail>, StoreError> {
        let (t, i) = (tenant_id.to_owned(), id.to_owned());
        self.with_conn(move |c| outbound::get_delivery(c, &t, &i))
            .await
    }

    async fn redeliver(
        &self,
        tenant_id: &str,
        id: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (t, i) = (tenant_id.to_owned(), id.to_owned());
        let out = self
            .in_writer(move |c| outbound::redeliver(c, &t, &i, now))
            .await?;
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
        let (t, s) = (tenant_id.to_owned(), subscription_id.to_owned());
        let out = self
            .in_writer(move |c| outbound::replay(c, &t, &s, since, until, now))
            .await?;
        self.signal.notify_one();
        Ok(out)
    }

    async fn claim_deliveries(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let req = req.clone();
        self.in_writer(move |c| outbound::claim(c, &req)).await
    }

    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        now: time::OffsetDateTime,
    ) -> Result<Vec<SubscriptionHealth>, StoreError> {
        let records = records.to_vec();
        self.in_writer(move |c| outbound::record_attempts(c, &records, now))
            .await
    }

    async fn release_deliveries(&self, token: &str, ids: &[String]) -> Result<(), StoreError> {
        let (t, ids) = (token.to_owned(), ids.to_vec());
        self.in_writer(move |c| outbound::release(c, &t, &ids))
            .await
    }

    fn delivery_signal(&self) -> Arc<tokio::sync::Notify> {
        self.signal.clone()
    }

    async fn integrity_check(&self) -> Result<crate::integrity::IntegrityReport, StoreError> {
        self.with_conn(|c| {
            let mut report = crate::integrity::IntegrityReport::default();
            report.checks.push("PRAGMA integrity_check".into());
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let rows: Vec<String> = stmt
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            report.problems.extend(
                rows.into_iter()
                    .filter(|r| r != "ok")
                    .map(|r| format!("integrity_check: {r}")),
            );
            report.checks.push("PRAGMA foreign_key_check".into());
            let mut stmt = c.prepare("PRAGMA foreign_key_check")?;
            let rows: Vec<String> = stmt
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            report.problems.extend(
                rows.into_iter()
                    .map(|table| format!("foreign_key_check: a row of {table} points nowhere")),
            );
            for (what, sql) in crate::integrity::LINKS {
                report.checks.push((*what).to_owned());
                let n: i64 = c.query_row(sql, [], |row| row.get(0))?;
                if n > 0 {
                    report.problems.push(format!("{n} {what}"));
                }
            }
            Ok(report)
        })
        .await
    }
}
