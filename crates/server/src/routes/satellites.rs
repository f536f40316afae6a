//! Satellites (`cistern satellite`, the on-premise relay): `POST /api/v1/satellites/heartbeat`
//! (ingest scope) records one's health, `GET /api/v1/satellites` (read scope) lists them with
//! their last heartbeat, marked `stale` when none came for three of their intervals.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cistern_dialects::fields::{type_name, Errors, Obj};
use cistern_dialects::times;
use cistern_store::{SatelliteHeartbeat, SatelliteInfo, Scope};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::ingest::{json_reply, read_body};
use crate::auth::{authenticate, Reader};
use crate::error::ApiError;
use crate::AppState;

/// Heartbeats missed before a satellite is called stale.
pub const STALE_AFTER_INTERVALS: i64 = 3;
/// The interval assumed when a heartbeat does not say.
const DEFAULT_INTERVAL_SECONDS: i64 = 60;
/// Longest accepted interval (a day).
const MAX_INTERVAL_SECONDS: i64 = 86_400;
/// Longest satellite id.
const MAX_ID_CHARS: usize = 200;
/// Fields of the heartbeat that have their own columns; the rest is kept as details.
const KNOWN: &[&str] = &[
    "id",
    "version",
    "config_hash",
    "time",
    "interval_seconds",
    "spool_depth",
    "last_forward",
    "last_error",
];

/// Satellite routes.
pub fn router() -> super::Api {
    super::Api::new()
        .ingest("satellite", "/api/v1/satellites/heartbeat", heartbeat)
        .get("/api/v1/satellites", list)
}

/// Whether a satellite whose last heartbeat arrived at `last` is stale at `now`.
pub fn is_stale(last: OffsetDateTime, interval_seconds: i64, now: OffsetDateTime) -> bool {
    let limit = time::Duration::seconds(interval_seconds.max(1) * STALE_AFTER_INTERVALS);
    now - last > limit
}

#[utoipa::path(
    post,
    path = "/api/v1/satellites/heartbeat",
    tag = "satellites",
    operation_id = "satellite_heartbeat",
    summary = "A satellite's heartbeat",
    request_body(content = super::openapi::SatelliteHeartbeat, content_type = "application/json"),
    responses((status = 200, description = "Recorded", body = Object), (status = 400, description = "Broken field rules, each named", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "The body is over max_admin_body_bytes", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match authenticate(&state, &headers, Scope::Ingest).await {
        Ok(c) => c,
        Err(f) => return f.error.into_response(),
    };
    let bytes = match read_body(&headers, body, state.config.max_admin_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let now = OffsetDateTime::now_utc();
    let hb = match parse_heartbeat(&bytes, now) {
        Ok(hb) => hb,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state
        .store
        .put_satellite_heartbeat(&caller.tenant.id, &hb)
        .await
    {
        return ApiError::from(e).into_response();
    }
    json_reply(
        StatusCode::OK,
        json!({
            "id": hb.satellite_id,
            "received_at": times::fmt(hb.received_at),
            "stale_after_seconds": hb.interval_seconds * STALE_AFTER_INTERVALS,
        }),
    )
}

/// Reads a heartbeat body, naming every bad field at once.
fn parse_heartbeat(bytes: &[u8], now: OffsetDateTime) -> Result<SatelliteHeartbeat, ApiError> {
    let value = cistern_dialects::json::parse(bytes, "").map_err(|e| ApiError::invalid(vec![e]))?;
    let Value::Object(map) = value else {
        return Err(ApiError::field(
            "",
            format!("the body must be a JSON object, got {}", type_name(&value)),
        ));
    };
    let obj = Obj::new(&map, "");
    let mut errs = Errors::default();
    let id = obj.req_str("id", &mut errs);
    if let Some(id) = &id {
        if id.trim().is_empty() || id.chars().count() > MAX_ID_CHARS {
            errs.push(
                "id",
                format!("must be 1 to {MAX_ID_CHARS} characters (the satellite's name)"),
            );
        }
    }
    let version = obj.req_str("version", &mut errs);
    let config_hash = obj.opt_str("config_hash", &mut errs);
    let sent_at = match obj.get("time") {
        None | Some(Value::Null) => {
            errs.push(
                "time",
                "is required (when the heartbeat was sent, RFC 3339)",
            );
            None
        }
        Some(v) => instant(v, "time", now, &mut errs),
    };
    let interval_seconds = obj
        .opt_int("interval_seconds", "seconds", &mut errs)
        .unwrap_or(DEFAULT_INTERVAL_SECONDS);
    if !(1..=MAX_INTERVAL_SECONDS).contains(&interval_seconds) {
        errs.push(
            "interval_seconds",
            format!("must be 1 to {MAX_INTERVAL_SECONDS} seconds, got {interval_seconds}"),
        );
    }
    let spool_depth = obj
        .opt_int("spool_depth", "requests", &mut errs)
        .unwrap_or(0);
    if spool_depth < 0 {
        errs.push("spool_depth", "must not be negative");
    }
    let last_forward_at = match obj.get("last_forward") {
        None | Some(Value::Null) => None,
        Some(v) => instant(v, "last_forward", now, &mut errs),
    };
    let last_error = obj.opt_str("last_error", &mut errs);
    if !errs.is_empty() {
        return Err(ApiError::invalid(errs.0));
    }
    let details: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(SatelliteHeartbeat {
        satellite_id: id.unwrap_or_default(),
        version: version.unwrap_or_default(),
        config_hash,
        sent_at: sent_at.unwrap_or(now),
        received_at: now,
        interval_seconds,
        spool_depth,
        last_forward_at,
        last_error,
        details: Value::Object(details),
    })
}

/// A time as RFC 3339 text or epoch milliseconds.
fn instant(
    v: &Value,
    field: &str,
    now: OffsetDateTime,
    errs: &mut Errors,
) -> Option<OffsetDateTime> {
    let checked = match v {
        Value::String(s) => times::parse_datetime(s)
            .ok_or_else(|| {
                format!(
                    "\"{}\" is not a date-time (RFC 3339, e.g. 2024-03-28T05:25:45Z, or epoch milliseconds)",
                    cistern_dialects::fields::truncate(s, 40)
                )
            })
            .and_then(|t| times::check_range(t, now)),
        Value::Number(n) => match n.as_i64() {
            Some(ms) => times::check_epoch_ms(ms, now),
            None => Err(format!("must be epoch milliseconds (an integer), got {n}")),
        },
        other => Err(format!(
            "must be a date-time (RFC 3339) or epoch milliseconds, got {}",
            type_name(other)
        )),
    };
    match checked {
        Ok(t) => Some(t),
        Err(m) => {
            errs.push(field, m);
            None
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/satellites",
    tag = "satellites",
    operation_id = "list_satellites",
    summary = "Satellites with their last heartbeat (stale after three intervals)",
    responses((status = 200, description = "{\"satellites\": [...]}", body = Object), (status = 401, description = "No key, or an unknown or revoked one", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The key lacks the scope", body = super::openapi::Problem, content_type = "application/problem+json"), (status = 429, description = "The key went over its rate (Retry-After)", body = super::openapi::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Reader(caller): Reader,
) -> Result<Json<Value>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let items: Vec<Value> = state
        .store
        .list_satellites(&caller.tenant.id)
        .await?
        .iter()
        .map(|s| view(s, now))
        .collect();
    Ok(Json(json!({ "satellites": items })))
}

/// How a satellite is doing, from its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Heartbeats arrive and report no error.
    Ok,
    /// Heartbeats arrive but the last one reports an error.
    Degraded,
    /// No heartbeat for [`STALE_AFTER_INTERVALS`] intervals.
    Stale,
}

impl Health {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Stale => "stale",
        }
    }
}

/// The health of a satellite whose last heartbeat is `hb`, at `now` (the API's and the
/// dashboard's).
pub fn health(hb: &SatelliteHeartbeat, now: OffsetDateTime) -> Health {
    if is_stale(hb.received_at, hb.interval_seconds, now) {
        Health::Stale
    } else if hb.last_error.is_some() {
        Health::Degraded
    } else {
        Health::Ok
    }
}

fn view(s: &SatelliteInfo, now: OffsetDateTime) -> Value {
    let hb = &s.heartbeat;
    let health = health(hb, now);
    json!({
        "id": hb.satellite_id,
        "version": hb.version,
        "config_hash": hb.config_hash,
        "stale": health == Health::Stale,
        "health": health.as_str(),
        "last_heartbeat_at": times::fmt(hb.received_at),
        "seconds_since_heartbeat": (now - hb.received_at).whole_seconds().max(0),
        "sent_at": times::fmt(hb.sent_at),
        "interval_seconds": hb.interval_seconds,
        "stale_after_seconds": hb.interval_seconds * STALE_AFTER_INTERVALS,
        "spool_depth": hb.spool_depth,
        "last_forward_at": hb.last_forward_at.map(times::fmt),
        "last_error": hb.last_error,
        "details": hb.details,
        "first_seen_at": times::fmt(s.first_seen_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_after_three_missed_intervals() {
        let t = OffsetDateTime::from_unix_timestamp(1_711_603_545).unwrap();
        let s = time::Duration::seconds;
        assert!(!is_stale(t, 60, t + s(179)));
        assert!(!is_stale(t, 60, t + s(180)));
        assert!(is_stale(t, 60, t + s(181)));
        assert!(
            is_stale(t, 0, t + s(4)),
            "a zero interval counts as one second"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let now = OffsetDateTime::now_utc();
        let err = parse_heartbeat(
            br#"{"version": [], "time": "yesterday", "interval_seconds": 0, "spool_depth": -1}"#,
            now,
        )
        .unwrap_err();
        let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["id", "version", "time", "interval_seconds", "spool_depth"]
        );
    }

    #[test]
    fn unknown_fields_are_kept_as_details() {
        let now = OffsetDateTime::now_utc();
        let hb = parse_heartbeat(
            br#"{"id": "plant-1", "version": "0.1.0", "time": "2024-03-28T05:25:45Z",
                 "spool_bytes": 10, "integrations": [{"id": "1", "application": "jenkins"}]}"#,
            now,
        )
        .unwrap();
        assert_eq!(hb.interval_seconds, 60);
        assert_eq!(hb.details["spool_bytes"], 10);
        assert_eq!(hb.details["integrations"][0]["application"], "jenkins");
        assert!(hb.details.get("id").is_none());
    }
}
