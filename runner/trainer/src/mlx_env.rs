//! MLX's environment for this process, set before any MLX call: the CUDA graph cache size and the
//! kernel caches (see [`crate::kernel_cache`]).
//!
//! * `MLX_CUDA_GRAPH_CACHE_SIZE`: MLX's CUDA backend replays command buffers as CUDA graphs and keeps
//!   100 of them by default; a compiled train step has more segments, so the default is re-captured
//!   every step. Raised to 2000 unless the user set it.
//! * CUDA kernels: with `MIXSWEEP_KERNEL_CACHE` (and no explicit `MLX_PTX_CACHE_DIR`) MLX compiles into
//!   a private copy of that shared folder, published back at exit.
//! * CPU kernels: always a private `TMPDIR` seeded from `<cache>/mlx-<version>/cpu`, where `<cache>`
//!   is `MIXSWEEP_KERNEL_CACHE` or `$MIXSWEEP_CACHE/mlx-kernels/local`, so that concurrent runners
//!   never load each other's half-written libraries.
//! * The CUDA driver's own cache of PTX compiled to machine code (`CUDA_CACHE_PATH`,
//!   `CUDA_CACHE_MAXSIZE`): MLX hands the driver PTX, which it compiles to SASS on every module load
//!   unless its cache has it. Unless set by the user, it lives in `<cache>/cuda-compute-cache` beside
//!   the kernel cache (so a persistent kernel-cache volume keeps it too) with a 4 GiB limit (the
//!   driver's default of 256 MiB holds the kernels of only a few models). The driver locks it itself.

use crate::kernel_cache::{Backend, KernelCache};
use std::path::{Path, PathBuf};

pub struct MlxEnv {
    cuda: Option<KernelCache>,
    cpu: Option<KernelCache>,
    /// The private `TMPDIR` given to MLX (removed at exit).
    private_tmp: Option<PathBuf>,
}

fn set(key: &str, value: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: MlxEnv::prepare runs first thing in main, before any other thread exists.
    unsafe { std::env::set_var(key, value) };
}

impl MlxEnv {
    /// Must run before any MLX call and before any thread starts.
    pub fn prepare() -> MlxEnv {
        if std::env::var_os("MLX_CUDA_GRAPH_CACHE_SIZE").is_none() {
            set("MLX_CUDA_GRAPH_CACHE_SIZE", "2000");
        }
        let version = format!("mlx-{}", mixsweep_mlx::MLX_BUILD_VERSION);
        let explicit = std::env::var_os("MIXSWEEP_KERNEL_CACHE").map(PathBuf::from);
        let tmp = std::env::temp_dir();
        let pid = std::process::id();
        let cuda = explicit.as_ref().and_then(|root| {
            if std::env::var_os("MLX_PTX_CACHE_DIR").is_some() {
                return None;
            }
            let shared = root.join(&version);
            let cache = adopt(
                Backend::Cuda,
                &shared,
                &tmp.join(format!("mixsweep-kernels-{pid}")),
            )?;
            set("MLX_PTX_CACHE_DIR", cache.private_dir());
            Some(cache)
        });
        let root = explicit
            .unwrap_or_else(|| mixsweep_store::default_cache_dir().join("mlx-kernels/local"));
        if std::env::var_os("CUDA_CACHE_PATH").is_none() {
            set("CUDA_CACHE_PATH", root.join("cuda-compute-cache"));
        }
        if std::env::var_os("CUDA_CACHE_MAXSIZE").is_none() {
            set("CUDA_CACHE_MAXSIZE", (4u64 << 30).to_string());
        }
        let private_tmp = tmp.join(format!("mixsweep-mlx-{pid}"));
        // MLX writes CPU kernels to temp_directory_path()/mlx/<version>/cpu
        let kernels = private_tmp
            .join("mlx")
            .join(mixsweep_mlx::MLX_BUILD_VERSION)
            .join("cpu");
        let cpu = adopt(Backend::Cpu, &root.join(&version).join("cpu"), &kernels);
        let private_tmp = cpu.as_ref().map(|_| {
            set("TMPDIR", &private_tmp);
            private_tmp
        });
        MlxEnv {
            cuda,
            cpu,
            private_tmp,
        }
    }

    /// The shared CPU kernel folder when it holds nothing yet: the first training on this machine
    /// compiles MLX's CPU kernels (worth telling the user why step 0 is slow).
    pub fn cpu_cache_cold(&self) -> Option<&Path> {
        self.cpu
            .as_ref()
            .filter(|c| !c.is_warm())
            .map(|c| c.shared_dir())
    }

    /// Publishes the kernels compiled so far (a worker, between trials).
    pub fn publish(&self) {
        for cache in [&self.cuda, &self.cpu].into_iter().flatten() {
            if let Err(e) = cache.publish() {
                eprintln!(
                    "warning: could not add the compiled kernels to {}: {e}",
                    cache.shared_dir().display()
                );
            }
        }
    }

    /// Publishes newly compiled kernels and removes the private folders.
    pub fn finish(self) {
        for cache in [self.cuda, self.cpu].into_iter().flatten() {
            let shared = cache.shared_dir().display().to_string();
            if let Err(e) = cache.finish() {
                eprintln!("warning: could not add the compiled kernels to {shared}: {e}");
            }
        }
        if let Some(dir) = self.private_tmp {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn adopt(backend: Backend, shared: &Path, private: &Path) -> Option<KernelCache> {
    match KernelCache::adopt_for(backend, shared, private) {
        Ok(cache) => Some(cache),
        Err(e) => {
            eprintln!(
                "warning: kernel cache {}: {e}; kernels are compiled without the shared cache",
                shared.display()
            );
            let _ = std::fs::remove_dir_all(private);
            None
        }
    }
}
