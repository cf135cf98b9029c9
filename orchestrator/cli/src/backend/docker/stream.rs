//! Following a running container: its output into the trial's `stdout.log`/`stderr.log` and the live
//! view, and Ctrl-C or the sweep's timeout into signals. Shared by trial containers and warm worker
//! containers (whose answer line and end mark are taken out of the logs here).

use super::DockerBackend;
use crate::backend::AttemptCtx;
use crate::backend::AttemptEnd;
use crate::backend::stopping::{Signal, StopClock};
use bollard::container::LogOutput;
use futures::{Stream, StreamExt};
use mixsweep_artifacts::worker;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// A trial's log files, written line by line as the engine delivers output.
pub struct TrialLogs {
    stdout: File,
    stderr: File,
    out_partial: Vec<u8>,
    err_partial: Vec<u8>,
    /// The worker job this output belongs to: its answer and end mark are recognised by this id.
    job: Option<String>,
    /// The exit code the worker answered for the job.
    pub answer: Option<i32>,
    /// The worker's end mark on stderr has arrived.
    pub stderr_done: bool,
}

impl TrialLogs {
    /// Creates (truncates) `stdout.log` and `stderr.log` in the work folder; a failure is the
    /// attempt's end (a trial whose logs cannot be kept does not start).
    pub fn create(work: &Path) -> Result<TrialLogs, AttemptEnd> {
        let open = |name: &str| {
            File::create(work.join(name)).map_err(|e| {
                AttemptEnd::engine(
                    format!("creating the log files in {}: {e}", work.display()),
                    true,
                )
            })
        };
        Ok(TrialLogs {
            stdout: open("stdout.log")?,
            stderr: open("stderr.log")?,
            out_partial: vec![],
            err_partial: vec![],
            job: None,
            answer: None,
            stderr_done: false,
        })
    }

    /// Output from here on belongs to the worker job `id`.
    pub fn expect_job(&mut self, id: &str) {
        self.job = Some(id.to_string());
    }

    fn lines(partial: &mut Vec<u8>, bytes: &[u8]) -> Vec<Vec<u8>> {
        partial.extend_from_slice(bytes);
        let mut out = vec![];
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            out.push(partial.drain(..=i).collect());
        }
        out
    }

    /// Standard output: metrics records go to the live view; a worker's answer is kept, not logged.
    pub fn stdout(&mut self, bytes: &[u8], on_metrics: &(dyn Fn(&serde_json::Value) + Sync)) {
        for line in Self::lines(&mut self.out_partial, bytes) {
            if let Some(job) = &self.job
                && let Some(a) = worker::Answer::parse(&line, Some(job))
            {
                self.answer = Some(a.exit);
                continue;
            }
            let _ = self.stdout.write_all(&line);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                on_metrics(&v);
            }
        }
    }

    /// Standard error; a worker's end mark is recognised, not logged.
    pub fn stderr(&mut self, bytes: &[u8]) {
        for line in Self::lines(&mut self.err_partial, bytes) {
            if let Some(job) = &self.job
                && worker::is_end_mark(&line, job)
            {
                self.stderr_done = true;
                continue;
            }
            let _ = self.stderr.write_all(&line);
        }
    }

    /// Writes what is left of unterminated lines.
    pub fn finish(&mut self) {
        let _ = self
            .stdout
            .write_all(&std::mem::take(&mut self.out_partial));
        let _ = self
            .stderr
            .write_all(&std::mem::take(&mut self.err_partial));
    }
}

/// Passes a container's output to the trial's logs and the live view until `complete(logs)` holds
/// (checked on every output item and tick) or the output ends, while `stopper` watches for Ctrl-C and
/// the timeout.
pub async fn pump(
    backend: &DockerBackend,
    name: &str,
    output: &mut (impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin),
    logs: &mut TrialLogs,
    stopper: &mut Stopper<'_>,
    ctx: &AttemptCtx<'_>,
    mut complete: impl FnMut(&TrialLogs) -> bool,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !complete(logs) {
        tokio::select! {
            item = output.next() => match item {
                Some(Ok(LogOutput::StdOut { message })) => logs.stdout(&message, ctx.on_metrics),
                Some(Ok(LogOutput::StdErr { message })) => logs.stderr(&message),
                Some(Ok(_)) => {}
                // the output ends when the container stops
                Some(Err(_)) | None => return,
            },
            _ = tick.tick() => stopper.check(backend, name).await,
        }
    }
}

/// The shared stopping policy ([`StopClock`]) for a container: SIGINT, then SIGKILL.
pub struct Stopper<'a> {
    clock: StopClock<'a>,
}

impl<'a> Stopper<'a> {
    pub fn new(ctx: &AttemptCtx<'a>) -> Stopper<'a> {
        Stopper {
            clock: StopClock::new(ctx),
        }
    }

    /// Ctrl-C or the timeout asked the container to stop.
    pub fn interrupted(&self) -> bool {
        self.clock.interrupted
    }

    /// The timeout did.
    pub fn timed_out(&self) -> bool {
        self.clock.timed_out
    }

    /// Called on every tick while the container runs.
    pub async fn check(&mut self, backend: &DockerBackend, name: &str) {
        match self.clock.due() {
            Some(Signal::Interrupt) => backend.signal(name, "SIGINT").await,
            Some(Signal::Kill) => backend.signal(name, "SIGKILL").await,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_answer_and_end_mark_are_recognised_across_chunks_and_not_logged() {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = TrialLogs::create(dir.path()).unwrap();
        logs.expect_job("t1-7");
        let seen = std::sync::Mutex::new(vec![]);
        let on = |v: &serde_json::Value| seen.lock().unwrap().push(v.clone());
        logs.stdout(
            b"{\"step\": 1, \"train_loss\": 3.5}\n{\"exit\": 0, \"jo",
            &on,
        );
        assert!(logs.answer.is_none());
        // another job's answer is output like any other line
        logs.stdout(
            b"b\": \"t1-7\"}\n{\"exit\": 1, \"job\": \"other\"}\npartial",
            &on,
        );
        assert_eq!(logs.answer, Some(0));
        logs.stderr(b"step 1\n{\"mixsweep_worker_end\": \"t1-7\"}\n");
        assert!(logs.stderr_done);
        logs.finish();
        let out = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
        assert_eq!(
            out,
            "{\"step\": 1, \"train_loss\": 3.5}\n{\"exit\": 1, \"job\": \"other\"}\npartial"
        );
        let err = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
        assert_eq!(err, "step 1\n");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0]["train_loss"], 3.5);
    }
}
