//! `mixsweep run`: plans the sweep, derives each trial's state from storage, and runs the trials that
//! are not done, `max_parallel` at a time, on a backend: `local` runs `mixsweep-runner train` child
//! processes (default: one per GPU with `CUDA_VISIBLE_DEVICES` set per trial, or one on CPU);
//! `docker`, `kubernetes` and `slurm` run each trial in a container, a Job or a batch job
//! ([`crate::backend`]).
//!
//! * Runtime failures (runner exit code 1, a crash, a killed container, an engine error) are retried up
//!   to `retries` times with backoff (2 s, 4 s, ...); config and data errors (exit code 2), OOM kills and
//!   time-outs are not.
//! * Ctrl-C sends one SIGINT to the running children (each runs in a process group of its own, so the
//!   terminal's Ctrl-C does not reach it a second time; the runner stops after its current step and
//!   writes its weights, summary and resume point), marks their trials interrupted, and starts nothing
//!   new. Running again resumes: done and diverged trials are kept, interrupted and failed ones run
//!   again (`--rerun failed` reruns diverged ones too, `--rerun all` everything).
//! * One run per sweep and storage at a time ([`crate::lease`]); work folders are per storage root and
//!   run ([`crate::workdir`]); runners stop when this process dies ([`crate::process`]).
//! * Artifacts are copied to storage when an attempt ends, `summary.json` last. When storage fails
//!   (after its retries, `MIXSWEEP_STORAGE_TIMEOUT`), no new trial starts, finished results stay in
//!   their work folder and the next run stores them before anything else.

use crate::backend::{AttemptCtx, AttemptEnd, Backend, Ending};
use crate::storage::{Storage, TrialState, TrialStates};
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mixsweep_artifacts::{AttemptRecord, RunStatus, Summary};
use mixsweep_store::RESUME_FILE;
use mixsweep_sweep::{Sweep, Trial};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// Run new, interrupted and failed trials (the default); done and diverged ones are final.
    Unfinished,
    /// Also run diverged trials again.
    Failed,
    /// Also run trials that are done.
    All,
}

impl Rerun {
    fn runs(self, state: TrialState) -> bool {
        match state {
            TrialState::Done => self == Rerun::All,
            TrialState::Diverged => self != Rerun::Unfinished,
            TrialState::New | TrialState::Failed | TrialState::Interrupted => true,
        }
    }
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
    pub kube: crate::backend::kubernetes::KubeTarget,
    /// Wait for another run of the sweep to finish instead of refusing to start.
    pub wait: bool,
}

/// How one trial ended (this invocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Cached,
    Failed(String),
    Interrupted,
    /// Trained, but storage did not take the results: they are kept in this local folder and the
    /// next run stores them.
    Unstored(PathBuf),
    /// Not started because storage failed.
    NotStarted,
    /// The loss blew up (final: the same trial diverges again).
    Diverged(String),
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
    /// This run's work folder (one subfolder per trial).
    run_dir: PathBuf,
    /// The first storage error of this run; once set, no trial starts.
    storage_error: std::sync::Mutex<Option<String>>,
    quiet: bool,
    started: Instant,
    /// Steps of every trial this run started with, and the latest step of each.
    total_steps: std::sync::atomic::AtomicU64,
    progress_steps: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// When each trial last printed a progress line (no terminal).
    last_line: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

/// Without a terminal, a running trial prints a progress line at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

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
            "done {}  running {}  queued {}  failed {}  cached {}{}",
            c.done.load(Ordering::Relaxed),
            c.running.load(Ordering::Relaxed),
            c.queued.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.cached.load(Ordering::Relaxed),
            self.eta()
                .map(|e| format!("  sweep eta {e}"))
                .unwrap_or_default()
        ));
    }

    /// Time left for the whole sweep, from the steps done so far in this run and the steps left.
    fn eta(&self) -> Option<String> {
        let done: u64 = self.progress_steps.lock().unwrap().values().sum();
        let elapsed = self.started.elapsed().as_secs_f64();
        let total = self.total_steps.load(Ordering::Relaxed);
        if done == 0 || elapsed < 1.0 || total == 0 {
            return None;
        }
        let left = total.saturating_sub(done) as f64;
        let secs = (left * elapsed / done as f64).round() as u64;
        Some(humantime::format_duration(Duration::from_secs(secs)).to_string())
    }

    /// One metrics record of a running trial: the live view's bar, the sweep-wide ETA, and without a
    /// terminal a progress line (at most one per trial every [`PROGRESS_EVERY`], plus every
    /// validation and the last step) so that CI logs and `tee` show progress.
    fn on_metrics(&self, bar: &ProgressBar, t: &Trial, m: &serde_json::Value) {
        let Some(step) = m["step"].as_u64() else {
            return;
        };
        let step = step.min(t.steps as u64);
        bar.set_position(step);
        let text = progress_text(t, m);
        bar.set_message(text.clone());
        self.progress_steps
            .lock()
            .unwrap()
            .insert(t.id.to_string(), step);
        if !self.live && !self.quiet {
            let now = Instant::now();
            let mut last = self.last_line.lock().unwrap();
            let due = last
                .get(t.id.as_str())
                .is_none_or(|at| now.duration_since(*at) >= PROGRESS_EVERY);
            let last_step = step + 1 >= t.steps as u64;
            if due || m.get("val_loss").is_some() || last_step {
                last.insert(t.id.to_string(), now);
                eprintln!("  {} step {step}/{} {text}", t.id, t.steps);
            }
        }
        self.refresh();
    }

    fn storage_failed(&self) -> bool {
        self.storage_error.lock().unwrap().is_some()
    }

    /// Records a storage failure: nothing new starts from now on.
    fn storage_failure(&self, message: String) {
        let mut e = self.storage_error.lock().unwrap();
        if e.is_none() {
            self.log(format!(
                "storage {} failed: {message}; starting no more trials",
                self.storage.root
            ));
            *e = Some(message);
        }
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
        t.variant(),
        if o.is_empty() {
            String::new()
        } else {
            format!("{o} ")
        },
        t.seed
    )
}

/// Writes the trial's work folder and stores its `config.json` (the container backends' runners read
/// it from there); a local attempt also fetches the resume point of an interrupted attempt (and the
/// metrics it continues). Every error here is a storage (or local disk) error.
async fn prepare_attempt(shared: &Shared, t: &Trial, work: &Path) -> Result<()> {
    let _ = tokio::fs::remove_dir_all(work).await;
    tokio::fs::create_dir_all(work.join("out"))
        .await
        .with_context(|| format!("creating the work folder {}", work.display()))?;
    let config = serde_json::to_vec_pretty(&t.config())?;
    tokio::fs::write(work.join("config.json"), &config).await?;
    shared
        .storage
        .put(&format!("trials/{}/config.json", t.id), config)
        .await?;
    // what `diff` shows of the trial beyond its config: data identity and globs, variant, seed
    shared
        .storage
        .put(
            &format!("trials/{}/trial.json", t.id),
            serde_json::to_vec_pretty(&t.listing())?,
        )
        .await?;
    if shared.backend.uses_work_folder() {
        mixsweep_store::fetch_resume(
            &shared.storage,
            &format!("trials/{}", t.id),
            &work.join("out"),
        )
        .await?;
    }
    Ok(())
}

/// A trial's progress from one metrics record: `variant seed=N loss=.. val=.. tok/s=..`.
fn progress_text(t: &Trial, m: &serde_json::Value) -> String {
    let mut msg = format!("{} seed={}", t.variant(), t.seed);
    if let Some(l) = m["train_loss"].as_f64() {
        msg += &format!(" loss={l:.4}");
    }
    if let Some(v) = m["val_loss"].as_f64() {
        msg += &format!(" val={v:.4}");
    }
    if let Some(r) = m["tok_s"].as_f64().filter(|r| *r > 0.0) {
        msg += &format!(" tok/s={}", crate::table::human(r));
    }
    msg
}

/// The last three lines of the attempt's stderr, joined.
fn stderr_tail(work: &Path) -> String {
    std::fs::read_to_string(work.join("stderr.log"))
        .map(|s| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(3)..].join(" | ")
        })
        .unwrap_or_default()
}

/// The runner's summary status after an attempt: the local copy, else the one the runner stored.
async fn summary_status(shared: &Shared, id: &str, work: &Path) -> Option<RunStatus> {
    let local = std::fs::read(work.join("out/summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Summary>(&b).ok());
    match local {
        Some(s) => Some(s.status),
        None => shared
            .storage
            .summary(id)
            .await
            .ok()
            .flatten()
            .map(|s| s.status),
    }
}

async fn run_trial(shared: Arc<Shared>, t: Trial) -> Outcome {
    shared.counts.queued.fetch_sub(1, Ordering::Relaxed);
    if shared.stop.load(Ordering::SeqCst) {
        return Outcome::Interrupted;
    }
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
    bar.set_prefix(t.id.to_string());
    bar.set_message(format!("{} seed={}", t.variant(), t.seed));
    let work = shared.run_dir.join(t.id.as_str());
    let outcome = attempts(&shared, &t, &work, &bar, slot.1).await;
    // whatever happened, this trial needs no more of this run's time
    shared
        .progress_steps
        .lock()
        .unwrap()
        .insert(t.id.to_string(), t.steps as u64);
    if !matches!(outcome, Outcome::Unstored(_)) {
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
        Outcome::Diverged(why) => {
            shared.counts.done.fetch_add(1, Ordering::Relaxed);
            shared.log(format!("DIVERGED {}: {why}", label(&t)));
        }
        Outcome::Unstored(dir) => {
            shared.counts.failed.fetch_add(1, Ordering::Relaxed);
            shared.log(format!(
                "NOT STORED {}: storage failed; the results are kept in {}",
                label(&t),
                dir.display()
            ))
        }
        Outcome::NotStarted | Outcome::Cached => {}
    }
    shared.refresh();
    outcome
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The attempts of one trial: retries with backoff, preemptions, storage of each attempt's results.
async fn attempts(
    shared: &Shared,
    t: &Trial,
    work: &Path,
    bar: &ProgressBar,
    gpu: Option<usize>,
) -> Outcome {
    let (mut n, mut preemptions) = (0usize, 0usize);
    let mut last_error: Option<String> = None;
    loop {
        if n > 0 {
            let wait = Duration::from_secs(2u64.pow(n as u32));
            shared.log(format!(
                "retrying {} in {}s (attempt {}/{}) after: {}",
                label(t),
                wait.as_secs(),
                n + 1,
                shared.retries + 1,
                last_error.as_deref().unwrap_or("a failure")
            ));
            tokio::time::sleep(wait).await;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return Outcome::Interrupted;
        }
        if shared.storage_failed() {
            return Outcome::NotStarted;
        }
        if let Err(e) = prepare_attempt(shared, t, work).await {
            shared.storage_failure(format!("{e:#}"));
            return Outcome::NotStarted;
        }
        let on_metrics = |m: &serde_json::Value| shared.on_metrics(bar, t, m);
        let log = |line: String| shared.log(line);
        let ctx = AttemptCtx {
            sweep: &shared.sweep_name,
            trial: t,
            work,
            gpu,
            runner: &shared.runner,
            profile: shared.profile,
            full_eval: shared.full_eval,
            timeout: shared.timeout,
            stop: &shared.stop,
            on_metrics: &on_metrics,
            log: &log,
        };
        let started_at = unix_now();
        let result = shared.backend.attempt(&ctx).await;
        let ended_at = unix_now();
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
                    label(t)
                ));
                continue;
            }
        }
        let summary = summary_status(shared, &t.id, work).await;
        let (status, error, retryable) = crate::backend::classify(&result, summary);
        let tail = stderr_tail(work);
        let record = AttemptRecord {
            trial: t.id.to_string(),
            status,
            attempt: n + 1,
            error: error.clone(),
            stderr_tail: tail.clone(),
            exit_code: result.as_ref().ok().and_then(|r| r.code),
            backend: shared.backend.name().to_string(),
            recovered: None,
            started_at: Some(started_at),
            ended_at: Some(ended_at),
            slot: gpu.map(|g| format!("gpu {g}")),
        };
        // Written first: if storing fails, the next run stores this folder with this record.
        let _ = std::fs::write(
            work.join("attempt.json"),
            serde_json::to_vec_pretty(&record).expect("record serializes"),
        );
        let local = shared.backend.uses_work_folder();
        if let Err(e) = crate::workdir::upload(&shared.storage, &t.id, work, &record, local).await {
            shared.storage_failure(format!("{e:#}"));
            return Outcome::Unstored(work.to_path_buf());
        }
        let outcome = match status {
            Ending::Completed => Outcome::Done,
            Ending::Interrupted => Outcome::Interrupted,
            Ending::Diverged => Outcome::Diverged(error.unwrap_or_default()),
            _ => Outcome::Failed(format!(
                "{}{}",
                error.unwrap_or_default(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )),
        };
        if !retryable || shared.stop.load(Ordering::SeqCst) || n >= shared.retries {
            return outcome;
        }
        if let Outcome::Failed(why) = &outcome {
            last_error = Some(why.clone());
        }
        n += 1;
    }
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
    let run_id = crate::workdir::new_run_id();
    let lease =
        crate::lease::Lease::acquire(&storage, &sweep.spec.name, &run_id, opts.wait, |holder| {
            eprintln!("waiting for the run of {holder} to finish")
        })
        .await?;
    let result = run_leased(opts, sweep, storage, &lease).await;
    lease.release().await;
    result
}

/// Stores the sweep file and the trial listing beside the sweep's results.
async fn store_sweep(storage: &Storage, sweep: &Sweep, file: &Path) -> Result<()> {
    let src = tokio::fs::read(file).await?;
    storage
        .put(&format!("sweeps/{}/sweep.yaml", sweep.spec.name), src)
        .await?;
    let listing: String = sweep
        .trials
        .iter()
        .map(|t| t.listing().to_string() + "\n")
        .collect();
    storage
        .put(
            &format!("sweeps/{}/trials.jsonl", sweep.spec.name),
            listing.into_bytes(),
        )
        .await?;
    Ok(())
}

async fn run_leased(
    opts: RunOptions,
    sweep: Sweep,
    storage: Storage,
    lease: &crate::lease::Lease,
) -> Result<(Sweep, Storage, Vec<(Trial, Outcome)>, bool)> {
    let root = storage.root.clone();
    // Results that earlier runs could not store (storage failed, or the orchestrator died) go first.
    let sweep_dir = crate::workdir::sweep_dir(&root, &sweep.spec.name);
    let recovered = crate::workdir::recover(&storage, &sweep_dir, lease.run_id())
        .await
        .with_context(|| {
            format!(
                "storing the results that an earlier run kept in {} (they stay there; run again when storage works)",
                sweep_dir.display()
            )
        })?;
    if !recovered.uploaded.is_empty() && !opts.quiet {
        eprintln!(
            "stored the kept results of {} trial(s) from an earlier run: {}",
            recovered.uploaded.len(),
            recovered.uploaded.join(", ")
        );
    }
    store_sweep(&storage, &sweep, &opts.sweep).await?;

    let timeout = sweep
        .spec
        .timeout
        .as_deref()
        .map(mixsweep_sweep::spec::parse_duration)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let backend_kind = opts.backend.unwrap_or(sweep.spec.backend);
    let backend = Backend::connect(
        backend_kind,
        &sweep.spec,
        opts.image.clone(),
        &root,
        opts.keep_failed,
        &opts.kube,
        timeout,
    )
    .await?;
    let crate::slots::Placement {
        slots,
        max_parallel,
        shapes,
    } = crate::slots::place(
        &backend,
        &sweep,
        &storage,
        &opts.runner,
        opts.max_parallel,
        opts.quiet,
    )
    .await?;
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
        run_dir: sweep_dir.join(lease.run_id()),
        storage_error: std::sync::Mutex::new(None),
        quiet: opts.quiet,
        started: Instant::now(),
        total_steps: Default::default(),
        progress_steps: Default::default(),
        last_line: Default::default(),
    });

    let mut outcomes: Vec<(Trial, Outcome)> = vec![];
    let mut queue = vec![];
    for t in &sweep.trials {
        let state = storage.trial_state(&t.id).await?;
        if !opts.rerun.runs(state) {
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
    let done: Vec<String> = outcomes.iter().map(|(t, _)| t.id.to_string()).collect();
    shared
        .backend
        .remove_finished(&sweep.spec.name, &done)
        .await;
    shared.counts.queued.store(queue.len(), Ordering::Relaxed);
    shared.total_steps.store(
        queue.iter().map(|t| t.steps as u64).sum(),
        Ordering::Relaxed,
    );
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
            shared.backend.describe()
        );
    }
    // Trials start in sweep order, at most `max_parallel` at a time: the next one is launched here
    // when a running one ends (so the order never depends on how the runtime schedules tasks). Trials
    // that run side by side start longest first (a long trial left for last runs alone).
    if max_parallel > 1 {
        crate::packing::longest_first(&mut queue, shapes.as_ref());
    }
    let mut pending: std::collections::VecDeque<Trial> = queue.into();
    let mut tasks = tokio::task::JoinSet::new();
    let launch = |tasks: &mut tokio::task::JoinSet<(Trial, Outcome)>,
                  pending: &mut std::collections::VecDeque<Trial>| {
        if !lease.storage_ok() {
            shared.storage_failure("the run lease's heartbeat cannot reach storage".into());
        }
        while tasks.len() < max_parallel && !shared.storage_failed() && !lease.lost() {
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
    shared.backend.shutdown().await;
    // Trials never launched (storage failed, or the lease was lost) did not run.
    for t in pending.drain(..) {
        outcomes.push((t, Outcome::NotStarted));
    }
    if lease.lost() {
        eprintln!(
            "warning: another run took over this sweep's lease (storage was unreachable for long); no new trials were started"
        );
    }
    if let Some(e) = shared.storage_error.lock().unwrap().clone() {
        let kept = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Unstored(_)))
            .count();
        let not_started = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::NotStarted))
            .count();
        eprintln!(
            "error: storage {root} failed: {e}\n  {not_started} trial(s) were not started; {kept} finished trial(s) are kept in {} \
             and will be stored by the next `mixsweep run` of this sweep",
            shared.run_dir.display()
        );
    }
    let order: std::collections::HashMap<&str, usize> = sweep
        .trials
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    outcomes.sort_by_key(|(t, _)| order[t.id.as_str()]);
    Ok((sweep, storage, outcomes, interrupted))
}
