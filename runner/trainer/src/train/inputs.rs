//! What a run reads before touching the device: training and validation tokens, the character map,
//! and (for `--eval`) the bits-per-byte tables. Bad data fails here, as an input error.

use super::{TrainError, TrainOptions};
use crate::data::{self, TokenStream};
use crate::eval::LookupTables;
use mixsweep_mlx::Array;
use mixsweep_model::{ConfigError, ModelConfig};

pub struct Inputs {
    pub train: TokenStream,
    pub val: Option<TokenStream>,
    /// Tables for full validation in bits per byte (`--eval` only).
    pub lookup: Option<LookupTables>,
    pub char_map: Option<Array>,
    /// Problems that do not stop the run (no validation set).
    pub warnings: Vec<String>,
}

impl Inputs {
    pub fn load(opts: &TrainOptions, cfg: &ModelConfig) -> Result<Inputs, TrainError> {
        let seq_len = cfg.seq_len;
        let train = TokenStream::load(data::resolve_files(&opts.train, "train")?, cfg.vocab_size)?;
        let char_map = crate::char_features::for_model(cfg, &train.files)
            .map_err(|e| ConfigError::new("char_vocab_size", e))?;
        data::check_length(&train, "training data", seq_len)?;
        let mut warnings = vec![];
        let val = validation_stream(opts, cfg, &mut warnings)?;
        for w in &warnings {
            eprintln!("  [{}] WARNING: {w}", cfg.name);
        }
        if let Some(v) = &val {
            data::check_length(v, "validation data", seq_len)?;
        }
        let lookup = lookup_tables(opts, cfg, val.as_ref())?;
        Ok(Inputs {
            train,
            val,
            lookup,
            char_map,
            warnings,
        })
    }
}

/// `--val`, or the train glob with `train` replaced by `val`; a missing derived set is a warning.
fn validation_stream(
    opts: &TrainOptions,
    cfg: &ModelConfig,
    warnings: &mut Vec<String>,
) -> Result<Option<TokenStream>, TrainError> {
    if let Some(glob) = &opts.val {
        return Ok(Some(TokenStream::load(
            data::resolve_files(glob, "val")?,
            cfg.vocab_size,
        )?));
    }
    let Some(g) = data::derive_val_glob(&opts.train) else {
        warnings.push(
            "no validation set: the train glob has no `train` to replace with `val` (pass --val GLOB); val_loss is not measured".to_string(),
        );
        return Ok(None);
    };
    match data::resolve_files(&g, "val") {
        Ok(files) => Ok(Some(TokenStream::load(files, cfg.vocab_size)?)),
        Err(e @ data::DataError::Remote { .. }) => Err(e.into()),
        Err(_) => {
            warnings.push(format!("no validation set: {g:?} matches nothing (pass --val GLOB); val_loss is not measured"));
            Ok(None)
        }
    }
}

/// `--eval` needs the validation set and its lookup tables: both are checked before any training.
fn lookup_tables(
    opts: &TrainOptions,
    cfg: &ModelConfig,
    val: Option<&TokenStream>,
) -> Result<Option<LookupTables>, TrainError> {
    match (val, opts.eval) {
        (_, false) => Ok(None),
        (None, true) => Err(ConfigError::new(
            "",
            "--eval needs validation shards (none found; pass --val GLOB)",
        )
        .into()),
        (Some(v), true) => {
            // A validation set exists, so its glob was given or derived.
            let val_glob = opts
                .val
                .clone()
                .or_else(|| data::derive_val_glob(&opts.train))
                .unwrap_or_default();
            Ok(Some(LookupTables::find(
                opts.lut_dir.as_deref(),
                &val_glob,
                &v.files,
                cfg.vocab_size,
            )?))
        }
    }
}
