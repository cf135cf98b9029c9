//! Muon (mixlab §6.3) for `[in, out]` matrices: momentum `M = μM + g` (no dampening), Nesterov
//! `U = g + μM` (or `U = M`), Newton-Schulz orthogonalisation (quintic, `(a, b, c) = (3.4445,
//! -4.7750, 2.0315)`, `steps` iterations, on `X / (||X||_F + 1e-7)`, transposed when rows > cols),
//! the aspect factor `sqrt(max(1, in/out))`, then decoupled decay and `w -= lr · U`.
//! Variants: MuonEq-R normalises each row of the update to unit norm; NorMuon divides each index of
//! the longer dimension by the root of its running mean square (β2) and restores `||U||_F`.
//!
//! Orthogonalisation runs in the run's compute dtype (mixlab: always bfloat16); state is float32.
//! State: `muon_momentum` (and `normuon_v`, one entry per index of the longer dimension).

use super::{Group, Optimizer, StepInputs};
use mixsweep_mlx::{Array, Dtype, Result};
use mixsweep_model::config::optimizer::MuonVariant;

#[derive(Debug)]
pub struct Muon {
    pub variant: MuonVariant,
    pub momentum: f32,
    pub steps: usize,
    pub nesterov: bool,
    /// NorMuon's second-moment decay.
    pub beta2: f32,
    /// Precision of the Newton-Schulz iterations.
    pub dtype: Dtype,
}

/// The orthogonal factor of each matrix of `u` (`[k, r, c]`: `k` matrices at once) by `steps`
/// quintic Newton-Schulz iterations, each on `X / (||X||_F + 1e-7)`.
pub fn newton_schulz(u: &Array, steps: usize, dtype: Dtype) -> Result<Array> {
    let (a, b, c) = (3.4445f32, -4.7750f32, 2.0315f32);
    let tall = u.dim(1) > u.dim(2);
    let swap = |x: &Array| x.transpose(&[0, 2, 1]);
    let mut x = u.astype(dtype)?;
    if tall {
        x = swap(&x)?;
    }
    let norm = x
        .astype(Dtype::F32)?
        .square()?
        .sum(&[1, 2], true)?
        .sqrt()?
        .add_scalar(1e-7)?;
    x = x.div(&norm.astype(dtype)?)?;
    for _ in 0..steps {
        let gram = x.matmul(&swap(&x)?)?;
        let poly = gram
            .mul_scalar(b)?
            .add(&gram.matmul(&gram)?.mul_scalar(c)?)?;
        x = x.mul_scalar(a)?.add(&poly.matmul(&x)?)?;
    }
    if tall {
        x = swap(&x)?;
    }
    x.astype(Dtype::F32)
}

/// `[k, ...]` from `k` arrays of one shape.
fn stack(xs: &[&Array]) -> Result<Array> {
    let expanded = xs
        .iter()
        .map(|x| x.expand_dims(0))
        .collect::<Result<Vec<_>>>()?;
    mixsweep_mlx::concatenate(&expanded.iter().collect::<Vec<_>>(), 0)
}

/// The `k` arrays of a stacked `[k, ...]` one.
fn unstack(x: &Array) -> Result<Vec<Array>> {
    let k = x.dim(0);
    let shape: Vec<i32> = x.shape()[1..].iter().map(|&d| d as i32).collect();
    let parts = mixsweep_mlx::split(x, &(1..k as i32).collect::<Vec<_>>(), 0)?;
    parts.iter().map(|p| p.reshape(&shape)).collect()
}

impl Optimizer for Muon {
    fn name(&self) -> &'static str {
        match self.variant {
            MuonVariant::Plain => "muon",
            MuonVariant::EqR => "muon_eq_r",
            MuonVariant::NorMuon => "normuon",
        }
    }

    fn slots(&self, shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        let mut slots = vec![("muon_momentum", shape.to_vec())];
        if self.variant == MuonVariant::NorMuon {
            slots.push(("normuon_v", vec![shape[0].max(shape[1])]));
        }
        slots
    }

    fn update(
        &self,
        p: &Array,
        g: &Array,
        state: &[Array],
        lr: &Array,
        weight_decay: f32,
        s: &StepInputs<'_>,
    ) -> Result<(Array, Vec<Array>)> {
        let group = Group {
            params: vec![p],
            grads: vec![g],
            states: vec![state],
        };
        Ok(self.update_group(group, lr, weight_decay, s)?.remove(0))
    }

    fn update_group(
        &self,
        grp: Group<'_>,
        lr: &Array,
        weight_decay: f32,
        _s: &StepInputs<'_>,
    ) -> Result<Vec<(Array, Vec<Array>)>> {
        let shape = grp.params[0].shape();
        let (rows, cols) = (shape[0], shape[1]);
        let g = stack(&grp.grads)?;
        let m = stack(&grp.states.iter().map(|s| &s[0]).collect::<Vec<_>>())?
            .mul_scalar(self.momentum)?
            .add(&g)?;
        let u = if self.nesterov {
            g.add(&m.mul_scalar(self.momentum)?)?
        } else {
            m.clone()
        };
        let aspect = (rows as f32 / cols as f32).max(1.0).sqrt();
        let mut u = newton_schulz(&u, self.steps, self.dtype)?.mul_scalar(aspect)?;
        let mut second: Option<Array> = None;
        match self.variant {
            MuonVariant::Plain => {}
            MuonVariant::EqR => {
                let row_norm = u.square()?.sum(&[2], true)?.sqrt()?.add_scalar(1e-7)?;
                u = u.div(&row_norm)?;
            }
            MuonVariant::NorMuon => {
                // one second moment per index of the longer dimension
                let (axis, keep) = if rows >= cols {
                    (2, [-1, rows as i32, 1])
                } else {
                    (1, [-1, 1, cols as i32])
                };
                let mean_sq = u.square()?.mean(&[axis], false)?;
                let v0 = stack(&grp.states.iter().map(|s| &s[1]).collect::<Vec<_>>())?;
                let v = v0
                    .mul_scalar(self.beta2)?
                    .add(&mean_sq.mul_scalar(1.0 - self.beta2)?)?;
                let before = u.square()?.sum(&[1, 2], true)?.sqrt()?;
                u = u.div(&v.maximum_scalar(1e-10)?.sqrt()?.reshape(&keep)?)?;
                let after = u.square()?.sum(&[1, 2], true)?.sqrt()?.add_scalar(1e-12)?;
                u = u.mul(&before.div(&after)?)?;
                second = Some(v);
            }
        }
        let (us, ms) = (unstack(&u)?, unstack(&m)?);
        let vs = second.as_ref().map(unstack).transpose()?;
        let mut out = Vec::with_capacity(us.len());
        for (i, (u, m)) in us.iter().zip(ms).enumerate() {
            let mut p = grp.params[i].clone();
            if weight_decay > 0.0 {
                p = p.sub(&p.mul(&lr.mul_scalar(weight_decay)?)?)?;
            }
            let mut state = vec![m];
            if let Some(vs) = &vs {
                state.push(vs[i].clone());
            }
            out.push((p.sub(&u.mul(lr)?)?, state));
        }
        Ok(out)
    }
}
