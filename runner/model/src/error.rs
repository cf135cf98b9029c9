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

/// The candidate `key` was most likely meant to be, for "did you mean" hints: only a close one
/// (normalised Damerau-Levenshtein similarity >= 0.6, the same words in another order, or a shared
/// distinctive word of 6+ letters as in `lr_warmup` -> `warmup_steps`), never a far one that merely
/// shares a short word (`export_head` is not `head_lr`, `rtd` is not `lr`).
pub fn suggest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let words = |s: &str| {
        let mut w: Vec<String> = s.split(['_', '-', '.']).map(str::to_lowercase).collect();
        w.sort();
        w
    };
    let key_words = words(key);
    if let Some(c) = candidates
        .iter()
        .find(|c| key_words.len() > 1 && words(c) == key_words)
    {
        return Some(c);
    }
    let distinctive: Vec<&String> = key_words.iter().filter(|w| w.len() >= 6).collect();
    if let Some(c) = candidates
        .iter()
        .filter(|c| words(c).iter().any(|w| distinctive.contains(&w)))
        .min_by_key(|c| strsim::damerau_levenshtein(key, c))
    {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(key, c), *c))
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

pub(crate) use suggest as nearest;

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggestions_are_close_or_none() {
        let keys = ["head_lr", "lr", "warmup_steps", "kv_heads", "val_loss"];
        assert_eq!(suggest("export_head", &keys), None);
        assert_eq!(suggest("rtd", &keys), None);
        assert_eq!(suggest("kv_head", &keys), Some("kv_heads"));
        assert_eq!(suggest("val_los", &keys), Some("val_loss"));
        assert_eq!(suggest("steps_warmup", &keys), Some("warmup_steps"));
        assert_eq!(suggest("warmup_step", &keys), Some("warmup_steps"));
        assert_eq!(suggest("lr_warmup", &keys), Some("warmup_steps"));
    }
}
