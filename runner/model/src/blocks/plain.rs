//! `plain`: causal self-attention (RoPE, grouped-query attention) followed by mixlab's feed-forward
//! tail.
//!
//! ```text
//! [resid_mix]  x = m[0] ⊙ x + m[1] ⊙ x0                    (m = resid_mix [2, D], init [1, 0])
//!              h = Norm(x)                                 (norm_scale; per norm_placement)
//!              q, k, v = h · [wq | wk | wv]  (+ biases)     (one matmul, split)
//! [qk_norm]    q, k = RMSNorm_hd(q), RMSNorm_hd(k)          (q/k_norm_scale [hd], eps 1e-5)
//!              q, k = RoPE(q), RoPE(k)                     (first rope_dims features; positional_embedding rope)
//! [qk_gain]    q = q ⊙ g[head]                              (equals scaling each head's scores)
//!              c = softmax(q·kᵀ/sqrt(hd) + causal/window mask) · v   (attention dropout)
//! [xsa]        c = c - (<c, v>/(<v, v> + 1e-8)) · v
//! [differential_attention]  c = DIFF Transformer attention instead (see `differential`)
//!              x = x + attn_scale ⊙ dropout(merge(c) · wo)
//!              t = x, or Norm(x) with ffn_pre_norm / sandwich placement   (ffn_norm)
//!              x = x + mlp_scale ⊙ dropout(act(t · ff1) · ff2)   (geglu/swiglu: act(t·ff_gate) ⊙ t·ff1)
//! ```
//! mixlab quirk kept on purpose: the FFN tail reads the *un-normalised* stream unless `ffn_pre_norm`.
//! `kv_source: i` (1-indexed, an earlier `plain` block with the same heads) reuses that block's post-RoPE
//! keys and values: this block has no `wk`, `wv`. Differences from mixlab: `resid_mix` starts at the
//! identity `[1, 0]` (mixlab draws it Xavier-random, scaling the stream down at init); the fused qkv
//! matmul is an implementation detail (the weights keep mixlab's names and shapes).

use super::differential::Differential;
use super::kit;
use super::{Block, BlockCtx, BlockType, ModelDims, Placement, Role};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, Init, ParamGroup, ValueId};
use crate::json::{Fields, mixlab};
use crate::ops::{Attention, AttentionMask, Concat, NormKind, Rope, Split, UnaryKind, Xsa};

pub const TYPE: BlockType = BlockType {
    name: "plain",
    parse,
    fields: &[
        "heads",
        "kv_heads",
        "qk_gain",
        "qk_norm",
        "rope_dims",
        "rope_base",
        "rope_convention",
        "xsa",
        "kv_source",
        "window_size",
        "attention_mask",
        "attn_bias",
        "ffn_activation",
        "ffn_pre_norm",
        "parallel_residual",
        "differential_attention",
        "differential_lambda_init",
    ],
    summary: "causal attention (RoPE, GQA, qk-norm, XSA, windows, shared KV, differential) + un-normalised FFN tail",
};

const MIXLAB_ONLY: &[crate::json::MixlabField] = &[
    mixlab(
        "skip_attention",
        Some("false"),
        "attention-free plain blocks are not supported",
    ),
    mixlab(
        "sparse_attn_gate",
        Some("false"),
        "the sparse attention gate is not supported",
    ),
    mixlab(
        "attn_value_gate",
        Some("false"),
        "the value gate is not supported",
    ),
    mixlab(
        "attn_post_norm",
        Some("false"),
        "use norm_placement for post-norms",
    ),
    mixlab("ffn_bias", Some("false"), "FFN biases are not supported"),
    mixlab(
        "parallel_group",
        None,
        "heterogeneous parallel groups are not supported (parallel_residual pairs are)",
    ),
    mixlab(
        "relative_attention",
        Some("false"),
        "relative attention is not supported",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum FfnActivation {
    Plain(UnaryKind),
    /// `act(t · ff_gate) ⊙ (t · ff1)`.
    Gated(UnaryKind),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plain {
    pub heads: usize,
    pub kv_heads: usize,
    pub qk_gain: Option<f32>,
    pub qk_norm: bool,
    /// Rotated features per head (even, <= head_dim).
    pub rope_dims: usize,
    pub rope_base: f32,
    pub adjacent_pairs: bool,
    pub xsa: bool,
    /// 0-based index of the block whose keys and values this one reuses.
    pub kv_source: Option<usize>,
    pub window: Option<usize>,
    pub attn_bias: bool,
    ffn: FfnActivation,
    pub ffn_pre_norm: bool,
    /// Starts a parallel-residual pair with the next block.
    pub parallel_residual: bool,
    /// DIFF Transformer attention ([`Differential`]).
    pub differential: Option<Differential>,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    f.mixlab_defaults(MIXLAB_ONLY)?;
    let heads = kit::heads(f, dims.model_dim, "plain", None)?;
    let head_dim = dims.model_dim / heads;
    let differential = Differential::parse(f, head_dim)?;
    // a differential head's sub-maps are rotated: rope_dims counts a sub-map's features
    let rope_width = if differential.is_some() { head_dim / 2 } else { head_dim };
    let kv_heads = f.usize("kv_heads")?.unwrap_or(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(f
            .error("kv_heads", format!("kv_heads={kv_heads} must divide heads={heads}"))
            .with_hint("use a divisor of heads (kv_heads = heads is plain multi-head attention, 1 is multi-query)"));
    }
    let qk_gain = match f.f64("qk_gain")? {
        None => None,
        Some(g) if g > 0.0 => Some(g as f32),
        Some(g) => {
            return Err(f.error(
                "qk_gain",
                format!("qk_gain={g} must be > 0 (omit it to disable)"),
            ));
        }
    };
    let rope_dims = match f.usize("rope_dims")? {
        _ if !dims.rope => rope_width,
        None | Some(0) if !rope_width.is_multiple_of(2) => {
            return Err(f
                .error("heads", format!("the rotated width (head_dim = model_dim / heads, half of it with differential_attention) is {rope_width}: odd, and RoPE rotates pairs of features"))
                .with_hint("choose heads so that model_dim / heads is even, or set an even rope_dims"));
        }
        None | Some(0) => rope_width,
        Some(r) if r % 2 != 0 => {
            return Err(f.error("rope_dims", format!("rope_dims={r} must be even")));
        }
        Some(r) if r > rope_width => {
            return Err(f.error(
                "rope_dims",
                match differential {
                    None => format!("rope_dims={r} must be <= head_dim={head_dim}"),
                    Some(_) => format!("rope_dims={r} must be <= {rope_width}, a differential sub-map's width (head_dim / 2)"),
                },
            ));
        }
        Some(r) => r,
    };
    let rope_base = match f.f64("rope_base")? {
        None => 10000.0,
        Some(b) if b > 1.0 => b as f32,
        Some(b) => return Err(f.error("rope_base", format!("rope_base={b} must be > 1"))),
    };
    let adjacent_pairs = f.choice(
        "rope_convention",
        &["adjacent_pair", "half_rotation"],
        "adjacent_pair",
    )? == "adjacent_pair";
    let mask = f.choice(
        "attention_mask",
        &["causal", "bidirectional", "none"],
        "causal",
    )?;
    if mask != "causal" {
        return Err(f
            .error("attention_mask", format!("attention_mask {mask:?} lets a token see the ones after it, which a causal language model must not"))
            .with_hint("use \"causal\" (mixsweep trains causal language models; masked objectives are not implemented)"));
    }
    let window = match f.usize("window_size")? {
        None | Some(0) => None,
        Some(w) => Some(w),
    };
    let kv_source = match f.usize("kv_source")? {
        None | Some(0) => None,
        Some(i) => Some(i - 1),
    };
    let ffn = match f.choice(
        "ffn_activation",
        &["silu", "gelu", "gelu_new", "relu", "geglu", "swiglu"],
        "silu",
    )? {
        "silu" => FfnActivation::Plain(UnaryKind::Silu),
        "gelu" => FfnActivation::Plain(UnaryKind::Gelu),
        "gelu_new" => FfnActivation::Plain(UnaryKind::GeluTanh),
        "relu" => FfnActivation::Plain(UnaryKind::Relu),
        "geglu" => FfnActivation::Gated(UnaryKind::GeluTanh),
        _ => FfnActivation::Gated(UnaryKind::Silu),
    };
    let qk_norm = f.bool("qk_norm")?.unwrap_or(false);
    let xsa = f.bool("xsa")?.unwrap_or(false);
    if differential.is_some() {
        Differential::check_conflicts(
            f,
            &[
                ("kv_heads", kv_heads != heads),
                ("qk_norm", qk_norm),
                ("qk_gain", qk_gain.is_some()),
                ("xsa", xsa),
                ("kv_source", kv_source.is_some()),
            ],
        )?;
    }
    Ok(Box::new(Plain {
        heads,
        kv_heads,
        qk_gain,
        qk_norm,
        rope_dims,
        rope_base,
        adjacent_pairs,
        xsa,
        kv_source,
        window,
        attn_bias: f.bool("attn_bias")?.unwrap_or(false),
        ffn,
        ffn_pre_norm: f.bool("ffn_pre_norm")?.unwrap_or(false),
        parallel_residual: f.bool("parallel_residual")?.unwrap_or(false),
        differential,
    }))
}

type R<T> = Result<T, BuildError>;

impl Plain {
    fn head_dim(&self, d: usize) -> usize {
        d / self.heads
    }

    /// q, k, v as `[B, H, T, hd]` (k and v from the kv source's cache when shared).
    fn qkv(
        &self,
        b: &mut Builder,
        ctx: &BlockCtx<'_>,
        h: ValueId,
    ) -> R<(ValueId, ValueId, ValueId)> {
        let d = ctx.dims.model_dim;
        let hd = self.head_dim(d);
        let kv_dim = self.kv_heads * hd;
        let wq = kit::matrix(b, ctx, "wq", d, d, Role::In)?;
        let shared = self.kv_source.and_then(|src| ctx.shared_kv(src));
        let (q, k, v) = match shared {
            Some((k, v)) => (b.matmul("q", h, wq)?, k, v),
            None => {
                let wk = kit::matrix(b, ctx, "wk", d, kv_dim, Role::In)?;
                let wv = kit::matrix(b, ctx, "wv", d, kv_dim, Role::In)?;
                // one matmul for q, k and v; split (not sliced): its backward is one concatenation
                let w = b.op1(Concat { axis: 1 }, &[wq, wk, wv], "wqkv")?;
                let qkv = b.matmul("qkv", h, w)?;
                let parts = b.op(
                    Split {
                        sizes: vec![d, kv_dim, kv_dim],
                    },
                    &[qkv],
                    "qkv_split",
                )?;
                (parts[0], parts[1], parts[2])
            }
        };
        let (q, k, v) = if self.attn_bias {
            let qb = b.weight("q_bias", &[d], Init::Constant(0.0), ParamGroup::Scalar)?;
            let q = b.add("q_biased", q, qb)?;
            if shared.is_some() {
                (q, k, v)
            } else {
                let kb = b.weight("k_bias", &[kv_dim], Init::Constant(0.0), ParamGroup::Scalar)?;
                let vb = b.weight("v_bias", &[kv_dim], Init::Constant(0.0), ParamGroup::Scalar)?;
                (q, b.add("k_biased", k, kb)?, b.add("v_biased", v, vb)?)
            }
        } else {
            (q, k, v)
        };
        let q = b.split_heads("q_heads", q, self.heads)?;
        let q = if self.qk_norm {
            kit::norm_with(b, "q_norm_scale", q, NormKind::Rms, 1e-5, true)?
        } else {
            q
        };
        let q = self.rope_full(b, ctx, q, "q_rope")?;
        if let Some(kv) = shared {
            return Ok((q, kv.0, kv.1));
        }
        let k = b.split_heads("k_heads", k, self.kv_heads)?;
        let v = b.split_heads("v_heads", v, self.kv_heads)?;
        let k = if self.qk_norm {
            kit::norm_with(b, "k_norm_scale", k, NormKind::Rms, 1e-5, true)?
        } else {
            k
        };
        let k = self.rope_full(b, ctx, k, "k_rope")?;
        Ok((q, k, v))
    }

    /// RoPE on whole heads (differential heads rotate each sub-map instead, in [`Differential`]).
    fn rope_full(&self, b: &mut Builder, ctx: &BlockCtx<'_>, x: ValueId, name: &str) -> R<ValueId> {
        if self.differential.is_some() {
            return Ok(x);
        }
        self.rope(b, ctx, x, name)
    }

    fn rope(&self, b: &mut Builder, ctx: &BlockCtx<'_>, x: ValueId, name: &str) -> R<ValueId> {
        if !ctx.dims.rope {
            return Ok(x);
        }
        let op = Rope {
            dims: self.rope_dims,
            base: self.rope_base,
            adjacent_pairs: self.adjacent_pairs,
        };
        b.op1(op, &[x], name)
    }

    /// The attention sublayer's output `[B, T, D]` (before the residual add) from normalised `h`.
    fn attention(
        &self,
        b: &mut Builder,
        ctx: &BlockCtx<'_>,
        h: ValueId,
        index: usize,
    ) -> R<ValueId> {
        let d = ctx.dims.model_dim;
        let (q, k, v) = self.qkv(b, ctx, h)?;
        let mask = match self.window {
            Some(w) => AttentionMask::Window(w),
            None => AttentionMask::Causal,
        };
        if let Some(diff) = &self.differential {
            let rope = |b: &mut Builder, x: ValueId, name: &str| self.rope(b, ctx, x, name);
            let c = diff.attend(b, ctx, (q, k, v), mask, &rope)?;
            return self.output(b, ctx, c);
        }
        ctx.publish_kv(index, k, v);
        let q = match self.qk_gain {
            Some(g) => {
                let gain = b.weight(
                    "qk_gain",
                    &[self.heads],
                    Init::Constant(g),
                    ParamGroup::Scalar,
                )?;
                let gain = b.reshape(
                    "qk_gain_heads",
                    gain,
                    vec![
                        Dim::Fixed(1),
                        Dim::Fixed(self.heads),
                        Dim::Fixed(1),
                        Dim::Fixed(1),
                    ],
                )?;
                b.mul("q_gain", q, gain)?
            }
            None => q,
        };
        let attn = Attention {
            scale: 1.0 / (self.head_dim(d) as f32).sqrt(),
            mask,
            dropout: ctx.dims.attn_dropout,
            ordinal: b.reserve_dropout(ctx.dims.attn_dropout),
        };
        let c = b.op1(attn, &[q, k, v], "attention")?;
        let c = if self.xsa {
            b.op1(Xsa, &[c, v], "xsa")?
        } else {
            c
        };
        self.output(b, ctx, c)
    }

    /// `merge(c) · wo (+ o_bias)`: the attention sublayer's output projection.
    fn output(&self, b: &mut Builder, ctx: &BlockCtx<'_>, c: ValueId) -> R<ValueId> {
        let d = ctx.dims.model_dim;
        let c = b.merge_heads("attention_merged", c)?;
        let wo = kit::matrix(b, ctx, "wo", d, d, Role::Out)?;
        let o = b.matmul("attention_out", c, wo)?;
        if self.attn_bias {
            let ob = b.weight("o_bias", &[d], Init::Constant(0.0), ParamGroup::Scalar)?;
            b.add("attention_out_biased", o, ob)
        } else {
            Ok(o)
        }
    }

    /// The FFN tail on the stream after attention.
    fn ffn(&self, b: &mut Builder, ctx: &BlockCtx<'_>, x: ValueId) -> R<ValueId> {
        let (d, f) = (ctx.dims.model_dim, ctx.dims.ffn_dim);
        let placement = ctx.dims.norm.placement;
        let t = if self.ffn_pre_norm || placement == Placement::Sandwich {
            kit::norm(b, ctx, "ffn_norm", x)?
        } else {
            x
        };
        let ff1 = kit::matrix(b, ctx, "ff1", d, f, Role::In)?;
        let ff2 = kit::matrix(b, ctx, "ff2", f, d, Role::Out)?;
        let u = b.matmul("ff1_out", t, ff1)?;
        let a = match self.ffn {
            FfnActivation::Plain(act) => b.unary("ff_act", u, act)?,
            FfnActivation::Gated(act) => {
                let gate = kit::matrix(b, ctx, "ff_gate", d, f, Role::In)?;
                let g = b.matmul("ff_gate_out", t, gate)?;
                let g = b.unary("ff_gate_act", g, act)?;
                b.mul("ff_gated", g, u)?
            }
        };
        let a = kit::ffn_internal_norm(b, ctx, a)?;
        let y = b.matmul("ff2_out", a, ff2)?;
        let y = match placement {
            Placement::Post | Placement::Sandwich => kit::norm(b, ctx, "post_ffn_norm", y)?,
            Placement::Pre => y,
        };
        let y = b.dropout("ffn_dropout", y, ctx.dims.dropout)?;
        let y = kit::block_scale(b, ctx, y, "mlp_scale")?;
        b.add("ffn_residual", x, y)
    }

    /// The whole block given the (possibly shared) normalised input `h` of the attention.
    fn rest(&self, b: &mut Builder, ctx: &BlockCtx<'_>, x: ValueId, h: ValueId) -> R<ValueId> {
        let o = self.attention(b, ctx, h, ctx.config_index)?;
        let o = match ctx.dims.norm.placement {
            Placement::Post | Placement::Sandwich => kit::norm(b, ctx, "post_attn_norm", o)?,
            Placement::Pre => o,
        };
        let o = b.dropout("attention_dropout", o, ctx.dims.dropout)?;
        let o = kit::block_scale(b, ctx, o, "attn_scale")?;
        let x = b.add("attention_residual", x, o)?;
        self.ffn(b, ctx, x)
    }

    fn mixed(&self, b: &mut Builder, ctx: &BlockCtx<'_>, x: ValueId) -> R<ValueId> {
        let Some(x0) = ctx.x0 else { return Ok(x) };
        let d = ctx.dims.model_dim;
        let m = b.weight(
            "resid_mix",
            &[2, d],
            Init::Rows {
                first: 1.0,
                rest: 0.0,
            },
            ParamGroup::Matrix,
        )?;
        let flat = b.reshape("resid_mix_flat", m, vec![Dim::Fixed(2 * d)])?;
        let parts = b.op(Split { sizes: vec![d, d] }, &[flat], "resid_mix_rows")?;
        let a = b.mul("resid_mix_x", x, parts[0])?;
        let c = b.mul("resid_mix_x0", x0, parts[1])?;
        b.add("resid_mixed", a, c)
    }
}

impl Block for Plain {
    fn kind(&self) -> &'static str {
        "plain"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let x = self.mixed(b, ctx, x)?;
        let h = match ctx.dims.norm.placement {
            Placement::Pre | Placement::Sandwich => kit::norm(b, ctx, "norm_scale", x)?,
            Placement::Post => x,
        };
        self.rest(b, ctx, x, h)
    }

    fn lower_normed(
        &self,
        b: &mut Builder,
        x: ValueId,
        h: ValueId,
        ctx: &BlockCtx<'_>,
    ) -> Option<R<ValueId>> {
        Some(self.rest(b, ctx, x, h))
    }

    fn attention_heads(&self) -> Option<(usize, usize)> {
        // a differential block's keys are two rotated sub-maps: not shareable
        self.differential.is_none().then_some((self.heads, self.kv_heads))
    }

    fn kv_source(&self) -> Option<usize> {
        self.kv_source
    }

    fn starts_parallel_pair(&self) -> bool {
        self.parallel_residual
    }

    fn can_lead_parallel_pair(&self) -> bool {
        true
    }
}
