//! The templates of a trigger's target: header values and the body may insert the correlation
//! id (`{{correlation_id}}`), the caller's payload (`{{payload}}`) or one of its fields
//! (`{{payload.a.b}}`, `{{payload.items.0}}`), and a named secret (`{{secret.NAME}}`); a
//! placeholder may end with `| base64` (for `Authorization: Basic …`).
//!
//! Three forms only, so a template is data rather than a program; written here rather than taken
//! from a template engine because what matters is how a value is inserted, which depends on where:
//! - in a JSON body, a string that is one placeholder becomes the value itself (an object stays
//!   an object, a number a number); a placeholder inside a longer string is inserted as text,
//!   escaped by the JSON writer;
//! - in a form body (`application/x-www-form-urlencoded`), values are percent-encoded;
//! - elsewhere (headers, text bodies) values are inserted as text: a string as is, anything
//!   else as its JSON.
//!
//! Rendering is one pass: an inserted value is never read again as a template, so a payload
//! cannot name a secret.

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;

/// What a placeholder names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The event's correlation id.
    CorrelationId,
    /// The payload (an empty path) or one of its fields.
    Payload(Vec<String>),
    /// A named secret.
    Secret(String),
}

/// One `{{…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// What it inserts.
    pub source: Source,
    /// Base64-encode the text (`| base64`).
    pub base64: bool,
}

/// A template cut into literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Hole(Placeholder),
}

const FORMS: &str = "{{correlation_id}}, {{payload}}, {{payload.field.sub}}, {{secret.NAME}}, optionally followed by | base64";

fn parse_placeholder(inner: &str) -> Result<Placeholder, String> {
    let (expr, filter) = match inner.split_once('|') {
        Some((e, f)) => (e.trim(), Some(f.trim())),
        None => (inner.trim(), None),
    };
    let base64 = match filter {
        None => false,
        Some("base64") => true,
        Some(f) => {
            return Err(format!(
                "unknown filter {f:?} in {{{{{inner}}}}}; the only filter is base64"
            ))
        }
    };
    let source = if expr == "correlation_id" {
        Source::CorrelationId
    } else if expr == "payload" {
        Source::Payload(Vec::new())
    } else if let Some(path) = expr.strip_prefix("payload.") {
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || p.contains(char::is_whitespace))
        {
            return Err(format!(
                "{{{{{inner}}}}}: a payload path is field names separated by dots"
            ));
        }
        Source::Payload(parts)
    } else if let Some(name) = expr.strip_prefix("secret.") {
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!(
                "{{{{{inner}}}}}: name the secret, e.g. {{{{secret.ci-token}}}}"
            ));
        }
        Source::Secret(name.to_owned())
    } else {
        return Err(format!(
            "unknown placeholder {{{{{inner}}}}}; placeholders: {FORMS}"
        ));
    };
    Ok(Placeholder { source, base64 })
}

fn parse(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!(
                "a placeholder opened with {{{{ is not closed with }}}} (at {:?})",
                &rest[start..rest.len().min(start + 30)]
            ));
        };
        parts.push(Part::Hole(parse_placeholder(&after[..end])?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

/// Checks a template; `Err` names the placeholder at fault and the accepted forms.
pub fn check(template: &str) -> Result<Vec<Placeholder>, String> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|p| match p {
            Part::Hole(h) => Some(h),
            Part::Text(_) => None,
        })
        .collect())
}

/// The secrets a template uses.
pub fn secrets(template: &str) -> Vec<String> {
    check(template)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p.source {
            Source::Secret(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// What placeholders are filled with.
pub struct Context<'a> {
    /// The correlation id.
    pub correlation_id: &'a str,
    /// The caller's payload (JSON; `Null` when it was not JSON).
    pub payload: &'a Value,
    /// Secret values by name; `None` renders a preview, with secrets left as placeholders.
    pub secrets: Option<&'a HashMap<String, String>>,
}

/// How inserted text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is.
    Text,
    /// Percent-encoded, for `application/x-www-form-urlencoded` bodies.
    Form,
}

fn lookup<'v>(payload: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = payload;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The value of a placeholder: `Ok(None)` for a secret in a preview.
fn value(p: &Placeholder, ctx: &Context<'_>) -> Result<Option<Value>, String> {
    let v = match &p.source {
        Source::CorrelationId => Value::String(ctx.correlation_id.to_owned()),
        Source::Payload(path) => lookup(ctx.payload, path).cloned().unwrap_or(Value::Null),
        Source::Secret(name) => match ctx.secrets {
            None => return Ok(None),
            Some(all) => Value::String(all.get(name).cloned().ok_or_else(|| {
                format!("no secret named {name:?}; set it (`cistern secrets set {name}=…`)")
            })?),
        },
    };
    if p.base64 {
        return Ok(Some(Value::String(
            base64::engine::general_purpose::STANDARD.encode(as_text(&v)),
        )));
    }
    Ok(Some(v))
}

fn literal(p: &Placeholder) -> String {
    let expr = match &p.source {
        Source::CorrelationId => "correlation_id".to_owned(),
        Source::Payload(path) if path.is_empty() => "payload".to_owned(),
        Source::Payload(path) => format!("payload.{}", path.join(".")),
        Source::Secret(n) => format!("secret.{n}"),
    };
    if p.base64 {
        format!("{{{{{expr} | base64}}}}")
    } else {
        format!("{{{{{expr}}}}}")
    }
}

/// Renders a text template (a header value, a text or form body).
pub fn render_text(template: &str, ctx: &Context<'_>, enc: Encoding) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for part in parse(template)? {
        match part {
            Part::Text(t) => out.push_str(&t),
            Part::Hole(p) => match value(&p, ctx)? {
                None => out.push_str(&literal(&p)),
                Some(v) => {
                    let text = as_text(&v);
                    match enc {
                        Encoding::Text => out.push_str(&text),
                        Encoding::Form => {
                            out.extend(form_urlencoded::byte_serialize(text.as_bytes()))
                        }
                    }
                }
            },
        }
    }
    Ok(out)
}

fn render_value(t: &Value, ctx: &Context<'_>) -> Result<Value, String> {
    Ok(match t {
        Value::String(s) => {
            let parts = parse(s)?;
            match parts.as_slice() {
                [Part::Hole(p)] => value(p, ctx)?.unwrap_or_else(|| Value::String(literal(p))),
                _ => Value::String(render_text(s, ctx, Encoding::Text)?),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = serde_json::Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(render_text(k, ctx, Encoding::Text)?, render_value(v, ctx)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// How a body template is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON document whose strings hold placeholders.
    Json,
    /// `application/x-www-form-urlencoded`: inserted values are percent-encoded.
    Form,
    /// Any other text.
    Text,
}

/// How a body template with this `Content-Type` (if any) is read.
pub fn body_kind(template: &str, content_type: Option<&str>) -> BodyKind {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if ct.contains("x-www-form-urlencoded") {
        BodyKind::Form
    } else if (ct.is_empty() || ct.contains("json"))
        && serde_json::from_str::<Value>(template).is_ok()
    {
        BodyKind::Json
    } else {
        BodyKind::Text
    }
}

/// The `Content-Type` sent when the target names none.
pub fn default_content_type(kind: BodyKind) -> &'static str {
    match kind {
        BodyKind::Json => "application/json",
        BodyKind::Form => "application/x-www-form-urlencoded",
        BodyKind::Text => "text/plain; charset=utf-8",
    }
}

/// Checks a body template as it will be read.
pub fn check_body(template: &str, content_type: Option<&str>) -> Result<(), String> {
    check(template)?;
    if content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
        && serde_json::from_str::<Value>(template).is_err()
    {
        return Err(
            "the Content-Type is JSON but the body template is not a JSON document; put placeholders inside strings, e.g. {\"inputs\": \"{{payload}}\"}"
                .into(),
        );
    }
    Ok(())
}

/// Renders a body template.
pub fn render_body(template: &str, kind: BodyKind, ctx: &Context<'_>) -> Result<String, String> {
    match kind {
        BodyKind::Json => {
            let t: Value = serde_json::from_str(template)
                .map_err(|e| format!("the body template is not JSON: {e}"))?;
            Ok(render_value(&t, ctx)?.to_string())
        }
        BodyKind::Form => render_text(template, ctx, Encoding::Form),
        BodyKind::Text => render_text(template, ctx, Encoding::Text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx<'a>(payload: &'a Value, secrets: Option<&'a HashMap<String, String>>) -> Context<'a> {
        Context {
            correlation_id: "62e2f35160958b611e494564",
            payload,
            secrets,
        }
    }

    #[test]
    fn json_bodies_keep_types_and_escape_text() {
        let p = json!({"version": "1.2", "n": 3, "env": {"name": "prod"}, "quote": "a\"b"});
        let t = r#"{"ref": "main", "inputs": {"correlation_id": "{{correlation_id}}", "all": "{{payload}}",
                    "n": "{{payload.n}}", "env": "{{ payload.env.name }}", "note": "v{{payload.version}} {{payload.quote}}",
                    "missing": "{{payload.nope}}"}}"#;
        let out: Value =
            serde_json::from_str(&render_body(t, BodyKind::Json, &ctx(&p, None)).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"ref": "main", "inputs": {"correlation_id": "62e2f35160958b611e494564", "all": p,
                   "n": 3, "env": "prod", "note": "v1.2 a\"b", "missing": null}})
        );
    }

    #[test]
    fn form_bodies_are_percent_encoded() {
        let p = json!({"msg": "a b&c=d"});
        let out = render_body(
            "correlation_id={{correlation_id}}&note={{payload.msg}}",
            BodyKind::Form,
            &ctx(&p, None),
        )
        .unwrap();
        assert_eq!(
            out,
            "correlation_id=62e2f35160958b611e494564&note=a+b%26c%3Dd"
        );
    }

    #[test]
    fn secrets_are_inserted_once_and_never_from_the_payload() {
        let secrets: HashMap<String, String> = [("ci".to_owned(), "user:tok".to_owned())]
            .into_iter()
            .collect();
        // The payload tries to name a secret: it is inserted as text, not rendered again.
        let p = json!({"x": "{{secret.ci}}"});
        let c = ctx(&p, Some(&secrets));
        assert_eq!(
            render_text("Basic {{secret.ci|base64}}", &c, Encoding::Text).unwrap(),
            "Basic dXNlcjp0b2s="
        );
        assert_eq!(
            render_text("{{payload.x}}", &c, Encoding::Text).unwrap(),
            "{{secret.ci}}"
        );
        // A preview keeps secrets as placeholders.
        assert_eq!(
            render_text("Bearer {{secret.ci}}", &ctx(&p, None), Encoding::Text).unwrap(),
            "Bearer {{secret.ci}}"
        );
        let missing = render_text("{{secret.other}}", &c, Encoding::Text).unwrap_err();
        assert!(missing.contains("no secret named \"other\""), "{missing}");
        assert_eq!(
            secrets_of("a {{secret.x}} {{payload}} {{ secret.y | base64 }}"),
            ["x", "y"]
        );
    }

    fn secrets_of(t: &str) -> Vec<String> {
        secrets(t)
    }

    #[test]
    fn bad_templates_say_what_is_accepted() {
        for (t, want) in [
            ("{{ nope }}", "unknown placeholder"),
            ("{{payload..a}}", "payload path"),
            ("{{correlation_id | upper}}", "only filter is base64"),
            ("abc {{correlation_id", "not closed"),
            ("{{secret.}}", "name the secret"),
        ] {
            let e = check(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        assert!(check_body("a={{correlation_id}}", Some("application/json")).is_err());
        assert!(check_body("a={{correlation_id}}", None).is_ok());
        assert_eq!(body_kind("{\"a\":1}", None), BodyKind::Json);
        assert_eq!(
            body_kind("a=1", Some("application/x-www-form-urlencoded")),
            BodyKind::Form
        );
        assert_eq!(body_kind("hello", None), BodyKind::Text);
    }

    #[test]
    fn arrays_are_indexed() {
        let p = json!({"items": [{"id": 7}]});
        assert_eq!(
            render_text("{{payload.items.0.id}}", &ctx(&p, None), Encoding::Text).unwrap(),
            "7"
        );
    }
}
