//! Lowering a [`ModelConfig`] to a [`Program`], and the counts `count` reports (parameters, FLOPs).
//!
//! Layout (mixlab's order): `embed [V, D]`, `head [D, V]` (absent when tied), `final_norm [D]`, then
//! each block's weights under `blocks.{i}.`. Embedding dropout follows the embedding when
//! `dropout > 0`.

use crate::blocks::ModelDims;
use crate::config::ModelConfig;
use crate::ir::{Builder, Init, Op, ParamGroup, Program};

impl ModelConfig {
    /// The training/eval program: tokens -> logits -> mean cross-entropy.
    pub fn lower(&self) -> Program {
        let dims = self.dims();
        let mut b = Builder::new(self.seq_len);
        let embed = b.weight(
            "embed",
            &[self.vocab_size, self.model_dim],
            dims.matrix_init,
            ParamGroup::Embed,
        );
        let head = (!self.tie_embeddings).then(|| {
            b.weight(
                "head",
                &[self.model_dim, self.vocab_size],
                dims.matrix_init,
                ParamGroup::Head,
            )
        });
        let final_norm = b.weight(
            "final_norm",
            &[self.model_dim],
            Init::Constant(1.0),
            ParamGroup::Scalar,
        );
        let tokens = b.input_tokens();
        let targets = b.input_targets();
        let mut x = b.embedding(embed, tokens);
        x = b.dropout("embedding_dropout", x, dims.dropout);
        for (i, block) in self.blocks.iter().enumerate() {
            b.set_prefix(format!("blocks.{i}."));
            x = block.lower(&mut b, x, &dims);
        }
        b.set_prefix("");
        let h = b.rms_norm("final_norm_out", x, final_norm, dims.norm_eps);
        let logits = match head {
            Some(w) => b.linear("logits", h, w),
            None => b.linear_transposed("logits", h, embed),
        };
        let loss = b.cross_entropy(logits, targets);
        b.finish(tokens, targets, logits, loss)
    }

    pub fn counts(&self) -> Counts {
        Counts::of(&self.lower(), &self.dims(), self.blocks.len())
    }
}

/// What `mixsweep-runner count` reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Counts {
    pub params: usize,
    pub bytes_f32: usize,
    pub weights: usize,
    pub blocks: usize,
    pub ir_ops: usize,
    /// Forward FLOPs per token: 2·in·out per matmul, attention over the full T×T (mixlab's convention).
    pub forward_flops_per_token: f64,
    /// 3 × forward (forward + backward).
    pub train_flops_per_token: f64,
}

impl Counts {
    pub fn of(p: &Program, dims: &ModelDims, blocks: usize) -> Counts {
        let mut fwd = 0f64;
        for op in &p.ops {
            match op {
                Op::Linear { weight, .. } | Op::LinearTransposed { weight, .. } => {
                    let w = &p.weights[weight_index(p, *weight)];
                    fwd += 2.0 * w.numel() as f64;
                }
                Op::ProjectSplit { weights, .. } => {
                    for w in weights {
                        fwd += 2.0 * p.weights[weight_index(p, *w)].numel() as f64;
                    }
                }
                Op::Attention { q, .. } => {
                    // scores q·kᵀ and weights·v, each 2·T·hd per head per token
                    let shape = p.concrete_shape(*q, 1);
                    let (h, hd) = (shape[1], shape[3]);
                    fwd += 4.0 * (h * hd * dims.seq_len) as f64;
                }
                _ => {}
            }
        }
        let params = p.param_count();
        Counts {
            params,
            bytes_f32: params * 4,
            weights: p.weights.len(),
            blocks,
            ir_ops: p.ops.len(),
            forward_flops_per_token: fwd,
            train_flops_per_token: 3.0 * fwd,
        }
    }
}

fn weight_index(p: &Program, v: crate::ir::ValueId) -> usize {
    match p.values[v.0].source {
        crate::ir::Source::Weight(i) => i,
        _ => panic!("matmul operand {} is not a weight", p.values[v.0].name),
    }
}
