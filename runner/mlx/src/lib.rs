//! # mixsweep-mlx: a thin, safe Rust binding over MLX's C++ API
//!
//! This crate owns everything that touches MLX. A small C++ shim (`src/shim.cpp`, built with `cc`)
//! exposes the MLX operations mixsweep needs through a C ABI; the Rust layer wraps each one in a safe
//! function returning [`Result`]. Every MLX C++ exception is caught in the shim and becomes an
//! [`Error`] carrying MLX's message: nothing aborts and nothing is only logged.
//!
//! * [`Array`]: an MLX array handle (RAII; `clone` shares the buffer through MLX's refcount).
//! * [`Dtype`]: the element types the runner uses.
//! * Operations are methods on [`Array`] (elementwise, reductions, shapes, `fast::` kernels) plus a
//!   few free functions ([`concatenate`], [`where_`]); [`random`] takes explicit keys.
//! * Transforms: [`value_and_grad`], [`vjp`] and [`Compiled`] (MLX `compile`) over Rust closures.
//! * [`kernels`]: custom CUDA kernels (the fused selective scan) with their gradients.
//! * [`device`] and [`memory`]: device selection and allocator statistics/limits.
//!
//! Linking: `build.rs` finds the `libmlx` shipped in MLX's Python wheels (`mlx-cpu`, `mlx-cuda-13`,
//! `mlx`) or `MLX_DIR`, and sets a RUNPATH so binaries run without environment variables while
//! `LD_LIBRARY_PATH` can still select another libmlx of the same version (e.g. the CUDA build).

mod array;
mod ffi;
mod ops;
mod transforms;

pub mod device;
pub mod kernels;
pub mod memory;
pub mod random;

pub use array::{Array, Dtype};
pub use ops::{concatenate, split, where_};
pub use transforms::{Compiled, set_compile_enabled, value_and_grad, vjp};

use std::ffi::CStr;

/// The MLX version of the headers this crate was built against (`major.minor.patch`); the libmlx it
/// runs with must be the same version.
pub const MLX_BUILD_VERSION: &str = env!("MIXSWEEP_MLX_BUILD_VERSION");

/// An error raised by MLX (its exception message) or by the binding's own checks.
#[derive(Debug, Clone, thiserror::Error)]
#[error("MLX: {message}")]
pub struct Error {
    pub message: String,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns a shim return code into a `Result`, reading the shim's last error message on failure.
pub(crate) fn check(code: std::ffi::c_int) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        // SAFETY: msx_last_error returns a pointer to a thread-local NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(ffi::msx_last_error()) };
        Err(Error::new(msg.to_string_lossy().into_owned()))
    }
}

/// The MLX version string of the libmlx loaded at run time (e.g. `0.32.2`).
pub fn version() -> Result<String> {
    let mut out = std::ptr::null();
    // SAFETY: out is a valid pointer; MLX returns a static string.
    check(unsafe { ffi::msx_version(&mut out) })?;
    Ok(unsafe { CStr::from_ptr(out) }
        .to_string_lossy()
        .into_owned())
}

/// Evaluates the arrays (blocking).
pub fn eval(arrays: &[&Array]) -> Result<()> {
    let v = array::ArrayVec::from_refs(arrays);
    check(unsafe { ffi::msx_eval(v.as_ptr()) })
}

/// Schedules evaluation of the arrays and returns at once.
pub fn async_eval(arrays: &[&Array]) -> Result<()> {
    let v = array::ArrayVec::from_refs(arrays);
    check(unsafe { ffi::msx_async_eval(v.as_ptr()) })
}

/// Writes the (lazy) graph that computes `arrays` to a Graphviz DOT file, for debugging and for
/// counting the operations a step launches.
pub fn export_dot(arrays: &[&Array], path: &std::path::Path) -> Result<()> {
    let v = array::ArrayVec::from_refs(arrays);
    let p = std::ffi::CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| Error::new("path has a NUL byte"))?;
    check(unsafe { ffi::msx_export_dot(v.as_ptr(), p.as_ptr()) })
}
