//! MLX lowering of every op kind, in the model crate's layout (one module per op family): how each
//! [`Op`] runs on MLX, and what it keeps between calls when generating token by token
//! ([`DecodeCache`]). [`apply`] is an exhaustive match: an op without a lowering does not compile.
//!
//! Precision: with bfloat16 compute, activations and matmuls run in bf16; norms, scans, the loss and
//! softmax-like reductions run in float32 (each lowering says where).

use mixsweep_mlx::{Array, Dtype, Result};
use mixsweep_model::ops::Op;
use std::collections::HashMap;

mod attention;
mod delta;
mod elementwise;
mod embedding;
pub mod fused;
mod gla;
#[cfg(test)]
mod gradcheck;
mod lti;
mod mamba3;
mod matmul;
mod norm;
pub mod recurrent;
mod reduce;
mod shape;
#[cfg(test)]
mod test_support;
mod training;

pub use elementwise::unary;
pub use recurrent::{
    SCAN_LOG_BUDGET, causal_conv1d, selective_scan, selective_scan_chunked, use_fused_scan,
};
pub use training::{cross_entropy, dropout};

/// What one op keeps between incremental calls (generation).
#[derive(Clone)]
pub enum State {
    /// Attention keys and values so far, `[B, Hk, S, d]`.
    Kv(Array, Array),
    /// The last inputs (a convolution's window, the previous token of a token shift).
    Tail(Array),
    /// A recurrence's state after the last step.
    Hidden(Array),
}

/// Per-op state for incremental decoding, keyed by node index.
#[derive(Default)]
pub struct DecodeCache {
    /// Tokens processed so far (the next token's position).
    pub position: usize,
    pub(crate) states: HashMap<usize, State>,
}

impl DecodeCache {
    pub fn new() -> DecodeCache {
        DecodeCache::default()
    }
}

/// What a lowering may read besides its inputs.
pub struct Ctx<'a> {
    /// The compute dtype.
    pub dtype: Dtype,
    /// Training mode's per-op dropout keys `[n, 2]`; `None` at evaluation.
    pub dropout_keys: Option<&'a Array>,
    /// Incremental decoding state; `None` for a whole-sequence forward.
    pub cache: Option<&'a mut DecodeCache>,
    /// Index of the node being lowered (its key in the cache).
    pub node: usize,
    /// Float32 master weights, by value id of their program value (for gathers that must not
    /// round the table to bf16 before the backward pass).
    pub masters: &'a HashMap<usize, Array>,
    /// Program value ids of this node's inputs.
    pub input_ids: &'a [usize],
    /// The batch size and sequence length of this call (for symbolic shapes).
    pub batch: usize,
    pub seq: usize,
}

impl Ctx<'_> {
    /// The decode position: where this call's first token sits in the sequence.
    pub fn offset(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.position)
    }

    /// This node's saved state, if any.
    pub fn state(&self) -> Option<&State> {
        self.cache.as_ref().and_then(|c| c.states.get(&self.node))
    }

    /// Saves this node's state (when decoding).
    pub fn save(&mut self, s: State) {
        let node = self.node;
        if let Some(c) = self.cache.as_deref_mut() {
            c.states.insert(node, s);
        }
    }

    pub fn decoding(&self) -> bool {
        self.cache.is_some()
    }

    /// Dropout key number `ordinal` (training only).
    pub fn dropout_key(&self, ordinal: usize) -> Result<Option<Array>> {
        match self.dropout_keys {
            None => Ok(None),
            Some(keys) => Ok(Some(
                keys.slice_axis(0, ordinal, ordinal + 1)?.reshape(&[2])?,
            )),
        }
    }
}

/// Runs `op` on `inputs`; returns its outputs in order.
pub fn apply(op: &Op, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Vec<Array>> {
    let one = |a: Array| Ok(vec![a]);
    match op {
        Op::Embedding(_) => one(embedding::embedding(inputs, ctx)?),
        Op::EmbeddingBag(_) => one(embedding::bag(inputs, ctx)?),
        Op::PositionEmbedding(_) => one(embedding::positions(inputs, ctx)?),
        Op::NgramHash(o) => one(embedding::ngram_hash(o, inputs, ctx)?),
        Op::MatMul(_) => one(inputs[0].matmul(&inputs[1])?),
        Op::MatMulT(_) => one(inputs[0].matmul(&inputs[1].t()?)?),
        Op::Outer(_) => one(matmul::outer(&inputs[0], &inputs[1])?),
        Op::Unary(u) => one(unary(&inputs[0], u.0)?),
        Op::Binary(b) => one(elementwise::binary(b.0, &inputs[0], &inputs[1])?),
        Op::Scalar(s) => one(elementwise::scalar(s, &inputs[0])?),
        Op::Clamp(c) => one(inputs[0].clip(c.min, c.max)?),
        Op::Where(_) => one(elementwise::select(inputs)?),
        Op::Norm(n) => one(norm::norm(n, inputs, ctx.dtype)?),
        Op::Reshape(r) => one(shape::reshape(r, &inputs[0], ctx)?),
        Op::Transpose(t) => {
            one(inputs[0].transpose(&t.axes.iter().map(|&a| a as i32).collect::<Vec<_>>())?)
        }
        Op::Concat(c) => one(shape::concat(c, inputs)?),
        Op::Split(s) => shape::split(s, &inputs[0]),
        Op::Slice(s) => one(shape::slice(s, &inputs[0])?),
        Op::Full(f) => one(shape::full(f, ctx)?),
        Op::Arange(a) => one(Array::arange(
            a.start as f64,
            a.end as f64,
            1.0,
            Dtype::F32,
        )?),
        Op::Softmax(s) => one(reduce::softmax(s, &inputs[0])?),
        Op::TopK(t) => reduce::top_k(t, &inputs[0]),
        Op::Mean(m) => one(inputs[0].mean(&[m.axis as i32], false)?),
        Op::Rope(r) => one(inputs[0].rope(r.dims, r.adjacent_pairs, r.base, ctx.offset())?),
        Op::Attention(a) => one(attention::attention(a, inputs, ctx)?),
        Op::Xsa(_) => one(attention::xsa(&inputs[0], &inputs[1])?),
        Op::CausalMask(m) => one(attention::causal_mask(m, &inputs[0])?),
        Op::CausalConv(_) => one(recurrent::conv(inputs, ctx)?),
        Op::SelectiveScan(s) => one(recurrent::selective(s, inputs, ctx)?),
        Op::GatedScan(s) => one(recurrent::gated(s, inputs, ctx)?),
        Op::ScanTv(s) => one(recurrent::time_varying(s, inputs, ctx)?),
        Op::MaxPlusScan(_) => one(recurrent::max_plus(inputs, ctx)?),
        Op::DecayScan(s) => one(recurrent::decay(s, inputs, ctx)?),
        Op::MatrixScan(s) => one(recurrent::matrix(s, inputs, ctx)?),
        Op::DeltaScan(s) => one(delta::delta_scan(s, inputs, ctx)?),
        Op::GlaScan(s) => one(gla::gla_scan(s, inputs, ctx)?),
        Op::Mamba3Scan(s) => one(mamba3::mamba3_scan(s, inputs, ctx)?),
        Op::LtiConv(_) => one(lti::lti_conv(inputs, ctx)?),
        Op::TokenShift(_) => one(recurrent::token_shift(&inputs[0], ctx)?),
        Op::Dropout(d) => one(match ctx.dropout_key(d.ordinal)? {
            Some(key) => dropout(&inputs[0], d.rate, &key)?,
            None => inputs[0].clone(),
        }),
        Op::CrossEntropy(_) => one(cross_entropy(&inputs[0], &inputs[1])?),
        Op::LoadBalance(lb) => one(training::load_balance(lb, &inputs[0], &inputs[1])?),
        Op::ZLoss(z) => one(training::z_loss(&inputs[0], z.coef)?),
    }
}

/// Whether a program can be decoded incrementally: every op that mixes positions keeps a decode
/// state. Ops of custom blocks that mix positions without one (an explicit causal mask, a softmax or
/// mean over the sequence, attention written as matmuls) need the whole sequence each time.
pub fn supports_decode_cache(p: &mixsweep_model::Program) -> bool {
    use mixsweep_model::ir::Dim;
    let time = |v: &mixsweep_model::ir::ValueId| {
        p.values[v.0]
            .shape
            .iter()
            .any(|d| matches!(d, Dim::Seq | Dim::Tokens))
    };
    p.nodes.iter().all(|n| match &n.op {
        Op::CausalMask(_) | Op::Concat(_) | Op::Slice(_) | Op::Softmax(_) | Op::Mean(_) => {
            !n.inputs.iter().any(time)
        }
        Op::Attention(a) => a.mask.caches(),
        // a product of two per-token values over the sequence (q·kᵀ written out)
        Op::MatMul(_) => !(time(&n.inputs[0]) && time(&n.inputs[1])),
        _ => true,
    })
}
