//! Gives this crate's binaries and tests a RUNPATH to the libmlx that `mixsweep-mlx` linked, so they
//! run without LD_LIBRARY_PATH (which can still point them at another libmlx, e.g. the CUDA build).
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
            println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
        }
    }
}
