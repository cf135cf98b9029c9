//! Elementwise ops: unary functions (activations), binary ops with broadcasting, ops with a scalar,
//! clamping and selection. Comparisons give 0.0 / 1.0 in the input's dtype (mixlab's convention), and
//! `where` selects where its condition is non-zero.

use super::{Rule, arity, broadcast};
use crate::ir::Shape;
use serde::Serialize;

/// A unary function.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum UnaryKind {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Square,
    Abs,
    Tanh,
    Sigmoid,
    Sin,
    Cos,
    /// `x · σ(x)`.
    Silu,
    /// Exact GELU (erf).
    Gelu,
    /// GELU, tanh approximation (mixlab's `gelu`).
    GeluTanh,
    Relu,
    /// `LeakyReLU(x, slope)²`.
    LeakyReluSquared {
        slope: f32,
    },
    Softplus,
    /// `cap · tanh(x / cap)` (logit soft-capping).
    Softcap {
        cap: f32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unary(pub UnaryKind);

impl Rule for Unary {
    fn name(&self) -> &'static str {
        match self.0 {
            UnaryKind::Neg => "neg",
            UnaryKind::Exp => "exp",
            UnaryKind::Log => "log",
            UnaryKind::Sqrt => "sqrt",
            UnaryKind::Rsqrt => "rsqrt",
            UnaryKind::Reciprocal => "reciprocal",
            UnaryKind::Square => "square",
            UnaryKind::Abs => "abs",
            UnaryKind::Tanh => "tanh",
            UnaryKind::Sigmoid => "sigmoid",
            UnaryKind::Sin => "sin",
            UnaryKind::Cos => "cos",
            UnaryKind::Silu => "silu",
            UnaryKind::Gelu => "gelu_exact",
            UnaryKind::GeluTanh => "gelu",
            UnaryKind::Relu => "relu",
            UnaryKind::LeakyReluSquared { .. } => "leaky_relu_sq",
            UnaryKind::Softplus => "softplus",
            UnaryKind::Softcap { .. } => "softcap",
        }
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        Ok(vec![inputs[0].clone()])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
}

/// A binary op with NumPy broadcasting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Binary(pub BinaryKind);

impl Rule for Binary {
    fn name(&self) -> &'static str {
        match self.0 {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "sub",
            BinaryKind::Mul => "mul",
            BinaryKind::Div => "div",
            BinaryKind::Max => "maximum",
            BinaryKind::Min => "minimum",
            BinaryKind::Pow => "pow",
            BinaryKind::Lt => "lt",
            BinaryKind::Gt => "gt",
            BinaryKind::Le => "le",
            BinaryKind::Ge => "ge",
            BinaryKind::Eq => "eq",
        }
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        Ok(vec![broadcast(inputs[0], inputs[1])?])
    }
}

/// The op of a [`Scalar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ScalarKind {
    Mul,
    Add,
    Pow,
    Max,
    Min,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
}

/// `x op value` for a constant `value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scalar {
    pub kind: ScalarKind,
    pub value: f32,
}

impl Rule for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        Ok(vec![inputs[0].clone()])
    }
}

/// `min(max(x, lo), hi)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clamp {
    pub min: f32,
    pub max: f32,
}

impl Rule for Clamp {
    fn name(&self) -> &'static str {
        "clamp"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        if self.min > self.max {
            return Err(format!("min {} > max {}", self.min, self.max));
        }
        Ok(vec![inputs[0].clone()])
    }
}

/// `cond != 0 ? a : b`, broadcast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Where;

impl Rule for Where {
    fn name(&self) -> &'static str {
        "where"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 3, 3)?;
        let ab = broadcast(inputs[1], inputs[2])?;
        Ok(vec![broadcast(inputs[0], &ab)?])
    }
}
