//! LAMB (mixlab §6.3): the Adam direction plus decay, `u = m̂/(sqrt(v̂)+ε) + wd·w`, scaled per weight
//! by the trust ratio `r = ||w|| / ||u||` (capped; 1 when a norm is 0 or not finite):
//! `w -= lr · r · u`. State: `lamb_m`, `lamb_v`.

use super::{Optimizer, StepInputs, adam_direction};
use mixsweep_mlx::{Array, Dtype, Result, where_};

#[derive(Debug)]
pub struct Lamb {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 0 = uncapped.
    pub trust_ratio_cap: f32,
}

impl Optimizer for Lamb {
    fn name(&self) -> &'static str {
        "lamb"
    }

    fn slots(&self, shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        vec![("lamb_m", shape.to_vec()), ("lamb_v", shape.to_vec())]
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
        let (mut u, m, v) = adam_direction(state, g, (self.beta1, self.beta2, self.eps), s.t)?;
        if weight_decay > 0.0 {
            u = u.add(&p.mul_scalar(weight_decay)?)?;
        }
        let w_norm = p.square()?.sum_all()?.sqrt()?;
        let u_norm = u.square()?.sum_all()?.sqrt()?;
        let ratio = w_norm.div(&u_norm)?;
        let zero = Array::scalar(0.0, Dtype::F32)?;
        let usable = w_norm
            .greater(&zero)?
            .logical_and(&u_norm.greater(&zero)?)?
            .logical_and(&ratio.is_nan()?.logical_not()?)?
            .logical_and(&ratio.is_inf()?.logical_not()?)?;
        let mut r = where_(&usable, &ratio, &Array::scalar(1.0, Dtype::F32)?)?;
        if self.trust_ratio_cap > 0.0 {
            r = r.minimum(&Array::scalar(self.trust_ratio_cap, Dtype::F32)?)?;
        }
        Ok((p.sub(&u.mul(&r.mul(lr)?)?)?, vec![m, v]))
    }
}
