//! The embedded SQLite store: WAL, `synchronous=FULL`, one writer thread doing group commit, and a
//! small pool of read connections used from blocking tasks.

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
    include_str!("../../migrations/sqlite/0007_triggers.sql"),
    include_str!("../../migrations/sqlite/0008_source_events.sql"),
    include_str!("../../migrations/sqlite/0009_retention.sql"),
    include_str!("../../migrations/sqlite/0010_event_body_codec.sql"),
    include_str!("../../migrations/sqlite/0011_ci_day_rollups.sql"),
    include_str!("../../migrations/sqlite/0013_dashboard_sessions.sql"),
    include_str!("../../migrations/sqlite/0014_config_change_run_key.sql"),
    include_str!("../../migrations/sqlite/0015_trigger_auth_token_hash.sql"),
    include_str!("../../migrations/sqlite/0016_api_key_rotations.sql"),
    include_str!("../../migrations/sqlite/0017_subscription_headers.sql"),
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
        /// The event's body, compressed by the caller (off the writer thread).
        compressed: Option<Vec<u8>>,
    },
    Task(Box<dyn writer::Task>),
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    reads: Arc<ReadPool>,
    writer: mpsc::Sender<Job>,
    signal: Arc<tokio::sync::Notify>,
    /// Dropping it stops the checkpointer.
    _checkpoints: std::sync::mpsc::Sender<()>,
    max_event_body_bytes: usize,
    writer_stats: Arc<WriterStats>,
    path: PathBuf,
    /// A background refresh of the day rollups is running.
    refreshing: Arc<std::sync::atomic::AtomicBool>,
}

struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl ReadPool {
    fn put_back(&self, conn: Connection) {
        // A panic while the lock was held cannot leave the vector half-updated (push and pop
        // only), so a poisoned lock is taken as it is rather than losing the connection.
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(conn);
    }

    fn idle(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// A read connection borrowed from the pool, with the permit that counts it. Dropping it, from
/// wherever it is (the blocking task that ran the query, or a task dropped before it ran),
/// puts the connection back before the permit is released, so a request whose client went
/// away never costs the pool a connection.
struct Lease {
    conn: Option<Connection>,
    pool: Arc<ReadPool>,
    // Dropped after `Drop::drop` has returned the connection: a waiter woken by the permit
    // always finds one.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // Statement journals (savepoints) and sorts in memory, not in temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Past this size the checkpointer restarts the WAL (a short wait for the writer), so the file
/// is reused from its start instead of growing while the writer never pauses.
const WAL_RESTART_BYTES: u64 = 32 << 20;

/// Past this size the WAL file is also truncated.
const WAL_TRUNCATE_BYTES: u64 = 256 << 20;

/// Checkpoints the WAL from its own connection and thread, so the copying of pages back into the
/// database happens beside the writer instead of inside its group commits (SQLite's automatic
/// checkpoint runs in the committing writer). PASSIVE checkpoints never wait; a RESTART, when the
/// WAL has grown, waits for the writer's current transaction only. It stops when `stop` is
/// dropped.
fn checkpointer(conn: Connection, wal: PathBuf, stop: std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let mode = if size > WAL_TRUNCATE_BYTES {
            "TRUNCATE"
        } else if size > WAL_RESTART_BYTES {
            "RESTART"
        } else {
            "PASSIVE"
        };
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(error = %e, mode, "WAL checkpoint failed");
        }
    }
    // A last pass so a stopped hub leaves a small WAL.
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
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
    // Data steps SQL cannot do here (idempotent, cheap when done).
    triggers::hash_clear_tokens(&tx)?;
    let now = cistern_core::to_millis(time::OffsetDateTime::now_utc());
    tx.execute(
        "INSERT INTO tenants (id, slug, strict, created_at) VALUES (?1, 'default', 0, ?2) ON CONFLICT (slug) DO NOTHING",
        params![new_id(), now],
    )?;
    tx.commit()?;
    Ok(())
}

/// The database and its -wal and -shm files hold API key hashes, the secrets' ciphertexts and
/// every raw payload: readable and writable by their owner only (0600), like the master key.
/// A missing database is created 0600 before SQLite opens it (SQLite creates its -wal and -shm
/// files with the database file's mode); existing files with group or other permissions (made by
/// an older version, or under a wide umask) lose them.
#[cfg(unix)]
fn private_files(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::Backend(format!("cannot {what} {}: {e}", p.display()))
    };
    // Only a file that does not exist yet is opened here (created 0600, then closed): closing a
    // descriptor of a database file drops every POSIX lock this process holds on it, so opening
    // an existing database (another store of this process may have it open) would cancel that
    // store's SQLite locks and let its readers see a stale WAL index. Existing files are only
    // stat'ed and chmod'ed by path below, which takes no descriptor.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail("create", path, e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(|e| fail("restrict the permissions of", &p, e))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_files(_path: &Path) -> Result<(), StoreError> {
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
        private_files(path)?;
        let mut wconn = Connection::open(path).map_err(|e| {
            StoreError::Backend(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        })?;
        configure(&wconn)?;
        migrate(&mut wconn)?;
        // WAL mode is now on: the -wal and -shm files exist (created with the database's mode;
        // ones left by an older version may be wider).
        private_files(path)?;
        // The checkpointer below does the WAL's checkpoints; the writer keeps a larger page cache
        // (the indexes it updates on every run stay in memory).
        wconn.pragma_update(None, "wal_autocheckpoint", 0)?;
        wconn.pragma_update(None, "cache_size", -32_768)?;
        let cconn = Connection::open(path)?;
        configure(&cconn)?;
        let (stop_checkpoints, stop_rx) = std::sync::mpsc::channel();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        std::thread::Builder::new()
            .name("cistern-sqlite-checkpoint".into())
            .spawn(move || checkpointer(cconn, wal, stop_rx))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut conns = Vec::with_capacity(settings.pool_size);
        for _ in 0..settings.pool_size.max(1) {
            let c = Connection::open(path)?;
            configure(&c)?;
            conns.push(c);
        }
        let reads = Arc::new(ReadPool {
            permits: Arc::new(Semaphore::new(conns.len())),
            size: conns.len(),
            conns: Mutex::new(conns),
        });
        // `max(1)`: a zero-sized channel panics, and a batch holds at least one write.
        let (tx, rx) = mpsc::channel::<Job>(settings.max_batch.max(1) * 8);
        let wsettings = settings.clone();
        let signal = Arc::new(tokio::sync::Notify::new());
        let wsignal = signal.clone();
        let writer_stats = Arc::new(WriterStats::default());
        let wstats = writer_stats.clone();
        std::thread::Builder::new()
            .name("cistern-sqlite-writer".into())
            .spawn(move || writer::run(wconn, rx, wsettings, wsignal, wstats))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self {
            reads,
            writer: tx,
            signal,
            _checkpoints: stop_checkpoints,
            max_event_body_bytes: settings.max_event_body_bytes,
            writer_stats,
            path: path.to_owned(),
            refreshing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
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

    /// Refreshes the day rollups in the background, unless a refresh is running already.
    fn spawn_refresh(&self) {
        if self
            .refreshing
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let (writer, flag) = (self.writer.clone(), self.refreshing.clone());
        tokio::spawn(async move {
            if let Err(e) = refresh_all(&writer).await {
                tracing::warn!(error = %e, "refreshing the CI day rollups failed");
            }
            flag.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Runs `f` on a pooled read connection, on the blocking pool. Cancellation-safe: the
    /// connection returns to the pool when `f` ends, even when this future was dropped first.
    pub async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .reads
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let conn = self
            .reads
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .ok_or_else(|| StoreError::Backend("read pool empty".into()))?;
        let lease = Lease {
            conn: Some(conn),
            pool: self.reads.clone(),
            _permit: permit,
        };
        // The lease moves into the blocking task and is dropped there, after the query: if this
        // future is dropped while awaiting (the client hung up), the connection still returns.
        tokio::task::spawn_blocking(move || {
            let lease = lease;
            let conn = lease.conn.as_ref().expect("a lease holds its connection");
            f(conn)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

async fn on_writer<T, F>(writer: &mpsc::Sender<Job>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    writer
        .send(Job::Task(Box::new(writer::FnTask::new(f, reply))))
        .await
        .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
    rx.await
        .map_err(|_| StoreError::Backend("the writer dropped the request".into()))?
}

/// Refreshes the day rollups of every tenant, a step (one writer transaction) at a time.
async fn refresh_all(writer: &mpsc::Sender<Job>) -> Result<(), StoreError> {
    let tenants = on_writer(writer, rollups::tenants).await?;
    for t in tenants {
        loop {
            let now = cistern_core::to_millis(time::OffsetDateTime::now_utc());
            let tid = t.clone();
            let more = on_writer(writer, move |c| rollups::refresh_step(c, &tid, now)).await?;
            if !more {
                break;
            }
        }
    }
    Ok(())
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

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        let compressed = compress_body(&op.event().body, self.max_event_body_bytes);
        self.writer
            .send(Job::Write {
                op,
                reply,
                compressed,
            })
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

    async fn rotate_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        new: &ApiKeyInfo,
        hash: &str,
        expires_at: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Result<crate::key_rotation::KeyRotation, StoreError> {
        let (t, k, n, h) = (
            tenant_id.to_owned(),
            key_id.to_owned(),
            new.clone(),
            hash.to_owned(),
        );
        self.in_writer(move |c| key_rotation::rotate(c, &t, &k, &n, &h, expires_at, now))
            .await
    }

    async fn key_for_auth(&self, hash: &str) -> Result<Option<KeyForAuth>, StoreError> {
        let hash = hash.to_owned();
        // One read connection and one trip to the blocking pool for the three lookups.
        self.with_conn(move |c| {
            let Some(key) = c
                .prepare_cached(&format!("SELECT {KEY_COLS} FROM api_keys WHERE hash = ?1"))?
                .query_row([&hash], key_row)
                .optional()?
            else {
                return Ok(None);
            };
            let tenant = c
                .prepare_cached("SELECT id, slug, strict, created_at FROM tenants WHERE id = ?1")?
                .query_row([&key.tenant_id], tenant_row)
                .optional()?;
            let rotation = key_rotation::get(c, &key.id)?;
            Ok(Some(KeyForAuth {
                key,
                tenant,
                rotation,
            }))
        })
        .await
    }

    async fn api_key_rotation(
        &self,
        key_id: &str,
    ) -> Result<Option<crate::key_rotation::KeyRotation>, StoreError> {
        let k = key_id.to_owned();
        self.with_conn(move |c| key_rotation::get(c, &k)).await
    }

    async fn list_api_key_rotations(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<crate::key_rotation::KeyRotation>, StoreError> {
        let t = tenant_id.to_owned();
        self.with_conn(move |c| key_rotation::list(c, &t)).await
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
        let (tid, f, b) = (tenant_id.to_owned(), filter.clone(), buckets.to_vec());
        let now = cistern_core::to_millis(time::OffsetDateTime::now_utc());
        let out = self
            .with_conn(move |c| rollups::ci_health(c, &tid, &f, since, until, &b, now))
            .await?;
        Ok(out.map(|(whole, series, pending)| {
            if pending {
                self.spawn_refresh();
            }
            (whole, series)
        }))
    }

    async fn refresh_rollups(&self) -> Result<(), StoreError> {
        refresh_all(&self.writer).await
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let k = key.to_owned();
        self.with_conn(move |c| admin::meta_get(c, &k)).await
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let (k, v) = (key.to_owned(), value.to_owned());
        self.with_conn(move |c| admin::meta_init(c, &k, &v)).await
    }

    async fn all_sealed_secrets(&self) -> Result<Vec<SealedSecret>, StoreError> {
        self.with_conn(rekey::all_sealed_secrets).await
    }

    async fn reseal_secrets(
        &self,
        resealed: Vec<ResealedSecret>,
        check_key: &str,
        check_value: &str,
    ) -> Result<(), StoreError> {
        let (k, v) = (check_key.to_owned(), check_value.to_owned());
        self.with_conn(move |c| rekey::reseal_secrets(c, &resealed, &k, &v))
            .await
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

    fn stats(&self) -> StoreStats {
        let capacity = self.writer.max_capacity() as u64;
        StoreStats {
            queue_depth: capacity.saturating_sub(self.writer.capacity() as u64),
            queue_capacity: capacity,
            writer: self.writer_stats.snapshot(),
            pool_size: self.reads.size as u64,
            pool_idle: self.reads.idle() as u64,
        }
    }

    async fn outbox_depth(&self, now: time::OffsetDateTime) -> Result<OutboxDepth, StoreError> {
        let now = cistern_core::to_millis(now);
        self.with_conn(move |c| {
            let (pending, due): (i64, Option<i64>) = c
                .prepare_cached(
                    "SELECT COUNT(*), SUM(CASE WHEN next_attempt_at <= ?1 THEN 1 ELSE 0 END)
                     FROM deliveries WHERE status = 'pending'",
                )?
                .query_row([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(OutboxDepth {
                pending: pending.max(0) as u64,
                due: due.unwrap_or(0).max(0) as u64,
            })
        })
        .await
    }

    async fn prune_events(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let before = cistern_core::to_millis(before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // On the writer thread, inside its group commit: never waiting for the write lock, and
        // a bounded batch only delays the writes queued behind it by its own few milliseconds.
        self.in_writer(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM events WHERE rowid IN
                       (SELECT rowid FROM events WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
                )?
                .execute(params![before, limit])?;
            Ok(n as u64)
        })
        .await
    }

    async fn prune_deliveries(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<PrunedDeliveries, StoreError> {
        let before = cistern_core::to_millis(before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.in_writer(move |c| {
            let ids: Vec<String> = c
                .prepare_cached(
                    "SELECT id FROM deliveries WHERE status <> 'pending'
                       AND COALESCE(last_attempt_at, created_at) < ?1 LIMIT ?2",
                )?
                .query_map(params![before, limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = PrunedDeliveries::default();
            let mut attempts = c.prepare_cached("DELETE FROM delivery_attempts WHERE delivery_id = ?1")?;
            let mut deliveries = c.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?;
            for id in &ids {
                out.attempts += attempts.execute([id])? as u64;
                out.deliveries += deliveries.execute([id])? as u64;
            }
            out.messages = c
                .prepare_cached(
                    "DELETE FROM outbound_messages WHERE id IN
                       (SELECT m.id FROM outbound_messages m WHERE m.created_at < ?1
                          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id) LIMIT ?2)",
                )?
                .execute(params![before, limit])? as u64;
            Ok(out)
        })
        .await
    }

    async fn create_trigger(&self, t: &Trigger) -> Result<(), StoreError> {
        let t = t.clone();
        self.in_writer(move |c| triggers::create_trigger(c, &t))
            .await
    }

    async fn list_triggers(&self, tenant_id: &str) -> Result<Vec<Trigger>, StoreError> {
        let t = tenant_id.to_owned();
        self.with_conn(move |c| triggers::list_triggers(c, &t))
            .await
    }

    async fn get_trigger(&self, tenant_id: &str, id: &str) -> Result<Option<Trigger>, StoreError> {
        let (t, i) = (tenant_id.to_owned(), id.to_owned());
        self.with_conn(move |c| triggers::get_trigger(c, &t, &i))
            .await
    }

    async fn find_trigger(
        &self,
        tenant_id: &str,
        key: &TriggerKey,
    ) -> Result<Option<Trigger>, StoreError> {
        let (t, k) = (tenant_id.to_owned(), key.clone());
        self.with_conn(move |c| triggers::find_trigger(c, &t, &k))
            .await
    }

    async fn update_trigger(&self, t: &Trigger) -> Result<bool, StoreError> {
        let t = t.clone();
        self.in_writer(move |c| triggers::update_trigger(c, &t))
            .await
    }

    async fn set_trigger_token(
        &self,
        tenant_id: &str,
        id: &str,
        token_hash: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (t, i, h) = (tenant_id.to_owned(), id.to_owned(), token_hash.to_owned());
        self.in_writer(move |c| triggers::set_trigger_token(c, &t, &i, &h, now))
            .await
    }

    async fn delete_trigger(
        &self,
        tenant_id: &str,
        id: &str,
        now: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (t, i) = (tenant_id.to_owned(), id.to_owned());
        self.in_writer(move |c| triggers::delete_trigger(c, &t, &i, now))
            .await
    }

    async fn create_trigger_event(&self, e: &NewTriggerEvent) -> Result<(), StoreError> {
        let e = e.clone();
        let pending = e.state == DispatchState::Pending;
        self.in_writer(move |c| triggers::create_event(c, &e))
            .await?;
        if pending {
            self.signal.notify_one();
        }
        Ok(())
    }

    async fn trigger_event(&self, id: &str) -> Result<Option<TriggerEvent>, StoreError> {
        let i = id.to_owned();
        self.with_conn(move |c| triggers::get_event(c, &i)).await
    }

    async fn list_trigger_events(
        &self,
        tenant_id: &str,
        trigger_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TriggerEvent>, StoreError> {
        let (t, tr) = (tenant_id.to_owned(), trigger_id.map(str::to_owned));
        self.with_conn(move |c| triggers::list_events(c, &t, tr.as_deref(), limit))
            .await
    }

    async fn claim_dispatches(
        &self,
        req: &ClaimRequest,
        expire_before: time::OffsetDateTime,
    ) -> Result<Vec<ClaimedDispatch>, StoreError> {
        let req = req.clone();
        self.in_writer(move |c| triggers::claim(c, &req, expire_before))
            .await
    }

    async fn record_dispatches(
        &self,
        records: &[DispatchRecord],
        now: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.in_writer(move |c| triggers::record(c, &records, now))
            .await
    }

    async fn release_dispatches(&self, token: &str, ids: &[String]) -> Result<(), StoreError> {
        let (t, ids) = (token.to_owned(), ids.to_vec());
        self.in_writer(move |c| triggers::release(c, &t, &ids))
            .await
    }

    async fn create_session(
        &self,
        s: &crate::sessions::DashboardSession,
    ) -> Result<(), StoreError> {
        let s = s.clone();
        self.in_writer(move |c| sessions::create(c, &s)).await
    }

    async fn session_by_hash(
        &self,
        id_hash: &str,
    ) -> Result<Option<crate::sessions::DashboardSession>, StoreError> {
        let h = id_hash.to_owned();
        self.with_conn(move |c| sessions::by_hash(c, &h)).await
    }

    async fn touch_session(
        &self,
        id_hash: &str,
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let h = id_hash.to_owned();
        self.in_writer(move |c| sessions::touch(c, &h, at)).await
    }

    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let h = id_hash.to_owned();
        self.in_writer(move |c| sessions::end(c, &h)).await
    }

    async fn end_sessions_of_key(&self, key_id: &str) -> Result<u64, StoreError> {
        let k = key_id.to_owned();
        self.in_writer(move |c| sessions::end_of_key(c, &k)).await
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

impl SqliteStore {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What an online backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Pages of the copy.
    pub pages: u64,
    /// Bytes of the copy.
    pub bytes: u64,
    /// `PRAGMA quick_check` of the copy: `ok` when sound.
    pub check: String,
}

/// Copies the SQLite database at `from` to the new file `to` with SQLite's online backup API, while
/// other connections (a running `cistern serve`) keep writing: the copy is one consistent
/// snapshot (the whole database in one step, under a WAL read lock that never blocks writers).
/// The copy is written beside `to` and renamed into place only once complete and checked.
pub fn backup(from: &Path, to: &Path) -> Result<BackupReport, StoreError> {
    if !from.exists() {
        return Err(StoreError::NotFound(format!(
            "no SQLite database at {}",
            from.display()
        )));
    }
    if to.exists() {
        return Err(StoreError::Conflict(format!(
            "{} already exists; name a new file",
            to.display()
        )));
    }
    let src = Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(std::time::Duration::from_secs(10))?;
    let dir = to
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let result = (|| {
        // A copy holds what the database holds: 0600 as well.
        private_files(&partial)?;
        let mut dst = Connection::open(&partial)?;
        {
            let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
            // -1: every page in one step, so the copy is one snapshot even while others write
            // (a copy in several steps restarts whenever another connection writes).
            loop {
                match b.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => continue,
                    rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked => {
                        std::thread::sleep(std::time::Duration::from_millis(50))
                    }
                    _ => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            }
        }
        let check: String = dst.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        let pages: i64 = dst.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let page_size: i64 = dst.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        // The copy keeps the source's WAL mode; checkpoint so the file alone is the database.
        dst.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        drop(dst);
        Ok::<_, StoreError>(BackupReport {
            pages: pages.max(0) as u64,
            bytes: (pages * page_size).max(0) as u64,
            check,
        })
    })();
    let report = match result {
        Ok(r) if r.check == "ok" => r,
        Ok(r) => {
            let _ = std::fs::remove_file(&partial);
            return Err(StoreError::Backend(format!(
                "the copy failed its integrity check: {}",
                r.check
            )));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
    }
    std::fs::rename(&partial, to).map_err(|e| {
        StoreError::Backend(format!("cannot move the copy to {}: {e}", to.display()))
    })?;
    Ok(report)
}
