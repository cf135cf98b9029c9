//! The files a trial leaves, as typed records shared by the runner (which writes them) and the
//! orchestrator (which reads them): `summary.json` ([`Summary`]), `metrics.jsonl` lines
//! ([`MetricsRecord`]) and `attempt.json` ([`AttemptRecord`]), with the closed sets of states they
//! name: how a run ended ([`RunStatus`]) and how an attempt ended ([`Ending`], the one failure taxonomy
//! of every backend, `results` and `status`). The stored names are stable. [`worker`] holds the
//! warm-worker protocol the two sides speak.

use serde::{Deserialize, Serialize};

pub mod worker;

/// How a runner's run ended (`summary.json`'s `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still training (written at start; a summary left like this means the process died).
    #[default]
    Running,
    Completed,
    Diverged,
    Interrupted,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Diverged => "diverged",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt of a trial ended (`attempt.json`'s `status`), whatever backend ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Completed,
    Failed,
    Diverged,
    Oom,
    Timeout,
    Interrupted,
    /// Cancelled outside mixsweep (`scancel`, a deleted Job).
    Cancelled,
    EngineError,
    ImagePull,
    Unschedulable,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::Failed => "failed",
            Ending::Diverged => "diverged",
            Ending::Oom => "oom",
            Ending::Timeout => "timeout",
            Ending::Interrupted => "interrupted",
            Ending::Cancelled => "cancelled",
            Ending::EngineError => "engine_error",
            Ending::ImagePull => "image_pull",
            Ending::Unschedulable => "unschedulable",
        }
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `attempt.json`: how the latest attempt of a trial ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub trial: String,
    pub status: Ending,
    /// 1 for the first attempt.
    #[serde(default)]
    pub attempt: usize,
    #[serde(default)]
    pub error: Option<String>,
    /// The last lines of the runner's stderr.
    #[serde(default)]
    pub stderr_tail: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// `local`, `docker`, `kubernetes` or `slurm`.
    #[serde(default)]
    pub backend: String,
    /// Set when a later run stored this attempt's results (its orchestrator had exited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
    /// When the attempt was handed to its backend and when it ended (Unix seconds): the trial's bar
    /// in the report's timeline (for queued backends the start includes the cluster's queueing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<f64>,
    /// The device slot it ran on (`gpu 0`), where the orchestrator placed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

/// One start-up phase and its duration in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsRecord {
    pub step: usize,
    /// Absent on the final validation line (it has `step`, `tokens`, `elapsed_s` and `val_loss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
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

/// `summary.json`. Every field has a default when read, so summaries written by older runners load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub name: String,
    pub status: RunStatus,
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
    /// `data_open`, `device`, `program`, `weights`, `step_setup` (or `step_reused`: a warm worker's
    /// compiled steps of an earlier trial), `data_upload`, `first_validation`, `first_step_submit`,
    /// `first_step_wait`; `job` instead of `exec` in a worker; `kernel_fetch` with a kernel store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_first_step_s: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub startup: Vec<Phase>,
    /// Compiled kernels (files) downloaded from the kernel store (`MIXSWEEP_KERNEL_STORE`) before
    /// this run, its `kernel_fetch` start-up phase; absent without a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels_fetched: Option<usize>,
    /// `mean_tok_s` as a fraction of `training.hardware_tflops` (with that field only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    pub wall_time_s: f64,
    pub peak_memory_bytes: usize,
    pub device: String,
    pub mlx_version: String,
    /// `mixsweep-runner`'s version (empty in summaries of older runners).
    pub runner_version: String,
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

/// The summary field of a metric name (`val_loss` and `train_loss` are short names).
fn field(name: &str) -> &str {
    match name {
        "val_loss" => "best_val_loss",
        "train_loss" => "final_train_loss",
        other => other,
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    /// A number the summary reports, by its field name or the short names `val_loss` (=
    /// `best_val_loss`) and `train_loss` (= `final_train_loss`); `None` when absent.
    pub fn metric(&self, name: &str) -> Option<f64> {
        serde_json::to_value(self).ok()?.get(field(name))?.as_f64()
    }

    /// Whether the summary has the metric's field, even without a value (`best_val_loss: null`
    /// for a run without validation); optional fields left out of `summary.json` are not reported.
    pub fn reports(&self, name: &str) -> bool {
        serde_json::to_value(self)
            .ok()
            .is_some_and(|v| v.get(field(name)).is_some())
    }

    /// Whether the run trained without a validation set (its `best_val_loss` is missing).
    pub fn without_validation(&self) -> bool {
        self.warnings
            .iter()
            .any(|w| w.starts_with("no validation set"))
    }

    /// Records a validation loss of the live weights.
    pub fn validated(&mut self, v: f64) {
        self.best_val_loss = Some(self.best_val_loss.map_or(v, |b| b.min(v)));
        self.final_val_loss = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_round_trip_and_old_ones_load() {
        let s = Summary {
            name: "tiny".into(),
            status: RunStatus::Completed,
            best_val_loss: Some(2.5),
            ..Default::default()
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"status\":\"completed\""), "{text}");
        assert_eq!(serde_json::from_str::<Summary>(&text).unwrap(), s);
        // a summary missing most fields (an older runner) still reads
        let old: Summary = serde_json::from_str(r#"{"status": "diverged", "steps": 3}"#).unwrap();
        assert_eq!((old.status, old.steps), (RunStatus::Diverged, 3));
        assert!(serde_json::from_str::<Summary>(r#"{"status": "exploded"}"#).is_err());
    }

    #[test]
    fn metrics_keep_auxiliary_losses() {
        let line = r#"{"step": 4, "train_loss": 3.0, "lr": 0.1, "grad_norm": 1.0, "tokens": 10, "tok_s": 5.0, "elapsed_s": 1.0, "mem_active_bytes": 1, "mem_peak_bytes": 2, "mem_cache_bytes": 3, "aux.blocks.1.load_balance": 0.25}"#;
        let m: MetricsRecord = serde_json::from_str(line).unwrap();
        assert_eq!(m.aux["aux.blocks.1.load_balance"], 0.25);
        assert_eq!((m.val_loss, m.train_loss), (None, Some(3.0)));
        // the final validation line has no training loss: none is made up
        let last: MetricsRecord =
            serde_json::from_str(r#"{"elapsed_s": 2.0, "step": 5, "tokens": 10, "val_loss": 2.5}"#)
                .unwrap();
        assert_eq!((last.train_loss, last.val_loss), (None, Some(2.5)));
    }

    #[test]
    fn metrics_by_name_and_alias() {
        let s = Summary {
            best_val_loss: Some(1.5),
            final_train_loss: Some(1.25),
            mean_tok_s: 100.0,
            ..Default::default()
        };
        assert_eq!(s.metric("val_loss"), Some(1.5));
        assert_eq!(s.metric("train_loss"), Some(1.25));
        assert_eq!(s.metric("mean_tok_s"), Some(100.0));
        assert_eq!(s.metric("val_bpb"), None);
        assert_eq!(s.metric("no_such_field"), None);
        assert!(s.reports("final_val_loss") && !s.reports("val_bpb"));
    }

    #[test]
    fn endings_have_stable_names() {
        for e in [
            Ending::Completed,
            Ending::EngineError,
            Ending::ImagePull,
            Ending::Cancelled,
        ] {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(serde_json::from_str::<Ending>(&json).unwrap(), e);
        }
    }
}
