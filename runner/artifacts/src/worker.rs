//! The warm-worker protocol, shared by `mixsweep-runner worker` (which reads jobs and answers) and
//! the orchestrator's local and Docker backends (which send jobs and read answers): one JSON object
//! per line.
//!
//! * A [`Job`] on the worker's stdin: the `train` arguments, and either both log files (the job's
//!   stdout and stderr go there) or neither (they go to the worker's own streams, which a container
//!   engine forwards).
//! * An [`Answer`] on the worker's stdout when the job has ended, carrying the job's `id`.
//! * With streamed output, an end mark ([`end_mark`]) on the worker's stderr after the job's last
//!   stderr line: the engine delivers the two streams independently.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The key of the stderr line that ends a streamed job's standard error.
pub const END_MARK: &str = "mixsweep_worker_end";

/// One trial for a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `train ...`, as for a `mixsweep-runner` process.
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<PathBuf>,
    /// Echoed in the answer and the end mark, so that neither can be mistaken for the job's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The worker's answer: the exit code a `mixsweep-runner train` process would have had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub exit: i32,
    #[serde(default)]
    pub job: Option<String>,
}

impl Answer {
    /// The answer to the job `id` (any job when `id` is `None`), if `line` is one.
    pub fn parse(line: &[u8], id: Option<&str>) -> Option<Answer> {
        let a: Answer = serde_json::from_slice(line).ok()?;
        (id.is_none() || a.job.as_deref() == id).then_some(a)
    }
}

/// The end-mark line (without its newline) for the job `id`.
pub fn end_mark(id: &str) -> String {
    serde_json::json!({ END_MARK: id }).to_string()
}

/// Whether `line` is the end mark of the job `id`.
pub fn is_end_mark(line: &[u8], id: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .is_ok_and(|v| v[END_MARK].as_str() == Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_end_marks_are_recognised_only_for_their_job() {
        let line = br#"{"exit": 2, "job": "t-1"}"#;
        assert_eq!(Answer::parse(line, Some("t-1")).unwrap().exit, 2);
        assert!(Answer::parse(line, Some("t-2")).is_none());
        assert_eq!(Answer::parse(br#"{"exit": 0}"#, None).unwrap().exit, 0);
        // a metrics record is not an answer
        assert!(Answer::parse(br#"{"step": 3, "train_loss": 2.0}"#, None).is_none());
        assert!(is_end_mark(end_mark("t-1").as_bytes(), "t-1"));
        assert!(!is_end_mark(end_mark("t-1").as_bytes(), "t-2"));
        // a local job names its log files; a streamed one does not write the keys at all
        let job = Job {
            args: vec!["train".into()],
            stdout: None,
            stderr: None,
            id: Some("x".into()),
        };
        assert_eq!(
            serde_json::to_string(&job).unwrap(),
            r#"{"args":["train"],"id":"x"}"#
        );
    }
}
