//! Op kinds. Each op kind is a small struct holding its attributes and owns, here, its shape rule
//! and its FLOP count ([`Rule`]); the runner gives each its MLX lowering and decode-time state in the
//! same layout (`runner/trainer/src/lower/`). [`Op`] lists every kind once (the [`ops!`] macro):
//! dispatch is an exhaustive match, so adding an op is one struct with its `Rule` plus one line there.
//!
//! FLOPs follow mixlab's convention (matmul-class work: `2·m·n·k` per matmul, attention over the full
//! `T × T` unless windowed, scans at their multiply-adds); elementwise work counts 0. They are
//! computed on concrete shapes with `B = 1`, `T = seq_len`.

use crate::ir::{Dim, Shape, show};
use serde::Serialize;

mod attention;
mod elementwise;
mod embedding;
mod matmul;
mod norm;
mod recurrent;
mod reduce;
mod shape;
mod training;

pub use attention::{Attention, AttentionMask, CausalMask, Rope, Xsa};
pub use elementwise::{Binary, BinaryKind, Clamp, Scalar, ScalarKind, Unary, UnaryKind, Where};
pub use embedding::{Embedding, EmbeddingBag, NgramHash, PositionEmbedding};
pub use matmul::{MatMul, MatMulT, Outer};
pub use norm::{Norm, NormKind};
pub use recurrent::{
    CausalConv, DecayScan, DeltaScan, GatedScan, GlaScan, LtiConv, Mamba3Scan, MatrixScan,
    MaxPlusScan, ScanTv, SelectiveScan, TokenShift,
};
pub use reduce::{Mean, Softmax, TopK};
pub use shape::{Arange, Concat, Full, Reshape, Slice, Split, Transpose};
pub use training::{CrossEntropy, Dropout, LoadBalance, ZLoss};

/// What an op kind knows about itself without MLX.
pub trait Rule {
    /// The op's name (in errors and in custom blocks).
    fn name(&self) -> &'static str;
    /// Output shapes from the input shapes, or why these inputs do not fit.
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String>;
    /// Forward FLOPs for concrete input and output shapes (`B = 1`, `T = seq_len`).
    fn flops(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> f64 {
        let _ = (inputs, outputs);
        0.0
    }
    /// Elements of the state that cached generation keeps for one sequence after `context` tokens
    /// (concrete input shapes at `B = 1`); 0 for ops that keep none.
    fn decode_state(&self, inputs: &[Vec<usize>], context: usize) -> usize {
        let _ = (inputs, context);
        0
    }
}

macro_rules! ops {
    ($($kind:ident),* $(,)?) => {
        /// Every op kind, with its attributes.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub enum Op {
            $($kind($kind),)*
        }

        impl Op {
            /// The op's shape rule and FLOP count (exhaustive: every kind has one).
            pub fn rule(&self) -> &dyn Rule {
                match self {
                    $(Op::$kind(op) => op,)*
                }
            }
        }

        $(impl From<$kind> for Op {
            fn from(op: $kind) -> Op {
                Op::$kind(op)
            }
        })*
    };
}

ops! {
    Embedding,
    EmbeddingBag,
    PositionEmbedding,
    NgramHash,
    MatMul,
    MatMulT,
    Outer,
    Unary,
    Binary,
    Scalar,
    Clamp,
    Where,
    Norm,
    Reshape,
    Transpose,
    Concat,
    Split,
    Slice,
    Full,
    Arange,
    Softmax,
    Mean,
    TopK,
    Rope,
    Attention,
    Xsa,
    CausalMask,
    CausalConv,
    SelectiveScan,
    GatedScan,
    ScanTv,
    DecayScan,
    MaxPlusScan,
    MatrixScan,
    DeltaScan,
    GlaScan,
    Mamba3Scan,
    LtiConv,
    TokenShift,
    Dropout,
    CrossEntropy,
    ZLoss,
    LoadBalance,
}

/// Checks the number of inputs.
pub(crate) fn arity(inputs: &[&Shape], min: usize, max: usize) -> Result<(), String> {
    if inputs.len() < min || inputs.len() > max {
        let want = if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        };
        return Err(format!("takes {want} inputs, got {}", inputs.len()));
    }
    Ok(())
}

/// The last dimension, which must be fixed.
pub(crate) fn last_fixed(s: &Shape) -> Result<usize, String> {
    match s.last() {
        Some(Dim::Fixed(n)) => Ok(*n),
        _ => Err(format!("needs a fixed last dimension, got {}", show(s))),
    }
}

/// NumPy broadcasting of two symbolic shapes.
pub(crate) fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let n = a.len().max(b.len());
    let at = |s: &Shape, i: usize| (i + s.len() >= n).then(|| s[i + s.len() - n]);
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (Some(x), None) | (None, Some(x)) => Ok(x),
            (Some(x), Some(y)) if x == y => Ok(x),
            (Some(Dim::Fixed(1)), Some(y)) => Ok(y),
            (Some(x), Some(Dim::Fixed(1))) => Ok(x),
            _ => Err(format!(
                "shapes {} and {} do not broadcast",
                show(a),
                show(b)
            )),
        })
        .collect()
}

/// A negative axis counted from the end, checked against `rank`.
pub(crate) fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let i = if a < 0 { r + a } else { a };
    if (0..r).contains(&i) {
        Ok(i as usize)
    } else {
        Err(format!("axis {a} out of range for rank {rank}"))
    }
}

/// Number of elements of a concrete shape.
pub(crate) fn numel(s: &[usize]) -> f64 {
    s.iter().product::<usize>() as f64
}
