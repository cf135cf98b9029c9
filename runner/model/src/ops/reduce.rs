//! Reductions along one axis, and top-k routing over the last one.

use super::{Rule, arity, axis};
use crate::ir::Shape;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Softmax {
    pub axis: i64,
}

impl Rule for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        axis(self.axis, inputs[0].len())?;
        Ok(vec![inputs[0].clone()])
    }
}

/// Mean over `axis`, which is removed (mixlab's `mean_axis`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mean {
    pub axis: i64,
}

impl Rule for Mean {
    fn name(&self) -> &'static str {
        "mean"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        let a = axis(self.axis, inputs[0].len())?;
        let mut s = inputs[0].clone();
        s.remove(a);
        Ok(vec![s])
    }
}

/// Top-k routing over the last axis of router probabilities `p [..., E]`: outputs the gates
/// `p ⊙ m / Σ(p ⊙ m)` (the selected probabilities renormalised to sum to 1; differentiable through
/// `p`) and the selection `m` (1 for the `k` largest of each row, ties to the lower index; no
/// gradient).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopK {
    pub k: usize,
}

impl Rule for TopK {
    fn name(&self) -> &'static str {
        "top_k"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        let e = inputs[0].last().and_then(|d| d.fixed());
        if e.is_none_or(|e| self.k == 0 || self.k > e) {
            return Err(format!(
                "selects k={} of a fixed last axis at least that long, got {}",
                self.k,
                crate::ir::show(inputs[0])
            ));
        }
        Ok(vec![inputs[0].clone(), inputs[0].clone()])
    }
}
