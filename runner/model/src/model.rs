//! Lowering a [`ModelConfig`] to a [`Program`], and the counts `count` reports (parameters, FLOPs).
//!
//! ```text
//! x  = embed[tokens] (+ positions) (+ bigram, trigram, character channels); embedding dropout
//! x0 = x                                                     (resid_mix)
//! blocks: in order, sharing roots' weights; parallel-residual pairs share one norm;
//!         U-Net: decoder block j adds skip_weight ⊙ the mirrored encoder output first
//! h  = Norm(x) (final_norm); logits = h · head (or · embedᵀ when tied); softcap; cross-entropy
//! ```
//! Weight layout (mixlab's order, our names): `embed`, `head`, `final_norm`, `position_embeddings`,
//! n-gram and character tables, then each root block's weights under `blocks.{i}.`, the U-Net skips
//! `unet.skip_{j}` between encoder and decoder.

use crate::blocks::{BlockCtx, Role};
use crate::config::{ModelConfig, Ngram, Positional};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Init, ParamGroup, Program, ValueId};
use crate::ops::{self, NormKind, UnaryKind};
use std::cell::RefCell;
use std::collections::HashMap;

type R<T> = Result<T, BuildError>;

/// A build error of the model's own ops (outside blocks), as a config error.
fn model_error(e: BuildError) -> ConfigError {
    ConfigError::new("", format!("cannot build the model: {e}"))
}

fn block_error(i: usize, e: BuildError) -> ConfigError {
    match &e.path {
        Some(p) => ConfigError::new(format!("blocks[{i}].{p}"), e.message),
        None => ConfigError::new(
            format!("blocks[{i}]"),
            format!("cannot build this block: {e}"),
        ),
    }
}

impl ModelConfig {
    /// The training/eval program: tokens -> logits -> mean cross-entropy.
    pub fn lower(&self) -> Program {
        self.try_lower()
            .expect("a ModelConfig lowers: it was lowered when it was validated")
    }

    /// [`ModelConfig::lower`], reporting a bad layout or block as a config error.
    pub fn try_lower(&self) -> Result<Program, ConfigError> {
        let dims = self.dims();
        let mut b = Builder::new(self.seq_len);
        b.enter("", "", false);
        let (embed, head, final_norm) = self.io_weights(&mut b).map_err(model_error)?;
        let x = self.embed(&mut b, embed).map_err(model_error)?;
        let x0 = self.resid_mix.then_some(x);
        let x = self.blocks_stage(&mut b, x, x0, &dims)?;
        b.enter("", "", false);
        let (hidden, logits) = self
            .head(&mut b, x, embed, head, final_norm)
            .map_err(model_error)?;
        let targets = b.targets();
        let loss = b
            .op1(ops::CrossEntropy, &[logits, targets], "loss")
            .map_err(model_error)?;
        if self.training.z_loss > 0.0 {
            let z = ops::ZLoss {
                coef: self.training.z_loss as f32,
            };
            let z = b.op1(z, &[logits], "z_loss").map_err(model_error)?;
            b.aux_loss("z_loss", z);
        }
        Ok(b.finish(hidden, logits, loss))
    }

    /// `embed [V, D]`, `head [D, V]` (absent when tied) and the final norm's weights.
    fn io_weights(&self, b: &mut Builder) -> R<(ValueId, Option<ValueId>, Vec<ValueId>)> {
        let dims = self.dims();
        let (v, d) = (self.vocab_size, self.model_dim);
        let embed = b.weight(
            "embed",
            &[v, d],
            dims.init(Role::In, 0, v),
            ParamGroup::Embed,
        )?;
        let head = if self.tie_embeddings {
            None
        } else {
            Some(b.weight("head", &[d, v], dims.init(Role::In, 0, d), ParamGroup::Head)?)
        };
        let mut norm = vec![];
        if self.final_norm && self.norm.affine {
            norm.push(b.weight("final_norm", &[d], Init::Constant(1.0), ParamGroup::Scalar)?);
            if self.norm.kind == NormKind::Layer {
                norm.push(b.weight(
                    "final_norm_bias",
                    &[d],
                    Init::Constant(0.0),
                    ParamGroup::Scalar,
                )?);
            }
        }
        Ok((embed, head, norm))
    }

    /// Token embeddings plus the configured feature channels, then embedding dropout.
    fn embed(&self, b: &mut Builder, embed: ValueId) -> R<ValueId> {
        let d = self.model_dim;
        let tokens = b.tokens();
        let mut x = b.op1(ops::Embedding, &[embed, tokens], "embedding")?;
        if let Positional::Learned { max_positions } = self.positional {
            let t = b.weight(
                "position_embeddings",
                &[max_positions, d],
                Init::Normal { std: 0.02 },
                ParamGroup::Embed,
            )?;
            let p = b.op1(ops::PositionEmbedding, &[t, tokens], "positions")?;
            x = b.add("with_positions", x, p)?;
        }
        for (name, n, g) in [("bigram", 2, self.bigram), ("trigram", 3, self.trigram)] {
            if let Some(g) = g {
                let ids = b.op1(
                    ops::NgramHash { n, size: g.size },
                    &[tokens],
                    &format!("{name}_ids"),
                )?;
                x = self.channel(b, x, name, ids, g, ops::Embedding.into())?;
            }
        }
        if let Some(c) = self.char_features {
            let map = b.char_map(self.vocab_size, c.max_per_token);
            let ids = b.op1(ops::Embedding, &[map, tokens], "char_ids")?;
            let g = Ngram {
                size: c.vocab,
                dim: c.dim,
            };
            x = self.channel(b, x, "char", ids, g, ops::EmbeddingBag.into())?;
        }
        b.dropout("embedding_dropout", x, self.embedding_dropout as f32)
    }

    /// `x + scale · (table[ids] (· proj))`: mixlab's feature channels (`<name>_table`, `<name>_proj`
    /// when the channel is narrower than the model, `<name>_scale [1]` init 1).
    fn channel(
        &self,
        b: &mut Builder,
        x: ValueId,
        name: &str,
        ids: ValueId,
        g: Ngram,
        gather: ops::Op,
    ) -> R<ValueId> {
        let d = self.model_dim;
        let table = b.weight(
            &format!("{name}_table"),
            &[g.size, g.dim],
            Init::Normal { std: 0.02 },
            ParamGroup::Embed,
        )?;
        let mut e = b.op1(gather, &[table, ids], &format!("{name}_rows"))?;
        if g.dim != d {
            let proj = b.matrix(&format!("{name}_proj"), g.dim, d, Init::XavierUniform)?;
            e = b.matmul(&format!("{name}_projected"), e, proj)?;
        }
        let scale = b.weight(
            &format!("{name}_scale"),
            &[1],
            Init::Constant(1.0),
            ParamGroup::Scalar,
        )?;
        let e = b.mul(&format!("{name}_scaled"), e, scale)?;
        b.add(&format!("with_{name}"), x, e)
    }

    fn blocks_stage(
        &self,
        b: &mut Builder,
        mut x: ValueId,
        x0: Option<ValueId>,
        dims: &crate::blocks::ModelDims,
    ) -> Result<ValueId, ConfigError> {
        let n = self.blocks.len();
        let kv = RefCell::new(HashMap::new());
        let streams = RefCell::new(HashMap::from([("embedding".to_string(), x)]));
        let encoder = if self.layout.unet { n / 2 } else { n };
        let skips_n = encoder.min(n - encoder);
        let mut encoded: Vec<ValueId> = vec![];
        let mut skip_weights: Vec<ValueId> = vec![];
        let mut i = 0;
        while i < n {
            if self.layout.unet && i == encoder {
                b.enter("unet.", "unet.", false);
                for j in 0..skips_n {
                    let w = b.weight(
                        &format!("skip_{j}"),
                        &[self.model_dim],
                        Init::Constant(1.0),
                        ParamGroup::Scalar,
                    );
                    skip_weights.push(w.map_err(model_error)?);
                }
            }
            if self.layout.unet && i >= encoder && !encoded.is_empty() {
                let j = i - encoder;
                let e = encoded[encoder.saturating_sub(1 + j).min(encoded.len() - 1)];
                let w = skip_weights[j.min(skips_n - 1)];
                b.enter(&format!("unet.{j}."), "unet.", false);
                let s = b.mul("skip", e, w).map_err(model_error)?;
                x = b.add("skipped", x, s).map_err(model_error)?;
            }
            let ctx_for = |i: usize| BlockCtx {
                dims,
                index: self.layout.roots[i],
                config_index: i,
                x0,
                residual_scale_init: self.residual_scale_init[i],
                kv: &kv,
                streams: &streams,
            };
            let enter = |b: &mut Builder, i: usize| {
                let root = self.layout.roots[i];
                b.enter(
                    &format!("blocks.{i}."),
                    &format!("blocks.{root}."),
                    root != i,
                );
            };
            if self.layout.parallel[i] {
                enter(b, i);
                let ctx = ctx_for(i);
                let h = crate::blocks::kit::norm(b, &ctx, "norm_scale", x)
                    .map_err(|e| block_error(i, e))?;
                let state = self.blocks[i]
                    .lower_normed(b, x, h, &ctx)
                    .expect("layout checked that this block leads pairs")
                    .map_err(|e| block_error(i, e))?;
                enter(b, i + 1);
                let delta = self.blocks[i + 1]
                    .delta(b, h, &ctx_for(i + 1))
                    .expect("layout checked that this block joins pairs")
                    .map_err(|e| block_error(i + 1, e))?;
                x = b
                    .add("parallel_residual", state, delta)
                    .map_err(|e| block_error(i + 1, e))?;
                let mut s = streams.borrow_mut();
                s.insert(format!("block:{}", i + 1), state);
                s.insert(format!("block:{}", i + 2), x);
                drop(s);
                i += 2;
                continue;
            }
            enter(b, i);
            x = self.blocks[i]
                .lower(b, x, &ctx_for(i))
                .map_err(|e| block_error(i, e))?;
            streams.borrow_mut().insert(format!("block:{}", i + 1), x);
            if self.layout.unet && i < encoder {
                encoded.push(x);
            }
            i += 1;
        }
        Ok(x)
    }

    /// Final norm, output head (tied or not) and soft-cap: the hidden state the head reads and
    /// the logits `[B, T, V]`.
    fn head(
        &self,
        b: &mut Builder,
        x: ValueId,
        embed: ValueId,
        head: Option<ValueId>,
        norm: Vec<ValueId>,
    ) -> R<(ValueId, ValueId)> {
        let h = if self.final_norm {
            let mut inputs = vec![x];
            inputs.extend(norm);
            b.op1(
                ops::Norm {
                    kind: self.norm.kind,
                    eps: self.norm.eps,
                },
                &inputs,
                "final_norm_out",
            )?
        } else {
            x
        };
        let logits = match head {
            Some(w) => b.matmul("logits", h, w)?,
            None => b.op1(ops::MatMulT, &[h, embed], "logits")?,
        };
        let logits = match self.logit_softcap {
            Some(cap) => b.unary("logits_capped", logits, UnaryKind::Softcap { cap })?,
            None => logits,
        };
        Ok((h, logits))
    }

    pub fn counts(&self) -> Counts {
        Counts::of(self, &self.lower())
    }
}

/// What `mixsweep-runner count` reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Counts {
    /// Unique parameters (shared weights counted once).
    pub params: usize,
    /// Parameters with every shared block counted at each of its positions.
    pub params_expanded: usize,
    pub bytes_f32: usize,
    pub weights: usize,
    pub blocks: usize,
    pub ir_ops: usize,
    /// Forward FLOPs per token: matmul-class work (2·m·n·k per matmul, attention over the full
    /// T×T unless windowed, scans at their multiply-adds; mixlab's convention).
    pub forward_flops_per_token: f64,
    /// 3 × forward (forward + backward).
    pub train_flops_per_token: f64,
    /// Parameters trained by each update rule (`muon`, `adamw`, ...).
    pub params_by_optimizer: std::collections::BTreeMap<&'static str, usize>,
    /// Parameters a token uses: all but the unselected experts of `moe` blocks (`params` otherwise).
    pub active_params: usize,
    /// Values cached generation keeps per sequence after `seq_len` tokens: attention keys and values
    /// (growing with the context), recurrent states and convolution tails (constant).
    pub inference_state_values: usize,
}

/// Values cached generation keeps per sequence after `context` tokens (each op's `decode_state`).
pub fn inference_state_values(p: &Program, context: usize) -> usize {
    let t = p.seq_len;
    p.nodes
        .iter()
        .map(|n| {
            let shapes: Vec<Vec<usize>> = n
                .inputs
                .iter()
                .map(|v| p.concrete_shape(*v, 1, t))
                .collect();
            n.op.rule().decode_state(&shapes, context)
        })
        .sum()
}

impl Counts {
    pub fn of(cfg: &ModelConfig, p: &Program) -> Counts {
        let t = p.seq_len;
        let shapes = |vs: &[ValueId]| -> Vec<Vec<usize>> {
            vs.iter().map(|v| p.concrete_shape(*v, 1, t)).collect()
        };
        let fwd: f64 = p
            .nodes
            .iter()
            .map(|n| n.op.rule().flops(&shapes(&n.inputs), &shapes(&n.outputs)))
            .sum::<f64>()
            / t as f64;
        let params = p.param_count();
        let block_params = |r: usize| -> usize {
            let prefix = format!("blocks.{r}.");
            p.weights
                .iter()
                .filter(|w| w.name.starts_with(&prefix))
                .map(|w| w.numel())
                .sum()
        };
        let shared: usize = cfg
            .layout
            .roots
            .iter()
            .enumerate()
            .filter(|(i, r)| *i != **r)
            .map(|(_, r)| block_params(*r))
            .sum();
        let idle: usize = cfg
            .blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| cfg.layout.roots[*i] == *i)
            .filter_map(|(i, blk)| {
                let (e, k) = blk.routed_experts()?;
                let prefix = format!("blocks.{i}.expert_");
                let experts: usize = p
                    .weights
                    .iter()
                    .filter(|w| w.name.starts_with(&prefix))
                    .map(|w| w.numel())
                    .sum();
                Some(experts / e * (e - k))
            })
            .sum();
        Counts {
            inference_state_values: inference_state_values(p, t),
            active_params: params - idle,
            params,
            params_expanded: params + shared,
            bytes_f32: params * 4,
            weights: p.weights.len(),
            blocks: cfg.blocks.len(),
            ir_ops: p.nodes.len(),
            forward_flops_per_token: fwd,
            train_flops_per_token: 3.0 * fwd,
            params_by_optimizer: p.weights.iter().fold(Default::default(), |mut m, w| {
                *m.entry(cfg.training.optimizer.rule_for(w).name())
                    .or_default() += w.numel();
                m
            }),
        }
    }
}
