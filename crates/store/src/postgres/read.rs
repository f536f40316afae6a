//! Reads of the PostgreSQL store, straight on the pool. Same results, order, filters and cursors as
//! the SQLite store's reads.

use cistern_core::{from_millis, to_millis, InstanceView, PipelineView, Run, RunResult, Stage};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::*;

const RUN_COLS: &str = "r.id, r.run_key, r.build_number, r.execution_id, r.result, r.source_result, r.started_at, r.finished_at,
    r.duration_ms, r.triggered_by, r.branch, r.repo_url, r.ci, r.cd, r.environment, r.cfr_status, r.web_url, r.job_type,
    r.source, r.event_id, r.detail, r.log, r.log_truncated, r.received_at, r.updated_at,
    p.id, p.full_name, p.name, p.qualified_name, p.project, p.module, i.guid, i.name, i.url, i.kind";

const RUN_FROM: &str =
    "FROM runs r JOIN pipelines p ON p.id = r.pipeline_id JOIN instances i ON i.id = r.instance_id";

fn run_row(row: &PgRow) -> Result<Run, sqlx::Error> {
    let result: String = row.try_get(4)?;
    let detail: String = row.try_get(20)?;
    let detail: RunDetail = serde_json::from_str(&detail).unwrap_or_default();
    Ok(Run {
        id: row.try_get(0)?,
        run_key: row.try_get(1)?,
        build_number: row.try_get(2)?,
        execution_id: row.try_get(3)?,
        result: RunResult::from_normalized(&result).unwrap_or(RunResult::Error),
        source_result: row.try_get(5)?,
        started_at: from_millis(row.try_get(6)?),
        finished_at: row.try_get::<Option<i64>, _>(7)?.map(from_millis),
        duration_ms: row.try_get(8)?,
        triggered_by: row.try_get(9)?,
        branch: row.try_get(10)?,
        repo_url: row.try_get(11)?,
        ci: row.try_get(12)?,
        cd: row.try_get(13)?,
        environment: row.try_get(14)?,
        cfr_status: row.try_get(15)?,
        web_url: row.try_get(16)?,
        job_type: row.try_get(17)?,
        source: row.try_get(18)?,
        event_id: row.try_get(19)?,
        repo: detail.repo,
        commits: detail.commits,
        params: detail.params,
        artifacts: detail.artifacts,
        trigger_chain: detail.trigger_chain,
        themes: detail.themes,
        custom_fields: detail.custom_fields,
        log: row.try_get(21)?,
        log_truncated: row.try_get(22)?,
        received_at: from_millis(row.try_get(23)?),
        updated_at: from_millis(row.try_get(24)?),
        pipeline: PipelineView {
            id: row.try_get(25)?,
            full_name: row.try_get(26)?,
            name: row.try_get(27)?,
            qualified_name: row.try_get(28)?,
            project: row.try_get(29)?,
            module: row.try_get(30)?,
        },
        instance: InstanceView {
            guid: row.try_get(31)?,
            name: row.try_get(32)?,
            url: row.try_get(33)?,
            kind: row.try_get(34)?,
        },
        stages: Vec::new(),
    })
}

pub(super) async fn list_runs(
    pool: &PgPool,
    tenant_id: &str,
    f: &RunFilter,
    page: &PageRequest,
) -> Result<Page<Run>, StoreError> {
    let mut q =
        QueryBuilder::<Postgres>::new(format!("SELECT {RUN_COLS} {RUN_FROM} WHERE r.tenant_id = "));
    q.push_bind(tenant_id.to_owned());
    if let Some(p) = &f.pipeline {
        q.push(" AND (p.full_name = ")
            .push_bind(p.clone())
            .push(" OR p.name = ")
            .push_bind(p.clone())
            .push(")");
    }
    if let Some(r) = f.result {
        q.push(" AND r.result = ").push_bind(r.as_str());
    }
    if let Some(b) = &f.branch {
        q.push(" AND r.branch = ").push_bind(b.clone());
    }
    if let Some(i) = &f.instance {
        q.push(" AND i.guid = ").push_bind(i.clone());
    }
    if let Some(t) = f.since {
        q.push(" AND r.started_at >= ").push_bind(to_millis(t));
    }
    if let Some(t) = f.until {
        q.push(" AND r.started_at < ").push_bind(to_millis(t));
    }
    if let Some(cur) = &page.cursor {
        let (ms, id) = cursor::decode(cur)?;
        q.push(" AND (r.started_at, r.id) < (")
            .push_bind(ms)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY r.started_at DESC, r.id DESC LIMIT ")
        .push_bind(page.limit as i64 + 1);
    let rows = q.build().fetch_all(pool).await?;
    let mut items = rows.iter().map(run_row).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > page.limit {
        items.truncate(page.limit);
        items
            .last()
            .map(|r| cursor::encode(to_millis(r.started_at), &r.id))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

pub(super) async fn get_run(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    run_id: &str,
) -> Result<Option<Run>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLS} {RUN_FROM} WHERE r.tenant_id = $1 AND r.id = $2"
    ))
    .bind(tenant_id)
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(mut run) = row.as_ref().map(run_row).transpose()? else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT idx, parent_idx, name, description, result, source_result, state, started_at, duration_ms, log, log_truncated, url
         FROM stages WHERE run_id = $1 ORDER BY idx",
    )
    .bind(&run.id)
    .fetch_all(&mut *conn)
    .await?;
    let rows = rows
        .iter()
        .map(|row| {
            let result: Option<String> = row.try_get(4)?;
            Ok((
                row.try_get::<i64, _>(0)?,
                row.try_get::<Option<i64>, _>(1)?,
                Stage {
                    name: row.try_get(2)?,
                    description: row.try_get(3)?,
                    result: result.as_deref().and_then(RunResult::from_normalized),
                    source_result: row.try_get(5)?,
                    state: row.try_get(6)?,
                    started_at: row.try_get::<Option<i64>, _>(7)?.map(from_millis),
                    duration_ms: row.try_get(8)?,
                    log: row.try_get(9)?,
                    log_truncated: row.try_get(10)?,
                    url: row.try_get(11)?,
                    steps: Vec::new(),
                },
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    run.stages = stages_from_rows(rows);
    Ok(Some(run))
}

pub(super) async fn list_pipelines(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Vec<PipelineSummary>, StoreError> {
    let rows = sqlx::query(
        "SELECT p.id, p.full_name, p.name, p.qualified_name, p.project, p.module, i.guid, i.name,
            s.n, l.result, s.last, p.config_changed_at
         FROM pipelines p JOIN instances i ON i.id = p.instance_id
         CROSS JOIN LATERAL (SELECT COUNT(*) AS n, MAX(r.started_at) AS last FROM runs r WHERE r.pipeline_id = p.id) s
         LEFT JOIN LATERAL (SELECT r.result FROM runs r WHERE r.pipeline_id = p.id ORDER BY r.started_at DESC, r.id DESC LIMIT 1) l ON TRUE
         WHERE p.tenant_id = $1 ORDER BY p.full_name, p.id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let out = rows
        .iter()
        .map(|row| {
            let last: Option<String> = row.try_get(9)?;
            Ok(PipelineSummary {
                id: row.try_get(0)?,
                full_name: row.try_get(1)?,
                name: row.try_get(2)?,
                qualified_name: row.try_get(3)?,
                project: row.try_get(4)?,
                module: row.try_get(5)?,
                instance_guid: row.try_get(6)?,
                instance_name: row.try_get(7)?,
                runs: row.try_get(8)?,
                last_result: last.as_deref().and_then(RunResult::from_normalized),
                last_run_at: row.try_get::<Option<i64>, _>(10)?.map(from_millis),
                config_changed_at: row.try_get::<Option<i64>, _>(11)?.map(from_millis),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(out)
}

pub(super) async fn list_instances(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Vec<Instance>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, guid, name, url, kind, integration_id, created_at, last_seen_at, last_heartbeat_at, details
         FROM instances WHERE tenant_id = $1 ORDER BY created_at, id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let out = rows
        .iter()
        .map(|row| {
            Ok(Instance {
                id: row.try_get(0)?,
                guid: row.try_get(1)?,
                name: row.try_get(2)?,
                url: row.try_get(3)?,
                kind: row.try_get(4)?,
                integration_id: row.try_get(5)?,
                created_at: from_millis(row.try_get(6)?),
                last_seen_at: row.try_get::<Option<i64>, _>(7)?.map(from_millis),
                last_heartbeat_at: row.try_get::<Option<i64>, _>(8)?.map(from_millis),
                details: row
                    .try_get::<Option<String>, _>(9)?
                    .and_then(|d| serde_json::from_str(&d).ok()),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(out)
}

const EVENT_COLS: &str = "id, received_at, endpoint, dialect, request_type, status, http_status, errors, run_ids, content_type, body_size, body, body_truncated, body_codec, source_id";

fn event_row(row: &PgRow) -> Result<EventView, sqlx::Error> {
    let status: String = row.try_get(5)?;
    let http_status: i32 = row.try_get(6)?;
    let errors: Option<String> = row.try_get(7)?;
    let run_ids: Option<String> = row.try_get(8)?;
    let body: Option<Vec<u8>> = row.try_get(11)?;
    let codec: Option<String> = row.try_get(13)?;
    let accepted = status == "accepted";
    let notes: Vec<cistern_core::FieldError> = errors
        .and_then(|e| serde_json::from_str(&e).ok())
        .unwrap_or_default();
    Ok(EventView {
        id: row.try_get(0)?,
        received_at: from_millis(row.try_get(1)?),
        endpoint: row.try_get(2)?,
        dialect: row.try_get(3)?,
        request_type: row.try_get(4)?,
        status: if accepted {
            EventStatus::Accepted
        } else {
            EventStatus::Rejected
        },
        http_status: u16::try_from(http_status).map_err(|e| sqlx::Error::ColumnDecode {
            index: "http_status".into(),
            source: Box::new(e),
        })?,
        // One column keeps the notes of an event: why it was refused, or the warnings it was
        // accepted with.
        errors: if accepted { Vec::new() } else { notes.clone() },
        warnings: if accepted { notes } else { Vec::new() },
        run_ids: run_ids
            .and_then(|e| serde_json::from_str(&e).ok())
            .unwrap_or_default(),
        content_type: row.try_get(9)?,
        body_size: row.try_get(10)?,
        body: body.map(|b| String::from_utf8_lossy(&decode_body(b, codec.as_deref())).into_owned()),
        body_truncated: row.try_get(12)?,
        source_id: row.try_get(14)?,
    })
}

pub(super) async fn list_events(
    pool: &PgPool,
    tenant_id: &str,
    f: &EventFilter,
    page: &PageRequest,
) -> Result<Page<EventView>, StoreError> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {EVENT_COLS} FROM events WHERE tenant_id = "
    ));
    q.push_bind(tenant_id.to_owned());
    if let Some(s) = f.status {
        q.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(src) = &f.source_id {
        q.push(" AND source_id = ").push_bind(src.clone());
    }
    if let Some(t) = f.since {
        q.push(" AND received_at >= ").push_bind(to_millis(t));
    }
    if let Some(t) = f.until {
        q.push(" AND received_at < ").push_bind(to_millis(t));
    }
    if let Some(cur) = &page.cursor {
        let (ms, id) = cursor::decode(cur)?;
        q.push(" AND (received_at, id) < (")
            .push_bind(ms)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY received_at DESC, id DESC LIMIT ")
        .push_bind(page.limit as i64 + 1);
    let rows = q.build().fetch_all(pool).await?;
    let mut items = rows.iter().map(event_row).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > page.limit {
        items.truncate(page.limit);
        items
            .last()
            .map(|e| cursor::encode(to_millis(e.received_at), &e.id))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

pub(super) async fn get_event(
    pool: &PgPool,
    tenant_id: &str,
    event_id: &str,
) -> Result<Option<EventView>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLS} FROM events WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(event_row).transpose()?)
}
