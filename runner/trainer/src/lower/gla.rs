//! Gated linear attention's recurrence read by queries ([`GlaScan`]) in chunkwise form.
//!
//! Per head `S_t = diag(g_t) S_{t−1} + k_t v_tᵀ`, `o_t = S_tᵀ q_t`. Within a chunk of `L` steps
//! entered with `S_0`, with `b = cumsum(log g)` along the chunk (per key dimension):
//!
//! ```text
//! O   = (Q ⊙ e^{b}) S_0 + (((Q ⊙ e^{b}) (K ⊙ e^{−b})ᵀ) ⊙ M) V        (M: m ≤ j)
//! S_L = e^{b_L} ⊙ S_0 + (K ⊙ e^{b_L − b})ᵀ V
//! ```
//! Per-step log-decays are floored at `−SCAN_LOG_BUDGET / L` as in every chunked scan here, so
//! `e^{−b}` stays finite in float32 and the result equals `matrix_scan` + read. Only the chunk
//! boundary states exist (not one `[d_k, d_v]` state per step). The boundary states are themselves a
//! diagonal linear recurrence over chunks, `S_c = e^{b_L,c} ⊙ S_{c−1} + (K ⊙ e^{b_L − b})ᵀ V`, run
//! as one log-depth scan ([`linear_recurrence`] with one chunk per step), so nothing loops over
//! chunks: a fixed number of batched MLX calls whatever the sequence length. When decoding, the
//! state continues from the saved `S` and is saved again. Float32.

use super::delta::{chunked, initial_state, masks, swap_last};
use super::recurrent::{SCAN_LOG_BUDGET, linear_recurrence};
use super::{Ctx, State};
use mixsweep_mlx::{Array, Dtype, Result, concatenate, where_};
use mixsweep_model::ops::GlaScan;

pub fn gla_scan(s: &GlaScan, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let shape = inputs[0].shape();
    let (bsz, t, heads, dk) = (shape[0], shape[1], shape[2], shape[3]);
    let dv = inputs[2].dim(3);
    let l = s.chunk.clamp(1, t.max(1));
    let floor = -SCAN_LOG_BUDGET / l as f32;
    let log_g = inputs[3].astype(Dtype::F32)?.log()?.maximum_scalar(floor)?;
    let (q, k, v) = (
        chunked(&inputs[0], l)?,
        chunked(&inputs[1], l)?,
        chunked(&inputs[2], l)?,
    );
    let cum = chunked(&log_g, l)?.cumsum(3, false, true)?; // b [B, H, C, L, dk]
    let chunks = q.dim(2);
    let qb = q.mul(&cum.exp()?)?;
    let kb = k.mul(&cum.neg()?.exp()?)?;
    let (incl, _) = masks(l)?;
    let scores = where_(
        &incl,
        &qb.matmul(&swap_last(&kb)?)?,
        &Array::scalar(0.0, Dtype::F32)?,
    )?;
    let intra = scores.matmul(&v)?; // [B, H, C, L, dv]
    let end = cum.slice_axis(3, l - 1, l)?; // b_L [B, H, C, 1, dk]
    let k_end = k.mul(&end.sub(&cum)?.exp()?)?;
    // boundary states: S_c = e^{b_L} ⊙ S_{c−1} + U_c over the chunk axis, from the saved state
    let by_chunk = |x: &Array| x.transpose(&[0, 2, 1, 3, 4]); // [B, H, C, ..] <-> [B, C, H, ..]
    let u = by_chunk(&swap_last(&k_end)?.matmul(&v)?)?; // [B, C, H, dk, dv]
    let log_end = by_chunk(&swap_last(&end)?)?.broadcast_to(&u.shape())?;
    let h0 = initial_state(ctx, [bsz, heads, dk, dv])?;
    let (after, last) = linear_recurrence(&log_end, &u, Some(&h0), 1)?;
    let first = h0.expand_dims(1)?;
    let entering = if chunks > 1 {
        concatenate(&[&first, &after.slice_axis(1, 0, chunks - 1)?], 1)?
    } else {
        first
    };
    let out = qb.matmul(&by_chunk(&entering)?)?.add(&intra)?; // [B, H, C, L, dv]
    if ctx.decoding() {
        ctx.save(State::Hidden(last));
    }
    let out = out.reshape(&[bsz as i32, heads as i32, (chunks * l) as i32, dv as i32])?;
    out.slice_axis(2, 0, t)?
        .transpose(&[0, 2, 1, 3])?
        .astype(inputs[2].dtype()?)
}
