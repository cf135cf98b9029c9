//! `mixsweep diff A B`: how two trials differ, from storage alone: their model configs as JSON
//! paths, what their runs recorded (runner settings, MLX version, device, dtype, status) and their
//! metrics side by side with the difference `b − a`.
//!
//! A trial is named by its id or a unique prefix of it.

use crate::storage::Storage;
use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One differing JSON path: its value in `a` and in `b` (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Every leaf path where `a` and `b` differ (objects by key, arrays by index, `blocks[2].heads`).
pub fn json_diff(a: &Value, b: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("", Some(a), Some(b), &mut out);
    out
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                walk(&child(path, k), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                walk(&format!("{path}[{i}]"), x.get(i), y.get(i), out);
            }
        }
        (x, y) if x != y => out.push(Change {
            path: path.to_string(),
            a: x.cloned(),
            b: y.cloned(),
        }),
        _ => {}
    }
}

/// The full id of the one trial whose id starts with `prefix`.
async fn resolve(storage: &Storage, prefix: &str) -> Result<String> {
    let ids = storage.list_dirs("trials").await?;
    let hits: Vec<&String> = ids.iter().filter(|id| id.starts_with(prefix)).collect();
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no trial id starts with {prefix:?} in this storage (`mixsweep results` lists them)"
        ),
        many => bail!(
            "{prefix:?} is ambiguous: {} trials start with it ({}); give more characters",
            many.len(),
            many.iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What the runner recorded about a run, compared field by field.
const RUN_FIELDS: &[&str] = &[
    "status",
    "device",
    "mlx_version",
    "runner_version",
    "compute_dtype",
    "optimizer",
    "config_hash",
    "steps",
    "steps_completed",
    "tokens",
    "params",
];
/// Metrics shown side by side with `b − a`.
const METRICS: &[&str] = &[
    "best_val_loss",
    "final_val_loss",
    "final_train_loss",
    "val_bpb",
    "mean_tok_s",
    "wall_time_s",
    "peak_memory_bytes",
];

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The report: `(section, rows)` with rows of `[what, a, b, note]`.
pub async fn diff(storage: &Storage, a: &str, b: &str) -> Result<Vec<(String, Vec<[String; 4]>)>> {
    let (ia, ib) = (resolve(storage, a).await?, resolve(storage, b).await?);
    let get = |id: &str, file: &str| format!("trials/{id}/{file}");
    let config = |id: String| async move {
        storage
            .get_json(&get(&id, "config.json"))
            .await?
            .with_context(|| format!("trial {id} has no config.json in storage"))
    };
    let (ca, cb) = (config(ia.clone()).await?, config(ib.clone()).await?);
    let sa = storage
        .get_json(&get(&ia, "summary.json"))
        .await?
        .unwrap_or_default();
    let sb = storage
        .get_json(&get(&ib, "summary.json"))
        .await?
        .unwrap_or_default();
    let mut sections = vec![(
        "trials".to_string(),
        vec![["id".into(), ia.clone(), ib.clone(), String::new()]],
    )];
    let changes: Vec<[String; 4]> = json_diff(&ca, &cb)
        .into_iter()
        .map(|c| {
            [
                c.path,
                show(c.a.as_ref()),
                show(c.b.as_ref()),
                String::new(),
            ]
        })
        .collect();
    sections.push(("config (JSON paths that differ)".into(), changes));
    let listed = |id: String| async move {
        storage
            .get_json(&get(&id, "trial.json"))
            .await
            .map(Option::unwrap_or_default)
    };
    let (la, lb) = (listed(ia.clone()).await?, listed(ib.clone()).await?);
    let data: Vec<[String; 4]> = ["data_id", "train", "val", "variant", "seed"]
        .iter()
        .map(|f| {
            let (x, y) = (la.get(*f), lb.get(*f));
            let note = if x == y { "" } else { "differs" };
            [f.to_string(), show(x), show(y), note.into()]
        })
        .collect();
    sections.push(("data and place in the sweep".into(), data));
    let run: Vec<[String; 4]> = RUN_FIELDS
        .iter()
        .map(|f| {
            let (x, y) = (sa.get(*f), sb.get(*f));
            let note = if x == y { "" } else { "differs" };
            [f.to_string(), show(x), show(y), note.into()]
        })
        .collect();
    sections.push(("run".into(), run));
    let metrics: Vec<[String; 4]> = METRICS
        .iter()
        .filter(|m| sa.get(**m).is_some() || sb.get(**m).is_some())
        .map(|m| {
            let (x, y) = (sa.get(*m), sb.get(*m));
            let delta = match (x.and_then(Value::as_f64), y.and_then(Value::as_f64)) {
                (Some(x), Some(y)) => format!("b − a = {:+.6}", y - x),
                _ => String::new(),
            };
            [m.to_string(), show(x), show(y), delta]
        })
        .collect();
    sections.push((
        "metrics (one run each: no interval; compare groups over seeds with `results --group-by`)"
            .into(),
        metrics,
    ));
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_changed_added_and_removed_leaves() {
        let a = serde_json::json!({"model_dim": 64, "blocks": [{"type": "plain", "heads": 4}],
            "training": {"lr": 0.001, "seed": 1}});
        let b = serde_json::json!({"model_dim": 64, "blocks": [{"type": "plain", "heads": 8}, {"type": "swiglu"}],
            "training": {"lr": 0.003}});
        let paths: Vec<String> = json_diff(&a, &b).into_iter().map(|c| c.path).collect();
        assert_eq!(
            paths,
            [
                "blocks[0].heads",
                "blocks[1]",
                "training.lr",
                "training.seed"
            ]
        );
        assert!(json_diff(&a, &a).is_empty());
    }
}
