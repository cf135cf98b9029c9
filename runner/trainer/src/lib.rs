//! # mixsweep-runner: trains one model config on MLX
//!
//! The runner half of mixsweep. It executes the IR of a [`mixsweep_model::ModelConfig`] on MLX
//! (through `mixsweep-mlx`), on the CPU, CUDA or Metal, with the whole train step compiled.
//!
//! * [`data`]: token shards, globs, batch sampling, the device-resident stream.
//! * [`init`], [`rng`]: deterministic host-side weight init.
//! * [`executor`]: IR ops -> MLX ops (incl. the chunked Mamba scan).
//! * [`step`]: the compiled train step (optimizer plan, clipping) and eval step.
//! * [`step_cache`]: compiled steps a worker keeps for its next trials.
//! * [`train`]: the loop, metrics, summary, weights.
//! * [`generate`]: sampling text with a KV cache / recurrent state.
//! * [`eval`]: full validation and bits per byte (lookup tables from `prepare`).
//! * [`checkpoint`]: safetensors import/export.
//! * [`prepare`]: text -> shards (bytes or BPE), tokenizer, manifest, BPB lookup tables.
//! * [`remote`]: configs from and artifacts to object storage (data URLs: [`data::resolve_files`]).

pub mod blas;
pub mod char_features;
pub mod checkpoint;
pub mod data;
pub mod divergence;
pub mod eval;
pub mod executor;
pub mod generate;
pub mod hiddenstats;
pub mod init;
pub mod interrupt;
pub mod kernel_cache;
pub mod kernel_store;
pub mod lower;
pub mod mlx_env;
pub mod optim;
pub mod prepare;
pub mod qat;
pub mod quantize;
pub mod remote;
pub use mixsweep_model::rng;
pub mod step;
pub mod step_cache;
pub mod train;
