//! The compiled train step and eval step.
//!
//! The whole train step — forward, backward and the optimizer [`Plan`]'s update (clipping, each
//! group's rule, the finite guard) — is one function compiled with MLX `compile`, taking
//! `(params, state slots, tokens, targets, dropout_key, [t, qat, each group's learning rate])` and
//! returning `(loss, grad_norm, params', state', auxiliary losses)`. After the first call (tracing)
//! no Rust code runs per step beyond building the input list.
//!
//! The learning rates are inputs (computed on the host from the schedule), so a worker can hand
//! one model's compiled [`Steps`] to its next trial when that trial differs only in learning
//! rates, seed or data ([`crate::step_cache`]).

use crate::executor::Executor;
use crate::optim::{Plan, StepInputs};
use mixsweep_mlx::{Array, Compiled, Result, value_and_grad};
use mixsweep_model::ComputeDtype;
use mixsweep_model::ir::Program;
use std::sync::Arc;

/// Parameters and their optimizer state (per weight, the plan's slots in order).
#[derive(Clone)]
pub struct TrainState {
    pub params: Vec<Array>,
    pub state: Vec<Vec<Array>>,
}

impl TrainState {
    /// Fresh state (zeroed slots) for `params`.
    pub fn new(params: Vec<Array>, plan: &Plan) -> Result<TrainState> {
        Ok(TrainState {
            params,
            state: plan.initial_state()?,
        })
    }

    pub fn arrays(&self) -> Vec<&Array> {
        self.params
            .iter()
            .chain(self.state.iter().flatten())
            .collect()
    }

    /// The optimizer state, flattened weight by weight (the resume file's order).
    pub fn state_arrays(&self) -> impl Iterator<Item = &Array> {
        self.state.iter().flatten()
    }

    /// Replaces the state from flattened arrays (as [`TrainState::state_arrays`] lists them).
    pub fn set_state(&mut self, flat: Vec<Array>, counts: &[usize]) {
        let mut it = flat.into_iter();
        self.state = counts
            .iter()
            .map(|&k| it.by_ref().take(k).collect())
            .collect();
    }
}

/// Per-step scalars computed on the host.
pub struct StepScalars {
    pub lr_scale: f32,
    /// 1-based optimizer step count (bias correction).
    pub t: u64,
    pub dropout_seed: u64,
    /// Fake-quantize the weights in this step's forward pass (quantization-aware training).
    pub qat: bool,
}

/// A step function over a flat list of arrays.
type EvalFn = dyn FnMut(&[Array]) -> Result<Vec<Array>>;

/// What a compiled train step bakes in: the program, the compute dtype and the plan without its
/// learning rates.
#[derive(Debug, Clone, PartialEq)]
pub struct StepKey {
    program: Arc<Program>,
    dtype: ComputeDtype,
    plan: crate::optim::TraceKey,
}

impl StepKey {
    /// The key of the steps these arguments build; `None` when they capture per-run arrays
    /// (character features, QAT) and must serve no other run.
    pub fn of(
        program: &Arc<Program>,
        dtype: ComputeDtype,
        plan: &Plan,
        options: &StepOptions,
    ) -> Option<StepKey> {
        (options.char_map.is_none() && options.qat.is_none()).then(|| StepKey {
            program: program.clone(),
            dtype,
            plan: plan.trace_key(),
        })
    }
}

/// The compiled train and eval functions of one model.
pub struct Steps {
    /// How many times the train step was traced (1 unless input shapes change).
    pub traces: Arc<std::sync::atomic::AtomicUsize>,
    train: Compiled,
    eval: Compiled,
    /// The eval function uncompiled: no compile cost, for a validation that must not delay start-up.
    eval_eager: Box<EvalFn>,
    eval_traced: bool,
    n: usize,
    slot_counts: Vec<usize>,
    /// The plan whose learning rates the next steps use (the trial's own, also for reused steps).
    plan: Arc<Plan>,
    /// What the traced step bakes in, when it may serve another run.
    key: Option<StepKey>,
}

/// What a model's steps need besides its program and optimizer.
#[derive(Default)]
pub struct StepOptions {
    /// The character-id table of a model with character features (`char_features.bin`).
    pub char_map: Option<Array>,
    /// Quantization-aware training (the train step's forward pass sees fake-quantized weights).
    pub qat: Option<crate::qat::Qat>,
}

impl Steps {
    pub fn new(program: Arc<Program>, dtype: ComputeDtype, plan: Arc<Plan>) -> Result<Steps> {
        Self::with_options(program, dtype, plan, StepOptions::default())
    }

    pub fn with_options(
        program: Arc<Program>,
        dtype: ComputeDtype,
        plan: Arc<Plan>,
        options: StepOptions,
    ) -> Result<Steps> {
        let key = StepKey::of(&program, dtype, &plan, &options);
        let StepOptions { char_map, qat } = options;
        let n = program.weights.len();
        let n_groups = plan.group_count();
        let trace_plan = plan.clone();
        let slot_counts = plan.slot_counts();
        let n_state: usize = slot_counts.iter().sum();
        let counts = slot_counts.clone();
        let eval_chars = char_map.clone();
        let train_program = program.clone();
        let traces = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let trace_counter = traces.clone();
        let train = Compiled::new(
            move |ins: &[Array]| {
                trace_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let exec = Executor::new(&train_program, dtype).with_char_map(char_map.clone());
                let (params, rest) = ins.split_at(n);
                let (flat, rest) = rest.split_at(n_state);
                let mut it = flat.iter().cloned();
                let state: Vec<Vec<Array>> = counts
                    .iter()
                    .map(|&k| it.by_ref().take(k).collect())
                    .collect();
                let [tokens, targets, key, scalars] = rest else {
                    return Err(mixsweep_mlx::Error::new(
                        "train step: wrong number of inputs",
                    ));
                };
                if scalars.shape() != [2 + n_groups] {
                    return Err(mixsweep_mlx::Error::new(
                        "train step: wrong number of scalars",
                    ));
                }
                // one upload a step for every host scalar: [t, qat, each group's learning rate]
                let scalar = |i: usize| scalars.slice_axis(0, i, i + 1)?.reshape(&[]);
                let (t, qat_on) = (&scalar(0)?, &scalar(1)?);
                let lrs = (0..n_groups)
                    .map(|g| scalar(2 + g))
                    .collect::<Result<Vec<_>>>()?;
                let (values, grads) = value_and_grad(
                    |ps: &[Array]| {
                        let ps = match &qat {
                            Some(q) => q.effective(ps, qat_on)?,
                            None => ps.to_vec(),
                        };
                        let out = exec.forward(&ps, tokens, Some(targets), Some(key))?;
                        // the first output is differentiated; the auxiliary losses ride along
                        let mut outs = vec![out.loss.expect("targets given")];
                        outs.extend(out.aux);
                        Ok(outs)
                    },
                    params,
                    &(0..n).collect::<Vec<_>>(),
                )?;
                let (norm, new_params, new_state) =
                    trace_plan.step(&values[0], params, &grads, &state, &lrs, &StepInputs { t })?;
                let mut out = vec![values[0].clone(), norm];
                out.extend(new_params);
                out.extend(new_state.into_iter().flatten());
                out.extend(values[1..].iter().cloned());
                Ok(out)
            },
            false,
        )?;
        let eval = Compiled::new(
            eval_fn(program.clone(), dtype, eval_chars.clone(), n),
            false,
        )?;
        Ok(Steps {
            traces,
            train,
            eval,
            eval_eager: Box::new(eval_fn(program, dtype, eval_chars, n)),
            eval_traced: false,
            n,
            slot_counts,
            plan,
            key,
        })
    }

    /// What the traced step bakes in; `None` when it must not serve another run.
    pub fn key(&self) -> Option<&StepKey> {
        self.key.as_ref()
    }

    /// These steps for a run whose [`StepKey`] equals theirs (its plan differs at most in learning
    /// rates; [`crate::step_cache::StepCache::take`] matched it): the next steps use `plan`'s rates.
    pub(crate) fn with_plan(mut self, plan: Arc<Plan>) -> Steps {
        self.plan = plan;
        self
    }

    /// One optimizer step; replaces `state` and returns `(loss, grad_norm, auxiliary losses)` (lazy
    /// arrays; the loss includes the auxiliary losses).
    pub fn train_step(
        &mut self,
        state: &mut TrainState,
        tokens: &Array,
        targets: &Array,
        scalars: &StepScalars,
    ) -> Result<(Array, Array, Vec<Array>)> {
        let mut ins: Vec<Array> = state.arrays().into_iter().cloned().collect();
        ins.push(tokens.clone());
        ins.push(targets.clone());
        ins.push(mixsweep_mlx::random::key(scalars.dropout_seed)?);
        let mut host = vec![scalars.t as f32, if scalars.qat { 1.0 } else { 0.0 }];
        host.extend(self.plan.group_lrs(scalars.lr_scale));
        ins.push(Array::from_f32(&host, &[host.len()])?);
        let mut out = self.train.call(&ins)?.into_iter();
        let loss = out.next().expect("loss");
        let norm = out.next().expect("grad norm");
        state.params = out.by_ref().take(self.n).collect();
        let n_state: usize = self.slot_counts.iter().sum();
        state.set_state(out.by_ref().take(n_state).collect(), &self.slot_counts);
        Ok((loss, norm, out.collect()))
    }

    /// Whether the compiled eval step has been traced (so using it costs no compile).
    pub fn eval_compiled(&self) -> bool {
        self.eval_traced
    }

    /// Mean loss of one batch with dropout off; `compiled: false` runs it op by op (no compile
    /// on first use, slower per batch).
    pub fn eval_loss(
        &mut self,
        params: &[Array],
        tokens: &Array,
        targets: &Array,
        compiled: bool,
    ) -> Result<Array> {
        let mut ins: Vec<Array> = params.to_vec();
        ins.push(tokens.clone());
        ins.push(targets.clone());
        let mut out = if compiled {
            self.eval_traced = true;
            self.eval.call(&ins)?
        } else {
            (self.eval_eager)(&ins)?
        };
        Ok(out.remove(0))
    }
}

/// The eval step: `(params, tokens, targets) -> [mean loss]`, dropout off.
fn eval_fn(
    program: Arc<Program>,
    dtype: ComputeDtype,
    chars: Option<Array>,
    n: usize,
) -> impl FnMut(&[Array]) -> Result<Vec<Array>> + 'static {
    move |ins: &[Array]| {
        let exec = Executor::new(&program, dtype).with_char_map(chars.clone());
        let (params, rest) = ins.split_at(n);
        let out = exec.forward(params, &rest[0], Some(&rest[1]), None)?;
        Ok(vec![out.loss.expect("targets given")])
    }
}

#[cfg(test)]
impl Steps {
    /// One step with `tokens` as inputs and targets; its loss, read back (tests).
    pub(crate) fn loss_of_step(
        &mut self,
        state: &mut TrainState,
        tokens: &Array,
        lr_scale: f32,
        t: u64,
        dropout_seed: u64,
    ) -> f32 {
        let s = StepScalars {
            lr_scale,
            t,
            dropout_seed,
            qat: false,
        };
        let (loss, _, _) = self.train_step(state, tokens, tokens, &s).unwrap();
        loss.item_f32().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixsweep_model::ModelConfig;

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
        let plan = Arc::new(Plan::new(&cfg, &p));
        let mut steps = Steps::new(p.clone(), ComputeDtype::Float32, plan.clone()).unwrap();
        let toks = Array::from_i32(&(0..16).map(|i| i % 32).collect::<Vec<_>>(), &[2, 8]).unwrap();
        let mut loss_with = |seed: u64| {
            let mut st = TrainState::new(w.clone(), &plan).unwrap();
            steps.loss_of_step(&mut st, &toks, 0.0, 1, seed)
        };
        let (a, b, c) = (loss_with(1), loss_with(2), loss_with(1));
        assert_ne!(a, b, "different dropout keys must give different losses");
        assert_eq!(a, c);
        assert_eq!(steps.traces.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
