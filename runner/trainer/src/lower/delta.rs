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
//! `U = T(β ⊙ V)`, `W = T(β ⊙ Γ ⊙ K)` give `Δ = U − W S_0`: everything but the state passing is
//! batched over chunks; the state passes chunk to chunk (`T / L` steps of four matmuls). Padding
//! steps have `k = v = β = log α = 0` and change nothing. Float32. When decoding, the state
//! continues from the saved `S` and is saved again.

use super::{Ctx, State};
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
    let eye = {
        let i = Array::arange(0.0, l as f64, 1.0, Dtype::F32)?;
        let eq = i
            .reshape(&[l as i32, 1])?
            .equal(&i.reshape(&[1, l as i32])?)?;
        eq.astype(Dtype::F32)?
    };
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

pub fn delta_scan(s: &DeltaScan, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let shape = inputs[0].shape();
    let (bsz, t, heads, dk) = (shape[0], shape[1], shape[2], shape[3]);
    let dv = inputs[2].dim(3);
    let l = s.chunk.clamp(1, t.max(1));
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
    let mut state = initial_state(ctx, [bsz, heads, dk, dv])?;
    let pick = chunk_at;
    let mut outs = Vec::with_capacity(chunks);
    for c in 0..chunks {
        let delta = pick(&u, c)?.sub(&pick(&w, c)?.matmul(&state)?)?; // [B, H, L, dv]
        outs.push(
            pick(&qg, c)?
                .matmul(&state)?
                .add(&pick(&qk, c)?.matmul(&delta)?)?,
        );
        let carried = pick(&decay_end, c)?.mul(&state)?;
        state = carried.add(&swap_last(&pick(&k_end, c)?)?.matmul(&delta)?)?;
    }
    finish(ctx, state, &outs, t, inputs[2].dtype()?)
}

/// The saved per-head state `[B, H, d_k, d_v]` when decoding, zeros otherwise.
pub(super) fn initial_state(ctx: &Ctx<'_>, shape: [usize; 4]) -> Result<Array> {
    match ctx.state() {
        Some(State::Hidden(h)) => Ok(h.clone()),
        _ => Array::zeros(&shape, Dtype::F32),
    }
}

/// Chunk `c` of `x [B, H, C, ...]` as `[B, H, ...]`.
pub(super) fn chunk_at(x: &Array, c: usize) -> Result<Array> {
    let sh = x.shape();
    let mut out: Vec<i32> = vec![sh[0] as i32, sh[1] as i32];
    out.extend(sh[3..].iter().map(|&d| d as i32));
    x.slice_axis(2, c, c + 1)?.reshape(&out)
}

/// Saves the final state (when decoding) and joins the chunks' outputs `[B, H, L, d_v]` into
/// `[B, T, H, d_v]` of `dtype`.
pub(super) fn finish(
    ctx: &mut Ctx<'_>,
    state: Array,
    outs: &[Array],
    t: usize,
    dtype: Dtype,
) -> Result<Array> {
    if ctx.decoding() {
        ctx.save(State::Hidden(state));
    }
    let refs: Vec<&Array> = outs.iter().collect();
    let o = concatenate(&refs, 2)?.slice_axis(2, 0, t)?; // [B, H, T, dv]
    o.transpose(&[0, 2, 1, 3])?.astype(dtype)
}
