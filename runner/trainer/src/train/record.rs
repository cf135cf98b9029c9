//! What a run writes about itself: `metrics.jsonl` lines (also on stdout with `--progress-json`),
//! progress lines, and `summary.json`.

use super::{TrainError, io_err};
pub use mixsweep_artifacts::{MetricsRecord, Summary};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let tmp = path.with_extension("json.partial");
    let text = serde_json::to_string_pretty(value).expect("summary serializes");
    std::fs::write(&tmp, text + "\n").map_err(|e| io_err("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("cannot rename", path, e))
}

pub fn format_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Whether step `s` (0-based) of `total` prints a progress line.
pub fn is_log_step(s: usize, total: usize, every: usize) -> bool {
    s == 0 || s + 1 == total || s.is_multiple_of(every) || (s < every && s.is_power_of_two())
}

/// `metrics.jsonl`, flushed line by line (and echoed with `--progress-json`).
pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
    echo: bool,
}

impl Metrics {
    /// A resumed run appends to the metrics of the run it continues.
    pub fn open(path: PathBuf, append: bool, echo: bool) -> Result<Metrics, TrainError> {
        let file = if append {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        } else {
            std::fs::File::create(&path)
        }
        .map_err(|e| io_err("cannot create", &path, e))?;
        Ok(Metrics { path, file, echo })
    }

    pub fn write(&mut self, line: &impl Serialize) -> Result<(), TrainError> {
        let line = serde_json::to_string(line).expect("record serializes");
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| io_err("cannot write", &self.path, e))?;
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|_| out.flush());
        }
        Ok(())
    }
}
