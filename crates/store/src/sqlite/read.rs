//! Reads of the SQLite store (run on pooled connections inside blocking tasks).

use cistern_core::{from_millis, to_millis, InstanceView, PipelineView, Run, RunResult, Stage};
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql};

use crate::*;

pub(super) const RUN_COLS: &str = "r.id, r.run_key, r.build_number, r.execution_id, r.result, r.source_result, r.started_at, r.finished_at,
    r.duration_ms, r.triggered_by, r.branch, r.repo_url, r.ci, r.cd, r.environment, r.cfr_status, r.web_url, r.job_type,
    r.source, r.event_id, r.detail, r.log, r.log_truncated, r.received_at, r.updated_at,
    p.id, p.full_name, p.name, p.qualified_name, p.project, p.module, i.guid, i.name, i.url, i.kind";

const RUN_FROM: &str =
    "FROM runs r JOIN pipelines p ON p.id = r.pipeline_id JOIN instances i ON i.id = r.instance_id";

fn run_row(row: &Row<'_>) -> rusqlite::Result<Run> {
    let result: String = row.get(4)?;
    let detail: String = row.get(20)?;
    let detail: RunDetail = serde_json::from_str(&detail).unwrap_or_default();
    Ok(Run {
        id: row.get(0)?,
        run_key: row.get(1)?,
        build_number: row.get(2)?,
        execution_id: row.get(3)?,
        result: RunResult::from_normalized(&result).unwrap_or(RunResult::Error),
        source_result: row.get(5)?,
        started_at: from_millis(row.get(6)?),
        finished_at: row.get::<_, Option<i64>>(7)?.map(from_millis),
        duration_ms: row.get(8)?,
        triggered_by: row.get(9)?,
        branch: row.get(10)?,
        repo_url: row.get(11)?,
        ci: row.get(12)?,
        cd: row.get(13)?,
        environment: row.get(14)?,
        cfr_status: row.get(15)?,
        web_url: row.get(16)?,
        job_type: row.get(17)?,
        source: row.get(18)?,
        event_id: row.get(19)?,
        repo: detail.repo,
        commits: detail.commits,
        params: detail.params,
        artifacts: detail.artifacts,
        trigger_chain: detail.trigger_chain,
        themes: detail.themes,
        custom_fields: detail.custom_fields,
        log: row.get(21)?,
        log_truncated: row.get(22)?,
        received_at: from_millis(row.get(23)?),
        updated_at: from_millis(row.get(24)?),
        pipeline: PipelineView {
            id: row.get(25)?,
            full_name: row.get(26)?,
            name: row.get(27)?,
            qualified_name: row.get(28)?,
            project: row.get(29)?,
            module: row.get(30)?,
        },
        instance: InstanceView {
            guid: row.get(31)?,
            name: row.get(32)?,
            url: row.get(33)?,
            kind: row.get(34)?,
        },
        stages: Vec::new(),
    })
}

pub(super) fn list_runs(
    c: &Connection,
    tenant_id: &str,
    f: &RunFilter,
    page: &PageRequest,
) -> Result<Page<Run>, StoreError> {
    let mut sql = format!("SELECT {RUN_COLS} {RUN_FROM} WHERE r.tenant_id = ?");
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(tenant_id.to_owned())];
    if let Some(p) = &f.pipeline {
        sql.push_str(" AND (p.full_name = ? OR p.name = ?)");
        args.push(Box::new(p.clone()));
        args.push(Box::new(p.clone()));
    }
    if let Some(r) = f.result {
        sql.push_str(" AND r.result = ?");
        args.push(Box::new(r.as_str()));
    }
    if let Some(b) = &f.branch {
        sql.push_str(" AND r.branch = ?");
        args.push(Box::new(b.clone()));
    }
    if let Some(i) = &f.instance {
        sql.push_str(" AND i.guid = ?");
        args.push(Box::new(i.clone()));
    }
    if let Some(t) = f.since {
        sql.push_str(" AND r.started_at >= ?");
        args.push(Box::new(to_millis(t)));
    }
    if let Some(t) = f.until {
        sql.push_str(" AND r.started_at < ?");
        args.push(Box::new(to_millis(t)));
    }
    if let Some(cur) = &page.cursor {
        let (ms, id) = cursor::decode(cur)?;
        sql.push_str(" AND (r.started_at < ? OR (r.started_at = ? AND r.id < ?))");
        args.push(Box::new(ms));
        args.push(Box::new(ms));
        args.push(Box::new(id));
    }
    sql.push_str(" ORDER BY r.started_at DESC, r.id DESC LIMIT ?");
    args.push(Box::new(page.limit as i64 + 1));
    let mut st = c.prepare_cached(&sql)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let mut items = st
        .query_map(refs.as_slice(), run_row)?
        .collect::<Result<Vec<_>, _>>()?;
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

pub(super) fn get_run(
    c: &Connection,
    tenant_id: &str,
    run_id: &str,
) -> Result<Option<Run>, StoreError> {
    let run = c
        .prepare_cached(&format!(
            "SELECT {RUN_COLS} {RUN_FROM} WHERE r.tenant_id = ?1 AND r.id = ?2"
        ))?
        .query_row(params![tenant_id, run_id], run_row)
        .optional()?;
    let Some(mut run) = run else { return Ok(None) };
    let mut st = c.prepare_cached(
        "SELECT idx, parent_idx, name, description, result, source_result, state, started_at, duration_ms, log, log_truncated, url
         FROM stages WHERE run_id = ?1 ORDER BY idx",
    )?;
    let rows = st
        .query_map([&run.id], |row| {
            let result: Option<String> = row.get(4)?;
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Option<i64>>(1)?,
                Stage {
                    name: row.get(2)?,
                    description: row.get(3)?,
                    result: result.as_deref().and_then(RunResult::from_normalized),
                    source_result: row.get(5)?,
                    state: row.get(6)?,
                    started_at: row.get::<_, Option<i64>>(7)?.map(from_millis),
                    duration_ms: row.get(8)?,
                    log: row.get(9)?,
                    log_truncated: row.get(10)?,
                    url: row.get(11)?,
                    steps: Vec::new(),
                },
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    run.stages = stages_from_rows(rows);
    Ok(Some(run))
}

pub(super) fn list_pipelines(
    c: &Connection,
    tenant_id: &str,
) -> Result<Vec<PipelineSummary>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT p.id, p.full_name, p.name, p.qualified_name, p.project, p.module, i.guid, i.name,
            (SELECT COUNT(*) FROM runs r WHERE r.pipeline_id = p.id),
            (SELECT r.result FROM runs r WHERE r.pipeline_id = p.id ORDER BY r.started_at DESC, r.id DESC LIMIT 1),
            (SELECT MAX(r.started_at) FROM runs r WHERE r.pipeline_id = p.id), p.config_changed_at
         FROM pipelines p JOIN instances i ON i.id = p.instance_id
         WHERE p.tenant_id = ?1 ORDER BY p.full_name, p.id",
    )?;
    let rows = st
        .query_map([tenant_id], |row| {
            let last: Option<String> = row.get(9)?;
            Ok(PipelineSummary {
                id: row.get(0)?,
                full_name: row.get(1)?,
                name: row.get(2)?,
                qualified_name: row.get(3)?,
                project: row.get(4)?,
                module: row.get(5)?,
                instance_guid: row.get(6)?,
                instance_name: row.get(7)?,
                runs: row.get(8)?,
                last_result: last.as_deref().and_then(RunResult::from_normalized),
                last_run_at: row.get::<_, Option<i64>>(10)?.map(from_millis),
                config_changed_at: row.get::<_, Option<i64>>(11)?.map(from_millis),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn list_instances(c: &Connection, tenant_id: &str) -> Result<Vec<Instance>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT id, guid, name, url, kind, integration_id, created_at, last_seen_at, last_heartbeat_at, details FROM instances WHERE tenant_id = ?1 ORDER BY created_at, id",
    )?;
    let rows = st
        .query_map([tenant_id], |row| {
            Ok(Instance {
                id: row.get(0)?,
                guid: row.get(1)?,
                name: row.get(2)?,
                url: row.get(3)?,
                kind: row.get(4)?,
                integration_id: row.get(5)?,
                created_at: from_millis(row.get(6)?),
                last_seen_at: row.get::<_, Option<i64>>(7)?.map(from_millis),
                last_heartbeat_at: row.get::<_, Option<i64>>(8)?.map(from_millis),
                details: row
                    .get::<_, Option<String>>(9)?
                    .and_then(|d| serde_json::from_str(&d).ok()),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

const EVENT_COLS: &str = "id, received_at, endpoint, dialect, request_type, status, http_status, errors, run_ids, content_type, body_size, body, body_truncated, body_codec, source_id";

fn event_row(row: &Row<'_>, with_body: bool) -> rusqlite::Result<EventView> {
    let status: String = row.get(5)?;
    let errors: Option<String> = row.get(7)?;
    let run_ids: Option<String> = row.get(8)?;
    let body: Option<Vec<u8>> = if with_body { row.get(11)? } else { None };
    let codec: Option<String> = row.get(13)?;
    let accepted = status == "accepted";
    let notes: Vec<cistern_core::FieldError> = errors
        .and_then(|e| serde_json::from_str(&e).ok())
        .unwrap_or_default();
    Ok(EventView {
        id: row.get(0)?,
        received_at: from_millis(row.get(1)?),
        endpoint: row.get(2)?,
        dialect: row.get(3)?,
        request_type: row.get(4)?,
        status: if accepted {
            EventStatus::Accepted
        } else {
            EventStatus::Rejected
        },
        http_status: row.get(6)?,
        // One column keeps the notes of an event: why it was refused, or the warnings it was
        // accepted with.
        errors: if accepted { Vec::new() } else { notes.clone() },
        warnings: if accepted { notes } else { Vec::new() },
        run_ids: run_ids
            .and_then(|e| serde_json::from_str(&e).ok())
            .unwrap_or_default(),
        content_type: row.get(9)?,
        body_size: row.get(10)?,
        body: body.map(|b| String::from_utf8_lossy(&decode_body(b, codec.as_deref())).into_owned()),
        body_truncated: row.get(12)?,
        source_id: row.get(14)?,
    })
}

pub(super) fn list_events(
    c: &Connection,
    tenant_id: &str,
    f: &EventFilter,
    page: &PageRequest,
) -> Result<Page<EventView>, StoreError> {
    let mut sql = format!("SELECT {EVENT_COLS} FROM events WHERE tenant_id = ?");
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(tenant_id.to_owned())];
    if let Some(s) = f.status {
        sql.push_str(" AND status = ?");
        args.push(Box::new(s.as_str()));
    }
    if let Some(src) = &f.source_id {
        sql.push_str(" AND source_id = ?");
        args.push(Box::new(src.clone()));
    }
    if let Some(t) = f.since {
        sql.push_str(" AND received_at >= ?");
        args.push(Box::new(to_millis(t)));
    }
    if let Some(t) = f.until {
        sql.push_str(" AND received_at < ?");
        args.push(Box::new(to_millis(t)));
    }
    if let Some(cur) = &page.cursor {
        let (ms, id) = cursor::decode(cur)?;
        sql.push_str(" AND (received_at < ? OR (received_at = ? AND id < ?))");
        args.push(Box::new(ms));
        args.push(Box::new(ms));
        args.push(Box::new(id));
    }
    sql.push_str(" ORDER BY received_at DESC, id DESC LIMIT ?");
    args.push(Box::new(page.limit as i64 + 1));
    let mut st = c.prepare_cached(&sql)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let mut items = st
        .query_map(refs.as_slice(), |r| event_row(r, true))?
        .collect::<Result<Vec<_>, _>>()?;
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

pub(super) fn get_event(
    c: &Connection,
    tenant_id: &str,
    event_id: &str,
) -> Result<Option<EventView>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {EVENT_COLS} FROM events WHERE tenant_id = ?1 AND id = ?2"
    ))?
    .query_row(params![tenant_id, event_id], |r| event_row(r, true))
    .optional()?)
}
