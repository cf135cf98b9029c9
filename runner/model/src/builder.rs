//! [`Builder`]: how blocks emit a [`Program`]. Every node is checked with its op's shape rule as it is
//! emitted; a mismatch is a [`BuildError`] (which the model turns into a config error naming the
//! block), never a panic.
//!
//! Weight sharing: a block can be entered in *reuse* mode with the weight prefix of the block whose
//! weights it shares (depth recurrence, `weight_group`); its `weight` calls then return that block's
//! weights (checking the shapes agree) instead of declaring new ones.

use crate::ir::{
    BuildError, Dim, Init, Node, ParamGroup, Program, Shape, Source, ValueId, ValueInfo,
    WeightSpec, fixed, show,
};
use crate::ops::{self, Op};
use std::collections::HashMap;

pub struct Builder {
    weights: Vec<WeightSpec>,
    values: Vec<ValueInfo>,
    nodes: Vec<Node>,
    weight_values: Vec<ValueId>,
    weights_by_name: HashMap<String, ValueId>,
    value_prefix: String,
    weight_prefix: String,
    reuse: bool,
    /// Ops emitted since the current block was entered (for error messages).
    block_ops: usize,
    dropout_ops: usize,
    aux_losses: Vec<(String, ValueId)>,
    tokens: ValueId,
    targets: ValueId,
    char_map: Option<ValueId>,
    pub seq_len: usize,
}

type R<T> = Result<T, BuildError>;

/// The most elements one weight may have (2^34: 64 GiB in float32).
pub const MAX_WEIGHT_ELEMENTS: usize = 1 << 34;

impl Builder {
    /// A builder whose program reads `tokens` and `targets` (`[B, T]` integers).
    pub fn new(seq_len: usize) -> Builder {
        let mut b = Builder {
            weights: vec![],
            values: vec![],
            nodes: vec![],
            weight_values: vec![],
            weights_by_name: HashMap::new(),
            value_prefix: String::new(),
            weight_prefix: String::new(),
            reuse: false,
            block_ops: 0,
            dropout_ops: 0,
            aux_losses: vec![],
            tokens: ValueId(0),
            targets: ValueId(0),
            char_map: None,
            seq_len,
        };
        b.tokens = b.push_value("tokens", vec![Dim::Batch, Dim::Seq], Source::Tokens);
        b.targets = b.push_value("targets", vec![Dim::Batch, Dim::Seq], Source::Targets);
        b
    }

    pub fn tokens(&self) -> ValueId {
        self.tokens
    }

    pub fn targets(&self) -> ValueId {
        self.targets
    }

    /// The program input holding each token id's character ids, `[vocab, per_token]`.
    pub fn char_map(&mut self, vocab: usize, per_token: usize) -> ValueId {
        if let Some(v) = self.char_map {
            return v;
        }
        let v = self.push_value("char_map", fixed(&[vocab, per_token]), Source::CharMap);
        self.char_map = Some(v);
        v
    }

    /// Starts a block: its values are named `value_prefix...`, its weights `weight_prefix...`; with
    /// `reuse`, weights already declared under that prefix are returned instead of new ones.
    pub fn enter(&mut self, value_prefix: &str, weight_prefix: &str, reuse: bool) {
        self.value_prefix = value_prefix.into();
        self.weight_prefix = weight_prefix.into();
        self.reuse = reuse;
        self.block_ops = 0;
    }

    /// Runs `f` with `prefix` appended to the current value and weight prefixes (a block's parts,
    /// e.g. a mixture's experts `expert_0_...`).
    pub fn nested<T>(&mut self, prefix: &str, f: impl FnOnce(&mut Builder) -> R<T>) -> R<T> {
        let (v, w) = (self.value_prefix.clone(), self.weight_prefix.clone());
        self.value_prefix = format!("{v}{prefix}");
        self.weight_prefix = format!("{w}{prefix}");
        let r = f(self);
        self.value_prefix = v;
        self.weight_prefix = w;
        r
    }

    pub fn shape(&self, v: ValueId) -> &Shape {
        &self.values[v.0].shape
    }

    /// The last dimension of `v` (fixed for every value a block works on).
    pub fn width(&self, v: ValueId) -> usize {
        self.shape(v).last().and_then(|d| d.fixed()).unwrap_or(0)
    }

    fn push_value(&mut self, name: &str, shape: Shape, source: Source) -> ValueId {
        let id = ValueId(self.values.len());
        self.values.push(ValueInfo {
            name: format!("{}{name}", self.value_prefix),
            shape,
            source,
        });
        id
    }

    /// Declares a weight (or, reusing, returns the shared one). 1-D tensors and the `Scalar` group
    /// are not decayed (mixlab's `matrix_only` policy).
    pub fn weight(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        group: ParamGroup,
    ) -> R<ValueId> {
        let full = format!("{}{name}", self.weight_prefix);
        if self.reuse {
            let Some(&id) = self.weights_by_name.get(&full) else {
                return Err(self.error(
                    "weight",
                    format!("shares weights with a block that has no `{name}`"),
                ));
            };
            if self.values[id.0].shape != fixed(shape) {
                return Err(self.error(
                    "weight",
                    format!(
                        "shares `{name}` of shape {} but needs {}",
                        show(&self.values[id.0].shape),
                        show(&fixed(shape))
                    ),
                ));
            }
            return Ok(id);
        }
        if shape.contains(&0) {
            return Err(self.error("weight", format!("`{name}` has a zero dimension {shape:?}")));
        }
        let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel.is_none_or(|n| n > MAX_WEIGHT_ELEMENTS) {
            return Err(self.error(
                "weight",
                format!("`{name}` of shape {shape:?} has more than 2^34 elements (64 GiB in float32): a size in the config is far too large"),
            ));
        }
        if self.weights_by_name.contains_key(&full) {
            return Err(self.error("weight", format!("`{name}` is declared twice")));
        }
        let decay = shape.len() >= 2 && group != ParamGroup::Scalar;
        self.weights.push(WeightSpec {
            name: full.clone(),
            shape: shape.to_vec(),
            init,
            group,
            decay,
        });
        let index = self.weights.len() - 1;
        let id = ValueId(self.values.len());
        self.values.push(ValueInfo {
            name: full.clone(),
            shape: fixed(shape),
            source: Source::Weight(index),
        });
        self.weight_values.push(id);
        self.weights_by_name.insert(full, id);
        Ok(id)
    }

    /// A matrix weight `[in, out]` in the `Matrix` group.
    pub fn matrix(&mut self, name: &str, fan_in: usize, fan_out: usize, init: Init) -> R<ValueId> {
        self.weight(name, &[fan_in, fan_out], init, ParamGroup::Matrix)
    }

    fn error(&self, op: &'static str, message: String) -> BuildError {
        BuildError {
            index: self.block_ops,
            op,
            message,
            path: None,
        }
    }

    /// Emits `op` on `inputs`; its outputs are named `names` (or `name_0`, `name_1`, ...).
    pub fn op(&mut self, op: impl Into<Op>, inputs: &[ValueId], name: &str) -> R<Vec<ValueId>> {
        let op = op.into();
        let shapes: Vec<&Shape> = inputs.iter().map(|v| &self.values[v.0].shape).collect();
        let outs = op
            .rule()
            .shapes(&shapes)
            .map_err(|m| self.error(op.rule().name(), m))?;
        let node = self.nodes.len();
        let n = outs.len();
        let outputs: Vec<ValueId> = outs
            .into_iter()
            .enumerate()
            .map(|(i, shape)| {
                let label = if n == 1 {
                    name.to_string()
                } else {
                    format!("{name}_{i}")
                };
                self.push_value(&label, shape, Source::Node { node, output: i })
            })
            .collect();
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
        });
        self.block_ops += 1;
        Ok(outputs)
    }

    /// [`Builder::op`] for a single-output op.
    pub fn op1(&mut self, op: impl Into<Op>, inputs: &[ValueId], name: &str) -> R<ValueId> {
        Ok(self.op(op, inputs, name)?[0])
    }

    pub fn matmul(&mut self, name: &str, x: ValueId, w: ValueId) -> R<ValueId> {
        self.op1(ops::MatMul, &[x, w], name)
    }

    pub fn add(&mut self, name: &str, a: ValueId, b: ValueId) -> R<ValueId> {
        self.op1(ops::Binary(ops::BinaryKind::Add), &[a, b], name)
    }

    pub fn mul(&mut self, name: &str, a: ValueId, b: ValueId) -> R<ValueId> {
        self.op1(ops::Binary(ops::BinaryKind::Mul), &[a, b], name)
    }

    pub fn unary(&mut self, name: &str, x: ValueId, kind: ops::UnaryKind) -> R<ValueId> {
        self.op1(ops::Unary(kind), &[x], name)
    }

    pub fn scalar(
        &mut self,
        name: &str,
        x: ValueId,
        kind: ops::ScalarKind,
        value: f32,
    ) -> R<ValueId> {
        self.op1(ops::Scalar { kind, value }, &[x], name)
    }

    pub fn reshape(&mut self, name: &str, x: ValueId, shape: Shape) -> R<ValueId> {
        self.op1(ops::Reshape { shape }, &[x], name)
    }

    pub fn transpose(&mut self, name: &str, x: ValueId, axes: &[usize]) -> R<ValueId> {
        self.op1(
            ops::Transpose {
                axes: axes.to_vec(),
            },
            &[x],
            name,
        )
    }

    /// `[B, T, H·hd]` -> `[B, H, T, hd]`.
    pub fn split_heads(&mut self, name: &str, x: ValueId, heads: usize) -> R<ValueId> {
        let width = self.width(x);
        if heads == 0 || !width.is_multiple_of(heads) {
            return Err(self.error(
                "reshape",
                format!("{width} features do not split into {heads} heads"),
            ));
        }
        let shape = vec![
            Dim::Batch,
            Dim::Seq,
            Dim::Fixed(heads),
            Dim::Fixed(width / heads),
        ];
        let r = self.reshape(&format!("{name}_split"), x, shape)?;
        self.transpose(name, r, &[0, 2, 1, 3])
    }

    /// `[B, H, T, hd]` -> `[B, T, H·hd]`.
    pub fn merge_heads(&mut self, name: &str, x: ValueId) -> R<ValueId> {
        let s = self.shape(x).clone();
        let (Some(h), Some(hd)) = (
            s.get(1).and_then(|d| d.fixed()),
            s.get(3).and_then(|d| d.fixed()),
        ) else {
            return Err(self.error(
                "reshape",
                format!("merge_heads needs [B, H, T, hd], got {}", show(&s)),
            ));
        };
        let t = self.transpose(&format!("{name}_t"), x, &[0, 2, 1, 3])?;
        self.reshape(name, t, vec![Dim::Batch, Dim::Seq, Dim::Fixed(h * hd)])
    }

    /// Inverted dropout with `rate`; emits nothing when `rate` is 0.
    pub fn dropout(&mut self, name: &str, x: ValueId, rate: f32) -> R<ValueId> {
        if rate <= 0.0 {
            return Ok(x);
        }
        let ordinal = self.dropout_ops;
        let y = self.op1(ops::Dropout { rate, ordinal }, &[x], name)?;
        self.dropout_ops += 1;
        Ok(y)
    }

    /// The dropout key ordinal for an op that drops with `rate` inside itself (attention
    /// probabilities); a fresh one when `rate` > 0.
    pub fn reserve_dropout(&mut self, rate: f32) -> usize {
        if rate <= 0.0 {
            return 0;
        }
        self.dropout_ops += 1;
        self.dropout_ops - 1
    }

    /// Adds a scalar term to the training objective (logged as `aux.<value prefix><name>`).
    pub fn aux_loss(&mut self, name: &str, v: ValueId) {
        self.aux_losses
            .push((format!("{}{name}", self.value_prefix), v));
    }

    /// The program whose outputs are `hidden` (the stream the head reads), `logits` and `loss`.
    pub fn finish(self, hidden: ValueId, logits: ValueId, loss: ValueId) -> Program {
        Program {
            hidden,
            weights: self.weights,
            values: self.values,
            nodes: self.nodes,
            tokens: self.tokens,
            targets: self.targets,
            char_map: self.char_map,
            logits,
            loss,
            aux_losses: self.aux_losses,
            weight_values: self.weight_values,
            dropout_ops: self.dropout_ops,
            seq_len: self.seq_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_shapes_are_errors_naming_the_op() {
        let mut b = Builder::new(8);
        b.enter("blocks.0.", "blocks.0.", false);
        let w = b.matrix("w", 4, 4, Init::XavierUniform).unwrap();
        let v = b.matrix("v", 3, 4, Init::XavierUniform).unwrap();
        let y = b.matmul("ok", w, w).unwrap();
        let e = b.matmul("bad", y, v).unwrap_err();
        assert_eq!(e.index, 1);
        assert_eq!(e.op, "matmul");
        assert!(e.message.contains("inner dimensions"), "{e}");
    }

    #[test]
    fn reuse_returns_the_shared_weights() {
        let mut b = Builder::new(8);
        b.enter("blocks.0.", "blocks.0.", false);
        let w = b.matrix("w", 4, 4, Init::XavierUniform).unwrap();
        b.enter("blocks.1.", "blocks.0.", true);
        assert_eq!(b.matrix("w", 4, 4, Init::XavierUniform).unwrap(), w);
        assert!(b.matrix("w", 4, 5, Init::XavierUniform).is_err());
        assert!(b.matrix("other", 4, 4, Init::XavierUniform).is_err());
    }
}
