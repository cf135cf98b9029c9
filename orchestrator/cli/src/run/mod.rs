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

//!
//! Here: options, outcomes and the scheduling loop; [`live`] holds the run's shared state and its
//! live view, [`trial`] one trial's attempts.

mod live;
mod trial;

use crate::backend::Backend;
use crate::storage::{Storage, TrialState, TrialStates};
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use live::{Counts, Shared};
use mixsweep_store::RESUME_FILE;
use mixsweep_sweep::{Sweep, Trial};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use trial::run_trial;

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
