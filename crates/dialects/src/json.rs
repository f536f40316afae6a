//! Strict JSON reading: UTF-8 checked, duplicate keys refused, and errors that say where and why
//! (including the curly quotes that documentation pages put in their examples).

use cistern_core::FieldError;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Most elements one JSON array may hold. Real payloads stay far below it (a run's commits, stages
/// or parameters); beyond it a request would hold the group-commit writer for everyone.
pub const MAX_ARRAY_ITEMS: usize = 5_000;

/// Parses `bytes` as one JSON document. `field` names the document in errors (empty for the body,
/// `payload` for an embedded JSON string).
pub fn parse(bytes: &[u8], field: &str) -> Result<Value, FieldError> {
    let what = if field.is_empty() { "body" } else { field };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if looks_utf16(bytes) {
        return Err(FieldError::new(
            field,
            format!("{what} is UTF-16 text (a zero byte beside each character, or a UTF-16 byte order mark); send JSON encoded as UTF-8"),
        ));
    }
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

/// True for UTF-16 (or UTF-32) text: its byte order mark, or ASCII characters each beside a zero
/// byte (JSON text starts with ASCII).
fn looks_utf16(b: &[u8]) -> bool {
    b.starts_with(b"\xFF\xFE")
        || b.starts_with(b"\xFE\xFF")
        || (b.len() >= 4 && b[0] != 0 && b[1] == 0 && b[3] == 0)
        || (b.len() >= 4 && b[0] == 0 && b[1] != 0 && b[2] == 0)
}

/// Builds the message for a JSON syntax error: where (line and column counted in characters, as
/// editors count them), what, and what probably caused it. The parser stops at the first error, so
/// the text is also scanned for the usual culprits of payloads copied from documentation pages
/// (curly and single quotes, non-breaking spaces, strings left open, trailing commas): the sender
/// learns every one of them from one reply instead of one per attempt.
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
    let at = char_position(text, e.line(), e.column());
    let mut msg = format!(
        "invalid JSON in {what} at line {} column {}: {detail}",
        at.0, at.1
    );
    let culprits = scan(text);
    // Everything before the error parsed, so a culprit at or before it is what stopped the parser.
    let (cause, others) = match culprits.split_first() {
        Some((first, rest)) if first.first <= at => (Some(first), rest),
        _ => (None, culprits.as_slice()),
    };
    match cause {
        Some(c) => {
            msg.push_str(&format!(
                "; at line {} column {}: {}",
                c.first.0,
                c.first.1,
                c.kind.explain()
            ));
            if let Some(next) = c.next {
                msg.push_str(&format!(
                    " ({} more like it in the {what}, the next at line {} column {})",
                    c.count - 1,
                    next.0,
                    next.1
                ));
            }
        }
        None => {
            if detail.contains("expected `,` or `}`") || detail.contains("expected `,` or `]`") {
                msg.push_str(
                    "; a comma is probably missing before this point (at the end of the previous value)",
                );
            }
            if detail.contains("trailing comma") {
                msg.push_str("; remove the comma after the last element");
            }
        }
    }
    if !others.is_empty() {
        let list: Vec<String> = others
            .iter()
            .map(|c| {
                let mut s = format!(
                    "line {} column {}: {}",
                    c.first.0,
                    c.first.1,
                    c.kind.explain()
                );
                if c.count > 1 {
                    s.push_str(&format!(" ({} in all)", c.count));
                }
                s
            })
            .collect();
        msg.push_str(&format!(
            ". Further problems in the {what}: {}",
            list.join("; ")
        ));
    }
    if text.trim_start().starts_with('\'') {
        msg.push_str(
            "; the text starts with a single quote: remove the shell quoting ('…') around the JSON",
        );
    }
    if detail.contains("control character") {
        msg.push_str("; a JSON string cannot hold a raw line break or control character: escape it (\\n), and to send JSON inside a string escape its quotes (\\\") or send it as an object");
    }
    msg
}

/// The (line, column) in characters of serde_json's (line, byte column). Column 0 means the line
/// break that ends the previous line.
fn char_position(text: &str, line: usize, byte_col: usize) -> (usize, usize) {
    if line == 0 {
        return (0, 0);
    }
    let line_text = |n: usize| text.split('\n').nth(n - 1).unwrap_or("");
    if byte_col == 0 {
        if line > 1 {
            let prev = line_text(line - 1).trim_end_matches('\r');
            return (line - 1, prev.chars().count() + 1);
        }
        return (1, 1);
    }
    let l = line_text(line);
    let mut end = (byte_col - 1).min(l.len());
    while !l.is_char_boundary(end) {
        end -= 1;
    }
    (line, l[..end].chars().count() + 1)
}

/// A usual culprit of JSON written by hand or copied from a web page.
#[derive(Debug, Clone, Copy)]
enum Culprit {
    /// `“ ” ‘ ’` outside a string.
    CurlyQuote(char),
    /// `'` outside a string.
    SingleQuote,
    /// A space that is not JSON whitespace (non-breaking, zero-width, byte order mark…).
    OddSpace(char),
    /// A string still open at the end of its line.
    UnclosedString,
    /// A comma right before `]` or `}`.
    TrailingComma,
}

impl Culprit {
    fn same_kind(self, other: Culprit) -> bool {
        std::mem::discriminant(&self) == std::mem::discriminant(&other)
    }

    fn explain(self) -> String {
        match self {
            Culprit::CurlyQuote(ch) => format!(
                "a curly quote ({ch}); curly quotes (“ ” ‘ ’) are not JSON quotes, use straight double quotes (\")"
            ),
            Culprit::SingleQuote => {
                "a single quote ('); JSON strings and keys take double quotes (\"), not single quotes (')".to_owned()
            }
            Culprit::OddSpace(ch) => {
                let name = match ch {
                    '\u{00A0}' | '\u{202F}' => "non-breaking space",
                    '\u{FEFF}' => "byte order mark",
                    '\u{200B}' => "zero-width space",
                    _ => "Unicode space",
                };
                format!(
                    "a {name} (U+{:04X}), which is not JSON whitespace; use plain spaces, tabs or line breaks (text copied from web pages often carries these)",
                    ch as u32
                )
            }
            Culprit::UnclosedString => {
                "a string that is not closed before the end of its line; a closing double quote (\") is missing (JSON strings cannot span lines: write \\n for a line break)".to_owned()
            }
            Culprit::TrailingComma => {
                "a trailing comma; remove the comma after the last element".to_owned()
            }
        }
    }
}

/// One kind of culprit: where it first occurs, where next, and how often.
#[derive(Debug, Clone, Copy)]
struct Tally {
    kind: Culprit,
    first: (usize, usize),
    next: Option<(usize, usize)>,
    count: usize,
}

/// Reads the text as a person would, tracking strings (a straight-quoted string ends only at a
/// straight quote; one opened by a curly or single quote ends at any quote of its family), and
/// tallies the culprits found outside strings, in order of first occurrence.
fn scan(text: &str) -> Vec<Tally> {
    const STRAIGHT: &[char] = &['"'];
    const DOUBLE: &[char] = &['"', '\u{201C}', '\u{201D}'];
    const SINGLE: &[char] = &['\'', '\u{2018}', '\u{2019}'];
    let mut tallies: Vec<Tally> = Vec::new();
    let mut note = |kind: Culprit, at: (usize, usize)| match tallies
        .iter_mut()
        .find(|t| t.kind.same_kind(kind))
    {
        Some(t) => {
            t.count += 1;
            t.next.get_or_insert(at);
        }
        None => tallies.push(Tally {
            kind,
            first: at,
            next: None,
            count: 1,
        }),
    };
    let quote_kind = |c: char| {
        if c == '\'' {
            Culprit::SingleQuote
        } else {
            Culprit::CurlyQuote(c)
        }
    };
    // In a string: the quotes that close it and where it opened.
    let mut open: Option<(&[char], (usize, usize))> = None;
    let (mut line, mut col) = (1usize, 0usize);
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\n' {
            if let Some((_, at)) = open.take() {
                note(Culprit::UnclosedString, at);
            }
            line += 1;
            col = 0;
            continue;
        }
        col += 1;
        if let Some((closers, _)) = open {
            if c == '\\' {
                if chars.peek().is_some_and(|(_, n)| *n != '\n') {
                    chars.next();
                    col += 1;
                }
            } else if closers.contains(&c) {
                if c != '"' {
                    note(quote_kind(c), (line, col));
                }
                open = None;
            }
            continue;
        }
        match c {
            '"' => open = Some((STRAIGHT, (line, col))),
            '\u{201C}' | '\u{201D}' => {
                note(Culprit::CurlyQuote(c), (line, col));
                open = Some((DOUBLE, (line, col)));
            }
            '\'' | '\u{2018}' | '\u{2019}' => {
                note(quote_kind(c), (line, col));
                open = Some((SINGLE, (line, col)));
            }
            ',' => {
                let after = text[i + 1..].trim_start_matches(char::is_whitespace);
                if after.starts_with([']', '}']) {
                    note(Culprit::TrailingComma, (line, col));
                }
            }
            ' ' | '\t' | '\r' => {}
            '\u{FEFF}' | '\u{200B}' => note(Culprit::OddSpace(c), (line, col)),
            c if c.is_whitespace() => note(Culprit::OddSpace(c), (line, col)),
            _ => {}
        }
    }
    if let Some((_, at)) = open {
        note(Culprit::UnclosedString, at);
    }
    tallies
}

/// The text with each NUL (`\u0000`) replaced by U+FFFD. JSON may escape a NUL into a string,
/// but no store keeps one in text (PostgreSQL refuses it), so every string is read without them
/// and both stores keep the same text.
fn without_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
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
        Ok(Value::String(without_nul(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(without_nul(v)))
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
            if out.len() == MAX_ARRAY_ITEMS {
                return Err(de::Error::custom(format!(
                    "an array holds more than {MAX_ARRAY_ITEMS} elements (at most {MAX_ARRAY_ITEMS} per array)"
                )));
            }
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let key = without_nul(key);
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
    fn single_quotes_are_named_where_they_are() {
        let e = parse(b"{\"key\": 'microservice'}", "").unwrap_err();
        assert!(e.message.contains("line 1 column 9"), "{}", e.message);
        assert!(
            e.message.contains("single quote (') at")
                || e.message.contains("column 9: a single quote"),
            "{}",
            e.message
        );
        assert!(e.message.contains("take double quotes"), "{}", e.message);
        // An apostrophe inside a string is content, not a culprit.
        let e = parse(b"{\"a\": \"it's\" \"b\": 1}", "").unwrap_err();
        assert!(!e.message.contains("single quote"), "{}", e.message);
        assert!(
            e.message.contains("comma is probably missing"),
            "{}",
            e.message
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // `é` is two bytes; the quote is the 12th character.
        let e = parse("{\"a\": \"é\", 'x': 1}".as_bytes(), "").unwrap_err();
        assert!(e.message.contains("line 1 column 12"), "{}", e.message);
    }

    #[test]
    fn non_breaking_spaces_are_named() {
        let e = parse("{\n\u{a0} \"a\": 1}".as_bytes(), "").unwrap_err();
        assert!(e.message.contains("line 2 column 1"), "{}", e.message);
        assert!(
            e.message.contains("non-breaking space (U+00A0)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unclosed_string_is_named_at_its_opening_quote() {
        let e = parse(b"{\"a\": \"abc\n\"b\": 1}", "").unwrap_err();
        assert!(e.message.contains("line 1 column 11"), "{}", e.message);
        assert!(
            e.message
                .contains("at line 1 column 7: a string that is not closed"),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_culprit_is_listed_in_one_reply() {
        let text = "{\n  \"a\": \"x\n  \"b\": “1”,\n  \"c\": ['p', 'q'],\n}";
        let e = parse(text.as_bytes(), "").unwrap_err();
        let m = &e.message;
        assert!(
            m.contains("at line 2 column 8: a string that is not closed"),
            "{m}"
        );
        assert!(m.contains("line 3 column 8: a curly quote (“)"), "{m}");
        assert!(m.contains("(2 in all)"), "{m}");
        assert!(m.contains("line 4 column 9: a single quote"), "{m}");
        assert!(m.contains("(4 in all)"), "{m}");
        assert!(m.contains("line 4 column 18: a trailing comma"), "{m}");
    }

    #[test]
    fn utf16_is_named() {
        for body in [
            b"\xFF\xFE{\x00}\x00".as_slice(),
            b"{\x00\"\x00a\x00\"\x00".as_slice(),
            b"\x00{\x00\"\x00a".as_slice(),
        ] {
            let e = parse(body, "").unwrap_err();
            assert!(e.message.contains("UTF-16"), "{}", e.message);
        }
    }

    #[test]
    fn nul_characters_are_replaced() {
        let v = parse(br#"{"a\u0000": "x\u0000y"}"#, "").unwrap();
        assert_eq!(v["a\u{FFFD}"], "x\u{FFFD}y");
    }

    #[test]
    fn arrays_are_bounded() {
        let ok = format!("[{}]", vec!["1"; MAX_ARRAY_ITEMS].join(","));
        assert!(parse(ok.as_bytes(), "").is_ok());
        let long = format!("{{\"a\": [{}]}}", vec!["1"; MAX_ARRAY_ITEMS + 1].join(","));
        let e = parse(long.as_bytes(), "").unwrap_err();
        assert!(
            e.message.contains("at most 5000 per array"),
            "{}",
            e.message
        );
    }

    #[test]
    fn trailing_comma_hint() {
        let e = parse(b"{\"a\": 1,\n}", "").unwrap_err();
        assert!(e.message.contains("trailing comma"), "{}", e.message);
    }
}
