//! The orchestrator's layout of artifact storage, over [`mixsweep_store::Store`] (a local folder, the
//! default `./mixsweep-runs`; `s3://bucket/prefix`; `gs://bucket/prefix`), and trial state derived from it.
//!
//! Layout under the root:
//! ```text
//! sweeps/<sweep name>/sweep.yaml       the sweep file as run
//! sweeps/<sweep name>/trials.jsonl     one line per trial: id, variant, overrides, seed, params, flops
//! trials/<trial id>/config.json        the complete model config
//! trials/<trial id>/metrics.jsonl      the runner's metrics
//! trials/<trial id>/model.safetensors  final weights
//! trials/<trial id>/cpu.pb             CPU profile (pprof protobuf), with `profile: true`
//! trials/<trial id>/stdout.log, stderr.log
//! trials/<trial id>/attempt.json       the orchestrator's record of the last attempt (status, exit code, attempts)
//! trials/<trial id>/summary.json       the runner's summary, written last
//! sweeps/<sweep name>/lease.json       while a `mixsweep run` of the sweep is running: its owner
//! ```
//! Every object is written whole (the local store writes a temporary file and renames it), so a
//! reader never sees half a file, and a trial's state can be derived from storage alone.

use mixsweep_artifacts::{AttemptRecord, Ending, RunStatus, Summary};
pub use mixsweep_store::{Store as Storage, StoreError as StorageError};

/// What storage says about a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialState {
    New,
    Done,
    Failed,
    /// The loss blew up: final, like `Done` (running it again gives the same result), unless
    /// `--rerun failed`.
    Diverged,
    Interrupted,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::New => "new",
            TrialState::Done => "done",
            TrialState::Failed => "failed",
            TrialState::Diverged => "diverged",
            TrialState::Interrupted => "interrupted",
        }
    }
}

/// A trial's typed artifacts and the state derived from them (the layout above).
pub trait TrialStates {
    /// The trial's `summary.json`; `None` when missing or unreadable.
    async fn summary(&self, id: &str) -> Result<Option<Summary>, StorageError>;
    /// The trial's `attempt.json`; `None` when missing or unreadable.
    async fn attempt(&self, id: &str) -> Result<Option<AttemptRecord>, StorageError>;
    /// The state of a trial, from its `summary.json` and `attempt.json`.
    async fn trial_state(&self, id: &str) -> Result<TrialState, StorageError>;
}

impl TrialStates for Storage {
    async fn summary(&self, id: &str) -> Result<Option<Summary>, StorageError> {
        Ok(self
            .get_json(&format!("trials/{id}/summary.json"))
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn attempt(&self, id: &str) -> Result<Option<AttemptRecord>, StorageError> {
        Ok(self
            .get_json(&format!("trials/{id}/attempt.json"))
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn trial_state(&self, id: &str) -> Result<TrialState, StorageError> {
        if let Some(s) = self.summary(id).await? {
            return Ok(match s.status {
                RunStatus::Completed => TrialState::Done,
                RunStatus::Interrupted => TrialState::Interrupted,
                RunStatus::Diverged => TrialState::Diverged,
                RunStatus::Failed | RunStatus::Running => TrialState::Failed,
            });
        }
        if let Some(a) = self.attempt(id).await? {
            return Ok(if a.status == Ending::Interrupted {
                TrialState::Interrupted
            } else {
                TrialState::Failed
            });
        }
        Ok(TrialState::New)
    }
}
