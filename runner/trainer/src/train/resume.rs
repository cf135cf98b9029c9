//! The resume point an interrupted run leaves in its output folder ([`RESUME_FILE`]): weights
//! (`param/<w>`), optimizer state (`<slot>/<w>`, the plan's slots), averaged weights (`swa/<w>`),
//! and in the metadata the step, the summary's losses and the state of the divergence detector,
//! the early stopper and the averager. A step is a pure function of these and (seed, step), so a
//! resumed run's losses equal an uninterrupted run's.

use super::TrainError;
use crate::checkpoint;
use crate::optim::Plan;
use mixsweep_model::ir::WeightSpec;
use mixsweep_model::{ConfigError, ModelConfig};
use std::collections::HashMap;
use std::path::Path;

pub use mixsweep_store::RESUME_FILE;

const FORMAT: &str = "mixsweep_resume_v1";

/// Per-run state kept as metadata strings.
pub type Meta = HashMap<String, String>;

/// A run's state at the step it stopped.
pub struct ResumePoint {
    pub step: usize,
    pub params: Vec<Vec<f32>>,
    /// Optimizer state, weight by weight (the plan's slots).
    pub state: Vec<Vec<f32>>,
    /// Averaged weights, when averaging had started.
    pub averaged: Option<Vec<Vec<f32>>>,
    pub meta: Meta,
}

impl ResumePoint {
    pub fn number(&self, key: &str) -> Option<f64> {
        self.meta.get(key).and_then(|v| v.parse().ok())
    }
}

fn prefixed(prefix: &str, weights: &[WeightSpec]) -> Vec<WeightSpec> {
    weights
        .iter()
        .map(|w| WeightSpec {
            name: format!("{prefix}{}", w.name),
            ..w.clone()
        })
        .collect()
}

/// Reads [`RESUME_FILE`], checking it belongs to this config, step count and optimizer.
pub fn load(
    path: &Path,
    cfg: &ModelConfig,
    weights: &[WeightSpec],
    plan: &Plan,
) -> Result<ResumePoint, TrainError> {
    let meta = checkpoint::metadata(path)?;
    let mismatch = |what: &str| {
        ConfigError::new(
            "",
            format!(
                "{}: saved for another {what} than this run's; delete it (or use another --out) to start over",
                path.display()
            ),
        )
    };
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(mismatch("format").into());
    }
    if meta.get("config_hash") != Some(&cfg.config_hash) {
        return Err(mismatch("config").into());
    }
    if meta.get("steps_total") != Some(&cfg.training.steps.to_string()) {
        return Err(mismatch("number of steps").into());
    }
    // files from before optimizers were plans hold AdamW's moments
    let optimizer = meta
        .get("optimizer")
        .map_or("adamw (all groups)", String::as_str);
    if optimizer != plan.describe() {
        return Err(mismatch(&format!("optimizer ({optimizer})")).into());
    }
    let step: usize = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| mismatch("format"))?;
    let averaging = meta.contains_key("swa_updates");
    let state_specs = plan.state_specs(weights);
    let mut specs = prefixed("param/", weights);
    specs.extend(state_specs.iter().cloned());
    if averaging {
        specs.extend(prefixed("swa/", weights));
    }
    // one read: the file must hold exactly these tensors
    let mut all = checkpoint::load(path, &specs)?;
    let averaged = averaging.then(|| all.split_off(weights.len() + state_specs.len()));
    let state = all.split_off(weights.len());
    Ok(ResumePoint {
        step,
        params: all,
        state,
        averaged,
        meta,
    })
}

/// What [`save`] writes.
pub struct Snapshot<'a> {
    pub step: usize,
    pub params: Vec<Vec<f32>>,
    pub state: Vec<Vec<f32>>,
    pub averaged: Option<Vec<Vec<f32>>>,
    /// The components' own keys (losses, detector states).
    pub meta: Meta,
    pub weights: &'a [WeightSpec],
}

pub fn save(
    path: &Path,
    cfg: &ModelConfig,
    plan: &Plan,
    s: Snapshot<'_>,
) -> Result<(), TrainError> {
    let mut meta = s.meta;
    meta.insert("format".into(), FORMAT.into());
    meta.insert("config_hash".into(), cfg.config_hash.clone());
    meta.insert("steps_total".into(), cfg.training.steps.to_string());
    meta.insert("step".into(), s.step.to_string());
    meta.insert("optimizer".into(), plan.describe().to_string());
    let mut specs = prefixed("param/", s.weights);
    specs.extend(plan.state_specs(s.weights));
    let mut values = s.params;
    values.extend(s.state);
    if let Some(a) = s.averaged {
        specs.extend(prefixed("swa/", s.weights));
        values.extend(a);
    }
    Ok(checkpoint::save(path, &specs, &values, meta)?)
}
