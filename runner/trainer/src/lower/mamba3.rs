//! Mamba-3's exponential-trapezoidal scan with a rotating state ([`Mamba3Scan`], the recurrence of
//! `mamba3-canonical`).
//!
//! Per channel `i` and state pair `p` the phase `φ_t = φ_{t−1} + Δ_t θ_t` rotates the group's
//! `B_t, C_t` (`(a, b) -> (a cos φ + b sin φ, b cos φ − a sin φ)`); with `v_t = B̃_t u_t`,
//!
//! ```text
//! s_t = e^{max(Δ_t A, floor)} s_{t−1} + (1 − λ_t) Δ_t e^{Δ_t A} v_{t−1} + λ_t Δ_t v_t,   y_t = Σ_n s_t C̃_t
//! ```
//! `floor = −SCAN_LOG_BUDGET / chunk` as in every chunked scan here (the state update only; `β`
//! keeps the unfloored decay).
//!
//! Training on CUDA runs it as one fused kernel (`mixsweep_mlx::kernels::fused_mamba3_scan`: state,
//! phase and rotations in registers, checkpoints every 16 steps, a reverse adjoint kernel). The
//! chunked form here runs everywhere else and when decoding: the phase as a cumulative sum, the
//! rotated `B̃, C̃ [B, T, I, N]` materialised, the state by [`linear_recurrence`]. When decoding it
//! continues from the saved phase, state and last `v`, and saves them again. Float32.

use super::fused::{self, Fused};
use super::recurrent::linear_recurrence;
use super::{Ctx, State};
use mixsweep_mlx::kernels::{fused_mamba3_fits, fused_mamba3_scan};
use mixsweep_mlx::{Array, Dtype, Result, concatenate};
use mixsweep_model::ops::Mamba3Scan;

/// What the scan carries from one call to the next: the phase `[B, I, N/2]`, the state and the
/// last input term `v` `[B, I, N]`.
pub struct Carry {
    pub phase: Array,
    pub state: Array,
    pub input: Array,
}

impl Carry {
    /// One array `[B, I, N/2 + 2N]` (a decode cache entry).
    fn pack(&self) -> Result<Array> {
        concatenate(&[&self.phase, &self.state, &self.input], -1)
    }

    fn unpack(packed: &Array, pairs: usize) -> Result<Carry> {
        let n = 2 * pairs;
        Ok(Carry {
            phase: packed.slice_axis(2, 0, pairs)?,
            state: packed.slice_axis(2, pairs, pairs + n)?,
            input: packed.slice_axis(2, pairs + n, pairs + 2 * n)?,
        })
    }
}

/// The `mamba3_scan` op: the fused kernel when training on CUDA, else the chunked form (from the
/// saved carry when decoding, saving it again).
pub fn mamba3_scan(s: &Mamba3Scan, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let [u, delta, lambda, theta, b, c, a_log] = inputs else {
        unreachable!("the shape rule checked seven inputs")
    };
    let (t, pairs) = (u.dim(1), theta.dim(3));
    let l = s.chunk.clamp(1, t.max(1));
    if !ctx.decoding() && fused_mamba3_fits(2 * pairs) && fused::enabled(Fused::Mamba3) {
        let a = a_log.astype(Dtype::F32)?.exp()?.neg()?;
        let y = fused_mamba3_scan(u, delta, lambda, theta, b, c, &a, l)?;
        return y.astype(u.dtype()?);
    }
    let start = match ctx.state() {
        Some(State::Hidden(h)) => Some(Carry::unpack(h, pairs)?),
        _ => None,
    };
    let (y, carry) = mamba3_chunked(inputs, l, start.as_ref())?;
    if ctx.decoding() {
        ctx.save(State::Hidden(carry.pack()?));
    }
    Ok(y)
}

/// Rotates the pairs of the group-shared `x [B, T, G, N]` by `cos, sin [B, T, I, N/2]`, as
/// `[B, T, I, N]` (channel `i` in group `i / (I/G)`).
fn rotate(x: &Array, cos: &Array, sin: &Array) -> Result<Array> {
    let (bsz, t, g, n) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    let i = cos.dim(2);
    let dims = |v: &[usize]| v.iter().map(|&d| d as i32).collect::<Vec<_>>();
    let pairs = x.reshape(&dims(&[bsz, t, g, 1, n / 2, 2]))?;
    let (re, im) = (pairs.slice_axis(5, 0, 1)?, pairs.slice_axis(5, 1, 2)?);
    let per_group = dims(&[bsz, t, g, i / g, n / 2, 1]);
    let (cos, sin) = (cos.reshape(&per_group)?, sin.reshape(&per_group)?);
    let first = re.mul(&cos)?.add(&im.mul(&sin)?)?;
    let second = im.mul(&cos)?.sub(&re.mul(&sin)?)?;
    concatenate(&[&first, &second], -1)?.reshape(&dims(&[bsz, t, i, n]))
}

/// The chunked form with chunks of `l` steps from `start` (zeros when `None`): `y [B, T, I]` in
/// `u`'s dtype and the carry after the last step (float32).
pub fn mamba3_chunked(inputs: &[Array], l: usize, start: Option<&Carry>) -> Result<(Array, Carry)> {
    let f = |k: usize| inputs[k].astype(Dtype::F32);
    let (u, delta, lambda, theta, b, c, a_log) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?, f(5)?, f(6)?);
    let t = u.dim(1);
    let dt = delta.expand_dims(-1)?; // [B, T, I, 1]
    let mut phase = dt.mul(&theta)?.cumsum(1, false, true)?; // [B, T, I, P]
    if let Some(s) = start {
        phase = phase.add(&s.phase.expand_dims(1)?)?;
    }
    let (cos, sin) = (phase.cos()?, phase.sin()?);
    let (b_rot, c_rot) = (rotate(&b, &cos, &sin)?, rotate(&c, &cos, &sin)?);
    let v = b_rot.mul(&u.expand_dims(-1)?)?; // [B, T, I, N]
    let first = match start {
        Some(s) => s.input.expand_dims(1)?,
        None => Array::zeros(&[v.dim(0), 1, v.dim(2), v.dim(3)], Dtype::F32)?,
    };
    let v_prev = if t > 1 {
        concatenate(&[&first, &v.slice_axis(1, 0, t - 1)?], 1)?
    } else {
        first
    };
    let log_a = dt.mul(&a_log.exp()?.neg()?)?; // Δ A [B, T, I, N]
    let lam = lambda.expand_dims(-1)?;
    let beta = lam.neg()?.add_scalar(1.0)?.mul(&dt)?.mul(&log_a.exp()?)?;
    let gamma = lam.mul(&dt)?;
    let drive = gamma.mul(&v)?.add(&beta.mul(&v_prev)?)?;
    let (states, last) = linear_recurrence(&log_a, &drive, start.map(|s| &s.state), l)?;
    let y = states.mul(&c_rot)?.sum(&[-1], false)?;
    let at_last = |x: &Array| -> Result<Array> {
        let (bsz, i, k) = (x.dim(0) as i32, x.dim(2) as i32, x.dim(3) as i32);
        x.slice_axis(1, t - 1, t)?.reshape(&[bsz, i, k])
    };
    let carry = Carry {
        phase: at_last(&phase)?,
        state: last,
        input: at_last(&v)?,
    };
    Ok((y.astype(inputs[0].dtype()?)?, carry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::test_support::{assert_fused_matches, host};

    /// `[u, delta, lambda, theta, b, c, a_log]` for `[b, t, i]` channels in `g` groups of state `n`.
    fn inputs(b: usize, t: usize, i: usize, g: usize, n: usize) -> Vec<Array> {
        let arr = |v: Vec<f32>, s: &[usize]| Array::from_f32(&v, s).unwrap();
        let bti = b * t * i;
        vec![
            arr(host(bti, 81, -1.0, 1.0), &[b, t, i]),
            arr(host(bti, 82, 0.01, 2.0), &[b, t, i]),
            arr(host(bti, 83, 0.0, 1.0), &[b, t, i]),
            arr(host(bti * n / 2, 84, -2.0, 2.0), &[b, t, i, n / 2]),
            arr(host(b * t * g * n, 85, -1.0, 1.0), &[b, t, g, n]),
            arr(host(b * t * g * n, 86, -1.0, 1.0), &[b, t, g, n]),
            arr(host(i * n, 87, -1.0, 2.5), &[i, n]),
        ]
    }

    /// Splitting a sequence anywhere and continuing from the carry gives the one-pass output (what
    /// cached decoding relies on): phase, state and the previous input term all carry over.
    #[test]
    fn chunked_form_continues_from_its_carry() {
        let (b, t, i, g, n) = (2, 13, 6, 2, 4);
        let all = inputs(b, t, i, g, n);
        let whole = mamba3_chunked(&all, 4, None)
            .unwrap()
            .0
            .to_vec_f32()
            .unwrap();
        for cut in [1, 5, 12] {
            let part = |lo: usize, hi: usize| -> Vec<Array> {
                all.iter()
                    .enumerate()
                    .map(|(k, x)| {
                        if k == 6 {
                            x.clone()
                        } else {
                            x.slice_axis(1, lo, hi).unwrap()
                        }
                    })
                    .collect()
            };
            let (y1, carry) = mamba3_chunked(&part(0, cut), 4, None).unwrap();
            let (y2, _) = mamba3_chunked(&part(cut, t), 4, Some(&carry)).unwrap();
            let joined = concatenate(&[&y1, &y2], 1).unwrap().to_vec_f32().unwrap();
            for (k, (got, want)) in joined.iter().zip(&whole).enumerate() {
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "cut {cut} [{k}]: {got} vs {want}"
                );
            }
        }
    }

    /// On CUDA: the fused kernel's output and its seven gradients equal the chunked form's (MLX
    /// autodiff), with a partial checkpoint chunk, partial channel blocks, decays below the floor and
    /// the example's shape. The kernel itself matches the step-by-step recurrence to 1e-4 in
    /// `runner/mlx/tests/mamba3_scan_kernel_emulated.rs`. Run on a GPU machine with `--ignored`.
    #[test]
    #[ignore = "needs MLX's CUDA backend: run with --ignored on an NVIDIA machine"]
    fn fused_mamba3_matches_the_chunked_form_and_its_gradients() {
        assert!(
            mixsweep_mlx::kernels::fused_scan_available(),
            "the fused kernels need MLX's CUDA backend (libmlx of mlx-cuda-13)"
        );
        for (b, t, i, g, n, chunk) in [
            (2, 37, 12, 3, 8, 8),
            (1, 18, 72, 1, 16, 4),
            (3, 40, 80, 2, 4, 16),
            (16, 256, 384, 4, 16, 8),
        ] {
            let l = chunk.min(t);
            assert_fused_matches(
                &inputs(b, t, i, g, n),
                |x| {
                    let a = x[6].exp()?.neg()?;
                    fused_mamba3_scan(&x[0], &x[1], &x[2], &x[3], &x[4], &x[5], &a, l)
                },
                |x| Ok(mamba3_chunked(x, l, None)?.0),
                &["du", "ddelta", "dlambda", "dtheta", "db", "dc", "da_log"],
                &[2e-3, 1e-2, 2e-3, 2e-3, 2e-3, 2e-3, 1e-2],
                &format!("b={b} t={t} i={i} g={g} n={n}"),
            );
        }
    }
}
