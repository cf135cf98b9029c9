//! Normalisation over the last axis, computed in float32.

use super::{Rule, arity, last_fixed};
use crate::ir::{Dim, Shape, show};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NormKind {
    /// `x · rsqrt(mean(x²) + eps) [· scale]`.
    Rms,
    /// `(x - mean) · rsqrt(var + eps) [· scale + bias]`.
    Layer,
}

/// A norm over the last axis: inputs `[x]` (no affine), `[x, scale]`, or `[x, scale, bias]`
/// (LayerNorm); scale and bias are `[D]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Norm {
    pub kind: NormKind,
    pub eps: f32,
}

impl Rule for Norm {
    fn name(&self) -> &'static str {
        match self.kind {
            NormKind::Rms => "rmsnorm",
            NormKind::Layer => "layernorm",
        }
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 3)?;
        if self.kind == NormKind::Rms && inputs.len() == 3 {
            return Err("rmsnorm takes [x] or [x, scale]".into());
        }
        let d = last_fixed(inputs[0])?;
        for p in &inputs[1..] {
            if **p != vec![Dim::Fixed(d)] {
                return Err(format!(
                    "scale and bias must be [{d}] for an input of {}, got {}",
                    show(inputs[0]),
                    show(p)
                ));
            }
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return Err(format!("eps {} must be > 0", self.eps));
        }
        Ok(vec![inputs[0].clone()])
    }
}
