//! # mixsweep-model: model configs and their IR, without MLX
//!
//! This crate owns the meaning of a model config. It parses mixlab-compatible JSON (with comments)
//! into a validated [`ModelConfig`] (invalid configs cannot be constructed: every error names the JSON
//! path and a fix), lowers it to an IR [`Program`] of typed ops over weights with shapes, init rules
//! and optimizer groups, and counts parameters and FLOPs. The orchestrator uses it to validate every
//! trial before launching; the runner executes the [`Program`] on MLX.
//!
//! * [`config`]: top-level and `training` fields, defaults, validation, learning-rate schedule.
//! * [`blocks`]: one module per block type (`plain`, `swiglu`, `mlp`, `mamba`) and the registry.
//! * [`ir`]: values, ops, weights and the shape-checking [`ir::Builder`].
//! * [`model`]: lowering a whole model and [`Counts`].
//! * [`rng`]: SplitMix64, shared by weight init, batch sampling and sweep sampling.

pub mod blocks;
mod builder;
pub mod config;
pub mod error;
pub mod ir;
pub mod json;
pub mod model;
pub mod ops;
pub mod rng;

pub use config::{ComputeDtype, ModelConfig, TrainingConfig};
pub use error::ConfigError;
pub use ir::Program;
pub use model::{Counts, inference_state_values};

/// Version of the runner's training semantics; part of every trial id, so that results from an older
/// runner are not mistaken for results of this one.
pub const RUNNER_VERSION: &str = env!("CARGO_PKG_VERSION");
