//! The Kubernetes backend: each trial runs as a `batch/v1` Job (one pod, `restartPolicy: Never`) through
//! `kube`, with the config from kubeconfig or the in-cluster service account (kube's inference;
//! `--context`, `--namespace`).
//!
//! * [`job_manifest`] builds the typed Job (so every manifest is a valid `k8s-openapi` object): the
//!   runner's command, `nvidia.com/gpu` limits, CPU/memory requests and limits, nodeSelector,
//!   tolerations, affinity, priorityClassName, imagePullSecrets, serviceAccount, env from a Secret,
//!   `activeDeadlineSeconds` (the trial timeout), `backoffLimit`, `ttlSecondsAfterFinished`, labels,
//!   and with `kubernetes.kernel_cache` a hostPath folder per image for MLX's compiled CUDA kernels
//!   (`MIXSWEEP_KERNEL_CACHE`). `mixsweep plan --backend kubernetes --manifests` prints them.
//! * Job names derive from the trial id: after an orchestrator crash, `mixsweep run` adopts a trial's
//!   active Job instead of submitting another.
//! * One watch on the sweep's Jobs and one on its pods (label `mixsweep.io/sweep`) serve every trial,
//!   however many run at once: an event wakes the trial its `mixsweep.io/trial` label names, which
//!   then reads its Job and pods (watches re-opened at most once a second when the server ends them;
//!   a once-a-second poll while they are down). Each trial follows its pod's log (stdout.log; Kubernetes merges stderr into it) into the live view. Failure reasons become trial states:
//!   `oom` (OOMKilled), `image_pull` (ImagePullBackOff/ErrImagePull), `unschedulable` (pending past
//!   `schedule_timeout`, with the scheduler's message), `timeout` (DeadlineExceeded), an evicted or
//!   preempted pod (run again without counting against `retries`), and the runner's exit code.
//! * Ctrl-C deletes the running Jobs with foreground propagation (their pods go too).
//!
//! The pods cannot see the orchestrator's disk: storage and data must be object-store URLs, or
//! `file://` paths that the pods mount themselves (a shared volume).

use crate::backend::{AttemptEnd, Ending};
use futures::StreamExt;
mod kueue;
mod manifest;

pub use manifest::{JobSettings, job_manifest, job_name, label_value, manifests, pod_storage_url};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use mixsweep_sweep::Trial;
use mixsweep_sweep::spec::SweepSpec;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const LABEL_SWEEP: &str = "mixsweep.io/sweep";
pub const LABEL_TRIAL: &str = "mixsweep.io/trial";

/// `--context` and `--namespace`.
#[derive(Debug, Clone, Default)]
pub struct KubeTarget {
    pub context: Option<String>,
    pub namespace: Option<String>,
}

pub struct KubernetesBackend {
    client: kube::Client,
    pub namespace: String,
    pub image: String,
    spec: SweepSpec,
    settings: JobSettings,
    schedule_timeout: Duration,
    wakeups: Arc<Wakeups>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for KubernetesBackend {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Which trials to wake up when the sweep's Jobs or pods change. One watch on the sweep's Jobs and
/// one on its pods serve every trial ([`watch_sweep`]), however many run at once.
#[derive(Default)]
struct Wakeups {
    trials: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
    /// Both watches are open (otherwise trials poll every second).
    watching: AtomicBool,
}

impl Wakeups {
    fn register(&self, trial: &str) -> Arc<tokio::sync::Notify> {
        let notify = Arc::new(tokio::sync::Notify::new());
        self.lock().insert(trial.to_string(), notify.clone());
        notify
    }

    fn unregister(&self, trial: &str) {
        self.lock().remove(trial);
    }

    fn wake(&self, trial: &str) {
        if let Some(n) = self.lock().get(trial) {
            // stores a permit when the trial is not waiting yet: no change is missed
            n.notify_one();
        }
    }

    fn wake_all(&self) {
        for n in self.lock().values() {
            n.notify_one();
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<tokio::sync::Notify>>>
    {
        self.trials.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps one watch on the sweep's Jobs and one on its pods (label `mixsweep.io/sweep`), re-opened at
/// most once a second when the server ends them, and wakes the trial named by each event's
/// `mixsweep.io/trial` label. Trials read the objects themselves; events only say when to look.
async fn watch_sweep(client: kube::Client, namespace: String, sweep: String, w: Arc<Wakeups>) {
    enum Seen {
        Trial(Option<String>),
        Ended,
    }
    fn trial_of<K: kube::Resource>(e: Result<WatchEvent<K>, kube::Error>) -> Seen {
        match e {
            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => {
                Seen::Trial(
                    o.meta()
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_TRIAL))
                        .cloned(),
                )
            }
            Ok(WatchEvent::Bookmark(_)) => Seen::Trial(None),
            Ok(WatchEvent::Error(_)) | Err(_) => Seen::Ended,
        }
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let params = WatchParams::default()
        .labels(&format!("{LABEL_SWEEP}={}", label_value(&sweep)))
        .timeout(290);
    loop {
        let opened = Instant::now();
        if let (Ok(j), Ok(p)) = (
            jobs.watch(&params, "0").await,
            pods.watch(&params, "0").await,
        ) {
            w.watching.store(true, Ordering::SeqCst);
            let ended = || futures::stream::once(async { Seen::Ended });
            let mut events = futures::stream::select(
                j.map(trial_of).chain(ended()).boxed(),
                p.map(trial_of).chain(ended()).boxed(),
            );
            while let Some(seen) = events.next().await {
                match seen {
                    Seen::Trial(Some(t)) => w.wake(&t),
                    Seen::Trial(None) => {}
                    Seen::Ended => break,
                }
            }
        }
        w.watching.store(false, Ordering::SeqCst);
        // events may have been missed while no watch was open: every trial looks again
        w.wake_all();
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(opened.elapsed())).await;
    }
}

/// Unregisters a trial from the wakeups when its attempt ends, however it ends.
struct Registered<'a> {
    wakeups: &'a Wakeups,
    trial: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.wakeups.unregister(&self.trial);
    }
}

async fn client(target: &KubeTarget, spec: &SweepSpec) -> Result<(kube::Client, String), String> {
    let context = target
        .context
        .clone()
        .or_else(|| spec.kubernetes.context.clone());
    let config = match &context {
        Some(c) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
            context: Some(c.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("kubeconfig context {c:?}: {e}"))?,
        None => kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes config (set KUBECONFIG, or run in a cluster): {e}")
        })?,
    };
    let namespace = target
        .namespace
        .clone()
        .or_else(|| spec.kubernetes.namespace.clone())
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
    Ok((client, namespace))
}

impl KubernetesBackend {
    /// The sweep's Kueue queue (`kubernetes.queue`).
    pub fn queue(&self) -> Option<&str> {
        self.spec.kubernetes.queue.as_deref()
    }

    pub async fn connect(
        spec: &SweepSpec,
        image: Option<String>,
        storage_root: &str,
        target: &KubeTarget,
        timeout: Option<Duration>,
    ) -> anyhow::Result<KubernetesBackend> {
        let storage_url = pod_storage_url(storage_root).map_err(anyhow::Error::msg)?;
        let (client, namespace) = client(target, spec).await.map_err(anyhow::Error::msg)?;
        let schedule_timeout = spec
            .kubernetes
            .schedule_timeout
            .as_deref()
            .map(mixsweep_sweep::spec::parse_duration)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .unwrap_or(Duration::from_secs(15 * 60));
        let image = image
            .or_else(|| spec.image.clone())
            .unwrap_or_else(|| "mixsweep-runner:cuda".into());
        let wakeups = Arc::new(Wakeups::default());
        let watcher = tokio::spawn(watch_sweep(
            client.clone(),
            namespace.clone(),
            spec.name.clone(),
            wakeups.clone(),
        ));
        Ok(KubernetesBackend {
            client,
            namespace,
            image: image.clone(),
            spec: spec.clone(),
            settings: JobSettings {
                image,
                storage_url,
                profile: spec.profile,
                timeout,
            },
            schedule_timeout,
            wakeups,
            watcher,
        })
    }

    async fn delete_and_wait(&self, jobs: &Api<Job>, name: &str) -> Result<(), kube::Error> {
        match jobs.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(120) {
            if jobs.get_opt(name).await?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Runs (or adopts) one attempt of a trial as a Job.
    #[allow(clippy::too_many_arguments)]
    pub async fn attempt(
        &self,
        _sweep: &str,
        t: &Trial,
        work: &Path,
        _profile: bool,
        stop: &AtomicBool,
        on_metrics: &(dyn Fn(&serde_json::Value) + Sync),
        log: &(dyn Fn(String) + Sync),
    ) -> AttemptEnd {
        let api_error =
            |what: &str, e: kube::Error| AttemptEnd::engine(format!("{what}: {e}"), true);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = job_name(&t.id);
        let wake = self.wakeups.register(&t.id);
        let _registered = Registered {
            wakeups: &self.wakeups,
            trial: t.id.to_string(),
        };
        // The log file first: a trial whose log cannot be kept does not start.
        let mut stdout = match std::fs::File::create(work.join("stdout.log")) {
            Ok(f) => Some(f),
            Err(e) => {
                return AttemptEnd::engine(
                    format!("creating {}: {e}", work.join("stdout.log").display()),
                    true,
                );
            }
        };
        let mut adopted = false;
        match jobs.get_opt(&name).await {
            Ok(Some(job)) if job_finished(&job).is_none() => {
                adopted = true;
                log(format!("adopting running Job {}/{name}", self.namespace));
            }
            Ok(Some(_)) => {
                if let Err(e) = self.delete_and_wait(&jobs, &name).await {
                    return api_error("deleting the finished Job", e);
                }
            }
            Ok(None) => {}
            Err(e) => return api_error("reading the Job", e),
        }
        if !adopted {
            let job = match job_manifest(&self.spec, &self.settings, &self.namespace, t) {
                Ok(j) => j,
                Err(e) => return AttemptEnd::failed(Ending::Failed, e, false),
            };
            if let Err(e) = jobs.create(&PostParams::default(), &job).await {
                let retry = !matches!(&e, kube::Error::Api(s) if s.code == 400 || s.code == 403 || s.code == 422);
                return AttemptEnd::engine(format!("creating Job {name}: {e}"), retry);
            }
        }

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut following: Option<String> = None;
        let mut pending_since: Option<Instant> = None;
        let mut kueue = kueue::QueueWatch::default();
        let selector = format!("job-name={name}");
        let mut end = AttemptEnd::default();
        loop {
            while let Ok(line) = rx.try_recv() {
                if let Some(f) = stdout.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) {
                    on_metrics(&v);
                }
            }
            if stop.load(Ordering::SeqCst) {
                end.interrupted = true;
                if let Err(e) = self.delete_and_wait(&jobs, &name).await {
                    log(format!("could not delete Job {name}: {e}"));
                }
                break;
            }
            let job = match jobs.get_opt(&name).await {
                Ok(Some(j)) => j,
                Ok(None) => {
                    end.preempted = Some("its Job was deleted from outside".into());
                    break;
                }
                Err(e) => {
                    log(format!("reading Job {name}: {e} (will retry)"));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            // Kueue: a suspended Job waits for admission (queued: no pods, no schedule_timeout); one
            // suspended again after admission was evicted and runs again from its resume point.
            let suspended = match &self.spec.kubernetes.queue {
                Some(q) => match kueue
                    .observe(&self.client, &self.namespace, q, &job, &t.id, log)
                    .await
                {
                    kueue::Seen::Evicted(why) => {
                        let _ = self.delete_and_wait(&jobs, &name).await;
                        end.preempted = Some(format!("evicted by Kueue ({why})"));
                        break;
                    }
                    seen => seen == kueue::Seen::Queued,
                },
                None => false,
            };
            let pod = if suspended {
                pending_since = None;
                None
            } else {
                match pods.list(&ListParams::default().labels(&selector)).await {
                    Ok(list) => list
                        .items
                        .into_iter()
                        .max_by_key(|p| p.metadata.creation_timestamp.clone()),
                    Err(_) => None,
                }
            };
            if let Some(p) = &pod {
                let pod_name = p.metadata.name.clone().unwrap_or_default();
                let started = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph != "Pending");
                if started && following.as_deref() != Some(&pod_name) {
                    following = Some(pod_name.clone());
                    spawn_log_follower(pods.clone(), pod_name, tx.clone());
                }
                match pod_verdict(p) {
                    PodVerdict::Running => pending_since = None,
                    PodVerdict::Pending { unschedulable } => {
                        if let Some(message) = unschedulable {
                            let since = *pending_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > self.schedule_timeout {
                                let _ = self.delete_and_wait(&jobs, &name).await;
                                end.failure = AttemptEnd::failed(
                                    Ending::Unschedulable,
                                    format!(
                                        "unschedulable for {:?}: {message}",
                                        self.schedule_timeout
                                    ),
                                    false,
                                )
                                .failure;
                                break;
                            }
                        }
                    }
                    PodVerdict::ImagePull(message) => {
                        let _ = self.delete_and_wait(&jobs, &name).await;
                        end.failure = AttemptEnd::failed(
                            Ending::ImagePull,
                            format!("cannot pull image {}: {message}", self.image),
                            false,
                        )
                        .failure;
                        break;
                    }
                    PodVerdict::Preempted(why) => {
                        let _ = self.delete_and_wait(&jobs, &name).await;
                        end.preempted = Some(why);
                        break;
                    }
                    PodVerdict::Terminated { code, oom } => {
                        end.code = Some(code);
                        end.oom = oom;
                    }
                }
            }
            match job_finished(&job) {
                Some(JobEnd::Complete) => {
                    end.code = Some(0);
                    break;
                }
                Some(JobEnd::DeadlineExceeded) => {
                    end.timed_out = true;
                    end.interrupted = true;
                    break;
                }
                Some(JobEnd::Failed(reason)) => {
                    if end.code.is_none() && !end.oom {
                        end.failure = AttemptEnd::failed(
                            Ending::Failed,
                            format!("Job failed: {reason}"),
                            true,
                        )
                        .failure;
                    }
                    break;
                }
                None => {}
            }
            // Wait for the next change of this trial's Job or pod (the sweep's watches wake it),
            // else poll: every 30 s while the watches are open, every second while they are not; a
            // stop request is noticed within 200 ms.
            let poll = if self.wakeups.watching.load(Ordering::SeqCst) {
                Duration::from_secs(30)
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = stop_requested(stop) => {}
            }
        }
        // Let the log follower deliver what it has.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(line) = rx.try_recv() {
            if let Some(f) = stdout.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) {
                on_metrics(&v);
            }
        }
        if end.oom {
            end.code = end.code.or(Some(137));
        }
        end
    }
}

async fn stop_requested(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn_log_follower(pods: Api<Pod>, pod: String, tx: tokio::sync::mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        use futures::{AsyncBufReadExt, TryStreamExt};
        let params = LogParams {
            follow: true,
            ..Default::default()
        };
        if let Ok(reader) = pods.log_stream(&pod, &params).await {
            let mut lines = reader.lines();
            while let Ok(Some(line)) = lines.try_next().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }
    });
}

enum JobEnd {
    Complete,
    DeadlineExceeded,
    Failed(String),
}

fn job_finished(job: &Job) -> Option<JobEnd> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return Some(JobEnd::Complete),
            "Failed" => {
                let reason = c.reason.clone().unwrap_or_default();
                return Some(if reason == "DeadlineExceeded" {
                    JobEnd::DeadlineExceeded
                } else {
                    JobEnd::Failed(format!(
                        "{reason}{}",
                        c.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ))
                });
            }
            _ => {}
        }
    }
    None
}

enum PodVerdict {
    Running,
    Pending { unschedulable: Option<String> },
    ImagePull(String),
    Preempted(String),
    Terminated { code: i32, oom: bool },
}

fn pod_verdict(p: &Pod) -> PodVerdict {
    let Some(status) = &p.status else {
        return PodVerdict::Pending {
            unschedulable: None,
        };
    };
    if status.reason.as_deref() == Some("Evicted") || status.reason.as_deref() == Some("Preempting")
    {
        return PodVerdict::Preempted(format!(
            "pod {}: {}",
            status.reason.clone().unwrap_or_default(),
            status.message.clone().unwrap_or_default()
        ));
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "DisruptionTarget" && c.status == "True" {
            return PodVerdict::Preempted(format!(
                "pod disrupted ({}): {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    for cs in status.container_statuses.iter().flatten() {
        if let Some(state) = &cs.state {
            if let Some(w) = &state.waiting {
                let reason = w.reason.clone().unwrap_or_default();
                if matches!(
                    reason.as_str(),
                    "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName"
                ) {
                    return PodVerdict::ImagePull(format!(
                        "{reason}: {}",
                        w.message.clone().unwrap_or_default()
                    ));
                }
            }
            if let Some(term) = &state.terminated {
                return PodVerdict::Terminated {
                    code: term.exit_code,
                    oom: term.reason.as_deref() == Some("OOMKilled"),
                };
            }
        }
    }
    if status.phase.as_deref() == Some("Pending") {
        let unschedulable = status.conditions.iter().flatten().find_map(|c| {
            (c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable"))
            .then(|| c.message.clone().unwrap_or_else(|| "Unschedulable".into()))
        });
        return PodVerdict::Pending { unschedulable };
    }
    PodVerdict::Running
}
