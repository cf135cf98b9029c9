//! # mixsweep-sweep: sweep files -> trials
//!
//! Owns the meaning of a sweep file (see `docs/sweeps.md`): parsing the YAML ([`spec`]), parameter
//! paths into model JSON ([`path`]), tie expressions ([`expr`]), expansion into validated trials
//! ([`expand`]) and trial identity: a trial id is a content hash of the canonical config JSON, the
//! data identity, the seed and the runner version, so the same trial has the same id in every sweep,
//! on every machine, whatever the key order of the files.
//!
//! Free of MLX and of any I/O beyond reading the sweep, its configs and its data files.

mod checks;
pub mod expand;
pub mod expr;
pub mod path;
pub mod points;
pub mod spec;
mod trial;

pub use expand::{Skipped, Sweep, expand, expand_with_progress};
pub use spec::SweepSpec;
pub use trial::{BUDGET_KEY, Trial, TrialId};

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

/// Line and column (1-based) of `needle` in `src`: where it is written as a YAML key (`needle:` at
/// the start of a line, possibly after `- `), else its first occurrence as a whole word, else its
/// first occurrence at all.
fn locate(src: &str, needle: &str) -> Option<(usize, usize)> {
    let position = |at: usize| {
        let line = src[..at].matches('\n').count() + 1;
        let col = at - src[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    };
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").map(str::trim_start).unwrap_or(body);
        if let Some(rest) = body.strip_prefix(needle)
            && rest.trim_start().starts_with(':')
        {
            return Some(position(offset + (line.len() - body.len())));
        }
        offset += line.len();
    }
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    src.match_indices(needle)
        .find(|(at, _)| {
            let before = src[..*at].chars().next_back();
            let after = src[at + needle.len()..].chars().next();
            !before.is_some_and(word) && !after.is_some_and(word)
        })
        .or_else(|| src.match_indices(needle).next())
        .map(|(at, _)| position(at))
}

/// Parses a sweep file's text without expanding it (no config or data files are read).
pub fn parse_spec(src: &str) -> Result<SweepSpec, String> {
    serde_saphyr::from_str(src).map_err(|e| e.to_string())
}

/// Reads, parses and expands a sweep file.
pub fn load(file: &Path) -> Result<Sweep, SweepError> {
    load_with_progress(file, &|_, _| {})
}

/// [`load`], reporting `(points done, points in all)` while expanding (see [`expand_with_progress`]).
pub fn load_with_progress(
    file: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Sweep, SweepError> {
    let src = std::fs::read_to_string(file).map_err(|e| SweepError {
        file: file.display().to_string(),
        location: None,
        message: format!("cannot read the sweep file: {e}"),
    })?;
    let spec: SweepSpec = serde_saphyr::from_str(&src).map_err(|e| yaml_error(file, &src, &e))?;
    expand_with_progress(spec, file, &src, progress)
}

/// A YAML or schema error of the sweep file in the sweep's own terms: the key at the error's line
/// and what that key needs, instead of the parser's vocabulary (`expected sequence start`, `invalid
/// u64`, `untagged enum MetricSpec`, `DuplicateKeyPolicy`).
fn yaml_error(file: &Path, src: &str, e: &serde_saphyr::Error) -> SweepError {
    let location = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .filter(|(l, _)| *l > 0);
    let raw = e.without_snippet().to_string();
    let raw = raw.lines().next().unwrap_or_default().trim();
    let raw = raw.strip_prefix("error: ").unwrap_or(raw);
    // drop the parser's own "line N column M: " prefix
    let raw = match raw.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest,
        _ => raw,
    };
    let line_text = location
        .and_then(|(l, _)| src.lines().nth(l - 1))
        .unwrap_or_default();
    let key = line_text
        .trim_start()
        .trim_start_matches("- ")
        .split_once(':')
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.is_empty() && !k.contains(' '));
    let what = key
        .as_deref()
        .map(|k| format!("`{k}`: "))
        .unwrap_or_default();
    let message = if raw.contains("expected sequence start") {
        format!("{what}expected a list, e.g. [1, 2, 3] or one `- item` per line")
    } else if raw.contains("expected mapping start") {
        format!("{what}expected a mapping (indented `key: value` lines)")
    } else if let Some(t) = ["u64", "usize", "u32", "i64", "i32"]
        .iter()
        .find(|t| raw.contains(&format!("invalid {t}")))
    {
        let _ = t;
        format!("{what}expected a whole number")
    } else if raw.contains("invalid f64") {
        format!("{what}expected a number")
    } else if raw.contains("MetricSpec") {
        format!("{what}expected a metric name (e.g. val_loss) or {{name: val_loss, goal: min|max}}")
    } else if raw.contains("GpuSpec") {
        format!("{what}expected `all`, a number of GPUs, or a list of GPU ids like [0, 1]")
    } else if raw.contains("Distribution") {
        format!(
            "{what}expected one of choice: [..], uniform: [lo, hi], log_uniform: [lo, hi], int_uniform: [lo, hi]"
        )
    } else if raw.contains("duplicate mapping key") {
        format!(
            "{what}this key is written twice in the same mapping; keep one (YAML would silently use the last)"
        )
    } else if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<&str> = expected
            .trim_start_matches(", expected one of ")
            .split(", ")
            .map(|k| k.trim_matches('`'))
            .filter(|k| !k.is_empty())
            .collect();
        match mixsweep_model::error::suggest(name, &valid) {
            Some(s) => format!("unknown key `{name}`: did you mean `{s}`?"),
            None if !valid.is_empty() => {
                format!(
                    "unknown key `{name}` (valid keys here: {})",
                    valid.join(", ")
                )
            }
            None => format!("unknown key `{name}`"),
        }
    } else if raw.starts_with("missing field") {
        raw.replace("missing field", "missing required key")
    } else {
        format!("{what}{raw}")
    };
    let snippet = location
        .map(|(l, c)| {
            format!(
                "\n  {l} | {line_text}\n  {} | {}^",
                " ".repeat(l.to_string().len()),
                " ".repeat(c.saturating_sub(1))
            )
        })
        .unwrap_or_default();
    SweepError {
        file: file.display().to_string(),
        location,
        message: message + &snippet,
    }
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

/// The trial id: 16 hex digits of SHA-256 over the canonical JSON (sorted keys, no whitespace) of
/// `{"config": CONFIG, "data": DATA IDENTITY, "runner": RUNNER VERSION, "seed": SEED}`, streamed into
/// the hash (no copy of the config is made).
pub fn trial_id(config: &serde_json::Value, data_identity: &str, seed: u64) -> TrialId {
    struct Hasher(Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hasher(Sha256::new());
    let text = |h: &mut Hasher, v: &dyn erased::Json| v.write_to(h);
    h.0.update(b"{\"config\":");
    text(&mut h, config);
    h.0.update(b",\"data\":");
    text(&mut h, &data_identity);
    h.0.update(b",\"runner\":");
    text(&mut h, &mixsweep_model::RUNNER_VERSION);
    h.0.update(format!(",\"seed\":{seed}}}").as_bytes());
    TrialId::from_hex(&format!("{:x}", h.0.finalize())[..16])
}

/// Serialising a value or a string into the id hash.
mod erased {
    pub trait Json {
        fn write_to(&self, w: &mut dyn std::io::Write);
    }
    impl Json for serde_json::Value {
        fn write_to(&self, w: &mut dyn std::io::Write) {
            serde_json::to_writer(w, self).expect("JSON serializes");
        }
    }
    impl Json for &str {
        fn write_to(&self, w: &mut dyn std::io::Write) {
            serde_json::to_writer(w, self).expect("JSON serializes");
        }
    }
}

#[cfg(test)]
mod id_tests {
    /// The streamed id equals SHA-256 of the documented canonical document.
    #[test]
    fn trial_id_hashes_the_canonical_document() {
        use sha2::Digest;
        let config = serde_json::json!({"b": [1, 2.5, "x"], "a": {"z": null, "y": true}});
        let doc = serde_json::json!({"config": config, "data": "d1", "seed": 7,
            "runner": mixsweep_model::RUNNER_VERSION});
        let want = format!(
            "{:x}",
            sha2::Sha256::digest(mixsweep_model::config::canonical_json(&doc).as_bytes())
        );
        assert_eq!(super::trial_id(&config, "d1", 7), &want[..16]);
    }
}

#[cfg(test)]
mod packing_tests {
    use crate::spec::{AutoPacking, TrialsPerGpu};

    fn parse(v: &str) -> Result<Option<TrialsPerGpu>, String> {
        crate::parse_spec(&format!("name: x\nbase: a.json\ntrials_per_gpu: {v}\n"))
            .map(|s| s.trials_per_gpu)
    }

    #[test]
    fn trials_per_gpu_is_a_number_or_auto() {
        assert_eq!(parse("3").unwrap(), Some(TrialsPerGpu::Fixed(3)));
        assert_eq!(
            parse("auto").unwrap(),
            Some(TrialsPerGpu::Auto(AutoPacking::Auto))
        );
        let e = parse("fast").unwrap_err();
        assert!(
            e.contains("a number (1, 2, ...) or `auto`, not \"fast\""),
            "{e}"
        );
        assert!(parse("-1").is_err());
    }
}
