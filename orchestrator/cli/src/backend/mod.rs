//! Backends: what runs one attempt of a trial, and how its end is classified.
//!
//! A backend is one file here and one arm of [`Backend`]: `local` (a `mixsweep-runner` child process),
//! `docker` (a container), `kubernetes` (a Job), `slurm` (a batch job). [`crate::run`] only schedules:
//! it prepares the work folder, calls [`Backend::attempt`], classifies the [`AttemptEnd`] with
//! [`classify`] into an [`Ending`] (the stable names of `attempt.json`'s `status`) and stores the
//! artifacts.

pub mod docker;
pub mod kubernetes;
pub mod local;
pub mod slurm;
pub mod stopping;
pub mod worker;

use anyhow::Result;
use mixsweep_sweep::Trial;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use mixsweep_artifacts::Ending;

/// What one attempt needs from the scheduler.
pub struct AttemptCtx<'a> {
    pub sweep: &'a str,
    pub trial: &'a Trial,
    /// The trial's work folder (`config.json`, `out/`, logs).
    pub work: &'a Path,
    /// The GPU slot's device id, if the trial has one of its own.
    pub gpu: Option<usize>,
    pub runner: &'a Path,
    pub profile: bool,
    pub full_eval: bool,
    pub timeout: Option<Duration>,
    /// Set on Ctrl-C: stop the attempt so that it can resume.
    pub stop: &'a AtomicBool,
    pub on_metrics: &'a (dyn Fn(&serde_json::Value) + Sync),
    pub log: &'a (dyn Fn(String) + Sync),
}

/// The backend of a run.
pub enum Backend {
    /// Runner processes on this machine; warm workers per device slot where wanted.
    Local {
        workers: worker::Pool,
        setting: Option<bool>,
    },
    Docker(Box<docker::DockerBackend>),
    Kubernetes(Box<kubernetes::KubernetesBackend>),
    Slurm(Box<slurm::SlurmBackend>),
}

/// Jobs in flight at once on Kubernetes unless the sweep sets `max_parallel` (more would wait in the
/// cluster's queue and could hit `schedule_timeout`).
const KUBERNETES_PARALLEL: usize = 4;
/// Batch jobs in flight at once on Slurm unless the sweep sets `max_parallel`.
const SLURM_PARALLEL: usize = 8;

impl Backend {
    /// Connects to the sweep's backend (checks that its engine is reachable and set up).
    pub async fn connect(
        kind: mixsweep_sweep::spec::Backend,
        spec: &mixsweep_sweep::spec::SweepSpec,
        image: Option<String>,
        root: &str,
        keep_failed: bool,
        kube: &kubernetes::KubeTarget,
        timeout: Option<Duration>,
    ) -> Result<Backend> {
        use mixsweep_sweep::spec::Backend as Kind;
        Ok(match kind {
            Kind::Local => Backend::Local {
                workers: Default::default(),
                setting: spec.workers,
            },
            Kind::Docker => Backend::Docker(Box::new(
                docker::DockerBackend::connect(spec, image, root, keep_failed).await?,
            )),
            Kind::Kubernetes => Backend::Kubernetes(Box::new(
                kubernetes::KubernetesBackend::connect(spec, image, root, kube, timeout).await?,
            )),
            Kind::Slurm => Backend::Slurm(Box::new(slurm::SlurmBackend::connect(spec, root)?)),
        })
    }

    /// The name stored in `attempt.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local { .. } => "local",
            Backend::Docker(_) => "docker",
            Backend::Kubernetes(_) => "kubernetes",
            Backend::Slurm(_) => "slurm",
        }
    }

    /// One line for the run's banner.
    pub fn describe(&self) -> String {
        match self {
            Backend::Local { setting, .. } => match (
                worker::wanted(*setting, None),
                worker::wanted(*setting, Some(0)),
            ) {
                (true, _) => "local warm workers".to_string(),
                (false, true) => "local processes (warm workers on GPUs)".to_string(),
                (false, false) => "local processes".to_string(),
            },
            Backend::Docker(d) => match (d.uses_workers(None), d.uses_workers(Some(0))) {
                (true, _) => format!("docker ({}) warm workers", d.image),
                (false, true) => format!("docker ({}), warm workers on GPUs", d.image),
                (false, false) => format!("docker ({})", d.image),
            },
            Backend::Kubernetes(k) => {
                format!("kubernetes (namespace {}, {})", k.namespace, k.image)
            }
            Backend::Slurm(s) => s.describe(),
        }
    }

    /// Trials at once when neither the sweep nor the command line says (`gpu_slots`: local GPU slots).
    pub fn default_parallel(&self, gpu_slots: usize) -> usize {
        match self {
            Backend::Kubernetes(_) => KUBERNETES_PARALLEL,
            Backend::Slurm(_) => SLURM_PARALLEL,
            _ => gpu_slots.max(1),
        }
    }

    /// The Kueue queue that admits this backend's Jobs within its quota: then `max_parallel` does not
    /// cap submissions.
    pub fn admission_queue(&self) -> Option<&str> {
        match self {
            Backend::Kubernetes(k) => k.queue(),
            _ => None,
        }
    }

    /// Whether GPUs are placed by the cluster (no local GPU slots).
    pub fn cluster_places_gpus(&self) -> bool {
        matches!(self, Backend::Kubernetes(_) | Backend::Slurm(_))
    }

    /// Whether the runner reads and writes the work folder itself (local disk or a shared file
    /// system): the orchestrator fetches the resume point into it and uploads its artifacts. The
    /// container backends' runners talk to storage themselves.
    pub fn uses_work_folder(&self) -> bool {
        matches!(self, Backend::Local { .. } | Backend::Slurm(_))
    }

    /// Runs one attempt of a trial (or adopts one still running from an earlier run).
    pub async fn attempt(&self, ctx: &AttemptCtx<'_>) -> Result<AttemptEnd> {
        match self {
            Backend::Local { workers, setting } if worker::wanted(*setting, ctx.gpu) => {
                workers.attempt(ctx).await
            }
            Backend::Local { .. } => local::attempt(ctx).await,
            Backend::Docker(d) => Ok(d.attempt(ctx).await),
            Backend::Kubernetes(k) => Ok(k
                .attempt(
                    ctx.sweep,
                    ctx.trial,
                    ctx.work,
                    ctx.profile,
                    ctx.stop,
                    ctx.on_metrics,
                    ctx.log,
                )
                .await),
            Backend::Slurm(s) => s.attempt(ctx).await,
        }
    }

    /// Ends what the backend keeps between trials (idle warm worker containers).
    pub async fn shutdown(&self) {
        if let Backend::Docker(d) = self {
            d.shutdown().await;
        }
    }

    /// Cleans up after trials that need no more attempts (their containers).
    pub async fn remove_finished(&self, sweep: &str, done: &[String]) {
        if let Backend::Docker(d) = self {
            d.remove_finished(sweep, done).await;
        }
    }
}

/// How one attempt ended, whatever ran it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptEnd {
    /// The runner's exit code (`None`: killed by a signal, or never started).
    pub code: Option<i32>,
    /// Stopped by us (Ctrl-C or time-out).
    pub interrupted: bool,
    pub timed_out: bool,
    /// The container was killed for exceeding its memory limit.
    pub oom: bool,
    /// The node went away or the pod was preempted/evicted: run again without counting the attempt.
    pub preempted: Option<String>,
    /// The backend failed in a way of its own (engine error, image pull, unschedulable).
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// How the attempt is recorded in `attempt.json`.
    pub state: Ending,
    pub message: String,
    pub retryable: bool,
}

impl AttemptEnd {
    pub fn engine(message: String, retryable: bool) -> AttemptEnd {
        Self::failed(Ending::EngineError, message, retryable)
    }

    pub fn failed(state: Ending, message: String, retryable: bool) -> AttemptEnd {
        AttemptEnd {
            failure: Some(Failure {
                state,
                message,
                retryable,
            }),
            ..Default::default()
        }
    }
}

/// The `mixsweep-runner train` arguments of a trial run in a container (docker, kubernetes): the config
/// from the trial's storage URL, artifacts back to it, metrics as JSON lines on stdout for the live view.
pub fn container_train_args(
    trial_url: &str,
    train: String,
    val: Option<String>,
    profile: bool,
    full_eval: bool,
) -> Vec<String> {
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        format!("{trial_url}/config.json"),
        "--train".into(),
        train,
    ];
    if let Some(v) = val {
        args.extend(["--val".into(), v]);
    }
    args.extend([
        "--out".into(),
        "/tmp/out".into(),
        "--artifacts".into(),
        trial_url.to_string(),
        "--quiet".into(),
        "--progress-json".into(),
        // continue an interrupted attempt from the resume point it uploaded, if there is one
        "--resume".into(),
    ]);
    if profile {
        args.extend(["--cpuprofile".into(), "/tmp/out/cpu.pb".into()]);
    }
    if full_eval {
        args.push("--eval".into());
    }
    args
}

/// Finds `mixsweep-runner`: `MIXSWEEP_RUNNER`, then next to this executable, then `PATH`.
pub fn find_runner() -> PathBuf {
    if let Some(p) = std::env::var_os("MIXSWEEP_RUNNER") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name("mixsweep-runner");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("mixsweep-runner")
}

pub fn gpu_count() -> usize {
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count()
        })
        .unwrap_or(0)
}

/// Reads metrics lines appended since `offset`.
pub fn new_metrics(path: &Path, offset: &mut usize) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    if text.len() <= *offset {
        return vec![];
    }
    let fresh = &text[*offset..];
    let complete = fresh.rfind('\n').map_or(0, |i| i + 1);
    *offset += complete;
    fresh[..complete]
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How an attempt ended, as recorded in `attempt.json`: `(status, error, retryable)`.
pub fn classify(
    result: &Result<AttemptEnd>,
    summary_status: Option<mixsweep_artifacts::RunStatus>,
) -> (Ending, Option<String>, bool) {
    match result {
        Ok(AttemptEnd { code: Some(0), .. }) => (Ending::Completed, None, false),
        Ok(AttemptEnd { timed_out: true, .. }) => {
            (Ending::Timeout, Some("timed out".to_string()), false)
        }
        Ok(AttemptEnd {
            interrupted: true, ..
        }) => (Ending::Interrupted, None, false),
        Ok(AttemptEnd { oom: true, .. }) => (
            Ending::Oom,
            Some("out of memory: the container was OOM-killed (raise `memory`, or lower training.batch_tokens)".to_string()),
            false,
        ),
        Ok(AttemptEnd {
            failure: Some(f), ..
        }) => (f.state, Some(f.message.clone()), f.retryable),
        // The same config, data and seed diverge again: final, not retried.
        Ok(_) if summary_status == Some(mixsweep_artifacts::RunStatus::Diverged) => (
            Ending::Diverged,
            Some("the loss diverged (see summary.json)".to_string()),
            false,
        ),
        Ok(AttemptEnd { code: Some(2), .. }) => (
            Ending::Failed,
            Some("config or data error (see stderr.log)".to_string()),
            false,
        ),
        Ok(AttemptEnd { code, .. }) => (
            Ending::Failed,
            Some(match code {
                Some(c) => format!("runner exited with {c} (see stderr.log)"),
                None => "runner was killed (see stderr.log)".to_string(),
            }),
            true,
        ),
        Err(e) => (Ending::Failed, Some(format!("{e:#}")), true),
    }
}
