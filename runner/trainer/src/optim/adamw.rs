//! AdamW with mixlab's order: decoupled weight decay first, then the bias-corrected Adam step
//! (mixlab §6.3). State: `adam_m`, `adam_v`.

use super::{Optimizer, StepInputs, adam_direction};
use mixsweep_mlx::{Array, Result};

#[derive(Debug)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
}

impl Optimizer for AdamW {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn slots(&self, shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        vec![("adam_m", shape.to_vec()), ("adam_v", shape.to_vec())]
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
        let betas = (self.beta1, self.beta2, self.epsilon);
        let (update, m, v) = adam_direction(state, g, betas, s.t)?;
        let mut p = p.clone();
        if weight_decay > 0.0 {
            p = p.sub(&p.mul(&lr.mul_scalar(weight_decay)?)?)?;
        }
        Ok((p.sub(&update.mul(lr)?)?, vec![m, v]))
    }
}
