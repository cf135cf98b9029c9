//! `mixsweep run`: plans the sweep, derives each trial's state from storage, and runs the trials that
//! are not done, `max_parallel` at a time, on a backend: `local` runs `mixsweep-runner train` child
//! processes (default: one per GPU with `CUDA_VISIBLE_DEVICES` set per trial, or one on CPU);
//! `docker` runs each trial in a container ([`crate::docker`]).
//!
//! * Runtime failures (runner exit code 1, a crash, a killed container, an engine error) are retried up
//!   to `retries` times with backoff (2 s, 4 s, ...); config and data errors (exit code 2), OOM kills and
//!   time-outs are not.
//! * Ctrl-C sends SIGINT to the running children (the runner stops after its current step and writes
//!   its weights and summary), marks their trials interrupted, and starts nothing new. Running again
//!   resumes: done trials are kept, interrupted and failed ones run again.
//! * Artifacts are copied to storage when an attempt ends, `summary.json` last.

use crate::storage::{Storage, TrialState, TrialStates};
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mixsweep_store::RESUME_FILE;
use mixsweep_sweep::{Sweep, Trial};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// Run new, interrupted and failed trials (the default).
    Unfinished,
    /// Also run trials that are done.
    All,
}

pub struct RunOptions {
    pub sweep: PathBuf,
    pub storage: Option<String>,
    pub max_parallel: Option<usize>,
    pub rerun: Rerun,
    pub quiet: bool,
    pub runner: PathBuf,
    /// Overrides the sweep's `backend`.
    pub backend: Option<mixsweep_sweep::spec::Backend>,
    /// Overrides the sweep's `image` (container backends).
    pub image: Option<String>,
    /// Keep the containers of failed trials (container backends).
    pub keep_failed: bool,
    /// `--context` / `--namespace` for the kubernetes backend.
    pub kube: crate::kubernetes::KubeTarget,
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
    /// The trial state recorded in `attempt.json` (`engine_error`, `image_pull`, `unschedulable`).
    pub state: &'static str,
    pub message: String,
    pub retryable: bool,
}

impl AttemptEnd {
    pub fn engine(message: String, retryable: bool) -> AttemptEnd {
        Self::failed("engine_error", message, retryable)
    }

    pub fn failed(state: &'static str, message: String, retryable: bool) -> AttemptEnd {
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

enum Backend {
    Local,
    Docker(crate::docker::DockerBackend),
    Kubernetes(crate::kubernetes::KubernetesBackend),
}

/// How one trial ended (this invocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Cached,
    Failed(String),
    Interrupted,
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal(child: &tokio::process::Child, sig: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { kill(pid as i32, sig) };
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

fn gpu_count() -> usize {
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

struct Shared {
    backend: Backend,
    storage: Storage,
    runner: PathBuf,
    sweep_name: String,
    timeout: Option<Duration>,
    retries: usize,
    profile: bool,
    full_eval: bool,
    stop: AtomicBool,
    slots: Mutex<Vec<Option<usize>>>,
    progress: MultiProgress,
    summary: ProgressBar,
    live: bool,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    done: AtomicUsize,
    running: AtomicUsize,
    queued: AtomicUsize,
    failed: AtomicUsize,
    cached: AtomicUsize,
}

impl Shared {
    fn refresh(&self) {
        let c = &self.counts;
        self.summary.set_message(format!(
            "done {}  running {}  queued {}  failed {}  cached {}",
            c.done.load(Ordering::Relaxed),
            c.running.load(Ordering::Relaxed),
            c.queued.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.cached.load(Ordering::Relaxed)
        ));
    }

    fn log(&self, line: String) {
        if self.live {
            self.progress.suspend(|| eprintln!("{line}"));
        } else {
            eprintln!("{line}");
        }
    }
}

fn label(t: &Trial) -> String {
    let o = t.overrides_text();
    format!(
        "{} {} {}seed={}",
        t.id,
        t.variant,
        if o.is_empty() {
            String::new()
        } else {
            format!("{o} ")
        },
        t.seed
    )
}

/// Reads metrics lines appended since `offset`.
fn new_metrics(path: &Path, offset: &mut usize) -> Vec<serde_json::Value> {
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

async fn upload_artifacts(
    shared: &Shared,
    id: &str,
    work: &Path,
    attempt: &serde_json::Value,
) -> Result<()> {
    let out = work.join("out");
    for (src, name) in [
        (out.join("metrics.jsonl"), "metrics.jsonl"),
        (out.join("model.safetensors"), "model.safetensors"),
        (out.join("cpu.pb"), "cpu.pb"),
        (out.join(RESUME_FILE), RESUME_FILE),
        (work.join("stdout.log"), "stdout.log"),
        (work.join("stderr.log"), "stderr.log"),
    ] {
        if let Ok(bytes) = tokio::fs::read(&src).await {
            shared
                .storage
                .put(&format!("trials/{id}/{name}"), bytes)
                .await?;
        }
    }
    // A finished local attempt leaves no resume point; an older one must not be resumed later.
    // (Container runners upload their own files, resume point included.)
    if matches!(shared.backend, Backend::Local) && !out.join(RESUME_FILE).exists() {
        shared
            .storage
            .delete(&format!("trials/{id}/{RESUME_FILE}"))
            .await?;
    }
    shared
        .storage
        .put(
            &format!("trials/{id}/attempt.json"),
            serde_json::to_vec_pretty(attempt)?,
        )
        .await?;
    if let Ok(bytes) = tokio::fs::read(out.join("summary.json")).await {
        shared
            .storage
            .put(&format!("trials/{id}/summary.json"), bytes)
            .await?;
    }
    Ok(())
}

/// One attempt on the trial's backend. The trial's `config.json` is stored first (the container
/// backends' runners read it from there).
async fn attempt(
    shared: &Shared,
    t: &Trial,
    work: &Path,
    bar: &ProgressBar,
    gpu: Option<usize>,
) -> Result<AttemptEnd> {
    let _ = tokio::fs::remove_dir_all(work).await;
    tokio::fs::create_dir_all(work.join("out")).await?;
    let config = serde_json::to_vec_pretty(&t.config)?;
    tokio::fs::write(work.join("config.json"), &config).await?;
    shared
        .storage
        .put(&format!("trials/{}/config.json", t.id), config)
        .await?;
    match &shared.backend {
        Backend::Local => {
            // An interrupted attempt's resume point (and the metrics it continues) come back from
            // storage; the runner continues from it (`--resume`).
            mixsweep_store::fetch_resume(
                &shared.storage,
                &format!("trials/{}", t.id),
                &work.join("out"),
            )
            .await?;
            attempt_local(shared, t, work, bar, gpu).await
        }
        Backend::Kubernetes(k) => Ok(k
            .attempt(
                &shared.sweep_name,
                t,
                work,
                shared.profile,
                &shared.stop,
                &|m| update_bar(bar, t, m),
                &|line| shared.log(line),
            )
            .await),
        Backend::Docker(d) => Ok(d
            .attempt(
                &shared.sweep_name,
                t,
                work,
                shared.profile,
                gpu,
                &shared.stop,
                shared.timeout,
                &|m| update_bar(bar, t, m),
                &|line| shared.log(line),
            )
            .await),
    }
}

/// Jobs in flight at once on Kubernetes unless the sweep sets `max_parallel` (more would wait in the
/// cluster's queue and could hit `schedule_timeout`).
const KUBERNETES_PARALLEL: usize = 4;

/// One local attempt: a `mixsweep-runner train` child process.
async fn attempt_local(
    shared: &Shared,
    t: &Trial,
    work: &Path,
    bar: &ProgressBar,
    gpu: Option<usize>,
) -> Result<AttemptEnd> {
    let stdout = std::fs::File::create(work.join("stdout.log"))?;
    let stderr = std::fs::File::create(work.join("stderr.log"))?;
    let mut cmd = tokio::process::Command::new(&shared.runner);
    cmd.arg("train")
        .arg("--config")
        .arg(work.join("config.json"))
        .arg("--train")
        .arg(&t.train);
    if let Some(v) = &t.val {
        cmd.arg("--val").arg(v);
    }
    cmd.arg("--out")
        .arg(work.join("out"))
        .arg("--quiet")
        .arg("--resume");
    if shared.full_eval {
        cmd.arg("--eval");
    }
    if shared.profile {
        cmd.arg("--cpuprofile").arg(work.join("out/cpu.pb"));
    }
    cmd.stdout(stdout)
        .stderr(stderr)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(g) = gpu {
        cmd.env("CUDA_VISIBLE_DEVICES", g.to_string());
    }
    // Concurrent trials share compiled CUDA kernels safely (see the runner's kernel_cache).
    if std::env::var_os("MIXSWEEP_KERNEL_CACHE").is_none()
        && std::env::var_os("MLX_PTX_CACHE_DIR").is_none()
    {
        cmd.env(
            "MIXSWEEP_KERNEL_CACHE",
            mixsweep_store::default_cache_dir().join("mlx-kernels/local"),
        );
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", shared.runner.display()))?;
    let started = Instant::now();
    let metrics = work.join("out/metrics.jsonl");
    let mut offset = 0usize;
    let mut interrupted = false;
    let mut timed_out = false;
    let mut signalled_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            for m in new_metrics(&metrics, &mut offset) {
                update_bar(bar, t, &m);
            }
            return Ok(AttemptEnd {
                code: status.code(),
                interrupted,
                timed_out,
                ..Default::default()
            });
        }
        for m in new_metrics(&metrics, &mut offset) {
            update_bar(bar, t, &m);
        }
        if !interrupted && shared.stop.load(Ordering::SeqCst) {
            interrupted = true;
            signal(&child, 2);
            signalled_at = Some(Instant::now());
        }
        if !interrupted && shared.timeout.is_some_and(|d| started.elapsed() > d) {
            timed_out = true;
            interrupted = true;
            signal(&child, 2);
            signalled_at = Some(Instant::now());
        }
        if signalled_at.is_some_and(|s| s.elapsed() > Duration::from_secs(30)) {
            child.start_kill()?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn update_bar(bar: &ProgressBar, t: &Trial, m: &serde_json::Value) {
    if let Some(step) = m["step"].as_u64() {
        bar.set_position(step.min(t.steps as u64));
    }
    let mut msg = format!("{} seed={}", t.variant, t.seed);
    if let Some(l) = m["train_loss"].as_f64() {
        msg += &format!(" loss={l:.4}");
    }
    if let Some(v) = m["val_loss"].as_f64() {
        msg += &format!(" val={v:.4}");
    }
    if let Some(r) = m["tok_s"].as_f64().filter(|r| *r > 0.0) {
        msg += &format!(" tok/s={r:.0}");
    }
    bar.set_message(msg);
}

async fn run_trial(shared: Arc<Shared>, t: Trial) -> Outcome {
    if shared.stop.load(Ordering::SeqCst) {
        shared.counts.queued.fetch_sub(1, Ordering::Relaxed);
        return Outcome::Interrupted;
    }
    shared.counts.queued.fetch_sub(1, Ordering::Relaxed);
    shared.counts.running.fetch_add(1, Ordering::Relaxed);
    shared.refresh();
    let slot = {
        let mut slots = shared.slots.lock().await;
        let i = slots.iter().position(|s| s.is_some()).unwrap_or(0);
        (i, slots.get_mut(i).and_then(|s| s.take()))
    };
    let bar = shared
        .progress
        .insert_before(&shared.summary, ProgressBar::new(t.steps as u64));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:24}] {pos}/{len} {msg} (eta {eta})")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_prefix(t.id.clone());
    bar.set_message(format!("{} seed={}", t.variant, t.seed));
    let work = std::env::temp_dir()
        .join("mixsweep-work")
        .join(&shared.sweep_name)
        .join(&t.id);
    let mut outcome = Outcome::Failed("not run".into());
    let (mut n, mut preemptions) = (0usize, 0usize);
    let mut keep_work = false;
    while n <= shared.retries {
        if n > 0 {
            let wait = Duration::from_secs(2u64.pow(n as u32));
            shared.log(format!(
                "retrying {} in {}s (attempt {}/{})",
                label(&t),
                wait.as_secs(),
                n + 1,
                shared.retries + 1
            ));
            tokio::time::sleep(wait).await;
            if shared.stop.load(Ordering::SeqCst) {
                outcome = Outcome::Interrupted;
                break;
            }
        }
        let result = attempt(&shared, &t, &work, &bar, slot.1).await;
        if let Ok(AttemptEnd {
            preempted: Some(why),
            ..
        }) = &result
        {
            // Not the trial's fault: run again without using up a retry (bounded, in case the
            // cluster keeps evicting it).
            preemptions += 1;
            if preemptions <= 20 && !shared.stop.load(Ordering::SeqCst) {
                shared.log(format!(
                    "{}: {why}; running it again (not counted as a retry)",
                    label(&t)
                ));
                continue;
            }
        }
        let (status, error, retryable) = match &result {
            Ok(AttemptEnd { code: Some(0), .. }) => ("completed", None, false),
            Ok(AttemptEnd { timed_out: true, .. }) => {
                ("timeout", Some("timed out".to_string()), false)
            }
            Ok(AttemptEnd {
                interrupted: true, ..
            }) => ("interrupted", None, false),
            Ok(AttemptEnd { oom: true, .. }) => (
                "oom",
                Some("out of memory: the container was OOM-killed (raise `memory`, or lower training.batch_tokens)".to_string()),
                false,
            ),
            Ok(AttemptEnd {
                failure: Some(f), ..
            }) => (f.state, Some(f.message.clone()), f.retryable),
            Ok(AttemptEnd { code: Some(2), .. }) => (
                "failed",
                Some("config or data error (see stderr.log)".to_string()),
                false,
            ),
            Ok(AttemptEnd { code, .. }) => (
                "failed",
                Some(match code {
                    Some(c) => format!("runner exited with {c} (see stderr.log)"),
                    None => "runner was killed (see stderr.log)".to_string(),
                }),
                true,
            ),
            Err(e) => ("failed", Some(format!("{e:#}")), true),
        };
        let stderr_tail = std::fs::read_to_string(work.join("stderr.log"))
            .map(|s| {
                s.lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default();
        let record = serde_json::json!({
            "trial": t.id, "status": status, "attempt": n + 1, "error": error, "stderr_tail": stderr_tail,
            "exit_code": result.as_ref().ok().and_then(|r| r.code),
            "backend": match shared.backend { Backend::Local => "local", Backend::Docker(_) => "docker", Backend::Kubernetes(_) => "kubernetes" },
        });
        if let Err(e) = upload_artifacts(&shared, &t.id, &work, &record).await {
            // Never lose results: keep the local copies and say where they are.
            keep_work = true;
            outcome = Outcome::Failed(format!(
                "could not store the artifacts in {}: {e:#} (local copies kept in {})",
                shared.storage.root,
                work.display()
            ));
            break;
        }
        outcome = match status {
            "completed" => Outcome::Done,
            "interrupted" => Outcome::Interrupted,
            _ => Outcome::Failed(format!(
                "{}{}",
                error.unwrap_or_default(),
                if stderr_tail.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr_tail}")
                }
            )),
        };
        if !retryable || shared.stop.load(Ordering::SeqCst) {
            break;
        }
        n += 1;
    }
    if !keep_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    bar.finish_and_clear();
    if let Some(g) = slot.1 {
        shared.slots.lock().await[slot.0] = Some(g);
    }
    shared.counts.running.fetch_sub(1, Ordering::Relaxed);
    match &outcome {
        Outcome::Done => {
            shared.counts.done.fetch_add(1, Ordering::Relaxed);
            shared.log(format!("done {}", label(&t)));
        }
        Outcome::Failed(why) => {
            shared.counts.failed.fetch_add(1, Ordering::Relaxed);
            shared.log(format!("FAILED {}: {why}", label(&t)));
        }
        Outcome::Interrupted => shared.log(format!("interrupted {}", label(&t))),
        Outcome::Cached => {}
    }
    shared.refresh();
    outcome
}

/// Runs a sweep; returns the sweep, the storage and each trial's outcome.
pub async fn run(opts: RunOptions) -> Result<(Sweep, Storage, Vec<(Trial, Outcome)>, bool)> {
    let sweep = mixsweep_sweep::load(&opts.sweep)?;
    let root = opts
        .storage
        .clone()
        .or_else(|| sweep.spec.storage.clone())
        .unwrap_or_else(|| "./mixsweep-runs".into());
    let storage = Storage::open(&root)?;
    let src = tokio::fs::read(&opts.sweep).await?;
    storage
        .put(&format!("sweeps/{}/sweep.yaml", sweep.spec.name), src)
        .await?;
    let listing: String = sweep
        .trials
        .iter()
        .map(|t| {
            serde_json::json!({"id": t.id, "variant": t.variant, "seed": t.seed, "params": t.params,
                "flops_per_token": t.flops_per_token, "steps": t.steps,
                "overrides": t.overrides.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>()})
            .to_string()
                + "\n"
        })
        .collect();
    storage
        .put(
            &format!("sweeps/{}/trials.jsonl", sweep.spec.name),
            listing.into_bytes(),
        )
        .await?;

    let timeout = sweep
        .spec
        .timeout
        .as_deref()
        .map(mixsweep_sweep::spec::parse_duration)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let backend_kind = opts.backend.unwrap_or(sweep.spec.backend);
    let backend = match backend_kind {
        mixsweep_sweep::spec::Backend::Local => Backend::Local,
        mixsweep_sweep::spec::Backend::Docker => Backend::Docker(
            crate::docker::DockerBackend::connect(
                &sweep.spec,
                opts.image.clone(),
                &root,
                opts.keep_failed,
            )
            .await?,
        ),
        mixsweep_sweep::spec::Backend::Kubernetes => Backend::Kubernetes(
            crate::kubernetes::KubernetesBackend::connect(
                &sweep.spec,
                opts.image.clone(),
                &root,
                &opts.kube,
                timeout,
            )
            .await?,
        ),
    };
    // GPU slots: the sweep's `gpus` ids (each `trials_per_gpu` times), else for local runs every GPU
    // nvidia-smi lists; `None` is a slot without a GPU of its own.
    let per_gpu = sweep.spec.trials_per_gpu.unwrap_or(1);
    let gpu_ids: Vec<usize> = match &sweep.spec.gpus {
        // On Kubernetes `gpus: N` is each pod's GPU count; the cluster places the pods.
        _ if matches!(backend, Backend::Kubernetes(_)) => vec![],
        Some(g) => g.ids().unwrap_or_default(),
        None if matches!(backend, Backend::Local) => {
            let n = gpu_count();
            if n > 1 { (0..n).collect() } else { vec![] }
        }
        None => vec![],
    };
    let slots: Vec<Option<usize>> = if gpu_ids.is_empty() {
        vec![None]
    } else {
        gpu_ids
            .iter()
            .flat_map(|&g| std::iter::repeat_n(Some(g), per_gpu))
            .collect()
    };
    let gpu_slots = if gpu_ids.is_empty() { 0 } else { slots.len() };
    let mut max_parallel = opts
        .max_parallel
        .or(sweep.spec.max_parallel)
        .unwrap_or(match backend {
            Backend::Kubernetes(_) => KUBERNETES_PARALLEL,
            _ => gpu_slots.max(1),
        })
        .max(1);
    if gpu_slots > 0 && max_parallel > gpu_slots {
        eprintln!(
            "note: max_parallel {max_parallel} > {gpu_slots} GPU slots ({} GPUs x trials_per_gpu {per_gpu}); running {gpu_slots} at a time",
            gpu_ids.len()
        );
        max_parallel = gpu_slots;
    }
    let live = !opts.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = MultiProgress::with_draw_target(if live {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let summary = progress.add(ProgressBar::new_spinner());
    summary.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap());
    summary.enable_steady_tick(Duration::from_millis(250));
    let shared = Arc::new(Shared {
        backend,
        storage: storage.clone(),
        runner: opts.runner.clone(),
        sweep_name: sweep.spec.name.clone(),
        timeout,
        retries: sweep.spec.retries.unwrap_or(1),
        profile: sweep.spec.profile,
        full_eval: sweep.spec.full_eval(),
        stop: AtomicBool::new(false),
        slots: Mutex::new(slots),
        progress,
        summary,
        live,
        counts: Counts::default(),
    });

    let mut outcomes: Vec<(Trial, Outcome)> = vec![];
    let mut queue = vec![];
    for t in &sweep.trials {
        let state = storage.trial_state(&t.id).await?;
        if state == TrialState::Done && opts.rerun == Rerun::Unfinished {
            shared.counts.cached.fetch_add(1, Ordering::Relaxed);
            outcomes.push((t.clone(), Outcome::Cached));
        } else {
            if opts.rerun == Rerun::All {
                // everything from scratch: no trial continues an earlier attempt
                storage
                    .delete(&format!("trials/{}/{RESUME_FILE}", t.id))
                    .await?;
            }
            queue.push(t.clone());
        }
    }
    if let Backend::Docker(d) = &shared.backend {
        let done: Vec<String> = outcomes.iter().map(|(t, _)| t.id.clone()).collect();
        d.remove_finished(&sweep.spec.name, &done).await;
    }
    shared.counts.queued.store(queue.len(), Ordering::Relaxed);
    shared.refresh();
    if !opts.quiet {
        eprintln!(
            "sweep {:?}: {} trials, {} to run, {} cached; storage {}; {} at a time on {}",
            sweep.spec.name,
            sweep.trials.len(),
            queue.len(),
            outcomes.len(),
            storage.root,
            max_parallel,
            match &shared.backend {
                Backend::Local => "local processes".to_string(),
                Backend::Docker(d) => format!("docker ({})", d.image),
                Backend::Kubernetes(k) =>
                    format!("kubernetes (namespace {}, {})", k.namespace, k.image),
            }
        );
    }
    // Trials start in sweep order, at most `max_parallel` at a time: the next one is launched here
    // when a running one ends (so the order never depends on how the runtime schedules tasks).
    let mut pending: std::collections::VecDeque<Trial> = queue.into();
    let mut tasks = tokio::task::JoinSet::new();
    let launch = |tasks: &mut tokio::task::JoinSet<(Trial, Outcome)>,
                  pending: &mut std::collections::VecDeque<Trial>| {
        while tasks.len() < max_parallel {
            let Some(t) = pending.pop_front() else { break };
            let s = shared.clone();
            tasks.spawn(async move {
                let o = run_trial(s, t.clone()).await;
                (t, o)
            });
        }
    };
    launch(&mut tasks, &mut pending);
    let mut interrupted = false;
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(r) => {
                    outcomes.push(r?);
                    if !interrupted {
                        launch(&mut tasks, &mut pending);
                    }
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                shared.stop.store(true, Ordering::SeqCst);
                shared.log("interrupt: stopping running trials after their current step; run again to resume".into());
                // queued trials never start
                for t in pending.drain(..) {
                    shared.counts.queued.fetch_sub(1, Ordering::Relaxed);
                    outcomes.push((t, Outcome::Interrupted));
                }
                shared.refresh();
            }
        }
    }
    shared.summary.finish_and_clear();
    let order: std::collections::HashMap<&str, usize> = sweep
        .trials
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    outcomes.sort_by_key(|(t, _)| order[t.id.as_str()]);
    Ok((sweep, storage, outcomes, interrupted))
}
