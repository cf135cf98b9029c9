//! Kubernetes Job manifests: [`job_manifest`] builds the typed Job of one trial (so every manifest is
//! a valid `k8s-openapi` object), [`manifests`] those `plan --backend kubernetes --manifests` prints.

use super::{LABEL_SWEEP, LABEL_TRIAL};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, EnvVar, HostPathVolumeSource, LocalObjectReference,
    PodSpec, PodTemplateSpec, ResourceRequirements, SecretEnvSource, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mixsweep_sweep::Trial;
use mixsweep_sweep::spec::{GpuSpec, KubernetesSpec, SweepSpec};
use std::collections::BTreeMap;
use std::time::Duration;
/// The Job name of a trial.
pub fn job_name(trial_id: &str) -> String {
    format!("mixsweep-{trial_id}")
}

/// A label value from any text: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    while v.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.remove(0);
    }
    v
}

/// What a Job needs besides the trial.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub image: String,
    /// The storage root as the pods see it.
    pub storage_url: String,
    pub profile: bool,
    pub timeout: Option<Duration>,
}

fn quantity(s: impl Into<String>) -> Quantity {
    Quantity(s.into())
}

/// Where the node's kernel cache folder appears in the runner container.
pub const KERNEL_CACHE_MOUNT: &str = "/mixsweep-kernels";

/// The runner's kernel caches in a pod: the node's folder for this image (`kubernetes.kernel_cache`,
/// a hostPath; the runner copies it in and publishes new kernels) and the cluster's kernel store
/// (`kubernetes.kernel_store`, default `<storage>/kernels` for GPU pods). Returns the host folder and
/// the container's environment.
fn kernel_env(
    k: &KubernetesSpec,
    image: &str,
    storage_url: &str,
    gpu_job: bool,
) -> Result<(Option<String>, Vec<EnvVar>), String> {
    let kernel_cache = match &k.kernel_cache {
        Some(dir) if !dir.starts_with('/') => {
            return Err(format!(
                "kubernetes.kernel_cache: {dir:?} is not an absolute path on the nodes (e.g. /var/cache/mixsweep-kernels)"
            ));
        }
        Some(dir) => {
            let image: String = image
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            Some(format!("{}/{image}", dir.trim_end_matches('/')))
        }
        None => None,
    };
    // The cluster's kernel store: a pod on a fresh node starts with every kernel compiled before.
    let kernel_store = match k.kernel_store.as_deref() {
        Some("off") => None,
        Some(url) if mixsweep_store::is_url(url) => Some(url.trim_end_matches('/').to_string()),
        Some(other) => {
            return Err(format!(
                "kubernetes.kernel_store: {other:?} is not a storage URL (s3://bucket/prefix, gs://bucket/prefix), or `off`"
            ));
        }
        None => gpu_job.then(|| format!("{}/kernels", storage_url.trim_end_matches('/'))),
    };
    let mut env = vec![];
    if kernel_cache.is_some() {
        env.push(EnvVar {
            name: "MIXSWEEP_KERNEL_CACHE".into(),
            value: Some(KERNEL_CACHE_MOUNT.into()),
            ..Default::default()
        });
    }
    if let Some(url) = kernel_store {
        env.push(EnvVar {
            name: "MIXSWEEP_KERNEL_STORE".into(),
            value: Some(url),
            ..Default::default()
        });
    }
    Ok((kernel_cache, env))
}

/// The typed Job of one trial. Errors name the sweep field at fault.
pub fn job_manifest(
    spec: &SweepSpec,
    settings: &JobSettings,
    namespace: &str,
    t: &Trial,
) -> Result<Job, String> {
    let k = &spec.kubernetes;
    let trial_url = format!("{}/trials/{}", settings.storage_url, t.id);
    let args = super::super::container_train_args(
        &trial_url,
        t.train().to_string(),
        t.val().map(str::to_string),
        settings.profile,
        spec.full_eval(),
    );
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    match &spec.gpus {
        Some(GpuSpec::Count(n)) if *n > 0 => {
            limits.insert("nvidia.com/gpu".to_string(), quantity(n.to_string()));
        }
        Some(GpuSpec::Count(_)) | None => {}
        Some(_) => {
            return Err("gpus: with backend: kubernetes, give the number of GPUs per trial".into());
        }
    }
    if let Some(c) = spec.cpus {
        let q = quantity(format!("{}m", (c * 1000.0).round() as i64));
        requests.insert("cpu".to_string(), q.clone());
        limits.insert("cpu".to_string(), q);
    }
    if let Some(m) = &spec.memory {
        let bytes = mixsweep_sweep::spec::parse_memory(m).map_err(|e| format!("memory: {e}"))?;
        let q = quantity(bytes.to_string());
        requests.insert("memory".to_string(), q.clone());
        limits.insert("memory".to_string(), q);
    }
    let tolerations = k
        .tolerations
        .iter()
        .map(|v| serde_json::from_value::<Toleration>(v.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("kubernetes.tolerations: not a Kubernetes toleration: {e}"))?;
    let affinity = k
        .affinity
        .as_ref()
        .map(|v| serde_json::from_value::<Affinity>(v.clone()))
        .transpose()
        .map_err(|e| format!("kubernetes.affinity: not a Kubernetes affinity: {e}"))?;
    let gpu_job = limits.contains_key("nvidia.com/gpu");
    let (kernel_cache, env) = kernel_env(k, &settings.image, &settings.storage_url, gpu_job)?;
    let mut labels = BTreeMap::new();
    labels.insert("app.kubernetes.io/name".to_string(), "mixsweep".to_string());
    labels.insert(LABEL_SWEEP.to_string(), label_value(&spec.name));
    labels.insert(LABEL_TRIAL.to_string(), t.id.to_string());
    let container = Container {
        name: "runner".into(),
        image: Some(settings.image.clone()),
        args: Some(args),
        env_from: k.credentials_secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        resources: Some(ResourceRequirements {
            limits: (!limits.is_empty()).then_some(limits),
            requests: (!requests.is_empty()).then_some(requests),
            ..Default::default()
        }),
        env: (!env.is_empty()).then_some(env),
        volume_mounts: kernel_cache.as_ref().map(|_| {
            vec![VolumeMount {
                name: "kernels".into(),
                mount_path: KERNEL_CACHE_MOUNT.into(),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    let volumes = kernel_cache.map(|path| {
        vec![Volume {
            name: "kernels".into(),
            host_path: Some(HostPathVolumeSource {
                path,
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        }]
    });
    // Kueue: the queue's label on the Job, created suspended; Kueue unsuspends it when admitted.
    let mut job_labels = labels.clone();
    if let Some(q) = &k.queue {
        job_labels.insert(KUEUE_QUEUE.to_string(), q.clone());
        if let Some(p) = &k.priority_class {
            job_labels.insert(KUEUE_PRIORITY.to_string(), p.clone());
        }
    }
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&t.id)),
            namespace: Some(namespace.to_string()),
            labels: Some(job_labels),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(k.backoff_limit.unwrap_or(0)),
            active_deadline_seconds: settings.timeout.map(|d| d.as_secs().max(1) as i64),
            ttl_seconds_after_finished: Some(k.ttl_seconds_after_finished.unwrap_or(3600)),
            suspend: k.queue.is_some().then_some(true),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    node_selector: (!k.node_selector.is_empty()).then(|| k.node_selector.clone()),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    affinity,
                    priority_class_name: k.priority_class_name.clone(),
                    image_pull_secrets: (!k.image_pull_secrets.is_empty()).then(|| {
                        k.image_pull_secrets
                            .iter()
                            .map(|n| LocalObjectReference { name: n.clone() })
                            .collect()
                    }),
                    service_account_name: k.service_account.clone(),
                    volumes,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Kueue's label naming the LocalQueue a Job is submitted to.
pub const KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";
/// Kueue's label naming the WorkloadPriorityClass of a Job.
pub const KUEUE_PRIORITY: &str = "kueue.x-k8s.io/priority-class";

/// The storage root as pods see it: object storage, or an explicit `file://` (a volume the pods mount).
pub fn pod_storage_url(root: &str) -> Result<String, String> {
    if mixsweep_store::is_url(root) {
        Ok(root.to_string())
    } else {
        Err(format!(
            "backend: kubernetes needs storage the pods can reach: s3://bucket/prefix or gs://bucket/prefix (or file:///path on a volume the pods mount), not the local folder {root:?}"
        ))
    }
}

/// The manifests `plan --manifests` prints, one per trial.
pub fn manifests(
    spec: &SweepSpec,
    trials: &[Trial],
    image: Option<String>,
    storage_root: &str,
    namespace: &str,
) -> Result<Vec<Job>, String> {
    let timeout = spec
        .timeout
        .as_deref()
        .map(mixsweep_sweep::spec::parse_duration)
        .transpose()?;
    let settings = JobSettings {
        image: image
            .or_else(|| spec.image.clone())
            .unwrap_or_else(|| "mixsweep-runner:cuda".into()),
        storage_url: pod_storage_url(storage_root)?,
        profile: spec.profile,
        timeout,
    };
    trials
        .iter()
        .map(|t| job_manifest(spec, &settings, namespace, t))
        .collect()
}
