//! Shape ops: reshape, transpose, concatenate, split, slice, and constants.

use super::{Rule, arity, axis};
use crate::ir::{Dim, Shape, show};
use serde::Serialize;

/// Element count of a symbolic shape: `(fixed product, powers of B, powers of T)`.
fn size(s: &[Dim]) -> (usize, usize, usize) {
    s.iter().fold((1, 0, 0), |(f, b, t), d| match d {
        Dim::Fixed(n) => (f * n, b, t),
        Dim::Batch => (f, b + 1, t),
        Dim::Seq => (f, b, t + 1),
        Dim::Tokens => (f, b + 1, t + 1),
    })
}

/// A new shape with the same elements (row-major); may use `B`, `T`, `BT`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reshape {
    pub shape: Shape,
}

impl Rule for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        if size(inputs[0]) != size(&self.shape) || self.shape.contains(&Dim::Fixed(0)) {
            return Err(format!(
                "cannot reshape {} into {}: the number of elements differs",
                show(inputs[0]),
                show(&self.shape)
            ));
        }
        Ok(vec![self.shape.clone()])
    }
}

/// Permutes the axes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transpose {
    pub axes: Vec<usize>,
}

impl Rule for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        let x = inputs[0];
        let mut sorted = self.axes.clone();
        sorted.sort_unstable();
        if sorted != (0..x.len()).collect::<Vec<_>>() {
            return Err(format!(
                "axes {:?} are not a permutation of the {} axes of {}",
                self.axes,
                x.len(),
                show(x)
            ));
        }
        Ok(vec![self.axes.iter().map(|&a| x[a]).collect()])
    }
}

/// Joins inputs along `axis` (their other dims equal, that one fixed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concat {
    pub axis: i64,
}

impl Rule for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        if inputs.is_empty() {
            return Err("takes at least 1 input".into());
        }
        let rank = inputs[0].len();
        let a = axis(self.axis, rank)?;
        let mut total = 0;
        for s in inputs {
            let same_rest = s.len() == rank && (0..rank).all(|i| i == a || s[i] == inputs[0][i]);
            let Some(n) = s.get(a).and_then(|d| d.fixed()).filter(|_| same_rest) else {
                return Err(format!(
                    "cannot concatenate {} along axis {}",
                    inputs
                        .iter()
                        .map(|s| show(s))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.axis
                ));
            };
            total += n;
        }
        let mut out = inputs[0].clone();
        out[a] = Dim::Fixed(total);
        Ok(vec![out])
    }
}

/// Splits the last axis into consecutive parts of these sizes (one output each).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub sizes: Vec<usize>,
}

impl Rule for Split {
    fn name(&self) -> &'static str {
        "split"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        let x = inputs[0];
        let total: usize = self.sizes.iter().sum();
        if x.last() != Some(&Dim::Fixed(total)) || self.sizes.contains(&0) {
            return Err(format!(
                "cannot split the last axis of {} into {:?}",
                show(x),
                self.sizes
            ));
        }
        Ok(self
            .sizes
            .iter()
            .map(|&n| {
                let mut s = x.clone();
                *s.last_mut().unwrap() = Dim::Fixed(n);
                s
            })
            .collect())
    }
}

/// `x[start:end:step]` along `axis` (a fixed axis).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slice {
    pub axis: i64,
    pub start: usize,
    pub end: usize,
    pub step: usize,
}

impl Rule for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        let x = inputs[0];
        let a = axis(self.axis, x.len())?;
        let n = x[a]
            .fixed()
            .ok_or_else(|| format!("can only slice a fixed axis, not {} of {}", x[a], show(x)))?;
        if self.step == 0 || self.start >= self.end || self.end > n {
            return Err(format!(
                "slice {}..{} step {} out of range for axis of size {n}",
                self.start, self.end, self.step
            ));
        }
        let mut s = x.clone();
        s[a] = Dim::Fixed((self.end - self.start).div_ceil(self.step));
        Ok(vec![s])
    }
}

/// A constant tensor filled with `value` (no inputs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Full {
    pub shape: Shape,
    pub value: f32,
}

impl Rule for Full {
    fn name(&self) -> &'static str {
        "full"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 0, 0)?;
        Ok(vec![self.shape.clone()])
    }
}

/// `[start, start + 1, ..., end - 1]` as float32 (no inputs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arange {
    pub start: i64,
    pub end: i64,
}

impl Rule for Arange {
    fn name(&self) -> &'static str {
        "arange"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 0, 0)?;
        if self.end <= self.start {
            return Err(format!("empty range {}..{}", self.start, self.end));
        }
        Ok(vec![vec![Dim::Fixed((self.end - self.start) as usize)]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_checks_symbolic_sizes() {
        let x = vec![Dim::Batch, Dim::Seq, Dim::Fixed(64)];
        let heads = Reshape {
            shape: vec![Dim::Batch, Dim::Seq, Dim::Fixed(4), Dim::Fixed(16)],
        };
        assert!(heads.shapes(&[&x]).is_ok());
        let flat = Reshape {
            shape: vec![Dim::Tokens, Dim::Fixed(64)],
        };
        assert!(flat.shapes(&[&x]).is_ok());
        let wrong = Reshape {
            shape: vec![Dim::Batch, Dim::Fixed(64)],
        };
        assert!(
            wrong
                .shapes(&[&x])
                .unwrap_err()
                .contains("number of elements")
        );
    }
}
