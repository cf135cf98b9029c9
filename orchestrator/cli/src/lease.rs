//! The run lease: at most one `mixsweep run` of a sweep per storage root at a time.
//!
//! `sweeps/<name>/lease.json` holds the owner (user, host, pid, run id, start time) and a heartbeat
//! renewed every [`HEARTBEAT`]. It is created with a conditional write (create-if-absent), so two runs
//! starting together cannot both win. A second run refuses with a message naming the holder, or with
//! `--wait` polls until the lease is free. A lease is stale, and taken over, when its heartbeat is
//! older than [`STALE_AFTER`] or when its owner ran on this host and that process is gone (a run
//! killed with `kill -9`); taking over deletes the stale record and creates a new one conditionally.
//!
//! The heartbeat also watches storage: when renewing fails, [`Lease::storage_ok`] turns false (and
//! true again once a renewal succeeds), and the scheduler stops launching trials meanwhile. When the
//! record no longer names this run (another run took it over after a long storage outage), the lease
//! is lost and nothing new starts.

use crate::storage::Storage;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the holder renews its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A lease whose heartbeat is older than this is abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub run_id: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub started: u64,
    pub heartbeat: u64,
}

impl LeaseRecord {
    fn new(run_id: &str) -> LeaseRecord {
        let now = unix_now();
        LeaseRecord {
            run_id: run_id.into(),
            user: std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into()),
            host: hostname(),
            pid: std::process::id(),
            started: now,
            heartbeat: now,
        }
    }

    /// `user@host pid N, since <age> ago, heartbeat <age> ago`.
    pub fn describe(&self) -> String {
        let now = unix_now();
        format!(
            "{}@{} (pid {}, run {}), started {} ago, last heartbeat {} ago",
            self.user,
            self.host,
            self.pid,
            self.run_id,
            ago(now.saturating_sub(self.started)),
            ago(now.saturating_sub(self.heartbeat)),
        )
    }

    /// Whether the owner is certainly gone: no heartbeat for [`STALE_AFTER`], or a process of this
    /// host that no longer exists.
    pub fn is_stale(&self) -> bool {
        let silent = unix_now().saturating_sub(self.heartbeat) > STALE_AFTER.as_secs();
        let dead_here = self.host == hostname() && !crate::process::alive(self.pid);
        silent || dead_here
    }
}

fn ago(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "sweep {sweep:?} is already being run on this storage by {holder}; wait for it to finish, \
         stop it, or pass --wait to start when it ends"
    )]
    Held { sweep: String, holder: String },
    #[error("cannot take the run lease of sweep {sweep:?} in storage: {source}")]
    Storage {
        sweep: String,
        source: crate::storage::StorageError,
    },
}

/// A held lease; dropped or [`Lease::release`]d when the run ends.
pub struct Lease {
    storage: Storage,
    key: String,
    record: LeaseRecord,
    storage_ok: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease of `sweep`, or fails naming its holder. With `wait`, polls every few seconds
    /// until it is free (calling `on_wait` once with the holder's description).
    pub async fn acquire(
        storage: &Storage,
        sweep: &str,
        run_id: &str,
        wait: bool,
        on_wait: impl Fn(&str),
    ) -> Result<Lease, LeaseError> {
        let key = format!("sweeps/{sweep}/lease.json");
        let err = |source| LeaseError::Storage {
            sweep: sweep.into(),
            source,
        };
        let mut told = false;
        loop {
            let record = LeaseRecord::new(run_id);
            let body = serde_json::to_vec_pretty(&record).expect("lease serializes");
            if storage.put_if_absent(&key, body).await.map_err(err)? {
                return Ok(Self::start(storage.clone(), key, record));
            }
            let holder: Option<LeaseRecord> = storage
                .get_json(&key)
                .await
                .map_err(err)?
                .and_then(|v| serde_json::from_value(v).ok());
            match holder {
                // unreadable or vanished between the two calls: replace it / try again
                None => storage.delete(&key).await.map_err(err)?,
                Some(h) if h.is_stale() => {
                    eprintln!("taking over the abandoned run lease of {}", h.describe());
                    storage.delete(&key).await.map_err(err)?;
                }
                Some(h) if wait => {
                    if !told {
                        on_wait(&h.describe());
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Some(h) => {
                    return Err(LeaseError::Held {
                        sweep: sweep.into(),
                        holder: h.describe(),
                    });
                }
            }
        }
    }

    fn start(storage: Storage, key: String, record: LeaseRecord) -> Lease {
        let storage_ok = Arc::new(AtomicBool::new(true));
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(
            storage.clone(),
            key.clone(),
            record.clone(),
            storage_ok.clone(),
            lost.clone(),
        ));
        Lease {
            storage,
            key,
            record,
            storage_ok,
            lost,
            heartbeat,
        }
    }

    /// Whether the last heartbeat reached storage.
    pub fn storage_ok(&self) -> bool {
        self.storage_ok.load(Ordering::SeqCst)
    }

    /// Whether another run took the lease over (this run must start nothing new).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub fn run_id(&self) -> &str {
        &self.record.run_id
    }

    /// Stops the heartbeat and deletes the record (if it is still this run's).
    pub async fn release(self) {
        self.heartbeat.abort();
        if self.lost() {
            return;
        }
        let _ = self.storage.delete(&self.key).await;
    }
}

async fn heartbeat(
    storage: Storage,
    key: String,
    mut record: LeaseRecord,
    storage_ok: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let current = match storage.get_json(&key).await {
            Ok(v) => v.and_then(|v| serde_json::from_value::<LeaseRecord>(v).ok()),
            Err(_) => {
                storage_ok.store(false, Ordering::SeqCst);
                continue;
            }
        };
        if current.is_some_and(|c| c.run_id != record.run_id) {
            lost.store(true, Ordering::SeqCst);
            storage_ok.store(true, Ordering::SeqCst);
            return;
        }
        record.heartbeat = unix_now();
        let body = serde_json::to_vec_pretty(&record).expect("lease serializes");
        storage_ok.store(storage.put(&key, body).await.is_ok(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap()).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn a_second_run_is_refused_naming_the_holder() {
        let (_d, s) = store();
        let first = Lease::acquire(&s, "sw", "run-a", false, |_| {})
            .await
            .unwrap();
        let Err(e) = Lease::acquire(&s, "sw", "run-b", false, |_| {}).await else {
            panic!("a second lease was granted");
        };
        let msg = e.to_string();
        assert!(msg.contains("run-a") && msg.contains("--wait"), "{msg}");
        first.release().await;
        Lease::acquire(&s, "sw", "run-c", false, |_| {})
            .await
            .expect("free after release")
            .release()
            .await;
    }

    #[tokio::test]
    async fn a_lease_of_a_dead_process_on_this_host_is_taken_over() {
        let (_d, s) = store();
        let mut dead = LeaseRecord::new("run-dead");
        dead.pid = crate::process::dead_pid_for_tests();
        s.put("sweeps/sw/lease.json", serde_json::to_vec(&dead).unwrap())
            .await
            .unwrap();
        let l = Lease::acquire(&s, "sw", "run-new", false, |_| {})
            .await
            .unwrap();
        assert_eq!(l.run_id(), "run-new");
        l.release().await;
    }

    #[tokio::test]
    async fn a_silent_lease_is_stale() {
        let mut r = LeaseRecord::new("x");
        r.host = "elsewhere".into();
        assert!(!r.is_stale());
        r.heartbeat -= STALE_AFTER.as_secs() + 5;
        assert!(r.is_stale());
    }

    #[tokio::test]
    async fn wait_starts_when_the_holder_releases() {
        let (_d, s) = store();
        let first = Lease::acquire(&s, "sw", "run-a", false, |_| {})
            .await
            .unwrap();
        let s2 = s.clone();
        let waiter =
            tokio::spawn(async move { Lease::acquire(&s2, "sw", "run-b", true, |_| {}).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished());
        first.release().await;
        let second = waiter.await.unwrap().unwrap();
        assert_eq!(second.run_id(), "run-b");
        second.release().await;
    }
}
