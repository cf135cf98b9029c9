//! The cluster-wide tier of the kernel cache: `MIXSWEEP_KERNEL_STORE=<url>` (`s3://`, `gs://`,
//! `file://` or a folder) keeps compiled kernels where every machine can reach them, so a fresh
//! container or pod on a fresh node starts with the kernels that any earlier trial compiled instead
//! of compiling them again (NVRTC: minutes for a recurrent model on a fresh machine).
//!
//! The store stands behind the node's shared folder ([`crate::kernel_cache`]), its *mirror*: at start
//! the runner downloads the objects the mirror lacks ([`KernelStore::fetch`]; each file written under
//! a temporary name and renamed, so a reader never sees half of one), and the mirror feeds the run's
//! private copy as before; after the run publishes new kernels to the mirror, it uploads the complete
//! units the store lacks ([`KernelStore::push`]), a unit's files in order, the one MLX looks for last
//! uploaded last. A unit only partly in the store (an upload cut short), or only partly downloaded
//! yet, is never adopted: the shared folder hands out only units whose kernel list and binary are
//! both there.
//!
//! Kernels are only valid for the MLX version and the machine code they were compiled for, so the
//! store keys them `mlx-<version>/<platform>/...`: `cuda-sm_90` (the GPU's compute capability) or
//! `cpu-x86_64-linux`. Failures of the store are warnings: the run compiles what it cannot download.

use crate::kernel_cache::{Backend, complete_units, replace_atomically, shareable};
use futures::{StreamExt, TryStreamExt};
use mixsweep_store::{Store, StoreError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Downloads and uploads at once.
const CONCURRENCY: usize = 16;

/// One platform's kernels in the store, and the local folder that mirrors them.
pub struct KernelStore {
    store: Store,
    /// `mlx-<version>/<platform>`.
    prefix: String,
    backend: Backend,
    mirror: PathBuf,
    /// Relative paths of the files the store holds (listed at fetch, extended by pushes).
    known: HashSet<String>,
}

/// What [`KernelStore::fetch`] downloaded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fetched {
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// `cuda-<arch>` or `cpu-<cpu>-<os>`: what a compiled kernel is valid for (with the MLX version).
pub fn platform(backend: Backend, gpu_arch: Option<&str>) -> Option<String> {
    match backend {
        Backend::Cuda => gpu_arch.map(|a| format!("cuda-{a}")),
        Backend::Cpu => Some(format!(
            "cpu-{}-{}",
            std::env::consts::ARCH,
            std::env::consts::OS
        )),
    }
}

/// A relative path as an object key, if every part is a plain file name that object stores keep
/// as it is (MLX's kernel names are; anything else is left to be compiled again).
fn key_of(rel: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = rel.iter().map(|p| p.to_str()).collect();
    let parts = parts?;
    let plain = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.+=,@".contains(&b))
    };
    parts.iter().all(plain).then(|| parts.join("/"))
}

impl KernelStore {
    /// The store at `url` for kernels of MLX `version` (`mlx-0.32.2`) on `platform`, mirrored in
    /// the local shared folder `mirror`.
    pub fn open(
        url: &str,
        version: &str,
        platform: &str,
        backend: Backend,
        mirror: &Path,
    ) -> Result<KernelStore, StoreError> {
        Ok(KernelStore {
            store: Store::open(url)?,
            prefix: format!("{version}/{platform}"),
            backend,
            mirror: mirror.to_path_buf(),
            known: HashSet::new(),
        })
    }

    /// Where this platform's kernels live, for messages.
    pub fn url(&self) -> String {
        self.store.url_of(&self.prefix)
    }

    /// Lists the store and downloads every file the mirror lacks.
    pub async fn fetch(&mut self) -> Result<Fetched, StoreError> {
        let mirror = &self.mirror;
        let started = std::time::Instant::now();
        let listed = self.store.list_all(&self.prefix).await?;
        let strip = format!("{}/", self.prefix);
        let mut wanted = vec![];
        for object in listed {
            let Some(rel) = object.key.strip_prefix(&strip) else {
                continue;
            };
            if key_of(Path::new(rel)).as_deref() != Some(rel) {
                continue;
            }
            self.known.insert(rel.to_string());
            if !mirror.join(rel).is_file() {
                wanted.push((object.key.clone(), mirror.join(rel), object.size));
            }
        }
        let store = &self.store;
        let files = wanted.len();
        let bytes = wanted.iter().map(|w| w.2).sum();
        futures::stream::iter(wanted)
            .map(|(key, to, _)| async move {
                let Some(data) = store.get(&key).await? else {
                    return Ok(()); // deleted since the listing
                };
                replace_atomically(&to, |tmp| std::fs::write(tmp, &data))
                    .map_err(|e| StoreError::Local(format!("{}: {e}", to.display())))
            })
            .buffered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(Fetched {
            files,
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Uploads the complete, shareable units of the mirror that the store lacks; returns how many.
    pub async fn push(&mut self) -> Result<usize, StoreError> {
        let mirror = &self.mirror;
        let units = complete_units(self.backend, mirror)
            .map_err(|e| StoreError::Local(format!("{}: {e}", mirror.display())))?;
        let mut new = vec![];
        for unit in units {
            let keys: Option<Vec<String>> = unit.iter().map(|rel| key_of(rel)).collect();
            let Some(keys) = keys else { continue };
            let last = keys.last().expect("a unit has files");
            if self.known.contains(last) || !shareable(self.backend, mirror, &unit) {
                continue;
            }
            new.push((unit, keys));
        }
        let (store, prefix) = (&self.store, &self.prefix);
        let pushed = futures::stream::iter(&new)
            .map(|(unit, keys)| async move {
                // in order: a reader adopts a unit only once its last file is there
                for (rel, key) in unit.iter().zip(keys) {
                    store
                        .put_file(&format!("{prefix}/{key}"), &mirror.join(rel))
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await;
        pushed?;
        for (_, keys) in &new {
            self.known.extend(keys.iter().cloned());
        }
        Ok(new.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(dir: &Path, name: &str) {
        std::fs::create_dir_all(dir).unwrap();
        for ext in ["txt", "cu", "ptx"] {
            std::fs::write(
                dir.join(format!("{name}.{ext}")),
                format!("{ext} of {name}"),
            )
            .unwrap();
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = walkdir::WalkDir::new(dir)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_fresh_machine_gets_every_unit_another_machine_pushed() {
        let root = tempfile::tempdir().unwrap();
        let url = format!("file://{}", root.path().join("store").display());
        // machine A compiled two units, one of them under a nested folder (a long MLX name)
        let a = root.path().join("a");
        unit(&a, "gemm_bf16");
        unit(&a.join("A".repeat(200)), "tail");
        std::fs::write(a.join("half.txt"), "a unit without its .ptx is not pushed").unwrap();
        let mut store =
            KernelStore::open(&url, "mlx-0.0", "cuda-sm_90", Backend::Cuda, &a).unwrap();
        let fetched = mixsweep_store::block_on(store.fetch()).unwrap();
        assert_eq!(fetched.files, 0);
        assert_eq!(mixsweep_store::block_on(store.push()).unwrap(), 2);
        assert_eq!(mixsweep_store::block_on(store.push()).unwrap(), 0);

        // machine B starts empty and ends with exactly A's complete units
        let b = root.path().join("b");
        let mut store =
            KernelStore::open(&url, "mlx-0.0", "cuda-sm_90", Backend::Cuda, &b).unwrap();
        let fetched = mixsweep_store::block_on(store.fetch()).unwrap();
        assert_eq!(fetched.files, 6);
        let mut expected = files(&a);
        expected.retain(|f| f != "half.txt");
        assert_eq!(files(&b), expected);
        assert_eq!(
            std::fs::read_to_string(b.join("A".repeat(200)).join("tail.ptx")).unwrap(),
            "ptx of tail"
        );
        assert_eq!(complete_units(Backend::Cuda, &b).unwrap().len(), 2);
        // what B has is what the store has: nothing to push, nothing more to fetch
        assert_eq!(mixsweep_store::block_on(store.push()).unwrap(), 0);
        let again = mixsweep_store::block_on(store.fetch()).unwrap();
        assert_eq!(again.files, 0);

        // another GPU architecture or MLX version sees none of it
        let c = root.path().join("c");
        for (version, platform) in [("mlx-0.0", "cuda-sm_80"), ("mlx-0.1", "cuda-sm_90")] {
            let mut other = KernelStore::open(&url, version, platform, Backend::Cuda, &c).unwrap();
            assert_eq!(mixsweep_store::block_on(other.fetch()).unwrap().files, 0);
        }
    }

    #[test]
    fn a_unit_cut_short_in_the_store_is_never_adopted() {
        let root = tempfile::tempdir().unwrap();
        let store_dir = root.path().join("store");
        let url = store_dir.display().to_string();
        let a = root.path().join("a");
        unit(&a, "k");
        let mut store =
            KernelStore::open(&url, "mlx-0.0", "cuda-sm_90", Backend::Cuda, &a).unwrap();
        mixsweep_store::block_on(store.push()).unwrap();
        // an upload that stopped before the unit's last file
        std::fs::remove_file(store_dir.join("mlx-0.0/cuda-sm_90/k.ptx")).unwrap();
        let b = root.path().join("b");
        let mut store =
            KernelStore::open(&url, "mlx-0.0", "cuda-sm_90", Backend::Cuda, &b).unwrap();
        mixsweep_store::block_on(store.fetch()).unwrap();
        assert!(b.join("k.txt").is_file());
        assert!(complete_units(Backend::Cuda, &b).unwrap().is_empty());
        // B compiles it and completes the store's copy
        unit(&b, "k");
        assert_eq!(mixsweep_store::block_on(store.push()).unwrap(), 1);
        assert!(store_dir.join("mlx-0.0/cuda-sm_90/k.ptx").is_file());
    }

    #[test]
    fn only_plain_names_become_keys() {
        assert_eq!(
            key_of(Path::new("ab_c/d-1.ptx")).as_deref(),
            Some("ab_c/d-1.ptx")
        );
        for odd in ["a b.ptx", "a%20.ptx", "x/../y.ptx", "k<float>.ptx", "ä.ptx"] {
            assert_eq!(key_of(Path::new(odd)), None, "{odd}");
        }
        assert_eq!(
            platform(Backend::Cuda, Some("sm_90")).as_deref(),
            Some("cuda-sm_90")
        );
        assert_eq!(platform(Backend::Cuda, None), None);
        assert!(platform(Backend::Cpu, None).unwrap().starts_with("cpu-"));
    }
}
