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

    /// Fails on the first key that was not read. `unsupported` lists mixlab fields that exist there but
    /// are not implemented here (reported as such rather than as typos).
    pub fn finish(self, valid: &[&str], unsupported: &[&str]) -> Result<(), ConfigError> {
        for key in self.map.keys() {
            if self.seen.contains(key.as_str()) {
                continue;
            }
            let path = self.path_of(key);
            if unsupported.contains(&key.as_str()) {
                return Err(ConfigError::new(
                    path,
                    format!("`{key}` is a mixlab field that mixsweep does not implement yet"),
                )
                .with_hint("remove it; see docs/config.md for the supported fields"));
            }
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
