//! A fast CPU BLAS under MLX on Linux.
//!
//! MLX's Linux CPU wheel (`mlx-cpu`) links netlib's reference BLAS (`mlx_cpu.libs/libblas-<hash>.so`):
//! a textbook single-threaded `sgemm` that makes CPU training ~5x slower than OpenBLAS does
//! (BENCHMARKS.md "CPU BLAS"). A library named in `LD_PRELOAD` comes first in the dynamic linker's
//! symbol lookup, so MLX's `cblas_sgemm` calls land in it instead. The runner therefore re-executes
//! itself once, first thing in `main`, with an optimised BLAS preloaded when
//! * MLX's `cblas_sgemm` resolves to a reference BLAS (a `libblas*` whose path does not say `openblas`),
//! * `MIXSWEEP_BLAS` is not `reference`: unset picks the system's OpenBLAS (`libopenblas.so.0` in
//!   the usual library folders, e.g. Debian's `libopenblas0-pthread`), a path names the library,
//! * and this process is not that re-execution already.
//!
//! The re-executed process restores `LD_PRELOAD` for its own children (MLX's kernel compiler) and
//! keeps `OPENBLAS_NUM_THREADS` at 1 unless set (trials often share a machine's cores). Results are
//! the same up to float32 rounding of the matmuls. `mixsweep-runner smoke` names the library that
//! serves `cblas_sgemm`.

use std::path::{Path, PathBuf};

/// `MIXSWEEP_BLAS`: `reference` keeps MLX's own BLAS, a path picks the library to preload.
pub const SETTING: &str = "MIXSWEEP_BLAS";
/// Set for the re-executed process: the library it preloads, and `LD_PRELOAD` as it was before.
const PRELOADED: &str = "MIXSWEEP_BLAS_PRELOADED";
const PRELOAD_WAS: &str = "MIXSWEEP_BLAS_LD_PRELOAD_WAS";

/// Where distributions put OpenBLAS (`libopenblas.so.0`), searched in order (the same list as
/// `scripts/ensure-openblas.sh`, which the CPU image's build script asks).
const CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
];

/// Whether the library file at `path` is a reference BLAS: named `libblas*`, and its path does not
/// say `openblas` (Debian's `libblas.so.3` alternative may be OpenBLAS's).
pub fn is_reference_blas(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libblas") && !path.contains("openblas")
}

/// The first of the usual places of OpenBLAS that `exists` accepts.
fn first_candidate(exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| exists(p))
}

/// The system's OpenBLAS (the first of the usual places that has it).
pub fn system_openblas() -> Option<PathBuf> {
    first_candidate(Path::is_file)
}

/// The library to preload, if any: `setting` is `MIXSWEEP_BLAS`, `provider` the file that serves
/// `cblas_sgemm` now ([`cblas_provider`]), `exists` a file test. An explicit path that does not exist
/// is an error.
pub fn choose(
    setting: Option<&str>,
    provider: Option<&str>,
    exists: impl Fn(&Path) -> bool,
) -> Result<Option<PathBuf>, String> {
    let reference = provider.is_some_and(is_reference_blas);
    match setting.map(str::trim) {
        Some("reference") => return Ok(None),
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if !exists(&path) {
                return Err(format!(
                    "{SETTING}={} does not exist (a BLAS library such as libopenblas.so.0, or \
                     `reference` for MLX's own)",
                    path.display()
                ));
            }
            return Ok(reference.then_some(path));
        }
        _ => {}
    }
    if !reference {
        return Ok(None);
    }
    Ok(first_candidate(exists))
}

/// First thing in `main`, before any thread: re-executes this program with a fast BLAS preloaded
/// (see the module comment), or, in the re-executed process, restores `LD_PRELOAD` for children.
/// Returns only when no re-execution happens; problems are warnings, never fatal.
pub fn preload_fast_blas() {
    if !cfg!(target_os = "linux") {
        return;
    }
    if std::env::var_os(PRELOADED).is_some() {
        restore_preload();
        return;
    }
    let setting = std::env::var(SETTING).ok();
    match choose(
        setting.as_deref(),
        cblas_provider().as_deref(),
        Path::is_file,
    ) {
        Ok(Some(lib)) => {
            let err = reexec(&lib);
            eprintln!(
                "warning: could not restart with {} preloaded ({err})",
                lib.display()
            );
        }
        Ok(None) => {}
        Err(e) => eprintln!("warning: {e}; keeping MLX's own BLAS"),
    }
}

fn set(key: &str, value: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe { std::env::set_var(key, value) };
}

fn remove(key: &str) {
    // SAFETY: as in `set`.
    unsafe { std::env::remove_var(key) };
}

/// In the re-executed process: `LD_PRELOAD` as the user had it (MLX's compiler runs as a child).
fn restore_preload() {
    match std::env::var_os(PRELOAD_WAS) {
        Some(was) if !was.is_empty() => set("LD_PRELOAD", was),
        _ => remove("LD_PRELOAD"),
    }
    remove(PRELOAD_WAS);
    remove(PRELOADED);
}

#[cfg(unix)]
fn reexec(lib: &Path) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let was = std::env::var_os("LD_PRELOAD").unwrap_or_default();
    let mut preload = lib.as_os_str().to_owned();
    if !was.is_empty() {
        preload.push(":");
        preload.push(&was);
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg0(argv0)
        .args(args)
        .env("LD_PRELOAD", preload)
        .env(PRELOADED, lib)
        .env(PRELOAD_WAS, was);
    if std::env::var_os("OPENBLAS_NUM_THREADS").is_none() {
        cmd.env("OPENBLAS_NUM_THREADS", "1");
    }
    cmd.exec()
}

#[cfg(not(unix))]
fn reexec(_: &Path) -> std::io::Error {
    std::io::Error::other("not supported on this platform")
}

/// The file of the library that serves `cblas_sgemm` in this process (what MLX's CPU matmuls
/// call), if any.
pub fn cblas_provider() -> Option<String> {
    // SAFETY: dlsym/dladdr only read the loader's tables; the name is a NUL-terminated literal.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"cblas_sgemm".as_ptr());
        if sym.is_null() {
            return None;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(sym, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHEEL: &str = "/py/site-packages/mlx/lib/../../mlx_cpu.libs/libblas-bd8a282c.so.3.10.0";
    const DEBIAN_OPENBLAS: &str = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3";

    #[test]
    fn reference_blas_is_recognised_by_its_file() {
        assert!(is_reference_blas(WHEEL));
        assert!(is_reference_blas(
            "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"
        ));
        assert!(!is_reference_blas(DEBIAN_OPENBLAS));
        assert!(!is_reference_blas(
            "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"
        ));
        assert!(!is_reference_blas("/usr/lib/libmlx.so"));
    }

    #[test]
    fn the_setting_and_the_system_pick_the_library() {
        let sys = PathBuf::from(CANDIDATES[0]);
        let only_sys = |p: &Path| p == sys.as_path();
        assert_eq!(choose(None, Some(WHEEL), only_sys), Ok(Some(sys.clone())));
        assert_eq!(
            choose(Some(""), Some(WHEEL), only_sys),
            Ok(Some(sys.clone()))
        );
        // nothing to do: MLX already on an optimised BLAS (or none), the user asked for MLX's own,
        // or the system has no OpenBLAS
        assert_eq!(choose(None, Some(DEBIAN_OPENBLAS), only_sys), Ok(None));
        assert_eq!(choose(None, None, only_sys), Ok(None));
        assert_eq!(choose(Some("reference"), Some(WHEEL), only_sys), Ok(None));
        assert_eq!(choose(None, Some(WHEEL), |_| false), Ok(None));
        // an explicit library
        let mine = |p: &Path| p == Path::new("/opt/blis/libblis.so");
        assert_eq!(
            choose(Some("/opt/blis/libblis.so"), Some(WHEEL), mine),
            Ok(Some(PathBuf::from("/opt/blis/libblis.so")))
        );
        let err = choose(Some("/nope/libopenblas.so"), Some(WHEEL), mine).unwrap_err();
        assert!(
            err.contains("MIXSWEEP_BLAS=/nope/libopenblas.so does not exist"),
            "{err}"
        );
    }
}
