//! Runs an IR [`Program`] on MLX: each node's op through its lowering ([`crate::lower`]). Called
//! inside `value_and_grad` and `compile`, so this interpreter runs only while MLX traces; the compiled
//! graph replays without it.
//!
//! Precision: with `bfloat16` compute, weights are cast to bf16 on entry (master copies stay float32
//! outside, and gathers read the float32 masters), activations and matmuls run in bf16.

pub use crate::lower::DecodeCache;
use crate::lower::{self, Ctx};
use mixsweep_mlx::{Array, Dtype, Result, random};
use mixsweep_model::ComputeDtype;
use mixsweep_model::ir::{Program, Source};
use std::collections::HashMap;

pub struct Executor<'p> {
    pub program: &'p Program,
    pub dtype: ComputeDtype,
    /// The `[V, K]` character-id table, for models with character features.
    pub char_map: Option<Array>,
}

/// Results of a forward pass.
pub struct ForwardOutput {
    /// Mean cross-entropy (float32 scalar) plus any auxiliary losses; `None` when no targets were
    /// given.
    pub loss: Option<Array>,
    /// `[B, T, V]` logits in the compute dtype.
    pub logits: Array,
    /// `[B, T, D]`: the hidden state the output head reads (after the final norm).
    pub hidden: Array,
    /// The program's auxiliary losses (float32 scalars, in its `aux_losses` order) when training.
    pub aux: Vec<Array>,
}

impl<'p> Executor<'p> {
    pub fn new(program: &'p Program, dtype: ComputeDtype) -> Self {
        Executor {
            program,
            dtype,
            char_map: None,
        }
    }

    /// With the character-id table the model reads (`char_features.bin`).
    pub fn with_char_map(mut self, char_map: Option<Array>) -> Self {
        self.char_map = char_map;
        self
    }

    fn compute_dtype(&self) -> Dtype {
        match self.dtype {
            ComputeDtype::Float32 => Dtype::F32,
            ComputeDtype::Bfloat16 => Dtype::Bf16,
        }
    }

    /// Forward pass. `dropout_key` (a PRNG key) turns on training mode; `None` is evaluation.
    pub fn forward(
        &self,
        weights: &[Array],
        tokens: &Array,
        targets: Option<&Array>,
        dropout_key: Option<&Array>,
    ) -> Result<ForwardOutput> {
        self.run(weights, tokens, targets, dropout_key, None)
    }

    /// Incremental forward for generation: `tokens [B, L]` continue the sequence held by `cache`
    /// (each op's decode state: attention keys/values, convolution windows, scan states, previous
    /// tokens), which is updated. Returns the logits `[B, L, V]`. Evaluation mode (no dropout).
    /// Only for programs where [`lower::supports_decode_cache`] holds.
    pub fn forward_cached(
        &self,
        weights: &[Array],
        tokens: &Array,
        cache: &mut DecodeCache,
    ) -> Result<Array> {
        let len = tokens.dim(1);
        let out = self.run(weights, tokens, None, None, Some(cache))?;
        cache.position += len;
        Ok(out.logits)
    }

    fn run(
        &self,
        weights: &[Array],
        tokens: &Array,
        targets: Option<&Array>,
        dropout_key: Option<&Array>,
        mut cache: Option<&mut DecodeCache>,
    ) -> Result<ForwardOutput> {
        let p = self.program;
        let dt = self.compute_dtype();
        let mut env: Vec<Option<Array>> = vec![None; p.values.len()];
        let mut masters: HashMap<usize, Array> = HashMap::new();
        for (i, info) in p.values.iter().enumerate() {
            env[i] = match info.source {
                Source::Weight(w) => {
                    let a = &weights[w];
                    masters.insert(i, a.clone());
                    Some(if dt == Dtype::F32 { a.clone() } else { a.astype(dt)? })
                }
                Source::Tokens => Some(tokens.clone()),
                Source::Targets => targets.cloned(),
                Source::CharMap => Some(self.char_map.clone().ok_or_else(|| {
                    mixsweep_mlx::Error::new("this model reads character features (char_features.bin), which were not loaded")
                })?),
                Source::Node { .. } => None,
            };
        }
        let dropout_keys = match (dropout_key, p.dropout_ops) {
            (Some(k), n) if n > 0 => Some(random::split(k, n)?),
            _ => None,
        };
        let (batch, seq) = (tokens.dim(0), tokens.dim(1));
        for (index, node) in p.nodes.iter().enumerate() {
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for v in &node.inputs {
                match &env[v.0] {
                    Some(a) => inputs.push(a.clone()),
                    // the loss without targets (generation): skip it
                    None if p.values[v.0].source == Source::Targets => break,
                    None => {
                        return Err(mixsweep_mlx::Error::new(format!(
                            "IR value {} used before it was computed",
                            p.values[v.0].name
                        )));
                    }
                }
            }
            if inputs.len() < node.inputs.len() {
                continue;
            }
            let ids: Vec<usize> = node.inputs.iter().map(|v| v.0).collect();
            let mut ctx = Ctx {
                dtype: dt,
                dropout_keys: dropout_keys.as_ref(),
                cache: cache.as_deref_mut(),
                node: index,
                masters: &masters,
                input_ids: &ids,
                batch,
                seq,
            };
            let outputs = lower::apply(&node.op, &inputs, &mut ctx).map_err(|e| {
                mixsweep_mlx::Error::new(format!(
                    "{} ({}): {e}",
                    p.values[node.outputs[0].0].name,
                    node.op.rule().name()
                ))
            })?;
            for (v, a) in node.outputs.iter().zip(outputs) {
                env[v.0] = Some(a);
            }
        }
        let logits = env[p.logits.0]
            .clone()
            .expect("the program computes its logits");
        let mut loss = env[p.loss.0].clone();
        let mut aux = vec![];
        if let (Some(l), true) = (&loss, dropout_key.is_some()) {
            let mut total = l.clone();
            for (_, a) in &p.aux_losses {
                if let Some(a) = &env[a.0] {
                    total = total.add(a)?;
                    aux.push(a.clone());
                }
            }
            loss = Some(total);
        }
        let hidden = env[p.hidden.0]
            .clone()
            .expect("the program computes its hidden state");
        Ok(ForwardOutput {
            loss,
            logits,
            hidden,
            aux,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_is_active_in_training_and_off_in_eval() {
        let cfg = mixsweep_model::ModelConfig::from_jsonc(
            r#"{"model_dim":16,"vocab_size":32,"seq_len":8,"dropout":0.5,
                "blocks":[{"type":"plain","heads":2}],"training":{"batch_tokens":16}}"#,
        )
        .unwrap();
        let p = cfg.lower();
        assert!(p.dropout_ops >= 3);
        let host = crate::init::initial_weights(&p.weights, 1);
        let w: Vec<Array> = crate::init::upload(&p.weights, &host).unwrap();
        let toks = Array::from_i32(&(0..16).map(|i| i % 32).collect::<Vec<_>>(), &[2, 8]).unwrap();
        let exec = Executor::new(&p, ComputeDtype::Float32);
        let loss = |key: Option<&Array>| {
            exec.forward(&w, &toks, Some(&toks), key)
                .unwrap()
                .loss
                .unwrap()
                .item_f32()
                .unwrap()
        };
        let (k1, k2) = (random::key(1).unwrap(), random::key(2).unwrap());
        assert_eq!(loss(None), loss(None));
        assert_ne!(loss(Some(&k1)), loss(None));
        assert_ne!(loss(Some(&k1)), loss(Some(&k2)));
        assert_eq!(loss(Some(&k1)), loss(Some(&k1)));
    }
}
