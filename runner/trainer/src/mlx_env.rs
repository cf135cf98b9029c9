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
//! * `MIXSWEEP_KERNEL_STORE=<url>`: object storage behind the shared folders ([`crate::kernel_store`]):
//!   what they lack is downloaded before MLX starts, what this process compiled is uploaded at exit
//!   (and by a worker between trials). Without `MIXSWEEP_KERNEL_CACHE` the shared folder is then
//!   `$MIXSWEEP_CACHE/mlx-kernels/local`.

use crate::kernel_cache::{Backend, KernelCache};
use crate::kernel_store::{Fetched, KernelStore, platform};
use std::cell::Cell;
use std::path::{Path, PathBuf};

pub struct MlxEnv {
    cuda: Option<KernelCache>,
    cpu: Option<KernelCache>,
    /// The store behind each shared folder (`MIXSWEEP_KERNEL_STORE`), CUDA's then the CPU's.
    stores: Vec<KernelStore>,
    /// The private `TMPDIR` given to MLX (removed at exit).
    private_tmp: Option<PathBuf>,
    /// What the stores sent at start, until the first run takes it ([`MlxEnv::take_fetched`]).
    fetched: Cell<Option<Fetched>>,
}

fn set(key: &str, value: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: MlxEnv::prepare sets every variable first thing in main, before any other thread
    // exists (the CUDA driver and the store's client start threads only after).
    unsafe { std::env::set_var(key, value) };
}

impl MlxEnv {
    /// Must run before any MLX call and before any thread starts.
    pub fn prepare() -> MlxEnv {
        if std::env::var_os("MLX_CUDA_GRAPH_CACHE_SIZE").is_none() {
            set("MLX_CUDA_GRAPH_CACHE_SIZE", "2000");
        }
        let version = format!("mlx-{}", mixsweep_mlx::MLX_BUILD_VERSION);
        let store_url = std::env::var("MIXSWEEP_KERNEL_STORE")
            .ok()
            .filter(|u| !u.is_empty());
        let explicit = std::env::var_os("MIXSWEEP_KERNEL_CACHE").map(PathBuf::from);
        let root = explicit
            .clone()
            .unwrap_or_else(|| mixsweep_store::default_cache_dir().join("mlx-kernels/local"));
        let tmp = std::env::temp_dir();
        let pid = std::process::id();
        // every variable first: the private folders' names do not depend on what is adopted
        let cuda_private = (explicit.is_some() || store_url.is_some())
            && std::env::var_os("MLX_PTX_CACHE_DIR").is_none();
        let cuda_private = cuda_private.then(|| tmp.join(format!("mixsweep-kernels-{pid}")));
        if let Some(dir) = &cuda_private {
            set("MLX_PTX_CACHE_DIR", dir);
        }
        if std::env::var_os("CUDA_CACHE_PATH").is_none() {
            set("CUDA_CACHE_PATH", root.join("cuda-compute-cache"));
        }
        if std::env::var_os("CUDA_CACHE_MAXSIZE").is_none() {
            set("CUDA_CACHE_MAXSIZE", (4u64 << 30).to_string());
        }
        let private_tmp = tmp.join(format!("mixsweep-mlx-{pid}"));
        let private_tmp = std::fs::create_dir_all(&private_tmp).is_ok().then(|| {
            set("TMPDIR", &private_tmp);
            private_tmp
        });
        // then the store (its client and the CUDA driver start threads) and the private copies
        let mut stores = vec![];
        let mut fetched = None;
        let cuda = cuda_private.and_then(|private| {
            let shared = root.join(&version);
            if let Some(url) = &store_url {
                let arch = mixsweep_mlx::kernels::gpu_arch();
                let platform = platform(Backend::Cuda, arch.as_deref());
                stores.extend(fetch(
                    url,
                    &version,
                    Backend::Cuda,
                    platform,
                    &shared,
                    &mut fetched,
                ));
            }
            adopt(Backend::Cuda, &shared, &private)
        });
        // MLX writes CPU kernels to temp_directory_path()/mlx/<version>/cpu
        let cpu = private_tmp.as_ref().and_then(|private_tmp| {
            let shared = root.join(&version).join("cpu");
            if let Some(url) = &store_url {
                let platform = platform(Backend::Cpu, None);
                stores.extend(fetch(
                    url,
                    &version,
                    Backend::Cpu,
                    platform,
                    &shared,
                    &mut fetched,
                ));
            }
            let kernels = private_tmp
                .join("mlx")
                .join(mixsweep_mlx::MLX_BUILD_VERSION)
                .join("cpu");
            adopt(Backend::Cpu, &shared, &kernels)
        });
        MlxEnv {
            cuda,
            cpu,
            stores,
            private_tmp,
            fetched: Cell::new(fetched),
        }
    }

    /// What the kernel store sent at process start; `None` after the first call (a worker's later
    /// trials) and without a store.
    pub fn take_fetched(&self) -> Option<Fetched> {
        self.fetched.take()
    }

    /// The shared CPU kernel folder when it holds nothing yet: the first training on this machine
    /// compiles MLX's CPU kernels (worth telling the user why step 0 is slow).
    pub fn cpu_cache_cold(&self) -> Option<&Path> {
        self.cpu
            .as_ref()
            .filter(|c| !c.is_warm())
            .map(|c| c.shared_dir())
    }

    /// Publishes the kernels compiled so far (a worker, between trials), to the shared folders and
    /// the kernel store.
    pub fn publish(&mut self) {
        for cache in [&self.cuda, &self.cpu].into_iter().flatten() {
            if let Err(e) = cache.publish() {
                eprintln!(
                    "warning: could not add the compiled kernels to {}: {e}",
                    cache.shared_dir().display()
                );
            }
        }
        self.push();
    }

    /// Uploads the shared folders' kernels that the store lacks.
    fn push(&mut self) {
        for store in &mut self.stores {
            if let Err(e) = mixsweep_store::block_on(store.push()) {
                eprintln!(
                    "warning: could not add the compiled kernels to {}: {e}",
                    store.url()
                );
            }
        }
    }

    /// Publishes newly compiled kernels (shared folders, then the store) and removes the private
    /// folders.
    pub fn finish(mut self) {
        for cache in [self.cuda.take(), self.cpu.take()].into_iter().flatten() {
            let shared = cache.shared_dir().display().to_string();
            if let Err(e) = cache.finish() {
                eprintln!("warning: could not add the compiled kernels to {shared}: {e}");
            }
        }
        self.push();
        if let Some(dir) = self.private_tmp {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Opens the store for `backend`'s kernels on `platform` and downloads what `shared` lacks, adding
/// to `total`; `None` (with a warning) when the store cannot be read, or without a platform (CUDA
/// without a GPU).
fn fetch(
    url: &str,
    version: &str,
    backend: Backend,
    platform: Option<String>,
    shared: &Path,
    total: &mut Option<Fetched>,
) -> Option<KernelStore> {
    let platform = platform?;
    let fetched =
        KernelStore::open(url, version, &platform, backend, shared).and_then(|mut store| {
            let fetched = mixsweep_store::block_on(store.fetch())?;
            Ok((store, fetched))
        });
    match fetched {
        Ok((store, fetched)) => {
            if fetched.files > 0 {
                eprintln!(
                    "kernel store {}: {} files ({}) in {:.1} s",
                    store.url(),
                    fetched.files,
                    bytesize::ByteSize(fetched.bytes),
                    fetched.seconds
                );
            }
            let t = total.get_or_insert_with(Fetched::default);
            t.files += fetched.files;
            t.bytes += fetched.bytes;
            t.seconds += fetched.seconds;
            Some(store)
        }
        Err(e) => {
            eprintln!(
                "warning: kernel store {url}: {e}; kernels not there are compiled and not shared"
            );
            None
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
