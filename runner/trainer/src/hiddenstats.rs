//! `mixsweep-runner hiddenstats` (mixlab §1.1): the hidden state the output head reads (after the
//! final norm), `[B, T, D]`, for the first training batch of the config's seed, written as raw
//! little-endian float32 (no header) for analysis outside mixsweep.

use crate::data::{self, TokenStream};
use crate::executor::Executor;
use crate::train::{TrainError, load_config};
use mixsweep_mlx::{Array, Dtype, device};
use mixsweep_model::ConfigError;
use std::path::{Path, PathBuf};

pub struct HiddenOptions {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub train: String,
    pub out: PathBuf,
    pub device: Option<device::Device>,
}

/// Writes the file; returns its dimensions `[B, T, D]` and size in bytes.
pub fn hiddenstats(o: &HiddenOptions) -> Result<(Vec<usize>, usize), TrainError> {
    let cfg = load_config(&o.config)?;
    let stream = TokenStream::load(data::resolve_files(&o.train, "train")?, cfg.vocab_size)?;
    data::check_length(&stream, "training data", cfg.seq_len)?;
    let char_map = crate::char_features::for_model(&cfg, &stream.files)
        .map_err(|e| ConfigError::new("char_vocab_size", e))?;
    device::select(o.device)?;
    let program = cfg.lower();
    let params = crate::init::upload(
        &program.weights,
        &crate::checkpoint::load(&o.weights, &program.weights)?,
    )?;
    let (rows, seq) = (cfg.training.batch_size(cfg.seq_len), cfg.seq_len);
    let batch = data::train_batch(&stream, cfg.training.seed, 0, rows, seq);
    let tokens = Array::from_i32(&batch.tokens, &[rows, seq])?;
    let exec = Executor::new(&program, cfg.training.compute_dtype).with_char_map(char_map);
    let hidden = exec
        .forward(&params, &tokens, None, None)?
        .hidden
        .astype(Dtype::F32)?;
    let dims = hidden.shape();
    let bytes: Vec<u8> = hidden
        .to_vec_f32()?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_atomic(&o.out, &bytes)?;
    Ok((dims, bytes.len()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("partial");
    let io = |what: &str, p: &Path, e: std::io::Error| {
        TrainError::Io(format!("{what} {}: {e}", p.display()))
    };
    std::fs::write(&tmp, bytes).map_err(|e| io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot rename", path, e))
}
