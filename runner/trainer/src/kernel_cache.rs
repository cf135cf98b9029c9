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
//!
//! The folder is a tree: MLX splits a module name longer than a file name may be (fused kernels are
//! named after their whole op chain, often over 255 bytes) into nested folders. Units are found, copied
//! and published by their path relative to the cache root; a cache that only looked at the top level
//! compiled every long-named kernel again in every process (~8 s of each GPU start-up, 2026-12-01).
//!
//! MLX's CPU backend does the same with fused elementwise kernels, compiled with the system C++
//! compiler into `$TMPDIR/mlx/<version>/cpu/lib<kernel>.so` and loaded if that file exists: a second
//! process could load a library the first is still writing ("file too short"). The same private-copy
//! scheme fixes it ([`Backend::Cpu`]): the runner's `TMPDIR` points at a private folder seeded from the
//! shared `<cache>/mlx-<version>/cpu`, and new libraries are published by rename.
//!
//! A library is shared only when it is whole ([`is_whole_library`]): a compiler killed mid-write (a
//! terminal's Ctrl-C reaches MLX's `g++` child too) leaves a prefix of it in the private folder, and
//! one such file published once made every later process on the machine fail to load it (CI,
//! 2026-12-02). Adopting drops such files from the shared folder, so they are compiled again.

use std::path::{Path, PathBuf};

/// Which of MLX's compilers a cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// NVRTC modules: `<name>.ptx`, `<name>.txt` (kernel names), `<name>.cu`.
    Cuda,
    /// Shared libraries `lib<kernel>.so` (`.dylib` on macOS).
    Cpu,
}

/// The private copy of a shared kernel folder used by this process.
pub struct KernelCache {
    backend: Backend,
    shared: PathBuf,
    private: PathBuf,
}

/// The files of each complete unit under `dir` (any depth), in publishing order (the file MLX
/// looks for last), as paths relative to `dir`.
pub(crate) fn complete_units(backend: Backend, dir: &Path) -> std::io::Result<Vec<Vec<PathBuf>>> {
    let mut units = vec![];
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(".partial-") {
            continue;
        }
        let relative = |p: PathBuf| p.strip_prefix(dir).map(Path::to_path_buf).ok();
        match backend {
            Backend::Cuda => {
                if ext == "ptx" && path.with_extension("txt").is_file() {
                    let files = ["txt", "cu", "ptx"]
                        .iter()
                        .map(|e| path.with_extension(e))
                        .filter(|p| p.is_file())
                        .filter_map(relative)
                        .collect();
                    units.push(files);
                }
            }
            Backend::Cpu => {
                if matches!(ext, "so" | "dylib") {
                    units.extend(relative(path.to_path_buf()).map(|p| vec![p]));
                }
            }
        }
    }
    Ok(units)
}

/// Whether `path` holds a whole shared library: its headers and section table parse (linkers write
/// the section table last) and every segment's bytes lie inside the file, which is what the dynamic
/// loader checks before it says "file too short". Reads only the headers.
pub fn is_whole_library(path: &Path) -> bool {
    use object::{Object, ObjectSegment};
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let data = object::ReadCache::new(file);
    let Ok(library) = object::File::parse(&data) else {
        return false;
    };
    library.segments().all(|s| {
        let (offset, size) = s.file_range();
        offset.checked_add(size).is_some_and(|end| end <= len)
    })
}

/// Whether a unit may be shared: CUDA units are complete once listed; a CPU library must be whole.
pub(crate) fn shareable(backend: Backend, unit_root: &Path, unit: &[PathBuf]) -> bool {
    match backend {
        Backend::Cuda => true,
        Backend::Cpu => unit
            .iter()
            .all(|rel| is_whole_library(&unit_root.join(rel))),
    }
}

/// Writes `to` through `write` into a temporary name beside it, then renames it: a reader sees the
/// whole file or none (the short temporary name: kernel names can be near the 255-byte limit; unit
/// scans skip `.partial-*`).
pub(crate) fn replace_atomically(
    to: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = to.with_file_name(format!(".partial-{}-{n}", std::process::id()));
    write(&tmp)?;
    std::fs::rename(&tmp, to)
}

fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<()> {
    replace_atomically(to, |tmp| std::fs::copy(from, tmp).map(|_| ()))
}

impl KernelCache {
    /// Copies the complete CUDA modules of `shared` (created if missing) into `private`.
    pub fn adopt(shared: &Path, private: &Path) -> std::io::Result<KernelCache> {
        Self::adopt_for(Backend::Cuda, shared, private)
    }

    /// Copies (or hard-links) the complete units of `shared` (created if missing) into `private`.
    pub fn adopt_for(
        backend: Backend,
        shared: &Path,
        private: &Path,
    ) -> std::io::Result<KernelCache> {
        std::fs::create_dir_all(shared)?;
        std::fs::create_dir_all(private)?;
        for unit in complete_units(backend, shared)? {
            if !shareable(backend, shared, &unit) {
                // a broken file another process published: drop it so that it is compiled again
                for rel in &unit {
                    let path = shared.join(rel);
                    eprintln!(
                        "warning: kernel cache: {} is not a whole library; removed (it is compiled again)",
                        path.display()
                    );
                    let _ = std::fs::remove_file(path);
                }
                continue;
            }
            for rel in unit {
                let (from, to) = (shared.join(&rel), private.join(&rel));
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // published files are never rewritten in place, so a link is as good as a copy
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to)?;
                }
            }
        }
        Ok(KernelCache {
            backend,
            shared: shared.to_path_buf(),
            private: private.to_path_buf(),
        })
    }

    /// Whether the private folder holds any compiled unit (false: the first kernels of this
    /// machine are about to be compiled).
    pub fn is_warm(&self) -> bool {
        complete_units(self.backend, &self.private).is_ok_and(|u| !u.is_empty())
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
        for unit in complete_units(self.backend, &self.private)? {
            let last = unit.last().expect("a unit has files");
            // already shared, or cut short here (this process's compiler was killed)
            if self.shared.join(last).is_file() || !shareable(self.backend, &self.private, &unit) {
                continue;
            }
            // in order: MLX reads a unit only once its last file exists
            for rel in &unit {
                copy_atomically(&self.private.join(rel), &self.shared.join(rel))?;
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
        assert!(names(&shared).iter().all(|n| !n.starts_with(".partial")));

        // the next run starts with both complete modules and publishes nothing again
        let cache = KernelCache::adopt(&shared, &root.path().join("run2")).unwrap();
        assert!(cache.private_dir().join("new.ptx").is_file());
        assert!(cache.private_dir().join("done.ptx").is_file());
        assert_eq!(cache.finish().unwrap(), 0);
    }

    #[test]
    fn long_module_names_split_into_folders_are_shared_too() {
        // MLX's CUDA backend writes a module whose name is too long for one file name as
        // `<first part>/<rest>.ptx`; such modules must survive from one run to the next
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        let private = root.path().join("run1");
        let cache = KernelCache::adopt(&shared, &private).unwrap();
        let head = "A".repeat(240);
        let nested = private.join(&head).join("B".repeat(100));
        std::fs::create_dir_all(&nested).unwrap();
        module(&nested, "tail", true, true);
        module(&private, "short", true, true);
        assert_eq!(cache.finish().unwrap(), 2);
        let published = shared.join(&head).join("B".repeat(100)).join("tail.ptx");
        assert_eq!(std::fs::read_to_string(&published).unwrap(), "ptx of tail");

        let cache = KernelCache::adopt(&shared, &root.path().join("run2")).unwrap();
        let adopted = cache
            .private_dir()
            .join(&head)
            .join("B".repeat(100))
            .join("tail.txt");
        assert!(
            adopted.is_file(),
            "the next run starts with the nested module"
        );
        assert!(cache.is_warm());
        assert_eq!(cache.finish().unwrap(), 0);
    }

    /// A real shared library, built the way MLX builds its CPU kernels (the system C++ compiler).
    fn library(dir: &Path) -> Vec<u8> {
        let src = dir.join("k.cpp");
        std::fs::write(&src, "extern \"C\" float k(float x) { return 2.0f * x; }\n").unwrap();
        let out = dir.join("built.so");
        let status = std::process::Command::new("c++")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("a C++ compiler (MLX's CPU backend needs one too)");
        assert!(status.success());
        std::fs::read(&out).unwrap()
    }

    #[test]
    fn a_library_cut_short_is_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = library(dir.path());
        let path = dir.path().join("libk.so");
        std::fs::write(&path, &bytes).unwrap();
        assert!(is_whole_library(&path));
        for cut in [0, 4, 64, bytes.len() / 4, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(!is_whole_library(&path), "cut at {cut} of {}", bytes.len());
        }
        std::fs::write(&path, b"not a library at all").unwrap();
        assert!(!is_whole_library(&path));
    }

    #[test]
    fn cpu_libraries_are_shared_only_when_whole() {
        let root = tempfile::tempdir().unwrap();
        let whole = library(root.path());
        let shared = root.path().join("shared");
        let private = root.path().join("run1");
        let cache = KernelCache::adopt_for(Backend::Cpu, &shared, &private).unwrap();
        assert!(!cache.is_warm());
        std::fs::write(private.join("libk1.so"), &whole).unwrap();
        std::fs::write(private.join("k1.cpp"), b"source").unwrap();
        // the compiler was killed while writing this one
        std::fs::write(private.join("libcut.so"), &whole[..whole.len() / 2]).unwrap();
        // MLX clips kernel file names near the 255-byte limit: publishing must not make them longer
        let long = format!("lib{}.so", "k".repeat(245));
        std::fs::write(private.join(&long), &whole).unwrap();
        assert_eq!(cache.finish().unwrap(), 2);
        assert_eq!(names(&shared), ["libk1.so", long.as_str()]);
        let cache =
            KernelCache::adopt_for(Backend::Cpu, &shared, &root.path().join("run2")).unwrap();
        assert!(cache.is_warm());
        assert_eq!(cache.finish().unwrap(), 0);
    }

    #[test]
    fn a_broken_library_in_the_shared_folder_is_dropped_and_compiled_again() {
        // an earlier version published libraries without checking them: one cut short there made
        // every later process fail with "file too short"
        let root = tempfile::tempdir().unwrap();
        let whole = library(root.path());
        let shared = root.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join("libok.so"), &whole).unwrap();
        std::fs::write(shared.join("libcut.so"), &whole[..whole.len() - 100]).unwrap();
        let private = root.path().join("run1");
        let cache = KernelCache::adopt_for(Backend::Cpu, &shared, &private).unwrap();
        assert_eq!(names(&private), ["libok.so"]);
        assert_eq!(names(&shared), ["libok.so"]);
        // this run compiles it again, whole, and shares it
        std::fs::write(private.join("libcut.so"), &whole).unwrap();
        assert_eq!(cache.finish().unwrap(), 1);
        assert!(is_whole_library(&shared.join("libcut.so")));
    }
}
