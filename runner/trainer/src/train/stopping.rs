//! Early stopping on the validation loss (`training.target_val_loss`, `training.early_stop`),
//! checked at every validation. Its state is part of the resume point.

use super::resume::{Meta, ResumePoint};
use mixsweep_model::config::stopping::EarlyStop;

pub struct Stopper {
    cfg: EarlyStop,
    best: Option<f64>,
    /// Validations in a row (from `min_steps`) without an improvement over `best` by `min_delta`.
    stale: usize,
}

impl Stopper {
    pub fn new(cfg: EarlyStop) -> Stopper {
        Stopper {
            cfg,
            best: None,
            stale: 0,
        }
    }

    pub fn resume(cfg: EarlyStop, point: &ResumePoint) -> Stopper {
        Stopper {
            cfg,
            best: point.number("early_stop_best"),
            stale: point.number("early_stop_stale").map_or(0, |n| n as usize),
        }
    }

    pub fn save(&self, meta: &mut Meta) {
        if let Some(b) = self.best {
            meta.insert("early_stop_best".into(), b.to_string());
        }
        meta.insert("early_stop_stale".into(), self.stale.to_string());
    }

    /// Feeds the validation loss measured before step `step`; `Some(reason)` stops the run.
    pub fn observe(&mut self, step: usize, val: f64) -> Option<String> {
        let c = &self.cfg;
        if let Some(target) = c.target_val_loss
            && val <= target
        {
            return Some(format!(
                "target_val_loss reached: {val:.4} <= {target} at step {step}"
            ));
        }
        if let Some(limit) = c.val_gt
            && step >= c.at_step
            && val > limit
        {
            return Some(format!(
                "early_stop.val_gt: {val:.4} > {limit} at step {step} (>= at_step {})",
                c.at_step
            ));
        }
        let improved = self.best.is_none_or(|b| val < b - c.min_delta);
        self.best = Some(self.best.map_or(val, |b| b.min(val)));
        if improved {
            self.stale = 0;
        } else if step >= c.min_steps {
            self.stale += 1;
        }
        if c.patience > 0 && self.stale >= c.patience {
            return Some(format!(
                "early_stop.patience: {} validations without improving on {:.4} by more than {} (step {step})",
                self.stale,
                self.best.unwrap_or(val),
                c.min_delta
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopper(patience: usize, min_delta: f64, min_steps: usize) -> Stopper {
        Stopper::new(EarlyStop {
            patience,
            min_delta,
            min_steps,
            ..EarlyStop::default()
        })
    }

    #[test]
    fn patience_stops_at_the_first_qualifying_validation() {
        let mut s = stopper(2, 0.01, 0);
        assert_eq!(s.observe(0, 3.0), None);
        assert_eq!(s.observe(10, 2.5), None);
        assert_eq!(s.observe(20, 2.495), None); // not better by more than 0.01: stale 1
        let r = s.observe(30, 2.6).expect("second stale validation stops"); // stale 2
        assert!(
            r.contains("2 validations without improving on 2.4950"),
            "{r}"
        );
    }

    #[test]
    fn min_steps_delays_the_count_and_targets_stop_at_once() {
        let mut s = stopper(1, 0.0, 100);
        assert_eq!(s.observe(0, 3.0), None);
        assert_eq!(s.observe(50, 3.1), None); // before min_steps: not counted
        assert!(s.observe(100, 3.2).is_some());
        let mut t = Stopper::new(EarlyStop {
            target_val_loss: Some(1.5),
            ..EarlyStop::default()
        });
        assert_eq!(t.observe(0, 1.6), None);
        assert!(
            t.observe(10, 1.5)
                .unwrap()
                .starts_with("target_val_loss reached")
        );
        let mut g = Stopper::new(EarlyStop {
            val_gt: Some(4.0),
            at_step: 20,
            ..EarlyStop::default()
        });
        assert_eq!(g.observe(10, 5.0), None);
        assert!(g.observe(20, 4.5).is_some());
    }
}
