//! The compiled train step and eval step.
//!
//! The whole train step — forward, backward, global-norm clipping and the AdamW update with
//! mixlab's parameter groups — is one function compiled with MLX `compile`, taking
//! `(params, m, v, tokens, targets, lr_scale, bias_correction1, bias_correction2, dropout_key)` and
//! returning `(loss, grad_norm, params', m', v')`. After the first call (tracing) no Rust code runs
//! per step beyond building the input list.

use crate::executor::Executor;
use mixsweep_mlx::{Array, Compiled, Dtype, Result, value_and_grad};
use mixsweep_model::ComputeDtype;
use mixsweep_model::config::{ModelConfig, WeightDecayPolicy};
use mixsweep_model::ir::{ParamGroup, Program};
use std::sync::Arc;

/// Learning rate and weight decay of one weight (its group's values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightHyper {
    pub lr: f32,
    pub weight_decay: f32,
}

/// Everything the optimizer needs besides per-step scalars.
#[derive(Debug, Clone)]
pub struct OptimizerSpec {
    pub per_weight: Vec<WeightHyper>,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub grad_clip: f32,
}

impl OptimizerSpec {
    pub fn new(cfg: &ModelConfig, program: &Program) -> OptimizerSpec {
        let t = &cfg.training;
        let per_weight = program
            .weights
            .iter()
            .map(|w| {
                let g = match w.group {
                    ParamGroup::Embed => t.embed,
                    ParamGroup::Head => t.head,
                    ParamGroup::Matrix => t.matrix,
                    ParamGroup::Scalar => t.scalar,
                };
                let decays = match t.weight_decay_policy {
                    WeightDecayPolicy::MatrixOnly => w.decay,
                    WeightDecayPolicy::All => true,
                };
                WeightHyper {
                    lr: g.lr as f32,
                    weight_decay: if decays { g.weight_decay as f32 } else { 0.0 },
                }
            })
            .collect();
        OptimizerSpec {
            per_weight,
            beta1: t.beta1 as f32,
            beta2: t.beta2 as f32,
            epsilon: t.epsilon as f32,
            grad_clip: t.grad_clip as f32,
        }
    }
}

/// Parameters and AdamW moments.
pub struct TrainState {
    pub params: Vec<Array>,
    pub m: Vec<Array>,
    pub v: Vec<Array>,
}

impl TrainState {
    pub fn new(params: Vec<Array>) -> Result<TrainState> {
        let zeros = |p: &Array| Array::zeros(&p.shape(), Dtype::F32);
        let m = params.iter().map(zeros).collect::<Result<Vec<_>>>()?;
        let v = params.iter().map(zeros).collect::<Result<Vec<_>>>()?;
        Ok(TrainState { params, m, v })
    }

    pub fn arrays(&self) -> Vec<&Array> {
        self.params.iter().chain(&self.m).chain(&self.v).collect()
    }
}

/// Per-step scalars computed on the host.
pub struct StepScalars {
    pub lr_scale: f32,
    /// 1-based optimizer step count (bias correction).
    pub t: u64,
    pub dropout_seed: u64,
}

/// Parameters and both AdamW moments, one array per weight each.
pub struct AdamArrays {
    pub params: Vec<Array>,
    pub m: Vec<Array>,
    pub v: Vec<Array>,
}

/// Per-step scalars of the update, as (traced) arrays: `[lr_scale, 1 - β1^t, 1 - β2^t]`.
pub struct UpdateScalars<'a> {
    pub lr_scale: &'a Array,
    pub bias1: &'a Array,
    pub bias2: &'a Array,
}

/// Global gradient norm, clipping and the AdamW update, as MLX ops (traced into the compiled step).
/// Returns the gradient norm (before clipping) and the updated arrays.
pub fn adamw_update(
    spec: &OptimizerSpec,
    state: (&[Array], &[Array], &[Array]),
    grads: &[Array],
    scalars: UpdateScalars<'_>,
) -> Result<(Array, AdamArrays)> {
    let (params, m, v) = state;
    let UpdateScalars {
        lr_scale,
        bias1,
        bias2,
    } = scalars;
    let mut sq = Array::scalar(0.0, Dtype::F32)?;
    for g in grads {
        sq = sq.add(&g.square()?.sum_all()?)?;
    }
    let norm = sq.sqrt()?;
    let clip = if spec.grad_clip > 0.0 {
        let c = Array::scalar(spec.grad_clip, Dtype::F32)?;
        Some(
            c.div(&norm.add_scalar(1e-6)?)?
                .minimum(&Array::scalar(1.0, Dtype::F32)?)?,
        )
    } else {
        None
    };
    let (b1, b2) = (spec.beta1, spec.beta2);
    let mut new_p = Vec::with_capacity(params.len());
    let mut new_m = Vec::with_capacity(params.len());
    let mut new_v = Vec::with_capacity(params.len());
    for i in 0..params.len() {
        let g = match &clip {
            Some(c) => grads[i].mul(c)?,
            None => grads[i].clone(),
        };
        let mi = m[i].mul_scalar(b1)?.add(&g.mul_scalar(1.0 - b1)?)?;
        let vi = v[i]
            .mul_scalar(b2)?
            .add(&g.square()?.mul_scalar(1.0 - b2)?)?;
        let h = spec.per_weight[i];
        let lr = lr_scale.mul_scalar(h.lr)?;
        let mut p = params[i].clone();
        if h.weight_decay > 0.0 {
            // decoupled decay first (mixlab's order)
            p = p.sub(&p.mul(&lr.mul_scalar(h.weight_decay)?)?)?;
        }
        let update = mi
            .div(bias1)?
            .div(&vi.div(bias2)?.sqrt()?.add_scalar(spec.epsilon)?)?;
        p = p.sub(&update.mul(&lr)?)?;
        new_p.push(p);
        new_m.push(mi);
        new_v.push(vi);
    }
    Ok((
        norm,
        AdamArrays {
            params: new_p,
            m: new_m,
            v: new_v,
        },
    ))
}

/// The compiled train and eval functions of one model.
pub struct Steps {
    /// How many times the train step was traced (1 unless input shapes change).
    pub traces: Arc<std::sync::atomic::AtomicUsize>,
    train: Compiled,
    eval: Compiled,
    n: usize,
    spec: OptimizerSpec,
}

impl Steps {
    pub fn new(program: Arc<Program>, dtype: ComputeDtype, spec: OptimizerSpec) -> Result<Steps> {
        Self::with_char_map(program, dtype, spec, None)
    }

    /// [`Steps::new`] for a model that reads a character-id table (`char_features.bin`).
    pub fn with_char_map(
        program: Arc<Program>,
        dtype: ComputeDtype,
        spec: OptimizerSpec,
        char_map: Option<Array>,
    ) -> Result<Steps> {
        let n = program.weights.len();
        let eval_chars = char_map.clone();
        let train_program = program.clone();
        let train_spec = spec.clone();
        let traces = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let trace_counter = traces.clone();
        let train = Compiled::new(
            move |ins: &[Array]| {
                trace_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let exec = Executor::new(&train_program, dtype).with_char_map(char_map.clone());
                let (params, rest) = ins.split_at(n);
                let (m, rest) = rest.split_at(n);
                let (v, rest) = rest.split_at(n);
                let [tokens, targets, lr_scale, bias1, bias2, key] = rest else {
                    return Err(mixsweep_mlx::Error::new(
                        "train step: wrong number of inputs",
                    ));
                };
                let (values, grads) = value_and_grad(
                    |ps: &[Array]| {
                        let out = exec.forward(ps, tokens, Some(targets), Some(key))?;
                        Ok(vec![out.loss.expect("targets given")])
                    },
                    params,
                    &(0..n).collect::<Vec<_>>(),
                )?;
                let (norm, new) = adamw_update(
                    &train_spec,
                    (params, m, v),
                    &grads,
                    UpdateScalars {
                        lr_scale,
                        bias1,
                        bias2,
                    },
                )?;
                let mut out = vec![values[0].clone(), norm];
                out.extend(new.params);
                out.extend(new.m);
                out.extend(new.v);
                Ok(out)
            },
            false,
        )?;
        let eval_program = program;
        let eval = Compiled::new(
            move |ins: &[Array]| {
                let exec = Executor::new(&eval_program, dtype).with_char_map(eval_chars.clone());
                let (params, rest) = ins.split_at(n);
                let out = exec.forward(params, &rest[0], Some(&rest[1]), None)?;
                Ok(vec![out.loss.expect("targets given")])
            },
            false,
        )?;
        Ok(Steps {
            traces,
            train,
            eval,
            n,
            spec,
        })
    }

    /// One optimizer step; replaces `state` and returns `(loss, grad_norm)` (lazy arrays).
    pub fn train_step(
        &mut self,
        state: &mut TrainState,
        tokens: &Array,
        targets: &Array,
        scalars: &StepScalars,
    ) -> Result<(Array, Array)> {
        let t = scalars.t as i32;
        let bias1 = 1.0 - self.spec.beta1.powi(t);
        let bias2 = 1.0 - self.spec.beta2.powi(t);
        let mut ins: Vec<Array> = Vec::with_capacity(3 * self.n + 6);
        ins.extend(state.params.iter().cloned());
        ins.extend(state.m.iter().cloned());
        ins.extend(state.v.iter().cloned());
        ins.push(tokens.clone());
        ins.push(targets.clone());
        ins.push(Array::scalar(scalars.lr_scale, Dtype::F32)?);
        ins.push(Array::scalar(bias1, Dtype::F32)?);
        ins.push(Array::scalar(bias2, Dtype::F32)?);
        ins.push(mixsweep_mlx::random::key(scalars.dropout_seed)?);
        let mut out = self.train.call(&ins)?.into_iter();
        let loss = out.next().expect("loss");
        let norm = out.next().expect("grad norm");
        let rest: Vec<Array> = out.collect();
        let mut it = rest.into_iter();
        state.params = it.by_ref().take(self.n).collect();
        state.m = it.by_ref().take(self.n).collect();
        state.v = it.take(self.n).collect();
        Ok((loss, norm))
    }

    /// Mean loss of one batch with dropout off.
    pub fn eval_loss(
        &mut self,
        params: &[Array],
        tokens: &Array,
        targets: &Array,
    ) -> Result<Array> {
        let mut ins: Vec<Array> = params.to_vec();
        ins.push(tokens.clone());
        ins.push(targets.clone());
        Ok(self.eval.call(&ins)?.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(src: &str) -> (ModelConfig, Arc<Program>, Vec<Array>) {
        let cfg = ModelConfig::from_jsonc(src).unwrap();
        let p = Arc::new(cfg.lower());
        let host = crate::init::initial_weights(&p.weights, 1);
        let w = crate::init::upload(&p.weights, &host).unwrap();
        (cfg, p, w)
    }

    #[test]
    fn compiled_step_uses_each_steps_dropout_key() {
        let (cfg, p, w) = setup(
            r#"{"model_dim":16,"vocab_size":32,"seq_len":8,"dropout":0.5,
                "blocks":[{"type":"plain","heads":2}],"training":{"batch_tokens":16}}"#,
        );
        let mut steps = Steps::new(
            p.clone(),
            ComputeDtype::Float32,
            OptimizerSpec::new(&cfg, &p),
        )
        .unwrap();
        let toks = Array::from_i32(&(0..16).map(|i| i % 32).collect::<Vec<_>>(), &[2, 8]).unwrap();
        let mut loss_with = |seed: u64| {
            let mut st = TrainState::new(w.clone()).unwrap();
            let s = StepScalars {
                lr_scale: 0.0,
                t: 1,
                dropout_seed: seed,
            };
            steps
                .train_step(&mut st, &toks, &toks, &s)
                .unwrap()
                .0
                .item_f32()
                .unwrap()
        };
        let (a, b, c) = (loss_with(1), loss_with(2), loss_with(1));
        assert_ne!(a, b, "different dropout keys must give different losses");
        assert_eq!(a, c);
        assert_eq!(steps.traces.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
