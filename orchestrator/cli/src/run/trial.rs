//! One trial of a run: its work folder, its attempts on the backend (retries with backoff,
//! preemptions, the runner's own status), and the storage of each attempt's results.

use super::Outcome;
use super::live::{Shared, label};
use crate::backend::{AttemptCtx, AttemptEnd, Ending};
use crate::storage::TrialStates;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mixsweep_artifacts::{AttemptRecord, RunStatus, Summary};
use mixsweep_sweep::Trial;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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

pub(super) async fn run_trial(shared: Arc<Shared>, t: Trial) -> Outcome {
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
