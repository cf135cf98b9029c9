//! The sweep file as written (YAML), before expansion. Unknown keys are errors with line and column.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A model variant: a config file, optionally with overrides.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub name: String,
    /// Config file (relative to the sweep file); defaults to the sweep's `base`.
    #[serde(default)]
    pub base: Option<String>,
    /// Overrides applied to this variant only: parameter path -> value.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Axes for this variant only, crossed with the sweep's points (e.g. `kv_heads` for attention).
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Data for this variant (defaults to the sweep's).
    #[serde(default)]
    pub train: Option<String>,
    #[serde(default)]
    pub val: Option<String>,
}

/// A distribution for random search.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    Choice(Vec<Value>),
    Uniform([f64; 2]),
    LogUniform([f64; 2]),
    IntUniform([i64; 2]),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RandomSpec {
    pub samples: usize,
    /// Seed of the sampler (not of training), so the same sweep file gives the same points.
    #[serde(default)]
    pub seed: u64,
    pub params: BTreeMap<String, Distribution>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    #[default]
    Min,
    Max,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MetricSpec {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        goal: Goal,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Docker,
    Kubernetes,
}

/// A sweep file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub name: String,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub variants: Vec<VariantSpec>,
    /// Overrides applied to every trial.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Cartesian product of these axes.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Lists advanced together (all the same length).
    #[serde(default)]
    pub zip: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    pub random: Option<RandomSpec>,
    /// Derived values, evaluated after the axes: parameter path -> expression (e.g. `model_dim / 64`).
    #[serde(default)]
    pub tie: BTreeMap<String, String>,
    /// Points whose config is invalid are skipped (and listed) instead of failing the plan.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Every point runs once per seed (`training.seed`); the same seeds for every variant.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Override `training.steps` for every trial.
    #[serde(default)]
    pub steps: Option<usize>,
    pub train: Option<String>,
    #[serde(default)]
    pub val: Option<String>,
    #[serde(default)]
    pub metric: Option<MetricSpec>,
    #[serde(default)]
    pub max_parallel: Option<usize>,
    /// Per-trial time limit, e.g. `30m`, `2h`, `90s`.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<usize>,
    #[serde(default)]
    pub backend: Backend,
    /// Storage root: a local folder (default `./mixsweep-runs`), `s3://bucket/prefix` or `gs://...`.
    #[serde(default)]
    pub storage: Option<String>,
    /// Store a CPU profile with each trial.
    #[serde(default)]
    pub profile: bool,
}

impl SweepSpec {
    pub fn metric(&self) -> (String, Goal) {
        match &self.metric {
            None => ("val_loss".into(), Goal::Min),
            Some(MetricSpec::Name(n)) => (n.clone(), Goal::Min),
            Some(MetricSpec::Full { name, goal }) => (name.clone(), *goal),
        }
    }
}

/// Parses a duration like `90s`, `30m`, `2h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 90s, 30m, 2h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration {s:?} must be > 0"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
