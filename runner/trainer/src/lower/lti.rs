//! `lti_conv`: S4D's bank of diagonal complex time-invariant SSMs, `s_t = λ s_{t-1} + h_t` with
//! `λ = decay·e^{iθ}` per channel and pole, read out as `y_t = 2·Re(Σ_n C_n s_{t,n})`.
//!
//! Because `λ` does not depend on the input, a call over `T` tokens from the state `s0` is
//! ```text
//! y_t    = Σ_{k ≤ t} K[k] h_{t−k} + 2·Re(Σ_n C_n λ_n^{t+1} s0_n),   K[k] = 2·Re(Σ_n C_n λ_n^k)
//! s_last = λ^T s0 + Σ_τ λ^{T−1−τ} h_τ
//! ```
//! The convolution runs as one batched matmul with the Toeplitz matrix of `K` (`[D, T, T]`, built
//! with a gather), so training costs `2·D·T²` multiply-adds per sequence and materialises nothing of
//! size `B·T·D·P`; sequences over 1024 tokens use 256-token Toeplitz blocks (memory `T·D·256`). The
//! state terms run only when decoding. Float32 throughout.

use super::{Ctx, State};
use mixsweep_mlx::{Array, Dtype, Result};

/// `λ^k` as (real, imaginary) `[D, P, n]` for the exponents `k [n]` (float32).
fn powers(decay: &Array, theta: &Array, k: &Array) -> Result<(Array, Array)> {
    let magnitude = decay.log()?.expand_dims(-1)?.mul(k)?.exp()?;
    let angle = theta.expand_dims(-1)?.mul(k)?;
    Ok((magnitude.mul(&angle.cos()?)?, magnitude.mul(&angle.sin()?)?))
}

/// `C·λ^k` as (real, imaginary) `[D, P, n]`.
fn weighted(c: (&Array, &Array), pw: (Array, Array)) -> Result<(Array, Array)> {
    let (c_re, c_im) = (c.0.expand_dims(-1)?, c.1.expand_dims(-1)?);
    Ok((
        c_re.mul(&pw.0)?.sub(&c_im.mul(&pw.1)?)?,
        c_re.mul(&pw.1)?.add(&c_im.mul(&pw.0)?)?,
    ))
}

/// Sequences up to this long use one `[D, T, T]` Toeplitz matrix; longer ones use blocks of
/// [`BLOCK`] tokens (memory `T·D·BLOCK` instead of `D·T²`).
const WHOLE_MAX: usize = 1024;
const BLOCK: usize = 256;

/// `Σ_{k ≤ t} K[d, k] h[b, t − k, d]` for `K [D, T]`, `h [B, T, D]`.
fn causal_conv(kernel: &Array, h: &Array) -> Result<Array> {
    if h.dim(1) > WHOLE_MAX {
        return causal_conv_blocked(kernel, h, BLOCK);
    }
    let t = h.dim(1);
    let pos = Array::arange(0.0, t as f64, 1.0, Dtype::F32)?;
    let lag = pos.expand_dims(1)?.sub(&pos.expand_dims(0)?)?; // [T, T]: t − s
    let toeplitz = lagged(kernel, &lag, t)?; // [D, T, T]
    let columns = h.transpose(&[2, 1, 0])?; // [D, T, B]
    toeplitz.matmul(&columns)?.transpose(&[2, 1, 0])
}

/// `K[d, lag]` where `0 <= lag`, else 0, for a float array of lags (any shape `S`): `[D, S...]`.
fn lagged(kernel: &Array, lag: &Array, kernel_len: usize) -> Result<Array> {
    let shape = lag.shape();
    let n: usize = shape.iter().product();
    let index = lag
        .maximum_scalar(0.0)?
        .minimum(&Array::scalar((kernel_len - 1) as f32, Dtype::F32)?)?
        .astype(Dtype::I32)?
        .reshape(&[n as i32])?;
    let causal = lag
        .greater_equal(&Array::scalar(0.0, Dtype::F32)?)?
        .astype(Dtype::F32)?;
    let mut out: Vec<i32> = vec![kernel.dim(0) as i32];
    out.extend(shape.iter().map(|&d| d as i32));
    kernel.take(&index, 1)?.reshape(&out)?.mul(&causal)
}

/// [`causal_conv`] in blocks of `l` tokens: output block `i` is `Σ_{m ≤ i} M_m h_{i−m}` with the
/// Toeplitz blocks `M_m[r, c] = K[m·l + r − c]` (zero for negative lags).
fn causal_conv_blocked(kernel: &Array, h: &Array, l: usize) -> Result<Array> {
    let (bsz, t, d) = (h.dim(0), h.dim(1), h.dim(2));
    let nb = t.div_ceil(l);
    let tp = nb * l;
    let h = if tp > t {
        h.pad_axis(1, 0, tp - t, 0.0)?
    } else {
        h.clone()
    };
    let kernel = if tp > t {
        kernel.pad_axis(1, 0, tp - t, 0.0)?
    } else {
        kernel.clone()
    };
    let m = Array::arange(0.0, nb as f64, 1.0, Dtype::F32)?.reshape(&[nb as i32, 1, 1])?;
    let r = Array::arange(0.0, l as f64, 1.0, Dtype::F32)?;
    let within = r.expand_dims(1)?.sub(&r.expand_dims(0)?)?; // [L, L]: r − c
    let lag = m.mul_scalar(l as f32)?.add(&within)?; // [nb, L, L]
    let blocks = lagged(&kernel, &lag, tp)?; // [D, nb, L, L]
    let (d_, nb_, l_, b_) = (d as i32, nb as i32, l as i32, bsz as i32);
    // h as [D, nb, L, B]
    let columns = h.reshape(&[b_, nb_, l_, d_])?.transpose(&[3, 1, 2, 0])?;
    let mut y: Option<Array> = None;
    for shift in 0..nb {
        let block = blocks.slice_axis(1, shift, shift + 1)?; // [D, 1, L, L]
        let part = block.matmul(&columns.slice_axis(1, 0, nb - shift)?)?; // [D, nb − shift, L, B]
        let part = part.pad_axis(1, shift, 0, 0.0)?;
        y = Some(match y {
            Some(acc) => acc.add(&part)?,
            None => part,
        });
    }
    let y = y
        .expect("at least one block")
        .reshape(&[d_, tp as i32, b_])?;
    y.transpose(&[2, 1, 0])?.slice_axis(1, 0, t)
}

/// Runs the op; inputs `h [B, T, D]`, `decay, theta, c_re, c_im [D, P]`.
pub fn lti_conv(inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let f32 = |a: &Array| a.astype(Dtype::F32);
    let h = f32(&inputs[0])?;
    let (decay, theta) = (f32(&inputs[1])?, f32(&inputs[2])?);
    let (c_re, c_im) = (f32(&inputs[3])?, f32(&inputs[4])?);
    let (bsz, t, d, p) = (h.dim(0), h.dim(1), h.dim(2), decay.dim(1));
    let steps = Array::arange(0.0, t as f64, 1.0, Dtype::F32)?;
    let (k_re, _) = weighted((&c_re, &c_im), powers(&decay, &theta, &steps)?)?;
    let kernel = k_re.sum(&[1], false)?.mul_scalar(2.0)?; // [D, T]
    let mut y = causal_conv(&kernel, &h)?;
    if !ctx.decoding() {
        return y.astype(inputs[0].dtype()?);
    }
    // the saved state: real and imaginary parts side by side, [B, D, 2P]
    let (s_re, s_im) = match ctx.state() {
        Some(State::Hidden(s)) => (s.slice_axis(2, 0, p)?, s.slice_axis(2, p, 2 * p)?),
        _ => (
            Array::zeros(&[bsz, d, p], Dtype::F32)?,
            Array::zeros(&[bsz, d, p], Dtype::F32)?,
        ),
    };
    // y_t += 2·Re(Σ_n C_n λ^{t+1} s0_n): [D, B, P] @ [D, P, T]
    let (a_re, a_im) = weighted(
        (&c_re, &c_im),
        powers(&decay, &theta, &steps.add_scalar(1.0)?)?,
    )?;
    let (s0_re, s0_im) = (s_re.transpose(&[1, 0, 2])?, s_im.transpose(&[1, 0, 2])?);
    let from_state = s0_re.matmul(&a_re)?.sub(&s0_im.matmul(&a_im)?)?; // [D, B, T]
    y = y.add(&from_state.mul_scalar(2.0)?.transpose(&[1, 2, 0])?)?;
    // s_last = λ^T s0 + Σ_τ λ^{T−1−τ} h_τ: [D, B, T] @ [D, T, P]
    let back = Array::arange((t - 1) as f64, -1.0, -1.0, Dtype::F32)?;
    let (w_re, w_im) = powers(&decay, &theta, &back)?;
    let columns = h.transpose(&[2, 0, 1])?; // [D, B, T]
    let from_h = |w: &Array| -> Result<Array> {
        columns
            .matmul(&w.transpose(&[0, 2, 1])?)?
            .transpose(&[1, 0, 2])
    };
    let last = Array::scalar(t as f32, Dtype::F32)?.reshape(&[1])?;
    let (l_re, l_im) = powers(&decay, &theta, &last)?;
    let (l_re, l_im) = (
        l_re.reshape(&[d as i32, p as i32])?,
        l_im.reshape(&[d as i32, p as i32])?,
    );
    let next_re = l_re
        .mul(&s_re)?
        .sub(&l_im.mul(&s_im)?)?
        .add(&from_h(&w_re)?)?;
    let next_im = l_re
        .mul(&s_im)?
        .add(&l_im.mul(&s_re)?)?
        .add(&from_h(&w_im)?)?;
    ctx.save(State::Hidden(mixsweep_mlx::concatenate(
        &[&next_re, &next_im],
        2,
    )?));
    y.astype(inputs[0].dtype()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::DecodeCache;
    use std::collections::HashMap;

    const B: usize = 2;
    const T: usize = 6;
    const D: usize = 3;
    const P: usize = 2;

    fn vals(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = ((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) % 1000;
                let x = x as f32 / 1000.0;
                lo + (hi - lo) * x
            })
            .collect()
    }

    /// The recurrence token by token on the host, in f64 complex arithmetic.
    fn reference(h: &[f32], decay: &[f32], theta: &[f32], c_re: &[f32], c_im: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; B * T * D];
        for b in 0..B {
            for d in 0..D {
                let mut s = [(0.0f64, 0.0f64); P];
                for t in 0..T {
                    let x = h[(b * T + t) * D + d] as f64;
                    let mut out = 0.0;
                    for (n, s) in s.iter_mut().enumerate() {
                        let i = d * P + n;
                        let (m, a) = (decay[i] as f64, theta[i] as f64);
                        let (l_re, l_im) = (m * a.cos(), m * a.sin());
                        *s = (l_re * s.0 - l_im * s.1 + x, l_re * s.1 + l_im * s.0);
                        out += 2.0 * (c_re[i] as f64 * s.0 - c_im[i] as f64 * s.1);
                    }
                    y[(b * T + t) * D + d] = out as f32;
                }
            }
        }
        y
    }

    fn call(ins: &[Array], cache: Option<&mut DecodeCache>) -> Vec<f32> {
        let masters = HashMap::new();
        let ids = [0usize; 5];
        let mut ctx = Ctx {
            dtype: Dtype::F32,
            dropout_keys: None,
            cache,
            node: 0,
            masters: &masters,
            input_ids: &ids,
            batch: B,
            seq: ins[0].dim(1),
        };
        lti_conv(ins, &mut ctx).unwrap().to_vec_f32().unwrap()
    }

    #[test]
    fn the_blocked_convolution_equals_the_whole_one() {
        let (b, t, d) = (2, 11, 3);
        let h = Array::from_f32(&vals(b * t * d, 7, -1.0, 1.0), &[b, t, d]).unwrap();
        let k = Array::from_f32(&vals(d * t, 8, -1.0, 1.0), &[d, t]).unwrap();
        let whole = causal_conv(&k, &h).unwrap().to_vec_f32().unwrap();
        for block in [1, 4, 5, 11, 16] {
            let blocked = causal_conv_blocked(&k, &h, block)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            assert_eq!(blocked.len(), whole.len());
            for (x, y) in blocked.iter().zip(&whole) {
                assert!((x - y).abs() < 1e-5, "block {block}: {x} vs {y}");
            }
        }
        // and so are their gradients (for the kernel and the input)
        let proj = Array::from_f32(&vals(b * t * d, 9, -1.0, 1.0), &[b, t, d]).unwrap();
        let grads = |blocked: bool| {
            let f = |ins: &[Array]| {
                let y = if blocked {
                    causal_conv_blocked(&ins[0], &ins[1], 4)?
                } else {
                    causal_conv(&ins[0], &ins[1])?
                };
                Ok(vec![y.mul(&proj)?.sum_all()?])
            };
            let (_, g) = mixsweep_mlx::value_and_grad(f, &[k.clone(), h.clone()], &[0, 1]).unwrap();
            g.iter()
                .map(|a| a.to_vec_f32().unwrap())
                .collect::<Vec<_>>()
        };
        for (gb, gw) in grads(true).iter().zip(grads(false).iter()) {
            for (x, y) in gb.iter().zip(gw) {
                assert!((x - y).abs() < 1e-4, "gradient: {x} vs {y}");
            }
        }
    }

    #[test]
    fn convolution_and_cached_decoding_match_the_recurrence() {
        let h = vals(B * T * D, 1, -1.0, 1.0);
        let decay = vals(D * P, 2, 0.3, 0.95);
        let theta = vals(D * P, 3, -2.0, 2.0);
        let (c_re, c_im) = (vals(D * P, 4, -1.0, 1.0), vals(D * P, 5, -1.0, 1.0));
        let want = reference(&h, &decay, &theta, &c_re, &c_im);
        let param = |v: &[f32]| Array::from_f32(v, &[D, P]).unwrap();
        let params = [param(&decay), param(&theta), param(&c_re), param(&c_im)];
        let with =
            |x: Array| -> Vec<Array> { std::iter::once(x).chain(params.iter().cloned()).collect() };
        let full = Array::from_f32(&h, &[B, T, D]).unwrap();
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() < 1e-4 * (1.0 + y.abs()))
        };
        let got = call(&with(full.clone()), None);
        assert!(close(&got, &want), "{got:?}\n{want:?}");
        // decoding: 4 tokens, then 1, then 1, from the saved state
        let mut cache = DecodeCache::new();
        let mut pieces = vec![vec![]; B];
        for (from, to) in [(0, 4), (4, 5), (5, 6)] {
            let part = full.slice_axis(1, from, to).unwrap();
            let y = call(&with(part), Some(&mut cache));
            for (b, piece) in pieces.iter_mut().enumerate() {
                piece.extend_from_slice(&y[b * (to - from) * D..(b + 1) * (to - from) * D]);
            }
            cache.position = to;
        }
        let decoded: Vec<f32> = pieces.concat();
        assert!(close(&decoded, &want), "{decoded:?}\n{want:?}");
    }
}
