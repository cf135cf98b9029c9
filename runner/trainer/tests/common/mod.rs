//! Helpers for the end-to-end tests: the real binary, data from ../shared, temp configs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mixsweep-runner"))
}

/// `mixsweep-runner train` of `cfg` on CPU for `steps` steps on tiny Shakespeare, into `out`.
pub fn cpu_train(cfg: &Path, out: &Path, steps: &str) -> Command {
    let mut c = runner();
    c.args(["train", "--device", "cpu", "--steps", steps, "--train"])
        .arg(train_glob())
        .arg("--config")
        .arg(cfg)
        .arg("--out")
        .arg(out);
    c
}

/// The names of a summary's start-up phases, in order.
pub fn phase_names(summary: &serde_json::Value) -> Vec<&str> {
    summary["startup"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default()
}

/// Byte-level tiny Shakespeare shards prepared with the real `prepare`, once per build of the runner:
/// in cargo's test temp folder (under `target/`, not the system's), named by the binary's build time,
/// published by an atomic rename so that concurrent test binaries share one copy.
pub fn shakespeare() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let text = root().join("../shared/data/tinyshakespeare/input.txt");
        assert!(
            text.is_file(),
            "tests need {} (CI has ../shared beside the checkout)",
            text.display()
        );
        let built = std::fs::metadata(env!("CARGO_BIN_EXE_mixsweep-runner"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("shakespeare-bytes-{built}"));
        if dir.is_dir() {
            return dir;
        }
        let staging = base.join(format!("shakespeare-bytes-{built}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let out = runner()
            .args(["prepare", "--byte-level", "--input"])
            .arg(&text)
            .arg("--output")
            .arg(&staging)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prepare failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if std::fs::rename(&staging, &dir).is_err() {
            // another test binary published it first
            let _ = std::fs::remove_dir_all(&staging);
        }
        dir
    })
}

pub fn train_glob() -> String {
    format!("{}/train_*.bin", shakespeare().display())
}

/// Reads an example config (JSONC), applies `edit` to its JSON, writes it to `dir/name.json`.
pub fn config_from_example(
    example: &str,
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let src = std::fs::read_to_string(root().join("examples").join(example)).unwrap();
    let mut v = mixsweep_model::json::parse_jsonc(&src).unwrap();
    edit(&mut v);
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    path
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

pub fn metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
