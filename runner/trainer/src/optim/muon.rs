//! Muon (mixlab §6.3) for `[in, out]` matrices: momentum `M = μM + g` (no dampening), Nesterov
//! `U = g + μM` (or `U = M`), Newton-Schulz orthogonalisation (quintic, `(a, b, c) = (3.4445,
//! -4.7750, 2.0315)`, `steps` iterations, on `X / (||X||_F + 1e-7)`, transposed when rows > cols),
//! the aspect factor `sqrt(max(1, in/out))`, then decoupled decay and `w -= lr · U`.
//! Variants: MuonEq-R normalises each row of the update to unit norm; NorMuon divides each index of
//! the longer dimension by the root of its running mean square (β2) and restores `||U||_F`.
//!
//! Orthogonalisation runs in the run's compute dtype (mixlab: always bfloat16); state is float32.
//! State: `muon_momentum` (and `normuon_v`, one entry per index of the longer dimension).

use super::{Hyper, Optimizer, StepInputs};
use mixsweep_mlx::{Array, Dtype, Result};
use mixsweep_model::config::optimizer::MuonVariant;

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

/// The orthogonal factor of `u` (`[r, c]`) by `steps` quintic Newton-Schulz iterations.
pub fn newton_schulz(u: &Array, steps: usize, dtype: Dtype) -> Result<Array> {
    let (a, b, c) = (3.4445f32, -4.7750f32, 2.0315f32);
    let tall = u.dim(0) > u.dim(1);
    let mut x = u.astype(dtype)?;
    if tall {
        x = x.t()?;
    }
    let norm = x
        .astype(Dtype::F32)?
        .square()?
        .sum_all()?
        .sqrt()?
        .add_scalar(1e-7)?;
    x = x.div(&norm.astype(dtype)?)?;
    for _ in 0..steps {
        let gram = x.matmul(&x.t()?)?;
        let poly = gram
            .mul_scalar(b)?
            .add(&gram.matmul(&gram)?.mul_scalar(c)?)?;
        x = x.mul_scalar(a)?.add(&poly.matmul(&x)?)?;
    }
    if tall {
        x = x.t()?;
    }
    x.astype(Dtype::F32)
}

impl Muon {
    fn rows_longer(shape: &[usize]) -> bool {
        shape[0] >= shape[1]
    }
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
        h: Hyper,
        _s: &StepInputs<'_>,
    ) -> Result<(Array, Vec<Array>)> {
        let shape = p.shape();
        let m = state[0].mul_scalar(self.momentum)?.add(g)?;
        let u = if self.nesterov {
            g.add(&m.mul_scalar(self.momentum)?)?
        } else {
            m.clone()
        };
        let (rows, cols) = (shape[0] as f32, shape[1] as f32);
        let mut u =
            newton_schulz(&u, self.steps, self.dtype)?.mul_scalar((rows / cols).max(1.0).sqrt())?;
        let mut new_state = vec![m];
        match self.variant {
            MuonVariant::Plain => {}
            MuonVariant::EqR => {
                let row_norm = u.square()?.sum(&[1], true)?.sqrt()?.add_scalar(1e-7)?;
                u = u.div(&row_norm)?;
            }
            MuonVariant::NorMuon => {
                let by_rows = Self::rows_longer(&shape);
                let (axis, keep) = if by_rows {
                    (1, [shape[0], 1])
                } else {
                    (0, [1, shape[1]])
                };
                let mean_sq = u.square()?.mean(&[axis], false)?;
                let v = state[1]
                    .mul_scalar(self.beta2)?
                    .add(&mean_sq.mul_scalar(1.0 - self.beta2)?)?;
                let before = u.square()?.sum_all()?.sqrt()?;
                let denom = v
                    .maximum_scalar(1e-10)?
                    .sqrt()?
                    .reshape(&keep.map(|d| d as i32))?;
                u = u.div(&denom)?;
                let after = u.square()?.sum_all()?.sqrt()?.add_scalar(1e-12)?;
                u = u.mul(&before.div(&after)?)?;
                new_state.push(v);
            }
        }
        let mut p = p.clone();
        if h.weight_decay > 0.0 {
            p = p.sub(&p.mul(&lr.mul_scalar(h.weight_decay)?)?)?;
        }
        Ok((p.sub(&u.mul(lr)?)?, new_state))
    }
}
