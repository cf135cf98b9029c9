//! `mixsweep results` and `mixsweep status`: tables derived from storage alone (the sweep's
//! `trials.jsonl` and each trial's `summary.json` / `attempt.json`), ranked and aggregated with polars.

use crate::storage::{Storage, TrialState, TrialStates};
use anyhow::{Context, Result, bail};
use polars::prelude::*;
use std::path::Path;

/// Where a sweep's results live: storage root and sweep name.
pub struct Target {
    pub root: String,
    pub name: String,
    pub goal_max: bool,
    pub metric: String,
    /// Read the metric off each trial's curve at this budget instead of at its end.
    pub at: Option<crate::curves::At>,
}

/// Resolves `<sweep name | sweep.yaml | storage URL ending in /sweeps/<name>>`.
pub fn resolve(arg: &str, storage: Option<String>) -> Result<Target> {
    let default_root = || storage.clone().unwrap_or_else(|| "./mixsweep-runs".into());
    if (arg.ends_with(".yaml") || arg.ends_with(".yml")) && Path::new(arg).is_file() {
        let src = std::fs::read_to_string(arg)?;
        let spec = mixsweep_sweep::parse_spec(&src)
            .map_err(|e| anyhow::anyhow!("{arg}: invalid sweep file: {e}"))?;
        let (metric, goal) = spec.metric();
        let root = storage
            .or(spec.storage.clone())
            .unwrap_or_else(|| "./mixsweep-runs".into());
        return Ok(Target {
            root,
            name: spec.name,
            goal_max: goal == mixsweep_sweep::spec::Goal::Max,
            metric,
            at: None,
        });
    }
    if let Some((root, name)) = arg.rsplit_once("/sweeps/") {
        return Ok(Target {
            root: root.into(),
            name: name.trim_end_matches('/').into(),
            goal_max: false,
            metric: "val_loss".into(),
            at: None,
        });
    }
    Ok(Target {
        root: default_root(),
        name: arg.into(),
        goal_max: false,
        metric: "val_loss".into(),
        at: None,
    })
}

/// One row per trial, sorted by the metric.
pub async fn trials_frame(t: &Target) -> Result<DataFrame> {
    let storage = Storage::open_existing(&t.root).with_context(|| {
        format!(
            "no results: storage {} does not exist (pass --storage)",
            t.root
        )
    })?;
    let listing = storage
        .get(&format!("sweeps/{}/trials.jsonl", t.name))
        .await?
        .with_context(|| {
            format!(
                "no sweep {:?} in storage {} (run it first, or pass --storage)",
                t.name, t.root
            )
        })?;
    let (mut ids, mut variants, mut overrides_col) = (
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<String>::new(),
    );
    let (mut seeds, mut params) = (Vec::<u64>::new(), Vec::<u64>::new());
    let mut state_vals = Vec::<Option<u64>>::new();
    let (mut best, mut fin, mut train, mut toks, mut wall, mut status, mut metric) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut reported, mut any_summary) = (false, false);
    // one column per swept path, in the trials' order
    let mut swept: std::collections::BTreeMap<String, Vec<Option<String>>> = Default::default();
    for (row, line) in String::from_utf8_lossy(&listing).lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        for (k, x) in v["overrides"].as_object().into_iter().flatten() {
            let text = x
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| x.to_string());
            let col = swept.entry(k.clone()).or_default();
            col.resize(row, None);
            col.push(Some(text));
        }
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let overrides = v["overrides"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, x)| format!("{k}={x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let s = storage.summary(&id).await?;
        let state = storage.trial_state(&id).await?;
        ids.push(id);
        variants.push(v["variant"].as_str().unwrap_or_default().into());
        overrides_col.push(overrides);
        seeds.push(v["seed"].as_u64().unwrap_or(0));
        params.push(v["params"].as_u64().unwrap_or(0));
        state_vals.push(
            s.as_ref()
                .map(|s| s.inference_state_values as u64)
                .filter(|v| *v > 0),
        );
        best.push(s.as_ref().and_then(|s| s.best_val_loss));
        fin.push(s.as_ref().and_then(|s| s.final_val_loss));
        train.push(s.as_ref().and_then(|s| s.final_train_loss));
        toks.push(s.as_ref().map(|s| s.mean_tok_s));
        wall.push(s.as_ref().map(|s| s.wall_time_s));
        status.push(match state {
            TrialState::Done => "done".to_string(),
            TrialState::New => "new".to_string(),
            _ => s
                .as_ref()
                .map(|s| s.status.to_string())
                .unwrap_or_else(|| state.as_str().to_string()),
        });
        // Only completed trials are ranked: a diverged or interrupted trial's best validation loss
        // may be its untrained step-0 loss.
        metric.push(match (&s, t.at) {
            (Some(s), Some(at)) if state == TrialState::Done => {
                crate::curves::metric_at(&storage, &ids[ids.len() - 1], s, &t.metric, at).await?
            }
            (Some(s), None) if state == TrialState::Done => s.metric(&t.metric),
            _ => None,
        });
        reported |= s.as_ref().is_some_and(|s| s.reports(&t.metric));
        any_summary |= s.is_some();
    }
    if any_summary && !reported {
        bail!(
            "no trial of sweep {:?} reports the metric {:?} (summary.json has e.g. best_val_loss, final_val_loss, \
             final_train_loss, val_bpb, mean_tok_s); fix `metric:` in the sweep file",
            t.name,
            t.metric
        );
    }
    let rows = ids.len();
    let mut df = df!(
        "trial" => ids,
        "variant" => variants,
        "overrides" => overrides_col,
        "seed" => seeds,
        "params" => params,
        "state_values" => state_vals,
        "best_val_loss" => best,
        "final_val_loss" => fin,
        "final_train_loss" => train,
        "tok_s" => toks,
        "wall_s" => wall,
        "status" => status,
        "metric" => metric,
    )?;
    for (k, mut col) in swept {
        col.resize(rows, None);
        df.with_column(Column::new(k.as_str().into(), col))?;
    }
    let sorted = df
        .lazy()
        .sort(
            ["metric"],
            SortMultipleOptions::default()
                .with_order_descending(t.goal_max)
                .with_nulls_last(true),
        )
        .collect()?;
    let ranked = sorted.column("metric")?.is_not_null();
    let mut next = 0u32;
    let rank: Vec<Option<u32>> = (0..ranked.len())
        .map(|i| {
            ranked.get(i).unwrap_or(false).then(|| {
                next += 1;
                next
            })
        })
        .collect();
    let mut sorted = sorted;
    sorted.insert_column(0, Column::new("rank".into(), rank))?;
    Ok(sorted)
}

pub fn export(
    df: &mut DataFrame,
    csv: Option<&Path>,
    parquet: Option<&Path>,
    json: Option<&Path>,
) -> Result<()> {
    if let Some(p) = csv {
        CsvWriter::new(std::fs::File::create(p)?).finish(df)?;
    }
    if let Some(p) = parquet {
        ParquetWriter::new(std::fs::File::create(p)?).finish(df)?;
    }
    if let Some(p) = json {
        JsonWriter::new(std::fs::File::create(p)?)
            .with_json_format(JsonFormat::Json)
            .finish(df)?;
    }
    Ok(())
}

/// Sweeps in storage with their progress.
pub async fn status(root: &str) -> Result<DataFrame> {
    let storage = Storage::open_existing(root)
        .with_context(|| format!("no sweeps: storage {root} does not exist (pass --storage)"))?;
    let names = storage.list_dirs("sweeps").await?;
    let (
        mut n,
        mut total,
        mut done,
        mut failed,
        mut diverged,
        mut interrupted,
        mut new,
        mut running,
    ) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    for name in names {
        let Some(listing) = storage.get(&format!("sweeps/{name}/trials.jsonl")).await? else {
            continue;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&listing)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect();
        let mut c = [0u32; 5];
        for id in &ids {
            c[match storage.trial_state(id).await? {
                TrialState::Done => 0,
                TrialState::Failed => 1,
                TrialState::Diverged => 2,
                TrialState::Interrupted => 3,
                TrialState::New => 4,
            }] += 1;
        }
        let lease = storage
            .get_json(&format!("sweeps/{name}/lease.json"))
            .await?
            .and_then(|v| serde_json::from_value::<crate::lease::LeaseRecord>(v).ok());
        running.push(
            lease
                .filter(|l| !l.is_stale())
                .map(|l| format!("{}@{} pid {}", l.user, l.host, l.pid))
                .unwrap_or_else(|| "-".into()),
        );
        n.push(name);
        total.push(ids.len() as u32);
        done.push(c[0]);
        failed.push(c[1]);
        diverged.push(c[2]);
        interrupted.push(c[3]);
        new.push(c[4]);
    }
    Ok(
        df!("sweep" => n, "trials" => total, "done" => done, "failed" => failed,
        "diverged" => diverged, "interrupted" => interrupted, "new" => new, "running" => running)?,
    )
}
