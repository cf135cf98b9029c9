//! Divergence detection: when a run's training loss has blown up, so that it ends as `diverged`
//! (and is neither ranked nor retried) instead of training on garbage to a `completed` status.
//!
//! Checked on every step's loss and gradient norm:
//! * a non-finite loss or gradient: the optimizer skipped that update (mixlab's guard, in
//!   [`crate::optim::Plan::step`]); it is counted, and [`MAX_NONFINITE_RUN`] such steps in a row end
//!   the run;
//! * the smoothed loss (an exponential moving average, `α = 0.2`, so one spike moves it by a fifth)
//!   exceeds `factor ×` the lowest smoothed loss seen so far. `factor` is
//!   `training.divergence_factor` (default 2; 0 turns the rule off).
//!
//! With `lr: 100` a byte-level model's loss jumps from 5.8 to thousands in one step: the smoothed
//! loss passes twice its best at once. A run that collapses back to the uniform loss (ln V) after
//! reaching 1.5 passes it too; ordinary noise and warm-up spikes do not. The state is part of the
//! resume point, so a resumed run judges exactly as an uninterrupted one.

use std::collections::HashMap;

/// Smoothing weight of the newest loss.
const ALPHA: f64 = 0.2;

/// Consecutive skipped (non-finite) steps that end a run as diverged.
pub const MAX_NONFINITE_RUN: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Divergence {
    factor: f64,
    /// `(smoothed, lowest smoothed)`, once a finite loss was seen.
    state: Option<(f64, f64)>,
    /// Non-finite steps in a row, and in all.
    nonfinite_run: usize,
    skipped: usize,
}

impl Divergence {
    pub fn new(factor: f64) -> Divergence {
        Divergence {
            factor,
            ..Divergence::default()
        }
    }

    /// Continues from the keys [`Divergence::save`] wrote.
    pub fn resume(factor: f64, meta: &HashMap<String, String>) -> Divergence {
        let num = |k: &str| meta.get(k).and_then(|v| v.parse::<f64>().ok());
        Divergence {
            factor,
            state: num("divergence_smoothed").zip(num("divergence_best")),
            nonfinite_run: num("nonfinite_run").map_or(0, |n| n as usize),
            skipped: num("skipped_steps").map_or(0, |n| n as usize),
        }
    }

    pub fn save(&self, meta: &mut HashMap<String, String>) {
        if let Some((s, b)) = self.state {
            meta.insert("divergence_smoothed".into(), s.to_string());
            meta.insert("divergence_best".into(), b.to_string());
        }
        meta.insert("nonfinite_run".into(), self.nonfinite_run.to_string());
        meta.insert("skipped_steps".into(), self.skipped.to_string());
    }

    /// Steps skipped for a non-finite loss or gradient.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Feeds `step`'s loss and gradient norm; `Err` says why the run has diverged.
    pub fn observe(&mut self, step: usize, loss: f64, grad_norm: f64) -> Result<(), String> {
        if !loss.is_finite() || !grad_norm.is_finite() {
            self.skipped += 1;
            self.nonfinite_run += 1;
            if self.nonfinite_run >= MAX_NONFINITE_RUN {
                return Err(format!(
                    "loss {loss} / gradient norm {grad_norm} at step {step}: {MAX_NONFINITE_RUN} steps in a row were not finite \
                     and skipped (diverged; lower training.lr or set training.grad_clip)"
                ));
            }
            return Ok(());
        }
        self.nonfinite_run = 0;
        let (smoothed, best) = match self.state {
            None => (loss, loss),
            Some((s, b)) => {
                let s = (1.0 - ALPHA) * s + ALPHA * loss;
                (s, b.min(s))
            }
        };
        self.state = Some((smoothed, best));
        if self.factor > 0.0 && smoothed > self.factor * best {
            return Err(format!(
                "loss blew up at step {step}: {loss:.4} (smoothed {smoothed:.4}) is over {}x its best smoothed value {best:.4} \
                 (diverged; lower training.lr or set training.grad_clip; training.divergence_factor sets the threshold, 0 turns it off)",
                self.factor
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finite_blow_up_is_caught_at_once() {
        let mut d = Divergence::new(2.0);
        d.observe(0, 5.8, 1.0).unwrap();
        let e = d.observe(1, 4462.0, 1.0).unwrap_err();
        assert!(e.contains("step 1"), "{e}");
    }

    #[test]
    fn non_finite_steps_are_skipped_until_three_in_a_row() {
        let mut d = Divergence::new(0.0);
        d.observe(0, 5.8, 1.0).unwrap();
        d.observe(1, f64::NAN, 1.0).unwrap();
        d.observe(2, 5.7, f64::INFINITY).unwrap();
        d.observe(3, 5.6, 1.0).unwrap(); // resets the run
        d.observe(4, f64::NAN, f64::NAN).unwrap();
        d.observe(5, f64::INFINITY, 1.0).unwrap();
        let e = d.observe(6, f64::NAN, 1.0).unwrap_err();
        assert!(e.contains("3 steps in a row"), "{e}");
        assert_eq!(d.skipped(), 5);
    }

    #[test]
    fn training_noise_and_a_single_spike_are_not_divergence() {
        let mut d = Divergence::new(2.0);
        let mut loss = 5.5;
        for s in 0..500 {
            loss = (loss * 0.99f64).max(1.5);
            let noisy = loss * if s % 7 == 0 { 1.3 } else { 1.0 };
            d.observe(s, noisy, 1.0).unwrap();
        }
        // one spike to 2.5x the current loss
        d.observe(500, 3.75, 1.0).unwrap();
        d.observe(501, 1.5, 1.0).unwrap();
    }

    #[test]
    fn a_collapse_back_to_the_start_is_divergence() {
        let mut d = Divergence::new(2.0);
        for s in 0..200 {
            d.observe(s, (5.5 * 0.98f64.powi(s as i32)).max(1.5), 1.0)
                .unwrap();
        }
        let caught = (200..260).find(|&s| d.observe(s, 5.5, 1.0).is_err());
        assert!(
            caught.is_some(),
            "a return to the untrained loss must end the run"
        );
    }

    #[test]
    fn resumed_state_judges_like_the_uninterrupted_run() {
        let losses = [
            5.0,
            4.0,
            f64::NAN,
            3.0,
            2.5,
            f64::NAN,
            f64::NAN,
            2.0,
            7.0,
            9.0,
        ];
        let mut whole = Divergence::new(2.0);
        let a: Vec<bool> = losses
            .iter()
            .enumerate()
            .map(|(s, l)| whole.observe(s, *l, 1.0).is_ok())
            .collect();
        let mut first = Divergence::new(2.0);
        for (s, l) in losses[..6].iter().enumerate() {
            first.observe(s, *l, 1.0).unwrap();
        }
        let mut meta = HashMap::new();
        first.save(&mut meta);
        let mut second = Divergence::resume(2.0, &meta);
        let b: Vec<bool> = losses[6..]
            .iter()
            .enumerate()
            .map(|(s, l)| second.observe(s + 6, *l, 1.0).is_ok())
            .collect();
        assert_eq!(a[6..], b[..]);
        assert_eq!(whole.skipped(), 3);
    }
}
