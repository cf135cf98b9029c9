//! `plain`: pre-norm causal self-attention with RoPE, grouped-query attention (`kv_heads`), optional
//! per-head `qk_gain` and partial RoPE (`rope_dims`), followed by mixlab's feed-forward tail.
//!
//! mixlab quirk kept on purpose: the FFN tail reads the *un-normalised* residual stream
//! (`x += ff2(act(ff1(x)))`, no norm before it), exactly as mixlab's `plain` block does.

use super::{Block, BlockType, ModelDims};
use crate::error::ConfigError;
use crate::ir::{Activation, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;

pub const TYPE: BlockType = BlockType {
    name: "plain",
    parse,
    fields: &[
        "heads",
        "kv_heads",
        "qk_gain",
        "rope_dims",
        "rope_base",
        "rope_convention",
        "ffn_activation",
    ],
    summary: "causal attention (RoPE, GQA) + un-normalised FFN tail",
};

const UNSUPPORTED: &[&str] = &[
    "qk_norm",
    "xsa",
    "kv_source",
    "window_size",
    "attention_mask",
    "skip_attention",
    "sparse_attn_gate",
    "attn_bias",
    "attn_value_gate",
    "attn_post_norm",
    "ffn_pre_norm",
    "ffn_bias",
    "residual_scale_init",
    "parallel_residual",
    "parallel_group",
    "weight_group",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Plain {
    pub heads: usize,
    pub kv_heads: usize,
    pub qk_gain: Option<f32>,
    /// Rotated features per head (even, <= head_dim).
    pub rope_dims: usize,
    pub rope_base: f32,
    pub adjacent_pairs: bool,
    pub ffn_activation: Activation,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let heads = f.usize("heads")?.ok_or_else(|| {
        f.error("heads", "a plain block needs `heads`")
            .with_hint("add e.g. \"heads\": 4 (model_dim must be divisible by it)")
    })?;
    if heads == 0 || !dims.model_dim.is_multiple_of(heads) {
        return Err(f.error(
            "heads",
            format!(
                "heads={heads} must be > 0 and divide model_dim={}",
                dims.model_dim
            ),
        ));
    }
    let head_dim = dims.model_dim / heads;
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
        None | Some(0) if !head_dim.is_multiple_of(2) => {
            return Err(f
                .error(
                    "heads",
                    format!(
                        "head_dim = model_dim / heads = {head_dim} is odd, and RoPE rotates pairs of features"
                    ),
                )
                .with_hint("choose heads so that model_dim / heads is even, or set an even rope_dims"));
        }
        None | Some(0) => head_dim,
        Some(r) if r % 2 != 0 => {
            return Err(f.error("rope_dims", format!("rope_dims={r} must be even")));
        }
        Some(r) if r > head_dim => {
            return Err(f.error(
                "rope_dims",
                format!("rope_dims={r} must be <= head_dim={head_dim}"),
            ));
        }
        Some(r) => r,
    };
    let rope_base = match f.f64("rope_base")? {
        None => 10000.0,
        Some(b) if b > 1.0 => b as f32,
        Some(b) => return Err(f.error("rope_base", format!("rope_base={b} must be > 1"))),
    };
    let adjacent_pairs = match f.string("rope_convention")?.as_deref() {
        None | Some("adjacent_pair") => true,
        Some("half_rotation") => false,
        Some(other) => {
            return Err(f
                .error(
                    "rope_convention",
                    format!("unknown rope_convention {other:?}"),
                )
                .with_hint("use \"adjacent_pair\" (default) or \"half_rotation\""));
        }
    };
    let ffn_activation = match f.string("ffn_activation")?.as_deref() {
        None | Some("silu") => Activation::Silu,
        Some("gelu") => Activation::Gelu,
        Some("gelu_new") => Activation::GeluTanh,
        Some("relu") => Activation::Relu,
        Some(other) => {
            return Err(f
                .error(
                    "ffn_activation",
                    format!("unknown ffn_activation {other:?}"),
                )
                .with_hint("use silu, gelu, gelu_new or relu"));
        }
    };
    check_unsupported(f)?;
    Ok(Box::new(Plain {
        heads,
        kv_heads,
        qk_gain,
        rope_dims,
        rope_base,
        adjacent_pairs,
        ffn_activation,
    }))
}

fn check_unsupported(f: &Fields<'_>) -> Result<(), ConfigError> {
    for key in UNSUPPORTED {
        if f.has(key) {
            return Err(f
                .error(key, format!("`{key}` is a mixlab plain-block option that mixsweep does not implement yet"))
                .with_hint("remove it"));
        }
    }
    Ok(())
}

impl Block for Plain {
    fn kind(&self) -> &'static str {
        "plain"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, dims: &ModelDims) -> ValueId {
        let d = dims.model_dim;
        let head_dim = d / self.heads;
        let kv_dim = self.kv_heads * head_dim;
        let f = dims.ffn_dim;
        let norm = b.weight("norm_scale", &[d], Init::Constant(1.0), ParamGroup::Scalar);
        let wq = b.matrix("wq", d, d, dims.matrix_init);
        let wk = b.matrix("wk", d, kv_dim, dims.matrix_init);
        let wv = b.matrix("wv", d, kv_dim, dims.matrix_init);
        let wo = b.matrix("wo", d, d, dims.matrix_init);
        let ff1 = b.matrix("ff1", d, f, dims.matrix_init);
        let ff2 = b.matrix("ff2", f, d, dims.matrix_init);
        let gain = self.qk_gain.map(|g| {
            b.weight(
                "qk_gain",
                &[self.heads],
                Init::Constant(g),
                ParamGroup::Scalar,
            )
        });

        let h = b.rms_norm("attn_norm", x, norm, dims.norm_eps);
        // One matmul for q, k and v (the weights keep mixlab's names); split, not sliced, so that
        // the backward pass is one concatenation rather than three zero-padded slices.
        let [q, k, v] = b.project_split(&["q", "k", "v"], h, &[wq, wk, wv])[..] else {
            unreachable!("three weights give three outputs")
        };
        let q = b.split_heads("q_heads", q, self.heads);
        let k = b.split_heads("k_heads", k, self.kv_heads);
        let v = b.split_heads("v_heads", v, self.kv_heads);
        let q = b.rope(
            "q_rope",
            q,
            self.rope_dims,
            self.rope_base,
            self.adjacent_pairs,
        );
        let k = b.rope(
            "k_rope",
            k,
            self.rope_dims,
            self.rope_base,
            self.adjacent_pairs,
        );
        let q = match gain {
            Some(g) => b.head_gain("q_gain", q, g),
            None => q,
        };
        let c = b.attention("attention", q, k, v, 1.0 / (head_dim as f32).sqrt(), true);
        let c = b.merge_heads("attention_merged", c);
        let o = b.linear("attention_out", c, wo);
        let o = b.dropout("attention_dropout", o, dims.dropout);
        let x = b.add("attention_residual", x, o);

        let a = b.linear("ff1_out", x, ff1);
        let a = b.activation("ff_act", a, self.ffn_activation);
        let y = b.linear("ff2_out", a, ff2);
        let y = b.dropout("ffn_dropout", y, dims.dropout);
        b.add("ffn_residual", x, y)
    }
}
