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
    Slurm,
}

/// Which GPUs a container backend hands to trials.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum GpuSpec {
    /// `all`: every trial gets all of the host's GPUs (one trial at a time by default).
    All(AllGpus),
    /// `N`: GPUs 0..N, one per trial (several with `trials_per_gpu`).
    Count(usize),
    /// `[0, 2, 3]`: these device ids, one per trial.
    Ids(Vec<usize>),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AllGpus {
    All,
}

/// `trials_per_gpu`: a number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialsPerGpu {
    Fixed(usize),
    Auto(AutoPacking),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPacking {
    Auto,
}

impl<'de> Deserialize<'de> for TrialsPerGpu {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TrialsPerGpu;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of trials (1, 2, ...) or `auto`")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<TrialsPerGpu, E> {
                Ok(TrialsPerGpu::Fixed(n as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<TrialsPerGpu, E> {
                usize::try_from(n)
                    .map(TrialsPerGpu::Fixed)
                    .map_err(|_| E::custom("trials_per_gpu must be >= 1 (or `auto`)"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TrialsPerGpu, E> {
                match s.trim() {
                    "auto" => Ok(TrialsPerGpu::Auto(AutoPacking::Auto)),
                    other => Err(E::custom(format!(
                        "trials_per_gpu is a number (1, 2, ...) or `auto`, not {other:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl TrialsPerGpu {
    /// The fixed number; `None` for `auto`.
    pub fn fixed(self) -> Option<usize> {
        match self {
            TrialsPerGpu::Fixed(n) => Some(n),
            TrialsPerGpu::Auto(_) => None,
        }
    }
}

impl SweepSpec {
    /// Whether the sweep asks for `trials_per_gpu: auto`.
    pub fn auto_packing(&self) -> bool {
        matches!(self.trials_per_gpu, Some(TrialsPerGpu::Auto(_)))
    }
}

impl GpuSpec {
    /// The device ids trials are spread over; `None` for `all`.
    pub fn ids(&self) -> Option<Vec<usize>> {
        match self {
            GpuSpec::All(_) => None,
            GpuSpec::Count(n) => Some((0..*n).collect()),
            GpuSpec::Ids(ids) => Some(ids.clone()),
        }
    }
}

/// Settings of the `kubernetes` backend (`kubernetes:` in the sweep file). Scheduling fields are
/// passed to the pod spec as written (Kubernetes' own field names and shapes).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Namespace for the Jobs (default: the kubeconfig context's, else `default`); `--namespace` wins.
    #[serde(default)]
    pub namespace: Option<String>,
    /// kubeconfig context (default: the current one); `--context` wins.
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// A list of Kubernetes tolerations.
    #[serde(default)]
    pub tolerations: Vec<Value>,
    /// A Kubernetes affinity object.
    #[serde(default)]
    pub affinity: Option<Value>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
    /// Names of Secrets for pulling the image.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    #[serde(default)]
    pub service_account: Option<String>,
    /// A Secret whose keys become the runner's environment (object-store credentials).
    #[serde(default)]
    pub credentials_secret: Option<String>,
    /// The Job's `backoffLimit` (pod retries inside Kubernetes; default 0: mixsweep retries trials).
    #[serde(default)]
    pub backoff_limit: Option<i32>,
    /// The Job's `ttlSecondsAfterFinished` (default 3600).
    #[serde(default)]
    pub ttl_seconds_after_finished: Option<i32>,
    /// How long a pod may stay unschedulable before the trial fails with the scheduler's message
    /// (default 15m).
    #[serde(default)]
    pub schedule_timeout: Option<String>,
    /// A folder on the nodes (hostPath, created if missing) where GPU pods keep MLX's compiled CUDA
    /// kernels between trials, one subfolder per image: without it every pod compiles them again.
    #[serde(default)]
    pub kernel_cache: Option<String>,
    /// Object storage where GPU pods share compiled kernels across nodes (the runner's
    /// `MIXSWEEP_KERNEL_STORE`): a fresh pod on a fresh node downloads what any earlier trial
    /// compiled. Default for GPU trials: `<storage>/kernels`; `off` turns it off.
    #[serde(default)]
    pub kernel_store: Option<String>,
    /// A Kueue LocalQueue: Jobs are labelled for it and created suspended; Kueue admits them within its
    /// quota (then `max_parallel` does not cap submissions), and a Job it evicts resumes later.
    #[serde(default)]
    pub queue: Option<String>,
    /// Kueue's WorkloadPriorityClass for the Jobs (with `queue`).
    #[serde(default)]
    pub priority_class: Option<String>,
}

/// Settings of the `slurm` backend (`slurm:` in the sweep file): each trial is a batch job whose
/// runner trains in the trial's work folder, which must be on a file system the compute nodes share
/// with the orchestrator (set `MIXSWEEP_WORK_DIR`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub qos: Option<String>,
    /// GPUs per job (`--gpus`).
    #[serde(default)]
    pub gpus: Option<u32>,
    /// CPUs per job (`--cpus-per-task`).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory per job, e.g. `16g` (`--mem`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Time limit per job, e.g. `2h`, `30m` (`--time`, whole minutes). A trial that reaches it is
    /// signalled ahead of the kill, writes its resume point and continues in a new job.
    #[serde(default)]
    pub time: Option<String>,
    /// How long before the time limit the runner is told to stop (`--signal=B:USR1@...`); default `2m`.
    #[serde(default)]
    pub signal_before: Option<String>,
    /// More `sbatch` flags, as written (e.g. `--constraint=h100`).
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    /// Shell lines run in the job before the runner (`module load ...`, `source venv/bin/activate`).
    #[serde(default)]
    pub setup: Option<String>,
    /// The `mixsweep-runner` on the nodes (default: the one the orchestrator uses).
    #[serde(default)]
    pub runner: Option<String>,
}

/// `budget:`: training FLOPs per trial (forward and backward, the runner's count); the trials of each
/// budget make one iso-FLOP curve that `results` fits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub flops: Vec<f64>,
}

/// `cost:`: what a GPU-hour (and optionally a CPU-only trial's hour) costs, for the `cost_usd`
/// column of `results`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostSpec {
    pub gpu_hour_usd: f64,
    #[serde(default)]
    pub cpu_hour_usd: Option<f64>,
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
    /// A compute budget instead of `steps`: every trial runs once per budget, for the steps its
    /// training FLOPs per token and `training.batch_tokens` allow (`budget: {flops: [1e15, 3e15]}`).
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// Prices for the cost columns of `results` (`cost: {gpu_hour_usd: 2.5}`).
    #[serde(default)]
    pub cost: Option<CostSpec>,
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
    /// After training, validate on every validation token and compute bits per byte (`val_bpb`; needs
    /// the lookup tables `prepare` writes). On by itself when `metric` is `val_bpb`.
    #[serde(default)]
    pub eval: bool,
    /// Container image of the runner (`docker` and `kubernetes` backends).
    #[serde(default)]
    pub image: Option<String>,
    /// GPUs for the trials: `all`, a count, or device ids (one trial per GPU by default).
    #[serde(default)]
    pub gpus: Option<GpuSpec>,
    /// Local runs: train each device slot's trials one after another in a warm `mixsweep-runner
    /// worker` process (default: on for GPU slots, off on CPU).
    #[serde(default)]
    pub workers: Option<bool>,
    /// Trials sharing one GPU at a time (pack small trials): a number (default 1), or `auto` (a
    /// short calibration run of each distinct model shape measures peak memory and throughput).
    #[serde(default)]
    pub trials_per_gpu: Option<TrialsPerGpu>,
    /// CPU limit per trial container (cores, e.g. 4 or 0.5).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory limit per trial container, e.g. `16g`, `512m`, `8GiB`.
    #[serde(default)]
    pub memory: Option<String>,
    /// Names of environment variables passed from the orchestrator's environment into each trial
    /// (object-store credentials, ...). Only the names are written anywhere.
    #[serde(default)]
    pub env: Vec<String>,
    /// Settings of the `kubernetes` backend.
    #[serde(default)]
    pub kubernetes: KubernetesSpec,
    /// Settings of the `slurm` backend.
    #[serde(default)]
    pub slurm: SlurmSpec,
}

/// Parses a memory size: a number of bytes with an optional unit `k`, `m`, `g`, `t` (powers of 1024,
/// also written `KiB`, `MB`, `Gi`, ...).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid memory size {s:?} (use e.g. 512m, 16g, 8GiB)"))?;
    let scale = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches('b')
        .trim_end_matches('i')
    {
        "" => 1u64,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("invalid memory unit in {s:?} (use k, m, g or t)")),
    };
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("memory size {s:?} must be > 0"));
    }
    Ok((n * scale as f64) as u64)
}

/// Metrics a trial's `summary.json` reports (`val_loss` and `train_loss` are the short names of
/// `best_val_loss` and `final_train_loss`).
pub const METRICS: &[&str] = &[
    "val_loss",
    "train_loss",
    "best_val_loss",
    "final_val_loss",
    "final_train_loss",
    "val_bpb",
    "full_val_loss",
    "mean_tok_s",
    "wall_time_s",
    "peak_memory_bytes",
    "params",
    "flops_per_token",
];

impl SweepSpec {
    /// Whether trials run the full validation with bits per byte.
    pub fn full_eval(&self) -> bool {
        self.eval || self.metric().0 == "val_bpb"
    }

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
