//! Expansion: a [`SweepSpec`] -> the list of concrete, validated [`Trial`]s.
//!
//! For each variant (in file order), each point of `grid × zip × random`, and each seed: take the
//! variant's config, apply the sweep's `set`, the variant's `set`, the point's values, then the ties;
//! set `training.seed` (and `training.steps` when the sweep overrides it); normalise numbers; validate
//! with `mixsweep-model`. Invalid points fail the plan (naming the sweep key and the config field) or,
//! with `skip_invalid: true`, are listed as skipped. Trials with identical ids are run once.

use crate::path::ParamPath;
use crate::spec::{Distribution, SweepSpec};
use crate::{SweepError, data_identity, trial_id};
use mixsweep_model::ModelConfig;
use mixsweep_model::rng::SplitMix64;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One trial: a concrete model config, its data, and its seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Content hash of (canonical config, data identity, seed, runner version), 16 hex digits.
    pub id: String,
    pub variant: String,
    /// The swept values of this trial, as `path=value` pairs (grid, zip, random, ties).
    pub overrides: Vec<(String, Value)>,
    pub seed: u64,
    /// The complete model config JSON the runner receives.
    pub config: Value,
    /// Absolute (or URL) train/val globs.
    pub train: String,
    pub val: Option<String>,
    pub params: usize,
    pub flops_per_token: f64,
    pub steps: usize,
}

impl Trial {
    pub fn overrides_text(&self) -> String {
        self.overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A point that was skipped because its config is invalid (`skip_invalid: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub variant: String,
    pub overrides: Vec<(String, Value)>,
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

type Point = Vec<(String, Value)>;

fn grid_points(spec: &SweepSpec, file: &Path, src: &str) -> Result<Vec<Point>, SweepError> {
    let mut points: Vec<Point> = vec![vec![]];
    for (path, values) in &spec.grid {
        if values.is_empty() {
            return Err(SweepError::at(
                file,
                src,
                path,
                format!("grid.{path}: the list of values is empty"),
            ));
        }
        points = points
            .into_iter()
            .flat_map(|p| {
                values
                    .iter()
                    .map(move |v| [p.clone(), vec![(path.clone(), v.clone())]].concat())
            })
            .collect();
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
        let rows: Vec<Point> = (0..lens[0])
            .map(|i| {
                spec.zip
                    .iter()
                    .map(|(k, v)| (k.clone(), v[i].clone()))
                    .collect()
            })
            .collect();
        points = points
            .into_iter()
            .flat_map(|p| rows.iter().map(move |r| [p.clone(), r.clone()].concat()))
            .collect();
    }
    if let Some(r) = &spec.random {
        if r.samples == 0 {
            return Err(SweepError::at(
                file,
                src,
                "samples",
                "random.samples must be > 0".into(),
            ));
        }
        let mut rng = SplitMix64::new(r.seed);
        let mut samples: Vec<Point> = vec![];
        for _ in 0..r.samples {
            let mut s = vec![];
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
                s.push((path.clone(), v));
            }
            samples.push(s);
        }
        points = points
            .into_iter()
            .flat_map(|p| samples.iter().map(move |s| [p.clone(), s.clone()].concat()))
            .collect();
    }
    Ok(points)
}

/// Expands a parsed sweep. `file` is the sweep file (relative paths inside are resolved against its folder).
pub fn expand(spec: SweepSpec, file: &Path, src: &str) -> Result<Sweep, SweepError> {
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let err = |key: &str, msg: String| SweepError::at(file, src, key, msg);
    check_run_settings(&spec).map_err(|(key, msg)| err(key, msg))?;
    // Check every path up front so that a typo fails before any config is built.
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
        ParamPath::parse(p).map_err(|e| err(p, e))?;
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
    let seeds = if spec.seeds.is_empty() {
        None
    } else {
        Some(spec.seeds.clone())
    };
    let points = grid_points(&spec, file, src)?;
    let mut trials: Vec<Trial> = vec![];
    let mut skipped = vec![];
    let mut duplicates = vec![];
    let mut identities: std::collections::HashMap<(String, Option<String>), String> =
        Default::default();
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
        let base_path = resolve(&dir, &base);
        let text = std::fs::read_to_string(&base_path).map_err(|e| {
            err(
                &base,
                format!("variant {:?}: cannot read {base_path}: {e}", variant.name),
            )
        })?;
        let mut base_json = mixsweep_model::json::parse_jsonc(&text)
            .map_err(|e| err(&base, e.in_file(&base_path).to_string()))?;
        for (p, v) in spec.set.iter().chain(&variant.set) {
            ParamPath::parse(p)
                .unwrap()
                .set(&mut base_json, v)
                .map_err(|e| err(p, format!("variant {:?}: {e}", variant.name)))?;
        }
        let train = variant.train.clone().or_else(|| spec.train.clone()).ok_or_else(|| {
            err("name", format!("variant {:?} has no training data: set `train:` on the sweep or the variant", variant.name))
        })?;
        let train = resolve(&dir, &train);
        let val = variant
            .val
            .clone()
            .or_else(|| spec.val.clone())
            .map(|v| resolve(&dir, &v));
        let key = (train.clone(), val.clone());
        if !identities.contains_key(&key) {
            let id = data_identity(&train, val.as_deref()).map_err(|e| err("train", e))?;
            identities.insert(key.clone(), id);
        }
        let data_id = identities[&key].clone();
        let mut variant_points = points.clone();
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
            variant_points = variant_points
                .into_iter()
                .flat_map(|p| {
                    values
                        .iter()
                        .map(move |v| [p.clone(), vec![(path.clone(), v.clone())]].concat())
                })
                .collect();
        }
        for point in &variant_points {
            let mut cfg = base_json.clone();
            let mut overrides = point.clone();
            for (p, v) in point {
                ParamPath::parse(p)
                    .unwrap()
                    .set(&mut cfg, v)
                    .map_err(|e| err(p, format!("variant {:?}: {e}", variant.name)))?;
            }
            for (p, expr) in &spec.tie {
                let v = crate::expr::evaluate(expr, &cfg)
                    .map_err(|e| err(p, format!("tie.{p}: {e}")))?;
                ParamPath::parse(p)
                    .unwrap()
                    .set(&mut cfg, &v)
                    .map_err(|e| err(p, format!("tie.{p}: {e}")))?;
                overrides.push((p.clone(), v));
            }
            if let Some(steps) = spec.steps {
                ParamPath::parse("training.steps")
                    .unwrap()
                    .set(&mut cfg, &Value::from(steps))
                    .unwrap();
            }
            let point_seeds = seeds.clone().unwrap_or_else(|| {
                vec![
                    cfg.pointer("/training/seed")
                        .and_then(Value::as_u64)
                        .unwrap_or(42),
                ]
            });
            for &seed in &point_seeds {
                let mut cfg = cfg.clone();
                ParamPath::parse("training.seed")
                    .unwrap()
                    .set(&mut cfg, &Value::from(seed))
                    .unwrap();
                normalise(&mut cfg);
                let model = match ModelConfig::from_value(&cfg) {
                    Ok(m) => m,
                    Err(e) => {
                        let what = format!(
                            "variant {:?} ({base}){}: invalid config: {e}",
                            variant.name,
                            if overrides.is_empty() {
                                String::new()
                            } else {
                                format!(" with {}", Trial::fmt(&overrides))
                            }
                        );
                        if spec.skip_invalid {
                            skipped.push(Skipped {
                                variant: variant.name.clone(),
                                overrides: overrides.clone(),
                                reason: e.to_string(),
                            });
                            break;
                        }
                        let key = overrides
                            .first()
                            .map(|(k, _)| k.clone())
                            .unwrap_or_else(|| base.clone());
                        return Err(err(
                            &key,
                            what + " (or set `skip_invalid: true` to skip such points)",
                        ));
                    }
                };
                let counts = model.counts();
                let id = trial_id(&cfg, &data_id, seed);
                if let Some(first) = trials.iter().find(|t| t.id == id) {
                    duplicates.push((
                        variant.name.clone(),
                        Trial::fmt(&overrides),
                        first.id.clone(),
                    ));
                    continue;
                }
                trials.push(Trial {
                    id,
                    variant: variant.name.clone(),
                    overrides: overrides.clone(),
                    seed,
                    config: cfg,
                    train: train.clone(),
                    val: val.clone(),
                    params: counts.params,
                    flops_per_token: counts.train_flops_per_token,
                    steps: model.training.steps,
                });
            }
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

impl Trial {
    fn fmt(overrides: &[(String, Value)]) -> String {
        overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
