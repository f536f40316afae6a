//! Trigger events through the delivery worker: the same leases, concurrency, guarded HTTP client
//! and attempt log as deliveries, with the target's own method, headers and body (rendered from
//! the trigger's templates, secrets included, at the moment of sending) and
//! `X-Cistern-Correlation-Id`.
//!
//! A 2xx means the CI accepted the request. A 4xx other than 408 and 429 (bad credentials, no
//! such job, inputs the workflow does not declare) will not get better by waiting: the event fails
//! at once. Anything else is retried on `trigger_schedule`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cistern_store::{ClaimedDispatch, DeliveryAttempt, DispatchRecord, NextStep};
use time::OffsetDateTime;

use super::{error_chain, format, redact, schedule, Ctx, RESPONSE_CAP};
use crate::triggers::template;

/// The header that carries the correlation id to the target.
pub const CORRELATION_HEADER: &str = "x-cistern-correlation-id";

/// A request ready to send.
struct Prepared {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    body: Option<String>,
}

/// Renders the target for this event, revealing the secrets it names.
async fn prepare(ctx: &Ctx, d: &ClaimedDispatch) -> Result<Prepared, String> {
    let t = &d.target;
    let mut names: Vec<String> = t
        .headers
        .iter()
        .flat_map(|h| template::secrets(&h.value))
        .chain(t.body.as_deref().map(template::secrets).unwrap_or_default())
        .collect();
    names.sort();
    names.dedup();
    let mut secrets = HashMap::new();
    for name in names {
        match crate::secrets::reveal(ctx.store.as_ref(), &ctx.master, &d.tenant_id, &name).await {
            Ok(Some((current, _))) => {
                let value = String::from_utf8(current)
                    .map_err(|_| format!("the secret {name:?} is not text"))?;
                secrets.insert(name, value);
            }
            Ok(None) => {
                return Err(format!(
                    "no secret named {name:?}; set it (`cistern secrets set {name}=…`)"
                ))
            }
            Err(e) => return Err(format!("cannot read the secret {name:?}: {e}")),
        }
    }
    let payload: serde_json::Value =
        serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null);
    let c = template::Context {
        correlation_id: &d.id,
        payload: &payload,
        secrets: Some(&secrets),
    };
    let method = reqwest::Method::from_bytes(t.method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{:?} is not an HTTP method", t.method))?;
    let url = ctx.settings.targets.check_url(&t.url)?;
    let mut headers = reqwest::header::HeaderMap::new();
    let mut content_type = None;
    for h in &t.headers {
        let value = template::render_text(&h.value, &c, template::Encoding::Text)
            .map_err(|e| format!("header {}: {e}", h.name))?;
        let name = reqwest::header::HeaderName::from_bytes(h.name.trim().as_bytes())
            .map_err(|_| format!("{:?} is not a header name", h.name))?;
        let value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| {
            format!(
                "header {}: the rendered value is not a header value",
                h.name
            )
        })?;
        if name == reqwest::header::CONTENT_TYPE {
            content_type = value.to_str().ok().map(str::to_owned);
        }
        headers.append(name, value);
    }
    let body = match t.body.as_deref() {
        None => None,
        Some(b) => {
            let kind = template::body_kind(b, content_type.as_deref());
            if content_type.is_none() {
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    reqwest::header::HeaderValue::from_static(template::default_content_type(kind)),
                );
            }
            Some(template::render_body(b, kind, &c).map_err(|e| format!("body: {e}"))?)
        }
    };
    headers.insert(
        CORRELATION_HEADER,
        reqwest::header::HeaderValue::from_str(&d.id).map_err(|e| e.to_string())?,
    );
    Ok(Prepared {
        method,
        url,
        headers,
        body,
    })
}

/// One attempt at one trigger event; never fails (a failure is an outcome to record).
pub(super) async fn attempt(ctx: &Ctx, d: ClaimedDispatch) -> DispatchRecord {
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let made = (d.tries + 1) as usize;
    let schedule = &ctx.settings.trigger_schedule;
    let mut rec = DispatchRecord {
        event_id: d.id.clone(),
        token: d.token.clone(),
        attempt: DeliveryAttempt {
            attempt: d.tries + 1,
            started_at,
            duration_ms: 0,
            status_code: None,
            response_body: None,
            error: None,
            node: Some(ctx.node.clone()),
        },
        next: NextStep::GiveUp,
        exception: false,
        message: None,
    };
    let prepared = match prepare(ctx, &d).await {
        Ok(p) => p,
        Err(e) => {
            // The keyless caller of a token URL reads this: no URL beyond its origin.
            let e = redact::strip_urls(&e);
            rec.attempt.error = Some(e.clone());
            rec.exception = true;
            rec.message = Some(format!("Exception while processing: {e}"));
            tracing::warn!(event = %d.id, error = %e, "a trigger event cannot be sent");
            return rec;
        }
    };
    let outcome = send(ctx, prepared).await;
    rec.attempt.duration_ms = clock.elapsed().as_millis() as i64;
    let retry = |why: String, wait: Option<Duration>| match wait {
        Some(w) => {
            let at = OffsetDateTime::now_utc() + w;
            (
                NextStep::RetryAt(at),
                format!(
                    "Waiting to be sent again: attempt {made} failed ({why}); next attempt at {}",
                    format::rfc3339(at)
                ),
            )
        }
        None => (
            NextStep::GiveUp,
            format!("Target did not execute: {made} attempts failed; the last: {why}"),
        ),
    };
    let (next, message) = match outcome {
        Ok((status, body, retry_after)) => {
            rec.attempt.status_code = Some(status);
            rec.attempt.response_body = Some(body.clone());
            if (200..300).contains(&status) {
                (
                    NextStep::Delivered,
                    format!("Pipeline execution was requested successfully (the target answered HTTP {status})"),
                )
            } else {
                rec.attempt.error = Some(format!("HTTP {status} (not 2xx)"));
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    let said: String = body.chars().take(200).collect();
                    (
                        NextStep::GiveUp,
                        format!("Target did not execute: the target refused the request with HTTP {status}: {said}"),
                    )
                } else {
                    let asked = retry_after.filter(|_| matches!(status, 429 | 503));
                    let wait = match (asked, schedule.delay_after(made)) {
                        (Some(w), Some(_)) => Some(w),
                        _ => schedule.next_delay(made),
                    };
                    retry(format!("HTTP {status}"), wait)
                }
            }
        }
        Err(e) => {
            let e = redact::strip_urls(&e);
            rec.attempt.error = Some(e.clone());
            retry(e, schedule.next_delay(made))
        }
    };
    if next == NextStep::GiveUp {
        tracing::warn!(event = %d.id, attempts = made, %message, "trigger event not executed");
    }
    rec.next = next;
    // The target's answer may quote the request URL too.
    rec.message = Some(redact::strip_urls(&message));
    rec
}

/// Sends the request: status, the first bytes of the answer, and its `Retry-After`.
async fn send(ctx: &Ctx, p: Prepared) -> Result<(u16, String, Option<Duration>), String> {
    let timeout = ctx.settings.timeout;
    let mut req = ctx.client.request(p.method, p.url).headers(p.headers);
    if let Some(b) = p.body {
        req = req.body(b);
    }
    let exchange = async {
        let mut resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "timed out after {} ms (delivery_timeout)",
                    timeout.as_millis()
                )
            } else {
                error_chain(e)
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| schedule::retry_after(v, OffsetDateTime::now_utc()));
        let mut kept: Vec<u8> = Vec::new();
        while kept.len() < RESPONSE_CAP {
            match resp.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                _ => break,
            }
        }
        kept.truncate(RESPONSE_CAP);
        Ok((
            status,
            String::from_utf8_lossy(&kept).into_owned(),
            retry_after,
        ))
    };
    match tokio::time::timeout(timeout + Duration::from_millis(500), exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timed out after {} ms (delivery_timeout)",
            timeout.as_millis()
        )),
    }
}
