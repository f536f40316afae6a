//! `cistern migrate-data`: copies a whole SQLite database into PostgreSQL, table by table, in
//! batches, resumable after a kill, then proves the copy by comparing each table's row count and
//! an order-independent checksum of its rows on both sides.
//!
//! The copier is generic over the schema on purpose: both stores are migrated by the same binary
//! first, so they hold the same tables and columns, and every table a later migration adds is
//! copied without this file changing. Values are mapped by the target column's type (the two
//! schemas differ only there: SQLite keeps booleans as integers).

use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Row, TypeInfo};

use crate::{StoreError, StoreSettings};

/// Where the copy's progress is kept, in the target, in the same transaction as each batch.
const PROGRESS: &str = "cistern_copy_progress";

/// Tables copied first, parents before children (PostgreSQL checks these foreign keys); the
/// others follow in name order.
const FIRST: [&str; 5] = ["tenants", "api_keys", "instances", "pipelines", "runs"];

/// Tables whose rows are made by triggers in each database, never copied.
const TRANSIENT: [&str; 1] = ["ci_days_dirty"];

/// How a copy runs.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Continue a copy that was stopped, instead of refusing a target that holds data.
    pub resume: bool,
    /// Rows per transaction.
    pub batch_rows: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            resume: false,
            batch_rows: 2_000,
        }
    }
}

/// Where a copy stands, for a progress bar.
#[derive(Debug, Clone)]
pub struct CopyProgress {
    /// The table being copied.
    pub table: String,
    /// Its rows copied so far.
    pub done: u64,
    /// Its rows in the source.
    pub total: u64,
    /// Rows copied so far over all tables, and rows to copy in all.
    pub all_done: u64,
    /// Rows of all tables in the source.
    pub all_total: u64,
}

/// One table, compared after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    /// Table name.
    pub table: String,
    /// Rows in the source and in the target.
    pub source_rows: u64,
    /// Rows in the target.
    pub target_rows: u64,
    /// Order-independent checksums of the rows' values.
    pub source_checksum: String,
    /// The target's.
    pub target_checksum: String,
}

impl TableCheck {
    /// Same rows, same values.
    pub fn matches(&self) -> bool {
        self.source_rows == self.target_rows && self.source_checksum == self.target_checksum
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

struct Table {
    name: String,
    columns: Vec<String>,
    /// Target column types (`bigint`, `boolean`, `text`, `bytea`, …), by column.
    types: Vec<String>,
    /// Columns that order the rows for keyset pages: the primary key, else the rowid.
    key: Vec<String>,
}

fn sqlite_columns(c: &Connection, table: &str) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let mut stmt = c.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let mut cols: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))?
        .collect::<Result<_, _>>()?;
    let names = cols.iter().map(|(n, _)| n.clone()).collect();
    cols.retain(|(_, pk)| *pk > 0);
    cols.sort_by_key(|(_, pk)| *pk);
    let key = cols.into_iter().map(|(n, _)| n).collect();
    Ok((names, key))
}

async fn target_tables(pool: &PgPool) -> Result<Vec<(String, String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// The tables to copy, in copy order, with their columns checked to be the same on both sides.
async fn plan(src: &Connection, pool: &PgPool) -> Result<Vec<Table>, StoreError> {
    let mut names: Vec<String> = src
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    names.sort_by_key(|n| {
        (
            FIRST.iter().position(|f| f == n).unwrap_or(FIRST.len()),
            n.clone(),
        )
    });
    let target = target_tables(pool).await?;
    let mut out = Vec::new();
    // Bookkeeping that the target's own triggers write as rows arrive (marks of CI days to
    // rebuild): not copied, and not compared, since the copy itself makes the target's.
    names.retain(|n| !TRANSIENT.contains(&n.as_str()));
    for name in names {
        let (columns, key) = sqlite_columns(src, &name)?;
        let types: Vec<Option<String>> = columns
            .iter()
            .map(|c| {
                target
                    .iter()
                    .find(|(t, col, _)| *t == name && col == c)
                    .map(|(_, _, ty)| ty.clone())
            })
            .collect();
        let missing: Vec<&str> = columns
            .iter()
            .zip(&types)
            .filter(|(_, t)| t.is_none())
            .map(|(c, _)| c.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::Invalid(format!(
                "the target has no column {} of table {name}: are both databases migrated by this version of cistern?",
                missing.join(", ")
            )));
        }
        // A column only the target has must fill itself (a default, or NULL): it is left out of
        // the copy and of the comparison.
        let mut extra = Vec::new();
        for (_, col, _) in target
            .iter()
            .filter(|(t, col, _)| *t == name && !columns.contains(col))
        {
            let fills: bool = sqlx::query_scalar(
                "SELECT column_default IS NOT NULL OR is_nullable = 'YES'
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
            )
            .bind(&name)
            .bind(col)
            .fetch_one(pool)
            .await?;
            if !fills {
                extra.push(col.as_str());
            }
        }
        if !extra.is_empty() {
            return Err(StoreError::Invalid(format!(
                "the source has no column {} of table {name}: are both databases migrated by this version of cistern?",
                extra.join(", ")
            )));
        }
        out.push(Table {
            name,
            columns,
            types: types.into_iter().map(Option::unwrap_or_default).collect(),
            key: if key.is_empty() {
                vec!["rowid".into()]
            } else {
                key
            },
        });
    }
    Ok(out)
}

fn quote(c: &str) -> String {
    format!("\"{c}\"")
}

/// Rows that a freshly opened target holds before any copy: the bootstrap `default` tenant and
/// the master key's check value. Anything else means the target is in use.
async fn target_in_use(pool: &PgPool, tables: &[Table]) -> Result<Option<String>, StoreError> {
    for t in tables {
        let n: i64 = match t.name.as_str() {
            "tenants" => {
                sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE slug <> 'default'")
                    .fetch_one(pool)
                    .await?
            }
            "meta" => continue,
            _ => {
                let sql = format!("SELECT COUNT(*) FROM {}", quote(&t.name));
                sqlx::query_scalar(&sql).fetch_one(pool).await?
            }
        };
        if n > 0 {
            return Ok(Some(format!("table {} has {n} rows", t.name)));
        }
    }
    Ok(None)
}

fn bind_value<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ty: &str,
    v: SqlValue,
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let bad = |v: &SqlValue| {
        StoreError::Invalid(format!(
            "a value {v:?} does not fit a {ty} column of the target"
        ))
    };
    Ok(match (ty, v) {
        ("bigint", SqlValue::Null) => q.bind(None::<i64>),
        ("bigint", SqlValue::Integer(i)) => q.bind(i),
        ("integer", SqlValue::Null) => q.bind(None::<i32>),
        ("integer", SqlValue::Integer(i)) => {
            q.bind(i32::try_from(i).map_err(|_| bad(&SqlValue::Integer(i)))?)
        }
        ("smallint", SqlValue::Null) => q.bind(None::<i16>),
        ("smallint", SqlValue::Integer(i)) => {
            q.bind(i16::try_from(i).map_err(|_| bad(&SqlValue::Integer(i)))?)
        }
        ("boolean", SqlValue::Null) => q.bind(None::<bool>),
        ("boolean", SqlValue::Integer(i)) => q.bind(i != 0),
        ("double precision" | "real", SqlValue::Null) => q.bind(None::<f64>),
        ("double precision" | "real", SqlValue::Real(f)) => q.bind(f),
        ("double precision" | "real", SqlValue::Integer(i)) => q.bind(i as f64),
        ("bytea", SqlValue::Null) => q.bind(None::<Vec<u8>>),
        ("bytea", SqlValue::Blob(b)) => q.bind(b),
        ("bytea", SqlValue::Text(t)) => q.bind(t.into_bytes()),
        ("text", SqlValue::Null) => q.bind(None::<String>),
        ("text", SqlValue::Text(t)) => q.bind(t),
        ("text", SqlValue::Integer(i)) => q.bind(i.to_string()),
        ("text", SqlValue::Real(f)) => q.bind(f.to_string()),
        ("text", SqlValue::Blob(b)) => {
            q.bind(String::from_utf8(b).map_err(|e| bad(&SqlValue::Blob(e.into_bytes())))?)
        }
        (_, v) => return Err(bad(&v)),
    })
}

/// The canonical text of a value, the same on both sides (a boolean is `1`/`0` as SQLite keeps
/// it, bytes are hex).
fn canon_sqlite(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "\u{0}N".into(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => format!("{f:?}"),
        SqlValue::Text(t) => t.clone(),
        SqlValue::Blob(b) => hex(b),
    }
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn canon_pg(r: &PgRow, i: usize) -> Result<String, sqlx::Error> {
    let ty = r.column(i).type_info().name().to_ascii_uppercase();
    Ok(match ty.as_str() {
        "INT8" => r.try_get::<Option<i64>, _>(i)?.map(|v| v.to_string()),
        "INT4" => r.try_get::<Option<i32>, _>(i)?.map(|v| v.to_string()),
        "INT2" => r.try_get::<Option<i16>, _>(i)?.map(|v| v.to_string()),
        "BOOL" => r
            .try_get::<Option<bool>, _>(i)?
            .map(|v| if v { "1".into() } else { "0".into() }),
        "FLOAT8" | "FLOAT4" => r.try_get::<Option<f64>, _>(i)?.map(|v| format!("{v:?}")),
        "BYTEA" => r.try_get::<Option<Vec<u8>>, _>(i)?.map(|b| hex(&b)),
        _ => r.try_get::<Option<String>, _>(i)?,
    }
    .unwrap_or_else(|| "\u{0}N".into()))
}

/// Adds one row's hash to an order-independent sum.
fn add_row(sum: &mut u128, values: impl Iterator<Item = String>) {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.as_bytes());
        h.update([0x1f]);
    }
    let d = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&d[..16]);
    *sum = sum.wrapping_add(u128::from_be_bytes(first));
}

fn sqlite_summary(src: &Connection, t: &Table) -> Result<(u64, String), StoreError> {
    let cols: Vec<String> = t.columns.iter().map(|c| quote(c)).collect();
    let mut stmt = src.prepare(&format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        quote(&t.name)
    ))?;
    let mut rows = stmt.query([])?;
    let (mut n, mut sum) = (0u64, 0u128);
    while let Some(r) = rows.next()? {
        let mut vals = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            vals.push(canon_sqlite(&r.get::<_, SqlValue>(i)?));
        }
        add_row(&mut sum, vals.into_iter());
        n += 1;
    }
    Ok((n, format!("{sum:032x}")))
}

async fn pg_summary(pool: &PgPool, t: &Table) -> Result<(u64, String), StoreError> {
    use futures::TryStreamExt;
    let cols: Vec<String> = t.columns.iter().map(|c| quote(c)).collect();
    let sql = format!("SELECT {} FROM {}", cols.join(", "), quote(&t.name));
    let mut rows = sqlx::query(&sql).fetch(pool);
    let (mut n, mut sum) = (0u64, 0u128);
    while let Some(r) = rows.try_next().await? {
        let mut vals = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            vals.push(canon_pg(&r, i)?);
        }
        add_row(&mut sum, vals.into_iter());
        n += 1;
    }
    Ok((n, format!("{sum:032x}")))
}

/// Copies the SQLite database at `from` into the PostgreSQL database at `to` (both migrated to
/// this binary's schema first), then compares every table. Refuses a target that holds data
/// unless `opts.resume`; a resumed copy continues after the last committed batch of each table.
pub async fn sqlite_to_postgres(
    from: &Path,
    to: &str,
    opts: &CopyOptions,
    mut progress: impl FnMut(&CopyProgress),
) -> Result<Vec<TableCheck>, StoreError> {
    if !from.exists() {
        return Err(StoreError::Invalid(format!(
            "no SQLite database at {}",
            from.display()
        )));
    }
    // Both schemas to this binary's version (the source's hub must be stopped: a copy of a
    // database that is still being written would miss what comes after its snapshot).
    let settings = StoreSettings {
        pool_size: 1,
        ..StoreSettings::default()
    };
    drop(crate::sqlite::SqliteStore::open(from, &settings).await?);
    drop(crate::postgres::PgStore::open(to, &settings).await?);

    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // One snapshot for the whole copy and check.
    src.execute_batch("BEGIN")?;
    let opts_pg: PgConnectOptions = to
        .parse()
        .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(opts_pg.application_name("cistern migrate-data"))
        .await?;
    let tables = plan(&src, &pool).await?;

    let resuming: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1)",
    )
    .bind(PROGRESS)
    .fetch_one(&pool)
    .await?;
    if resuming && !opts.resume {
        return Err(StoreError::Invalid(
            "the target holds a copy that was stopped part-way: continue it with --resume".into(),
        ));
    }
    if !resuming {
        if let Some(why) = target_in_use(&pool, &tables).await? {
            return Err(StoreError::Invalid(format!(
                "the target database is not empty ({why}); copy into a new database, or continue a stopped copy with --resume"
            )));
        }
        let mut tx = pool.begin().await?;
        // The bootstrap rows of a freshly opened target give way to the source's own.
        sqlx::query("DELETE FROM tenants").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM meta").execute(&mut *tx).await?;
        let sql = format!(
            "CREATE TABLE {PROGRESS} (tbl TEXT PRIMARY KEY, last_key TEXT NOT NULL, rows BIGINT NOT NULL, done BOOLEAN NOT NULL)"
        );
        sqlx::query(&sql).execute(&mut *tx).await?;
        tx.commit().await?;
    }

    let mut totals = Vec::with_capacity(tables.len());
    for t in &tables {
        let n: i64 = src.query_row(
            &format!("SELECT COUNT(*) FROM {}", quote(&t.name)),
            [],
            |r| r.get(0),
        )?;
        totals.push(n.max(0) as u64);
    }
    let all_total: u64 = totals.iter().sum();
    let mut all_done = 0u64;

    for (t, total) in tables.iter().zip(&totals) {
        let sql = format!("SELECT last_key, rows, done FROM {PROGRESS} WHERE tbl = $1");
        let state: Option<(String, i64, bool)> = sqlx::query_as(&sql)
            .bind(&t.name)
            .fetch_optional(&pool)
            .await?;
        let (mut last, mut done) = match state {
            Some((_, rows, true)) => {
                all_done += rows.max(0) as u64;
                continue;
            }
            Some((key, rows, false)) => (
                Some(serde_json::from_str::<Vec<serde_json::Value>>(&key).map_err(backend)?),
                rows.max(0) as u64,
            ),
            None => (None, 0),
        };
        all_done += done;
        let per_batch = opts
            .batch_rows
            .clamp(1, (60_000 / t.columns.len().max(1)).max(1));
        let key_cols: Vec<String> = t.key.iter().map(|c| quote(c)).collect();
        let cols: Vec<String> = t.columns.iter().map(|c| quote(c)).collect();
        loop {
            let (where_clause, params): (String, Vec<SqlValue>) = match &last {
                None => (String::new(), Vec::new()),
                Some(k) => {
                    let marks: Vec<String> = (1..=k.len()).map(|i| format!("?{i}")).collect();
                    (
                        format!("WHERE ({}) > ({})", key_cols.join(", "), marks.join(", ")),
                        k.iter().map(json_to_sql).collect(),
                    )
                }
            };
            let sql = format!(
                "SELECT {}, {} FROM {} {where_clause} ORDER BY {} LIMIT {per_batch}",
                key_cols.join(", "),
                cols.join(", "),
                quote(&t.name),
                key_cols.join(", ")
            );
            let mut stmt = src.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
            let mut batch: Vec<Vec<SqlValue>> = Vec::new();
            let mut batch_last = None;
            while let Some(r) = rows.next()? {
                let mut key = Vec::with_capacity(key_cols.len());
                for i in 0..key_cols.len() {
                    key.push(sql_to_json(r.get::<_, SqlValue>(i)?));
                }
                let mut vals = Vec::with_capacity(cols.len());
                for i in 0..cols.len() {
                    vals.push(r.get::<_, SqlValue>(key_cols.len() + i)?);
                }
                batch.push(vals);
                batch_last = Some(key);
            }
            drop(rows);
            drop(stmt);
            let Some(batch_last) = batch_last else {
                break;
            };
            let n = batch.len() as u64;
            let mut tx = pool.begin().await?;
            let mut sql = format!(
                "INSERT INTO {} ({}) VALUES ",
                quote(&t.name),
                cols.join(", ")
            );
            let mut p = 1;
            for (i, _) in batch.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let marks: Vec<String> = (0..cols.len())
                    .map(|_| {
                        let m = format!("${p}");
                        p += 1;
                        m
                    })
                    .collect();
                sql.push('(');
                sql.push_str(&marks.join(", "));
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            let mut q = sqlx::query(&sql);
            for row in batch {
                for (v, ty) in row.into_iter().zip(&t.types) {
                    q = bind_value(q, ty, v)?;
                }
            }
            q.execute(&mut *tx).await?;
            done += n;
            let key_text = serde_json::to_string(&batch_last).map_err(backend)?;
            let save = format!(
                "INSERT INTO {PROGRESS} (tbl, last_key, rows, done) VALUES ($1, $2, $3, FALSE)
                 ON CONFLICT (tbl) DO UPDATE SET last_key = EXCLUDED.last_key, rows = EXCLUDED.rows"
            );
            sqlx::query(&save)
                .bind(&t.name)
                .bind(&key_text)
                .bind(done as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            all_done += n;
            last = Some(batch_last);
            progress(&CopyProgress {
                table: t.name.clone(),
                done,
                total: *total,
                all_done,
                all_total,
            });
        }
        let finish = format!(
            "INSERT INTO {PROGRESS} (tbl, last_key, rows, done) VALUES ($1, '[]', $2, TRUE)
             ON CONFLICT (tbl) DO UPDATE SET done = TRUE, rows = EXCLUDED.rows"
        );
        sqlx::query(&finish)
            .bind(&t.name)
            .bind(done as i64)
            .execute(&pool)
            .await?;
        progress(&CopyProgress {
            table: t.name.clone(),
            done,
            total: *total,
            all_done,
            all_total,
        });
    }

    let mut checks = Vec::with_capacity(tables.len());
    for t in &tables {
        let (source_rows, source_checksum) = sqlite_summary(&src, t)?;
        let (target_rows, target_checksum) = pg_summary(&pool, t).await?;
        checks.push(TableCheck {
            table: t.name.clone(),
            source_rows,
            target_rows,
            source_checksum,
            target_checksum,
        });
    }
    if checks.iter().all(TableCheck::matches) {
        let sql = format!("DROP TABLE {PROGRESS}");
        sqlx::query(&sql).execute(&pool).await?;
    }
    Ok(checks)
}

fn sql_to_json(v: SqlValue) -> serde_json::Value {
    match v {
        SqlValue::Null => serde_json::Value::Null,
        SqlValue::Integer(i) => i.into(),
        SqlValue::Real(f) => f.into(),
        SqlValue::Text(t) => t.into(),
        SqlValue::Blob(b) => serde_json::json!({ "hex": hex(&b) }),
    }
}

fn json_to_sql(v: &serde_json::Value) -> SqlValue {
    match v {
        serde_json::Value::Null => SqlValue::Null,
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(SqlValue::Integer)
            .unwrap_or_else(|| SqlValue::Real(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => SqlValue::Text(s.clone()),
        serde_json::Value::Object(o) => SqlValue::Blob(
            o.get("hex")
                .and_then(|h| h.as_str())
                .and_then(|h| hex::decode(h).ok())
                .unwrap_or_default(),
        ),
        other => SqlValue::Text(other.to_string()),
    }
}
