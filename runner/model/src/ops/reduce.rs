//! Reductions along one axis.

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
