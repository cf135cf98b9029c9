//! JSONC reading: comment stripping, and [`Fields`], a reader over one JSON object that tracks the
//! JSON path, type-checks each field, and rejects unknown keys with the nearest valid key as a hint.

use crate::error::{ConfigError, nearest};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Removes `//` line comments and `/* */` block comments outside strings (JSONC), keeping newlines so
/// that line numbers in syntax errors stay right.
pub fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Parses JSONC text into a JSON value; syntax errors carry line and column.
pub fn parse_jsonc(src: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(&strip_comments(src)).map_err(|e| {
        ConfigError::new(
            "",
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A mixlab field that mixsweep does not implement: its key, its default as JSON text (`None`: it
/// has no neutral value, any use is refused), and what to say about it.
pub struct MixlabField {
    pub key: &'static str,
    pub default: Option<&'static str>,
    pub note: &'static str,
}

/// Shorthand for a [`MixlabField`] table entry.
pub const fn mixlab(
    key: &'static str,
    default: Option<&'static str>,
    note: &'static str,
) -> MixlabField {
    MixlabField { key, default, note }
}

fn parse_default(text: &str) -> Value {
    serde_json::from_str(text).expect("a valid JSON default")
}

/// JSON equality with numbers compared by value (`0` equals `0.0`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Reads typed fields out of one JSON object. Call [`Fields::finish`] with the list of valid keys so
/// that any key not read is reported.
pub struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<&'a str>,
}

impl<'a> Fields<'a> {
    pub fn new(path: impl Into<String>, value: &'a Value) -> Result<Fields<'a>, ConfigError> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Fields {
                path,
                map,
                seen: BTreeSet::new(),
            }),
            other => Err(ConfigError::new(
                path,
                format!("expected an object, found {}", type_name(other)),
            )),
        }
    }

    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path_of(key), message)
    }

    pub fn raw(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.seen.insert(k.as_str());
        if v.is_null() { None } else { Some(v) }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.error(key, format!("expected a string, found {}", type_name(v)))),
        }
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.error(
                key,
                format!("expected true or false, found {}", type_name(v)),
            )),
        }
    }

    pub fn f64(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(self.error(key, format!("expected a number, found {}", type_name(v)))),
        }
    }

    /// A non-negative integer (a float with no fractional part is accepted, e.g. `1e6`).
    pub fn usize(&mut self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(u) = n.as_u64() {
                    return Ok(Some(u as usize));
                }
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e15 => Ok(Some(f as usize)),
                    _ => {
                        Err(self.error(key, format!("expected a non-negative integer, found {n}")))
                    }
                }
            }
            Some(v) => Err(self.error(
                key,
                format!("expected a non-negative integer, found {}", type_name(v)),
            )),
        }
    }

    pub fn array(&mut self, key: &str) -> Result<Option<&'a Vec<Value>>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.error(key, format!("expected an array, found {}", type_name(v)))),
        }
    }

    /// A positive integer, `default` when absent.
    pub fn positive(&mut self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.usize(key)? {
            None => Ok(default),
            Some(0) => Err(self.error(key, format!("{key} must be > 0"))),
            Some(v) => Ok(v),
        }
    }

    /// A number in `[lo, hi]` (or `[lo, hi)` when `hi_open`), `default` when absent.
    pub fn f64_in(
        &mut self,
        key: &str,
        lo: f64,
        hi: f64,
        hi_open: bool,
        default: f64,
    ) -> Result<f64, ConfigError> {
        match self.f64(key)? {
            None => Ok(default),
            Some(v) if v >= lo && (v < hi || (!hi_open && v == hi)) => Ok(v),
            Some(v) => Err(self.error(
                key,
                format!(
                    "{key}={v} must be in [{lo}, {hi}{}",
                    if hi_open { ")" } else { "]" }
                ),
            )),
        }
    }

    /// One of `options` (a string), `default` when absent; an unknown value names the options.
    pub fn choice(
        &mut self,
        key: &str,
        options: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, ConfigError> {
        match self.string(key)? {
            None => Ok(default),
            Some(v) => match options.iter().find(|o| **o == v) {
                Some(o) => Ok(o),
                None => {
                    let mut e = self.error(key, format!("unknown {key} {v:?}"));
                    e = match nearest(&v, options) {
                        Some(n) => e.with_hint(format!(
                            "did you mean {n:?}? (one of: {})",
                            options.join(", ")
                        )),
                        None => e.with_hint(format!("use one of: {}", options.join(", "))),
                    };
                    Err(e)
                }
            },
        }
    }

    /// mixlab fields this object may carry that mixsweep does not implement: each is accepted (and
    /// ignored) when written with its default value, and otherwise refused as not implemented yet.
    /// Call before reading the fields that depend on them, so that such a field is reported first.
    pub fn mixlab_defaults(&mut self, table: &[MixlabField]) -> Result<(), ConfigError> {
        for f in table {
            let Some((k, v)) = self.map.get_key_value(f.key) else {
                continue;
            };
            self.seen.insert(k.as_str());
            if f.default.is_some_and(|d| same_value(v, &parse_default(d))) || v.is_null() {
                continue;
            }
            let value = serde_json::to_string(v).unwrap_or_default();
            return Err(ConfigError::new(
                self.path_of(f.key),
                format!(
                    "{} = {value} is a mixlab feature that mixsweep does not implement yet",
                    f.key
                ),
            )
            .with_hint(match f.default {
                Some(d) => format!("remove it, or set it to its default {d}; {}", f.note),
                None => format!("remove it; {}", f.note),
            }));
        }
        Ok(())
    }

    /// Fails on the first key that was not read (with the nearest valid key as a hint).
    pub fn finish(self, valid: &[&str]) -> Result<(), ConfigError> {
        for key in self.map.keys() {
            if self.seen.contains(key.as_str()) {
                continue;
            }
            let path = self.path_of(key);
            let mut err = ConfigError::new(path, format!("unknown key `{key}`"));
            err = match nearest(key, valid) {
                Some(n) => err.with_hint(format!("did you mean `{n}`?")),
                None => err.with_hint(format!("valid keys here: {}", valid.join(", "))),
            };
            return Err(err);
        }
        Ok(())
    }
}
