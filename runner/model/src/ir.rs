//! The IR: a straight-line program of [`Node`]s (an [`Op`] with input and output values) over numbered
//! values, plus the weights it reads.
//!
//! Values are weights, the program inputs (`tokens`, `targets`, both `[B, T]`), constants, or node
//! outputs. Every value has a symbolic [`Shape`]: `B` (batch) and `T` (sequence length) are known only
//! when the program runs (`T` is `seq_len` in training and shorter when decoding), everything else is
//! fixed. The [`Builder`] checks every node's shapes with its op's rule as blocks emit them, so a
//! program is well-formed by construction, and a bad user-defined graph (a `custom` block) is an error
//! naming the block, the op and the input rather than a panic. Nothing here depends on MLX: the
//! executor (in `mixsweep-runner`) gives each op kind its MLX lowering.

use crate::ops::Op;
use serde::Serialize;

/// Index of a value in [`Program::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ValueId(pub usize);

/// One dimension of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Dim {
    /// The batch size `B`.
    Batch,
    /// The sequence length `T` (tokens in this call: `seq_len` when training).
    Seq,
    /// `B · T` (a flattened token axis).
    Tokens,
    Fixed(usize),
}

impl Dim {
    /// The size once `B` and `T` are known.
    pub fn resolve(self, batch: usize, seq: usize) -> usize {
        match self {
            Dim::Batch => batch,
            Dim::Seq => seq,
            Dim::Tokens => batch * seq,
            Dim::Fixed(n) => n,
        }
    }

    pub fn fixed(self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(n),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Batch => f.write_str("B"),
            Dim::Seq => f.write_str("T"),
            Dim::Tokens => f.write_str("BT"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

pub type Shape = Vec<Dim>;

/// `[2, 3]` for a shape of fixed dims.
pub fn fixed(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

/// A shape as text: `[B, T, 64]`.
pub fn show(s: &[Dim]) -> String {
    format!(
        "[{}]",
        s.iter().map(Dim::to_string).collect::<Vec<_>>().join(", ")
    )
}

/// Optimizer parameter group (mixlab's classification): each has its own learning rate and decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ParamGroup {
    Embed,
    Head,
    Matrix,
    Scalar,
}

/// How a weight is initialised (on the host, from the training seed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Init {
    /// `U(±sqrt(6 / (fan_in + fan_out)))`, fan_in = shape[0], fan_out = shape[1].
    XavierUniform,
    /// `N(0, std)`.
    Normal {
        std: f32,
    },
    /// `N(0, std)` truncated at ±2 std.
    TruncatedNormal {
        std: f32,
    },
    /// `U(±bound)`.
    Uniform {
        bound: f32,
    },
    /// `U(lo, hi)`.
    UniformRange {
        lo: f32,
        hi: f32,
    },
    Constant(f32),
    /// Mamba's S4D-real init of `A_log [I, N]`: `log(n + 1)` for state index n.
    MambaALog,
    /// Mamba's `dt_bias [I]`: inverse softplus of `dt ~ exp(U[log dt_min, log dt_max])`.
    MambaDtBias {
        dt_min: f32,
        dt_max: f32,
    },
    /// Along the last axis of length `n`: `from + (to - from)·(j / (n - 1))^power` for index `j`
    /// (RWKV's spread of decay speeds and token-shift mixes over channels).
    Ramp {
        from: f32,
        to: f32,
        power: f32,
    },
    /// Rows `[1, 0, 0, ...]` and `[0, 1, 0, ...]`...: row `r` is `value_r` everywhere (e.g. resid_mix
    /// `[2, D]` starting as `x·1 + x0·0`).
    Rows {
        first: f32,
        rest: f32,
    },
}

/// A trainable tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightSpec {
    /// Stable name, used in checkpoints: `embed`, `head`, `final_norm`, `blocks.3.wq`, ...
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub group: ParamGroup,
    /// Whether weight decay applies (mixlab's `matrix_only` policy: rank >= 2 and not scalar-like).
    pub decay: bool,
}

impl WeightSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Source {
    Weight(usize),
    Tokens,
    Targets,
    /// Each token id's character ids `[V, K]` (integers; `char_features.bin` beside the data).
    CharMap,
    /// Output `output` of node `node`.
    Node {
        node: usize,
        output: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueInfo {
    pub name: String,
    pub shape: Shape,
    pub source: Source,
}

/// One operation: an op kind with its attributes, its input values and its output values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// A lowered model: weights, values, nodes, and the named outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Program {
    pub weights: Vec<WeightSpec>,
    pub values: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    pub tokens: ValueId,
    pub targets: ValueId,
    /// The `[V, K]` character-id table, when the model has character features.
    pub char_map: Option<ValueId>,
    /// The hidden state the output head reads (after the final norm), `[B, T, D]`.
    pub hidden: ValueId,
    pub logits: ValueId,
    pub loss: ValueId,
    /// Extra loss terms added to `loss` for training (e.g. MoE load balancing): reported, and part of
    /// the optimised objective.
    pub aux_losses: Vec<(String, ValueId)>,
    /// Value id of each weight, in weight order.
    pub weight_values: Vec<ValueId>,
    /// Number of dropout ops (each needs its own random key per step).
    pub dropout_ops: usize,
    pub seq_len: usize,
}

impl Program {
    pub fn param_count(&self) -> usize {
        self.weights.iter().map(WeightSpec::numel).sum()
    }

    /// Shape of a value with `B` and `T` filled in.
    pub fn concrete_shape(&self, v: ValueId, batch: usize, seq: usize) -> Vec<usize> {
        self.values[v.0]
            .shape
            .iter()
            .map(|d| d.resolve(batch, seq))
            .collect()
    }
}

/// Why a node could not be emitted: the op, which of the block's ops it was, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("op {index} ({op}): {message}")]
pub struct BuildError {
    /// Index of the op among the ops this builder emitted for the current block.
    pub index: usize,
    pub op: &'static str,
    pub message: String,
    /// The config path at fault, when the block knows it better than "the block" (a custom
    /// block's `ops[3].inputs[1]`).
    pub path: Option<String>,
}

pub use crate::builder::Builder;
