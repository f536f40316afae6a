//! `cistern import FILE.ndjson`: bulk backfill. Each line is one payload of an ingestion dialect
//! (SEI custom CI/CD, the Jenkins Job Reporter's generic-request envelope, an Allstacks job), or
//! `{"dialect": "...", "body": {...}}` naming it. Every line goes through the same parser and the
//! same rules as over HTTP and is written with the same store operation, many at a time so group
//! commit fills its batches; a refused line is reported with its number and reasons and the
//! import goes on.
//!
//! Resumable: after each committed stretch the number of lines done is written to a checkpoint
//! file beside the input (`FILE.ndjson.progress`, renamed into place). A second run starts after
//! it. Lines are written in order of completion but the checkpoint only moves past a line once
//! every line before it is committed, so an interrupted import never skips one; the few lines
//! replayed after an interruption update their runs instead of doubling them (a run's identity is
//! its pipeline and execution id or build number).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cistern_core::FieldError;
use cistern_dialects::{allstacks, propelo, sei, Inbound, ParseOptions, Rejection};
use cistern_store::{EventRecord, EventStatus, Store, StoreError, Tenant, WriteOp};
use futures::StreamExt;
use serde_json::Value;
use time::OffsetDateTime;

/// Which dialect the lines are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportDialect {
    /// Decided per line from its fields.
    Auto,
    /// Harness SEI custom CI/CD (Cistern's own reporter speaks it too).
    Sei,
    /// The Jenkins Job Reporter's `{request_type, payload}` envelope.
    Propelo,
    /// Allstacks CI/CD jobs.
    Allstacks,
}

impl ImportDialect {
    /// Parses a dialect name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "sei" | "native" | "custom-cicd" => Self::Sei,
            "propelo" | "jenkins" | "generic-requests" => Self::Propelo,
            "allstacks" => Self::Allstacks,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Sei => "sei",
            Self::Propelo => "propelo",
            Self::Allstacks => "allstacks",
        }
    }

    fn endpoint(self) -> &'static str {
        match self {
            Self::Allstacks => "/webhook/company/{company_id}/cicd_job",
            Self::Propelo => "/v1/generic-requests",
            _ => "/v1/custom-cicd",
        }
    }
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The NDJSON file.
    pub file: PathBuf,
    /// Tenant slug (created when missing).
    pub tenant: String,
    /// Dialect of the lines.
    pub dialect: ImportDialect,
    /// Writes in flight at once.
    pub concurrency: usize,
    /// Ignore an existing checkpoint and start from the first line.
    pub restart: bool,
    /// Cap of each stored log.
    pub max_log_bytes: usize,
}

/// A refused line.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedLine {
    /// 1-based line number.
    pub line: u64,
    /// The reasons.
    pub errors: Vec<FieldError>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportSummary {
    /// Lines skipped because an earlier run had done them (the checkpoint).
    pub resumed_after: u64,
    /// Lines read this time (blank lines included).
    pub lines: u64,
    /// Runs created.
    pub created: u64,
    /// Runs updated.
    pub updated: u64,
    /// Lines stored without a run (heartbeats, plugin error reports).
    pub other: u64,
    /// Refused lines (all counted; the first 100 kept).
    pub refused: u64,
    /// The first refused lines, with their reasons.
    pub first_refused: Vec<RefusedLine>,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read or the checkpoint written.
    #[error("{0}")]
    Io(String),
    /// The store failed (the checkpoint holds what was committed before).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The checkpoint file of an input.
pub fn checkpoint_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".progress");
    file.with_file_name(name)
}

fn read_checkpoint(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_checkpoint(path: &Path, done: u64) -> Result<(), ImportError> {
    let tmp = path.with_extension("progress.tmp");
    let io = |e: std::io::Error| ImportError::Io(format!("writing {}: {e}", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    writeln!(f, "{done}").map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The outcome of one line.
enum LineOutcome {
    Blank,
    Refused(Vec<FieldError>),
    Stored { created: u64, updated: u64 },
    Other,
}

/// Picks the dialect of a line that does not name one.
fn detect(v: &Value) -> ImportDialect {
    let Some(m) = v.as_object() else {
        return ImportDialect::Sei;
    };
    if m.contains_key("job_id") && m.contains_key("job_start_time") {
        return ImportDialect::Allstacks;
    }
    match m.get("request_type").and_then(Value::as_str) {
        Some(t) if t.starts_with("JenkinsPlugin") => ImportDialect::Propelo,
        _ => ImportDialect::Sei,
    }
}

/// Splits a `{"dialect", "body"}` wrapper; anything else is the payload itself.
fn unwrap_line(
    line: &[u8],
    fallback: ImportDialect,
) -> Result<(ImportDialect, Vec<u8>), Vec<FieldError>> {
    let needs_look =
        fallback == ImportDialect::Auto || line.windows(9).any(|w| w == b"\"dialect\"");
    if !needs_look {
        return Ok((fallback, line.to_vec()));
    }
    let v = cistern_dialects::json::parse(line, "").map_err(|e| vec![e])?;
    if let Some(m) = v.as_object() {
        if let (Some(d), Some(body)) = (m.get("dialect"), m.get("body")) {
            let name = d.as_str().unwrap_or_default();
            let dialect = match ImportDialect::parse(name) {
                Some(ImportDialect::Auto) | None => {
                    return Err(vec![FieldError::new(
                        "dialect",
                        format!("unknown dialect {d}; use sei, propelo or allstacks"),
                    )])
                }
                Some(d) => d,
            };
            let body = match body {
                Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            return Ok((dialect, body));
        }
    }
    let dialect = if fallback == ImportDialect::Auto {
        detect(&v)
    } else {
        fallback
    };
    Ok((dialect, line.to_vec()))
}

fn rejection(rej: Rejection) -> Vec<FieldError> {
    match rej {
        Rejection::Malformed(e) => vec![e],
        Rejection::Invalid(errs) => errs,
    }
}

async fn import_line(
    store: Arc<dyn Store>,
    tenant: Tenant,
    fallback: ImportDialect,
    opts: ParseOptions,
    line: Vec<u8>,
) -> Result<LineOutcome, StoreError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(LineOutcome::Blank);
    }
    let (dialect, body) = match unwrap_line(&line, fallback) {
        Ok(x) => x,
        Err(errs) => return Ok(LineOutcome::Refused(errs)),
    };
    let parsed = match dialect {
        ImportDialect::Allstacks => allstacks::parse(&body, &opts).map(|items| (items, None)),
        ImportDialect::Propelo => propelo::parse(&body, &opts).map(|req| {
            let items = match req.item {
                propelo::PropeloItem::JobRun(run) => vec![Inbound::Run(run)],
                _ => Vec::new(),
            };
            (items, Some(req.request_type))
        }),
        _ => sei::parse(&body, &opts).map(|items| (items, None)),
    };
    let (items, request_type) = match parsed {
        Ok(p) => p,
        Err(rej) => return Ok(LineOutcome::Refused(rejection(rej))),
    };
    let runs: Vec<_> = items
        .into_iter()
        .filter_map(|i| match i {
            Inbound::Run(r) => Some(*r),
            _ => None,
        })
        .collect();
    let had_runs = !runs.is_empty();
    let event = EventRecord {
        tenant_id: Some(tenant.id.clone()),
        endpoint: format!("import {}", dialect.endpoint()),
        dialect: dialect.name().to_owned(),
        request_type,
        content_type: Some("application/json".into()),
        body: Arc::from(body.as_slice()),
        received_at: OffsetDateTime::now_utc(),
        status: EventStatus::Accepted,
        http_status: 201,
        errors: Vec::new(),
        key_id: None,
        source_id: None,
        dedupe_key: None,
    };
    match store
        .write(WriteOp::Runs {
            event,
            tenant,
            runs,
        })
        .await
    {
        Ok(out) if had_runs => Ok(LineOutcome::Stored {
            created: out.runs.iter().filter(|r| r.created).count() as u64,
            updated: out.runs.iter().filter(|r| !r.created).count() as u64,
        }),
        Ok(_) => Ok(LineOutcome::Other),
        Err(StoreError::Rejected(errs) | StoreError::RejectedLogged(errs, _)) => {
            Ok(LineOutcome::Refused(errs))
        }
        Err(e) => Err(e),
    }
}

/// Imports the file; `progress` is called with (lines done, lines total) now and then.
pub async fn import(
    store: &Arc<dyn Store>,
    opts: &ImportOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<ImportSummary, ImportError> {
    let io = |e: std::io::Error| ImportError::Io(format!("reading {}: {e}", opts.file.display()));
    let checkpoint = checkpoint_path(&opts.file);
    let skip = if opts.restart {
        0
    } else {
        read_checkpoint(&checkpoint)
    };
    let total = {
        let f = std::fs::File::open(&opts.file).map_err(io)?;
        std::io::BufReader::new(f).split(b'\n').count() as u64
    };
    let tenant = match store.tenant_by_slug(&opts.tenant).await? {
        Some(t) => t,
        None => store.create_tenant(&opts.tenant, false).await?,
    };
    let parse_opts = ParseOptions::new(opts.max_log_bytes);
    let file = std::fs::File::open(&opts.file).map_err(io)?;
    let mut lines = std::io::BufReader::with_capacity(1 << 20, file)
        .split(b'\n')
        .enumerate()
        .skip(skip as usize);
    let mut read_error = None;
    let tasks = std::iter::from_fn(|| match lines.next()? {
        (i, Ok(line)) => {
            let (store, tenant, parse_opts) =
                (Arc::clone(store), tenant.clone(), parse_opts.clone());
            let dialect = opts.dialect;
            Some(tokio::spawn(async move {
                (
                    i as u64 + 1,
                    import_line(store, tenant, dialect, parse_opts, line).await,
                )
            }))
        }
        (_, Err(e)) => {
            read_error = Some(e);
            None
        }
    });
    // `buffered` yields in input order: when line n comes out, every line before it is done.
    let mut results = futures::stream::iter(tasks).buffered(opts.concurrency.max(1));
    let mut summary = ImportSummary {
        resumed_after: skip,
        ..ImportSummary::default()
    };
    let mut done = skip;
    let mut last_saved = std::time::Instant::now();
    while let Some(joined) = results.next().await {
        let (line_no, outcome) =
            joined.map_err(|e| ImportError::Io(format!("an import task failed: {e}")))?;
        match outcome {
            Err(e) => {
                // Everything before this line is committed.
                write_checkpoint(&checkpoint, line_no - 1)?;
                return Err(e.into());
            }
            Ok(LineOutcome::Blank) => {}
            Ok(LineOutcome::Other) => summary.other += 1,
            Ok(LineOutcome::Stored { created, updated }) => {
                summary.created += created;
                summary.updated += updated;
            }
            Ok(LineOutcome::Refused(errors)) => {
                summary.refused += 1;
                if summary.first_refused.len() < 100 {
                    summary.first_refused.push(RefusedLine {
                        line: line_no,
                        errors,
                    });
                }
            }
        }
        summary.lines += 1;
        done = line_no;
        if last_saved.elapsed() >= std::time::Duration::from_secs(1) {
            write_checkpoint(&checkpoint, done)?;
            progress(done, total);
            last_saved = std::time::Instant::now();
        }
    }
    drop(results);
    if let Some(e) = read_error {
        write_checkpoint(&checkpoint, done)?;
        return Err(io(e));
    }
    write_checkpoint(&checkpoint, done)?;
    progress(done, total);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_told_apart_by_their_fields() {
        let (d, _) =
            unwrap_line(br#"{"job_id":"1","job_start_time":1}"#, ImportDialect::Auto).unwrap();
        assert_eq!(d, ImportDialect::Allstacks);
        let (d, _) = unwrap_line(
            br#"{"request_type":"JenkinsPluginJobRunComplete","payload":"{}"}"#,
            ImportDialect::Auto,
        )
        .unwrap();
        assert_eq!(d, ImportDialect::Propelo);
        let (d, _) = unwrap_line(br#"{"pipeline":"p"}"#, ImportDialect::Auto).unwrap();
        assert_eq!(d, ImportDialect::Sei);
        let (d, body) = unwrap_line(
            br#"{"dialect":"allstacks","body":{"job_id":"x"}}"#,
            ImportDialect::Sei,
        )
        .unwrap();
        assert_eq!(d, ImportDialect::Allstacks);
        assert_eq!(body, br#"{"job_id":"x"}"#);
        let errs =
            unwrap_line(br#"{"dialect":"cobol","body":{}}"#, ImportDialect::Auto).unwrap_err();
        assert_eq!(errs[0].field, "dialect");
        assert!(unwrap_line(b"{nope", ImportDialect::Auto).is_err());
    }

    #[test]
    fn the_checkpoint_sits_beside_the_input() {
        assert_eq!(
            checkpoint_path(Path::new("/tmp/x/runs.ndjson")),
            PathBuf::from("/tmp/x/runs.ndjson.progress")
        );
    }
}
