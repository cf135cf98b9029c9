//! Expansion: a [`SweepSpec`] -> the list of concrete, validated [`Trial`]s.
//!
//! For each variant (in file order), each point of `grid × zip × random × the variant's grid`, and
//! each seed: take the variant's config (the sweep's `set`, then the variant's `set`), apply the
//! point's values, the sweep's `steps`, the ties, then `training.seed`; normalise numbers; validate
//! with `mixsweep-model`. Invalid points fail the plan (naming the sweep key and the config field) or,
//! with `skip_invalid: true`, are listed as skipped. Trials with identical ids are run once.
//!
//! Scale: points are enumerated by index ([`crate::points`]) and built in parallel, a block of points
//! at a time; a model's structure is validated and counted once per distinct set of non-`training`
//! values (points that differ only in `training` have only their `training` checked again); a trial
//! keeps its point index, not its config. A million trials plan in seconds (BENCHMARKS.md).

use crate::checks::{check_names, check_run_settings};
use crate::path::ParamPath;
use crate::points::{Row, Space};
use crate::spec::SweepSpec;
use crate::trial::{Ties, Trial, TrialId, Variant, finish_config, fmt_overrides};
use crate::{SweepError, data_identity, trial_id};
use mixsweep_model::{ModelConfig, TrainingConfig};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A point that was skipped because its config is invalid (`skip_invalid: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub variant: String,
    pub overrides: Row,
    pub reason: String,
}

/// An expanded sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub spec: SweepSpec,
    pub file: PathBuf,
    pub trials: Vec<Trial>,
    pub skipped: Vec<Skipped>,
    /// Points that produced the same trial as an earlier one: (variant, overrides, id).
    pub duplicates: Vec<(String, String, TrialId)>,
}

fn resolve(dir: &Path, p: &str) -> String {
    if p.contains("://") || Path::new(p).is_absolute() {
        p.to_string()
    } else {
        dir.join(p).to_string_lossy().into_owned()
    }
}

/// What expanding one point produced.
enum Made {
    Trial(Trial),
    Skipped(Skipped),
}

/// Validation results shared by all points: per variant and set of non-`training` values, the model
/// part's `(seq_len, params, FLOPs per token)`. A point whose model part was validated before only has
/// its `training` checked (equivalent to full validation: `training` is checked on its own, given
/// `seq_len`). Invalid configs are not cached.
#[derive(Default)]
struct ModelCache {
    models: Mutex<HashMap<String, (usize, usize, f64)>>,
}

/// The cache key of a point: its variant and the values of every override outside `training`.
fn model_key(variant: usize, overrides: &[(Arc<str>, Value)]) -> String {
    let mut key = variant.to_string();
    for (p, v) in overrides {
        if &**p != "training" && !p.starts_with("training.") {
            key.push('\n');
            key.push_str(p);
            key.push('=');
            key.push_str(&v.to_string());
        }
    }
    key
}

/// What validating one config found: `(params, training FLOPs per token, steps)` and the tokens of
/// one step.
struct Checked {
    counts: (usize, f64, usize),
    batch_tokens: usize,
}

impl ModelCache {
    /// Validates `cfg`, or the config error.
    fn check(&self, key: &str, cfg: &Value) -> Result<Checked, String> {
        let cached = self.models.lock().unwrap().get(key).copied();
        if let Some((seq_len, params, flops)) = cached {
            let t = TrainingConfig::from_value(cfg.get("training"), seq_len)
                .map_err(|e| e.to_string())?;
            return Ok(Checked {
                counts: (params, flops, t.steps),
                batch_tokens: t.batch_tokens,
            });
        }
        let m = ModelConfig::from_value(cfg).map_err(|e| e.to_string())?;
        let c = m.counts();
        self.models.lock().unwrap().insert(
            key.to_string(),
            (m.seq_len, c.params, c.train_flops_per_token),
        );
        Ok(Checked {
            counts: (c.params, c.train_flops_per_token, m.training.steps),
            batch_tokens: m.training.batch_tokens,
        })
    }
}

/// The steps a trial of `flops_per_token` training FLOPs per token and `batch_tokens` tokens per
/// step may take within `budget` training FLOPs (at least one).
pub fn budget_steps(budget: f64, flops_per_token: f64, batch_tokens: usize) -> usize {
    let per_step = flops_per_token * batch_tokens as f64;
    if per_step > 0.0 {
        ((budget / per_step).round() as usize).max(1)
    } else {
        1
    }
}

#[derive(Clone, Copy)]
struct Settings<'a> {
    seeds: Option<&'a [u64]>,
    /// `budget.flops`: each seed's trial once per budget.
    budgets: Option<&'a [f64]>,
    skip_invalid: bool,
    file: &'a Path,
    src: &'a str,
}

/// Builds the trials of point `i` of variant `vi` (one per seed).
fn make_point(
    variants: &[Arc<Variant>],
    vi: usize,
    i: usize,
    cache: &ModelCache,
    s: Settings<'_>,
) -> Result<Vec<Made>, SweepError> {
    let v = &variants[vi];
    let err = |key: &str, msg: String| SweepError::at(s.file, s.src, key, msg);
    let point = v.space.point(i);
    let (cfg, tie_values) = v
        .build(&point, Ties::Evaluate)
        .map_err(|(p, e)| err(&p, format!("variant {:?}: {e}", v.name)))?;
    let mut overrides = point;
    overrides.extend(
        v.ties
            .iter()
            .zip(&tie_values)
            .map(|((p, _, _), val)| (p.clone(), val.clone())),
    );
    let key = model_key(vi, &overrides);
    // seeds: the sweep's, else the config's own (default 42)
    let own = [cfg
        .pointer("/training/seed")
        .and_then(Value::as_u64)
        .unwrap_or(42)];
    let seeds = s.seeds.unwrap_or(&own);
    let mut made = Vec::with_capacity(seeds.len());
    let invalid = |e: String, overrides: &Row| {
        let what = format!(
            "variant {:?} ({}){}: invalid config: {e}",
            v.name,
            v.base_file,
            if overrides.is_empty() {
                String::new()
            } else {
                format!(" with {}", fmt_overrides(overrides))
            }
        );
        let at = overrides
            .first()
            .map(|(k, _)| k.to_string())
            .unwrap_or_else(|| v.base_file.clone());
        err(
            &at,
            what + " (or set `skip_invalid: true` to skip such points)",
        )
    };
    'seeds: for &seed in seeds {
        let mut cfg = cfg.clone();
        finish_config(&mut cfg, seed);
        // one config per budget (its steps from the budget), else the config as it is
        let configs: Vec<(Value, Option<f64>)> = match s.budgets {
            None => vec![(cfg, None)],
            Some(budgets) => {
                let tokens = match cache.check(&key, &cfg) {
                    Ok(c) => (c.counts.1, c.batch_tokens),
                    Err(e) if s.skip_invalid => {
                        made.push(skipped(v, &overrides, e));
                        break 'seeds;
                    }
                    Err(e) => return Err(invalid(e, &overrides)),
                };
                budgets
                    .iter()
                    .map(|&b| {
                        let mut c = cfg.clone();
                        crate::trial::set_steps(&mut c, budget_steps(b, tokens.0, tokens.1));
                        (c, Some(b))
                    })
                    .collect()
            }
        };
        for (cfg, budget) in configs {
            let checked = match cache.check(&key, &cfg) {
                Ok(c) => c,
                Err(e) => {
                    let mut at = overrides.clone();
                    if let Some(b) = budget {
                        at.push((
                            Arc::from(crate::trial::BUDGET_KEY),
                            crate::points::number(b),
                        ));
                    }
                    if s.skip_invalid {
                        made.push(skipped(v, &at, e));
                        break 'seeds;
                    }
                    return Err(invalid(e, &at));
                }
            };
            made.push(Made::Trial(
                Trial::new(
                    trial_id(&cfg, &v.data_id, seed),
                    seed,
                    checked.counts,
                    v.clone(),
                    i,
                    tie_values.clone(),
                )
                .with_budget(budget),
            ));
        }
    }
    Ok(made)
}

fn skipped(v: &Variant, overrides: &Row, reason: String) -> Made {
    Made::Skipped(Skipped {
        variant: v.name.to_string(),
        overrides: overrides.clone(),
        reason,
    })
}

/// Expands a parsed sweep. `file` is the sweep file (relative paths inside are resolved against its folder).
pub fn expand(spec: SweepSpec, file: &Path, src: &str) -> Result<Sweep, SweepError> {
    expand_with_progress(spec, file, src, &|_, _| {})
}

/// Points built in parallel at a time; their trials are then deduplicated in order.
const BATCH: usize = 64 * 1024;

/// [`expand`], calling `progress(points done, points in all)` as points are built (from worker
/// threads; the caller throttles).
pub fn expand_with_progress(
    mut spec: SweepSpec,
    file: &Path,
    src: &str,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Sweep, SweepError> {
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let err = |key: &str, msg: String| SweepError::at(file, src, key, msg);
    check_names(&spec).map_err(|(key, msg)| err(&key, msg))?;
    check_run_settings(&spec).map_err(|(key, msg)| err(key, msg))?;
    // A relative storage folder is relative to the sweep file, like its configs and data.
    if let Some(st) = &spec.storage
        && !st.contains("://")
    {
        spec.storage = Some(resolve(&dir, st));
    }
    let variants = plan_variants(&spec, &dir, file, src)?;
    let total: usize = variants.iter().map(|v| v.space.len()).sum();
    let done = AtomicUsize::new(0);
    let cache = ModelCache::default();
    let settings = Settings {
        seeds: (!spec.seeds.is_empty()).then_some(spec.seeds.as_slice()),
        budgets: spec.budget.as_ref().map(|b| b.flops.as_slice()),
        skip_invalid: spec.skip_invalid,
        file,
        src,
    };
    let mut trials: Vec<Trial> = vec![];
    let mut skipped = vec![];
    let mut duplicates = vec![];
    let mut seen: HashSet<TrialId> = HashSet::new();
    for vi in 0..variants.len() {
        let n = variants[vi].space.len();
        for start in (0..n).step_by(BATCH) {
            let batch: Vec<Vec<Made>> = (start..(start + BATCH).min(n))
                .into_par_iter()
                .map(|i| {
                    let made = make_point(&variants, vi, i, &cache, settings)?;
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if d.is_multiple_of(4096) {
                        progress(d, total);
                    }
                    Ok(made)
                })
                .collect::<Result<_, SweepError>>()?;
            for m in batch.into_iter().flatten() {
                match m {
                    Made::Skipped(s) => skipped.push(s),
                    Made::Trial(t) if !seen.insert(t.id) => {
                        duplicates.push((t.variant().to_string(), t.overrides_text(), t.id))
                    }
                    Made::Trial(t) => trials.push(t),
                }
            }
        }
    }
    progress(total, total);
    Ok(Sweep {
        spec,
        file: file.to_path_buf(),
        trials,
        skipped,
        duplicates,
    })
}

/// Every variant's base config, axes, ties and data, checked before any point is built.
fn plan_variants(
    spec: &SweepSpec,
    dir: &Path,
    file: &Path,
    src: &str,
) -> Result<Vec<Arc<Variant>>, SweepError> {
    let err = |key: &str, msg: String| SweepError::at(file, src, key, msg);
    // Check every path up front so that a typo fails before any config is built.
    let mut paths: HashMap<Arc<str>, ParamPath> = HashMap::new();
    let all_paths = spec
        .set
        .keys()
        .chain(spec.grid.keys())
        .chain(spec.zip.keys())
        .chain(spec.tie.keys())
        .chain(spec.random.iter().flat_map(|r| r.params.keys()))
        .chain(
            spec.variants
                .iter()
                .flat_map(|v| v.set.keys().chain(v.grid.keys())),
        );
    for p in all_paths {
        let parsed = ParamPath::parse(p).map_err(|e| err(p, e))?;
        paths.insert(Arc::from(p.as_str()), parsed);
    }
    let variants: Vec<crate::spec::VariantSpec> = if spec.variants.is_empty() {
        let base = spec.base.clone().ok_or_else(|| {
            err(
                "name",
                "the sweep needs `base: CONFIG.json` or `variants:`".into(),
            )
        })?;
        vec![crate::spec::VariantSpec {
            name: "base".into(),
            base: Some(base),
            set: Default::default(),
            grid: Default::default(),
            train: None,
            val: None,
        }]
    } else {
        spec.variants.clone()
    };
    let space = Space::of_sweep(spec, file, src)?;
    let ties: Vec<(Arc<str>, ParamPath, String)> = spec
        .tie
        .iter()
        .map(|(p, e)| (Arc::from(p.as_str()), paths[p.as_str()].clone(), e.clone()))
        .collect();
    let mut identities: HashMap<(String, Option<String>), String> = Default::default();
    let mut plans = vec![];
    for variant in &variants {
        let base = variant
            .base
            .clone()
            .or_else(|| spec.base.clone())
            .ok_or_else(|| {
                err(
                    &variant.name,
                    format!(
                        "variant {:?} has no `base` and the sweep has none",
                        variant.name
                    ),
                )
            })?;
        let base_path = resolve(dir, &base);
        let text = std::fs::read_to_string(&base_path).map_err(|e| {
            err(
                &base,
                format!("variant {:?}: cannot read {base_path}: {e}", variant.name),
            )
        })?;
        let mut base_json = mixsweep_model::json::parse_jsonc(&text)
            .map_err(|e| err(&base, e.in_file(&base_path).to_string()))?;
        for (p, v) in spec.set.iter().chain(&variant.set) {
            paths[p.as_str()]
                .set(&mut base_json, v)
                .map_err(|e| err(p, format!("variant {:?}: {e}", variant.name)))?;
        }
        let train = variant.train.clone().or_else(|| spec.train.clone()).ok_or_else(|| {
            err("name", format!("variant {:?} has no training data: set `train:` on the sweep or the variant", variant.name))
        })?;
        let train = resolve(dir, &train);
        let val = variant
            .val
            .clone()
            .or_else(|| spec.val.clone())
            .map(|v| resolve(dir, &v));
        let key = (train.clone(), val.clone());
        if !identities.contains_key(&key) {
            let id = data_identity(&train, val.as_deref()).map_err(|e| err("train", e))?;
            identities.insert(key.clone(), id);
        }
        let mut variant_space = space.clone();
        for (path, values) in &variant.grid {
            if values.is_empty() {
                return Err(err(
                    path,
                    format!(
                        "variant {:?}: grid.{path}: the list of values is empty",
                        variant.name
                    ),
                ));
            }
            variant_space.push_grid(path, values);
        }
        plans.push(Arc::new(Variant {
            name: Arc::from(variant.name.as_str()),
            base_file: base.clone(),
            base: base_json,
            steps: spec.steps,
            space: variant_space,
            paths: paths.clone(),
            ties: ties.clone(),
            train: Arc::from(train.as_str()),
            val: val.map(|v| Arc::from(v.as_str())),
            data_id: identities[&key].clone(),
        }));
    }
    Ok(plans)
}
