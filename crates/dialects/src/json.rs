//! Strict JSON reading: UTF-8 checked, duplicate keys refused, and errors that say where and why
//! (including the curly quotes that documentation pages put in their examples).

use cistern_core::FieldError;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as one JSON document. `field` names the document in errors (empty for the body,
/// `payload` for an embedded JSON string).
pub fn parse(bytes: &[u8], field: &str) -> Result<Value, FieldError> {
    let what = if field.is_empty() { "body" } else { field };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        FieldError::new(
            field,
            format!(
                "{what} is not valid UTF-8 (invalid byte sequence at byte offset {}); send JSON encoded as UTF-8",
                e.valid_up_to()
            ),
        )
    })?;
    if text.trim().is_empty() {
        return Err(FieldError::new(
            field,
            format!("{what} is empty; expected a JSON object"),
        ));
    }
    match serde_json::from_str::<Strict>(text) {
        Ok(Strict(v)) => Ok(v),
        Err(e) => Err(FieldError::new(field, describe(&e, text, what))),
    }
}

/// Builds the message for a JSON syntax error: where, what, and a hint for the usual culprits.
fn describe(e: &serde_json::Error, text: &str, what: &str) -> String {
    let raw = e.to_string();
    let detail = raw
        .rsplit_once(" at line ")
        .map(|(head, _)| head.to_owned())
        .unwrap_or(raw);
    let detail = if detail.contains("recursion limit exceeded") {
        "nesting is too deep (at most 128 levels of arrays and objects)".to_owned()
    } else {
        detail
    };
    // serde_json puts errors found at a line break at "column 0" of the next line.
    let place = if e.column() == 0 && e.line() > 1 {
        format!("at the end of line {}", e.line() - 1)
    } else {
        format!("at line {} column {}", e.line(), e.column())
    };
    let mut msg = format!("invalid JSON in {what} {place}: {detail}");
    if let Some((line, col, ch)) = first_curly_quote(text) {
        msg.push_str(&format!(
            "; the {what} contains a curly quote ({ch}) at line {line} column {col}: curly quotes (“ ” ‘ ’) are not JSON quotes, use straight double quotes (\")"
        ));
    } else if text.contains('\'') && detail.contains("key must be a string")
        || detail.contains("expected value") && text.contains('\'')
    {
        msg.push_str("; JSON strings and keys take double quotes (\"), not single quotes (')");
    }
    if text.trim_start().starts_with('\'') {
        msg.push_str(
            "; the text starts with a single quote: remove the shell quoting ('…') around the JSON",
        );
    }
    if detail.contains("control character") {
        msg.push_str("; a JSON string cannot hold a raw line break or control character: escape it (\\n), and to send JSON inside a string escape its quotes (\\\") or send it as an object");
    }
    if detail.contains("expected `,` or `}`") || detail.contains("expected `,` or `]`") {
        msg.push_str(
            "; a comma is probably missing before this point (at the end of the previous value)",
        );
    }
    if detail.contains("trailing comma") {
        msg.push_str("; remove the comma after the last element");
    }
    msg
}

fn first_curly_quote(text: &str) -> Option<(usize, usize, char)> {
    for (ln, line) in text.lines().enumerate() {
        for (col, ch) in line.chars().enumerate() {
            if matches!(ch, '\u{201C}' | '\u{201D}' | '\u{2018}' | '\u{2019}') {
                return Some((ln + 1, col + 1, ch));
            }
        }
    }
    None
}

/// A JSON value whose objects may not repeat a key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key \"{key}\" (each key may appear once per object)"
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curly_quotes_are_named() {
        let e = parse("{\n“job_name”: “x”\n}".as_bytes(), "").unwrap_err();
        assert!(e.message.contains("line 2 column 1"), "{}", e.message);
        assert!(e.message.contains("curly quote"), "{}", e.message);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = parse(br#"{"a":1,"a":2}"#, "").unwrap_err();
        assert!(e.message.contains("duplicate key \"a\""), "{}", e.message);
    }

    #[test]
    fn invalid_utf8_and_empty_bodies() {
        assert!(parse(b"{\"a\":\"\xff\"}", "")
            .unwrap_err()
            .message
            .contains("UTF-8"));
        assert!(parse(b"  ", "").unwrap_err().message.contains("empty"));
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = "[".repeat(100_000);
        let e = parse(deep.as_bytes(), "").unwrap_err();
        assert!(e.message.contains("nesting is too deep"), "{}", e.message);
    }

    #[test]
    fn trailing_comma_hint() {
        let e = parse(b"{\"a\": 1,\n}", "").unwrap_err();
        assert!(e.message.contains("trailing comma"), "{}", e.message);
    }
}
