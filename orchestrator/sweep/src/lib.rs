//! # mixsweep-sweep: sweep files -> trials
//!
//! Owns the meaning of a sweep file (see `docs/sweeps.md`): parsing the YAML ([`spec`]), parameter
//! paths into model JSON ([`path`]), tie expressions ([`expr`]), expansion into validated trials
//! ([`expand`]) and trial identity: a trial id is a content hash of the canonical config JSON, the
//! data identity, the seed and the runner version, so the same trial has the same id in every sweep,
//! on every machine, whatever the key order of the files.
//!
//! Free of MLX and of any I/O beyond reading the sweep, its configs and its data files.

pub mod expand;
pub mod expr;
pub mod path;
pub mod spec;

pub use expand::{Skipped, Sweep, Trial, expand};
pub use spec::SweepSpec;

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A sweep-file problem, with its location when known.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct SweepError {
    pub file: String,
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl SweepError {
    /// An error about `key`, located at the key's first occurrence in the YAML source.
    pub fn at(file: &Path, src: &str, key: &str, message: String) -> SweepError {
        SweepError {
            file: file.display().to_string(),
            location: locate(src, key),
            message,
        }
    }
}

/// Line and column (1-based) of the first occurrence of `needle` in `src`.
fn locate(src: &str, needle: &str) -> Option<(usize, usize)> {
    let at = src.find(needle)?;
    let line = src[..at].matches('\n').count() + 1;
    let col = at - src[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, col))
}

/// Parses a sweep file's text without expanding it (no config or data files are read).
pub fn parse_spec(src: &str) -> Result<SweepSpec, String> {
    serde_saphyr::from_str(src).map_err(|e| e.to_string())
}

/// Reads, parses and expands a sweep file.
pub fn load(file: &Path) -> Result<Sweep, SweepError> {
    let src = std::fs::read_to_string(file).map_err(|e| SweepError {
        file: file.display().to_string(),
        location: None,
        message: format!("cannot read the sweep file: {e}"),
    })?;
    let spec: SweepSpec = serde_saphyr::from_str(&src).map_err(|e| SweepError {
        file: file.display().to_string(),
        location: None,
        message: format!("invalid sweep file:\n{e}"),
    })?;
    expand(spec, file, &src)
}

/// Identity of a data set: for local globs, the sorted file names and sizes plus either the
/// `mixlab.dataset.json` manifest beside the shards or, without one, a SHA-256 of every file's content.
/// Object-store URLs are identified by the URL and the listed objects' keys, sizes and ETags (so a URL
/// whose objects changed gives new trial ids; a URL that matches nothing fails the plan).
pub fn data_identity(train: &str, val: Option<&str>) -> Result<String, String> {
    let mut h = Sha256::new();
    for (label, pattern) in [("train", Some(train)), ("val", val)] {
        let Some(pattern) = pattern else { continue };
        h.update(label.as_bytes());
        if mixsweep_store::is_url(pattern) {
            // On a thread of its own: the caller may already be inside an async runtime.
            let id = std::thread::scope(|s| {
                s.spawn(|| mixsweep_store::block_on(mixsweep_store::identity(pattern)))
                    .join()
                    .expect("identity thread")
            })
            .map_err(|e| format!("{label} data {pattern}: {e}"))?;
            h.update(id.as_bytes());
            continue;
        }
        let mut files: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| format!("invalid {label} glob {pattern:?}: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!(
                "{label} data {pattern:?} matches no files (prepare it first, e.g. `mixsweep-runner prepare --byte-level --input TEXT --output DIR`)"
            ));
        }
        let manifest = files[0]
            .parent()
            .map(|d| d.join("mixlab.dataset.json"))
            .filter(|m| m.is_file());
        if let Some(m) = &manifest {
            h.update(std::fs::read(m).map_err(|e| format!("{}: {e}", m.display()))?);
        }
        for f in &files {
            h.update(
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update(
                std::fs::metadata(f)
                    .map_err(|e| format!("{}: {e}", f.display()))?
                    .len()
                    .to_le_bytes(),
            );
            if manifest.is_none() {
                let mut file =
                    std::fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file
                        .read(&mut buf)
                        .map_err(|e| format!("{}: {e}", f.display()))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The trial id: 16 hex digits of SHA-256 over the canonical config, data identity, seed and runner version.
pub fn trial_id(config: &serde_json::Value, data_identity: &str, seed: u64) -> String {
    let doc = serde_json::json!({
        "config": config,
        "data": data_identity,
        "seed": seed,
        "runner": mixsweep_model::RUNNER_VERSION,
    });
    let digest = Sha256::digest(mixsweep_model::config::canonical_json(&doc).as_bytes());
    format!("{digest:x}")[..16].to_string()
}
