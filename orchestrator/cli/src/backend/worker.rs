//! Warm workers for the `local` backend: one long-lived `mixsweep-runner worker` per device slot
//! trains that slot's trials one after another (the runner's `worker.rs` has the protocol), so every
//! trial after a slot's first skips the process start, MLX's device set-up and the loading of the
//! kernels earlier trials compiled. A trial's work folder, logs, exit code and resume point are
//! exactly those of a `mixsweep-runner train` process.
//!
//! A worker that crashes (no answer) or whose trial was interrupted is not reused: the next trial of
//! the slot starts a fresh one, and a crashed trial is retried like any failed process. On by
//! default for trials on a GPU; `workers: false` in the sweep file or `MIXSWEEP_WORKERS=0` turns it
//! off, `MIXSWEEP_WORKERS=1` (or `workers: true`) turns it on for CPU runs too.

use super::stopping::{Signal, StopClock};
use super::{AttemptCtx, AttemptEnd, new_metrics};
use anyhow::{Context, Result};
use mixsweep_artifacts::worker::Answer;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

struct Worker {
    child: Child,
    /// What the worker wrote to its standard error outside jobs (an unlinked file): added to the
    /// trial's `stderr.log` when the worker dies, so a crash at start-up is not silent.
    log: std::fs::File,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
    _watch: crate::process::ParentWatch,
    pid: u32,
}

/// The idle workers of each device slot (`None`: no GPU).
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<HashMap<Option<usize>, Vec<Worker>>>,
}

/// Whether trials on `gpu` run in workers: `MIXSWEEP_WORKERS` (0/1), else the sweep's `workers:`,
/// else only on GPUs.
pub fn wanted(setting: Option<bool>, gpu: Option<usize>) -> bool {
    match std::env::var("MIXSWEEP_WORKERS").as_deref() {
        Ok("1") | Ok("true") => true,
        Ok("0") | Ok("false") => false,
        _ => setting.unwrap_or(gpu.is_some()),
    }
}

/// An unlinked file for a worker's own standard error.
fn worker_log() -> Result<std::fs::File> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("mixsweep-worker-{}-{n}.log", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// Adds what a dead worker wrote outside its jobs to the trial's `stderr.log`.
fn salvage(w: &mut Worker, work: &std::path::Path) {
    use std::io::{Read, Seek, Write};
    let mut text = String::new();
    if w.log.rewind().is_ok() && w.log.read_to_string(&mut text).is_ok() && !text.is_empty() {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(work.join("stderr.log"));
        if let Ok(mut log) = log {
            let _ = write!(log, "{text}");
        }
    }
}

async fn spawn(ctx: &AttemptCtx<'_>) -> Result<Worker> {
    let log = worker_log()?;
    let mut cmd = tokio::process::Command::new(ctx.runner);
    cmd.arg("worker")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(log.try_clone()?)
        .kill_on_drop(false);
    super::local::device_env(&mut cmd, ctx.gpu);
    let mut watch = crate::process::detach_and_watch(&mut cmd)?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} worker", ctx.runner.display()))?;
    watch.spawned();
    let stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let pid = child.id().unwrap_or(0);
    Ok(Worker {
        child,
        log,
        stdin,
        answers: BufReader::new(stdout).lines(),
        _watch: watch,
        pid,
    })
}

/// The job line for a trial: the arguments of its `train` process and its log files. The protocol is
/// JSON, so a path that is not UTF-8 is refused (process mode takes it).
fn job_line(ctx: &AttemptCtx<'_>) -> Result<String> {
    let utf8 = |s: std::ffi::OsString| {
        s.into_string().map_err(|s| {
            anyhow::anyhow!("warm workers need UTF-8 paths, not {s:?}: set `workers: false`")
        })
    };
    let args = super::local::work_folder_args(ctx)
        .into_iter()
        .map(utf8)
        .collect::<Result<Vec<String>>>()?;
    let log = |name: &str| utf8(ctx.work.join(name).into_os_string()).map(Into::into);
    let job = mixsweep_artifacts::worker::Job {
        args,
        stdout: Some(log("stdout.log")?),
        stderr: Some(log("stderr.log")?),
        id: None,
    };
    Ok(format!("{}\n", serde_json::to_string(&job)?))
}

impl Pool {
    fn take(&self, gpu: Option<usize>) -> Option<Worker> {
        self.idle.lock().unwrap().get_mut(&gpu)?.pop()
    }

    fn give(&self, gpu: Option<usize>, w: Worker) {
        self.idle.lock().unwrap().entry(gpu).or_default().push(w);
    }

    /// One attempt in a warm worker of the trial's slot (started if the slot has none).
    pub async fn attempt(&self, ctx: &AttemptCtx<'_>) -> Result<AttemptEnd> {
        let work = ctx.work;
        let job = job_line(ctx)?;
        let mut w = match self.take(ctx.gpu) {
            Some(w) => w,
            None => spawn(ctx).await?,
        };
        std::fs::write(work.join("runner.pid"), w.pid.to_string())?;
        // a worker that died before reading its job shows up in `follow` (no answer, its exit code)
        let _ = w.stdin.write_all(job.as_bytes()).await;
        let _ = w.stdin.flush().await;
        let end = follow(ctx, &mut w).await;
        let _ = std::fs::remove_file(work.join("runner.pid"));
        // Answered, not stopped, and not a runtime failure (which may have left the device in a
        // bad state, e.g. out of memory): the worker is ready for the slot's next trial.
        let reusable =
            matches!(&end, Ok((e, true)) if !e.interrupted && matches!(e.code, Some(0 | 2)));
        if reusable {
            self.give(ctx.gpu, w);
        } else {
            salvage(&mut w, work);
            drop(w.stdin);
            let _ = tokio::time::timeout(Duration::from_secs(30), w.child.wait()).await;
            let _ = w.child.start_kill();
        }
        end.map(|(e, _)| e)
    }
}

/// Follows the worker's job until it answers (`true`) or dies (`false`), passing on metrics,
/// Ctrl-C and the sweep's timeout.
async fn follow(ctx: &AttemptCtx<'_>, w: &mut Worker) -> Result<(AttemptEnd, bool)> {
    let metrics = ctx.work.join("out/metrics.jsonl");
    let mut offset = 0usize;
    let mut clock = StopClock::new(ctx);
    loop {
        for m in new_metrics(&metrics, &mut offset) {
            (ctx.on_metrics)(&m);
        }
        match clock.due() {
            Some(Signal::Interrupt) => crate::process::signal_group(w.pid, libc::SIGINT),
            Some(Signal::Kill) => w.child.start_kill()?,
            None => {}
        }
        let answer = tokio::select! {
            line = w.answers.next_line() => Some(line),
            _ = tokio::time::sleep(Duration::from_millis(200)) => None,
        };
        let Some(line) = answer else { continue };
        for m in new_metrics(&metrics, &mut offset) {
            (ctx.on_metrics)(&m);
        }
        let end = |code: Option<i32>| AttemptEnd {
            code,
            interrupted: clock.interrupted,
            timed_out: clock.timed_out,
            ..Default::default()
        };
        return Ok(match line {
            Ok(Some(l)) => {
                let code = Answer::parse(l.as_bytes(), None).map(|a| a.exit);
                (end(code), code.is_some())
            }
            // the worker died mid-trial: its exit status is the attempt's
            _ => (end(w.child.wait().await?.code()), false),
        });
    }
}
