//! `mamba`: a Mamba (S6) selective state-space block, pre-norm with a residual connection.
//!
//! ```text
//! h        = RMSNorm(x)
//! u, z     = split(h · in_proj[D, 2I])
//! u        = SiLU(causal_depthwise_conv(u; conv_w[K, I], conv_b[I]))
//! dt, B, C = split(u · x_proj[I, R + 2N])                 (input-dependent Δ, B, C)
//! Δ        = softplus(dt · dt_proj[R, I] + dt_bias[I])
//! y        = selective_scan(u, Δ, A = -exp(A_log[I, N]), B, C) + D[I] ⊙ u
//! x       += (y ⊙ SiLU(z)) · out_proj[I, D]
//! ```
//! Defaults follow the Mamba paper: `inner_dim = 2D`, `state_size = 16`, `conv_kernel = 4`,
//! `dt_rank = ceil(D / 16)`, `dt_min = 0.001`, `dt_max = 0.1`, A_log = log(1..N), D = 1.
//! The scan runs in chunks of `scan_chunk` steps (parallel within a chunk). Note: mixlab's retired
//! `mamba` type (now `legacy_mamba`) is a different, simpler block; this one is the real selective SSM.

use super::{Block, BlockType, ModelDims};
use crate::error::ConfigError;
use crate::ir::{Activation, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;

pub const TYPE: BlockType = BlockType {
    name: "mamba",
    parse,
    fields: &[
        "inner_dim",
        "state_size",
        "conv_kernel",
        "dt_rank",
        "dt_min",
        "dt_max",
        "scan_chunk",
    ],
    summary: "Mamba selective SSM (input-dependent Δ, B, C; chunked scan)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Mamba {
    pub inner_dim: usize,
    pub state_size: usize,
    pub conv_kernel: usize,
    pub dt_rank: usize,
    pub dt_min: f32,
    pub dt_max: f32,
    pub scan_chunk: usize,
}

fn positive(f: &mut Fields<'_>, key: &str, default: usize) -> Result<usize, ConfigError> {
    match f.usize(key)? {
        None => Ok(default),
        Some(0) => Err(f.error(key, format!("{key} must be > 0"))),
        Some(v) => Ok(v),
    }
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let inner_dim = positive(f, "inner_dim", 2 * dims.model_dim)?;
    let state_size = positive(f, "state_size", 16)?;
    let conv_kernel = positive(f, "conv_kernel", 4)?;
    let dt_rank = positive(f, "dt_rank", dims.model_dim.div_ceil(16))?;
    let scan_chunk = positive(f, "scan_chunk", 8)?;
    if scan_chunk > 16 {
        return Err(f
            .error(
                "scan_chunk",
                format!("scan_chunk={scan_chunk} is too long for the float32 chunked scan"),
            )
            .with_hint("use a value between 1 and 16 (default 8)"));
    }
    let dt_min = f.f64("dt_min")?.unwrap_or(0.001);
    let dt_max = f.f64("dt_max")?.unwrap_or(0.1);
    if !(dt_min > 0.0 && dt_min <= dt_max) {
        return Err(f.error(
            "dt_min",
            format!("need 0 < dt_min <= dt_max (got dt_min={dt_min}, dt_max={dt_max})"),
        ));
    }
    Ok(Box::new(Mamba {
        inner_dim,
        state_size,
        conv_kernel,
        dt_rank,
        dt_min: dt_min as f32,
        dt_max: dt_max as f32,
        scan_chunk,
    }))
}

impl Block for Mamba {
    fn kind(&self) -> &'static str {
        "mamba"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, dims: &ModelDims) -> ValueId {
        let (d, i, n, r, k) = (
            dims.model_dim,
            self.inner_dim,
            self.state_size,
            self.dt_rank,
            self.conv_kernel,
        );
        let norm = b.weight("norm_scale", &[d], Init::Constant(1.0), ParamGroup::Scalar);
        let in_proj = b.matrix("in_proj", d, 2 * i, dims.matrix_init);
        let conv_bound = 1.0 / (k as f32).sqrt();
        let conv_w = b.weight(
            "conv_w",
            &[k, i],
            Init::Uniform { bound: conv_bound },
            ParamGroup::Matrix,
        );
        let conv_b = b.weight(
            "conv_b",
            &[i],
            Init::Uniform { bound: conv_bound },
            ParamGroup::Scalar,
        );
        let x_proj = b.matrix("x_proj", i, r + 2 * n, dims.matrix_init);
        let dt_proj = b.matrix(
            "dt_proj",
            r,
            i,
            Init::Uniform {
                bound: 1.0 / (r as f32).sqrt(),
            },
        );
        let dt_bias = b.weight(
            "dt_bias",
            &[i],
            Init::MambaDtBias {
                dt_min: self.dt_min,
                dt_max: self.dt_max,
            },
            ParamGroup::Scalar,
        );
        // A_log and D are per-channel dynamics parameters: no weight decay (as in Mamba).
        let a_log = b.weight("a_log", &[i, n], Init::MambaALog, ParamGroup::Scalar);
        let skip = b.weight("d", &[i], Init::Constant(1.0), ParamGroup::Scalar);
        let out_proj = b.matrix("out_proj", i, d, dims.matrix_init);

        let h = b.rms_norm("norm", x, norm, dims.norm_eps);
        let uz = b.linear("in_proj_out", h, in_proj);
        let u = b.slice_last("u", uz, 0, i);
        let z = b.slice_last("z", uz, i, 2 * i);
        let u = b.causal_conv1d("conv", u, conv_w, conv_b);
        let u = b.activation("conv_act", u, Activation::Silu);
        let dbc = b.linear("x_proj_out", u, x_proj);
        let dt = b.slice_last("dt_low", dbc, 0, r);
        let bb = b.slice_last("b", dbc, r, r + n);
        let cc = b.slice_last("c", dbc, r + n, r + 2 * n);
        let dt = b.linear("dt_proj_out", dt, dt_proj);
        let dt = b.add("dt_biased", dt, dt_bias);
        let delta = b.activation("delta", dt, Activation::Softplus);
        let y = b.selective_scan("scan", u, delta, a_log, bb, cc, skip, self.scan_chunk);
        let gate = b.activation("gate", z, Activation::Silu);
        let y = b.mul("gated", y, gate);
        let o = b.linear("out", y, out_proj);
        let o = b.dropout("dropout", o, dims.dropout);
        b.add("residual", x, o)
    }
}
