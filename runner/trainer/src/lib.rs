//! # mixsweep-runner: trains one model config on MLX
//!
//! The runner half of mixsweep. It executes the IR of a [`mixsweep_model::ModelConfig`] on MLX
//! (through `mixsweep-mlx`), on the CPU, CUDA or Metal, with the whole train step compiled.
//!
//! * [`data`]: token shards, globs, batch sampling, the device-resident stream.
//! * [`init`], [`rng`]: deterministic host-side weight init.
//! * [`executor`]: IR ops -> MLX ops (incl. the chunked Mamba scan).
//! * [`step`]: the compiled train step (AdamW, clipping) and eval step.
//! * [`train`]: the loop, metrics, summary, weights.
//! * [`checkpoint`]: safetensors import/export.
//! * [`prepare`]: byte-level shards from text.

pub mod checkpoint;
pub mod data;
pub mod executor;
pub mod init;
pub mod prepare;
pub use mixsweep_model::rng;
pub mod step;
pub mod train;
