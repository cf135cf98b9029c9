//! Character features (mixlab's `char_*`): for every token id, the distinct bytes of its text as ids
//! `byte + 1` (0 pads), at most `max_per_token` of them — a `[vocab, max_per_token]` table the model
//! sums embeddings over.
//!
//! Read from `char_features.bin` beside the data (mixlab's format: 256 × int32 header `[magic
//! 20260526, version 1, vocab, char_vocab, max_per_token, ...]`, then uint16 ids), or, when there is
//! none, derived from the dataset's `tokenizer.json` (the byte-level BPE `prepare` writes, byte-level
//! data included), which gives the same table.

use mixsweep_mlx::Array;
use mixsweep_model::config::CharFeatures;
use std::path::{Path, PathBuf};

pub const FILE: &str = "char_features.bin";
const MAGIC: i32 = 20260526;
const HEADER_INTS: usize = 256;

/// The character-id table for a model with character features, from the folder of `first_shard`.
pub fn load(first_shard: &Path, vocab: usize, c: &CharFeatures) -> Result<Array, String> {
    let dir = first_shard.parent().unwrap_or(Path::new("."));
    let file = dir.join(FILE);
    let ids = if file.is_file() {
        read(&file, vocab, c)?
    } else {
        let tok = dir.join("tokenizer.json");
        if !tok.is_file() {
            return Err(format!(
                "the model has character features (char_vocab_size={}) but {} has neither {FILE} nor tokenizer.json \
                 to derive it from (prepare the data with mixsweep-runner prepare, which writes tokenizer.json)",
                c.vocab,
                dir.display()
            ));
        }
        derive(&tok, vocab, c.max_per_token)?
    };
    let ids: Vec<i32> = ids.into_iter().map(i32::from).collect();
    Array::from_i32(&ids, &[vocab, c.max_per_token]).map_err(|e| e.to_string())
}

fn read(path: &Path, vocab: usize, c: &CharFeatures) -> Result<Vec<u16>, String> {
    let err = |m: String| format!("{}: {m}", path.display());
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() < HEADER_INTS * 4 {
        return Err(err("too short for its header".into()));
    }
    let int = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    if int(0) != MAGIC {
        return Err(err(format!(
            "not a char_features file (magic {}, want {MAGIC})",
            int(0)
        )));
    }
    let (v, cv, k) = (int(2) as usize, int(3) as usize, int(4) as usize);
    if v != vocab || cv != c.vocab || k != c.max_per_token {
        return Err(err(format!(
            "written for vocab {v}, char_vocab_size {cv}, char_max_per_token {k}; the config says {vocab}, {}, {}",
            c.vocab, c.max_per_token
        )));
    }
    let payload = &bytes[HEADER_INTS * 4..];
    if payload.len() != v * k * 2 {
        return Err(err(format!(
            "payload has {} bytes, want {}",
            payload.len(),
            v * k * 2
        )));
    }
    let ids: Vec<u16> = payload
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= c.vocab) {
        return Err(err(format!("char id {bad} >= char_vocab_size {}", c.vocab)));
    }
    Ok(ids)
}

/// Each token's distinct bytes + 1, in order of first appearance, from a byte-level tokenizer.
pub fn derive(tokenizer: &Path, vocab: usize, k: usize) -> Result<Vec<u16>, String> {
    let t = tokenizers::Tokenizer::from_file(tokenizer)
        .map_err(|e| format!("{}: {e}", tokenizer.display()))?;
    let reverse = crate::prepare::byte_level_chars();
    let special: std::collections::HashSet<u32> = t
        .get_added_vocabulary()
        .get_vocab()
        .values()
        .copied()
        .collect();
    let mut rows = vec![0u16; vocab * k];
    for (token, id) in t.get_vocab(false) {
        let id = id as usize;
        if id >= vocab || special.contains(&(id as u32)) {
            continue;
        }
        let mut seen = vec![];
        for ch in token.chars() {
            let Some(&b) = reverse.get(&ch) else {
                return Err(format!(
                    "{}: token {token:?} is not byte-level text",
                    tokenizer.display()
                ));
            };
            if !seen.contains(&b) {
                seen.push(b);
            }
            if seen.len() == k {
                break;
            }
        }
        for (j, b) in seen.iter().enumerate() {
            rows[id * k + j] = *b as u16 + 1;
        }
    }
    Ok(rows)
}

/// The table for a run, or `None` when the model has no character features.
pub fn for_model(
    cfg: &mixsweep_model::ModelConfig,
    files: &[PathBuf],
) -> Result<Option<Array>, String> {
    match (&cfg.char_features, files.first()) {
        (Some(c), Some(first)) => load(first, cfg.vocab_size, c).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokens_map_to_their_byte() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tokenizer.json");
        crate::prepare::byte_level_tokenizer()
            .unwrap()
            .save(&tok, false)
            .unwrap();
        let rows = derive(&tok, 256, 4).unwrap();
        for b in [0usize, 65, 200, 255] {
            assert_eq!(
                &rows[b * 4..b * 4 + 4],
                &[b as u16 + 1, 0, 0, 0],
                "byte {b}"
            );
        }
    }
}
