//! What a run writes about itself: `metrics.jsonl` lines (also on stdout with `--progress-json`),
//! progress lines, and `summary.json`.

use super::{TrainError, io_err};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsRecord {
    pub step: usize,
    pub train_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: u64,
    pub tok_s: f64,
    pub elapsed_s: f64,
    /// Model FLOP utilisation: `tok_s · train FLOPs/token / training.hardware_tflops`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// MLX allocator: bytes in use, the peak so far, and cached for reuse.
    pub mem_active_bytes: usize,
    pub mem_peak_bytes: usize,
    pub mem_cache_bytes: usize,
    /// Auxiliary losses (included in `train_loss`), e.g. `aux.blocks.1.load_balance`.
    #[serde(flatten, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub aux: std::collections::BTreeMap<String, f64>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    /// `completed`, `diverged`, `interrupted` or `failed`.
    pub status: String,
    pub steps: usize,
    pub steps_completed: usize,
    pub best_val_loss: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub final_train_loss: Option<f64>,
    pub params: usize,
    pub flops_per_token: f64,
    /// Values cached generation keeps per sequence at `seq_len` tokens (KV cache, recurrent states).
    pub inference_state_values: usize,
    pub mean_tok_s: f64,
    /// How many steps `mean_tok_s` was measured over, after the first step finished; 0 when the
    /// run was too short for that and the figure is every step over the whole run (start-up
    /// included).
    pub tok_s_steps: usize,
    /// Seconds from process start to the end of the first step, and its phases (`exec`, `config`,
    /// `data_open`, `device`, `program`, `weights`, `step_setup`, `data_upload`,
    /// `first_validation`, `first_step_submit`, `first_step_wait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_first_step_s: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub startup: Vec<super::startup::Phase>,
    /// `mean_tok_s` as a fraction of `training.hardware_tflops` (with that field only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    pub wall_time_s: f64,
    pub peak_memory_bytes: usize,
    pub device: String,
    pub mlx_version: String,
    pub compute_dtype: String,
    /// The update rule of each parameter group, e.g. `muon (matrix), adamw (embed, head, scalar)`.
    pub optimizer: String,
    pub config_hash: String,
    pub tokens: u64,
    /// Why a completed run ended before its last step (early stopping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Steps whose loss or gradient was not finite: their updates were skipped.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_steps: usize,
    /// Validation loss of the averaged (SWA/EMA) weights at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swa_val_loss: Option<f64>,
    /// Full validation (`--eval`): mean loss over every validation token, bits per byte, tokens.
    /// Score-first test-time training of the full validation (`ttt_steps`), e.g. `steps=1 lr=1e-5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_val_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swa_full_val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swa_val_bpb: Option<f64>,
    /// `--quantize`: the scheme (`int8 quantile`) and the validation loss of the quantized weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantize: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quant_val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Problems that did not stop the run but make its numbers weaker (e.g. no validation set:
    /// `best_val_loss` is then missing and the trial cannot be ranked by it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    /// Records a validation loss of the live weights.
    pub fn validated(&mut self, v: f64) {
        self.best_val_loss = Some(self.best_val_loss.map_or(v, |b| b.min(v)));
        self.final_val_loss = Some(v);
    }
}

pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let tmp = path.with_extension("json.partial");
    let text = serde_json::to_string_pretty(value).expect("summary serializes");
    std::fs::write(&tmp, text + "\n").map_err(|e| io_err("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("cannot rename", path, e))
}

pub fn format_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Whether step `s` (0-based) of `total` prints a progress line.
pub fn is_log_step(s: usize, total: usize, every: usize) -> bool {
    s == 0 || s + 1 == total || s.is_multiple_of(every) || (s < every && s.is_power_of_two())
}

/// `metrics.jsonl`, flushed line by line (and echoed with `--progress-json`).
pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
    echo: bool,
}

impl Metrics {
    /// A resumed run appends to the metrics of the run it continues.
    pub fn open(path: PathBuf, append: bool, echo: bool) -> Result<Metrics, TrainError> {
        let file = if append {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        } else {
            std::fs::File::create(&path)
        }
        .map_err(|e| io_err("cannot create", &path, e))?;
        Ok(Metrics { path, file, echo })
    }

    pub fn write(&mut self, line: &impl Serialize) -> Result<(), TrainError> {
        let line = serde_json::to_string(line).expect("record serializes");
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| io_err("cannot write", &self.path, e))?;
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|_| out.flush());
        }
        Ok(())
    }
}
