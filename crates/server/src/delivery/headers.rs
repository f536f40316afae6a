//! A subscription's own headers (an OTLP exporter's `Authorization`, an API key header…): given
//! as `Name: value`, a value may name a secret (`{{secret.NAME}}`, optionally `| base64`), so a
//! credential is kept encrypted with the secrets rather than in clear in the subscription. The
//! placeholders are the triggers' (`triggers::template`), limited to secrets: a notification has
//! no caller payload to insert.

use std::collections::HashMap;

use cistern_core::FieldError;
use cistern_store::{Store, TargetHeader};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::secrets::MasterKey;
use crate::triggers::template::{self, Source};

/// Most headers a subscription may add.
pub const MAX_HEADERS: usize = 32;

/// Headers the hub sets itself, which a subscription may not replace.
fn reserved(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "content-type" | "content-length" | "host" | "transfer-encoding"
    ) || n.starts_with("webhook-")
        || n.starts_with("x-cistern-")
        || n == "x-jobserv-sig"
}

/// Parses `Name: value` (the CLI's `--header`).
pub fn parse_line(line: &str) -> Result<TargetHeader, String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("{line:?} is not `Name: value`"))?;
    Ok(TargetHeader {
        name: name.trim().to_owned(),
        value: value.trim().to_owned(),
    })
}

/// Checks headers; every error names the header (`headers[i]`) and the rule. Returns the
/// secrets they name, with the field naming each, for the caller to check they exist.
pub fn check(headers: &[TargetHeader]) -> (Vec<FieldError>, Vec<(String, String)>) {
    let mut errors = Vec::new();
    let mut secrets = Vec::new();
    if headers.len() > MAX_HEADERS {
        errors.push(FieldError::new(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    for (i, h) in headers.iter().enumerate() {
        let field = format!("headers[{i}]");
        let name = h.name.trim();
        if name.is_empty() || HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(FieldError::new(
                &field,
                format!("{name:?} is not a header name (letters, digits and -)"),
            ));
            continue;
        }
        if reserved(name) {
            errors.push(FieldError::new(
                &field,
                format!("{name} is set by the hub and cannot be replaced"),
            ));
            continue;
        }
        match template::check(&h.value) {
            Err(e) => errors.push(FieldError::new(&field, e)),
            Ok(holes) => {
                for p in holes {
                    match p.source {
                        Source::Secret(s) => secrets.push((field.clone(), s)),
                        _ => errors.push(FieldError::new(
                            &field,
                            "a subscription header may insert a secret only ({{secret.NAME}}, optionally | base64)",
                        )),
                    }
                }
            }
        }
        // The value without its placeholders must be a valid header value already.
        let literal = h.value.replace(['{', '}'], "");
        if HeaderValue::from_str(literal.trim()).is_err() {
            errors.push(FieldError::new(
                &field,
                "the value has characters a header cannot carry (control characters)",
            ));
        }
    }
    (errors, secrets)
}

/// The headers of a request, with the secrets they name revealed.
pub async fn render(
    store: &dyn Store,
    master: &MasterKey,
    tenant_id: &str,
    headers: &[TargetHeader],
) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    if headers.is_empty() {
        return Ok(out);
    }
    let mut names: Vec<String> = headers
        .iter()
        .flat_map(|h| template::secrets(&h.value))
        .collect();
    names.sort();
    names.dedup();
    let mut secrets = HashMap::new();
    for name in names {
        match crate::secrets::reveal(store, master, tenant_id, &name).await {
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
    let payload = serde_json::Value::Null;
    let c = template::Context {
        correlation_id: "",
        payload: &payload,
        secrets: Some(&secrets),
    };
    for h in headers {
        let value = template::render_text(&h.value, &c, template::Encoding::Text)
            .map_err(|e| format!("header {}: {e}", h.name))?;
        let name = HeaderName::from_bytes(h.name.trim().as_bytes())
            .map_err(|_| format!("{:?} is not a header name", h.name))?;
        // Never echo the value: it may hold a secret.
        let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
            format!(
                "header {}: the rendered value is not a header value",
                h.name
            )
        })?;
        value.set_sensitive(true);
        out.append(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> TargetHeader {
        TargetHeader {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn headers_are_checked() {
        let (errors, secrets) = check(&[
            h("Authorization", "Bearer {{secret.otlp-token}}"),
            h("x-team", "ci"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            secrets,
            vec![("headers[0]".to_owned(), "otlp-token".to_owned())]
        );
        let (errors, _) = check(&[
            h("bad name", "x"),
            h("Content-Type", "text/plain"),
            h("x-a", "{{payload.x}}"),
            h("x-b", "{{secret.x"),
        ]);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["headers[0]", "headers[1]", "headers[2]", "headers[3]"]
        );
        assert_eq!(parse_line("K:  V: w").unwrap(), h("K", "V: w"));
        assert!(parse_line("novalue").is_err());
    }
}
