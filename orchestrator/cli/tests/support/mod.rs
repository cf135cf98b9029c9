//! Helpers shared by the `mixsweep` end-to-end tests (each test file includes this module): paths of
//! the workspace and its binaries, byte-level data made with the real runner, and readers for what a
//! sweep leaves in storage.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The `mixsweep-runner` binary of this workspace's target folder (built by `cargo test --workspace`).
pub fn runner() -> PathBuf {
    let sibling = PathBuf::from(env!("CARGO_BIN_EXE_mixsweep")).with_file_name("mixsweep-runner");
    assert!(
        sibling.is_file(),
        "build the runner first: cargo build -p mixsweep-runner ({})",
        sibling.display()
    );
    sibling
}

/// Byte-level Shakespeare shards in `out`, made with the real runner.
pub fn prepare_bytes(out: &Path) {
    let o = Command::new(runner())
        .args(["prepare", "--byte-level", "--input"])
        .arg(root().join("data/tinyshakespeare/input.txt"))
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A JSON file, parsed (the path in the panic message when it is missing).
pub fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

/// The trial ids of a sweep in a local storage folder, in sweep order.
pub fn trial_ids(storage: &Path, sweep: &str) -> Vec<String> {
    std::fs::read_to_string(storage.join(format!("sweeps/{sweep}/trials.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Waits up to `secs` for `f` to hold; whether it did.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// Every file named `name` anywhere under `dir`.
pub fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(find(&p, name));
            } else if p.file_name().is_some_and(|n| n == name) {
                out.push(p);
            }
        }
    }
    out
}

/// Sends `sig` to process `pid`; whether it was delivered (signal 0: whether the process exists).
pub fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// (worker pid, job number) from the first line a warm worker writes to a trial's stderr.log.
pub fn worker_job(log: &str) -> Option<(u32, u32)> {
    let line = log
        .lines()
        .find(|l| l.starts_with("mixsweep-runner worker "))?;
    let (pid, job) = line
        .trim_start_matches("mixsweep-runner worker ")
        .split_once(": job ")?;
    Some((pid.parse().ok()?, job.parse().ok()?))
}
