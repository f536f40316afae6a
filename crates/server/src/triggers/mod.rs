//! Triggers: a custom webhook (Harness's identifiers and reply shapes) fires a pipeline on the CI
//! system that runs it, and the caller follows the event by its correlation id until the run the
//! CI reports back is linked to it. This module checks and builds triggers (shared by the API
//! and the CLI) and shapes what callers read; the routes are in `routes::triggers`, sending is
//! the delivery worker's (`delivery::dispatch`).

pub mod details;
pub mod presets;
pub mod template;

use cistern_core::FieldError;
use cistern_store::{Store, TargetHeader, Trigger, TriggerAuth, TriggerKey, TriggerTarget};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::delivery::target;
use crate::error::ApiError;

/// HTTP methods a target may use.
pub const METHODS: [&str; 5] = ["POST", "PUT", "PATCH", "GET", "DELETE"];

/// What a user gives to create or change a trigger.
#[derive(Debug, Clone, Default)]
pub struct TriggerInput {
    /// `orgIdentifier`.
    pub org: String,
    /// `projectIdentifier`.
    pub project: String,
    /// `pipelineIdentifier`.
    pub pipeline: String,
    /// `triggerIdentifier`.
    pub trigger: String,
    /// The target URL (for a preset: Jenkins' job URL, or the API's base URL).
    pub url: Option<String>,
    /// HTTP method (default POST).
    pub method: Option<String>,
    /// Headers as `Name: value` (added to a preset's, replacing those of the same name).
    pub headers: Vec<String>,
    /// Body template (replaces a preset's).
    pub body: Option<String>,
    /// A preset and its fields.
    pub preset: Option<presets::PresetInput>,
    /// The token URL fires it without an API key.
    pub allow_token: bool,
    /// Whether the webhook URL asks for an API key.
    pub auth: TriggerAuth,
    /// Enabled.
    pub enabled: bool,
}

/// Identifiers: 1–128 characters of letters, digits and `_ - . $`.
fn check_identifier(field: &str, v: &str, errors: &mut Vec<FieldError>) {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if !ok {
        errors.push(FieldError::new(
            field,
            if v.is_empty() {
                "is required".to_owned()
            } else {
                format!("{v:?} must be 1-128 characters of letters, digits, '_', '-', '.' and '$'")
            },
        ));
    }
}

/// Parses `Name: value`.
pub fn parse_header(field: &str, text: &str) -> Result<TargetHeader, FieldError> {
    let Some((name, value)) = text.split_once(':') else {
        return Err(FieldError::new(
            field,
            format!("{text:?} is not `Name: value`"),
        ));
    };
    let name = name.trim();
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(FieldError::new(
            field,
            format!("{name:?} is not a header name"),
        ));
    }
    Ok(TargetHeader {
        name: name.to_owned(),
        value: value.trim().to_owned(),
    })
}

/// Checks an input and builds the trigger (a new one, or `current` changed). Every rule broken is
/// reported, each naming its field.
pub async fn build_trigger(
    store: &dyn Store,
    tenant_id: &str,
    input: TriggerInput,
    targets: &target::TargetPolicy,
    current: Option<&Trigger>,
) -> Result<Trigger, ApiError> {
    let mut errors = Vec::new();
    let key = TriggerKey {
        org: input.org.trim().to_owned(),
        project: input.project.trim().to_owned(),
        pipeline: input.pipeline.trim().to_owned(),
        trigger: input.trigger.trim().to_owned(),
    };
    check_identifier("org", &key.org, &mut errors);
    check_identifier("project", &key.project, &mut errors);
    check_identifier("pipeline", &key.pipeline, &mut errors);
    check_identifier("trigger", &key.trigger, &mut errors);

    let url = input
        .url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let mut target = match &input.preset {
        Some(p) => {
            let p = presets::PresetInput {
                url: url.clone(),
                ..p.clone()
            };
            match presets::target(&p) {
                Ok(t) => t,
                Err(e) => {
                    errors.extend(e);
                    TriggerTarget {
                        method: "POST".into(),
                        url: String::new(),
                        headers: Vec::new(),
                        body: None,
                    }
                }
            }
        }
        None => TriggerTarget {
            method: "POST".into(),
            url: url.clone().unwrap_or_default(),
            headers: Vec::new(),
            body: None,
        },
    };
    if let Some(m) = input
        .method
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        let m = m.to_ascii_uppercase();
        if METHODS.contains(&m.as_str()) {
            target.method = m;
        } else {
            errors.push(FieldError::new(
                "method",
                format!("{m:?} is not accepted; methods: {}", METHODS.join(", ")),
            ));
        }
    }
    for (i, h) in input.headers.iter().enumerate() {
        match parse_header(&format!("headers[{i}]"), h) {
            Ok(h) => {
                target
                    .headers
                    .retain(|x| !x.name.eq_ignore_ascii_case(&h.name));
                target.headers.push(h);
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(b) = input.body {
        target.body = Some(b).filter(|b| !b.trim().is_empty());
    }

    if input.preset.is_none() && target.url.is_empty() {
        errors.push(FieldError::new(
            "url",
            "is required: where to send the request (or use a preset: jenkins, github, gitlab)",
        ));
    } else if !target.url.is_empty() {
        match targets.check_url(&target.url) {
            Ok(u) => {
                if let Err(e) = targets.check_resolves(&u).await {
                    errors.push(FieldError::new("url", e));
                }
            }
            Err(e) => errors.push(FieldError::new("url", e)),
        }
    }
    let content_type = target
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| h.value.clone());
    let mut secrets = Vec::new();
    for (i, h) in target.headers.iter().enumerate() {
        match template::check(&h.value) {
            Ok(_) => secrets.extend(
                template::secrets(&h.value)
                    .into_iter()
                    .map(|s| (format!("headers[{i}]"), s)),
            ),
            Err(e) => errors.push(FieldError::new(format!("headers[{i}]"), e)),
        }
    }
    if let Some(b) = &target.body {
        if target.method == "GET" {
            errors.push(FieldError::new(
                "body",
                "a GET request has no body; use POST",
            ));
        }
        match template::check_body(b, content_type.as_deref()) {
            Ok(()) => secrets.extend(
                template::secrets(b)
                    .into_iter()
                    .map(|s| ("body".to_owned(), s)),
            ),
            Err(e) => errors.push(FieldError::new("body", e)),
        }
    }
    for (field, name) in secrets {
        if store.get_secret(tenant_id, &name).await?.is_none() {
            errors.push(FieldError::new(
                field,
                format!("no secret named {name:?}; set it first (`cistern secrets set {name}=…` or PUT /api/v1/secrets/{name})"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let now = OffsetDateTime::now_utc();
    Ok(Trigger {
        id: current
            .map(|c| c.id.clone())
            .unwrap_or_else(|| format!("trg_{}", uuid::Uuid::now_v7().simple())),
        tenant_id: tenant_id.to_owned(),
        key,
        enabled: input.enabled,
        allow_token: input.allow_token,
        auth: input.auth,
        // A new trigger gets its token from `issue_token` (the caller shows it once).
        token_hash: current.map(|c| c.token_hash.clone()).unwrap_or_default(),
        preset: input
            .preset
            .map(|p| p.kind.trim().to_ascii_lowercase())
            .or_else(|| current.and_then(|c| c.preset.clone())),
        target,
        created_at: current.map(|c| c.created_at).unwrap_or(now),
        updated_at: now,
    })
}

/// Gives a trigger a new token: sets its hash and returns the token, to be shown once (it is
/// not stored, and cannot be shown again; `rotate-token` makes a new one).
pub fn issue_token(t: &mut Trigger) -> String {
    let token = uuid::Uuid::new_v4().simple().to_string();
    t.token_hash = cistern_store::triggers::token_hash(&token);
    token
}

/// True when `token` is the trigger's (compared as hashes, in constant time).
pub fn token_matches(t: &Trigger, token: &str) -> bool {
    !t.token_hash.is_empty()
        && cistern_core::signatures::constant_time_eq(
            t.token_hash.as_bytes(),
            cistern_store::triggers::token_hash(token).as_bytes(),
        )
}

fn query(account: &str, k: &TriggerKey) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("accountIdentifier", account)
        .append_pair("orgIdentifier", &k.org)
        .append_pair("projectIdentifier", &k.project)
        .append_pair("pipelineIdentifier", &k.pipeline)
        .append_pair("triggerIdentifier", &k.trigger)
        .finish();
    q
}

/// The URL that fires a trigger with an API key (`account` is the tenant's slug).
pub fn webhook_url(public_url: &str, account: &str, t: &Trigger) -> String {
    format!(
        "{public_url}/gateway/api/webhook/custom?{}",
        query(account, &t.key)
    )
}

/// The token URL of a trigger with its `token` (fires it without a key when `allow_token` is
/// set). Only the token's hash is kept: this URL is shown when the token is made or rotated.
pub fn token_url(public_url: &str, account: &str, t: &Trigger, token: &str) -> String {
    format!(
        "{public_url}/gateway/pipeline/api/webhook/custom/{token}/v3?{}",
        query(account, &t.key)
    )
}

/// The curl line that fires a trigger: the seed's own (no key) for `auth: none`.
pub fn curl_line(t: &Trigger, url: &str) -> String {
    match t.auth {
        TriggerAuth::None => format!(
            "curl -X POST -H 'content-type: application/json' --url '{url}' -d '{{}}'"
        ),
        TriggerAuth::Key => format!(
            "curl -X POST -H 'Content-Type: application/json' -H \"X-Api-Key: $TRIGGER_KEY\" --url '{url}' -d '{{}}'"
        ),
    }
}

/// A trigger as the API shows it: its settings, its URLs and a curl line to fire it. `token`
/// is given only when it was just made (creation, rotation): its URL is shown that once.
pub fn trigger_json(t: &Trigger, public_url: &str, account: &str, token: Option<&str>) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    let url = webhook_url(public_url, account, t);
    if let Some(m) = v.as_object_mut() {
        m.insert("webhook_url".into(), json!(url));
        if let Some(token) = token {
            m.insert(
                "token_url".into(),
                json!(token_url(public_url, account, t, token)),
            );
        }
        m.insert("curl".into(), json!(curl_line(t, &url)));
        m.insert(
            "events".into(),
            json!(format!("/api/v1/triggers/{}/events", t.id)),
        );
    }
    v
}
