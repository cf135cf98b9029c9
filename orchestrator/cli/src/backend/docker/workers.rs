//! Warm worker containers: one long-lived `mixsweep-runner worker` container per device slot trains
//! that slot's trials one after another, so every trial after a slot's first skips the container
//! start, MLX's device set-up and the loading of the kernels earlier trials compiled. The runner's
//! `worker.rs` has the protocol; here jobs go to the container's stdin over the engine's attach
//! stream, and each job's output comes back on the same stream into the trial's logs.
//!
//! * A worker is reused only by a trial of the same slot whose bind mounts it has, after an
//!   answered, uninterrupted job that exited 0 or 2; otherwise it ends (an interrupted job ends its
//!   worker by itself; a failed one is stopped, and kept with `--keep-failed`).
//! * A worker that dies mid-trial (crash, `docker kill`, OOM kill) ends the attempt like a trial
//!   container would: its exit code and OOM flag come from the engine, and the trial is retried in
//!   a fresh worker.
//! * Workers are labelled with the sweep and [`LABEL_WORKER`]; idle ones are removed when the run
//!   ends. The container's stdin closes when the orchestrator goes away, so a worker left behind
//!   finishes its trial and exits; the next run of the sweep stops (SIGINT: the trial keeps a resume
//!   point) and removes any that are left.

use super::stream::{Stopper, TrialLogs, pump};
use super::{DockerBackend, LABEL_SWEEP};
use crate::backend::{AttemptCtx, AttemptEnd};
use bollard::container::LogOutput;
use bollard::query_parameters::{AttachContainerOptions, ListContainersOptions};
use futures::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Label on worker containers (its value: the device slot, or `cpu`).
pub const LABEL_WORKER: &str = "io.mixsweep.worker";

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

struct WorkerContainer {
    name: String,
    gpu: Option<usize>,
    binds: Vec<String>,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Output,
}

/// The Docker backend's warm workers.
pub struct Workers {
    setting: Option<bool>,
    idle: Mutex<Vec<WorkerContainer>>,
    started: AtomicUsize,
}

impl Workers {
    pub fn new(setting: Option<bool>) -> Workers {
        Workers {
            setting,
            idle: Mutex::new(vec![]),
            started: AtomicUsize::new(0),
        }
    }

    /// Whether trials on `gpu` run in workers (the local backend's rule: `MIXSWEEP_WORKERS`, the
    /// sweep's `workers:`, else on GPUs only).
    pub fn wanted(&self, gpu: Option<usize>) -> bool {
        crate::backend::worker::wanted(self.setting, gpu)
    }

    /// An idle worker of the slot that has every bind the trial needs.
    fn take(&self, gpu: Option<usize>, binds: &[String]) -> Option<WorkerContainer> {
        let mut idle = self.idle.lock().unwrap();
        let i = idle
            .iter()
            .position(|w| w.gpu == gpu && binds.iter().all(|b| w.binds.contains(b)))?;
        Some(idle.swap_remove(i))
    }

    /// Creates, attaches to and starts a worker container for the trial's slot.
    async fn start(
        &self,
        backend: &DockerBackend,
        ctx: &AttemptCtx<'_>,
        binds_env: (Vec<String>, Vec<String>),
    ) -> Result<WorkerContainer, AttemptEnd> {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("mixsweep-worker-{}-{ms}-{n}", std::process::id());
        let slot = ctx.gpu.map_or("cpu".to_string(), |g| g.to_string());
        let binds = binds_env.0.clone();
        let mut body = backend.container(
            ctx.sweep,
            vec!["worker".into()],
            binds_env,
            ctx.gpu,
            &[(LABEL_WORKER, &slot)],
        );
        // stdin stays open while we are attached and closes when we go away
        body.open_stdin = Some(true);
        body.stdin_once = Some(true);
        body.attach_stdin = Some(true);
        body.attach_stdout = Some(true);
        body.attach_stderr = Some(true);
        body.tty = Some(false);
        backend.create(&name, body).await?;
        let options = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            logs: false,
            ..Default::default()
        };
        let attached = match backend.docker.attach_container(&name, Some(options)).await {
            Ok(a) => a,
            Err(e) => {
                let _ = backend.remove(&name).await;
                return Err(AttemptEnd::engine(
                    format!("attaching to {name}: {e}"),
                    true,
                ));
            }
        };
        backend.start(&name).await?;
        (ctx.log)(format!("started worker container {name}"));
        Ok(WorkerContainer {
            name,
            gpu: ctx.gpu,
            binds,
            input: attached.input,
            output: attached.output,
        })
    }

    /// One attempt of a trial in a warm worker of its slot (started if the slot has none).
    pub async fn attempt(
        &self,
        backend: &DockerBackend,
        ctx: &AttemptCtx<'_>,
        mut logs: TrialLogs,
    ) -> AttemptEnd {
        let binds_env = backend.binds_and_env(ctx.trial);
        let mut w = match self.take(ctx.gpu, &binds_env.0) {
            Some(w) => w,
            None => match self.start(backend, ctx, binds_env).await {
                Ok(w) => w,
                Err(end) => return end,
            },
        };
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("{}-{nonce}", ctx.trial.id);
        logs.expect_job(&id);
        let job = mixsweep_artifacts::worker::Job {
            args: backend.train_args(ctx.trial, ctx.profile),
            stdout: None,
            stderr: None,
            id: Some(id),
        };
        let job = serde_json::to_string(&job).expect("a job serializes") + "\n";
        // a worker that died before reading its job shows up below (its output ends)
        let _ = w.input.write_all(job.as_bytes()).await;
        let _ = w.input.flush().await;
        let mut stopper = Stopper::new(ctx);
        // until the answer and the job's last stderr line (or 5 s after the answer), or the worker's end
        let mut answered_at: Option<Instant> = None;
        let complete = |logs: &TrialLogs| {
            logs.answer.is_some()
                && (logs.stderr_done
                    || answered_at.get_or_insert_with(Instant::now).elapsed()
                        > Duration::from_secs(5))
        };
        pump(
            backend,
            &w.name,
            &mut w.output,
            &mut logs,
            &mut stopper,
            ctx,
            complete,
        )
        .await;
        logs.finish();
        let (interrupted, timed_out) = (stopper.interrupted(), stopper.timed_out());
        match logs.answer {
            Some(code) => {
                let end = AttemptEnd {
                    code: Some(code),
                    interrupted,
                    timed_out,
                    ..Default::default()
                };
                if !interrupted && matches!(code, 0 | 2) {
                    self.idle.lock().unwrap().push(w);
                } else {
                    // an interrupted worker exits after its answer; a failed one is stopped
                    if !interrupted {
                        backend.signal(&w.name, "SIGKILL").await;
                    }
                    let _ = backend.ended(&w.name, interrupted, timed_out).await;
                    backend.dispose(&w.name, &end, ctx.log).await;
                }
                end
            }
            // no answer: the worker died
            None => {
                let end = backend.ended(&w.name, interrupted, timed_out).await;
                backend.dispose(&w.name, &end, ctx.log).await;
                end
            }
        }
    }

    /// Removes the idle workers (the run is over; they hold no trial).
    pub async fn shutdown(&self, backend: &DockerBackend) {
        let idle: Vec<WorkerContainer> = std::mem::take(&mut *self.idle.lock().unwrap());
        for w in idle {
            if let Err(e) = backend.remove(&w.name).await {
                eprintln!("warning: could not remove worker container {}: {e}", w.name);
            }
        }
    }
}

/// Stops and removes the sweep's worker containers left by an earlier run: a running one gets
/// SIGINT (its trial stops after the current step and keeps a resume point) and up to 60 s.
pub async fn remove_stale(backend: &DockerBackend, sweep: &str) {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{LABEL_SWEEP}={sweep}"), LABEL_WORKER.to_string()],
    );
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let Ok(list) = backend.docker.list_containers(Some(options)).await else {
        eprintln!("warning: could not list the sweep's worker containers left by an earlier run");
        return;
    };
    for c in list {
        let Some(name) = c.names.and_then(|n| n.first().cloned()) else {
            continue;
        };
        let name = name.trim_start_matches('/').to_string();
        if c.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running") {
            eprintln!(
                "stopping worker container {name} left running by an earlier run (its trial will resume)"
            );
            backend.signal(&name, "SIGINT").await;
            let _ = backend.ended(&name, true, false).await;
        }
        if let Err(e) = backend.remove(&name).await {
            eprintln!("warning: could not remove worker container {name}: {e}");
        }
    }
}
