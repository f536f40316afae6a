//! The bodies of outbound deliveries, rendered from a message's snapshot (the run or incident as
//! it was when the event happened). Rendering is pure and deterministic, so every attempt of a
//! delivery sends the same bytes.
//!
//! - `native`: `{"type", "timestamp", "data"}` (the Standard Webhooks payload shape), `data`
//!   being the run as `GET /api/v1/runs/{id}` shows it (without logs), or the incident.
//! - `jobserv`: the Foundries JobServ build webhook body: `build_id`, `url`, `status`
//!   (`PASSED`, `FAILED`, `RUNNING`, `QUEUED`, `SKIPPED`), `runs[]` (one per top-level stage, or
//!   the run itself when it has none), `web_url`, `trigger_name`, `created`, `completed`.
//! - `cdevents`: a CDEvent (spec 0.4.1) in a structured-mode CloudEvent
//!   (`application/cloudevents+json`): `pipelinerun.queued/started/finished`,
//!   `service.deployed` for a successful deployment, `incident.detected`.

use cistern_core::{Run, RunResult};
use cistern_store::{DeliveryFormat, EventType};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// CDEvents specification version of the events sent.
pub const CDEVENTS_VERSION: &str = "0.4.1";

/// A rendered body.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The bytes to send.
    pub body: Vec<u8>,
    /// Its content type.
    pub content_type: &'static str,
}

/// What a message is about.
pub struct Message<'a> {
    /// The tenant it belongs to (part of the identity of an OTLP trace).
    pub tenant: &'a str,
    /// Message id (one per event; also the CloudEvent id).
    pub id: &'a str,
    /// Event type.
    pub event: EventType,
    /// When the event happened.
    pub at: OffsetDateTime,
    /// The snapshot (JSON text).
    pub snapshot: &'a str,
}

/// Renders a message in a format. `public_url` is the hub's base URL, for links.
pub fn render(
    format: DeliveryFormat,
    msg: &Message<'_>,
    public_url: &str,
) -> Result<Rendered, String> {
    let data: Value = serde_json::from_str(msg.snapshot)
        .map_err(|e| format!("the stored message {} is not JSON: {e}", msg.id))?;
    let base = public_url.trim_end_matches('/');
    let value = match format {
        DeliveryFormat::Native => json!({
            "type": msg.event.as_str(),
            "timestamp": rfc3339(msg.at),
            "data": data,
        }),
        DeliveryFormat::Jobserv => {
            let run = run_of(msg, data)?;
            jobserv(&run, base)
        }
        DeliveryFormat::Cdevents => cdevents(msg, data, base)?,
        // Protobuf, not JSON: its own renderer.
        DeliveryFormat::Otlp => return super::otlp::render(msg, base),
    };
    let content_type = match format {
        DeliveryFormat::Cdevents => "application/cloudevents+json",
        _ => "application/json",
    };
    Ok(Rendered {
        body: serde_json::to_vec(&value).map_err(|e| e.to_string())?,
        content_type,
    })
}

fn run_of(msg: &Message<'_>, data: Value) -> Result<Run, String> {
    if msg.event == EventType::IncidentOpened {
        return Err("the jobserv format describes builds; incident.opened needs the native or cdevents format".into());
    }
    serde_json::from_value(data)
        .map_err(|e| format!("the stored run of message {} is unreadable: {e}", msg.id))
}

/// RFC 3339 text of a time.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// JobServ writes times as `2021-07-26T18:10:37+00:00`.
fn jobserv_time(t: OffsetDateTime) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

/// The JobServ `build_id` of a run: its build number, else a stable number derived from its run
/// key (the key itself when it is a number; else the first 48 bits of its SHA-256, which stays
/// within the integers every JSON reader holds exactly). Receivers get an integer, never null.
pub fn jobserv_build_id(run: &Run) -> i64 {
    use sha2::{Digest, Sha256};
    if let Some(n) = run.build_number {
        return n;
    }
    if let Ok(n) = run.run_key.trim().parse::<i64>() {
        if n >= 0 {
            return n;
        }
    }
    let d = Sha256::digest(run.run_key.as_bytes());
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&d[..6]);
    i64::from_be_bytes(b)
}

/// Sets `key` only when there is a value: JobServ receivers read strings and integers, so an
/// unknown field is left out rather than sent as null.
fn put(m: &mut Map<String, Value>, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v.into());
    }
}

/// JobServ's status words.
pub fn jobserv_status(r: RunResult) -> &'static str {
    match r {
        RunResult::Success => "PASSED",
        RunResult::Failure | RunResult::Error | RunResult::Unstable | RunResult::Aborted => {
            "FAILED"
        }
        RunResult::Running => "RUNNING",
        RunResult::Queued | RunResult::OnHold => "QUEUED",
        RunResult::Skipped => "SKIPPED",
    }
}

fn jobserv(run: &Run, base: &str) -> Value {
    let api_url = format!("{base}/api/v1/runs/{}", run.id);
    let status = jobserv_status(run.result);
    // A JobServ run's fields kept as custom fields `<run name>.<field>` by the JobServ dialect.
    let field = |stage: &str, key: &str| {
        let key = format!("{stage}.{key}");
        run.custom_fields
            .iter()
            .find(|f| f.key == key)
            .and_then(|f| f.value.as_str())
            .map(str::to_owned)
    };
    let runs: Vec<Value> = if run.stages.is_empty() {
        let mut m = Map::new();
        m.insert("name".into(), json!(run.pipeline.name));
        m.insert("url".into(), json!(api_url));
        m.insert("status".into(), json!(status));
        put(&mut m, "web_url", run.web_url.clone());
        m.insert("created".into(), json!(jobserv_time(run.started_at)));
        put(&mut m, "completed", run.finished_at.map(jobserv_time));
        vec![Value::Object(m)]
    } else {
        run.stages
            .iter()
            .map(|s| {
                let end = match (s.started_at, s.duration_ms) {
                    (Some(start), Some(ms)) => Some(start + time::Duration::milliseconds(ms)),
                    _ => None,
                };
                let mut m = Map::new();
                m.insert("name".into(), json!(s.name));
                m.insert(
                    "url".into(),
                    json!(s.url.clone().unwrap_or_else(|| api_url.clone())),
                );
                m.insert(
                    "status".into(),
                    json!(s.result.map(jobserv_status).unwrap_or(status)),
                );
                put(&mut m, "log_url", field(&s.name, "log_url"));
                put(
                    &mut m,
                    "web_url",
                    field(&s.name, "web_url")
                        .or_else(|| s.url.clone())
                        .or_else(|| run.web_url.clone()),
                );
                put(&mut m, "created", s.started_at.map(jobserv_time));
                put(&mut m, "completed", end.map(jobserv_time));
                put(&mut m, "host_tag", field(&s.name, "host_tag"));
                put(&mut m, "tests", field(&s.name, "tests"));
                Value::Object(m)
            })
            .collect()
    };
    // The JobServ trigger the build came with, else the pipeline that ran.
    let trigger = run
        .trigger_chain
        .iter()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some(cistern_dialects::jobserv::TRIGGER_TYPE)
        })
        .and_then(|c| c.get("id").and_then(Value::as_str))
        .unwrap_or(&run.pipeline.full_name);
    let mut m = Map::new();
    m.insert("build_id".into(), json!(jobserv_build_id(run)));
    m.insert("url".into(), json!(api_url));
    m.insert("status".into(), json!(status));
    m.insert("runs".into(), Value::Array(runs));
    put(&mut m, "web_url", run.web_url.clone());
    m.insert("trigger_name".into(), json!(trigger));
    m.insert("created".into(), json!(jobserv_time(run.started_at)));
    put(&mut m, "completed", run.finished_at.map(jobserv_time));
    Value::Object(m)
}

/// CDEvents' outcome words.
fn outcome(r: RunResult) -> &'static str {
    match r {
        RunResult::Success => "success",
        RunResult::Failure | RunResult::Unstable => "failure",
        RunResult::Error => "error",
        _ => "cancel",
    }
}

/// Drops null members (CDEvents optional fields are absent, not null).
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, compact(v)))
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

fn cdevents(msg: &Message<'_>, data: Value, base: &str) -> Result<Value, String> {
    let source = if base.is_empty() {
        "/cistern".to_owned()
    } else {
        base.to_owned()
    };
    let (kind, subject) = match msg.event {
        EventType::IncidentOpened => {
            let text = |k: &str| data.get(k).cloned().unwrap_or(Value::Null);
            let id_of = |v: Value| match v {
                Value::Null => Value::Null,
                v => json!({ "id": v }),
            };
            (
                "dev.cdevents.incident.detected.0.2.0",
                json!({
                    "id": text("id"),
                    "source": text("source"),
                    "type": "incident",
                    "content": {
                        "description": text("description"),
                        "environment": id_of(text("environment")),
                        "service": id_of(text("service")),
                        "url": text("url"),
                    }
                }),
            )
        }
        event => {
            let run: Run = serde_json::from_value(data)
                .map_err(|e| format!("the stored run of message {} is unreadable: {e}", msg.id))?;
            let url = run
                .web_url
                .clone()
                .unwrap_or_else(|| format!("{base}/api/v1/runs/{}", run.id));
            if event == EventType::DeploymentCompleted && run.result == RunResult::Success {
                let version = run
                    .commits
                    .first()
                    .map(|c| c.sha.clone())
                    .or_else(|| run.build_number.map(|b| b.to_string()))
                    .unwrap_or_else(|| run.run_key.clone());
                (
                    "dev.cdevents.service.deployed.0.2.0",
                    json!({
                        "id": run.pipeline.name,
                        "source": source,
                        "type": "service",
                        "content": {
                            "environment": { "id": run.environment.clone().unwrap_or_else(|| "default".into()) },
                            "artifactId": format!("pkg:generic/{}@{}", run.pipeline.name, version),
                        }
                    }),
                )
            } else {
                let kind = if run.result.is_finished() {
                    "dev.cdevents.pipelinerun.finished.0.2.0"
                } else if run.result == RunResult::Queued {
                    "dev.cdevents.pipelinerun.queued.0.2.0"
                } else {
                    "dev.cdevents.pipelinerun.started.0.2.0"
                };
                let finished = run.result.is_finished();
                (
                    kind,
                    json!({
                        "id": run.id,
                        "source": source,
                        "type": "pipelineRun",
                        "content": {
                            "pipelineName": run.pipeline.full_name,
                            "url": url,
                            "outcome": if finished { Value::from(outcome(run.result)) } else { Value::Null },
                            "errors": if finished && run.result.is_failed() {
                                Value::from(format!("{} ({})", run.result, run.source_result))
                            } else {
                                Value::Null
                            },
                        }
                    }),
                )
            }
        }
    };
    let event = json!({
        "context": {
            "version": CDEVENTS_VERSION,
            "id": msg.id,
            "source": source,
            "type": kind,
            "timestamp": rfc3339(msg.at),
        },
        "subject": compact(subject),
    });
    Ok(json!({
        "specversion": "1.0",
        "id": msg.id,
        "source": source,
        "type": kind,
        "time": rfc3339(msg.at),
        "datacontenttype": "application/json",
        "data": event,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_json(result: &str) -> String {
        json!({
            "id": "run-1", "pipeline": {"id": "p", "full_name": "team/build", "name": "build", "qualified_name": null, "project": null, "module": null},
            "instance": {"guid": "g", "name": null, "url": null, "kind": null},
            "run_key": "67", "build_number": 67, "execution_id": null, "result": result, "source_result": result.to_uppercase(),
            "started_at": "2021-07-26T18:10:33Z", "finished_at": "2021-07-26T18:19:24Z", "duration_ms": 531000,
            "triggered_by": null, "branch": "devel", "repo_url": null, "repo": null, "commits": [], "ci": true, "cd": false,
            "environment": null, "cfr_status": null, "params": [], "artifacts": [], "trigger_chain": [], "themes": [],
            "web_url": "https://ci.example/builds/67", "job_type": null, "custom_fields": [], "stages": [], "log": null,
            "log_truncated": false, "source": "sei", "event_id": null,
            "received_at": "2021-07-26T18:19:25Z", "updated_at": "2021-07-26T18:19:25Z"
        })
        .to_string()
    }

    fn msg<'a>(event: EventType, snapshot: &'a str) -> Message<'a> {
        Message {
            tenant: "t",
            id: "m1",
            event,
            at: time::macros::datetime!(2021-07-26 18:19:25 UTC),
            snapshot,
        }
    }

    #[test]
    fn jobserv_body_has_the_seed_fields() {
        let snap = run_json("success");
        let out = render(
            DeliveryFormat::Jobserv,
            &msg(EventType::RunCompleted, &snap),
            "https://hub.example/",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            v,
            json!({
                "build_id": 67,
                "url": "https://hub.example/api/v1/runs/run-1",
                "status": "PASSED",
                "runs": [{
                    "name": "build", "url": "https://hub.example/api/v1/runs/run-1", "status": "PASSED",
                    "web_url": "https://ci.example/builds/67", "created": "2021-07-26T18:10:33+00:00",
                    "completed": "2021-07-26T18:19:24+00:00"
                }],
                "web_url": "https://ci.example/builds/67",
                "trigger_name": "team/build",
                "created": "2021-07-26T18:10:33+00:00",
                "completed": "2021-07-26T18:19:24+00:00"
            })
        );
        let again = render(
            DeliveryFormat::Jobserv,
            &msg(EventType::RunCompleted, &snap),
            "https://hub.example/",
        )
        .unwrap();
        assert_eq!(out, again, "the same bytes on every attempt");
        assert!(render(
            DeliveryFormat::Jobserv,
            &msg(EventType::IncidentOpened, "{}"),
            ""
        )
        .is_err());
    }

    /// Nothing is null where JobServ shows an integer or a string: a run without a build
    /// number gets a stable build id from its key; unknown fields are left out.
    #[test]
    fn jobserv_body_has_no_nulls_and_a_stable_build_id() {
        let mut snap: Value = serde_json::from_str(&run_json("running")).unwrap();
        snap["build_number"] = Value::Null;
        snap["run_key"] = json!("UNIQUE_EXECUTION_ID");
        snap["finished_at"] = Value::Null;
        snap["web_url"] = Value::Null;
        snap["stages"] = json!([{"name": "Build", "description": null, "result": null, "state": null,
            "started_at": null, "duration_ms": null, "log": null, "log_truncated": false, "steps": []}]);
        let snap = snap.to_string();
        let body = |s: &str| -> Value {
            let out = render(
                DeliveryFormat::Jobserv,
                &msg(EventType::RunStarted, s),
                "https://hub.example",
            )
            .unwrap();
            serde_json::from_slice(&out.body).unwrap()
        };
        let v = body(&snap);
        fn no_nulls(v: &Value, at: &str) {
            match v {
                Value::Null => panic!("null at {at}"),
                Value::Object(m) => m
                    .iter()
                    .for_each(|(k, v)| no_nulls(v, &format!("{at}.{k}"))),
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .for_each(|(i, v)| no_nulls(v, &format!("{at}[{i}]"))),
                _ => {}
            }
        }
        no_nulls(&v, "");
        let id = v["build_id"].as_i64().expect("an integer build id");
        assert!((0..1i64 << 53).contains(&id), "{id}");
        assert_eq!(body(&snap)["build_id"], id, "stable");
        assert_eq!(v["runs"][0]["url"], "https://hub.example/api/v1/runs/run-1");
        assert_eq!(v["runs"][0]["status"], "RUNNING");
        assert!(v.get("completed").is_none());
        // A numeric run key is the build id itself.
        let numeric = snap.replace("UNIQUE_EXECUTION_ID", "4242");
        assert_eq!(body(&numeric)["build_id"], 4242);
    }

    #[test]
    fn cdevents_pipelinerun_finished() {
        let snap = run_json("failure");
        let out = render(
            DeliveryFormat::Cdevents,
            &msg(EventType::RunCompleted, &snap),
            "https://hub.example",
        )
        .unwrap();
        assert_eq!(out.content_type, "application/cloudevents+json");
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            v,
            json!({
                "specversion": "1.0", "id": "m1", "source": "https://hub.example",
                "type": "dev.cdevents.pipelinerun.finished.0.2.0", "time": "2021-07-26T18:19:25Z",
                "datacontenttype": "application/json",
                "data": {
                    "context": {"version": "0.4.1", "id": "m1", "source": "https://hub.example",
                                "type": "dev.cdevents.pipelinerun.finished.0.2.0", "timestamp": "2021-07-26T18:19:25Z"},
                    "subject": {"id": "run-1", "source": "https://hub.example", "type": "pipelineRun",
                                "content": {"pipelineName": "team/build", "url": "https://ci.example/builds/67",
                                            "outcome": "failure", "errors": "failure (FAILURE)"}}
                }
            })
        );
    }

    #[test]
    fn native_wraps_the_snapshot() {
        let snap = run_json("running");
        let out = render(
            DeliveryFormat::Native,
            &msg(EventType::RunStarted, &snap),
            "",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["type"], "run.started");
        assert_eq!(v["timestamp"], "2021-07-26T18:19:25Z");
        assert_eq!(v["data"]["id"], "run-1");
    }
}
