//! `mixsweep results` and `mixsweep status`: tables derived from storage alone (the sweep's
//! `trials.jsonl` and each trial's `summary.json` / `attempt.json`), ranked and aggregated with polars.

use crate::storage::{Storage, TrialState, TrialStates};
use anyhow::{Context, Result, bail};
use polars::prelude::*;
use std::path::Path;

/// Where a sweep's results live: storage root and sweep name.
#[derive(Clone)]
pub struct Target {
    pub root: String,
    pub name: String,
    pub goal_max: bool,
    pub metric: String,
    /// Read the metric off each trial's curve at this budget instead of at its end.
    pub at: Option<crate::curves::At>,
    /// Also report each trial's inference state at this context length (`state_mib_at_<N>`).
    pub context: Option<usize>,
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
            context: None,
        });
    }
    if let Some((root, name)) = arg.rsplit_once("/sweeps/") {
        return Ok(Target {
            root: root.into(),
            name: name.trim_end_matches('/').into(),
            goal_max: false,
            metric: "val_loss".into(),
            at: None,
            context: None,
        });
    }
    Ok(Target {
        root: default_root(),
        name: arg.into(),
        goal_max: false,
        metric: "val_loss".into(),
        at: None,
        context: None,
    })
}

/// What a trial costs and how it ran, from its summary and the sweep's settings.
#[derive(Default)]
struct Costs {
    train_flops: Option<f64>,
    peak_mem_gb: Option<f64>,
    device_s: Option<f64>,
    cost_usd: Option<f64>,
}

/// The sweep's stored `sweep.yaml`: prices and GPU packing, for the cost columns.
struct SweepSettings {
    cost: Option<mixsweep_sweep::spec::CostSpec>,
    trials_per_gpu: usize,
}

impl SweepSettings {
    async fn load(storage: &Storage, name: &str) -> Result<SweepSettings> {
        let spec = storage
            .get(&format!("sweeps/{name}/sweep.yaml"))
            .await?
            .and_then(|b| mixsweep_sweep::parse_spec(&String::from_utf8_lossy(&b)).ok());
        // `auto`: the number the run chose (packing.json), 1 if it never decided
        let auto = match storage.get(&format!("sweeps/{name}/packing.json")).await? {
            Some(b) => serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v["trials_per_gpu"].as_u64())
                .map(|n| n as usize),
            None => None,
        };
        let per_gpu = match spec.as_ref().and_then(|s| s.trials_per_gpu) {
            Some(t) => t.fixed().or(auto),
            None => None,
        };
        Ok(SweepSettings {
            cost: spec.as_ref().and_then(|s| s.cost),
            trials_per_gpu: per_gpu.unwrap_or(1).max(1),
        })
    }

    fn costs(&self, s: &mixsweep_artifacts::Summary) -> Costs {
        // a trial sharing its GPU with others (trials_per_gpu) is charged its share of the wall time
        let gpu = s.device == "gpu";
        let share = if gpu {
            1.0 / self.trials_per_gpu as f64
        } else {
            1.0
        };
        let device_s = (s.wall_time_s > 0.0).then_some(s.wall_time_s * share);
        let price = self.cost.and_then(|c| {
            if gpu {
                Some(c.gpu_hour_usd)
            } else {
                c.cpu_hour_usd
            }
        });
        Costs {
            train_flops: (s.tokens > 0 && s.flops_per_token > 0.0)
                .then_some(s.tokens as f64 * s.flops_per_token),
            peak_mem_gb: (s.peak_memory_bytes > 0).then(|| s.peak_memory_bytes as f64 / 1e9),
            device_s,
            cost_usd: device_s.zip(price).map(|(d, p)| d / 3600.0 * p),
        }
    }
}

/// The columns of the ranked table, one entry per trial.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    variant: Vec<String>,
    overrides: Vec<String>,
    seed: Vec<u64>,
    params: Vec<u64>,
    flops_per_token: Vec<Option<f64>>,
    state_values: Vec<Option<u64>>,
    best: Vec<Option<f64>>,
    fin: Vec<Option<f64>>,
    train: Vec<Option<f64>>,
    tok_s: Vec<Option<f64>>,
    wall: Vec<Option<f64>>,
    costs: Vec<Costs>,
    /// `(context, MiB per sequence in bf16)` when asked for.
    state_mib: Option<(usize, Vec<Option<f64>>)>,
    status: Vec<String>,
    metric: Vec<Option<f64>>,
    /// One column per swept path, in the trials' order.
    swept: std::collections::BTreeMap<String, Vec<Option<String>>>,
}

impl Columns {
    /// The listing's part of a row: id, variant, seed, params and the swept values.
    fn listed(&mut self, v: &serde_json::Value) -> String {
        let row = self.id.len();
        for (k, x) in v["overrides"].as_object().into_iter().flatten() {
            let text = x
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| x.to_string());
            let col = self.swept.entry(k.clone()).or_default();
            col.resize(row, None);
            col.push(Some(text));
        }
        let overrides = v["overrides"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, x)| format!("{k}={x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let id = v["id"].as_str().unwrap_or_default().to_string();
        self.id.push(id.clone());
        self.variant
            .push(v["variant"].as_str().unwrap_or_default().into());
        self.overrides.push(overrides);
        self.seed.push(v["seed"].as_u64().unwrap_or(0));
        self.params.push(v["params"].as_u64().unwrap_or(0));
        self.flops_per_token
            .push(v["flops_per_token"].as_f64().filter(|f| *f > 0.0));
        id
    }

    /// The run's part of a row.
    fn ran(&mut self, s: Option<&mixsweep_artifacts::Summary>, settings: &SweepSettings) {
        self.state_values.push(
            s.map(|s| s.inference_state_values as u64)
                .filter(|v| *v > 0),
        );
        self.best.push(s.and_then(|s| s.best_val_loss));
        self.fin.push(s.and_then(|s| s.final_val_loss));
        self.train.push(s.and_then(|s| s.final_train_loss));
        self.tok_s.push(s.map(|s| s.mean_tok_s));
        self.wall.push(s.map(|s| s.wall_time_s));
        self.costs
            .push(s.map(|s| settings.costs(s)).unwrap_or_default());
        // listings written before FLOPs/token was listed: the runner's count
        if let (Some(last @ None), Some(s)) = (self.flops_per_token.last_mut(), s) {
            *last = Some(s.flops_per_token).filter(|f| *f > 0.0);
        }
    }

    fn frame(self) -> Result<DataFrame> {
        let rows = self.id.len();
        let cost = |f: fn(&Costs) -> Option<f64>| self.costs.iter().map(f).collect::<Vec<_>>();
        let mut df = df!(
            "trial" => &self.id,
            "variant" => &self.variant,
            "overrides" => &self.overrides,
            "seed" => &self.seed,
            "params" => &self.params,
            "state_values" => &self.state_values,
            "best_val_loss" => &self.best,
            "final_val_loss" => &self.fin,
            "final_train_loss" => &self.train,
            "tok_s" => &self.tok_s,
            "wall_s" => &self.wall,
            "status" => &self.status,
            "metric" => &self.metric,
            "flops_per_token" => &self.flops_per_token,
            "train_flops" => cost(|c| c.train_flops),
            "peak_mem_gb" => cost(|c| c.peak_mem_gb),
            "device_s" => cost(|c| c.device_s),
            "cost_usd" => cost(|c| c.cost_usd),
        )?;
        if let Some((n, col)) = self.state_mib {
            df.with_column(Column::new(format!("state_mib_at_{n}").into(), col))?;
        }
        for (k, mut col) in self.swept {
            col.resize(rows, None);
            df.with_column(Column::new(k.as_str().into(), col))?;
        }
        Ok(df)
    }
}

/// The values cached generation keeps per sequence after `context` tokens (KV caches grow with it,
/// recurrent states do not), from the trial's stored config and the IR, in MiB at 2 bytes a value.
async fn state_mib(storage: &Storage, id: &str, context: usize) -> Result<Option<f64>> {
    let Some(cfg) = storage
        .get_json(&format!("trials/{id}/config.json"))
        .await?
    else {
        return Ok(None);
    };
    let Ok(model) = mixsweep_model::ModelConfig::from_value(&cfg) else {
        return Ok(None);
    };
    let values = mixsweep_model::inference_state_values(&model.lower(), context);
    Ok(Some(values as f64 * 2.0 / (1u64 << 20) as f64))
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
    let settings = SweepSettings::load(&storage, &t.name).await?;
    let mut cols = Columns {
        state_mib: t.context.map(|n| (n, vec![])),
        ..Default::default()
    };
    let (mut reported, mut any_summary) = (false, false);
    for line in String::from_utf8_lossy(&listing).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = cols.listed(&v);
        let s = storage.summary(&id).await?;
        let state = storage.trial_state(&id).await?;
        cols.ran(s.as_ref(), &settings);
        if let Some((n, col)) = &mut cols.state_mib {
            col.push(state_mib(&storage, &id, *n).await?);
        }
        cols.status.push(match state {
            TrialState::Done => "done".to_string(),
            TrialState::New => "new".to_string(),
            _ => s
                .as_ref()
                .map(|s| s.status.to_string())
                .unwrap_or_else(|| state.as_str().to_string()),
        });
        // Only completed trials are ranked: a diverged or interrupted trial's best validation loss
        // may be its untrained step-0 loss.
        cols.metric.push(match (&s, t.at) {
            (Some(s), Some(at)) if state == TrialState::Done => {
                crate::curves::metric_at(&storage, &id, s, &t.metric, at).await?
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
    rank(cols.frame()?, t.goal_max)
}

/// Sorts by the metric (unranked trials last) and numbers the ranked ones.
fn rank(df: DataFrame, goal_max: bool) -> Result<DataFrame> {
    let mut sorted = df
        .lazy()
        .sort(
            ["metric"],
            SortMultipleOptions::default()
                .with_order_descending(goal_max)
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
    sorted.insert_column(0, Column::new("rank".into(), rank))?;
    Ok(sorted)
}

/// The trials of several sweeps as one ranked table with a `sweep` column: a trial that two sweeps
/// share (the same content-hash id: same config, data and seed) appears once, under the first sweep
/// that lists it. The sweeps must rank by the same metric.
pub async fn merged_frame(targets: &[Target]) -> Result<DataFrame> {
    let first = &targets[0];
    if targets.len() == 1 {
        return trials_frame(first).await;
    }
    if let Some(t) = targets
        .iter()
        .find(|t| t.metric != first.metric || t.goal_max != first.goal_max)
    {
        bail!(
            "sweeps {:?} and {:?} rank by different metrics ({} and {}); merge sweeps of one metric",
            first.name,
            t.name,
            first.metric,
            t.metric
        );
    }
    let mut frames = vec![];
    for t in targets {
        let mut df = trials_frame(t).await?.drop("rank")?;
        df.insert_column(
            1,
            Column::new("sweep".into(), vec![t.name.clone(); df.height()]),
        )?;
        frames.push(df);
    }
    let merged = union(frames)?;
    let mut seen = std::collections::HashSet::new();
    let ids = merged.column("trial")?.str()?.clone();
    let keep: BooleanChunked = (0..ids.len())
        .map(|i| Some(seen.insert(ids.get(i).unwrap_or_default().to_string())))
        .collect();
    rank(merged.filter(&keep)?, first.goal_max)
}

/// Stacks frames whose columns differ (the swept paths), filling missing columns with nulls.
fn union(frames: Vec<DataFrame>) -> Result<DataFrame> {
    let mut names: Vec<PlSmallStr> = vec![];
    let mut types: std::collections::HashMap<PlSmallStr, DataType> = Default::default();
    for df in &frames {
        for c in df.columns() {
            if !types.contains_key(c.name()) {
                names.push(c.name().clone());
                types.insert(c.name().clone(), c.dtype().clone());
            }
        }
    }
    let mut out: Option<DataFrame> = None;
    for mut df in frames {
        for n in &names {
            if df.column(n).is_err() {
                df.with_column(Column::full_null(n.clone(), df.height(), &types[n]))?;
            }
        }
        let mut df = df.select(names.clone())?;
        // the same column may be typed differently where one sweep has only nulls in it
        for n in &names {
            if df.column(n)?.dtype() != &types[n] {
                let c = df.column(n)?.cast(&types[n])?;
                df.with_column(c)?;
            }
        }
        out = Some(match out {
            None => df,
            Some(acc) => acc.vstack(&df)?,
        });
    }
    out.context("no sweeps to merge")
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
