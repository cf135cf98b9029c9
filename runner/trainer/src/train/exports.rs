//! Weight files a run writes: the final weights (`model.safetensors`), the averaged ones
//! (`model.swa.safetensors`), the quantized export (`model.int8.safetensors`, validated as
//! `quant_val_loss`), and periodic checkpoints (`<dir>/step_000100.safetensors`, each also
//! refreshing the resume point, so a run killed outright can `--resume` from its last checkpoint).

use super::TrainError;
use super::run::Run;
use crate::checkpoint;
use crate::quantize::{self, Scheme};
use mixsweep_mlx::Array;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn to_host(arrays: &[Array]) -> Result<Vec<Vec<f32>>, TrainError> {
    Ok(arrays
        .iter()
        .map(|p| p.to_vec_f32())
        .collect::<Result<_, _>>()?)
}

/// `model.safetensors` -> `model.<tag>.safetensors`.
pub fn sibling(weights: &Path, tag: &str) -> PathBuf {
    let name = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".safetensors")
        .or_else(|| name.strip_suffix(".st"))
        .unwrap_or(&name);
    weights.with_file_name(format!("{stem}.{tag}.safetensors"))
}

impl Run<'_> {
    fn weights_meta(&self) -> HashMap<String, String> {
        HashMap::from([
            ("name".to_string(), self.cfg.name.clone()),
            ("config_hash".to_string(), self.cfg.config_hash.clone()),
            (
                "steps".to_string(),
                self.summary.steps_completed.to_string(),
            ),
            ("format".to_string(), "mixsweep_v1".to_string()),
        ])
    }

    /// Writes the live weights to `path` and, with averaging, the average beside it.
    fn write_weights(&self, path: &Path) -> Result<(), TrainError> {
        let mut meta = self.weights_meta();
        checkpoint::save(
            path,
            &self.program.weights,
            &to_host(&self.state.params)?,
            meta.clone(),
        )?;
        if let Some(a) = &self.averager
            && let Some(w) = a.weights()
        {
            meta.insert(
                "averaged".to_string(),
                format!("swa/ema over {} updates", a.updates()),
            );
            checkpoint::save(
                &sibling(path, "swa"),
                &self.program.weights,
                &to_host(w)?,
                meta,
            )?;
        }
        Ok(())
    }

    /// `model.safetensors` (live weights) and, with averaging, `model.swa.safetensors`.
    pub(super) fn export(&self) -> Result<(), TrainError> {
        self.write_weights(&self.weights_out)?;
        if !self.opts.quiet {
            println!(
                "exported safetensors to {} ({} tensors)",
                self.weights_out.display(),
                self.program.weights.len()
            );
            if self
                .averager
                .as_ref()
                .is_some_and(|a| a.weights().is_some())
            {
                println!(
                    "exported averaged (SWA/EMA) safetensors to {}",
                    sibling(&self.weights_out, "swa").display()
                );
            }
        }
        Ok(())
    }

    /// `model.int8.safetensors` (or int6), and the validation loss of the weights it holds.
    pub(super) fn export_quantized(&mut self, scheme: &Scheme) -> Result<(), TrainError> {
        let host = to_host(&self.state.params)?;
        let path = sibling(&self.weights_out, &scheme.bits.to_string());
        checkpoint::save_quantized(
            &path,
            &self.program.weights,
            &host,
            scheme,
            self.weights_meta(),
        )?;
        let rounded = quantize::round_trip(&self.program.weights, &host, scheme);
        let params = crate::init::upload(&self.program.weights, &rounded)?;
        self.summary.quantize = Some(format!("{} {}", scheme.bits, scheme.method));
        self.summary.quant_val_loss = self.validate(&params)?;
        if !self.opts.quiet {
            let v = self
                .summary
                .quant_val_loss
                .map(|v| format!(", val={v:.4}"))
                .unwrap_or_default();
            println!(
                "exported quantized ({} {}) safetensors to {}{v}",
                scheme.bits,
                scheme.method,
                path.display()
            );
        }
        Ok(())
    }

    /// Whether the weights after step `s` are checkpointed.
    pub(super) fn checkpoint_due(&self, s: usize) -> bool {
        self.opts
            .checkpoints
            .as_ref()
            .is_some_and(|(_, every)| (s + 1).is_multiple_of(*every))
    }

    /// `<dir>/step_%06d.safetensors` (and `.swa`) after `steps_completed` steps, and the resume point.
    pub(super) fn checkpoint(&self) -> Result<(), TrainError> {
        let Some((dir, _)) = &self.opts.checkpoints else {
            return Ok(());
        };
        let path = dir.join(format!(
            "step_{:06}.safetensors",
            self.summary.steps_completed
        ));
        // The resume point first: once `step_N` is visible, a kill resumes at step N or later.
        self.save_resume()?;
        self.write_weights(&path)
    }
}
