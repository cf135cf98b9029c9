//! AdamW with mixlab's order: decoupled weight decay first, then the bias-corrected Adam step
//! (mixlab §6.3). State: `adam_m`, `adam_v`.

use super::{Hyper, Optimizer, StepInputs, bias_correction};
use mixsweep_mlx::{Array, Result};

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
        h: Hyper,
        s: &StepInputs<'_>,
    ) -> Result<(Array, Vec<Array>)> {
        let (b1, b2) = (self.beta1, self.beta2);
        let m = state[0].mul_scalar(b1)?.add(&g.mul_scalar(1.0 - b1)?)?;
        let v = state[1]
            .mul_scalar(b2)?
            .add(&g.square()?.mul_scalar(1.0 - b2)?)?;
        let mut p = p.clone();
        if h.weight_decay > 0.0 {
            p = p.sub(&p.mul(&lr.mul_scalar(h.weight_decay)?)?)?;
        }
        let m_hat = m.div(&bias_correction(b1, s.t)?)?;
        let v_hat = v.div(&bias_correction(b2, s.t)?)?;
        let update = m_hat.div(&v_hat.sqrt()?.add_scalar(self.epsilon)?)?;
        Ok((p.sub(&update.mul(lr)?)?, vec![m, v]))
    }
}
