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

use super::kit::{self, ResidualNames};
use super::{Block, BlockCtx, BlockType, ModelDims, Role};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{CausalConv, SelectiveScan, Split, UnaryKind};

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

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let inner_dim = f.positive("inner_dim", 2 * dims.model_dim)?;
    let state_size = f.positive("state_size", 16)?;
    let conv_kernel = f.positive("conv_kernel", 4)?;
    let dt_rank = f.positive("dt_rank", dims.model_dim.div_ceil(16))?;
    let scan_chunk = f.positive("scan_chunk", 8)?;
    if scan_chunk > 16 {
        return Err(f
            .error(
                "scan_chunk",
                format!("scan_chunk={scan_chunk} is too long for the float32 chunked scan"),
            )
            .with_hint("use a value between 1 and 16 (default 8)"));
    }
    let (dt_min, dt_max) = kit::dt_range(f)?;
    Ok(Box::new(Mamba {
        inner_dim,
        state_size,
        conv_kernel,
        dt_rank,
        dt_min,
        dt_max,
        scan_chunk,
    }))
}

impl Mamba {
    /// The SSM branch on the normalised input `h`.
    fn ssm(&self, b: &mut Builder, ctx: &BlockCtx<'_>, h: ValueId) -> Result<ValueId, BuildError> {
        let (d, i, n, r, k) = (
            ctx.dims.model_dim,
            self.inner_dim,
            self.state_size,
            self.dt_rank,
            self.conv_kernel,
        );
        let in_proj = kit::matrix(b, ctx, "in_proj", d, 2 * i, Role::In)?;
        let conv_bound = 1.0 / (k as f32).sqrt();
        let conv_w = b.weight(
            "conv_w",
            &[k, i],
            Init::Uniform { bound: conv_bound },
            ParamGroup::Matrix,
        )?;
        let conv_b = b.weight(
            "conv_b",
            &[i],
            Init::Uniform { bound: conv_bound },
            ParamGroup::Scalar,
        )?;
        let x_proj = kit::matrix(b, ctx, "x_proj", i, r + 2 * n, Role::In)?;
        let dt_proj = b.matrix(
            "dt_proj",
            r,
            i,
            Init::Uniform {
                bound: 1.0 / (r as f32).sqrt(),
            },
        )?;
        let dt_bias = b.weight(
            "dt_bias",
            &[i],
            Init::MambaDtBias {
                dt_min: self.dt_min,
                dt_max: self.dt_max,
            },
            ParamGroup::Scalar,
        )?;
        // A_log and D are per-channel dynamics parameters: no weight decay (as in Mamba).
        let a_log = b.weight("a_log", &[i, n], Init::MambaALog, ParamGroup::Scalar)?;
        let skip = b.weight("d", &[i], Init::Constant(1.0), ParamGroup::Scalar)?;
        let out_proj = kit::matrix(b, ctx, "out_proj", i, d, Role::Out)?;

        let uz = b.matmul("in_proj_out", h, in_proj)?;
        let uz = b.op(Split { sizes: vec![i, i] }, &[uz], "uz")?;
        let u = b.op1(CausalConv, &[uz[0], conv_w, conv_b], "conv")?;
        let u = b.unary("conv_act", u, UnaryKind::Silu)?;
        let dbc = b.matmul("x_proj_out", u, x_proj)?;
        let dbc = b.op(
            Split {
                sizes: vec![r, n, n],
            },
            &[dbc],
            "dbc",
        )?;
        let dt = b.matmul("dt_proj_out", dbc[0], dt_proj)?;
        let dt = b.add("dt_biased", dt, dt_bias)?;
        let delta = b.unary("delta", dt, UnaryKind::Softplus)?;
        let scan = SelectiveScan {
            chunk: self.scan_chunk,
        };
        let y = b.op1(scan, &[u, delta, a_log, dbc[1], dbc[2], skip], "scan")?;
        let gate = b.unary("gate", uz[1], UnaryKind::Silu)?;
        let y = b.mul("gated", y, gate)?;
        b.matmul("out", y, out_proj)
    }
}

impl Block for Mamba {
    fn kind(&self) -> &'static str {
        "mamba"
    }

    fn lower(
        &self,
        b: &mut Builder,
        x: ValueId,
        ctx: &BlockCtx<'_>,
    ) -> Result<ValueId, BuildError> {
        let names = ResidualNames {
            norm: "norm_scale",
            post_norm: "post_norm",
            scale: "mamba_scale",
            label: "mamba",
        };
        kit::residual(b, ctx, x, names, |b, h| self.ssm(b, ctx, h))
    }
}
