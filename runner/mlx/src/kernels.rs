//! Custom GPU kernels that MLX lacks, written for its CUDA backend (`src/selective_scan.cpp`,
//! `src/matrix_scans.cpp`, `src/linear_scan.cpp`, `src/mamba3_scan.cpp`, `src/causal_conv.cpp`;
//! compiled once per machine by `src/custom_kernel.cpp`). Each is a differentiable MLX function
//! (its backward pass is a second kernel, attached with `custom_vjp`), so it traces into `compile`
//! like any op.
//! Callers keep a portable fallback and ask [`fused_scan_available`] first.

use crate::{Array, Result, ffi};

/// Whether the custom kernels launch from binaries compiled once per machine and kept in the kernel
/// cache (`MLX_PTX_CACHE_DIR`, see `src/custom_kernel.cpp`) rather than by MLX's JIT in every process:
/// NVRTC and the CUDA driver are loaded, no compile has failed, and `MIXSWEEP_KERNEL_JIT` is not
/// `mlx`. False on CPU and Metal builds.
pub fn kernels_precompiled() -> bool {
    unsafe { ffi::msx_kernels_precompiled() == 1 }
}

/// Whether `bytes` is a whole 64-bit ELF image: its header, section and program header tables and
/// every section's and segment's bytes lie inside it. The check a cached CUBIN passes before it is
/// launched (a cut-short file is compiled again instead).
pub fn is_whole_elf(bytes: &[u8]) -> bool {
    unsafe { ffi::msx_is_whole_elf(bytes.as_ptr().cast(), bytes.len()) == 1 }
}

/// The first GPU's compute capability as `sm_<major><minor>` (e.g. `sm_90`), read from the CUDA
/// driver without initialising MLX (so before any MLX call); `None` without a CUDA driver or GPU.
pub fn gpu_arch() -> Option<String> {
    let mut buf = [0u8; 32];
    let ok = unsafe { ffi::msx_gpu_arch(buf.as_mut_ptr().cast(), buf.len()) == 1 };
    let end = buf.iter().position(|&b| b == 0)?;
    ok.then(|| String::from_utf8_lossy(&buf[..end]).into_owned())
}

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

/// Whether [`fused_gla_scan`] and [`fused_delta_scan`] take this key size: it divides 32, or is a
/// multiple of 32 up to 128.
pub fn fused_matrix_scan_fits(d_k: usize) -> bool {
    match d_k {
        0 => false,
        1..=32 => 32_usize.is_multiple_of(d_k),
        _ => d_k.is_multiple_of(32) && d_k <= 128,
    }
}

/// Gated linear attention's recurrence in one kernel: per batch and head
/// `S_t = diag(max(g_t, e^{-64/chunk})) S_{t-1} + k_t v_tᵀ`, `o_t = S_tᵀ q_t`, from `S_0 = 0`, for
/// `q, k, g [batch, seq, heads, d_k]` and `v [batch, seq, heads, d_v]`; returns `o [batch, seq,
/// heads, d_v]` in float32. `d_k` must pass [`fused_matrix_scan_fits`]; `chunk` only sets the decay floor,
/// matching the chunkwise form with that chunk.
pub fn fused_gla_scan(q: &Array, k: &Array, v: &Array, g: &Array, chunk: usize) -> Result<Array> {
    Array::build(|out| unsafe {
        ffi::msx_fused_gla_scan(
            q.as_ptr(),
            k.as_ptr(),
            v.as_ptr(),
            g.as_ptr(),
            chunk.min(i32::MAX as usize) as i32,
            out,
        )
    })
}

/// The gated delta rule in one kernel: per batch and head
/// `S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ` with `α_t = e^{log_a_t}`, `o_t = S_tᵀ q_t`, from
/// `S_0 = 0`, for `q, k [batch, seq, heads, d_k]`, `v [batch, seq, heads, d_v]`, `beta, log_a
/// [batch, seq, heads]`; returns `o [batch, seq, heads, d_v]` in float32. `d_k` must pass
/// [`fused_matrix_scan_fits`].
pub fn fused_delta_scan(
    q: &Array,
    k: &Array,
    v: &Array,
    beta: &Array,
    log_a: &Array,
) -> Result<Array> {
    Array::build(|out| unsafe {
        ffi::msx_fused_delta_scan(
            q.as_ptr(),
            k.as_ptr(),
            v.as_ptr(),
            beta.as_ptr(),
            log_a.as_ptr(),
            out,
        )
    })
}

/// The diagonal linear recurrence in one kernel: `h_t = e^{max(log_a_t, −64/chunk)} h_{t−1} + u_t` from
/// `h_{−1} = 0`, for `log_a, u [batch, seq, channels]` (one shape); returns every `h [batch, seq,
/// channels]` in float32. `chunk` only sets the decay floor, matching the chunked form with that chunk.
pub fn fused_linear_scan(log_a: &Array, u: &Array, chunk: usize) -> Result<Array> {
    Array::build(|out| unsafe {
        ffi::msx_fused_linear_scan(
            log_a.as_ptr(),
            u.as_ptr(),
            chunk.min(i32::MAX as usize) as i32,
            out,
        )
    })
}

/// The causal depthwise convolution in one kernel: `y[b, t, c] = bias[c] + Σ_j w[j, c] x[b, t − K + 1 + j, c]`
/// (zero before `t = 0`) for `x [batch, seq, channels]`, `w [K, channels]`, `bias [channels]`;
/// returns `y [batch, seq, channels]` in float32. Each GPU thread walks `segment` time steps.
pub fn fused_causal_conv(x: &Array, w: &Array, bias: &Array, segment: usize) -> Result<Array> {
    Array::build(|out| unsafe {
        ffi::msx_fused_causal_conv(
            x.as_ptr(),
            w.as_ptr(),
            bias.as_ptr(),
            segment.clamp(1, i32::MAX as usize) as i32,
            out,
        )
    })
}

/// Whether [`fused_mamba3_scan`] takes this state size: even, with a number of pairs dividing 32.
pub fn fused_mamba3_fits(state: usize) -> bool {
    state.is_multiple_of(2) && (1..=32).contains(&(state / 2)) && 32_usize.is_multiple_of(state / 2)
}

/// Mamba-3's exponential-trapezoidal scan with a rotating state in one kernel (the `mamba3_scan`
/// op of `mamba3-canonical`): per channel and state pair the phase `φ_t = φ_{t−1} + Δ_t θ_t`, the
/// group's `B_t, C_t` rotated by it, `v_t = B̃_t u_t`,
/// `s_t = e^{max(Δ_t A, −64/chunk)} s_{t−1} + (1 − λ_t) Δ_t e^{Δ_t A} v_{t−1} + λ_t Δ_t v_t` and
/// `y_t = Σ_n s_t C̃_t`, from zeros. Inputs `u, delta, lambda [batch, seq, inner]`, `theta [batch,
/// seq, inner, state/2]`, `b, c [batch, seq, groups, state]` (groups dividing inner), `a [inner,
/// state]` (A, already negative); returns `y [batch, seq, inner]` in float32. The state size must
/// pass [`fused_mamba3_fits`]; `chunk` only sets the decay floor, matching the chunked form.
#[allow(clippy::too_many_arguments)]
pub fn fused_mamba3_scan(
    u: &Array,
    delta: &Array,
    lambda: &Array,
    theta: &Array,
    b: &Array,
    c: &Array,
    a: &Array,
    chunk: usize,
) -> Result<Array> {
    Array::build(|out| unsafe {
        ffi::msx_fused_mamba3_scan(
            u.as_ptr(),
            delta.as_ptr(),
            lambda.as_ptr(),
            theta.as_ptr(),
            b.as_ptr(),
            c.as_ptr(),
            a.as_ptr(),
            chunk.min(i32::MAX as usize) as i32,
            out,
        )
    })
}

#[cfg(test)]
mod tests {
    /// A CUBIN is an ELF image; a real one from the system compiler stands in for it (no GPU here).
    #[test]
    fn a_kernel_binary_cut_short_is_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k.cpp");
        std::fs::write(&src, "extern \"C\" int k(int x) { return x + 1; }\n").unwrap();
        let out = dir.path().join("k.so");
        let ok = std::process::Command::new("c++")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("a C++ compiler");
        assert!(ok.success());
        let bytes = std::fs::read(&out).unwrap();
        assert!(super::is_whole_elf(&bytes));
        for cut in [0, 3, 63, bytes.len() / 2, bytes.len() - 1] {
            assert!(!super::is_whole_elf(&bytes[..cut]), "cut at {cut}");
        }
        assert!(!super::is_whole_elf(b"// PTX text, not a binary"));
    }
}
