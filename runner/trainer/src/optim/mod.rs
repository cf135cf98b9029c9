//! Optimizers. Each update rule is one file implementing [`Optimizer`]: the state it keeps per
//! weight (its *slots*) and its update. A [`Plan`] gives every weight of a program its rule and its
//! group's learning rate and decay (mixlab §6.1), clips gradients by their global norm, and skips an
//! update whose loss or gradient is not finite (mixlab's guard). The compiled train step, the resume
//! file and the run header all derive their layout from the plan's slots.

mod adamw;
mod lamb;
mod muon;

pub use adamw::AdamW;
pub use lamb::Lamb;
pub use muon::Muon;

use mixsweep_mlx::{Array, Dtype, Result};
use mixsweep_model::config::optimizer::Rule;
use mixsweep_model::config::{ModelConfig, WeightDecayPolicy};
use mixsweep_model::ir::{ParamGroup, Program, WeightSpec};
use std::sync::Arc;

/// The learning rate and decay of one weight (its group's values, before the schedule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    pub lr: f32,
    pub weight_decay: f32,
}

/// Per-step values every update may read, as arrays of the compiled step.
pub struct StepInputs<'a> {
    /// The 1-based optimizer step, float32 (bias corrections).
    pub t: &'a Array,
}

/// One update rule. Its `Debug` form names the rule and every constant its update bakes into the
/// compiled step (part of [`Plan::trace_key`]).
pub trait Optimizer: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;

    /// The state kept for a weight of this shape: `(slot name, shape)`; slot names prefix the
    /// weight's name in the resume file (`adam_m/blocks.0.wq`).
    fn slots(&self, shape: &[usize]) -> Vec<(&'static str, Vec<usize>)>;

    /// The weight and its state after one step, from its (clipped) gradient. `lr` is the effective
    /// learning rate (the schedule's multiplier times the group's rate), an input of the compiled
    /// step: rules never see the group's rate as a number, so one compiled step serves trials that
    /// differ only in learning rates ([`Plan::trace_key`]).
    fn update(
        &self,
        p: &Array,
        g: &Array,
        state: &[Array],
        lr: &Array,
        weight_decay: f32,
        s: &StepInputs<'_>,
    ) -> Result<(Array, Vec<Array>)>;

    /// [`Optimizer::update`] of several weights of one shape and hyperparameters at once (a rule
    /// may batch them: Muon orthogonalises them in one batched iteration).
    fn update_group(
        &self,
        g: Group<'_>,
        lr: &Array,
        weight_decay: f32,
        s: &StepInputs<'_>,
    ) -> Result<Vec<(Array, Vec<Array>)>> {
        (0..g.params.len())
            .map(|i| self.update(g.params[i], g.grads[i], g.states[i], lr, weight_decay, s))
            .collect()
    }
}

/// Weights of one shape and hyperparameters that one rule updates together.
pub struct Group<'a> {
    pub params: Vec<&'a Array>,
    pub grads: Vec<&'a Array>,
    pub states: Vec<&'a [Array]>,
}

/// `1 - beta^t` as an array (bias correction at a traced step count).
/// Adam's moments after gradient `g` (`state = [m, v]`) and the bias-corrected direction
/// `m̂ / (sqrt(v̂) + eps)` at step `t`: `(direction, m, v)` (AdamW and LAMB).
pub(crate) fn adam_direction(
    state: &[Array],
    g: &Array,
    (b1, b2, eps): (f32, f32, f32),
    t: &Array,
) -> Result<(Array, Array, Array)> {
    let m = state[0].mul_scalar(b1)?.add(&g.mul_scalar(1.0 - b1)?)?;
    let v = state[1]
        .mul_scalar(b2)?
        .add(&g.square()?.mul_scalar(1.0 - b2)?)?;
    let m_hat = m.div(&bias_correction(b1, t)?)?;
    let v_hat = v.div(&bias_correction(b2, t)?)?;
    let direction = m_hat.div(&v_hat.sqrt()?.add_scalar(eps)?)?;
    Ok((direction, m, v))
}

pub(crate) fn bias_correction(beta: f32, t: &Array) -> Result<Array> {
    // beta^t = exp(t · ln beta)
    t.mul_scalar(beta.ln())?
        .exp()?
        .mul_scalar(-1.0)?
        .add_scalar(1.0)
}

/// Every weight's rule and hyperparameters.
pub struct Plan {
    rules: Vec<Arc<dyn Optimizer>>,
    /// Per weight: index into `rules`, and its group's values.
    per_weight: Vec<(usize, Hyper)>,
    shapes: Vec<Vec<usize>>,
    /// Weight indices updated together: same rule, shape and hyperparameters (in weight order).
    groups: Vec<Vec<usize>>,
    grad_clip: f32,
    summary: String,
    /// `MIXSWEEP_FINITE_GUARD=0` (benchmarks only): no guard, a non-finite step updates anyway.
    guard: bool,
}

impl Plan {
    pub fn new(cfg: &ModelConfig, program: &Program) -> Plan {
        let t = &cfg.training;
        let o = &t.optimizer;
        let ns_dtype = match t.compute_dtype {
            mixsweep_model::ComputeDtype::Bfloat16 => Dtype::Bf16,
            mixsweep_model::ComputeDtype::Float32 => Dtype::F32,
        };
        let make = |rule: Rule| -> Arc<dyn Optimizer> {
            match rule {
                Rule::AdamW => Arc::new(AdamW {
                    beta1: t.beta1 as f32,
                    beta2: t.beta2 as f32,
                    epsilon: t.epsilon as f32,
                }),
                Rule::Muon(variant) => Arc::new(Muon {
                    variant,
                    momentum: o.muon.momentum as f32,
                    steps: o.muon.backend_steps,
                    nesterov: o.muon.nesterov,
                    beta2: t.beta2 as f32,
                    dtype: ns_dtype,
                }),
                Rule::Lamb => Arc::new(Lamb {
                    beta1: o.lamb.beta1 as f32,
                    beta2: o.lamb.beta2 as f32,
                    eps: o.lamb.eps as f32,
                    trust_ratio_cap: o.lamb.trust_ratio_cap as f32,
                }),
            }
        };
        let mut rules: Vec<(Rule, Arc<dyn Optimizer>)> = vec![];
        let per_weight: Vec<(usize, Hyper)> = program
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
                let rule = o.rule_for(w);
                let index = rules
                    .iter()
                    .position(|(r, _)| *r == rule)
                    .unwrap_or_else(|| {
                        rules.push((rule, make(rule)));
                        rules.len() - 1
                    });
                let hyper = Hyper {
                    lr: g.lr as f32,
                    weight_decay: if decays { g.weight_decay as f32 } else { 0.0 },
                };
                (index, hyper)
            })
            .collect();
        let shapes: Vec<Vec<usize>> = program.weights.iter().map(|w| w.shape.clone()).collect();
        Plan {
            rules: rules.into_iter().map(|(_, o)| o).collect(),
            groups: groups(&per_weight, &shapes),
            per_weight,
            shapes,
            grad_clip: t.grad_clip as f32,
            summary: o.describe(),
            guard: std::env::var("MIXSWEEP_FINITE_GUARD").map_or(true, |v| v != "0"),
        }
    }

    /// Each update group's learning rate at the schedule's multiplier `lr_scale`: `lr_scale · lr`
    /// in float32, in [`Plan::step`]'s group order (the compiled step's `lrs` inputs).
    pub fn group_lrs(&self, lr_scale: f32) -> Vec<f32> {
        self.groups
            .iter()
            .map(|g| lr_scale * self.per_weight[g[0]].1.lr)
            .collect()
    }

    /// How many learning rates [`Plan::step`] takes.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Everything of this plan that [`Plan::step`] bakes into a traced step: all but the learning
    /// rates' values (which groups share a rate still shapes the trace). Two plans with equal keys
    /// can share one compiled step, each passing its own [`Plan::group_lrs`].
    pub fn trace_key(&self) -> TraceKey {
        TraceKey {
            rules: self.rules.iter().map(|r| format!("{r:?}")).collect(),
            per_weight: self
                .per_weight
                .iter()
                .map(|(rule, h)| (*rule, h.weight_decay.to_bits()))
                .collect(),
            shapes: self.shapes.clone(),
            groups: self.groups.clone(),
            grad_clip: self.grad_clip.to_bits(),
            guard: self.guard,
        }
    }

    /// "muon (matrix), adamw (embed, head, scalar)".
    pub fn describe(&self) -> &str {
        &self.summary
    }

    /// The rule of weight `i`.
    pub fn rule_of(&self, i: usize) -> &'static str {
        self.rules[self.per_weight[i].0].name()
    }

    fn slots(&self, i: usize) -> Vec<(&'static str, Vec<usize>)> {
        self.rules[self.per_weight[i].0].slots(&self.shapes[i])
    }

    /// How many state arrays each weight has.
    pub fn slot_counts(&self) -> Vec<usize> {
        (0..self.shapes.len())
            .map(|i| self.slots(i).len())
            .collect()
    }

    /// The optimizer state's tensors in the resume file, weight by weight, `<slot>/<weight>`.
    pub fn state_specs(&self, weights: &[WeightSpec]) -> Vec<WeightSpec> {
        weights
            .iter()
            .enumerate()
            .flat_map(|(i, w)| {
                self.slots(i)
                    .into_iter()
                    .map(move |(slot, shape)| WeightSpec {
                        name: format!("{slot}/{}", w.name),
                        shape,
                        ..w.clone()
                    })
            })
            .collect()
    }

    /// Zeroed state for every weight.
    pub fn initial_state(&self) -> Result<Vec<Vec<Array>>> {
        (0..self.shapes.len())
            .map(|i| {
                self.slots(i)
                    .iter()
                    .map(|(_, s)| Array::zeros(s, Dtype::F32))
                    .collect()
            })
            .collect()
    }

    /// Global-norm clipping, every weight's update, and the finite guard, as MLX ops (traced
    /// into the compiled step). Returns the gradient norm before clipping, the weights and the
    /// state; when `loss` or the norm is not finite, weights and state are returned unchanged.
    pub fn step(
        &self,
        loss: &Array,
        params: &[Array],
        grads: &[Array],
        state: &[Vec<Array>],
        lrs: &[Array],
        s: &StepInputs<'_>,
    ) -> Result<(Array, Vec<Array>, Vec<Vec<Array>>)> {
        if lrs.len() != self.groups.len() {
            return Err(mixsweep_mlx::Error::new(format!(
                "optimizer step: {} learning rates for {} update groups",
                lrs.len(),
                self.groups.len()
            )));
        }
        let mut sq = Array::scalar(0.0, Dtype::F32)?;
        for g in grads {
            sq = sq.add(&g.astype(Dtype::F32)?.square()?.sum_all()?)?;
        }
        let norm = sq.sqrt()?;
        let clip = if self.grad_clip > 0.0 {
            let c = Array::scalar(self.grad_clip, Dtype::F32)?;
            Some(
                c.div(&norm.add_scalar(1e-6)?)?
                    .minimum(&Array::scalar(1.0, Dtype::F32)?)?,
            )
        } else {
            None
        };
        let finite = is_finite(&norm)?.logical_and(&is_finite(loss)?)?;
        let grads: Vec<Array> = match &clip {
            Some(c) => grads.iter().map(|g| g.mul(c)).collect::<Result<_>>()?,
            None => grads.to_vec(),
        };
        let mut new_p: Vec<Option<Array>> = vec![None; params.len()];
        let mut new_s: Vec<Vec<Array>> = vec![vec![]; params.len()];
        for (members, lr) in self.groups.iter().zip(lrs) {
            let (rule, h) = self.per_weight[members[0]];
            let group = Group {
                params: members.iter().map(|&i| &params[i]).collect(),
                grads: members.iter().map(|&i| &grads[i]).collect(),
                states: members.iter().map(|&i| state[i].as_slice()).collect(),
            };
            let updated = self.rules[rule].update_group(group, lr, h.weight_decay, s)?;
            for (&i, (p2, s2)) in members.iter().zip(updated) {
                if !self.guard {
                    (new_p[i], new_s[i]) = (Some(p2), s2);
                    continue;
                }
                // the finite guard: a step with a non-finite loss or gradient changes nothing
                new_p[i] = Some(mixsweep_mlx::where_(&finite, &p2, &params[i])?);
                new_s[i] = s2
                    .iter()
                    .zip(&state[i])
                    .map(|(a, b)| mixsweep_mlx::where_(&finite, a, b))
                    .collect::<Result<_>>()?;
            }
        }
        let new_p = new_p
            .into_iter()
            .map(|p| p.expect("every weight is in a group"))
            .collect();
        Ok((norm, new_p, new_s))
    }
}

/// What a [`Plan`] bakes into a traced train step ([`Plan::trace_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceKey {
    /// Each rule's `Debug` form: its name and constants.
    rules: Vec<String>,
    /// Per weight: its rule and its decay (bits).
    per_weight: Vec<(usize, u32)>,
    shapes: Vec<Vec<usize>>,
    groups: Vec<Vec<usize>>,
    grad_clip: u32,
    guard: bool,
}

/// Weight indices updated together: same rule, shape and hyperparameters (in weight order).
fn groups(per_weight: &[(usize, Hyper)], shapes: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let key = |j: usize| {
        (
            per_weight[j].0,
            &shapes[j],
            per_weight[j].1.lr.to_bits(),
            per_weight[j].1.weight_decay.to_bits(),
        )
    };
    let mut groups: Vec<Vec<usize>> = vec![];
    for i in 0..shapes.len() {
        match groups.iter_mut().find(|g| key(g[0]) == key(i)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

fn is_finite(x: &Array) -> Result<Array> {
    x.is_nan()?
        .logical_not()?
        .logical_and(&x.is_inf()?.logical_not()?)
}

#[cfg(test)]
mod tests;
