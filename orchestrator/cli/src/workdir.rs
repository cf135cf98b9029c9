//! Local work folders, and results kept there when storage could not take them.
//!
//! Layout: `<work root>/<storage key>/<sweep>/<run id>/<trial>/` where the work root is
//! `$MIXSWEEP_WORK_DIR`, else `$MIXSWEEP_CACHE/work` (default `~/.cache/mixsweep/work`), the storage
//! key is a hash of the storage root (two runs against different storage never share a folder) and
//! the run id is unique per `mixsweep run`. A trial's folder holds `config.json`, the runner's
//! `out/`, `stdout.log`, `stderr.log`, `runner.pid` while it runs and `attempt.json` once it ended.
//!
//! A folder is deleted once its artifacts are in storage. When storage fails, or the orchestrator
//! dies, the folder stays; the next run of the sweep (holding the lease, so no other run is using
//! it) [`recover`]s every folder of earlier runs: it stops a runner that is still alive, uploads
//! what has a summary, and deletes the rest. A finished trial is never trained again because its
//! upload failed.

use crate::storage::{Storage, StorageError};
use mixsweep_artifacts::{AttemptRecord, Ending, RunStatus, Summary};
use mixsweep_store::RESUME_FILE;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The files of a trial's work folder that go to storage, `summary.json` last (its presence in
/// storage means the trial's artifacts are complete).
const ARTIFACTS: &[&str] = &[
    "out/metrics.jsonl",
    "out/model.safetensors",
    "out/cpu.pb",
    "out/resume.safetensors",
    "stdout.log",
    "stderr.log",
];

pub fn work_root() -> PathBuf {
    std::env::var_os("MIXSWEEP_WORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| mixsweep_store::default_cache_dir().join("work"))
}

/// `<work root>/<storage key>/<sweep>`: every run of this sweep against this storage.
pub fn sweep_dir(storage_root: &str, sweep: &str) -> PathBuf {
    let key = format!("{:x}", Sha256::digest(storage_root.as_bytes()));
    work_root().join(&key[..12]).join(sweep)
}

/// A fresh run id: time and pid, unique on this host.
pub fn new_run_id() -> String {
    format!("{}-{}", crate::lease::unix_now(), std::process::id())
}

/// Uploads a trial's artifacts from its work folder, `attempt.json` and `summary.json` last. With
/// `drop_stale_resume` (a local attempt), a resume point in storage that this attempt did not
/// leave is deleted, so a finished trial is never resumed later.
pub async fn upload(
    storage: &Storage,
    id: &str,
    work: &Path,
    attempt: &AttemptRecord,
    drop_stale_resume: bool,
) -> Result<(), StorageError> {
    for rel in ARTIFACTS {
        let name = Path::new(rel).file_name().unwrap().to_string_lossy();
        storage
            .put_file(&format!("trials/{id}/{name}"), &work.join(rel))
            .await?;
    }
    if drop_stale_resume && !work.join("out").join(RESUME_FILE).exists() {
        storage
            .delete(&format!("trials/{id}/{RESUME_FILE}"))
            .await?;
    }
    storage
        .put(
            &format!("trials/{id}/attempt.json"),
            serde_json::to_vec_pretty(attempt).expect("attempt serializes"),
        )
        .await?;
    storage
        .put_file(
            &format!("trials/{id}/summary.json"),
            &work.join("out/summary.json"),
        )
        .await?;
    Ok(())
}

/// What [`recover`] did.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Trials whose kept results are now in storage.
    pub uploaded: Vec<String>,
    /// Earlier runners that were still running and were stopped.
    pub stopped: Vec<String>,
    /// Folders of Slurm jobs that are still queued or running (left for their trial to adopt).
    pub adoptable: Vec<String>,
}

/// Stores the kept results of earlier runs of this sweep and removes their folders (see the
/// module docs). `current` is this run's id (its folder is left alone). Fails on the first storage
/// error, leaving everything not yet uploaded in place.
pub async fn recover(
    storage: &Storage,
    sweep_dir: &Path,
    current: &str,
) -> Result<Recovered, StorageError> {
    let mut done = Recovered::default();
    let Ok(runs) = std::fs::read_dir(sweep_dir) else {
        return Ok(done);
    };
    for run in runs.flatten() {
        if run.file_name() == current || !run.path().is_dir() {
            continue;
        }
        let Ok(trials) = std::fs::read_dir(run.path()) else {
            continue;
        };
        for trial in trials.flatten() {
            let dir = trial.path();
            let id = trial.file_name().to_string_lossy().into_owned();
            // A Slurm job still queued or running writes here: the trial's next attempt adopts it.
            if let Some(job) = std::fs::read_to_string(dir.join(crate::backend::slurm::JOB_FILE))
                .ok()
                .filter(|j| crate::backend::slurm::job_alive(j.trim()))
            {
                done.adoptable
                    .push(format!("{id} (slurm job {})", job.trim()));
                continue;
            }
            if stop_leftover_runner(&dir).await {
                done.stopped.push(id.clone());
            }
            if let Some(record) = kept_record(&dir) {
                upload(storage, &id, &dir, &record, false).await?;
                done.uploaded.push(id);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_dir(run.path());
    }
    Ok(done)
}

/// The attempt record of a kept folder: its `attempt.json` (an upload that failed), else one made
/// from the runner's summary (an orchestrator that died while the runner ran); `None` when the
/// runner left no summary (nothing worth keeping).
fn kept_record(dir: &Path) -> Option<AttemptRecord> {
    let summary: Summary =
        serde_json::from_slice(&std::fs::read(dir.join("out/summary.json")).ok()?).ok()?;
    let kept = std::fs::read(dir.join("attempt.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<AttemptRecord>(&b).ok());
    Some(kept.unwrap_or_else(|| {
        AttemptRecord {
            trial: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            status: match summary.status {
                RunStatus::Completed => Ending::Completed,
                RunStatus::Diverged => Ending::Diverged,
                RunStatus::Interrupted => Ending::Interrupted,
                RunStatus::Failed | RunStatus::Running => Ending::Failed,
            },
            attempt: 0,
            error: summary.error.clone(),
            stderr_tail: String::new(),
            exit_code: None,
            backend: String::new(),
            recovered: Some(
                "the orchestrator of this attempt exited before storing its results".into(),
            ),
            started_at: None,
            ended_at: None,
            slot: None,
        }
    }))
}

/// Stops a runner of an earlier run that is still alive in `dir` (its orchestrator died and the
/// runner did not notice yet): SIGINT, then up to 60 s for it to write its resume point.
async fn stop_leftover_runner(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join("runner.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return false;
    };
    if !crate::process::is_runner(pid) {
        return false;
    }
    eprintln!(
        "a runner of an earlier run (pid {pid}) is still training in {}; stopping it",
        dir.display()
    );
    crate::process::signal_group(pid, libc::SIGINT);
    for _ in 0..600 {
        if !crate::process::alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::process::signal_group(pid, libc::SIGKILL);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_results_are_uploaded_and_empty_attempts_dropped() {
        let store_dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(store_dir.path().to_str().unwrap()).unwrap();
        let work = tempfile::tempdir().unwrap();
        let kept = work.path().join("1-1/aaaa");
        std::fs::create_dir_all(kept.join("out")).unwrap();
        std::fs::write(kept.join("out/summary.json"), br#"{"status":"completed"}"#).unwrap();
        std::fs::write(kept.join("out/metrics.jsonl"), b"{\"step\":0}\n").unwrap();
        std::fs::write(kept.join("attempt.json"), br#"{"status":"completed"}"#).unwrap();
        let empty = work.path().join("1-1/bbbb");
        std::fs::create_dir_all(empty.join("out")).unwrap();
        let mine = work.path().join("2-2/cccc");
        std::fs::create_dir_all(&mine).unwrap();

        let r = recover(&storage, work.path(), "2-2").await.unwrap();
        assert_eq!(r.uploaded, vec!["aaaa".to_string()]);
        assert!(
            storage
                .get("trials/aaaa/summary.json")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            storage
                .get("trials/aaaa/metrics.jsonl")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            storage
                .get("trials/bbbb/summary.json")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !work.path().join("1-1").exists(),
            "recovered run folder removed"
        );
        assert!(mine.exists(), "the current run's folder is left alone");
    }

    #[test]
    fn storage_roots_get_different_folders() {
        assert_ne!(sweep_dir("s3://a/x", "sw"), sweep_dir("s3://a/y", "sw"));
        assert!(sweep_dir("/tmp/x", "sw").ends_with("sw"));
    }
}
