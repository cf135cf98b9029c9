//! The state a run's trials share (backend, storage, slots, counters, the stop flag, the first
//! storage error) and its live view: the progress bars, the sweep-wide ETA, and progress lines
//! when there is no terminal.

use crate::backend::Backend;
use crate::storage::Storage;
use indicatif::{MultiProgress, ProgressBar};
use mixsweep_sweep::Trial;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub(super) struct Shared {
    pub(super) backend: Backend,
    pub(super) storage: Storage,
    pub(super) runner: PathBuf,
    pub(super) sweep_name: String,
    pub(super) timeout: Option<Duration>,
    pub(super) retries: usize,
    pub(super) profile: bool,
    pub(super) full_eval: bool,
    pub(super) stop: AtomicBool,
    pub(super) slots: Mutex<Vec<Option<usize>>>,
    pub(super) progress: MultiProgress,
    pub(super) summary: ProgressBar,
    pub(super) live: bool,
    pub(super) counts: Counts,
    /// This run's work folder (one subfolder per trial).
    pub(super) run_dir: PathBuf,
    /// The first storage error of this run; once set, no trial starts.
    pub(super) storage_error: std::sync::Mutex<Option<String>>,
    pub(super) quiet: bool,
    pub(super) started: Instant,
    /// Steps of every trial this run started with, and the latest step of each.
    pub(super) total_steps: std::sync::atomic::AtomicU64,
    pub(super) progress_steps: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// When each trial last printed a progress line (no terminal).
    pub(super) last_line: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

/// Without a terminal, a running trial prints a progress line at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct Counts {
    pub(super) done: AtomicUsize,
    pub(super) running: AtomicUsize,
    pub(super) queued: AtomicUsize,
    pub(super) failed: AtomicUsize,
    pub(super) cached: AtomicUsize,
}

impl Shared {
    pub(super) fn refresh(&self) {
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
    pub(super) fn eta(&self) -> Option<String> {
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
    pub(super) fn on_metrics(&self, bar: &ProgressBar, t: &Trial, m: &serde_json::Value) {
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

    pub(super) fn storage_failed(&self) -> bool {
        self.storage_error.lock().unwrap().is_some()
    }

    /// Records a storage failure: nothing new starts from now on.
    pub(super) fn storage_failure(&self, message: String) {
        let mut e = self.storage_error.lock().unwrap();
        if e.is_none() {
            self.log(format!(
                "storage {} failed: {message}; starting no more trials",
                self.storage.root
            ));
            *e = Some(message);
        }
    }

    pub(super) fn log(&self, line: String) {
        if self.live {
            self.progress.suspend(|| eprintln!("{line}"));
        } else {
            eprintln!("{line}");
        }
    }
}

pub(super) fn label(t: &Trial) -> String {
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
