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
