//! Token data: `mixlab_token_shard_v1` shards (256 × int32 LE header: magic 20240520, version 1,
//! token count; then uint16 tokens), shard globs, the train -> val name rule, batch sampling, and a
//! device-resident copy of the training stream from which each step's batch is gathered.
//!
//! Batches: row `r` of step `s` starts at a uniform random offset drawn from SplitMix64 seeded with
//! `derive(seed, s)` over the concatenated token stream (targets are the next tokens). Deterministic
//! per (seed, step), so a step's batch does not depend on what ran before it. Validation uses
//! `val_batches` fixed batches whose rows are evenly spaced over the validation stream.

use crate::rng::{SplitMix64, derive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SHARD_MAGIC: i32 = 20240520;
pub const SHARD_VERSION: i32 = 1;
pub const HEADER_BYTES: usize = 256 * 4;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "--{flag} {pattern:?} matches no files (check the path; shards are named like train_00000.bin)"
    )]
    NoMatch { flag: &'static str, pattern: String },
    #[error("invalid glob {pattern:?}: {message}")]
    BadGlob { pattern: String, message: String },
    #[error("{path}: {message}")]
    Shard { path: PathBuf, message: String },
    #[error(
        "{path}: token id {token} at position {position} is >= vocab_size {vocab} (the shards were prepared with a larger vocabulary; set vocab_size to at least {needed} in the config or re-prepare the data)"
    )]
    TokenOutOfRange {
        path: PathBuf,
        token: u16,
        position: usize,
        vocab: usize,
        needed: usize,
    },
    /// Object storage could not be reached or read (a runtime failure: worth a retry).
    #[error("--{flag} {url}: {message}")]
    Remote {
        flag: &'static str,
        url: String,
        message: String,
    },
    #[error("{what}: {tokens} tokens is too few for one sequence of seq_len {seq_len} (+1 target)")]
    TooShort {
        what: String,
        tokens: usize,
        seq_len: usize,
    },
}

/// Reads one shard, validating header and size.
pub fn read_shard(path: &Path) -> Result<Vec<u16>, DataError> {
    let err = |message: String| DataError::Shard {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() < HEADER_BYTES {
        return Err(err(format!(
            "truncated: {} bytes is shorter than the 1024-byte header",
            bytes.len()
        )));
    }
    let word = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    if word(0) != SHARD_MAGIC {
        return Err(err(format!(
            "not a mixlab_token_shard_v1 file (magic {} instead of {SHARD_MAGIC}); prepare data with `mixsweep-runner prepare`",
            word(0)
        )));
    }
    if word(1) != SHARD_VERSION {
        return Err(err(format!(
            "unsupported shard version {} (expected {SHARD_VERSION})",
            word(1)
        )));
    }
    let count = word(2);
    if count < 0 {
        return Err(err(format!("negative token count {count} in header")));
    }
    let expected = HEADER_BYTES + 2 * count as usize;
    if bytes.len() != expected {
        return Err(err(format!(
            "size mismatch: header says {count} tokens ({expected} bytes) but the file has {} bytes (truncated or corrupt; re-run prepare)",
            bytes.len()
        )));
    }
    Ok(bytes[HEADER_BYTES..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect())
}

/// Writes one shard atomically (temp file + rename).
pub fn write_shard(path: &Path, tokens: &[u16]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(HEADER_BYTES + 2 * tokens.len());
    let mut header = [0i32; 256];
    header[0] = SHARD_MAGIC;
    header[1] = SHARD_VERSION;
    header[2] =
        i32::try_from(tokens.len()).map_err(|_| std::io::Error::other("shard too large"))?;
    for w in header {
        buf.extend_from_slice(&w.to_le_bytes());
    }
    for t in tokens {
        buf.extend_from_slice(&t.to_le_bytes());
    }
    let tmp = path.with_extension("bin.partial");
    std::fs::write(&tmp, &buf)?;
    std::fs::rename(&tmp, path)
}

/// Files matching a glob, sorted.
/// The shard files a `--train`/`--val` argument names: a local glob, or an object-store URL with a glob in
/// its file name (`s3://bucket/data/train_*.bin`, `gs://...`, `file://...`), downloaded once into the
/// cache ([`mixsweep_store::default_cache_dir`], `MIXSWEEP_CACHE` to move it).
pub fn resolve_files(pattern: &str, flag: &'static str) -> Result<Vec<PathBuf>, DataError> {
    if !mixsweep_store::is_url(pattern) {
        return expand_glob(pattern, flag);
    }
    let cache = mixsweep_store::default_cache_dir();
    mixsweep_store::block_on(mixsweep_store::fetch(pattern, &cache)).map_err(|e| {
        let message = e.to_string();
        if message.contains("matches no objects") {
            DataError::NoMatch {
                flag,
                pattern: pattern.into(),
            }
        } else {
            DataError::Remote {
                flag,
                url: pattern.into(),
                message,
            }
        }
    })
}

pub fn expand_glob(pattern: &str, flag: &'static str) -> Result<Vec<PathBuf>, DataError> {
    let paths = glob::glob(pattern).map_err(|e| DataError::BadGlob {
        pattern: pattern.into(),
        message: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::NoMatch {
            flag,
            pattern: pattern.into(),
        });
    }
    Ok(files)
}

/// mixlab's train -> val rule (shared with the orchestrator, which mounts the validation folder).
pub use mixsweep_store::derive_val_glob;

/// A token stream loaded from shards, with every id checked against the vocabulary.
#[derive(Debug, Clone)]
pub struct TokenStream {
    pub tokens: Arc<Vec<u16>>,
    pub files: Vec<PathBuf>,
}

impl TokenStream {
    pub fn load(files: Vec<PathBuf>, vocab_size: usize) -> Result<TokenStream, DataError> {
        let mut tokens = Vec::new();
        for path in &files {
            let shard = read_shard(path)?;
            if let Some((position, &token)) = shard
                .iter()
                .enumerate()
                .find(|(_, t)| **t as usize >= vocab_size)
            {
                let needed = *shard.iter().max().unwrap() as usize + 1;
                return Err(DataError::TokenOutOfRange {
                    path: path.clone(),
                    token,
                    position,
                    vocab: vocab_size,
                    needed,
                });
            }
            tokens.extend_from_slice(&shard);
        }
        Ok(TokenStream {
            tokens: Arc::new(tokens),
            files,
        })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// One batch on the host: `tokens` and `targets`, both `[batch, seq_len]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub tokens: Vec<i32>,
    pub targets: Vec<i32>,
}

fn batch_at(stream: &[u16], offsets: &[usize], seq_len: usize) -> HostBatch {
    let mut tokens = Vec::with_capacity(offsets.len() * seq_len);
    let mut targets = Vec::with_capacity(offsets.len() * seq_len);
    for &o in offsets {
        tokens.extend(stream[o..o + seq_len].iter().map(|&t| t as i32));
        targets.extend(stream[o + 1..o + seq_len + 1].iter().map(|&t| t as i32));
    }
    HostBatch { tokens, targets }
}

/// Row offsets of training step `step`.
pub fn train_offsets(
    seed: u64,
    step: usize,
    stream_len: usize,
    batch: usize,
    seq_len: usize,
) -> Vec<usize> {
    let positions = (stream_len - seq_len) as u64; // valid starts: 0 ..= len - seq_len - 1
    let mut rng = SplitMix64::new(derive(seed, step as u64));
    (0..batch)
        .map(|_| (rng.next_u64() % positions) as usize)
        .collect()
}

pub fn train_batch(
    stream: &TokenStream,
    seed: u64,
    step: usize,
    batch: usize,
    seq_len: usize,
) -> HostBatch {
    batch_at(
        &stream.tokens,
        &train_offsets(seed, step, stream.len(), batch, seq_len),
        seq_len,
    )
}

/// The fixed validation batches: rows evenly spaced over the stream.
pub fn validation_batches(
    stream: &TokenStream,
    batches: usize,
    batch: usize,
    seq_len: usize,
) -> Vec<HostBatch> {
    let rows = batches * batch;
    let last = stream.len() - seq_len - 1;
    let offsets: Vec<usize> = (0..rows)
        .map(|r| if rows == 1 { 0 } else { r * last / (rows - 1) })
        .collect();
    offsets
        .chunks(batch)
        .map(|o| batch_at(&stream.tokens, o, seq_len))
        .collect()
}

pub fn check_length(stream: &TokenStream, what: &str, seq_len: usize) -> Result<(), DataError> {
    if stream.len() < seq_len + 1 {
        return Err(DataError::TooShort {
            what: what.into(),
            tokens: stream.len(),
            seq_len,
        });
    }
    Ok(())
}

/// The training token stream on the device. A step's batch is gathered there from its row offsets,
/// so the host uploads `batch` integers per step instead of the tokens (per-step host->device copies
/// of whole batches stalled MLX's CUDA pipeline: 2.4x slower steps at the benchmark shape).
pub struct DeviceStream {
    tokens: mixsweep_mlx::Array,
    window: mixsweep_mlx::Array,
    seq_len: usize,
}

impl DeviceStream {
    pub fn upload(stream: &TokenStream, seq_len: usize) -> mixsweep_mlx::Result<DeviceStream> {
        use mixsweep_mlx::{Array, Dtype};
        let tokens = Array::from_u16(&stream.tokens, &[stream.len()])?;
        let window = Array::arange(0.0, (seq_len + 1) as f64, 1.0, Dtype::I32)?
            .reshape(&[1, seq_len as i32 + 1])?;
        mixsweep_mlx::eval(&[&tokens, &window])?;
        Ok(DeviceStream {
            tokens,
            window,
            seq_len,
        })
    }

    /// `(tokens, targets)`, each `[rows, seq_len]` int32, for rows starting at `offsets`.
    pub fn batch(
        &self,
        offsets: &[usize],
    ) -> mixsweep_mlx::Result<(mixsweep_mlx::Array, mixsweep_mlx::Array)> {
        use mixsweep_mlx::{Array, Dtype};
        let rows = offsets.len();
        let o: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
        let idx = Array::from_i32(&o, &[rows, 1])?.add(&self.window)?;
        let w = self.tokens.take(&idx, 0)?.astype(Dtype::I32)?;
        Ok((
            w.slice_axis(1, 0, self.seq_len)?,
            w.slice_axis(1, 1, self.seq_len + 1)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train_00000.bin");
        write_shard(&p, &[1, 2, 300, 65535]).unwrap();
        assert_eq!(read_shard(&p).unwrap(), vec![1, 2, 300, 65535]);
        // truncated payload
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = read_shard(&p).unwrap_err().to_string();
        assert!(e.contains("size mismatch"), "{e}");
        // bad magic
        let mut bad = bytes.clone();
        bad[0] = 0;
        std::fs::write(&p, &bad).unwrap();
        assert!(read_shard(&p).unwrap_err().to_string().contains("magic"));
        std::fs::write(&p, [0u8; 10]).unwrap();
        assert!(
            read_shard(&p)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
    }

    /// Exactly `seq_len + 1` tokens make one sequence and its targets; one fewer is refused.
    #[test]
    fn the_shortest_stream_is_one_sequence_and_its_targets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train_00000.bin");
        write_shard(&p, &(0..9).collect::<Vec<u16>>()).unwrap();
        let stream = TokenStream::load(vec![p.clone()], 16).unwrap();
        check_length(&stream, "training data", 8).unwrap();
        let b = train_batch(&stream, 1, 0, 2, 8);
        assert_eq!(
            b.tokens,
            [(0..8).collect::<Vec<i32>>(), (0..8).collect()].concat()
        );
        assert_eq!(
            b.targets,
            [(1..9).collect::<Vec<i32>>(), (1..9).collect()].concat()
        );
        let v = validation_batches(&stream, 1, 1, 8);
        assert_eq!(v[0].targets, (1..9).collect::<Vec<i32>>());
        let e = check_length(&stream, "training data", 9)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("9 tokens is too few for one sequence of seq_len 9"),
            "{e}"
        );
    }

    #[test]
    fn vocab_mismatch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train_00000.bin");
        write_shard(&p, &[1, 2, 999, 3]).unwrap();
        let e = TokenStream::load(vec![p], 256).unwrap_err().to_string();
        assert!(
            e.contains("token id 999")
                && e.contains("vocab_size 256")
                && e.contains("at least 1000"),
            "{e}"
        );
    }

    #[test]
    fn val_glob_rule() {
        assert_eq!(
            derive_val_glob("data/sh/train_*.bin").as_deref(),
            Some("data/sh/val_*.bin")
        );
        assert_eq!(
            derive_val_glob("data/train/shard_*.bin").as_deref(),
            Some("data/val/shard_*.bin")
        );
        assert_eq!(derive_val_glob("data/x_*.bin"), None);
        // the file name wins over a directory that also says train
        assert_eq!(
            derive_val_glob("train/train_*.bin").as_deref(),
            Some("train/val_*.bin")
        );
    }

    #[test]
    fn batches_are_shifted_by_one_and_deterministic() {
        let stream = TokenStream {
            tokens: Arc::new((0..1000u16).collect()),
            files: vec![],
        };
        let b = train_batch(&stream, 1, 5, 3, 8);
        assert_eq!(b, train_batch(&stream, 1, 5, 3, 8));
        assert_ne!(b, train_batch(&stream, 1, 6, 3, 8));
        for r in 0..3 {
            for t in 0..8 {
                assert_eq!(b.targets[r * 8 + t], b.tokens[r * 8 + t] + 1);
            }
        }
        // the device gather returns exactly the host batch
        let dev = DeviceStream::upload(&stream, 8).unwrap();
        let (x, y) = dev.batch(&train_offsets(1, 5, stream.len(), 3, 8)).unwrap();
        assert_eq!(x.to_vec_i32().unwrap(), b.tokens);
        assert_eq!(y.to_vec_i32().unwrap(), b.targets);
        let v = validation_batches(&stream, 2, 2, 8);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].tokens[0], 0);
        assert_eq!(*v[1].targets.last().unwrap(), 999);
    }
}
