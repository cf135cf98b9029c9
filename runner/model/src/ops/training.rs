//! Training-only ops: dropout, the loss and auxiliary losses.

use super::{Rule, arity};
use crate::ir::{Shape, show};
use serde::Serialize;

/// Inverted dropout (train only; identity at eval). `ordinal` selects this op's random key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropout {
    pub rate: f32,
    pub ordinal: usize,
}

impl Rule for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        if !(0.0..1.0).contains(&self.rate) {
            return Err(format!("rate {} must be in [0, 1)", self.rate));
        }
        Ok(vec![inputs[0].clone()])
    }
}

/// Mean cross-entropy (float32) of `logits [B, T, V]` against integer `targets [B, T]` -> scalar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrossEntropy;

impl Rule for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        let (l, t) = (inputs[0], inputs[1]);
        if l.len() != t.len() + 1 || l[..t.len()] != t[..] {
            return Err(format!(
                "logits {} do not match targets {}",
                show(l),
                show(t)
            ));
        }
        Ok(vec![vec![]])
    }
}

/// PaLM's z-loss: `coef · mean(logsumexp(logits)²)` over `logits [B, T, V]` -> scalar (float32).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZLoss {
    pub coef: f32,
}

impl Rule for ZLoss {
    fn name(&self) -> &'static str {
        "z_loss"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        if inputs[0].len() < 2 || !(self.coef > 0.0 && self.coef.is_finite()) {
            return Err(format!(
                "needs logits [..., V] and coef > 0, got {} and {}",
                show(inputs[0]),
                self.coef
            ));
        }
        Ok(vec![vec![]])
    }
}

/// The Switch-Transformer load-balancing loss of a mixture of experts over router probabilities
/// `p [B, T, E]` and the top-k selection `m [B, T, E]`:
/// `weight · E · Σ_e mean(p_e) · mean(m_e) / k` (1 when routing is uniform) -> scalar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadBalance {
    pub weight: f32,
    pub k: usize,
}

impl Rule for LoadBalance {
    fn name(&self) -> &'static str {
        "load_balance"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        if inputs[0].len() < 2 || inputs[0] != inputs[1] || self.k == 0 {
            return Err(format!(
                "needs probabilities and selection of one shape [..., E], got {}",
                inputs
                    .iter()
                    .map(|s| show(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(vec![vec![]])
    }
}
