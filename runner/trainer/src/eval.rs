//! Full validation and bits per byte (mixlab §7.3).
//!
//! The validation shards are concatenated, trimmed to `floor((n-1)/T)·T + 1` tokens and walked in
//! chunks of `batch_tokens` (the last one cut to a multiple of T). Each chunk's mean cross-entropy times
//! its token count adds to `total_nats`. Bytes per predicted token come from the lookup tables that
//! `prepare` writes beside the shards: `bytes_per_token[tgt] + (has_leading_space[tgt] &&
//! !is_boundary_token[prev] ? 1 : 0)`. `BPB = total_nats / ln 2 / total_bytes`, comparable across
//! tokenizers, so trials with different vocabularies can be ranked by `val_bpb`.

use crate::data::{self, DataError, TokenStream};
use crate::step::{StepScalars, Steps, TrainState};
use mixsweep_mlx::Array;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The three BPB lookup tables, one entry per token id.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupTables {
    pub bytes_per_token: Vec<u16>,
    pub has_leading_space: Vec<u8>,
    pub is_boundary_token: Vec<u8>,
}

pub const LUT_FILES: [&str; 3] = [
    "bytes_per_token.bin",
    "has_leading_space.bin",
    "is_boundary_token.bin",
];

impl LookupTables {
    /// Reads the tables from `dir` and checks they cover `vocab` ids.
    pub fn load(dir: &Path, vocab: usize) -> Result<LookupTables, DataError> {
        let read = |name: &str| -> Result<Vec<u8>, DataError> {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| DataError::Shard {
                path: p.clone(),
                message: format!(
                    "cannot read the BPB lookup table ({e}); `mixsweep-runner prepare` writes {} beside the shards (or pass --lut-dir)",
                    LUT_FILES.join(", ")
                ),
            })
        };
        let raw = read(LUT_FILES[0])?;
        let bytes_per_token: Vec<u16> = raw
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let has_leading_space = read(LUT_FILES[1])?;
        let is_boundary_token = read(LUT_FILES[2])?;
        for (name, len) in [
            (LUT_FILES[0], bytes_per_token.len()),
            (LUT_FILES[1], has_leading_space.len()),
            (LUT_FILES[2], is_boundary_token.len()),
        ] {
            if len < vocab {
                return Err(DataError::Shard {
                    path: dir.join(name),
                    message: format!(
                        "has {len} entries but vocab_size is {vocab}: the tables belong to another tokenizer (re-run prepare, or pass --lut-dir)"
                    ),
                });
            }
        }
        Ok(LookupTables {
            bytes_per_token,
            has_leading_space,
            is_boundary_token,
        })
    }

    /// The tables for a validation set: from `lut_dir` when given, else from beside its shards
    /// ([`lookup_dir`]).
    pub fn find(
        lut_dir: Option<&Path>,
        val_glob: &str,
        val_files: &[PathBuf],
        vocab: usize,
    ) -> Result<LookupTables, DataError> {
        let dir = match lut_dir {
            Some(d) => d.to_path_buf(),
            None => lookup_dir(val_glob, val_files)?,
        };
        LookupTables::load(&dir, vocab)
    }

    /// Bytes that predicting `target` after `prev` accounts for.
    pub fn bytes(&self, prev: u16, target: u16) -> u64 {
        let (p, t) = (prev as usize, target as usize);
        self.bytes_per_token[t] as u64
            + (self.has_leading_space[t] != 0 && self.is_boundary_token[p] == 0) as u64
    }
}

/// Where the lookup tables of a validation set live: `--lut-dir`, or beside its (first) shard; for an
/// object-store URL the tables are fetched from the same folder into the cache.
pub fn lookup_dir(val: &str, files: &[PathBuf]) -> Result<PathBuf, DataError> {
    if mixsweep_store::is_url(val) {
        let (folder, _) = val.rsplit_once('/').unwrap_or((val, ""));
        // The download cache keys each object separately; gather the three tables in one folder.
        let gathered = mixsweep_store::default_cache_dir()
            .join("luts")
            .join(format!("{:016x}", fnv1a(folder)));
        std::fs::create_dir_all(&gathered).map_err(|e| DataError::Shard {
            path: gathered.clone(),
            message: e.to_string(),
        })?;
        for name in LUT_FILES {
            let src = data::resolve_files(&format!("{folder}/{name}"), "val")?;
            std::fs::copy(&src[0], gathered.join(name)).map_err(|e| DataError::Shard {
                path: gathered.join(name),
                message: e.to_string(),
            })?;
        }
        return Ok(gathered);
    }
    Ok(files
        .first()
        .and_then(|f| f.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default())
}

fn fnv1a(s: &str) -> u64 {
    // FNV-1a: a stable folder name, not a security boundary.
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The result of a full validation pass.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FullValidation {
    /// Mean cross-entropy per predicted token (nats).
    pub val_loss: f64,
    /// Bits per byte; `None` without lookup tables.
    pub val_bpb: Option<f64>,
    pub tokens: u64,
    pub bytes: Option<u64>,
}

/// Score-first test-time training during a validation pass (mixlab §7.5): each batch is scored
/// with the current weights, then `steps` optimizer steps adapt them on it. `state` is a copy:
/// the adapted weights never reach training or the exported files.
pub struct TttRun<'a> {
    pub state: &'a mut TrainState,
    pub steps: usize,
    /// `ttt_lr / lr` (each group's rate scales with it).
    pub lr_scale: f32,
    /// The optimizer step count to continue from (bias corrections).
    pub t0: u64,
}

/// Runs the full validation pass (module docs) with the compiled eval step (and, with `ttt`, the
/// train step after scoring each batch).
pub fn full_validation(
    steps: &mut Steps,
    params: &[Array],
    val: &TokenStream,
    batch_tokens: usize,
    seq_len: usize,
    tables: Option<&LookupTables>,
    mut ttt: Option<TttRun<'_>>,
) -> Result<FullValidation, mixsweep_mlx::Error> {
    let tokens = &val.tokens;
    let usable = ((tokens.len().saturating_sub(1)) / seq_len) * seq_len;
    let chunk = (batch_tokens / seq_len).max(1) * seq_len;
    let (mut nats, mut bytes, mut count) = (0f64, 0u64, 0u64);
    let mut start = 0;
    while start < usable {
        let n = chunk.min(usable - start);
        let x: Vec<i32> = tokens[start..start + n].iter().map(|&t| t as i32).collect();
        let y: Vec<i32> = tokens[start + 1..start + n + 1]
            .iter()
            .map(|&t| t as i32)
            .collect();
        let rows = n / seq_len;
        let (x, y) = (
            Array::from_i32(&x, &[rows, seq_len])?,
            Array::from_i32(&y, &[rows, seq_len])?,
        );
        let scored = ttt.as_ref().map_or(params, |t| &t.state.params);
        let loss = steps.eval_loss(scored, &x, &y, true)?.item_f32()? as f64;
        if let Some(t) = &mut ttt {
            for _ in 0..t.steps {
                t.t0 += 1;
                let s = StepScalars {
                    lr_scale: t.lr_scale,
                    t: t.t0,
                    dropout_seed: t.t0,
                    qat: false,
                };
                steps.train_step(t.state, &x, &y, &s)?;
            }
        }
        nats += loss * n as f64;
        if let Some(t) = tables {
            bytes += (start..start + n)
                .map(|i| t.bytes(tokens[i], tokens[i + 1]))
                .sum::<u64>();
        }
        count += n as u64;
        start += n;
    }
    Ok(FullValidation {
        val_loss: if count > 0 {
            nats / count as f64
        } else {
            f64::NAN
        },
        val_bpb: tables
            .filter(|_| bytes > 0)
            .map(|_| nats / std::f64::consts::LN_2 / bytes as f64),
        tokens: count,
        bytes: tables.map(|_| bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_count_a_leading_space_unless_after_a_boundary() {
        let t = LookupTables {
            bytes_per_token: vec![0, 3, 2],
            has_leading_space: vec![0, 1, 0],
            is_boundary_token: vec![1, 0, 0],
        };
        assert_eq!(t.bytes(2, 1), 4); // " abc" after an ordinary token
        assert_eq!(t.bytes(0, 1), 3); // after the boundary token the space is not counted
        assert_eq!(t.bytes(1, 2), 2);
    }

    #[test]
    fn short_tables_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LUT_FILES[0]), [1u8, 0, 1, 0]).unwrap();
        std::fs::write(dir.path().join(LUT_FILES[1]), [0u8, 0]).unwrap();
        std::fs::write(dir.path().join(LUT_FILES[2]), [0u8, 0]).unwrap();
        assert!(LookupTables::load(dir.path(), 2).is_ok());
        let e = LookupTables::load(dir.path(), 3).unwrap_err().to_string();
        assert!(
            e.contains("vocab_size is 3") && e.contains("another tokenizer"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join(LUT_FILES[2])).unwrap();
        let e = LookupTables::load(dir.path(), 2).unwrap_err().to_string();
        assert!(
            e.contains("is_boundary_token.bin") && e.contains("prepare"),
            "{e}"
        );
    }
}
