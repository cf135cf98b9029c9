//! The Docker backend: each trial runs `mixsweep-runner train` in its own container through the Docker
//! Engine API (`bollard`), on the local engine or `DOCKER_HOST`, or (the default for GPU slots) in a
//! warm worker container that trains its slot's trials one after another ([`workers`]).
//!
//! * The container is named `mixsweep-<trial id>` and labelled with the sweep and trial, so an
//!   orchestrator that restarts finds a trial's running container and *adopts* it (follows its logs and
//!   waits for it) instead of starting a duplicate.
//! * The runner reads its config from the trial's storage URL, reads data from a read-only bind mount
//!   (local shards) or from object storage (URLs), and writes its artifacts straight to the trial's
//!   storage URL (`--artifacts`): a local storage root is bind-mounted at the same absolute path.
//! * GPUs are NVIDIA device requests: one device per trial from the sweep's `gpus` (several trials per
//!   device with `trials_per_gpu`), or all of them with `gpus: all`. `cpus` and `memory` become the
//!   container's limits (swap disabled). Environment variables are passed by name from the
//!   orchestrator's environment; values are never written to storage or logs.
//! * Logs are streamed into `stdout.log`/`stderr.log` and the live view (the runner prints each metrics
//!   record as a JSON line). Exit code, OOM kill and engine errors are distinct trial states.
//! * GPU trials keep MLX's compiled CUDA kernels between containers: a fresh container would otherwise
//!   spend minutes compiling them with NVRTC before its first step. The host folder
//!   `<cache>/mlx-kernels/<image id>` is bound into every GPU container as `MIXSWEEP_KERNEL_CACHE`
//!   (the runner works on a private copy and publishes new kernels atomically; see its `kernel_cache`).
//! * Containers are removed after success and kept after a failure with `--keep-failed`; Ctrl-C sends
//!   SIGINT to the sweep's containers (the runner stops after its current step and uploads what it has).

mod connect;
mod stream;
mod workers;

use super::{AttemptCtx, AttemptEnd};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions,
};
use mixsweep_sweep::Trial;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stream::{Stopper, TrialLogs, pump};

/// Label keys on every container the backend starts.
pub const LABEL_SWEEP: &str = "io.mixsweep.sweep";
pub const LABEL_TRIAL: &str = "io.mixsweep.trial";

/// The container name of a trial.
pub fn container_name(trial_id: &str) -> String {
    format!("mixsweep-{trial_id}")
}

/// Per-sweep settings of the Docker backend.
pub struct DockerBackend {
    docker: Docker,
    pub image: String,
    /// `None`: no GPUs; `Some(None)`: all GPUs; `Some(Some(id))` is chosen per trial from the slots.
    pub gpus: Option<GpuMode>,
    pub nano_cpus: Option<i64>,
    pub memory: Option<i64>,
    /// `NAME=value` for the variables the sweep passes through (values stay in memory).
    env: Vec<String>,
    pub keep_failed: bool,
    full_eval: bool,
    /// The storage root as the runner in the container sees it (a URL).
    storage_url: String,
    /// `host:container[:ro]` binds shared by every trial (the local storage root).
    binds: Vec<String>,
    /// GPU trials: the host folder that keeps MLX's compiled kernels for this image.
    kernel_cache: Option<PathBuf>,
    /// Warm worker containers (on by default for GPU slots).
    workers: workers::Workers,
}

/// Where the kernel cache folder appears inside a container.
pub const KERNEL_CACHE_MOUNT: &str = "/mixsweep-kernels";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMode {
    /// Every trial gets all GPUs.
    All,
    /// Every trial gets the one device of its slot.
    PerTrial,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker engine ({0}); start it, or point DOCKER_HOST at one (unix:///var/run/docker.sock, tcp://host:2375)"
    )]
    Connect(String),
    #[error("{0}")]
    Setup(String),
}

impl DockerBackend {
    /// Whether trials on `gpu` run in warm worker containers.
    pub fn uses_workers(&self, gpu: Option<usize>) -> bool {
        self.workers.wanted(gpu)
    }

    /// Removes the idle worker containers at the end of a run.
    pub async fn shutdown(&self) {
        self.workers.shutdown(self).await;
    }

    /// Removes the sweep's stopped containers whose trials are done (left by an orchestrator that
    /// stopped before it could clean up).
    pub async fn remove_finished(&self, sweep: &str, done: &[String]) {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![format!("{LABEL_SWEEP}={sweep}")]);
        filters.insert("status".to_string(), vec!["exited".to_string()]);
        let Ok(list) = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
        else {
            eprintln!("warning: could not list the sweep's stopped containers to remove them");
            return;
        };
        for c in list {
            let trial = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_TRIAL))
                .cloned()
                .unwrap_or_default();
            if done.contains(&trial)
                && let Some(id) = c.id
                && let Err(e) = self.docker.remove_container(&id, None).await
            {
                eprintln!("warning: could not remove the finished container {id}: {e}");
            }
        }
    }

    fn data_binds(pattern: &str, binds: &mut Vec<String>) {
        if mixsweep_store::is_url(pattern) {
            return;
        }
        if let Some(dir) = Path::new(pattern).parent()
            && let Ok(dir) = dir.canonicalize()
        {
            let d = dir.display().to_string();
            let b = format!("{d}:{d}:ro");
            if !binds.contains(&b) {
                binds.push(b);
            }
        }
    }

    /// The data argument as the container sees it (local globs are made absolute: they are mounted at
    /// the same absolute path).
    fn data_arg(pattern: &str) -> String {
        if mixsweep_store::is_url(pattern) {
            return pattern.to_string();
        }
        let p = Path::new(pattern);
        match (
            p.parent().and_then(|d| d.canonicalize().ok()),
            p.file_name(),
        ) {
            (Some(dir), Some(name)) => dir.join(name).display().to_string(),
            _ => pattern.to_string(),
        }
    }

    /// Binds and environment every container of the sweep gets, plus the trial's data folders.
    fn binds_and_env(&self, t: &Trial) -> (Vec<String>, Vec<String>) {
        let mut binds = self.binds.clone();
        let mut env = self.env.clone();
        if let Some(dir) = &self.kernel_cache {
            binds.push(format!("{}:{KERNEL_CACHE_MOUNT}", dir.display()));
            env.push(format!("MIXSWEEP_KERNEL_CACHE={KERNEL_CACHE_MOUNT}"));
        }
        Self::data_binds(t.train(), &mut binds);
        match &t.val() {
            Some(v) => Self::data_binds(v, &mut binds),
            None => {
                if let Some(v) = mixsweep_store::derive_val_glob(t.train()) {
                    Self::data_binds(&v, &mut binds);
                }
            }
        }
        (binds, env)
    }

    /// The runner's `train` arguments for a trial.
    fn train_args(&self, t: &Trial, profile: bool) -> Vec<String> {
        let trial_url = format!("{}/trials/{}", self.storage_url, t.id);
        super::container_train_args(
            &trial_url,
            Self::data_arg(t.train()),
            t.val().map(Self::data_arg),
            profile,
            self.full_eval,
        )
    }

    /// A container of the sweep: image, user, limits, the GPU of `gpu`'s slot, `labels` added to
    /// the sweep's.
    fn container(
        &self,
        sweep: &str,
        cmd: Vec<String>,
        (binds, env): (Vec<String>, Vec<String>),
        gpu: Option<usize>,
        extra_labels: &[(&str, &str)],
    ) -> ContainerCreateBody {
        let device_requests = match (self.gpus, gpu) {
            (Some(GpuMode::All), _) => Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(-1),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]),
            (Some(GpuMode::PerTrial), Some(id)) => Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(vec![id.to_string()]),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]),
            _ => None,
        };
        let mut labels = HashMap::new();
        labels.insert(LABEL_SWEEP.to_string(), sweep.to_string());
        for (k, v) in extra_labels {
            labels.insert(k.to_string(), v.to_string());
        }
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(cmd),
            env: Some(env),
            labels: Some(labels),
            user: Some(format!("{}:{}", current_uid(), current_gid())),
            host_config: Some(HostConfig {
                binds: Some(binds),
                nano_cpus: self.nano_cpus,
                memory: self.memory,
                memory_swap: self.memory,
                device_requests,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The container of one trial (`mixsweep-runner train` as its command).
    fn body(
        &self,
        sweep: &str,
        t: &Trial,
        profile: bool,
        gpu: Option<usize>,
    ) -> ContainerCreateBody {
        let cmd = self.train_args(t, profile);
        self.container(
            sweep,
            cmd,
            self.binds_and_env(t),
            gpu,
            &[(LABEL_TRIAL, t.id.as_str())],
        )
    }

    /// Runs (or adopts) one attempt of a trial; see [`crate::run`] for how the end is mapped to a state.
    pub async fn attempt(&self, ctx: &AttemptCtx<'_>) -> AttemptEnd {
        let name = container_name(&ctx.trial.id);
        let engine = |e: bollard::errors::Error| AttemptEnd::engine(e.to_string(), true);
        // Adopt a running container of this trial; replace a stopped one.
        let mut adopted = false;
        match self.docker.inspect_container(&name, None).await {
            Ok(info) => {
                let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                if running {
                    adopted = true;
                    (ctx.log)(format!("adopting running container {name}"));
                } else if let Err(e) = self.remove(&name).await {
                    return engine(e);
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return engine(e),
        }
        // The log files first: a trial whose logs cannot be kept does not start.
        let logs = match TrialLogs::create(ctx.work) {
            Ok(l) => l,
            Err(e) => return e,
        };
        // a trial with GPUs (its slot's, or all of them with `gpus: all`) runs in a worker by default
        let on_gpu = ctx.gpu.or((self.gpus == Some(GpuMode::All)).then_some(0));
        if !adopted && self.workers.wanted(on_gpu) {
            return self.workers.attempt(self, ctx, logs).await;
        }
        if !adopted {
            let body = self.body(ctx.sweep, ctx.trial, ctx.profile, ctx.gpu);
            if let Err(e) = self.create(&name, body).await {
                return e;
            }
            if let Err(e) = self.start(&name).await {
                return e;
            }
        }
        let mut output = self.docker.logs(
            &name,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let (mut logs, mut stopper) = (logs, Stopper::new(ctx));
        // until the container stops
        pump(
            self,
            &name,
            &mut output,
            &mut logs,
            &mut stopper,
            ctx,
            |_| false,
        )
        .await;
        logs.finish();
        let end = self
            .ended(&name, stopper.interrupted(), stopper.timed_out())
            .await;
        self.dispose(&name, &end, ctx.log).await;
        end
    }

    /// Creates a container; an engine failure as the attempt's end.
    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<(), AttemptEnd> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        if let Err(e) = self.docker.create_container(Some(options), body).await {
            // A missing image or a bad request will not fix itself.
            let retry = !matches!(
                e,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 400 | 404,
                    ..
                }
            );
            return Err(AttemptEnd::engine(format!("creating {name}: {e}"), retry));
        }
        Ok(())
    }

    /// Starts a created container (removed again if it cannot start).
    async fn start(&self, name: &str) -> Result<(), AttemptEnd> {
        if let Err(e) = self.docker.start_container(name, None).await {
            let _ = self.remove(name).await;
            return Err(AttemptEnd::engine(format!("starting {name}: {e}"), true));
        }
        Ok(())
    }

    /// How a stopped container ended: exit code, OOM kill, engine error.
    async fn ended(&self, name: &str, interrupted: bool, timed_out: bool) -> AttemptEnd {
        let mut end = AttemptEnd {
            interrupted,
            timed_out,
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.docker.inspect_container(name, None).await {
                Ok(info) => {
                    let state = info.state.unwrap_or_default();
                    if state.running == Some(true) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    end.code = state.exit_code.map(|c| c as i32);
                    end.oom = state.oom_killed.unwrap_or(false);
                    if let Some(err) = state.error.filter(|e| !e.is_empty()) {
                        end.failure = AttemptEnd::engine(err, true).failure;
                    }
                }
                Err(e) => {
                    end.failure =
                        AttemptEnd::engine(format!("inspecting {name}: {e}"), true).failure
                }
            }
            break;
        }
        // The engine may record an OOM kill a moment after the exit (the cgroup's OOM event and the
        // task's exit arrive separately; seen under load): a SIGKILL exit waits a little for the flag.
        if end.code == Some(137) && !end.oom && !end.interrupted {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if let Ok(info) = self.docker.inspect_container(name, None).await
                    && info.state.and_then(|s| s.oom_killed) == Some(true)
                {
                    end.oom = true;
                    break;
                }
            }
        }
        end
    }

    /// Removes a stopped container, or keeps it after a failure with `--keep-failed`.
    async fn dispose(&self, name: &str, end: &AttemptEnd, log: &(dyn Fn(String) + Sync)) {
        let failed = end.code != Some(0) && !end.interrupted;
        if !(failed && self.keep_failed) {
            let _ = self.remove(name).await;
        } else {
            log(format!("kept failed container {name} (--keep-failed)"));
        }
    }

    async fn signal(&self, name: &str, signal: &str) {
        let options = KillContainerOptions {
            signal: signal.into(),
        };
        let _ = self.docker.kill_container(name, Some(options)).await;
    }

    async fn remove(&self, name: &str) -> Result<(), bollard::errors::Error> {
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            other => other,
        }
    }
}

unsafe extern "C" {
    fn getuid() -> u32;
    fn getgid() -> u32;
}

fn current_uid() -> u32 {
    // SAFETY: getuid(2) cannot fail.
    unsafe { getuid() }
}

fn current_gid() -> u32 {
    // SAFETY: getgid(2) cannot fail.
    unsafe { getgid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(kernel_cache: Option<PathBuf>) -> DockerBackend {
        DockerBackend {
            // not contacted: these tests only build container specs
            docker: Docker::connect_with_http(
                "http://127.0.0.1:9",
                5,
                bollard::API_DEFAULT_VERSION,
            )
            .unwrap(),
            image: "mixsweep-runner:cuda".into(),
            gpus: Some(GpuMode::PerTrial),
            nano_cpus: None,
            memory: None,
            env: vec![],
            keep_failed: false,
            full_eval: false,
            storage_url: "s3://bucket/runs".into(),
            binds: vec![],
            kernel_cache,
            workers: workers::Workers::new(None),
        }
    }

    fn trial() -> Trial {
        let config = serde_json::json!({"model_dim": 16, "vocab_size": 32, "seq_len": 8,
            "blocks": [{"type": "swiglu"}], "training": {"batch_tokens": 16, "seed": 1}});
        Trial::from_config(config, "base", "s3://bucket/data/train_*.bin", None, "test").unwrap()
    }

    #[test]
    fn gpu_containers_share_the_image_kernel_folder() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(Some(dir.path().to_path_buf()));
        let body = b.body("s", &trial(), false, Some(0));
        let binds = body.host_config.unwrap().binds.unwrap();
        assert!(
            binds.contains(&format!("{}:{KERNEL_CACHE_MOUNT}", dir.path().display())),
            "{binds:?}"
        );
        let env = body.env.unwrap();
        assert!(
            env.contains(&format!("MIXSWEEP_KERNEL_CACHE={KERNEL_CACHE_MOUNT}")),
            "{env:?}"
        );
        // without GPUs (no cache) neither appears
        let body = backend(None).body("s", &trial(), false, None);
        assert!(
            body.env
                .unwrap()
                .iter()
                .all(|e| !e.starts_with("MIXSWEEP_KERNEL_CACHE"))
        );
    }
}
