//! Reading typed fields out of a JSON object while collecting every error at once.

use cistern_core::FieldError;
use serde_json::{Map, Value};

/// The JSON type name of a value, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON object being read, with the path that prefixes its field names in errors.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

/// Errors collected while reading a payload.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    /// Records an error.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }
    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> Obj<'a> {
    /// Wraps an object; `prefix` is its path (`""` for the payload root).
    pub fn new(map: &'a Map<String, Value>, prefix: impl Into<String>) -> Self {
        Self {
            map,
            prefix: prefix.into(),
        }
    }

    /// The full path of `key` within the payload.
    pub fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The value of `key`; `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The first of `keys` present, with its name.
    pub fn get_any(&self, keys: &[&'static str]) -> Option<(&'static str, &'a Value)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (*k, v)))
    }

    /// True when `key` is present and not null.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// A required text field (a number is taken as its decimal text).
    pub fn req_str(&self, key: &str, errs: &mut Errors) -> Option<String> {
        match self.get(key) {
            None => {
                errs.push(self.path(key), "is required (a non-empty string)");
                None
            }
            Some(v) => self.text(key, v, errs),
        }
    }

    /// An optional text field (a number is taken as its decimal text; empty means absent).
    pub fn opt_str(&self, key: &str, errs: &mut Errors) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(v) => self.text(key, v, errs),
        }
    }

    /// The first present of several alias keys, as optional text.
    pub fn opt_str_any(&self, keys: &[&'static str], errs: &mut Errors) -> Option<String> {
        keys.iter().find_map(|k| self.opt_str(k, errs))
    }

    fn text(&self, key: &str, v: &Value, errs: &mut Errors) -> Option<String> {
        match v {
            Value::String(s) if s.trim().is_empty() => {
                errs.push(self.path(key), "must not be empty");
                None
            }
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                errs.push(
                    self.path(key),
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A required integer.
    pub fn req_int(&self, key: &str, unit: &str, errs: &mut Errors) -> Option<i64> {
        match self.get(key) {
            None => {
                errs.push(self.path(key), format!("is required (an integer, {unit})"));
                None
            }
            Some(v) => self.int(key, v, unit, errs),
        }
    }

    /// An optional integer.
    pub fn opt_int(&self, key: &str, unit: &str, errs: &mut Errors) -> Option<i64> {
        self.get(key).and_then(|v| self.int(key, v, unit, errs))
    }

    fn int(&self, key: &str, v: &Value, unit: &str, errs: &mut Errors) -> Option<i64> {
        if let Some(i) = v.as_i64() {
            return Some(i);
        }
        if let Some(f) = v.as_f64() {
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                return Some(f as i64);
            }
            errs.push(
                self.path(key),
                format!("must be a whole number ({unit}), got {v}"),
            );
            return None;
        }
        let got = match v {
            Value::String(s) => format!("string \"{}\"", truncate(s, 40)),
            other => type_name(other).to_owned(),
        };
        errs.push(
            self.path(key),
            format!("must be an integer ({unit}), got {got}"),
        );
        None
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str, errs: &mut Errors) -> Option<bool> {
        match self.get(key) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                errs.push(
                    self.path(key),
                    format!(
                        "must be a boolean (true or false), got {}",
                        type_name(other)
                    ),
                );
                None
            }
        }
    }

    /// An optional array; a wrong type is an error.
    pub fn opt_array(&self, key: &str, errs: &mut Errors) -> Option<&'a Vec<Value>> {
        match self.get(key) {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(other) => {
                errs.push(
                    self.path(key),
                    format!("must be an array, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional object; a wrong type is an error.
    pub fn opt_object(&self, key: &str, errs: &mut Errors) -> Option<Obj<'a>> {
        match self.get(key) {
            None => None,
            Some(Value::Object(m)) => Some(Obj::new(m, self.path(key))),
            Some(other) => {
                errs.push(
                    self.path(key),
                    format!("must be an object, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional array of strings.
    pub fn opt_str_list(&self, key: &str, errs: &mut Errors) -> Vec<String> {
        let Some(items) = self.opt_array(key, errs) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                Value::String(_) => {
                    errs.push(format!("{}[{i}]", self.path(key)), "must not be empty")
                }
                other => errs.push(
                    format!("{}[{i}]", self.path(key)),
                    format!("must be a string, got {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// An optional array of objects, kept as sent.
    pub fn opt_object_list(&self, key: &str, errs: &mut Errors) -> Vec<Value> {
        let Some(items) = self.opt_array(key, errs) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.is_object() {
                out.push(item.clone());
            } else {
                errs.push(
                    format!("{}[{i}]", self.path(key)),
                    format!("must be an object, got {}", type_name(item)),
                );
            }
        }
        out
    }
}

/// The first `max` characters of `s`.
pub fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
