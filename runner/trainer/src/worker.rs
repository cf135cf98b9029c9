//! `mixsweep-runner worker`: a long-lived runner that trains trials one after another, so that
//! each trial after the first skips the process start, MLX's device set-up and the loading (or
//! compiling) of every kernel the earlier trials used (MLX keeps its JIT modules for the life of
//! the process), and each later trial of a model it trained before skips tracing and compiling the
//! train and eval steps when it differs only in learning rates, seed, data or step count
//! ([`mixsweep_runner::step_cache`]; `MIXSWEEP_STEP_CACHE=0` turns that off).
//!
//! Protocol (`mixsweep_artifacts::worker`, one JSON object per line): the orchestrator writes a job
//! `{"args": ["train", "--config", ...], "stdout": PATH, "stderr": PATH, "id": ID}` on stdin; the
//! worker runs it exactly as `mixsweep-runner train ...` would, then answers `{"exit": CODE, "job": ID}`
//! on its own stdout (the exit code the process would have had) and frees MLX's buffer cache.
//!
//! * With `stdout` and `stderr` (the local backend), file descriptors 1 and 2 point at those log
//!   files for the duration of the job.
//! * Without them (a worker container, whose output the engine streams), the job writes to the
//!   worker's own stdout and stderr; the answer is the stdout line carrying the job's `id`, and the
//!   end mark on stderr says that the job's stderr is complete too (the engine delivers the two
//!   streams independently).
//!
//! A trial that is interrupted (Ctrl-C, the sweep's timeout, the orchestrator gone) ends the worker
//! after its answer; a crash ends it without one, and the orchestrator retries the trial in a fresh
//! worker.

use crate::cli::{Cli, Command};
use crate::commands;
use clap::Parser;
use mixsweep_artifacts::worker::{self, Job};
use mixsweep_runner::mlx_env::MlxEnv;
use mixsweep_runner::step_cache::StepCache;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Points file descriptors 1 and 2 at a job's log files until restored.
struct Redirect {
    saved_out: OwnedFd,
    saved_err: OwnedFd,
}

impl Redirect {
    fn to(stdout: &std::path::Path, stderr: &std::path::Path) -> std::io::Result<Redirect> {
        let (out, err) = (
            std::fs::File::create(stdout)?,
            std::fs::File::create(stderr)?,
        );
        let r = Redirect {
            saved_out: dup(1)?,
            saved_err: dup(2)?,
        };
        redirect(&out, 1)?;
        redirect(&err, 2)?;
        Ok(r)
    }

    fn restore(self) -> std::io::Result<()> {
        redirect(&self.saved_out, 1)?;
        redirect(&self.saved_err, 2)
    }
}

fn dup(fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: dup(2) of a descriptor this process has open; the new one is ours alone.
    let new = unsafe { libc::dup(fd) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just created.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn redirect(from: &impl AsRawFd, to: i32) -> std::io::Result<()> {
    // SAFETY: dup2(2) onto the standard descriptors; Rust's std handles are flushed first.
    if unsafe { libc::dup2(from.as_raw_fd(), to) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs one job with stdout and stderr pointing at its log files; its exit code.
fn run_job(
    job: Job,
    n: usize,
    stop: &Arc<AtomicBool>,
    mlx_env: &mut MlxEnv,
    steps: Option<&Rc<StepCache>>,
) -> std::io::Result<u8> {
    // the trial's start-up (summary `startup`, `time_to_first_step_s`) counts from here
    mixsweep_runner::train::startup::job_started();
    let redirected = match (&job.stdout, &job.stderr) {
        (Some(out), Some(err)) => Some(Redirect::to(out, err)?),
        (None, None) => None,
        _ => {
            return Err(std::io::Error::other(
                "a job names both `stdout` and `stderr` log files or neither",
            ));
        }
    };
    eprintln!("mixsweep-runner worker {}: job {n}", std::process::id());
    let argv = std::iter::once("mixsweep-runner".to_string()).chain(job.args);
    let code = match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Train(a),
        }) => match commands::run_train(a, stop.clone(), mlx_env, steps.cloned()) {
            Ok(()) => 0,
            Err((code, message)) => {
                eprintln!("error: {message}");
                code as u8
            }
        },
        Ok(_) => {
            eprintln!("error: a worker runs `train` jobs only");
            2
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    mlx_env.publish();
    if let Err(e) = mixsweep_mlx::memory::clear_cache() {
        eprintln!("warning: could not free MLX's buffer cache after the trial: {e}");
    }
    match redirected {
        Some(r) => r.restore()?,
        None => {
            let mark = worker::end_mark(job.id.as_deref().unwrap_or(""));
            let mut err = std::io::stderr().lock();
            writeln!(err, "{mark}")?;
            err.flush()?;
        }
    }
    Ok(code)
}

/// The worker loop; returns when stdin ends, a job was interrupted, or a job could not be set up.
pub fn run(stop: Arc<AtomicBool>, mlx_env: &mut MlxEnv) -> Result<(), (i32, String)> {
    let stdin = std::io::stdin();
    let mut jobs = 0;
    let steps = std::env::var("MIXSWEEP_STEP_CACHE")
        .map_or(true, |v| v != "0")
        .then(|| Rc::new(StepCache::new()));
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| (1, format!("reading a job: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let job: Job =
            serde_json::from_str(&line).map_err(|e| (2, format!("invalid job {line:?}: {e}")))?;
        jobs += 1;
        let id = job.id.clone();
        let code = run_job(job, jobs, &stop, mlx_env, steps.as_ref())
            .map_err(|e| (1, format!("setting up a job: {e}")))?;
        let mut out = std::io::stdout().lock();
        let answer = worker::Answer {
            exit: i32::from(code),
            job: id,
        };
        let answer = serde_json::to_string(&answer).expect("an answer serializes");
        writeln!(out, "{answer}")
            .and_then(|_| out.flush())
            .map_err(|e| (1, format!("answering: {e}")))?;
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    Ok(())
}
