//! Compiled steps a warm worker keeps between trials.
//!
//! Tracing and compiling a model's train and eval steps is the largest part of a later worker
//! trial's start-up on a GPU (MLX keeps the kernels themselves for the life of the process, but a
//! new `compile` re-traces the step and rebuilds its fused graph). A trial that differs from an
//! earlier one of the same worker only in learning rates, seed, data or step count has an equal
//! [`StepKey`] (program, compute dtype, optimizer plan without its rates) and takes that trial's
//! [`Steps`], passing its own learning rates. Steps that capture per-run arrays (character
//! features, QAT) are never kept.

use crate::optim::Plan;
use crate::step::{StepKey, Steps};
use std::cell::RefCell;
use std::sync::Arc;

/// How many models' steps a worker keeps (the most recently used).
const CAPACITY: usize = 4;

/// Compiled steps kept by a worker, most recently kept last.
#[derive(Default)]
pub struct StepCache {
    kept: RefCell<Vec<Steps>>,
}

impl StepCache {
    pub fn new() -> StepCache {
        StepCache::default()
    }

    /// Kept steps with this key ([`StepKey::of`] the run's program, dtype, plan and options), now
    /// updating with `plan`'s learning rates; `None` when none match.
    pub fn take(&self, key: &StepKey, plan: &Arc<Plan>) -> Option<Steps> {
        let mut kept = self.kept.borrow_mut();
        let i = kept.iter().position(|s| s.key() == Some(key))?;
        Some(kept.remove(i).with_plan(plan.clone()))
    }

    /// Keeps `steps` for a later trial (dropping the least recently kept beyond the capacity);
    /// steps that must not serve another run are dropped.
    pub fn keep(&self, steps: Steps) {
        let Some(key) = steps.key().cloned() else {
            return;
        };
        let mut kept = self.kept.borrow_mut();
        kept.retain(|s| s.key() != Some(&key));
        kept.push(steps);
        if kept.len() > CAPACITY {
            kept.remove(0);
        }
    }

    /// How many models' steps are kept.
    pub fn len(&self) -> usize {
        self.kept.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::{StepOptions, TrainState};
    use mixsweep_mlx::Array;
    use mixsweep_model::ir::Program;
    use mixsweep_model::{ComputeDtype, ModelConfig};
    use std::sync::atomic::Ordering;

    /// What a run of this model takes from the cache (no per-run arrays).
    fn take(
        cache: &StepCache,
        program: &Arc<Program>,
        dtype: ComputeDtype,
        plan: &Arc<Plan>,
    ) -> Option<Steps> {
        let key = StepKey::of(program, dtype, plan, &StepOptions::default())?;
        cache.take(&key, plan)
    }

    fn model(training: &str) -> (Arc<Program>, Arc<Plan>) {
        let cfg = ModelConfig::from_jsonc(&format!(
            r#"{{"model_dim":16,"vocab_size":32,"seq_len":8,
                "blocks":[{{"type":"plain","heads":2}},{{"type":"swiglu"}}],
                "training":{{"batch_tokens":16,{training}}}}}"#
        ))
        .unwrap();
        let p = Arc::new(cfg.lower());
        let plan = Arc::new(Plan::new(&cfg, &p));
        (p, plan)
    }

    /// Three steps' losses from the same initial weights.
    fn losses(steps: &mut Steps, program: &Program, plan: &Plan) -> Vec<f32> {
        let host = crate::init::initial_weights(&program.weights, 7);
        let w = crate::init::upload(&program.weights, &host).unwrap();
        let mut st = TrainState::new(w, plan).unwrap();
        let toks =
            Array::from_i32(&(0..16).map(|i| (i * 5) % 32).collect::<Vec<_>>(), &[2, 8]).unwrap();
        (1..=3)
            .map(|t| steps.loss_of_step(&mut st, &toks, 1.0, t, t))
            .collect()
    }

    /// A kept step serves a trial with another learning rate without re-tracing, and trains it
    /// exactly as that trial's own freshly compiled step does.
    #[test]
    fn a_kept_step_trains_another_learning_rate_exactly_like_a_fresh_one() {
        let dtype = ComputeDtype::Float32;
        let (pa, plan_a) = model(r#""lr":1e-2"#);
        let (pb, plan_b) = model(r#""lr":5e-2"#);
        let cache = StepCache::new();
        let mut a = Steps::new(pa.clone(), dtype, plan_a.clone()).unwrap();
        let la = losses(&mut a, &pa, &plan_a);
        cache.keep(a);
        let mut reused = take(&cache, &pb, dtype, &plan_b).expect("same model, other lr");
        assert!(cache.is_empty());
        let lb = losses(&mut reused, &pb, &plan_b);
        assert_eq!(reused.traces.load(Ordering::Relaxed), 1, "no re-trace");
        let mut fresh = Steps::new(pb.clone(), dtype, plan_b.clone()).unwrap();
        assert_eq!(lb, losses(&mut fresh, &pb, &plan_b));
        assert_eq!(la[0], lb[0], "same weights, same first loss");
        assert_ne!(la[1..], lb[1..], "the learning rate took effect");
    }

    #[test]
    fn steps_of_another_model_or_plan_are_not_taken() {
        let dtype = ComputeDtype::Float32;
        let (p, plan) = model(r#""lr":1e-2"#);
        let cache = StepCache::new();
        cache.keep(Steps::new(p.clone(), dtype, plan.clone()).unwrap());
        let (_, decayed) = model(r#""lr":1e-2,"weight_decay":0.3"#);
        assert!(take(&cache, &p, dtype, &decayed).is_none());
        assert!(take(&cache, &p, ComputeDtype::Bfloat16, &plan).is_none());
        let wider = Arc::new(
            ModelConfig::from_jsonc(
                r#"{"model_dim":32,"vocab_size":32,"seq_len":8,"blocks":[{"type":"plain","heads":2},{"type":"swiglu"}],
                    "training":{"batch_tokens":16,"lr":1e-2}}"#,
            )
            .unwrap()
            .lower(),
        );
        assert!(take(&cache, &wider, dtype, &plan).is_none());
        assert_eq!(cache.len(), 1);
        assert!(take(&cache, &p, dtype, &plan).is_some());
    }

    #[test]
    fn steps_with_per_run_arrays_are_not_kept_and_the_oldest_go_first() {
        let dtype = ComputeDtype::Float32;
        let (p, plan) = model(r#""lr":1e-2"#);
        let cache = StepCache::new();
        let options = || StepOptions {
            char_map: Some(Array::from_i32(&[0; 32], &[32, 1]).unwrap()),
            qat: None,
        };
        // a run with character features neither finds kept steps nor leaves its own
        assert!(StepKey::of(&p, dtype, &plan, &options()).is_none());
        cache.keep(Steps::with_options(p.clone(), dtype, plan.clone(), options()).unwrap());
        assert!(cache.is_empty());
        for wd in 1..=CAPACITY + 1 {
            let (p, plan) = model(&format!(r#""lr":1e-2,"weight_decay":0.{wd}"#));
            cache.keep(Steps::new(p, dtype, plan).unwrap());
        }
        assert_eq!(cache.len(), CAPACITY);
        let (p1, plan1) = model(r#""lr":1e-2,"weight_decay":0.1"#);
        assert!(
            take(&cache, &p1, dtype, &plan1).is_none(),
            "the oldest was dropped"
        );
        let (p2, plan2) = model(r#""lr":1e-2,"weight_decay":0.2"#);
        assert!(take(&cache, &p2, dtype, &plan2).is_some());
    }
}
