//! Byte-level data preparation: a text file -> `train_00000.bin` / `val_00000.bin` shards (vocab
//! 256, one token per byte), the last `val_split` fraction of the bytes going to validation
//! (mixlab's split rule). Shards are written under a temporary name and renamed, so an interrupted
//! run leaves no half-written shard.

use crate::data::write_shard;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub train_shards: usize,
    pub val_shards: usize,
}

pub fn prepare_bytes(
    input: &Path,
    output: &Path,
    val_split: f64,
    tokens_per_shard: usize,
) -> Result<Prepared, String> {
    if !(0.0..1.0).contains(&val_split) {
        return Err(format!("--val-split {val_split} must be in [0, 1)"));
    }
    if tokens_per_shard == 0 {
        return Err("--tokens-per-shard must be > 0".into());
    }
    let bytes =
        std::fs::read(input).map_err(|e| format!("{}: cannot read: {e}", input.display()))?;
    if bytes.len() < 2 {
        return Err(format!(
            "{}: too small to split ({} bytes)",
            input.display(),
            bytes.len()
        ));
    }
    let n_val = if val_split > 0.0 {
        ((bytes.len() as f64 * val_split) as usize).max(1)
    } else {
        0
    };
    let (train, val) = bytes.split_at(bytes.len() - n_val);
    std::fs::create_dir_all(output)
        .map_err(|e| format!("{}: cannot create: {e}", output.display()))?;
    let write = |prefix: &str, data: &[u8]| -> Result<usize, String> {
        let mut count = 0;
        for (i, chunk) in data.chunks(tokens_per_shard).enumerate() {
            let path = output.join(format!("{prefix}_{i:05}.bin"));
            let tokens: Vec<u16> = chunk.iter().map(|&b| b as u16).collect();
            write_shard(&path, &tokens)
                .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
            count += 1;
        }
        Ok(count)
    };
    let train_shards = write("train", train)?;
    let val_shards = write("val", val)?;
    let manifest = serde_json::json!({
        "format": "mixlab.dataset", "version": 1, "representation": "discrete_tokens",
        "tokenizer": "bytes", "vocab_size": 256, "special_token_ids": {},
        "splits": {"train": {"tokens": train.len(), "shards": train_shards},
                   "val": {"tokens": val.len(), "shards": val_shards}}
    });
    let mpath = output.join("mixlab.dataset.json");
    std::fs::write(
        &mpath,
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .map_err(|e| format!("{}: cannot write: {e}", mpath.display()))?;
    Ok(Prepared {
        train_tokens: train.len(),
        val_tokens: val.len(),
        train_shards,
        val_shards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::read_shard;

    #[test]
    fn bytes_round_trip_with_split() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, b"hello, world! 0123456789").unwrap();
        let out = dir.path().join("out");
        let p = prepare_bytes(&input, &out, 0.25, 10).unwrap();
        assert_eq!((p.train_tokens, p.val_tokens), (18, 6));
        assert_eq!((p.train_shards, p.val_shards), (2, 1));
        let mut all: Vec<u16> = read_shard(&out.join("train_00000.bin")).unwrap();
        all.extend(read_shard(&out.join("train_00001.bin")).unwrap());
        all.extend(read_shard(&out.join("val_00000.bin")).unwrap());
        let text: Vec<u8> = all.iter().map(|&t| t as u8).collect();
        assert_eq!(text, b"hello, world! 0123456789");
        assert!(!std::fs::read_dir(&out).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        }));
    }
}
