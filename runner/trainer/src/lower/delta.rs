//! The gated delta rule ([`DeltaScan`]) in chunkwise-parallel (WY) form.
//!
//! Per head, `S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ` and `o_t = S_tᵀ q_t`. Within a
//! chunk of `L` steps entered with state `S_0`, with `γ_i = Σ_{j≤i} log α_j` and `Γ_i = e^{γ_i}`:
//!
//! ```text
//! S_i = Γ_i S_0 + Σ_{j≤i} e^{γ_i − γ_j} k_j δ_jᵀ,   δ_j = β_j (v_j − α_j S_{j−1}ᵀ k_j)
//! (I + A) Δ = β ⊙ V − β ⊙ Γ ⊙ (K S_0),     A_jm = β_j e^{γ_j − γ_m} k_j·k_m  (m < j)
//! O = (Γ ⊙ Q) S_0 + ((Q Kᵀ) ⊙ E) Δ,          E_jm = e^{γ_j − γ_m}  (m ≤ j)
//! S_L = Γ_L S_0 + (e^{γ_L − γ} ⊙ K)ᵀ Δ
//! ```
//! `T = (I + A)⁻¹` (A strictly lower, so nilpotent) is the product `(I − A)(I + A²)(I + A⁴)…`, and
//! `U = T(β ⊙ V)`, `W = T(β ⊙ Γ ⊙ K)` give `Δ = U − W S_0`, so each chunk maps its entering state
//! affinely, `S ↦ (Γ_L I − (e^{γ_L − γ} ⊙ K)ᵀ W) S + (e^{γ_L − γ} ⊙ K)ᵀ U`; the entering states of all
//! chunks come from one log-depth scan of these maps ([`affine_scan`]), and everything is batched
//! over chunks (no loop over the sequence). Padding
//! steps have `k = v = β = log α = 0` and change nothing. Float32. When decoding, the state
//! continues from the saved `S` and is saved again.
//!
//! Training on CUDA runs the rule as one fused kernel instead (`mixsweep_mlx::kernels::
//! fused_delta_scan`: the state in registers, checkpoints every 16 steps, a reverse adjoint kernel);
//! the chunkwise form stays for decoding and other backends.

use super::fused::{self, Fused};
use super::{Ctx, State};
use mixsweep_mlx::kernels::{fused_delta_scan, fused_matrix_scan_fits};
use mixsweep_mlx::{Array, Dtype, Result, concatenate, where_};
use mixsweep_model::ops::DeltaScan;

/// `[B, T, H, ...]` -> `[B, H, C, L, ...]` in float32, zero-padded to `C·L` steps.
pub(super) fn chunked(x: &Array, l: usize) -> Result<Array> {
    let x = x.astype(Dtype::F32)?;
    let s = x.shape();
    let (b, t, h) = (s[0], s[1], s[2]);
    let c = t.div_ceil(l);
    let mut axes: Vec<i32> = vec![0, 2, 1];
    axes.extend((3..s.len() as i32).collect::<Vec<_>>());
    let x = x.transpose(&axes)?.pad_axis(2, 0, c * l - t, 0.0)?;
    let mut shape = vec![b as i32, h as i32, c as i32, l as i32];
    shape.extend(s[3..].iter().map(|&d| d as i32));
    x.reshape(&shape)
}

/// `[..., L, n]` -> `[..., n, L]`.
pub(super) fn swap_last(x: &Array) -> Result<Array> {
    let r = x.shape().len() as i32;
    let mut axes: Vec<i32> = (0..r).collect();
    axes.swap((r - 1) as usize, (r - 2) as usize);
    x.transpose(&axes)
}

/// Lower-triangular masks `[L, L]`: `m ≤ j` (with the diagonal) and `m < j`.
pub(super) fn masks(l: usize) -> Result<(Array, Array)> {
    let i = Array::arange(0.0, l as f64, 1.0, Dtype::F32)?;
    let (row, col) = (i.reshape(&[l as i32, 1])?, i.reshape(&[1, l as i32])?);
    Ok((col.less_equal(&row)?, col.less(&row)?))
}

/// `(I + a)⁻¹` for strictly lower-triangular `a [..., L, L]`.
fn unit_lower_inverse(a: &Array, l: usize) -> Result<Array> {
    let eye = eye(l)?;
    let mut inv = eye.sub(a)?;
    let mut power = a.matmul(a)?;
    let mut reach = 2;
    while reach < l {
        inv = inv.matmul(&eye.add(&power)?)?;
        reach *= 2;
        if reach < l {
            power = power.matmul(&power)?;
        }
    }
    Ok(inv)
}

/// The `delta_scan` op: the fused kernel when training on CUDA, else the chunkwise form from the
/// saved state (saving the last state again when decoding).
pub fn delta_scan(s: &DeltaScan, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let [q, k, v, beta, log_a] = inputs else {
        unreachable!("the shape rule checked five inputs")
    };
    let (bsz, t, heads, dk) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    if !ctx.decoding() && fused_matrix_scan_fits(dk) && fused::enabled(Fused::Delta) {
        return fused_delta_scan(q, k, v, beta, log_a)?.astype(v.dtype()?);
    }
    let h0 = initial_state(ctx, [bsz, heads, dk, v.dim(3)])?;
    let (out, last) = delta_chunkwise(inputs, s.chunk.clamp(1, t.max(1)), &h0)?;
    if ctx.decoding() {
        ctx.save(State::Hidden(last));
    }
    Ok(out)
}

/// The chunkwise (WY) form with chunks of `l` steps from the state `h0 [B, H, d_k, d_v]`: the
/// output in `v`'s dtype and the last state (float32).
pub fn delta_chunkwise(inputs: &[Array], l: usize, h0: &Array) -> Result<(Array, Array)> {
    let shape = inputs[0].shape();
    let (bsz, t, heads, dk) = (shape[0], shape[1], shape[2], shape[3]);
    let dv = inputs[2].dim(3);
    let (q, k, v) = (
        chunked(&inputs[0], l)?,
        chunked(&inputs[1], l)?,
        chunked(&inputs[2], l)?,
    );
    let (beta, g) = (chunked(&inputs[3], l)?, chunked(&inputs[4], l)?); // [B, H, C, L]
    let chunks = q.dim(2);
    let gamma = g.cumsum(-1, false, true)?;
    let (incl, strict) = masks(l)?;
    let diff = gamma.expand_dims(-1)?.sub(&gamma.expand_dims(-2)?)?; // γ_j − γ_m
    let below = where_(&incl, &diff, &Array::scalar(-1e9, Dtype::F32)?)?;
    let e = below.exp()?; // E_jm, zero above the diagonal
    let zero = Array::scalar(0.0, Dtype::F32)?;
    let kk = k.matmul(&swap_last(&k)?)?;
    let a = where_(&strict, &beta.expand_dims(-1)?.mul(&e)?.mul(&kk)?, &zero)?;
    let inv = unit_lower_inverse(&a, l)?;
    let big_gamma = gamma.exp()?.expand_dims(-1)?; // Γ [B, H, C, L, 1]
    let beta1 = beta.expand_dims(-1)?;
    let u = inv.matmul(&beta1.mul(&v)?)?; // [B, H, C, L, dv]
    let w = inv.matmul(&beta1.mul(&big_gamma)?.mul(&k)?)?; // [B, H, C, L, dk]
    let qk = q.matmul(&swap_last(&k)?)?.mul(&e)?;
    let qg = big_gamma.mul(&q)?;
    let last = gamma.slice_axis(3, l - 1, l)?; // γ_L [B, H, C, 1]
    let k_end = last.sub(&gamma)?.exp()?.expand_dims(-1)?.mul(&k)?;
    let decay_end = last.exp()?.expand_dims(-1)?; // [B, H, C, 1, 1]
    // chunk c maps its entering state S to A_c S + B_c: A_c = Γ_L I − k_endᵀ W, B_c = k_endᵀ U
    let k_end_t = swap_last(&k_end)?;
    let trans = decay_end.mul(&eye(dk)?)?.sub(&k_end_t.matmul(&w)?)?; // [B, H, C, dk, dk]
    let add = k_end_t.matmul(&u)?; // [B, H, C, dk, dv]
    let (trans, add) = affine_scan(trans, add, chunks, dk)?;
    let h0 = h0.expand_dims(2)?; // [B, H, 1, dk, dv]
    let after = trans.matmul(&h0)?.add(&add)?; // the state after each chunk
    let entering = if chunks > 1 {
        concatenate(&[&h0, &after.slice_axis(2, 0, chunks - 1)?], 2)?
    } else {
        h0
    };
    let delta = u.sub(&w.matmul(&entering)?)?; // [B, H, C, L, dv]
    let out = qg.matmul(&entering)?.add(&qk.matmul(&delta)?)?;
    let (b4, h4, k4, v4) = (bsz as i32, heads as i32, dk as i32, dv as i32);
    let last = after
        .slice_axis(2, chunks - 1, chunks)?
        .reshape(&[b4, h4, k4, v4])?;
    let out = out.reshape(&[b4, h4, (chunks * l) as i32, v4])?;
    let out = out
        .slice_axis(2, 0, t)?
        .transpose(&[0, 2, 1, 3])?
        .astype(inputs[2].dtype()?)?;
    Ok((out, last))
}

/// The identity `[n, n]`, float32.
fn eye(n: usize) -> Result<Array> {
    let i = Array::arange(0.0, n as f64, 1.0, Dtype::F32)?;
    i.reshape(&[n as i32, 1])?
        .equal(&i.reshape(&[1, n as i32])?)?
        .astype(Dtype::F32)
}

/// Inclusive scan of the affine maps `S ↦ A_c S + B_c` along axis 2 (`a [B, H, C, n, n]`,
/// `b [B, H, C, n, m]`): afterwards `(a_c, b_c)` maps the state entering chunk 0 to the state after
/// chunk `c`. Log-depth (Hillis-Steele): maps compose as `(A₂, B₂) ∘ (A₁, B₁) = (A₂A₁, A₂B₁ + B₂)`.
fn affine_scan(mut a: Array, mut b: Array, chunks: usize, n: usize) -> Result<(Array, Array)> {
    let mut k = 1;
    while k < chunks {
        let sh = a.shape();
        let id = eye(n)?.broadcast_to(&[sh[0], sh[1], k, n, n])?;
        let prev_a = concatenate(&[&id, &a.slice_axis(2, 0, chunks - k)?], 2)?;
        let prev_b = b.slice_axis(2, 0, chunks - k)?.pad_axis(2, k, 0, 0.0)?;
        b = a.matmul(&prev_b)?.add(&b)?;
        a = a.matmul(&prev_a)?;
        k *= 2;
    }
    Ok((a, b))
}

/// The saved per-head state `[B, H, d_k, d_v]` when decoding, zeros otherwise.
pub(super) fn initial_state(ctx: &Ctx<'_>, shape: [usize; 4]) -> Result<Array> {
    match ctx.state() {
        Some(State::Hidden(h)) => Ok(h.clone()),
        _ => Array::zeros(&shape, Dtype::F32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::test_support::{assert_fused_matches, host};

    /// On CUDA: the fused kernel's output and its five gradients equal the chunkwise form's (MLX
    /// autodiff) for d_k 32, 8 and 64, partial checkpoint chunks and column blocks, with
    /// L2-normalised keys as the block feeds them. Run on a GPU machine with `--ignored`.
    #[test]
    #[ignore = "needs MLX's CUDA backend: run with --ignored on an NVIDIA machine"]
    fn fused_delta_matches_the_chunkwise_form_and_its_gradients() {
        assert!(
            mixsweep_mlx::kernels::fused_scan_available(),
            "the fused kernels need MLX's CUDA backend (libmlx of mlx-cuda-13)"
        );
        for (b, t, h, dk, dv) in [
            (2, 37, 2, 32, 10),
            (1, 20, 3, 8, 16),
            (1, 18, 1, 64, 3),
            (4, 256, 6, 32, 64),
        ] {
            let n = b * t * h;
            let arr = |v: Vec<f32>, s: &[usize]| Array::from_f32(&v, s).unwrap();
            let unit = |x: Array| {
                let norm = x.square()?.sum(&[-1], true)?.sqrt()?;
                x.div(&norm)
            };
            let inputs = [
                arr(host(n * dk, 31, -1.0, 1.0), &[b, t, h, dk]),
                unit(arr(host(n * dk, 32, -1.0, 1.0), &[b, t, h, dk])).unwrap(),
                arr(host(n * dv, 33, -1.0, 1.0), &[b, t, h, dv]),
                arr(host(n, 34, 0.0, 1.0), &[b, t, h]),
                arr(host(n, 35, -2.0, 0.0), &[b, t, h]),
            ];
            assert_fused_matches(
                &inputs,
                |x| fused_delta_scan(&x[0], &x[1], &x[2], &x[3], &x[4]),
                |x| {
                    let h0 = Array::zeros(&[b, h, dk, dv], Dtype::F32)?;
                    Ok(delta_chunkwise(x, 16.min(t), &h0)?.0)
                },
                &["dq", "dk", "dv", "dbeta", "dlog_a"],
                &[2e-3; 5],
                &format!("b={b} t={t} h={h} dk={dk} dv={dv}"),
            );
        }
    }
}
