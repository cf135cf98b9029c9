//! The Kubernetes backend against a fake API server: no cluster exists on our machines and none can be
//! installed, so this test process serves the endpoints the backend uses (Jobs: create, get, delete;
//! Pods: list by label, log) on a loopback port, plays a scenario for each Job (pending, running,
//! success, OOM kill, image pull failure, unschedulable, deadline, eviction, exit code), and writes the
//! trial's summary.json into storage when a Job "succeeds", as the runner in the pod would. `mixsweep`
//! reaches it through a kubeconfig, exactly as it would reach a real cluster.
//!
//! Every Job the backend submits is checked to deserialize into `k8s_openapi`'s typed `Job`.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::batch::v1::Job;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;
use support::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    Success,
    Oom,
    ImagePull,
    Unschedulable,
    Deadline,
    /// The first pod is evicted (node pressure); the second succeeds.
    EvictedThenSuccess,
    /// The runner exits with 1 every time.
    ExitOne,
    /// Runs until deleted.
    Forever,
    /// Kueue holds the suspended Job for [`ADMIT`] s, then admits it; it succeeds.
    KueueQueued,
    /// Kueue admits the first Job, then evicts it (suspends it again) after [`EVICT`] s of running;
    /// the second succeeds.
    KueueEvicted,
}

/// How long the fake Kueue keeps a suspended Job queued before admitting it.
const ADMIT: f64 = 1.5;
/// How long after admission the fake Kueue evicts the first Job of `KueueEvicted`.
const EVICT: f64 = 1.5;

struct FakeJob {
    job: serde_json::Value,
    created: Instant,
    /// How many Jobs of this name were created before this one.
    generation: usize,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, FakeJob>,
    creates: HashMap<String, usize>,
    deletes: Vec<(String, String)>,
    /// The most Jobs that existed at once.
    most_jobs: usize,
    /// Watch requests served (jobs, pods).
    watches: (usize, usize),
    storage: PathBuf,
}

struct Fake {
    scenario: Scenario,
    state: Mutex<State>,
}

fn status_json(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" }, "message": message, "reason": reason, "code": code})
}

const PENDING: f64 = 0.8;
const RUNNING: f64 = 2.5;

impl Fake {
    /// Kueue's part for a Job submitted suspended: (suspended now, seconds since admission).
    fn kueue(&self, fj: &FakeJob) -> (bool, f64) {
        let age = fj.created.elapsed().as_secs_f64();
        if fj.job["spec"]["suspend"] != true {
            return (false, age);
        }
        if age < ADMIT {
            return (true, 0.0);
        }
        let since = age - ADMIT;
        let evicted =
            matches!(self.scenario, Scenario::KueueEvicted) && fj.generation == 0 && since > EVICT;
        (evicted, since)
    }

    /// (job status, pod) for a Job at `age` seconds (since Kueue admitted it).
    fn play(&self, name: &str, fj: &FakeJob) -> (serde_json::Value, serde_json::Value) {
        let (_, age) = self.kueue(fj);
        let pod_name = format!("{name}-{}", fj.generation);
        // the pod carries the Job template's labels, plus the `job-name` Kubernetes adds
        let mut labels = fj.job["spec"]["template"]["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = serde_json::json!({});
        }
        labels["job-name"] = name.into();
        let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "labels": labels,
                         "creationTimestamp": "2026-11-22T00:00:00Z"},
            "status": {"phase": "Pending"}});
        let container = |state: serde_json::Value| {
            serde_json::json!([{ "name": "runner", "image": "img",
            "imageID": "", "ready": false, "restartCount": 0, "state": state }])
        };
        let terminated = |code: i32, reason: &str| {
            container(serde_json::json!({"terminated": {"exitCode": code, "reason": reason}}))
        };
        let running =
            || container(serde_json::json!({"running": {"startedAt": "2026-11-22T00:00:01Z"}}));
        let failed = |reason: &str, msg: &str| serde_json::json!({"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": msg}], "failed": 1});
        let complete = serde_json::json!({"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1});
        let active = serde_json::json!({"active": 1});
        let scenario = match self.scenario {
            Scenario::EvictedThenSuccess if fj.generation == 0 => Scenario::EvictedThenSuccess,
            Scenario::EvictedThenSuccess => Scenario::Success,
            Scenario::KueueEvicted if fj.generation == 0 => Scenario::Forever,
            Scenario::KueueQueued | Scenario::KueueEvicted => Scenario::Success,
            s => s,
        };
        match scenario {
            Scenario::Unschedulable => {
                pod["status"]["conditions"] = serde_json::json!([{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]);
                (active, pod)
            }
            Scenario::ImagePull if age > PENDING => {
                pod["status"]["containerStatuses"] =
                    container(serde_json::json!({"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"registry.example.com/nope:1\""}}));
                (active, pod)
            }
            _ if age < PENDING => (active, pod),
            Scenario::Forever => {
                pod["status"]["phase"] = "Running".into();
                pod["status"]["containerStatuses"] = running();
                (active, pod)
            }
            _ if age < RUNNING => {
                pod["status"]["phase"] = "Running".into();
                pod["status"]["containerStatuses"] = running();
                (active, pod)
            }
            Scenario::Success => {
                pod["status"]["phase"] = "Succeeded".into();
                pod["status"]["containerStatuses"] = terminated(0, "Completed");
                (complete, pod)
            }
            Scenario::Oom => {
                pod["status"]["phase"] = "Failed".into();
                pod["status"]["containerStatuses"] = terminated(137, "OOMKilled");
                (
                    failed(
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                    pod,
                )
            }
            Scenario::ExitOne => {
                pod["status"]["phase"] = "Failed".into();
                pod["status"]["containerStatuses"] = terminated(1, "Error");
                (
                    failed(
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                    pod,
                )
            }
            Scenario::Deadline => {
                pod["status"]["phase"] = "Failed".into();
                pod["status"]["containerStatuses"] = terminated(137, "Error");
                (
                    failed(
                        "DeadlineExceeded",
                        "Job was active longer than specified deadline",
                    ),
                    pod,
                )
            }
            Scenario::EvictedThenSuccess => {
                pod["status"]["phase"] = "Failed".into();
                pod["status"]["reason"] = "Evicted".into();
                pod["status"]["message"] = "The node was low on resource: memory.".into();
                (active, pod)
            }
            Scenario::ImagePull | Scenario::KueueQueued | Scenario::KueueEvicted => unreachable!(),
        }
    }

    /// What the runner in a succeeding pod would have uploaded.
    fn write_artifacts(&self, storage: &Path, job: &serde_json::Value) {
        let trial = job["metadata"]["labels"]["mixsweep.io/trial"]
            .as_str()
            .unwrap();
        let dir = storage.join("trials").join(trial);
        std::fs::create_dir_all(&dir).unwrap();
        if dir.join("summary.json").exists() {
            return;
        }
        let metrics = "{\"step\":0,\"train_loss\":5.5,\"val_loss\":5.6}\n{\"step\":9,\"train_loss\":3.1,\"val_loss\":3.2}\n";
        std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
        let summary = serde_json::json!({"status": "completed", "steps": 10, "steps_completed": 10,
            "best_val_loss": 3.2, "final_val_loss": 3.2, "mean_tok_s": 12345.0, "wall_time_s": 2.5});
        std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    }

    /// The named Job as the API would return it now (with its status); on success, the trial's
    /// artifacts appear in storage as the runner would have uploaded them.
    fn job_now(&self, st: &State, name: &str) -> Option<serde_json::Value> {
        let fj = st.jobs.get(name)?;
        let (suspended, admitted_for) = self.kueue(fj);
        let (mut status, _) = self.play(name, fj);
        if suspended {
            status = serde_json::json!({"conditions": [{"type": "Suspended", "status": "True",
                "reason": if admitted_for > 0.0 { "Preempted" } else { "JobSuspended" },
                "message": if admitted_for > 0.0 { "evicted to make room for a higher-priority workload" } else { "Job suspended" }}]});
        }
        if status["succeeded"] == 1 {
            self.write_artifacts(&st.storage, &fj.job);
        }
        let mut job = fj.job.clone();
        job["status"] = status;
        if fj.job["spec"]["suspend"] == true {
            job["spec"]["suspend"] = suspended.into();
        }
        Some(job)
    }

    /// The current objects a watch request sees: the Jobs (with status) or the pods whose labels
    /// match its `labelSelector` (`key=value`, as the backend sends).
    fn watched(&self, path: &str, query: &str) -> Option<Vec<serde_json::Value>> {
        let selector = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("labelSelector="))?
            .replace("%3D", "=")
            .replace("%2F", "/");
        let (key, value) = selector.split_once('=')?;
        let matches = |o: &serde_json::Value| o["metadata"]["labels"][key] == value;
        let st = self.state.lock().unwrap();
        let mut names: Vec<&String> = st.jobs.keys().collect();
        names.sort();
        Some(if path.ends_with("/jobs") {
            names
                .into_iter()
                .filter_map(|n| self.job_now(&st, n))
                .filter(matches)
                .collect()
        } else {
            names
                .into_iter()
                .filter(|n| !self.kueue(&st.jobs[*n]).0)
                .map(|n| self.play(n, &st.jobs[n]).1)
                .filter(matches)
                .collect()
        })
    }

    fn handle(&self, method: &str, path: &str, query: &str, body: &[u8]) -> (StatusCode, String) {
        let json = |v: serde_json::Value| v.to_string();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut st = self.state.lock().unwrap();
        match (method, parts.as_slice()) {
            ("POST", ["apis", "batch", "v1", "namespaces", _, "jobs"]) => {
                // Every submitted manifest must be a valid typed Job.
                let typed: Job = serde_json::from_slice(body).expect("the backend submits a valid batch/v1 Job");
                let name = typed.metadata.name.clone().unwrap();
                if st.jobs.contains_key(&name) {
                    return (StatusCode::CONFLICT, json(status_json(409, "AlreadyExists", "jobs.batch already exists")));
                }
                let generation = *st.creates.get(&name).unwrap_or(&0);
                *st.creates.entry(name.clone()).or_default() += 1;
                let job: serde_json::Value = serde_json::from_slice(body).unwrap();
                st.jobs.insert(name, FakeJob { job: job.clone(), created: Instant::now(), generation });
                st.most_jobs = st.most_jobs.max(st.jobs.len());
                (StatusCode::CREATED, json(job))
            }
            ("GET", ["apis", "batch", "v1", "namespaces", _, "jobs", name]) => match self.job_now(&st, name) {
                Some(job) => (StatusCode::OK, json(job)),
                None => (StatusCode::NOT_FOUND, json(status_json(404, "NotFound", "jobs.batch not found"))),
            },
            ("DELETE", ["apis", "batch", "v1", "namespaces", _, "jobs", name]) => {
                let policy = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|b| b["propagationPolicy"].as_str().map(str::to_string))
                    .unwrap_or_default();
                st.deletes.push((name.to_string(), policy));
                match st.jobs.remove(*name) {
                    Some(_) => (StatusCode::OK, json(status_json(200, "", "deleted"))),
                    None => (StatusCode::NOT_FOUND, json(status_json(404, "NotFound", "jobs.batch not found"))),
                }
            }
            ("GET", ["api", "v1", "namespaces", _, "pods"]) => {
                let selector = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(|v| v.replace("%3D", "="))
                    .unwrap_or_default();
                let job = selector.strip_prefix("job-name=").unwrap_or("");
                let items: Vec<serde_json::Value> = st
                    .jobs
                    .get(job)
                    .filter(|fj| !self.kueue(fj).0)
                    .map(|fj| vec![self.play(job, fj).1])
                    .unwrap_or_default();
                (StatusCode::OK, json(serde_json::json!({"apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "1"}, "items": items})))
            }
            // Kueue's visibility API: the Jobs still waiting for admission, oldest first
            ("GET", ["apis", "visibility.kueue.x-k8s.io", "v1beta1", "namespaces", _, "localqueues", _, "pendingworkloads"]) => {
                let mut waiting: Vec<(&String, &FakeJob)> =
                    st.jobs.iter().filter(|(_, fj)| self.kueue(fj) == (true, 0.0)).collect();
                waiting.sort_by_key(|(_, fj)| fj.created);
                let items: Vec<serde_json::Value> = waiting
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _))| serde_json::json!({"metadata": {"name": format!("job-{name}"),
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "u"}]},
                        "localQueueName": "research", "positionInLocalQueue": i, "positionInClusterQueue": i}))
                    .collect();
                (StatusCode::OK, json(serde_json::json!({"kind": "PendingWorkloadsSummary",
                    "apiVersion": "visibility.kueue.x-k8s.io/v1beta1", "metadata": {}, "items": items})))
            }
            ("GET", ["api", "v1", "namespaces", _, "pods", _pod, "log"]) => (
                StatusCode::OK,
                "{\"step\":0,\"train_loss\":5.5,\"val_loss\":5.6,\"tok_s\":0}\n{\"step\":5,\"train_loss\":4.0,\"tok_s\":9000}\n".into(),
            ),
            _ => (StatusCode::NOT_FOUND, json(status_json(404, "NotFound", &format!("fake: no route {method} {path}")))),
        }
    }
}

/// Starts the fake API server; returns it and its URL.
fn start(scenario: Scenario, storage: &Path) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        scenario,
        state: Mutex::new(State {
            storage: storage.to_path_buf(),
            ..Default::default()
        }),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let f = fake.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let f = f.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let f = f.clone();
                            async move {
                                let method = req.method().to_string();
                                let path = req.uri().path().to_string();
                                let query = req.uri().query().unwrap_or("").to_string();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                if method == "GET" && query.contains("watch=true") {
                                    // A watch: a MODIFIED event per object every 250 ms for 3 s, then
                                    // the server ends it (the client re-opens it), as API servers do.
                                    {
                                        let mut st = f.state.lock().unwrap();
                                        if path.ends_with("/jobs") {
                                            st.watches.0 += 1
                                        } else {
                                            st.watches.1 += 1
                                        }
                                    }
                                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
                                    let f2 = f.clone();
                                    tokio::spawn(async move {
                                        for _ in 0..12 {
                                            for o in f2.watched(&path, &query).unwrap_or_default() {
                                                let line = serde_json::json!({"type": "MODIFIED", "object": o})
                                                    .to_string()
                                                    + "\n";
                                                if tx.send(Bytes::from(line)).is_err() {
                                                    return;
                                                }
                                            }
                                            tokio::time::sleep(Duration::from_millis(250)).await;
                                        }
                                    });
                                    let stream = futures::stream::unfold(rx, |mut rx| async move {
                                        rx.recv().await.map(|b| {
                                            (Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)), rx)
                                        })
                                    });
                                    return Ok::<_, std::convert::Infallible>(
                                        Response::builder()
                                            .status(StatusCode::OK)
                                            .header("content-type", "application/json")
                                            .body(http_body_util::StreamBody::new(stream).boxed())
                                            .unwrap(),
                                    );
                                }
                                let (code, text) = f.handle(&method, &path, &query, &body);
                                Ok::<_, std::convert::Infallible>(
                                    Response::builder()
                                        .status(code)
                                        .header(
                                            "content-type",
                                            if path.ends_with("/log") {
                                                "text/plain"
                                            } else {
                                                "application/json"
                                            },
                                        )
                                        .body(Full::new(Bytes::from(text)).boxed())
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
    });
    (fake, format!("http://{addr}"))
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    storage: PathBuf,
    fake: Arc<Fake>,
    kubeconfig: PathBuf,
}

fn setup(scenario: Scenario, name: &str, extra: &str) -> (Setup, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let storage = dir.join("runs");
    let (fake, url) = start(scenario, &storage);
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, format!("apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{url}\"}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: ml}}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{token: not-a-secret}}\n")).unwrap();
    // Shards the plan can identify (the pods would read them from object storage).
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut shard = vec![0u8; 1024];
    shard[0..4].copy_from_slice(&20240520i32.to_le_bytes());
    shard[4..8].copy_from_slice(&1i32.to_le_bytes());
    shard[8..12].copy_from_slice(&64i32.to_le_bytes());
    shard.extend((0..64u16).flat_map(|t| (t % 16).to_le_bytes()));
    std::fs::write(data.join("train_0.bin"), &shard).unwrap();
    std::fs::write(dir.join("m.json"), "{\"name\": \"m\", \"model_dim\": 8, \"vocab_size\": 16, \"seq_len\": 4, \"blocks\": [{\"type\": \"swiglu\"}], \"training\": {\"batch_tokens\": 8, \"steps\": 10}}").unwrap();
    let sweep = dir.join(format!("{name}.yaml"));
    std::fs::write(&sweep, format!(
        "name: {name}\nbase: m.json\ntrain: file://{}/train_*.bin\nbackend: kubernetes\nimage: registry.example.com/mixsweep-runner:cuda\ngpus: 1\ncpus: 2\nmemory: 8g\nstorage: file://{}\n{extra}",
        data.display(), storage.display())).unwrap();
    (
        Setup {
            _dir: tmp,
            dir,
            storage,
            fake,
            kubeconfig,
        },
        sweep,
    )
}

fn mixsweep(s: &Setup) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
    c.env("KUBECONFIG", &s.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .current_dir(&s.dir);
    c
}

fn run(s: &Setup, sweep: &Path) -> Output {
    mixsweep(s).arg("run").arg(sweep).output().unwrap()
}

fn attempt(s: &Setup, id: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(s.storage.join(format!("trials/{id}/attempt.json"))).unwrap(),
    )
    .unwrap()
}

fn ids(s: &Setup, sweep: &Path) -> Vec<String> {
    let o = mixsweep(s)
        .arg("plan")
        .arg(sweep)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `plan --backend kubernetes --manifests` for a sweep, parsed back into typed Jobs.
fn planned_jobs(s: &Setup, sweep: &Path) -> Result<Vec<Job>, String> {
    let o = mixsweep(s)
        .arg("plan")
        .arg(sweep)
        .args([
            "--backend",
            "kubernetes",
            "--manifests",
            "--namespace",
            "ml",
        ])
        .output()
        .unwrap();
    if !o.status.success() {
        return Err(text(&o));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).expect("each document is a batch/v1 Job"))
        .collect())
}

/// The pod template of a planned Job.
fn pod_of(job: &k8s_openapi::api::batch::v1::Job) -> &k8s_openapi::api::core::v1::PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn kernel_cache_is_a_host_folder_per_image_given_to_the_runner() {
    let (s, sweep) = setup(
        Scenario::Success,
        "k8skern",
        "kubernetes: {kernel_cache: /var/cache/mixsweep-kernels/}\n",
    );
    let jobs = planned_jobs(&s, &sweep).unwrap();
    let pod = pod_of(&jobs[0]);
    let volume = &pod.volumes.as_ref().unwrap()[0];
    let host = volume.host_path.as_ref().unwrap();
    assert_eq!(
        host.path,
        "/var/cache/mixsweep-kernels/registry.example.com-mixsweep-runner-cuda"
    );
    assert_eq!(host.type_.as_deref(), Some("DirectoryOrCreate"));
    let runner = &pod.containers[0];
    let mount = &runner.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.name.as_str(), mount.mount_path.as_str()),
        (volume.name.as_str(), "/mixsweep-kernels")
    );
    let env = runner.env.as_ref().unwrap();
    assert!(
        env.iter().any(|e| e.name == "MIXSWEEP_KERNEL_CACHE"
            && e.value.as_deref() == Some("/mixsweep-kernels")),
        "{env:?}"
    );

    // a relative folder is refused with the field's name
    let (s, sweep) = setup(
        Scenario::Success,
        "k8skern2",
        "kubernetes: {kernel_cache: cache}\n",
    );
    let err = planned_jobs(&s, &sweep).unwrap_err();
    assert!(err.contains("kubernetes.kernel_cache"), "{err}");
}

/// GPU pods share compiled kernels through the sweep's storage unless told otherwise.
#[test]
fn gpu_pods_share_kernels_through_the_kernel_store() {
    let store_of = |extra: &str, name: &str| -> Result<Option<String>, String> {
        let (s, sweep) = setup(Scenario::Success, name, extra);
        let jobs = planned_jobs(&s, &sweep)?;
        let pod = pod_of(&jobs[0]);
        let env = pod.containers[0].env.clone().unwrap_or_default();
        Ok(env
            .iter()
            .find(|e| e.name == "MIXSWEEP_KERNEL_STORE")
            .and_then(|e| e.value.clone()))
    };
    let default = store_of("", "k8sstore")
        .unwrap()
        .expect("a GPU pod gets a kernel store");
    assert!(
        default.starts_with("file://") && default.ends_with("/runs/kernels"),
        "{default}"
    );
    assert_eq!(
        store_of(
            "kubernetes: {kernel_store: \"s3://kernels/h200/\"}\n",
            "k8sstore2"
        )
        .unwrap(),
        Some("s3://kernels/h200".into())
    );
    assert_eq!(
        store_of("kubernetes: {kernel_store: \"off\"}\n", "k8sstore3").unwrap(),
        None
    );
    let err = store_of("kubernetes: {kernel_store: /var/kernels}\n", "k8sstore5").unwrap_err();
    assert!(err.contains("kubernetes.kernel_store"), "{err}");
}

#[test]
fn jobs_succeed_and_rank_with_valid_manifests() {
    let (s, sweep) = setup(
        Scenario::Success,
        "k8sok",
        "grid: {training.lr: [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]}\ntimeout: 2h\n",
    );
    let started = Instant::now();
    let o = run(&s, &sweep);
    let elapsed = started.elapsed().as_secs_f64();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("on kubernetes (namespace ml, registry.example.com/mixsweep-runner:cuda)"),
        "{out}"
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.ends_with(" done"))
            .count(),
        6,
        "{out}"
    );
    // 4 Jobs at a time by default (the sixth waited for a free place)
    assert!(out.contains("4 at a time"), "{out}");
    let st = s.fake.state.lock().unwrap();
    // One watch on the sweep's Jobs and one on its pods serve all six trials: the fake ends each
    // after 3 s and the backend re-opens it (at most once a second), so the count follows the
    // sweep's duration, not its number of trials (a watch per trial would be at least 6 each).
    eprintln!(
        "watch requests (jobs, pods): {:?} in {elapsed:.1} s",
        st.watches
    );
    // Each Job ends 2.5 s after it starts; trials notice through the watch events (while the
    // watches are open they poll only every 30 s), so two waves take seconds, not minutes.
    assert!(
        elapsed < 25.0,
        "{elapsed:.1} s: the watch events did not wake the trials"
    );
    let most = (elapsed / 3.0).ceil() as usize + 1;
    assert!(
        (1..=most).contains(&st.watches.0) && (1..=most).contains(&st.watches.1),
        "the backend watches the sweep's Jobs and pods: {:?} in {elapsed:.1} s",
        st.watches
    );
    for id in ids(&s, &sweep) {
        let name = format!("mixsweep-{id}");
        assert_eq!(st.creates[&name], 1);
        assert_eq!(attempt(&s, &id)["backend"], "kubernetes");
        // the pod log was followed into stdout.log
        let log =
            std::fs::read_to_string(s.storage.join(format!("trials/{id}/stdout.log"))).unwrap();
        assert!(log.contains("\"train_loss\":4.0"), "{log}");
    }
    drop(st);
    // The manifests `plan --manifests` prints are the ones submitted, and they are typed Jobs.
    let jobs = planned_jobs(&s, &sweep).unwrap();
    assert_eq!(jobs.len(), 6);
    let spec = jobs[0].spec.as_ref().unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(7200));
    assert_eq!(spec.backoff_limit, Some(0));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    assert!(
        pod.containers[0]
            .args
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a == "--artifacts")
    );
}

#[test]
fn failure_reasons_become_trial_states() {
    for (scenario, extra, state, needle, creates) in [
        (Scenario::Oom, "retries: 2\n", "oom", "OOM-killed", 1),
        (
            Scenario::ImagePull,
            "retries: 2\n",
            "image_pull",
            "ImagePullBackOff",
            1,
        ),
        (
            Scenario::Unschedulable,
            "retries: 2\nkubernetes: {schedule_timeout: 2s}\n",
            "unschedulable",
            "Insufficient nvidia.com/gpu",
            1,
        ),
        (
            Scenario::Deadline,
            "retries: 2\ntimeout: 1h\n",
            "timeout",
            "timed out",
            1,
        ),
        (
            Scenario::ExitOne,
            "retries: 1\n",
            "failed",
            "runner exited with 1",
            2,
        ),
    ] {
        let (s, sweep) = setup(scenario, "k8sfail", extra);
        let o = run(&s, &sweep);
        let out = text(&o);
        assert!(!o.status.success(), "{scenario:?}: {out}");
        assert!(out.contains(needle), "{scenario:?}: {out}");
        let id = &ids(&s, &sweep)[0];
        let a = attempt(&s, id);
        assert_eq!(a["status"], state, "{scenario:?}: {a}");
        assert_eq!(
            s.fake.state.lock().unwrap().creates[&format!("mixsweep-{id}")],
            creates,
            "{scenario:?}"
        );
        assert!(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.ends_with(&format!(" {state}"))),
            "{scenario:?}: {out}"
        );
    }
}

#[test]
fn an_evicted_pod_runs_again_without_using_a_retry() {
    let (s, sweep) = setup(Scenario::EvictedThenSuccess, "k8sevict", "retries: 0\n");
    let o = run(&s, &sweep);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Evicted") && out.contains("not counted as a retry"),
        "{out}"
    );
    let id = &ids(&s, &sweep)[0];
    assert_eq!(
        s.fake.state.lock().unwrap().creates[&format!("mixsweep-{id}")],
        2
    );
    assert_eq!(attempt(&s, id)["status"], "completed");
}

#[test]
fn an_existing_job_is_adopted_not_resubmitted() {
    let (s, sweep) = setup(Scenario::Success, "k8sadopt", "");
    let id = ids(&s, &sweep)[0].clone();
    let name = format!("mixsweep-{id}");
    // A Job submitted by an orchestrator that crashed, still running.
    {
        let mut st = s.fake.state.lock().unwrap();
        let job = serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "ml", "labels": {"mixsweep.io/trial": id}},
            "spec": {"template": {"spec": {"containers": [{"name": "runner"}], "restartPolicy": "Never"}}}});
        st.jobs.insert(
            name.clone(),
            FakeJob {
                job,
                created: Instant::now(),
                generation: 0,
            },
        );
    }
    let o = run(&s, &sweep);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!("adopting running Job ml/{name}")),
        "{out}"
    );
    assert!(
        !s.fake.state.lock().unwrap().creates.contains_key(&name),
        "no second Job was submitted"
    );
}

#[test]
fn ctrl_c_deletes_running_jobs_with_foreground_propagation() {
    let (s, sweep) = setup(Scenario::Forever, "k8scancel", "");
    let id = ids(&s, &sweep)[0].clone();
    let name = format!("mixsweep-{id}");
    let child = mixsweep(&s)
        .arg("run")
        .arg(&sweep)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !s.fake.state.lock().unwrap().jobs.contains_key(&name) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the Job was never created"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let st = s.fake.state.lock().unwrap();
    assert!(
        st.deletes
            .iter()
            .any(|(n, p)| n == &name && p == "Foreground"),
        "{:?}",
        st.deletes
    );
    assert!(!st.jobs.contains_key(&name));
    drop(st);
    assert_eq!(attempt(&s, &id)["status"], "interrupted");
}

#[test]
fn local_storage_is_refused_with_a_fix() {
    let (s, sweep) = setup(Scenario::Success, "k8slocal", "");
    let o = mixsweep(&s)
        .arg("run")
        .arg(&sweep)
        .args(["--storage", "./runs-local"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains("needs storage the pods can reach: s3://"),
        "{out}"
    );
}

#[test]
fn kueue_jobs_are_created_suspended_and_wait_in_the_queue() {
    let (s, sweep) = setup(
        Scenario::KueueQueued,
        "kqueue",
        "grid: {training.lr: [0.1, 0.2, 0.3]}\nmax_parallel: 1\nkubernetes: {queue: research, priority_class: high, schedule_timeout: 1s}\n",
    );
    for job in planned_jobs(&s, &sweep).unwrap() {
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels["kueue.x-k8s.io/queue-name"], "research");
        assert_eq!(labels["kueue.x-k8s.io/priority-class"], "high");
        assert_eq!(job.spec.unwrap().suspend, Some(true));
    }
    let o = run(&s, &sweep);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // queued longer than schedule_timeout without failing: waiting for admission is not unschedulable
    assert!(
        out.contains("queued in Kueue queue research") && out.contains("admitted by Kueue"),
        "{out}"
    );
    // positions from Kueue's visibility API, one per waiting Job
    assert!(
        out.contains("(position 1 in the queue)") && out.contains("(position 3 in the queue)"),
        "{out}"
    );
    // Kueue's quota decides what runs, not max_parallel: all three Jobs were submitted at once
    assert!(out.contains("max_parallel 1 is ignored"), "{out}");
    assert_eq!(s.fake.state.lock().unwrap().most_jobs, 3);
    for id in ids(&s, &sweep) {
        assert_eq!(attempt(&s, &id)["status"], "completed");
    }
}

#[test]
fn a_job_evicted_by_kueue_runs_again_without_using_a_retry() {
    let (s, sweep) = setup(
        Scenario::KueueEvicted,
        "kevict",
        "retries: 0\nkubernetes: {queue: research}\n",
    );
    let o = run(&s, &sweep);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("evicted by Kueue (Preempted: evicted to make room")
            && out.contains("not counted as a retry"),
        "{out}"
    );
    let id = &ids(&s, &sweep)[0];
    assert_eq!(
        s.fake.state.lock().unwrap().creates[&format!("mixsweep-{id}")],
        2
    );
    assert_eq!(attempt(&s, id)["status"], "completed");
}

#[test]
fn a_priority_class_without_a_queue_is_refused() {
    let (s, sweep) = setup(
        Scenario::Success,
        "kprio",
        "kubernetes: {priority_class: high}\n",
    );
    let o = run(&s, &sweep);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("kubernetes.priority_class"),
        "{}",
        text(&o)
    );
}
