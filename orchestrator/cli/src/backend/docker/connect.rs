//! Connecting the Docker backend: the engine, the image, the kernel cache folder, storage and data
//! binds, and the environment passed to containers.

use super::{DockerBackend, DockerError, GpuMode, workers};
use bollard::Docker;
use std::path::{Path, PathBuf};

fn absolute(p: &str) -> Result<PathBuf, DockerError> {
    let path = Path::new(p);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| DockerError::Setup(e.to_string()))?
            .join(path)
    };
    std::fs::create_dir_all(&abs)
        .map_err(|e| DockerError::Setup(format!("cannot create {}: {e}", abs.display())))?;
    abs.canonicalize()
        .map_err(|e| DockerError::Setup(format!("{}: {e}", abs.display())))
}

impl DockerBackend {
    /// Connects to the engine (negotiating the API version) and resolves the sweep's settings.
    pub async fn connect(
        spec: &mixsweep_sweep::spec::SweepSpec,
        image: Option<String>,
        storage_root: &str,
        keep_failed: bool,
    ) -> Result<DockerBackend, DockerError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| DockerError::Connect(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| DockerError::Connect(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| DockerError::Connect(e.to_string()))?;
        let image = image
            .or_else(|| spec.image.clone())
            .unwrap_or_else(|| "mixsweep-runner:cpu".into());
        let inspected = docker.inspect_image(&image).await.map_err(|e| {
            DockerError::Setup(format!(
                "image {image:?} is not on the engine ({e}); build it (docker/README.md: `bash docker/build-runner-cpu.sh`) or pull it, or set `image:` in the sweep"
            ))
        })?;
        // Compiled kernels depend on the image's MLX build, so the cache is per image.
        let kernel_cache = spec.gpus.as_ref().map(|_| {
            let id = inspected.id.as_deref().unwrap_or(&image);
            let id: String = id
                .trim_start_matches("sha256:")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(16)
                .collect();
            mixsweep_store::default_cache_dir()
                .join("mlx-kernels")
                .join(id)
        });
        if let Some(dir) = &kernel_cache {
            std::fs::create_dir_all(dir).map_err(|e| {
                DockerError::Setup(format!(
                    "cannot create the kernel cache {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let (storage_url, mut binds) =
            if mixsweep_store::is_url(storage_root) && !storage_root.starts_with("file://") {
                (storage_root.to_string(), vec![])
            } else {
                let dir = absolute(storage_root.trim_start_matches("file://"))?;
                let d = dir.display().to_string();
                (format!("file://{d}"), vec![format!("{d}:{d}")])
            };
        let mut env = vec![];
        let mut names: Vec<String> = spec.env.clone();
        // Object-store credentials for remote storage or data, when they are set here.
        let remote = [
            Some(storage_root),
            spec.train.as_deref(),
            spec.val.as_deref(),
        ]
        .into_iter()
        .flatten()
        .chain(spec.variants.iter().filter_map(|v| v.train.as_deref()))
        .any(|u| u.starts_with("s3://") || u.starts_with("gs://"));
        if remote {
            for n in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_REGION",
                "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL",
                "AWS_ALLOW_HTTP",
                "GOOGLE_APPLICATION_CREDENTIALS",
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_KEY",
            ] {
                if !names.iter().any(|x| x == n) {
                    names.push(n.into());
                }
            }
        }
        for n in names {
            if let Ok(v) = std::env::var(&n) {
                // a key file must exist inside the container too: bind it read-only at its path
                if n == "GOOGLE_APPLICATION_CREDENTIALS"
                    && Path::new(&v).is_absolute()
                    && Path::new(&v).is_file()
                {
                    binds.push(format!("{v}:{v}:ro"));
                }
                env.push(format!("{n}={v}"));
            } else if spec.env.contains(&n) {
                eprintln!("warning: env {n} is listed in the sweep but not set here; not passed");
            }
        }
        let backend = DockerBackend {
            docker,
            image,
            gpus: spec.gpus.as_ref().map(|g| {
                if g.ids().is_some() {
                    GpuMode::PerTrial
                } else {
                    GpuMode::All
                }
            }),
            nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
            memory: spec
                .memory
                .as_deref()
                .map(mixsweep_sweep::spec::parse_memory)
                .transpose()
                .map_err(DockerError::Setup)?
                .map(|m| m as i64),
            env,
            keep_failed,
            full_eval: spec.full_eval(),
            storage_url,
            binds,
            kernel_cache,
            workers: workers::Workers::new(spec.workers),
        };
        workers::remove_stale(&backend, &spec.name).await;
        Ok(backend)
    }
}
