//! Divergence detection: when a run's training loss has blown up, so that it ends as `diverged`
//! (and is neither ranked nor retried) instead of training on garbage to a `completed` status.
//!
//! Two rules, checked on every step's loss:
//! * the loss is not finite (NaN or ±inf);
//! * the smoothed loss (an exponential moving average, `α = 0.2`, so one spike moves it by a fifth)
//!   exceeds `factor ×` the lowest smoothed loss seen so far. `factor` is
//!   `training.divergence_factor` (default 2; 0 turns the rule off).
//!
//! With `lr: 100` a byte-level model's loss jumps from 5.8 to thousands in one step: the smoothed
//! loss passes twice its best at once. A run that collapses back to the uniform loss (ln V) after
//! reaching 1.5 passes it too; ordinary noise and warm-up spikes do not. The state is part of the
//! resume point, so a resumed run judges exactly as an uninterrupted one.

/// Smoothing weight of the newest loss.
const ALPHA: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    factor: f64,
    /// `(smoothed, lowest smoothed)`, once a loss was seen.
    state: Option<(f64, f64)>,
}

impl Divergence {
    pub fn new(factor: f64) -> Divergence {
        Divergence {
            factor,
            state: None,
        }
    }

    /// Continues from a saved state (see [`Divergence::saved`]).
    pub fn resume(factor: f64, saved: Option<(f64, f64)>) -> Divergence {
        Divergence {
            factor,
            state: saved,
        }
    }

    /// `(smoothed loss, lowest smoothed loss)` for the resume point.
    pub fn saved(&self) -> Option<(f64, f64)> {
        self.state
    }

    /// Feeds the loss of `step`; `Err` says why the run has diverged.
    pub fn observe(&mut self, step: usize, loss: f64) -> Result<(), String> {
        if !loss.is_finite() {
            return Err(format!(
                "loss is {loss} at step {step} (diverged; lower training.lr or set training.grad_clip)"
            ));
        }
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
        d.observe(0, 5.8).unwrap();
        let e = d.observe(1, 4462.0).unwrap_err();
        assert!(e.contains("step 1"), "{e}");
    }

    #[test]
    fn nan_is_divergence_even_when_the_rule_is_off() {
        let mut d = Divergence::new(0.0);
        d.observe(0, 5.8).unwrap();
        assert!(d.observe(1, f64::NAN).is_err());
        assert!(Divergence::new(0.0).observe(0, f64::INFINITY).is_err());
    }

    #[test]
    fn training_noise_and_a_single_spike_are_not_divergence() {
        let mut d = Divergence::new(2.0);
        let mut loss = 5.5;
        for s in 0..500 {
            loss = (loss * 0.99f64).max(1.5);
            let noisy = loss * if s % 7 == 0 { 1.3 } else { 1.0 };
            d.observe(s, noisy).unwrap();
        }
        // one spike to 2.5x the current loss
        d.observe(500, 3.75).unwrap();
        d.observe(501, 1.5).unwrap();
    }

    #[test]
    fn a_collapse_back_to_the_start_is_divergence() {
        let mut d = Divergence::new(2.0);
        for s in 0..200 {
            d.observe(s, (5.5 * 0.98f64.powi(s as i32)).max(1.5))
                .unwrap();
        }
        let caught = (200..260).find(|&s| d.observe(s, 5.5).is_err());
        assert!(
            caught.is_some(),
            "a return to the untrained loss must end the run"
        );
    }

    #[test]
    fn resumed_state_judges_like_the_uninterrupted_run() {
        let losses = [5.0, 4.0, 3.0, 2.5, 2.0, 7.0, 9.0];
        let mut whole = Divergence::new(2.0);
        let a: Vec<bool> = losses
            .iter()
            .enumerate()
            .map(|(s, l)| whole.observe(s, *l).is_ok())
            .collect();
        let mut first = Divergence::new(2.0);
        for (s, l) in losses[..4].iter().enumerate() {
            first.observe(s, *l).unwrap();
        }
        let mut second = Divergence::resume(2.0, first.saved());
        let b: Vec<bool> = losses[4..]
            .iter()
            .enumerate()
            .map(|(s, l)| second.observe(s + 4, *l).is_ok())
            .collect();
        assert_eq!(a[4..], b[..]);
    }
}
