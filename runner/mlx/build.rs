//! Finds MLX (headers + libmlx) and compiles the C++ shim against it.
//!
//! Search order: `MLX_DIR` (a folder holding `include/mlx/array.h` and `lib/libmlx.*`), then the `mlx`
//! Python package that `python3` (or `PYTHON`) imports. The library folder is exported to dependent
//! build scripts as `DEP_MLX_LIB_DIR` so that binaries can set a RUNPATH to it.
use std::path::{Path, PathBuf};
use std::process::Command;

const HELP: &str = "MLX was not found.
mixsweep links the libmlx that MLX's Python wheels ship. Install the one for this machine:
    Linux CPU:     python3 -m pip install mlx-cpu==0.32.2
    Linux NVIDIA:  python3 -m pip install mlx-cuda-13==0.32.2
    macOS (Metal): python3 -m pip install mlx==0.32.2
or set MLX_DIR to a folder that holds include/mlx/array.h and lib/libmlx.so (lib/libmlx.dylib on macOS).";

fn is_mlx_root(dir: &Path) -> bool {
    dir.join("include/mlx/array.h").is_file()
        && (dir.join("lib/libmlx.so").is_file() || dir.join("lib/libmlx.dylib").is_file())
}

fn from_python() -> Option<PathBuf> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = Command::new(python)
        .args(["-c", "import mlx; print('\\n'.join(list(mlx.__path__)))"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .find(|p| is_mlx_root(p))
}

fn main() {
    println!("cargo:rerun-if-env-changed=MLX_DIR");
    println!("cargo:rerun-if-env-changed=PYTHON");
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=src/selective_scan.cpp");
    let root = match std::env::var_os("MLX_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !is_mlx_root(&dir) {
                panic!(
                    "MLX_DIR={} does not hold include/mlx/array.h and lib/libmlx.*\n\n{HELP}",
                    dir.display()
                );
            }
            dir
        }
        None => from_python().unwrap_or_else(|| panic!("\n\n{HELP}\n")),
    };
    let include = root.join("include");
    let lib = root.join("lib");
    // The MLX version these headers declare (a binary must run against the same libmlx version).
    let version_h = std::fs::read_to_string(include.join("mlx/version.h")).unwrap_or_default();
    let part = |name: &str| {
        version_h
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "x".into())
    };
    println!(
        "cargo:rustc-env=MIXSWEEP_MLX_BUILD_VERSION={}.{}.{}",
        part("MLX_VERSION_MAJOR"),
        part("MLX_VERSION_MINOR"),
        part("MLX_VERSION_PATCH")
    );
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .include(&include)
        .file("src/shim.cpp")
        .file("src/selective_scan.cpp")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .opt_level(2)
        .compile("mixsweep_mlx_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    // RUNPATH (not RPATH), so LD_LIBRARY_PATH can point a binary at another libmlx.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
    }
    println!("cargo:lib_dir={}", lib.display());
    println!("cargo:include_dir={}", include.display());
}
