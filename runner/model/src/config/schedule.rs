//! The learning-rate schedule (mixlab §6.4): warmup, hold, cosine to a floor, optional warmdown; or
//! multi-phase constant learning rates (`phases`). [`TrainingConfig::lr_scale`] gives the multiplier
//! of every group's peak learning rate at a step.

use super::TrainingConfig;
use crate::error::ConfigError;
use crate::json::Fields;

/// One phase of a multi-phase schedule: `steps` steps at learning rate `lr`.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub steps: usize,
    pub lr: f64,
    pub label: Option<String>,
}

/// The schedule fields of `training`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub steps: usize,
    pub warmup_steps: usize,
    pub hold_steps: usize,
    pub warmdown_steps: usize,
    pub min_lr_fraction: f64,
    pub lr_schedule_steps: usize,
    pub phases: Vec<Phase>,
}

pub const FIELDS: &[&str] = &[
    "steps",
    "warmup_steps",
    "warmup_ratio",
    "hold_steps",
    "warmdown_steps",
    "min_lr_fraction",
    "lr_schedule_steps",
    "phases",
];

fn phases(f: &mut Fields<'_>) -> Result<Vec<Phase>, ConfigError> {
    let Some(list) = f.array("phases")? else {
        return Ok(vec![]);
    };
    if list.is_empty() {
        return Err(f.error(
            "phases",
            "phases must hold at least one phase (or be left out)",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let mut p = Fields::new(f.path_of(&format!("phases[{i}]")), v)?;
        let steps = p.usize("steps")?.filter(|&s| s > 0).ok_or_else(|| {
            p.error("steps", format!("phases[{i}].steps must be > 0"))
                .with_hint("e.g. {\"steps\": 500, \"lr\": 3e-4}")
        })?;
        let lr = p
            .f64("lr")?
            .filter(|&l| l > 0.0 && l.is_finite())
            .ok_or_else(|| p.error("lr", format!("phases[{i}].lr must be > 0")))?;
        let label = p.string("label")?;
        p.finish(&["steps", "lr", "label"])?;
        out.push(Phase { steps, lr, label });
    }
    Ok(out)
}

/// Reads the schedule fields (`lr` is the peak learning rate).
pub(crate) fn parse(f: &mut Fields<'_>) -> Result<Schedule, ConfigError> {
    let phases = phases(f)?;
    let total: usize = phases.iter().map(|p| p.steps).sum();
    let steps = match f.usize("steps")? {
        Some(0) => return Err(f.error("steps", "steps must be > 0")),
        Some(s) if !phases.is_empty() && s != total => {
            return Err(f
                .error(
                    "steps",
                    format!("steps={s} differs from the {total} steps of the phases"),
                )
                .with_hint("leave steps out: with phases it is their sum"));
        }
        Some(s) => s,
        None if !phases.is_empty() => total,
        None => 200,
    };
    if !phases.is_empty() && f.has("lr_schedule_steps") {
        return Err(f.error(
            "lr_schedule_steps",
            "lr_schedule_steps does not apply to a phase schedule",
        ));
    }
    let horizon = match f.usize("lr_schedule_steps")? {
        None => steps,
        Some(0) => return Err(f.error("lr_schedule_steps", "lr_schedule_steps must be > 0")),
        Some(h) => h,
    };
    let warmup_steps = match (f.has("warmup_steps"), f.f64("warmup_ratio")?) {
        (true, Some(r)) if r != 0.0 => {
            return Err(f
                .error(
                    "warmup_ratio",
                    "cannot set both training.warmup_steps and training.warmup_ratio",
                )
                .with_hint("keep one of them"));
        }
        (_, Some(r)) if !(0.0..=1.0).contains(&r) => {
            return Err(f.error(
                "warmup_ratio",
                format!("warmup_ratio={r} must be in [0, 1]"),
            ));
        }
        (false, Some(r)) if r > 0.0 => (horizon as f64 * r).round() as usize,
        _ => f.usize("warmup_steps")?.unwrap_or(horizon.min(100)),
    };
    let min_lr_fraction = match f.f64("min_lr_fraction")? {
        None => 0.0,
        Some(v) if (0.0..1.0).contains(&v) => v,
        Some(v) => {
            return Err(f.error(
                "min_lr_fraction",
                format!("min_lr_fraction={v} must be in [0, 1)"),
            ));
        }
    };
    Ok(Schedule {
        steps,
        warmup_steps,
        hold_steps: f.usize("hold_steps")?.unwrap_or(200),
        warmdown_steps: f.usize("warmdown_steps")?.unwrap_or(0),
        min_lr_fraction,
        lr_schedule_steps: horizon,
        phases,
    })
}

impl TrainingConfig {
    /// The multiplier of each group's peak learning rate at `step` (0-based).
    ///
    /// Standard: linear warmup from 0, hold at peak, cosine down to the floor (`min_lr_fraction`, or
    /// 10% when it is 0: mixlab), then with `warmdown_steps` a linear ramp over the last steps of the
    /// horizon to the floor (or a tenth of the 10% floor). Phases: each phase's `lr / training.lr`;
    /// with `warmdown_steps` the last phase's final steps ramp to `max(1%, min_lr_fraction)` of its lr.
    /// Past the end (a run extended with `--steps`) the last value holds.
    pub fn lr_scale(&self, step: usize) -> f64 {
        if !self.phases.is_empty() {
            return self.phase_scale(step);
        }
        let floor = if self.min_lr_fraction > 0.0 {
            self.min_lr_fraction
        } else {
            0.1
        };
        let base = |t: usize| -> f64 {
            let (w, h, s) = (self.warmup_steps, self.hold_steps, self.lr_schedule_steps);
            if t < w {
                return t as f64 / w as f64;
            }
            if t < w + h || s <= w + h {
                return 1.0;
            }
            let p = ((t - w - h) as f64 / (s - w - h) as f64).min(1.0);
            floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        if self.warmdown_steps > 0 {
            let t0 = self.lr_schedule_steps.saturating_sub(self.warmdown_steps);
            if step >= t0 {
                let target = if self.min_lr_fraction > 0.0 {
                    floor
                } else {
                    floor / 10.0
                };
                let p = ((step - t0) as f64 / self.warmdown_steps as f64).min(1.0);
                let start = base(t0);
                return start + (target - start) * p;
            }
        }
        base(step)
    }

    /// The phase that contains `step` (the last one past the end) and the step where it starts.
    pub fn phase_at(&self, step: usize) -> Option<(usize, usize)> {
        let mut begin = 0;
        for (i, p) in self.phases.iter().enumerate() {
            if step < begin + p.steps || i + 1 == self.phases.len() {
                return Some((i, begin));
            }
            begin += p.steps;
        }
        None
    }

    fn phase_scale(&self, step: usize) -> f64 {
        let (i, begin) = self.phase_at(step).expect("phases is not empty");
        let p = &self.phases[i];
        let mut lr = p.lr;
        if i + 1 == self.phases.len() && self.warmdown_steps > 0 {
            let ramp = self.warmdown_steps.min(p.steps);
            let t0 = begin + p.steps - ramp;
            if step >= t0 {
                let target = (0.01 * p.lr).max(p.lr * self.min_lr_fraction);
                let frac = ((step - t0) as f64 / ramp as f64).min(1.0);
                lr = p.lr + (target - p.lr) * frac;
            }
        }
        lr / self.lr
    }
}
