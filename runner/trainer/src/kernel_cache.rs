//! A kernel cache shared between runs: `MIXSWEEP_KERNEL_CACHE=DIR` (the runner uses its subfolder
//! `mlx-<version>`: kernels compiled by one MLX version are not valid for another).
//!
//! MLX's CUDA backend compiles every kernel of a train step with NVRTC on first use and keeps the
//! results in `MLX_PTX_CACHE_DIR` (default `/tmp/mlx/<version>/ptx`): minutes on a fresh container or
//! pod, seconds once cached. MLX writes those files in place, so two processes sharing the folder could
//! read each other's half-written kernels. Instead, a run works on a private copy: at start the
//! complete kernels of the shared folder are copied into a private folder that MLX uses; at the end
//! the kernels this run compiled are published back, each file written under a temporary name and
//! renamed, the `.ptx` (which MLX looks for first) after its `.txt` kernel list. Any number of runs
//! can share one folder (a Docker bind mount, a node's hostPath), and each leaves it warmer.

use std::path::{Path, PathBuf};

/// The private copy of a shared kernel folder used by this process.
pub struct KernelCache {
    shared: PathBuf,
    private: PathBuf,
}

/// MLX's cache files of one compiled module: `<name>.ptx`, `<name>.txt` (kernel names), `<name>.cu`.
fn is_complete_module(dir: &Path, ptx: &Path) -> bool {
    ptx.extension().is_some_and(|e| e == "ptx")
        && ptx
            .file_stem()
            .is_some_and(|s| dir.join(s).with_extension("txt").is_file())
}

fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<()> {
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)
}

impl KernelCache {
    /// Copies the complete modules of `shared` (created if missing) into `private`.
    pub fn adopt(shared: &Path, private: &Path) -> std::io::Result<KernelCache> {
        std::fs::create_dir_all(shared)?;
        std::fs::create_dir_all(private)?;
        for entry in std::fs::read_dir(shared)? {
            let path = entry?.path();
            if !is_complete_module(shared, &path) {
                continue;
            }
            for ext in ["txt", "cu", "ptx"] {
                let from = path.with_extension(ext);
                if from.is_file() {
                    std::fs::copy(&from, private.join(from.file_name().unwrap_or_default()))?;
                }
            }
        }
        Ok(KernelCache {
            shared: shared.to_path_buf(),
            private: private.to_path_buf(),
        })
    }

    /// The shared folder.
    pub fn shared_dir(&self) -> &Path {
        &self.shared
    }

    /// The folder MLX should use (`MLX_PTX_CACHE_DIR`).
    pub fn private_dir(&self) -> &Path {
        &self.private
    }

    /// Publishes the modules compiled by this run that the shared folder lacks; returns how many.
    pub fn publish(&self) -> std::io::Result<usize> {
        let mut published = 0;
        for entry in std::fs::read_dir(&self.private)? {
            let path = entry?.path();
            if !is_complete_module(&self.private, &path) {
                continue;
            }
            let name = path.file_name().unwrap_or_default();
            if self.shared.join(name).is_file() {
                continue;
            }
            // the kernel list first: MLX reads a module only when its .ptx exists
            for ext in ["txt", "cu", "ptx"] {
                let from = path.with_extension(ext);
                if from.is_file() {
                    copy_atomically(
                        &from,
                        &self.shared.join(from.file_name().unwrap_or_default()),
                    )?;
                }
            }
            published += 1;
        }
        Ok(published)
    }

    /// Publishes, then removes the private copy.
    pub fn finish(self) -> std::io::Result<usize> {
        let n = self.publish();
        let _ = std::fs::remove_dir_all(&self.private);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(dir: &Path, name: &str, ptx: bool, txt: bool) {
        if ptx {
            std::fs::write(dir.join(format!("{name}.ptx")), format!("ptx of {name}")).unwrap();
        }
        if txt {
            std::fs::write(
                dir.join(format!("{name}.txt")),
                format!("kernels of {name}"),
            )
            .unwrap();
        }
        std::fs::write(dir.join(format!("{name}.cu")), "source").unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn runs_start_from_complete_modules_and_publish_only_new_ones() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        module(&shared, "done", true, true);
        module(&shared, "half_written", true, false); // a .ptx without its kernel list: skipped
        let private = root.path().join("run1");
        let cache = KernelCache::adopt(&shared, &private).unwrap();
        assert_eq!(names(&private), ["done.cu", "done.ptx", "done.txt"]);

        // this run compiles two more modules, one of them still being written
        module(&private, "new", true, true);
        module(&private, "unfinished", false, true);
        assert_eq!(cache.finish().unwrap(), 1);
        assert!(!private.exists());
        assert_eq!(
            std::fs::read_to_string(shared.join("new.ptx")).unwrap(),
            "ptx of new"
        );
        assert!(!shared.join("unfinished.txt").exists());
        assert!(names(&shared).iter().all(|n| !n.ends_with(".partial")));

        // the next run starts with both complete modules and publishes nothing again
        let cache = KernelCache::adopt(&shared, &root.path().join("run2")).unwrap();
        assert!(cache.private_dir().join("new.ptx").is_file());
        assert!(cache.private_dir().join("done.ptx").is_file());
        assert_eq!(cache.finish().unwrap(), 0);
    }
}
