//! Recurrences and causal token mixing.
//!
//! Every scan here is a diagonal linear recurrence `h_t = a_t ⊙ h_{t-1} + u_t` computed by
//! [`linear_recurrence`] in chunks of `L` steps: within a chunk in parallel as
//! `h_t = e^{S_t}(h_0 + Σ_{s≤t} e^{-S_s} u_s)` with `S = cumsum(log a)` (a lower-triangular matmul),
//! across chunks by a log-depth scan of the chunk end states. Per-step log-decays are floored at
//! `-SCAN_LOG_BUDGET / L`, so `e^{-S}` stays finite in float32 (a state keeps at least
//! `e^{-64/L}` of itself per step, e.g. 3.4e-4 with `L = 8`). The same function runs for a whole
//! sequence and, from the saved state, for each decoding call, so cached generation equals the
//! full forward. In training on CUDA the same recurrences run as fused kernels instead (no initial
//! state): Mamba's selective scan, and every diagonal recurrence through [`fused_recurrence`].

use super::fused::{self, Fused};
use super::{Ctx, State};
use mixsweep_mlx::{Array, Dtype, Result, where_};
use mixsweep_model::ops::{DecayScan, GatedScan, MatrixScan, ScanTv, SelectiveScan};

/// The per-step log-decay floor is `-SCAN_LOG_BUDGET / chunk`.
pub const SCAN_LOG_BUDGET: f32 = 64.0;

fn f32(a: &Array) -> Result<Array> {
    a.astype(Dtype::F32)
}

/// `h_t = exp(log_a_t) ⊙ h_{t-1} + u_t` over `log_a, u [B, T, S...]` from `h0 [B, S...]` (zeros when
/// `None`), in chunks of `chunk` steps; `log_a` is floored as the module docs say. Returns every
/// state `[B, T, S...]` and the last `[B, S...]`. Float32.
pub fn linear_recurrence(
    log_a: &Array,
    u: &Array,
    h0: Option<&Array>,
    chunk: usize,
) -> Result<(Array, Array)> {
    let shape = u.shape();
    let (bsz, t) = (shape[0], shape[1]);
    let state: Vec<usize> = shape[2..].to_vec();
    let s: usize = state.iter().product();
    let l = chunk.clamp(1, t.max(1));
    let chunks = t.div_ceil(l);
    let tp = chunks * l;
    let floor = -SCAN_LOG_BUDGET / l as f32;
    let flat = |a: &Array| a.reshape(&[bsz as i32, t as i32, s as i32]);
    let pad = |a: Array| {
        if tp > t {
            a.pad_axis(1, 0, tp - t, 0.0)
        } else {
            Ok(a)
        }
    };
    let log_a = pad(flat(&f32(log_a)?.maximum_scalar(floor)?)?)?;
    let u = pad(flat(&f32(u)?)?)?;
    let shape4 = [bsz as i32, chunks as i32, l as i32, s as i32];
    let (log_a, u) = (log_a.reshape(&shape4)?, u.reshape(&shape4)?);
    let steps = Array::arange(0.0, l as f64, 1.0, Dtype::F32)?;
    // tril[r, c] = 1 where r >= c: prefix sums as one batched matmul
    let below = steps.expand_dims(1)?.less(&steps.expand_dims(0)?)?;
    let tril = where_(
        &below,
        &Array::scalar(0.0, Dtype::F32)?,
        &Array::scalar(1.0, Dtype::F32)?,
    )?;
    let cum = tril.matmul(&log_a)?; // S_t within the chunk
    let es = cum.exp()?;
    let local = es.mul(&tril.matmul(&u.mul(&cum.neg()?.exp()?)?)?)?; // state with h_0 = 0
    let decay_end = es.slice_axis(2, l - 1, l)?; // [B, C, 1, S]
    let local_end = local.slice_axis(2, l - 1, l)?;
    // carries: H_c = decay_c · H_{c-1} + local_end_c by an inclusive Hillis-Steele scan over chunks;
    // `decay` ends as the cumulative product, which carries h0 in
    let shift = |a: &Array, k: usize, fill: f32| -> Result<Array> {
        a.slice_axis(1, 0, chunks - k)?.pad_axis(1, k, 0, fill)
    };
    let (mut decay, mut carry) = (decay_end, local_end);
    let mut k = 1;
    while k < chunks {
        let next = carry.add(&decay.mul(&shift(&carry, k, 0.0)?)?)?;
        decay = decay.mul(&shift(&decay, k, 1.0)?)?;
        carry = next;
        k *= 2;
    }
    let h0 = match h0 {
        Some(h) => Some(f32(h)?.reshape(&[bsz as i32, 1, 1, s as i32])?),
        None => None,
    };
    let ends = match &h0 {
        Some(h) => carry.add(&decay.mul(h)?)?,
        None => carry,
    };
    // the state each chunk starts from: the previous chunk's end, h0 (or zeros) for the first
    let first = match &h0 {
        Some(h) => h.clone(),
        None => Array::zeros(&[bsz, 1, 1, s], Dtype::F32)?,
    };
    let starts = if chunks == 1 {
        first
    } else {
        mixsweep_mlx::concatenate(&[&first, &ends.slice_axis(1, 0, chunks - 1)?], 1)?
    };
    let h = local.add(&es.mul(&starts)?)?; // [B, C, L, S]
    let mut full: Vec<i32> = vec![bsz as i32, tp as i32];
    full.extend(state.iter().map(|&d| d as i32));
    let h = h.reshape(&full)?;
    let h = if tp > t { h.slice_axis(1, 0, t)? } else { h };
    let mut last_shape: Vec<i32> = vec![bsz as i32];
    last_shape.extend(state.iter().map(|&d| d as i32));
    let last = ends
        .slice_axis(1, chunks - 1, chunks)?
        .reshape(&last_shape)?;
    Ok((h, last))
}

/// [`linear_recurrence`] from zeros as one fused CUDA kernel: `log_a` broadcast to `u [B, T, S...]`,
/// both flattened to `[B, T, S]`; returns every state `[B, T, S...]` (float32).
pub fn fused_recurrence(log_a: &Array, u: &Array, chunk: usize) -> Result<Array> {
    let shape = u.shape();
    let flat = [shape[0] as i32, shape[1] as i32, -1];
    let log_a = f32(log_a)?.broadcast_to(&shape)?.reshape(&flat)?;
    let l = chunk.clamp(1, shape[1].max(1)); // as linear_recurrence: the floor follows the chunk used
    let h = mixsweep_mlx::kernels::fused_linear_scan(&log_a, &f32(u)?.reshape(&flat)?, l)?;
    let full: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
    h.reshape(&full)
}

/// The saved state of this node, when decoding.
fn saved(ctx: &Ctx<'_>) -> Option<Array> {
    match ctx.state() {
        Some(State::Hidden(h)) => Some(h.clone()),
        _ => None,
    }
}

/// Runs [`linear_recurrence`] from the saved state and saves the new one (when decoding); in
/// training on CUDA, the fused kernel (the same function, decay floor included).
fn recur(log_a: &Array, u: &Array, chunk: usize, ctx: &mut Ctx<'_>) -> Result<Array> {
    if !ctx.decoding() && fused::enabled(Fused::Linear) {
        return fused_recurrence(log_a, u, chunk);
    }
    let h0 = saved(ctx);
    let (h, last) = linear_recurrence(log_a, u, h0.as_ref(), chunk)?;
    if ctx.decoding() {
        ctx.save(State::Hidden(last));
    }
    Ok(h)
}

/// mixlab's `scan`: `g = σ(d)`, `h_t = g h_{t-1} + (1 - g) x_t`.
pub fn gated(s: &GatedScan, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let (x, d) = (f32(&inputs[0])?, f32(&inputs[1])?);
    let g = d.sigmoid()?;
    let log_a = g.log()?.broadcast_to(&x.shape())?;
    let u = x.mul(&g.neg()?.add_scalar(1.0)?)?;
    recur(&log_a, &u, s.chunk, ctx)?.astype(inputs[0].dtype()?)
}

/// mixlab's `scan_tv`: `h_t = g_t h_{t-1} + (1 - g_t) x_t`.
pub fn time_varying(s: &ScanTv, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let (x, g) = (f32(&inputs[0])?, f32(&inputs[1])?);
    let u = x.mul(&g.neg()?.add_scalar(1.0)?)?;
    recur(&g.log()?, &u, s.chunk, ctx)?.astype(inputs[0].dtype()?)
}

/// `h_t = a_t h_{t-1} + u_t` with the decay given (constant `[D]` or per step).
pub fn decay(s: &DecayScan, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let (u, a) = (f32(&inputs[0])?, f32(&inputs[1])?);
    let log_a = a.log()?.broadcast_to(&u.shape())?;
    recur(&log_a, &u, s.chunk, ctx)?.astype(inputs[0].dtype()?)
}

/// mixlab's `matrix_scan`: `H_t = g_t[:, None] ⊙ H_{t-1} + U_t`.
pub fn matrix(s: &MatrixScan, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let (u, g) = (f32(&inputs[0])?, f32(&inputs[1])?);
    let log_a = g.log()?.expand_dims(-1)?.broadcast_to(&u.shape())?;
    recur(&log_a, &u, s.chunk, ctx)?.astype(inputs[0].dtype()?)
}

/// `m_t = max(m_{t-1} + f_t, i_t)` from `m_{-1} = 0` (or the saved `m` when decoding), by a
/// log-depth (Hillis-Steele) scan of the max-plus maps `m -> max(m + A, B)`, which compose as
/// `(A1, B1) then (A2, B2) = (A1 + A2, max(B1 + A2, B2))`. Float32.
pub fn max_plus(inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let (mut a, mut b) = (f32(&inputs[0])?, f32(&inputs[1])?);
    let t = a.dim(1);
    let mut k = 1;
    while k < t {
        // the map of steps t-k..t-1 (identity (0, -1e30) before the start), then steps t's own
        let prev_a = a.slice_axis(1, 0, t - k)?.pad_axis(1, k, 0, 0.0)?;
        let prev_b = b.slice_axis(1, 0, t - k)?.pad_axis(1, k, 0, -1e30)?;
        b = prev_b.add(&a)?.maximum(&b)?;
        a = prev_a.add(&a)?;
        k *= 2;
    }
    let m0 = match ctx.state() {
        Some(State::Hidden(m)) => m.clone(),
        _ => Array::zeros(&[a.dim(0), 1, a.dim(2)], Dtype::F32)?,
    };
    let m = m0.add(&a)?.maximum(&b)?;
    if ctx.decoding() {
        ctx.save(State::Hidden(m.slice_axis(1, t - 1, t)?));
    }
    m.astype(inputs[0].dtype()?)
}

/// `y_t = x_{t-1}` (zeros before the first token; the previous call's last token when decoding).
pub fn token_shift(x: &Array, ctx: &mut Ctx<'_>) -> Result<Array> {
    let t = x.dim(1);
    let prev = match ctx.state() {
        Some(State::Tail(p)) => p.clone(),
        _ => Array::zeros(&[x.dim(0), 1, x.dim(2)], x.dtype()?)?,
    };
    if ctx.decoding() {
        ctx.save(State::Tail(x.slice_axis(1, t - 1, t)?));
    }
    mixsweep_mlx::concatenate(&[&prev, &x.slice_axis(1, 0, t - 1)?], 1)
}

/// Time steps each GPU thread of the fused convolution walks.
const CONV_SEGMENT: usize = 32;

/// `y_t = Σ_j w[j] · x_{t-K+1+j} + bias` over `x [B, T, C]`, `w [K, C]` (zeros before the start):
/// the fused CUDA kernel where [`fused::enabled`] says so (x's dtype out, float32 inside), otherwise
/// `K` shifted slices.
pub fn causal_conv1d(x: &Array, w: &Array, bias: &Array) -> Result<Array> {
    if fused::enabled(Fused::Conv) {
        let out = x.dtype()?;
        return mixsweep_mlx::kernels::fused_causal_conv(x, w, bias, CONV_SEGMENT)?.astype(out);
    }
    causal_conv_sliced(x, w, bias)
}

/// [`causal_conv1d`] as `K` shifted slices of the zero-padded input (every backend).
fn causal_conv_sliced(x: &Array, w: &Array, bias: &Array) -> Result<Array> {
    let k = w.dim(0);
    let t = x.dim(1);
    let padded = x.pad_axis(1, k - 1, 0, 0.0)?;
    conv_valid(&padded, w, bias, t)
}

/// The convolution over an input that already holds the `K - 1` steps before its last `t`.
fn conv_valid(padded: &Array, w: &Array, bias: &Array, t: usize) -> Result<Array> {
    let k = w.dim(0);
    let mut acc = bias.clone();
    for j in 0..k {
        let wj = w.slice_axis(0, j, j + 1)?; // [1, C], broadcasts over [B, T, C]
        acc = acc.add(&padded.slice_axis(1, j, j + t)?.mul(&wj)?)?;
    }
    Ok(acc)
}

/// The causal convolution op, with the last `K - 1` inputs kept when decoding.
pub fn conv(inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let (x, w, bias) = (&inputs[0], &inputs[1], &inputs[2]);
    if !ctx.decoding() {
        return causal_conv1d(x, w, bias);
    }
    let (k, t) = (w.dim(0), x.dim(1));
    let full = match ctx.state() {
        Some(State::Tail(h)) => mixsweep_mlx::concatenate(&[h, x], 1)?,
        _ => x.pad_axis(1, k - 1, 0, 0.0)?,
    };
    let total = full.dim(1);
    ctx.save(State::Tail(full.slice_axis(1, total - (k - 1), total)?));
    conv_valid(&full, w, bias, t)
}

/// Whether the selective scan runs as one fused CUDA kernel: [`fused::enabled`] and the state size
/// divides 32.
pub fn use_fused_scan(state: usize) -> bool {
    state > 0 && state <= 32 && 32 % state == 0 && fused::enabled(Fused::Selective)
}

/// Mamba's selective scan `y_t = C_t h_t + D x_t` with `h_t = exp(max(dt_t A, floor)) h_{t-1} + dt_t x_t B_t`
/// and `A = -exp(a_log)`: the fused CUDA kernel where [`use_fused_scan`] says so, otherwise
/// [`selective_scan_chunked`]. Inputs `x, delta [B, T, I]`, `a_log [I, N]`, `b, c [B, T, N]`,
/// `d [I]`; runs in float32 and returns `x`'s dtype.
pub fn selective_scan(
    x: &Array,
    delta: &Array,
    a_log: &Array,
    b: &Array,
    c: &Array,
    d: &Array,
    chunk: usize,
) -> Result<Array> {
    if !use_fused_scan(b.dim(-1)) {
        return selective_scan_chunked(x, delta, a_log, b, c, d, chunk);
    }
    let out_dtype = x.dtype()?;
    let (x, delta, a_log, b, c, d) = (f32(x)?, f32(delta)?, f32(a_log)?, f32(b)?, f32(c)?, f32(d)?);
    let a = a_log.exp()?.neg()?;
    let l = chunk.clamp(1, x.dim(1).max(1));
    let y = mixsweep_mlx::kernels::fused_selective_scan(&x, &delta, &a, &b, &c, l)?;
    y.add(&x.mul(&d)?)?.astype(out_dtype)
}

/// The selective scan on every backend: [`linear_recurrence`] over the `[I, N]` state, from `h0`.
/// Returns `y` and the last state.
fn selective_core(inputs: &[Array], chunk: usize, h0: Option<&Array>) -> Result<(Array, Array)> {
    let out_dtype = inputs[0].dtype()?;
    let (x, delta, a_log, b, c, d) = (
        f32(&inputs[0])?,
        f32(&inputs[1])?,
        f32(&inputs[2])?,
        f32(&inputs[3])?,
        f32(&inputs[4])?,
        f32(&inputs[5])?,
    );
    let a = a_log.exp()?.neg()?; // [I, N]
    let log_a = delta.expand_dims(-1)?.mul(&a)?; // [B, T, I, N]
    let u = delta.mul(&x)?.expand_dims(-1)?.mul(&b.expand_dims(2)?)?;
    let (h, last) = linear_recurrence(&log_a, &u, h0, chunk)?;
    let y = h.mul(&c.expand_dims(2)?)?.sum(&[-1], false)?;
    Ok((y.add(&x.mul(&d)?)?.astype(out_dtype)?, last))
}

/// [`selective_scan`] in chunks (every backend).
pub fn selective_scan_chunked(
    x: &Array,
    delta: &Array,
    a_log: &Array,
    b: &Array,
    c: &Array,
    d: &Array,
    chunk: usize,
) -> Result<Array> {
    let inputs = [
        x.clone(),
        delta.clone(),
        a_log.clone(),
        b.clone(),
        c.clone(),
        d.clone(),
    ];
    Ok(selective_core(&inputs, chunk, None)?.0)
}

/// The selective-scan op: fused or chunked for a whole sequence, chunked from the saved state when
/// decoding.
pub fn selective(s: &SelectiveScan, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    if !ctx.decoding() {
        let [x, delta, a_log, b, c, d] = inputs else {
            unreachable!("the shape rule checked six inputs")
        };
        return selective_scan(x, delta, a_log, b, c, d, s.chunk);
    }
    let h0 = saved(ctx);
    let (y, last) = selective_core(inputs, s.chunk, h0.as_ref())?;
    ctx.save(State::Hidden(last));
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::test_support::{assert_fused_matches, host};

    fn arr(v: &[f32], s: &[usize]) -> Array {
        Array::from_f32(v, s).unwrap()
    }

    /// The chunked scan equals the step-by-step recurrence (for decays inside the clamp range).
    #[test]
    fn chunked_scan_matches_sequential_recurrence() {
        let (b, t, i, n) = (2, 13, 3, 4);
        let x = host(b * t * i, 1, -1.0, 1.0);
        let delta = host(b * t * i, 2, 0.01, 0.5);
        let a_log = host(i * n, 3, -1.0, 1.5);
        let bm = host(b * t * n, 4, -1.0, 1.0);
        let cm = host(b * t * n, 5, -1.0, 1.0);
        let d = host(i, 6, -1.0, 1.0);
        // reference: h_t = exp(dt*A) h + dt*x*B ; y = h.C + d*x
        let mut want = vec![0f32; b * t * i];
        for bb in 0..b {
            let mut h = vec![0f32; i * n];
            for tt in 0..t {
                for ii in 0..i {
                    let dt = delta[(bb * t + tt) * i + ii];
                    let xv = x[(bb * t + tt) * i + ii];
                    let mut y = 0f32;
                    for nn in 0..n {
                        let a = -a_log[ii * n + nn].exp();
                        let hv = &mut h[ii * n + nn];
                        *hv = (dt * a).exp() * *hv + dt * xv * bm[(bb * t + tt) * n + nn];
                        y += *hv * cm[(bb * t + tt) * n + nn];
                    }
                    want[(bb * t + tt) * i + ii] = y + d[ii] * xv;
                }
            }
        }
        for chunk in [1, 4, 8, 13, 16] {
            let got = selective_scan_chunked(
                &arr(&x, &[b, t, i]),
                &arr(&delta, &[b, t, i]),
                &arr(&a_log, &[i, n]),
                &arr(&bm, &[b, t, n]),
                &arr(&cm, &[b, t, n]),
                &arr(&d, &[i]),
                chunk,
            )
            .unwrap()
            .to_vec_f32()
            .unwrap();
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                    "chunk {chunk} element {k}: {g} vs {w}"
                );
            }
        }
    }

    /// Splitting a sequence anywhere and continuing from the returned state gives the same states
    /// as one pass (what cached decoding relies on).
    #[test]
    fn recurrence_continues_from_its_state() {
        let (b, t, s) = (2, 11, 3);
        let log_a = host(b * t * s, 7, -2.0, 0.0);
        let u = host(b * t * s, 8, -1.0, 1.0);
        let la = arr(&log_a, &[b, t, s]);
        let uu = arr(&u, &[b, t, s]);
        let (whole, _) = linear_recurrence(&la, &uu, None, 4).unwrap();
        let whole = whole.to_vec_f32().unwrap();
        for cut in [1, 5, 10] {
            let (h1, last) = linear_recurrence(
                &la.slice_axis(1, 0, cut).unwrap(),
                &uu.slice_axis(1, 0, cut).unwrap(),
                None,
                4,
            )
            .unwrap();
            let (h2, _) = linear_recurrence(
                &la.slice_axis(1, cut, t).unwrap(),
                &uu.slice_axis(1, cut, t).unwrap(),
                Some(&last),
                4,
            )
            .unwrap();
            let joined = mixsweep_mlx::concatenate(&[&h1, &h2], 1)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            for (g, w) in joined.iter().zip(&whole) {
                assert!((g - w).abs() < 1e-5, "cut {cut}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn causal_conv_uses_only_the_past() {
        // x = [1, 2, 3], w = [[0.5], [1]] (K=2): y_t = 0.5 x_{t-1} + x_t + bias
        let x = arr(&[1.0, 2.0, 3.0], &[1, 3, 1]);
        let w = arr(&[0.5, 1.0], &[2, 1]);
        let b = arr(&[0.25], &[1]);
        let y = causal_conv1d(&x, &w, &b).unwrap().to_vec_f32().unwrap();
        assert_eq!(y, vec![1.25, 2.75, 4.25]);
    }

    /// On CUDA: [`fused_recurrence`]'s states and both gradients equal [`linear_recurrence`]'s (MLX
    /// autodiff), with log-decays below the floor, a partial thread block, and a decay broadcast
    /// over a trailing state axis. `dlog_a` is held to 1e-2 of its scale (the chunked form's float32
    /// loss through `e^{S}·e^{−S}`; the kernel matches the step-by-step recurrence to 1e-5 in
    /// `runner/mlx/tests/linear_scan_kernel_emulated.rs`). Run on a GPU machine with `--ignored`.
    #[test]
    #[ignore = "needs MLX's CUDA backend: run with --ignored on an NVIDIA machine"]
    fn fused_recurrence_matches_the_chunked_form_and_its_gradients() {
        assert!(
            mixsweep_mlx::kernels::fused_scan_available(),
            "the fused kernels need MLX's CUDA backend (libmlx of mlx-cuda-13)"
        );
        for (shape, decay_shape, chunk) in [
            (vec![3, 29, 100], vec![3, 29, 100], 16),
            (vec![2, 40, 6, 4], vec![2, 40, 6, 1], 8),
            (vec![64, 256, 384], vec![64, 256, 384], 8),
        ] {
            let n: usize = shape.iter().product();
            let nd: usize = decay_shape.iter().product();
            let inputs = [
                arr(&host(nd, 51, -6.0, 0.0), &decay_shape),
                arr(&host(n, 52, -1.0, 1.0), &shape),
            ];
            assert_fused_matches(
                &inputs,
                |x| fused_recurrence(&x[0], &x[1], chunk),
                |x| {
                    let la = x[0].broadcast_to(&x[1].shape())?;
                    Ok(linear_recurrence(&la, &x[1], None, chunk)?.0)
                },
                &["dlog_a", "du"],
                &[1e-2, 2e-3],
                &format!("{shape:?}"),
            );
        }
    }

    /// On CUDA: the fused convolution and its three gradients equal the sliced form's (MLX
    /// autodiff), with a partial last time segment, a partial channel block, kernel sizes 1 to 4
    /// and the Mamba example's shape. Run on a GPU machine with `--ignored`.
    #[test]
    #[ignore = "needs MLX's CUDA backend: run with --ignored on an NVIDIA machine"]
    fn fused_causal_conv_matches_the_sliced_form_and_its_gradients() {
        assert!(
            mixsweep_mlx::kernels::fused_scan_available(),
            "the fused convolution needs MLX's CUDA backend (libmlx of mlx-cuda-13)"
        );
        for (b, t, c, k) in [
            (2, 37, 40, 4),
            (3, 5, 300, 3),
            (1, 70, 8, 1),
            (64, 256, 768, 4),
        ] {
            let inputs = [
                arr(&host(b * t * c, 61, -1.0, 1.0), &[b, t, c]),
                arr(&host(k * c, 62, -1.0, 1.0), &[k, c]),
                arr(&host(c, 63, -1.0, 1.0), &[c]),
            ];
            assert_fused_matches(
                &inputs,
                |v| mixsweep_mlx::kernels::fused_causal_conv(&v[0], &v[1], &v[2], CONV_SEGMENT),
                |v| causal_conv_sliced(&v[0], &v[1], &v[2]),
                &["dx", "dw", "dbias"],
                &[1e-4; 3],
                &format!("b={b} t={t} c={c} k={k}"),
            );
        }
    }

    /// On CUDA: the fused kernel's output and all five gradients equal the chunked scan's (MLX
    /// autodiff), with a partial last checkpoint chunk, a partial channel block and decays that hit
    /// the floor. Run on a GPU machine with `--ignored`.
    #[test]
    #[ignore = "needs MLX's CUDA backend: run with --ignored on an NVIDIA machine"]
    fn fused_scan_matches_chunked_scan_and_its_gradients() {
        assert!(
            mixsweep_mlx::kernels::fused_scan_available(),
            "the fused scan needs MLX's CUDA backend (libmlx of mlx-cuda-13)"
        );
        for (b, t, i, n, chunk) in [(3, 37, 40, 16, 8), (2, 16, 24, 8, 16), (1, 5, 3, 32, 4)] {
            let inputs = [
                arr(&host(b * t * i, 11, -1.0, 1.0), &[b, t, i]),
                arr(&host(b * t * i, 12, 0.01, 3.0), &[b, t, i]),
                arr(&host(i * n, 13, -1.0, 2.5), &[i, n]),
                arr(&host(b * t * n, 14, -1.0, 1.0), &[b, t, n]),
                arr(&host(b * t * n, 15, -1.0, 1.0), &[b, t, n]),
                arr(&host(i, 16, -1.0, 1.0), &[i]),
            ];
            assert_fused_matches(
                &inputs,
                |v| {
                    let a = v[2].exp()?.neg()?;
                    let y = mixsweep_mlx::kernels::fused_selective_scan(
                        &v[0], &v[1], &a, &v[3], &v[4], chunk,
                    )?;
                    y.add(&v[0].mul(&v[5])?)
                },
                |v| selective_scan_chunked(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], chunk),
                &["dx", "ddelta", "da_log", "db", "dc", "dd"],
                &[2e-3; 6],
                &format!("b={b} t={t} i={i} n={n}"),
            );
        }
    }
}
