//! Expansion: a [`SweepSpec`] -> the list of concrete, validated [`Trial`]s.
//!
//! For each variant (in file order), each point of `grid × zip × random`, and each seed: take the
//! variant's config, apply the sweep's `set`, the variant's `set`, the point's values, then the ties;
//! set `training.seed` (and `training.steps` when the sweep overrides it); normalise numbers; validate
//! with `mixsweep-model`. Invalid points fail the plan (naming the sweep key and the config field) or,
//! with `skip_invalid: true`, are listed as skipped. Trials with identical ids are run once.
//!
//! Scale: points are enumerated by index (mixed radix over the axes, the last axis fastest), never
//! materialised as a list; they are built in parallel; a model's structure is validated and counted
//! once (points that differ only in `training` share it, and only their `training` is checked
//! again); a trial keeps its overrides, not its config. A million trials plan in seconds.

use crate::path::ParamPath;
use crate::spec::{Distribution, SweepSpec};
use crate::{SweepError, data_identity, trial_id};
use mixsweep_model::rng::SplitMix64;
use mixsweep_model::{ModelConfig, TrainingConfig};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One trial: a concrete model config, its data, and its seed. The config itself is not stored (a
/// sweep of a million trials would not fit in memory): [`Trial::config`] rebuilds it from the
/// variant's base and the trial's overrides.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Content hash of (canonical config, data identity, seed, runner version), 16 hex digits.
    pub id: String,
    pub variant: Arc<str>,
    /// The swept values of this trial, as `path=value` pairs (grid, zip, random, ties).
    pub overrides: Vec<(Arc<str>, Value)>,
    pub seed: u64,
    /// Absolute (or URL) train/val globs.
    pub train: Arc<str>,
    pub val: Option<Arc<str>>,
    pub params: usize,
    pub flops_per_token: f64,
    pub steps: usize,
    recipe: Arc<Recipe>,
}

impl PartialEq for Trial {
    fn eq(&self, other: &Trial) -> bool {
        self.id == other.id
    }
}

/// How a variant's trials are made: its base config (sweep and variant `set` applied), the sweep's
/// `steps`, and the parsed parameter paths of every override.
#[derive(Debug)]
struct Recipe {
    base: Value,
    steps: Option<usize>,
    paths: HashMap<Arc<str>, ParamPath>,
}

impl Recipe {
    /// The complete config of a point: overrides in order, then `steps`, then the seed, numbers
    /// normalised (`4.0` is `4`).
    fn config(
        &self,
        overrides: &[(Arc<str>, Value)],
        seed: Option<u64>,
    ) -> Result<Value, (Arc<str>, String)> {
        let mut cfg = self.base.clone();
        for (p, v) in overrides {
            self.paths[p].set(&mut cfg, v).map_err(|e| (p.clone(), e))?;
        }
        if let Some(steps) = self.steps {
            set_path(&mut cfg, "training.steps", Value::from(steps));
        }
        if let Some(seed) = seed {
            set_path(&mut cfg, "training.seed", Value::from(seed));
        }
        normalise(&mut cfg);
        Ok(cfg)
    }
}

fn set_path(cfg: &mut Value, path: &str, v: Value) {
    ParamPath::parse(path)
        .expect("a valid built-in path")
        .set(cfg, &v)
        .expect("training.* can always be set");
}

impl Trial {
    /// A trial of one config on its own (outside any sweep): validated and counted; its id covers
    /// the config, `data_identity` and the config's seed.
    pub fn from_config(
        config: Value,
        variant: &str,
        train: &str,
        val: Option<&str>,
        data_identity: &str,
    ) -> Result<Trial, String> {
        let m = ModelConfig::from_value(&config).map_err(|e| e.to_string())?;
        let c = m.counts();
        Ok(Trial {
            id: trial_id(&config, data_identity, m.training.seed),
            variant: Arc::from(variant),
            overrides: vec![],
            seed: m.training.seed,
            train: Arc::from(train),
            val: val.map(Arc::from),
            params: c.params,
            flops_per_token: c.train_flops_per_token,
            steps: m.training.steps,
            recipe: Arc::new(Recipe {
                base: config,
                steps: None,
                paths: HashMap::new(),
            }),
        })
    }

    /// The complete model config the runner receives.
    pub fn config(&self) -> Value {
        self.recipe
            .config(&self.overrides, Some(self.seed))
            .expect("the overrides applied when the trial was made")
    }

    pub fn overrides_text(&self) -> String {
        fmt_overrides(&self.overrides)
    }

    /// The overrides as a JSON object (`path: value`).
    pub fn overrides_json(&self) -> serde_json::Map<String, Value> {
        self.overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// The trial's line in `trials.jsonl` and `plan --json`: id, variant, seed, size, steps,
    /// overrides, data (without the config).
    pub fn listing(&self) -> Value {
        serde_json::json!({
            "id": self.id, "variant": &*self.variant, "seed": self.seed, "params": self.params,
            "flops_per_token": self.flops_per_token, "steps": self.steps,
            "train": &*self.train, "val": self.val.as_deref(),
            "overrides": self.overrides_json(),
        })
    }
}

fn fmt_overrides(overrides: &[(Arc<str>, Value)]) -> String {
    overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A point that was skipped because its config is invalid (`skip_invalid: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub variant: String,
    pub overrides: Vec<(Arc<str>, Value)>,
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
    pub duplicates: Vec<(String, String, String)>,
}

/// A JSON number, as an integer when it is integral (so `4.0` and `4` hash alike).
pub fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

fn normalise(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64() {
                *v = number(f);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        Value::Object(m) => m.values_mut().for_each(normalise),
        _ => {}
    }
}

/// Names and metric: things that would silently misfile or misrank results.
fn check_names(spec: &SweepSpec) -> Result<(), (String, String)> {
    let n = &spec.name;
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !n.starts_with('.');
    if !ok {
        return Err((
            "name".into(),
            format!(
                "sweep name {n:?} must be letters, digits, '-', '_' and '.' and not start with '.' \
                 (it names a folder in storage)"
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for v in &spec.variants {
        if !seen.insert(v.name.as_str()) {
            return Err((
                v.name.clone(),
                format!(
                    "two variants are named {:?}: give each a distinct name (results are grouped by it)",
                    v.name
                ),
            ));
        }
    }
    let (metric, _) = spec.metric();
    if !crate::spec::METRICS.contains(&metric.as_str()) {
        let hint = mixsweep_model::error::suggest(&metric, crate::spec::METRICS)
            .map(|m| format!("did you mean {m:?}? "))
            .unwrap_or_default();
        return Err((
            "metric".into(),
            format!(
                "no trial reports the metric {metric:?}; {hint}known metrics: {}",
                crate::spec::METRICS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Settings that only matter when the sweep runs, checked when it is loaded so that `plan` reports them.
fn check_run_settings(spec: &SweepSpec) -> Result<(), (&'static str, String)> {
    use crate::spec::{parse_duration, parse_memory};
    if let Some(t) = &spec.timeout {
        parse_duration(t).map_err(|e| ("timeout", e))?;
    }
    if let Some(m) = &spec.memory {
        parse_memory(m).map_err(|e| ("memory", e))?;
    }
    if spec.cpus.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
        return Err(("cpus", "cpus must be > 0 (cores, e.g. 4 or 0.5)".into()));
    }
    if spec.trials_per_gpu == Some(0) {
        return Err(("trials_per_gpu", "trials_per_gpu must be >= 1".into()));
    }
    if spec.max_parallel == Some(0) {
        return Err(("max_parallel", "max_parallel must be >= 1".into()));
    }
    if let Some(g) = &spec.gpus
        && g.ids().is_some_and(|ids| ids.is_empty())
    {
        return Err((
            "gpus",
            "gpus must name at least one GPU (or be `all`)".into(),
        ));
    }
    if let Some(t) = &spec.kubernetes.schedule_timeout {
        parse_duration(t).map_err(|e| ("schedule_timeout", e))?;
    }
    if spec.backend == crate::spec::Backend::Kubernetes
        && matches!(
            spec.gpus,
            Some(crate::spec::GpuSpec::All(_)) | Some(crate::spec::GpuSpec::Ids(_))
        )
    {
        return Err(("gpus", "with backend: kubernetes, `gpus` is the number of GPUs per trial (e.g. gpus: 1); the scheduler picks the devices".into()));
    }
    for name in &spec.env {
        if name.is_empty() || name.contains('=') {
            return Err((
                "env",
                format!(
                    "env lists variable names only, not {name:?} (the value is read from the orchestrator's environment)"
                ),
            ));
        }
    }
    Ok(())
}

fn resolve(dir: &Path, p: &str) -> String {
    if p.contains("://") || Path::new(p).is_absolute() {
        p.to_string()
    } else {
        dir.join(p).to_string_lossy().into_owned()
    }
}

/// One axis of the point space: each row is a set of (path, value) pairs. A grid axis has one pair
/// per row; zip and random rows set several paths at once.
type Row = Vec<(Arc<str>, Value)>;

fn grid_factor(path: &str, values: &[Value]) -> Vec<Row> {
    let p: Arc<str> = path.into();
    values
        .iter()
        .map(|v| vec![(p.clone(), v.clone())])
        .collect()
}

/// The sweep-wide axes, slowest first: grid axes (in key order), zip rows, random samples.
fn sweep_factors(spec: &SweepSpec, file: &Path, src: &str) -> Result<Vec<Vec<Row>>, SweepError> {
    let mut factors = vec![];
    for (path, values) in &spec.grid {
        if values.is_empty() {
            return Err(SweepError::at(
                file,
                src,
                path,
                format!("grid.{path}: the list of values is empty"),
            ));
        }
        factors.push(grid_factor(path, values));
    }
    if !spec.zip.is_empty() {
        let lens: Vec<usize> = spec.zip.values().map(Vec::len).collect();
        if lens.iter().any(|&l| l != lens[0]) {
            let desc: Vec<String> = spec
                .zip
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.len()))
                .collect();
            return Err(SweepError::at(
                file,
                src,
                "zip",
                format!("zip lists must have the same length ({})", desc.join(", ")),
            ));
        }
        let rows = (0..lens[0])
            .map(|i| {
                spec.zip
                    .iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), v[i].clone()))
                    .collect()
            })
            .collect();
        factors.push(rows);
    }
    if let Some(r) = &spec.random {
        factors.push(random_rows(r, file, src)?);
    }
    Ok(factors)
}

fn random_rows(
    r: &crate::spec::RandomSpec,
    file: &Path,
    src: &str,
) -> Result<Vec<Row>, SweepError> {
    if r.samples == 0 {
        return Err(SweepError::at(
            file,
            src,
            "samples",
            "random.samples must be > 0".into(),
        ));
    }
    let mut rng = SplitMix64::new(r.seed);
    let mut rows = Vec::with_capacity(r.samples);
    for _ in 0..r.samples {
        let mut row = vec![];
        for (path, d) in &r.params {
            let v = match d {
                Distribution::Choice(c) if !c.is_empty() => {
                    c[(rng.next_u64() % c.len() as u64) as usize].clone()
                }
                Distribution::Uniform([lo, hi]) if lo <= hi => {
                    number(lo + (hi - lo) * rng.next_f64())
                }
                Distribution::LogUniform([lo, hi]) if *lo > 0.0 && lo <= hi => {
                    number((lo.ln() + (hi.ln() - lo.ln()) * rng.next_f64()).exp())
                }
                Distribution::IntUniform([lo, hi]) if lo <= hi => {
                    Value::from(lo + (rng.next_u64() % (hi - lo + 1) as u64) as i64)
                }
                _ => {
                    return Err(SweepError::at(
                        file,
                        src,
                        path,
                        format!(
                            "random.params.{path}: empty choice or bounds out of order (log_uniform needs 0 < lo <= hi)"
                        ),
                    ));
                }
            };
            row.push((Arc::from(path.as_str()), v));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The overrides of point `i` of `factors` (mixed radix, the last factor fastest).
fn point(factors: &[Vec<Row>], mut i: usize) -> Row {
    let mut rows: Vec<&Row> = Vec::with_capacity(factors.len());
    for f in factors.iter().rev() {
        rows.push(&f[i % f.len()]);
        i /= f.len();
    }
    rows.into_iter().rev().flatten().cloned().collect()
}

/// What expanding one point produced.
enum Made {
    Trial(Trial),
    Skipped(Skipped),
}

/// Validation results shared by all points: the model part (everything but `training`) of a valid
/// config is parsed, validated and counted once per distinct JSON; a point whose model part was
/// seen only has its `training` checked. (Equivalent to full validation: `training` is checked on
/// its own, given `seq_len`.) Invalid configs are not cached.
#[derive(Default)]
struct ModelCache {
    models: Mutex<HashMap<String, (usize, usize, f64)>>,
}

impl ModelCache {
    /// Validates `cfg`: `(params, FLOPs per token, steps)`, or the config error.
    fn check(&self, cfg: &Value) -> Result<(usize, f64, usize), String> {
        let key = model_key(cfg);
        let cached = self.models.lock().unwrap().get(&key).copied();
        if let Some((seq_len, params, flops)) = cached {
            let t = TrainingConfig::from_value(cfg.get("training"), seq_len)
                .map_err(|e| e.to_string())?;
            return Ok((params, flops, t.steps));
        }
        let m = ModelConfig::from_value(cfg).map_err(|e| e.to_string())?;
        let c = m.counts();
        self.models
            .lock()
            .unwrap()
            .insert(key, (m.seq_len, c.params, c.train_flops_per_token));
        Ok((c.params, c.train_flops_per_token, m.training.steps))
    }
}

/// Canonical JSON of everything but `training`.
fn model_key(cfg: &Value) -> String {
    let mut key = String::new();
    if let Some(o) = cfg.as_object() {
        for (k, v) in o.iter().filter(|(k, _)| *k != "training") {
            key.push_str(k);
            key.push('=');
            key.push_str(&serde_json::to_string(v).expect("JSON serializes"));
            key.push('\n');
        }
    }
    key
}

/// A variant with everything its points need.
struct VariantPlan {
    name: Arc<str>,
    base_file: String,
    recipe: Arc<Recipe>,
    factors: Vec<Vec<Row>>,
    ties: Vec<(Arc<str>, ParamPath, String)>,
    train: Arc<str>,
    val: Option<Arc<str>>,
    data_id: String,
}

impl VariantPlan {
    fn points(&self) -> usize {
        self.factors.iter().map(Vec::len).product()
    }
}

#[derive(Clone, Copy)]
struct Settings<'a> {
    seeds: Option<&'a [u64]>,
    skip_invalid: bool,
    file: &'a Path,
    src: &'a str,
}

/// Builds the trials of point `i` of a variant (one per seed).
fn make_point(
    v: &VariantPlan,
    i: usize,
    cache: &ModelCache,
    s: Settings<'_>,
) -> Result<Vec<Made>, SweepError> {
    let err = |key: &str, msg: String| SweepError::at(s.file, s.src, key, msg);
    let mut overrides = point(&v.factors, i);
    let mut cfg = v
        .recipe
        .config(&overrides, None)
        .map_err(|(p, e)| err(&p, format!("variant {:?}: {e}", v.name)))?;
    for (p, path, expr) in &v.ties {
        let value =
            crate::expr::evaluate(expr, &cfg).map_err(|e| err(p, format!("tie.{p}: {e}")))?;
        path.set(&mut cfg, &value)
            .map_err(|e| err(p, format!("tie.{p}: {e}")))?;
        overrides.push((p.clone(), value));
    }
    // seeds: the sweep's, else the config's own (default 42)
    let own = [cfg
        .pointer("/training/seed")
        .and_then(Value::as_u64)
        .unwrap_or(42)];
    let seeds = s.seeds.unwrap_or(&own);
    let mut made = Vec::with_capacity(seeds.len());
    for &seed in seeds {
        let cfg = v
            .recipe
            .config(&overrides, Some(seed))
            .map_err(|(p, e)| err(&p, format!("variant {:?}: {e}", v.name)))?;
        let (params, flops, steps) = match cache.check(&cfg) {
            Ok(x) => x,
            Err(e) if s.skip_invalid => {
                made.push(Made::Skipped(Skipped {
                    variant: v.name.to_string(),
                    overrides: overrides.clone(),
                    reason: e,
                }));
                break;
            }
            Err(e) => {
                let what = format!(
                    "variant {:?} ({}){}: invalid config: {e}",
                    v.name,
                    v.base_file,
                    if overrides.is_empty() {
                        String::new()
                    } else {
                        format!(" with {}", fmt_overrides(&overrides))
                    }
                );
                let key = overrides
                    .first()
                    .map(|(k, _)| k.to_string())
                    .unwrap_or_else(|| v.base_file.clone());
                return Err(err(
                    &key,
                    what + " (or set `skip_invalid: true` to skip such points)",
                ));
            }
        };
        made.push(Made::Trial(Trial {
            id: trial_id(&cfg, &v.data_id, seed),
            variant: v.name.clone(),
            overrides: overrides.clone(),
            seed,
            train: v.train.clone(),
            val: v.val.clone(),
            params,
            flops_per_token: flops,
            steps,
            recipe: v.recipe.clone(),
        }));
    }
    Ok(made)
}

/// Expands a parsed sweep. `file` is the sweep file (relative paths inside are resolved against its folder).
pub fn expand(spec: SweepSpec, file: &Path, src: &str) -> Result<Sweep, SweepError> {
    expand_with_progress(spec, file, src, &|_, _| {})
}

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
    let plans = plan_variants(&spec, &dir, file, src)?;
    let total: usize = plans.iter().map(VariantPlan::points).sum();
    let done = AtomicUsize::new(0);
    let cache = ModelCache::default();
    let settings = Settings {
        seeds: (!spec.seeds.is_empty()).then_some(spec.seeds.as_slice()),
        skip_invalid: spec.skip_invalid,
        file,
        src,
    };
    const BLOCK: usize = 512;
    let mut made: Vec<Made> = vec![];
    for v in &plans {
        let n = v.points();
        let blocks: Vec<Vec<Made>> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let mut out = vec![];
                let range = b * BLOCK..((b + 1) * BLOCK).min(n);
                let count = range.len();
                for i in range {
                    out.extend(make_point(v, i, &cache, settings)?);
                }
                progress(done.fetch_add(count, Ordering::Relaxed) + count, total);
                Ok(out)
            })
            .collect::<Result<_, SweepError>>()?;
        made.extend(blocks.into_iter().flatten());
    }
    let mut trials: Vec<Trial> = Vec::with_capacity(made.len());
    let mut skipped = vec![];
    let mut duplicates = vec![];
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(made.len());
    for m in made {
        match m {
            Made::Skipped(s) => skipped.push(s),
            Made::Trial(t) => match seen.get(&t.id) {
                Some(&first) => duplicates.push((
                    t.variant.to_string(),
                    t.overrides_text(),
                    trials[first].id.clone(),
                )),
                None => {
                    seen.insert(t.id.clone(), trials.len());
                    trials.push(t);
                }
            },
        }
    }
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
) -> Result<Vec<VariantPlan>, SweepError> {
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
    let factors = sweep_factors(spec, file, src)?;
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
        let mut variant_factors = factors.clone();
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
            variant_factors.push(grid_factor(path, values));
        }
        plans.push(VariantPlan {
            name: Arc::from(variant.name.as_str()),
            base_file: base.clone(),
            recipe: Arc::new(Recipe {
                base: base_json,
                steps: spec.steps,
                paths: paths.clone(),
            }),
            factors: variant_factors,
            ties: ties.clone(),
            data_id: identities[&key].clone(),
            train: Arc::from(train.as_str()),
            val: val.map(|v| Arc::from(v.as_str())),
        });
    }
    Ok(plans)
}
