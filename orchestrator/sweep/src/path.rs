//! Parameter paths into a model's JSON: `training.lr`, `model_dim`, `blocks[0].heads`,
//! `blocks[*].kv_heads` (every block whose type has the field), `blocks[type=plain].kv_heads`
//! (every block of that type).

use serde_json::Value;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Index(usize),
    All,
    Type(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    key: String,
    selector: Option<Selector>,
}

/// A parsed parameter path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamPath {
    text: String,
    segments: Vec<Segment>,
}

impl fmt::Display for ParamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl ParamPath {
    pub fn parse(text: &str) -> Result<ParamPath, String> {
        let bad = |why: &str| {
            format!(
                "invalid parameter path {text:?}: {why} (examples: training.lr, blocks[0].heads, blocks[*].kv_heads, blocks[type=plain].kv_heads)"
            )
        };
        let mut segments = vec![];
        for part in text.split('.') {
            let (key, selector) = match part.find('[') {
                None => (part, None),
                Some(i) => {
                    let Some(inner) = part[i + 1..].strip_suffix(']') else {
                        return Err(bad("unclosed `[`"));
                    };
                    let sel = if inner == "*" {
                        Selector::All
                    } else if let Some(t) = inner.strip_prefix("type=") {
                        if !valid_key(t) {
                            return Err(bad("bad block type in filter"));
                        }
                        Selector::Type(t.to_string())
                    } else {
                        Selector::Index(
                            inner
                                .parse()
                                .map_err(|_| bad("index must be a number, `*` or `type=NAME`"))?,
                        )
                    };
                    (&part[..i], Some(sel))
                }
            };
            if !valid_key(key) {
                return Err(bad("empty or invalid key"));
            }
            segments.push(Segment {
                key: key.to_string(),
                selector,
            });
        }
        Ok(ParamPath {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Sets the value at every place the path selects; returns how many places were set.
    pub fn set(&self, doc: &mut Value, value: &Value) -> Result<usize, String> {
        let n = set_in(doc, &self.segments, value, false)?;
        if n == 0 {
            return Err(format!(
                "parameter path {} selects nothing in this config",
                self.text
            ));
        }
        Ok(n)
    }

    /// The single value the path selects (for tie expressions).
    pub fn get<'a>(&self, doc: &'a Value) -> Result<&'a Value, String> {
        let mut found = vec![];
        get_in(doc, &self.segments, &mut found);
        match found.len() {
            1 => Ok(found[0]),
            0 => Err(format!("{} is not set in this config", self.text)),
            n => Err(format!(
                "{} selects {n} values; a tie needs exactly one",
                self.text
            )),
        }
    }
}

/// Whether `element` (an object under a wildcard or filter) takes `key`: it has it, or it is a block
/// whose type declares it.
fn accepts(element: &Value, key: &str) -> bool {
    if element.get(key).is_some() {
        return true;
    }
    element
        .get("type")
        .and_then(Value::as_str)
        .and_then(mixsweep_model::blocks::find)
        .is_some_and(|t| t.fields.contains(&key))
}

fn set_in(
    doc: &mut Value,
    segs: &[Segment],
    value: &Value,
    filtered: bool,
) -> Result<usize, String> {
    let Some((seg, rest)) = segs.split_first() else {
        return Ok(0);
    };
    let obj = match doc {
        Value::Object(m) => m,
        _ => return Err(format!("`{}` is not inside an object", seg.key)),
    };
    match &seg.selector {
        None if rest.is_empty() => {
            if filtered && !obj.contains_key(&seg.key) && !accepts(doc, &seg.key) {
                return Ok(0);
            }
            doc.as_object_mut()
                .unwrap()
                .insert(seg.key.clone(), value.clone());
            Ok(1)
        }
        None => {
            let child = obj
                .entry(seg.key.clone())
                .or_insert_with(|| Value::Object(Default::default()));
            set_in(child, rest, value, filtered)
        }
        Some(sel) => {
            let Some(Value::Array(items)) = obj.get_mut(&seg.key) else {
                return Err(format!("`{}` is not an array", seg.key));
            };
            if rest.is_empty() {
                return Err(format!(
                    "a path cannot end in a selector (`{}[..]`)",
                    seg.key
                ));
            }
            let mut count = 0;
            let len = items.len();
            for (i, item) in items.iter_mut().enumerate() {
                let selected = match sel {
                    Selector::Index(k) => {
                        if *k >= len {
                            return Err(format!(
                                "`{}[{k}]` is out of range ({len} elements)",
                                seg.key
                            ));
                        }
                        i == *k
                    }
                    Selector::All => true,
                    Selector::Type(t) => {
                        item.get("type").and_then(Value::as_str) == Some(t.as_str())
                    }
                };
                if selected {
                    count += set_in(item, rest, value, !matches!(sel, Selector::Index(_)))?;
                }
            }
            Ok(count)
        }
    }
}

fn get_in<'a>(doc: &'a Value, segs: &[Segment], out: &mut Vec<&'a Value>) {
    let Some((seg, rest)) = segs.split_first() else {
        out.push(doc);
        return;
    };
    let Some(child) = doc.get(&seg.key) else {
        return;
    };
    match &seg.selector {
        None => get_in(child, rest, out),
        Some(sel) => {
            if let Value::Array(items) = child {
                for (i, item) in items.iter().enumerate() {
                    let ok = match sel {
                        Selector::Index(k) => i == *k,
                        Selector::All => true,
                        Selector::Type(t) => {
                            item.get("type").and_then(Value::as_str) == Some(t.as_str())
                        }
                    };
                    if ok {
                        get_in(item, rest, out);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> Value {
        json!({"model_dim": 128, "blocks": [
            {"type": "plain", "heads": 4}, {"type": "swiglu"}, {"type": "plain", "heads": 4, "kv_heads": 4}, {"type": "mamba"}
        ]})
    }

    #[test]
    fn set_nested_and_indexed() {
        let mut m = model();
        ParamPath::parse("training.lr")
            .unwrap()
            .set(&mut m, &json!(0.01))
            .unwrap();
        assert_eq!(m["training"]["lr"], json!(0.01));
        ParamPath::parse("blocks[1].type")
            .unwrap()
            .set(&mut m, &json!("mlp"))
            .unwrap();
        assert_eq!(m["blocks"][1]["type"], "mlp");
        assert!(
            ParamPath::parse("blocks[9].heads")
                .unwrap()
                .set(&mut m, &json!(2))
                .is_err()
        );
    }

    #[test]
    fn wildcard_sets_only_blocks_that_take_the_field() {
        let mut m = model();
        let n = ParamPath::parse("blocks[*].kv_heads")
            .unwrap()
            .set(&mut m, &json!(2))
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(m["blocks"][0]["kv_heads"], 2);
        assert!(m["blocks"][1].get("kv_heads").is_none());
        assert!(m["blocks"][3].get("kv_heads").is_none());
    }

    #[test]
    fn type_filter() {
        let mut m = model();
        assert_eq!(
            ParamPath::parse("blocks[type=mamba].state_size")
                .unwrap()
                .set(&mut m, &json!(8))
                .unwrap(),
            1
        );
        assert_eq!(m["blocks"][3]["state_size"], 8);
        let e = ParamPath::parse("blocks[type=rwkv].heads")
            .unwrap()
            .set(&mut m, &json!(8))
            .unwrap_err();
        assert!(e.contains("selects nothing"), "{e}");
    }

    #[test]
    fn get_and_parse_errors() {
        let m = model();
        assert_eq!(
            ParamPath::parse("model_dim").unwrap().get(&m).unwrap(),
            &json!(128)
        );
        assert!(
            ParamPath::parse("blocks[*].heads")
                .unwrap()
                .get(&m)
                .unwrap_err()
                .contains("exactly one")
        );
        assert!(ParamPath::parse("blocks[x].heads").is_err());
        assert!(ParamPath::parse("training..lr").is_err());
    }
}
