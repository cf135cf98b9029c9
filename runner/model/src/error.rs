//! [`ConfigError`]: what is wrong with a config, where (file and JSON path), and how to fix it.

use std::fmt;
use std::path::PathBuf;

/// A config problem. Displayed as `FILE: PATH: MESSAGE (fix: HINT)`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// The config file, when the config came from one.
    pub file: Option<PathBuf>,
    /// JSON path of the offending field, e.g. `blocks[2].kv_heads` (empty for the whole document).
    pub path: String,
    pub message: String,
    /// How to fix it, when there is something specific to say.
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        if self.file.is_none() {
            self.file = Some(file.into());
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (fix: {hint})")?;
        }
        Ok(())
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate to `key`, if it is plausibly a typo. Candidates sharing a word with the key
/// (`lr_warmup` and `warmup_steps` share `warmup`) are preferred over mere edit-distance neighbours.
pub(crate) fn nearest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let words: Vec<&str> = key.split('_').filter(|w| w.len() >= 4).collect();
    let sharing = candidates
        .iter()
        .filter(|c| c.split('_').any(|cw| words.contains(&cw)))
        .min_by_key(|c| edit_distance(key, c));
    if let Some(c) = sharing {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (edit_distance(key, c), *c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
