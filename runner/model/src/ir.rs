//! The IR: a straight-line program of typed ops over numbered values, plus the weights it reads.
//!
//! Values are either weights, the two inputs (`tokens [B, T]`, `targets [B, T]`), or op outputs.
//! Every value has a shape whose first dimension may be the batch size `B` (known only at run time);
//! the [`Builder`] checks shapes as blocks emit ops, so a lowered program is well-formed by
//! construction. The executor (in `mixsweep-runner`) maps each op to MLX; nothing in this crate
//! depends on MLX.

use serde::Serialize;

/// Index of a value in [`Program::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ValueId(pub usize);

/// A dimension: the run-time batch size, or a fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Dim {
    Batch,
    Fixed(usize),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Batch => f.write_str("B"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

pub type Shape = Vec<Dim>;

fn fixed(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
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
    /// `U(±bound)`.
    Uniform {
        bound: f32,
    },
    Constant(f32),
    /// Mamba's S4D-real init of `A_log [I, N]`: `log(n + 1)` for state index n.
    MambaALog,
    /// Mamba's `dt_bias [I]`: inverse softplus of `dt ~ exp(U[log dt_min, log dt_max])`.
    MambaDtBias {
        dt_min: f32,
        dt_max: f32,
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

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Activation {
    Silu,
    /// Exact GELU (erf).
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    Relu,
    /// `LeakyReLU(x, slope)^2`.
    LeakyReluSquared {
        slope: f32,
    },
    Sigmoid,
    Softplus,
}

/// One IR operation. Shapes use `B` (batch), `T` (seq_len), `D` (model_dim), `H` heads, `hd` head dim.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Op {
    /// `table[V, D]` rows at `tokens [B, T]` -> `[B, T, D]`.
    Embedding {
        table: ValueId,
        tokens: ValueId,
        out: ValueId,
    },
    /// `x[..., in] · w[in, out]`.
    Linear {
        x: ValueId,
        weight: ValueId,
        out: ValueId,
    },
    /// `x[..., in] · w[out, in]ᵀ` (tied output head).
    LinearTransposed {
        x: ValueId,
        weight: ValueId,
        out: ValueId,
    },
    /// RMSNorm over the last axis, computed in float32: `x · rsqrt(mean(x²) + eps) · scale`.
    RmsNorm {
        x: ValueId,
        scale: ValueId,
        eps: f32,
        out: ValueId,
    },
    Add {
        a: ValueId,
        b: ValueId,
        out: ValueId,
    },
    Mul {
        a: ValueId,
        b: ValueId,
        out: ValueId,
    },
    Activation {
        x: ValueId,
        kind: Activation,
        out: ValueId,
    },
    /// `x @ [w₀ | w₁ | …]` split back into one output per weight: a fused projection (q, k, v) that
    /// stays one matmul forward and backward, while the weights keep their own names.
    ProjectSplit {
        x: ValueId,
        weights: Vec<ValueId>,
        outs: Vec<ValueId>,
    },
    /// `x[..., start..end]` on the last axis.
    SliceLast {
        x: ValueId,
        start: usize,
        end: usize,
        out: ValueId,
    },
    /// `[B, T, H·hd]` -> `[B, H, T, hd]`.
    SplitHeads {
        x: ValueId,
        heads: usize,
        out: ValueId,
    },
    /// `[B, H, T, hd]` -> `[B, T, H·hd]`.
    MergeHeads { x: ValueId, out: ValueId },
    /// Rotary embedding of the first `dims` features of `[B, H, T, hd]`, positions 0..T.
    /// `adjacent_pairs`: rotate (x[2i], x[2i+1]) (mixlab's default); else (x[i], x[i + dims/2]).
    Rope {
        x: ValueId,
        dims: usize,
        base: f32,
        adjacent_pairs: bool,
        out: ValueId,
    },
    /// `x[B, H, T, hd] · gain[H]` per head.
    HeadGain {
        x: ValueId,
        gain: ValueId,
        out: ValueId,
    },
    /// Softmax attention `softmax(q·kᵀ·scale [+ causal mask]) · v`; k/v may have fewer heads (GQA:
    /// query head h reads kv head h / (H / H_kv)).
    Attention {
        q: ValueId,
        k: ValueId,
        v: ValueId,
        scale: f32,
        causal: bool,
        out: ValueId,
    },
    /// Causal depthwise convolution over time: `y_t = Σ_j w[j] · x_{t-K+1+j} + bias`, `w [K, C]`.
    CausalConv1d {
        x: ValueId,
        weight: ValueId,
        bias: ValueId,
        out: ValueId,
    },
    /// Mamba selective scan over `x [B, T, I]` with input-dependent `delta [B, T, I]`, `b, c [B, T, N]`,
    /// learned `a_log [I, N]` (A = -exp(a_log)) and skip `d [I]`:
    /// `h_t = exp(Δ_t·A) ⊙ h_{t-1} + Δ_t·x_t·B_t`, `y_t = h_t·C_t + d ⊙ x_t`. Computed in chunks of
    /// `chunk` steps (parallel inside a chunk, one carry per chunk).
    SelectiveScan {
        x: ValueId,
        delta: ValueId,
        a_log: ValueId,
        b: ValueId,
        c: ValueId,
        d: ValueId,
        chunk: usize,
        out: ValueId,
    },
    /// Inverted dropout (train only; identity at eval). `ordinal` selects this op's random key.
    Dropout {
        x: ValueId,
        rate: f32,
        ordinal: usize,
        out: ValueId,
    },
    /// Mean cross-entropy of `logits [B, T, V]` against `targets [B, T]` (float32) -> scalar.
    CrossEntropy {
        logits: ValueId,
        targets: ValueId,
        out: ValueId,
    },
}

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Source {
    Weight(usize),
    Tokens,
    Targets,
    Op(usize),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueInfo {
    pub name: String,
    pub shape: Shape,
    pub source: Source,
}

/// A lowered model: weights, values, ops, and the named outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Program {
    pub weights: Vec<WeightSpec>,
    pub values: Vec<ValueInfo>,
    pub ops: Vec<Op>,
    pub tokens: ValueId,
    pub targets: ValueId,
    pub logits: ValueId,
    pub loss: ValueId,
    /// Value id of each weight, in weight order.
    pub weight_values: Vec<ValueId>,
    /// Number of dropout ops (each needs its own random key per step).
    pub dropout_ops: usize,
}

impl Program {
    pub fn param_count(&self) -> usize {
        self.weights.iter().map(WeightSpec::numel).sum()
    }

    /// Shape of a value with the batch dimension filled in.
    pub fn concrete_shape(&self, v: ValueId, batch: usize) -> Vec<usize> {
        self.values[v.0]
            .shape
            .iter()
            .map(|d| match d {
                Dim::Batch => batch,
                Dim::Fixed(n) => *n,
            })
            .collect()
    }
}

/// Emits a [`Program`]: blocks call its methods to declare weights and ops. Shape mismatches are
/// bugs in a block's lowering (the config was already validated), so they panic with a message.
pub struct Builder {
    weights: Vec<WeightSpec>,
    values: Vec<ValueInfo>,
    ops: Vec<Op>,
    weight_values: Vec<ValueId>,
    prefix: String,
    dropout_ops: usize,
    pub seq_len: usize,
}

impl Builder {
    pub fn new(seq_len: usize) -> Builder {
        Builder {
            weights: vec![],
            values: vec![],
            ops: vec![],
            weight_values: vec![],
            prefix: String::new(),
            dropout_ops: 0,
            seq_len,
        }
    }

    /// Prefix for weight and value names, e.g. `blocks.3.`.
    pub fn set_prefix(&mut self, prefix: impl Into<String>) {
        self.prefix = prefix.into();
    }

    pub fn shape(&self, v: ValueId) -> &Shape {
        &self.values[v.0].shape
    }

    fn last_dim(&self, v: ValueId) -> usize {
        match self.shape(v).last() {
            Some(Dim::Fixed(n)) => *n,
            other => panic!(
                "IR: value {} has no fixed last dimension ({other:?})",
                self.values[v.0].name
            ),
        }
    }

    fn push_value(&mut self, name: &str, shape: Shape, source: Source) -> ValueId {
        let id = ValueId(self.values.len());
        self.values.push(ValueInfo {
            name: format!("{}{name}", self.prefix),
            shape,
            source,
        });
        id
    }

    fn push_op(&mut self, name: &str, shape: Shape, make: impl FnOnce(ValueId) -> Op) -> ValueId {
        let out = self.push_value(name, shape, Source::Op(self.ops.len()));
        self.ops.push(make(out));
        out
    }

    /// Declares a weight. The group and decay follow mixlab: 1-D tensors are `Scalar` and not decayed.
    pub fn weight(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        group: ParamGroup,
    ) -> ValueId {
        let decay = shape.len() >= 2 && group != ParamGroup::Scalar;
        self.weights.push(WeightSpec {
            name: format!("{}{name}", self.prefix),
            shape: shape.to_vec(),
            init,
            group,
            decay,
        });
        let id = self.push_value(name, fixed(shape), Source::Weight(self.weights.len() - 1));
        self.weight_values.push(id);
        id
    }

    /// A matrix weight `[in, out]` with the default init.
    pub fn matrix(&mut self, name: &str, fan_in: usize, fan_out: usize, init: Init) -> ValueId {
        self.weight(name, &[fan_in, fan_out], init, ParamGroup::Matrix)
    }

    pub fn input_tokens(&mut self) -> ValueId {
        let t = self.seq_len;
        self.push_value("tokens", vec![Dim::Batch, Dim::Fixed(t)], Source::Tokens)
    }

    pub fn input_targets(&mut self) -> ValueId {
        let t = self.seq_len;
        self.push_value("targets", vec![Dim::Batch, Dim::Fixed(t)], Source::Targets)
    }

    pub fn embedding(&mut self, table: ValueId, tokens: ValueId) -> ValueId {
        let d = self.last_dim(table);
        let mut shape = self.shape(tokens).clone();
        shape.push(Dim::Fixed(d));
        self.push_op("embedding", shape, |out| Op::Embedding {
            table,
            tokens,
            out,
        })
    }

    pub fn linear(&mut self, name: &str, x: ValueId, weight: ValueId) -> ValueId {
        let w = self.shape(weight).clone();
        assert_eq!(w.len(), 2, "IR: linear weight must be 2-D");
        assert_eq!(
            Dim::Fixed(self.last_dim(x)),
            w[0],
            "IR: linear {name}: input features do not match weight rows"
        );
        let mut shape = self.shape(x).clone();
        *shape.last_mut().unwrap() = w[1];
        self.push_op(name, shape, |out| Op::Linear { x, weight, out })
    }

    /// One matmul of `x` with `weights` side by side, split into one value per weight (named
    /// `names[i]`). All weights need `x`'s width as rows.
    pub fn project_split(
        &mut self,
        names: &[&str],
        x: ValueId,
        weights: &[ValueId],
    ) -> Vec<ValueId> {
        assert_eq!(names.len(), weights.len(), "IR: project_split names");
        let op_index = self.ops.len();
        let mut outs = Vec::with_capacity(weights.len());
        for (&w, name) in weights.iter().zip(names) {
            let ws = self.shape(w).clone();
            assert!(
                ws.len() == 2 && ws[0] == Dim::Fixed(self.last_dim(x)),
                "IR: project_split {name}: weight rows must match input features"
            );
            let mut shape = self.shape(x).clone();
            *shape.last_mut().unwrap() = ws[1];
            outs.push(self.push_value(name, shape, Source::Op(op_index)));
        }
        self.ops.push(Op::ProjectSplit {
            x,
            weights: weights.to_vec(),
            outs: outs.clone(),
        });
        outs
    }

    pub fn linear_transposed(&mut self, name: &str, x: ValueId, weight: ValueId) -> ValueId {
        let w = self.shape(weight).clone();
        assert_eq!(
            Dim::Fixed(self.last_dim(x)),
            w[1],
            "IR: linear_transposed {name}: features do not match"
        );
        let mut shape = self.shape(x).clone();
        *shape.last_mut().unwrap() = w[0];
        self.push_op(name, shape, |out| Op::LinearTransposed { x, weight, out })
    }

    pub fn rms_norm(&mut self, name: &str, x: ValueId, scale: ValueId, eps: f32) -> ValueId {
        assert_eq!(
            self.shape(scale),
            &vec![Dim::Fixed(self.last_dim(x))],
            "IR: rms_norm scale shape"
        );
        let shape = self.shape(x).clone();
        self.push_op(name, shape, |out| Op::RmsNorm { x, scale, eps, out })
    }

    fn broadcast_shape(&self, a: ValueId, b: ValueId) -> Shape {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let n = sa.len().max(sb.len());
        (0..n)
            .map(|i| {
                let da = if i + sa.len() >= n {
                    Some(sa[i + sa.len() - n])
                } else {
                    None
                };
                let db = if i + sb.len() >= n {
                    Some(sb[i + sb.len() - n])
                } else {
                    None
                };
                match (da, db) {
                    (Some(x), None) | (None, Some(x)) => x,
                    (Some(x), Some(y)) if x == y => x,
                    (Some(Dim::Fixed(1)), Some(y)) => y,
                    (Some(x), Some(Dim::Fixed(1))) => x,
                    _ => panic!("IR: shapes {sa:?} and {sb:?} do not broadcast"),
                }
            })
            .collect()
    }

    pub fn add(&mut self, name: &str, a: ValueId, b: ValueId) -> ValueId {
        let shape = self.broadcast_shape(a, b);
        self.push_op(name, shape, |out| Op::Add { a, b, out })
    }

    pub fn mul(&mut self, name: &str, a: ValueId, b: ValueId) -> ValueId {
        let shape = self.broadcast_shape(a, b);
        self.push_op(name, shape, |out| Op::Mul { a, b, out })
    }

    pub fn activation(&mut self, name: &str, x: ValueId, kind: Activation) -> ValueId {
        let shape = self.shape(x).clone();
        self.push_op(name, shape, |out| Op::Activation { x, kind, out })
    }

    pub fn slice_last(&mut self, name: &str, x: ValueId, start: usize, end: usize) -> ValueId {
        assert!(
            start < end && end <= self.last_dim(x),
            "IR: slice {start}..{end} out of range"
        );
        let mut shape = self.shape(x).clone();
        *shape.last_mut().unwrap() = Dim::Fixed(end - start);
        self.push_op(name, shape, |out| Op::SliceLast { x, start, end, out })
    }

    pub fn split_heads(&mut self, name: &str, x: ValueId, heads: usize) -> ValueId {
        let s = self.shape(x).clone();
        let width = self.last_dim(x);
        assert!(
            s.len() == 3 && width.is_multiple_of(heads),
            "IR: split_heads needs [B, T, H*hd]"
        );
        let shape = vec![s[0], Dim::Fixed(heads), s[1], Dim::Fixed(width / heads)];
        self.push_op(name, shape, |out| Op::SplitHeads { x, heads, out })
    }

    pub fn merge_heads(&mut self, name: &str, x: ValueId) -> ValueId {
        let s = self.shape(x).clone();
        let (Dim::Fixed(h), Dim::Fixed(hd)) = (s[1], s[3]) else {
            panic!("IR: merge_heads needs [B, H, T, hd]")
        };
        let shape = vec![s[0], s[2], Dim::Fixed(h * hd)];
        self.push_op(name, shape, |out| Op::MergeHeads { x, out })
    }

    pub fn rope(
        &mut self,
        name: &str,
        x: ValueId,
        dims: usize,
        base: f32,
        adjacent_pairs: bool,
    ) -> ValueId {
        assert!(
            dims.is_multiple_of(2) && dims <= self.last_dim(x),
            "IR: rope dims"
        );
        let shape = self.shape(x).clone();
        self.push_op(name, shape, |out| Op::Rope {
            x,
            dims,
            base,
            adjacent_pairs,
            out,
        })
    }

    pub fn head_gain(&mut self, name: &str, x: ValueId, gain: ValueId) -> ValueId {
        let shape = self.shape(x).clone();
        assert_eq!(
            self.shape(gain),
            &vec![shape[1]],
            "IR: head_gain needs one gain per head"
        );
        self.push_op(name, shape, |out| Op::HeadGain { x, gain, out })
    }

    pub fn attention(
        &mut self,
        name: &str,
        q: ValueId,
        k: ValueId,
        v: ValueId,
        scale: f32,
        causal: bool,
    ) -> ValueId {
        let (sq, sk) = (self.shape(q).clone(), self.shape(k).clone());
        let (Dim::Fixed(h), Dim::Fixed(hk)) = (sq[1], sk[1]) else {
            panic!("IR: attention heads")
        };
        assert!(
            hk > 0 && h % hk == 0,
            "IR: kv heads must divide query heads"
        );
        assert_eq!(sk, *self.shape(v), "IR: k and v shapes differ");
        let mut shape = sq.clone();
        shape[3] = self.shape(v)[3];
        self.push_op(name, shape, |out| Op::Attention {
            q,
            k,
            v,
            scale,
            causal,
            out,
        })
    }

    pub fn causal_conv1d(
        &mut self,
        name: &str,
        x: ValueId,
        weight: ValueId,
        bias: ValueId,
    ) -> ValueId {
        let c = self.last_dim(x);
        assert_eq!(
            self.shape(weight)[1],
            Dim::Fixed(c),
            "IR: conv weight must be [K, C]"
        );
        assert_eq!(
            self.shape(bias),
            &vec![Dim::Fixed(c)],
            "IR: conv bias must be [C]"
        );
        let shape = self.shape(x).clone();
        self.push_op(name, shape, |out| Op::CausalConv1d {
            x,
            weight,
            bias,
            out,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn selective_scan(
        &mut self,
        name: &str,
        x: ValueId,
        delta: ValueId,
        a_log: ValueId,
        b: ValueId,
        c: ValueId,
        d: ValueId,
        chunk: usize,
    ) -> ValueId {
        let inner = self.last_dim(x);
        let n = self.last_dim(b);
        assert_eq!(self.shape(delta), self.shape(x), "IR: scan delta shape");
        assert_eq!(
            self.shape(a_log),
            &fixed(&[inner, n]),
            "IR: scan a_log shape"
        );
        assert_eq!(self.shape(c), self.shape(b), "IR: scan b/c shapes");
        assert_eq!(self.shape(d), &fixed(&[inner]), "IR: scan d shape");
        let shape = self.shape(x).clone();
        self.push_op(name, shape, |out| Op::SelectiveScan {
            x,
            delta,
            a_log,
            b,
            c,
            d,
            chunk,
            out,
        })
    }

    /// Dropout with `rate`; emits nothing when `rate` is 0.
    pub fn dropout(&mut self, name: &str, x: ValueId, rate: f32) -> ValueId {
        if rate <= 0.0 {
            return x;
        }
        let ordinal = self.dropout_ops;
        self.dropout_ops += 1;
        let shape = self.shape(x).clone();
        self.push_op(name, shape, |out| Op::Dropout {
            x,
            rate,
            ordinal,
            out,
        })
    }

    pub fn cross_entropy(&mut self, logits: ValueId, targets: ValueId) -> ValueId {
        self.push_op("loss", vec![], |out| Op::CrossEntropy {
            logits,
            targets,
            out,
        })
    }

    pub fn finish(
        self,
        tokens: ValueId,
        targets: ValueId,
        logits: ValueId,
        loss: ValueId,
    ) -> Program {
        Program {
            weights: self.weights,
            values: self.values,
            ops: self.ops,
            tokens,
            targets,
            logits,
            loss,
            weight_values: self.weight_values,
            dropout_ops: self.dropout_ops,
        }
    }
}
