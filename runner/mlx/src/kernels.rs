//! Custom GPU kernels that MLX lacks, written for its CUDA backend (`src/selective_scan.cpp`,
//! compiled at run time by MLX's JIT). Each is a differentiable MLX function (its backward pass
//! is a second kernel, attached with `custom_vjp`), so it traces into `compile` like any op.
//! Callers keep a portable fallback and ask [`fused_scan_available`] first.

use crate::{Array, Result, ffi};

/// Whether [`fused_selective_scan`] can run: MLX's CUDA backend is present and the default
/// device is the GPU. False on CPU and on Metal (no Metal version yet).
pub fn fused_scan_available() -> bool {
    unsafe { ffi::msx_fused_scan_available() == 1 }
}

/// Mamba's selective scan in one kernel: `h_t = exp(max(dt_t A, -64/chunk)) h_{t-1} + dt_t x_t B_t`,
/// `y_t = Σ_n h_t C_t` for `x, delta [batch, seq, inner]`, `a [inner, state]` (A, already negative),
/// `b, c [batch, seq, state]`; returns `y [batch, seq, inner]` in float32. The state size must
/// divide 32. `chunk` only sets the decay floor, matching the chunked scan with that chunk.
pub fn fused_selective_scan(
    x: &Array,
    delta: &Array,
    a: &Array,
    b: &Array,
    c: &Array,
    chunk: usize,
) -> Result<Array> {
    Array::build(|out| unsafe {
        ffi::msx_fused_selective_scan(
            x.as_ptr(),
            delta.as_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            c.as_ptr(),
            chunk.min(i32::MAX as usize) as i32,
            out,
        )
    })
}
