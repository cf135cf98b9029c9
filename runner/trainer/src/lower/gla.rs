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
//! boundary states exist (not one `[d_k, d_v]` state per step); the state passes chunk to chunk.
//! When decoding, it continues from the saved `S` and is saved again. Float32.

use super::Ctx;
use super::delta::{chunk_at, chunked, finish, initial_state, masks, swap_last};
use super::recurrent::SCAN_LOG_BUDGET;
use mixsweep_mlx::{Array, Dtype, Result, where_};
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
    let decay_end = swap_last(&end.exp()?)?; // [B, H, C, dk, 1]
    let mut state = initial_state(ctx, [bsz, heads, dk, dv])?;
    let pick = chunk_at;
    let mut outs = Vec::with_capacity(chunks);
    for c in 0..chunks {
        outs.push(pick(&qb, c)?.matmul(&state)?.add(&pick(&intra, c)?)?);
        let carried = pick(&decay_end, c)?.mul(&state)?;
        state = carried.add(&swap_last(&pick(&k_end, c)?)?.matmul(&pick(&v, c)?)?)?;
    }
    finish(ctx, state, &outs, t, inputs[2].dtype()?)
}
