//! `mamba3-canonical`: Mamba-3 (Lahoti et al. 2026) as mixlab defines it: an
//! exponential-trapezoidal selective SSM with a rotating (complex) state and grouped B, C.
//!
//! ```text
//! h  = RMSNorm(x)                                         (norm_scale [D], eps 1e-5)
//! u  = h · w_x [D, I]          then, with use_conv, a causal depthwise conv (conv_w [K, I], no bias)
//! Δ  = softplus((u · w_dt_low [I, R]) · w_dt_high [R, I] + dt_bias [I])
//! λ  = σ((u · w_lambda_low) · w_lambda_high)              [I]
//! θ  = (u · w_theta_low) · w_theta_high [R, I·N/2]        (angular velocity per state pair)
//! B  = RMSNorm_N(u · w_B [I, G·N]; B_norm [N]) + B_bias [G·N]      (per group; C likewise)
//! φ_t = Σ_{s≤t} Δ_s θ_s                                    (phase per channel and pair)
//! B̃_t, C̃_t = rotate(B_t, φ_t), rotate(C_t, φ_t)           (2×2 rotations of the pairs, the group's
//!                                                          B, C shared by its I/G channels)
//! α_t = exp(Δ_t A),  A = −exp(A_log [I, N]),  β_t = (1 − λ_t) Δ_t α_t,  γ_t = λ_t Δ_t
//! s_t = α_t s_{t−1} + β_t B̃_{t−1} u_{t−1} + γ_t B̃_t u_t     (state [I, N] per sequence)
//! y_t = Σ_n s_t C̃_t
//! x  = x + (RMSNorm(y; post_norm [I]) ⊙ SiLU(h · w_gate [D, I])) · w_out [I, D]
//! ```
//! Fields and defaults as mixlab: `inner_dim` (D), `state_size` (16, even), `n_groups` (4, divides
//! `inner_dim`), `dt_rank` (max(I/16, 1)), `conv_kernel` (4), `use_conv` (true), `dt_min`/`dt_max`
//! (0.001/0.1, dt_bias is the inverse softplus of a log-uniform draw), A_log = log(1..N),
//! B_bias = C_bias = 1. `A_log [I, N]` is in the scalar group (AdamW without weight decay, never
//! Muon: it holds per-channel dynamics, not a linear map). Weights by mixlab's names; `conv_w` is stored `[K, I]` (ours, oldest tap
//! first) rather than mixlab's `[I, K]`.
//!
//! The recurrence (phase, rotations, input terms, state and read-out) is one `mamba3_scan` op: on
//! CUDA in training a fused kernel (state, phase and rotations in registers, nothing of size
//! `B·T·I·N` in memory), elsewhere and when generating a chunked form that materialises the rotated
//! `B̃, C̃` and the states (`B·T·I·N` floats each).
//!
//! Differences from mixlab: `scan_chunk_size` is accepted and ignored (it tunes mixlab's kernel, not
//! the math). The per-step log-decay `Δ·A` of the state update is floored at `−64 / chunk` (see the
//! runner's scan docs), i.e. `α ≥ 3.4e-4` per step with the default chunk of 8; mixlab has no floor
//! (`β` uses the unfloored `α`). `bidirectional` (mixlab's non-causal option) is refused.
//! Generation keeps the phase, the state and the previous `B̃u` per sequence (constant size).

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{CausalConv, Full, Mamba3Scan, Norm, NormKind, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "mamba3-canonical",
    parse,
    fields: &[
        "inner_dim",
        "state_size",
        "n_groups",
        "dt_rank",
        "conv_kernel",
        "use_conv",
        "scan_chunk_size",
        "dt_min",
        "dt_max",
        "bidirectional",
    ],
    summary: "Mamba-3: exponential-trapezoidal selective SSM with rotating state, grouped B/C",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Mamba3Canonical {
    pub inner_dim: usize,
    pub state_size: usize,
    pub n_groups: usize,
    pub dt_rank: usize,
    /// `None` without the depthwise convolution.
    pub conv_kernel: Option<usize>,
    pub dt_min: f32,
    pub dt_max: f32,
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let inner_dim = f.positive("inner_dim", dims.model_dim)?;
    let state_size = f.positive("state_size", 16)?;
    if !state_size.is_multiple_of(2) {
        return Err(f
            .error("state_size", format!("state_size={state_size} must be even"))
            .with_hint("the state is rotated in (real, imaginary) pairs; use e.g. 16"));
    }
    let n_groups = f.positive("n_groups", 4)?;
    if !inner_dim.is_multiple_of(n_groups) {
        return Err(f
            .error(
                "n_groups",
                format!("n_groups={n_groups} does not divide inner_dim={inner_dim}"),
            )
            .with_hint("pick a divisor of inner_dim (default 4)"));
    }
    let dt_rank = f.positive("dt_rank", (inner_dim / 16).max(1))?;
    let conv_kernel = f.positive("conv_kernel", 4)?;
    let use_conv = f.bool("use_conv")?.unwrap_or(true);
    let _ = f.usize("scan_chunk_size")?; // mixlab's kernel tuning; see the module docs
    if f.bool("bidirectional")?.unwrap_or(false) {
        return Err(f
            .error("bidirectional", "bidirectional Mamba-3 is not supported")
            .with_hint("mixsweep trains causal language models; remove the field"));
    }
    let (dt_min, dt_max) = kit::dt_range(f)?;
    Ok(Box::new(Mamba3Canonical {
        inner_dim,
        state_size,
        n_groups,
        dt_rank,
        conv_kernel: use_conv.then_some(conv_kernel),
        dt_min,
        dt_max,
    }))
}

type R<T> = Result<T, BuildError>;

fn bt(rest: &[usize]) -> Vec<Dim> {
    let mut s = vec![Dim::Batch, Dim::Seq];
    s.extend(rest.iter().map(|&n| Dim::Fixed(n)));
    s
}

impl Mamba3Canonical {
    /// `(u · low) · high` through a rank-`dt_rank` bottleneck.
    fn low_rank(&self, b: &mut Builder, ctx: &BlockCtx<'_>, u: ValueId, name: &str, out: usize) -> R<ValueId> {
        let (i, r) = (self.inner_dim, self.dt_rank);
        let low = kit::matrix(b, ctx, &format!("w_{name}_low"), i, r, Role::In)?;
        let high = kit::matrix(b, ctx, &format!("w_{name}_high"), r, out, Role::In)?;
        let mid = b.matmul(&format!("{name}_low"), u, low)?;
        b.matmul(&format!("{name}_high"), mid, high)
    }

    /// `RMSNorm_N(u · w_X) + X_bias` as `[B, T, G, N]` (per group, shared by its I/G channels).
    fn projected(&self, b: &mut Builder, ctx: &BlockCtx<'_>, u: ValueId, x: &str) -> R<ValueId> {
        let (g, n) = (self.n_groups, self.state_size);
        let w = kit::matrix(b, ctx, &format!("w_{x}"), self.inner_dim, g * n, Role::In)?;
        let scale = b.weight(&format!("{x}_norm"), &[n], Init::Constant(1.0), ParamGroup::Scalar)?;
        let bias = b.weight(&format!("{x}_bias"), &[g * n], Init::Constant(1.0), ParamGroup::Scalar)?;
        let p = b.matmul(&format!("{x}_in"), u, w)?;
        let p = b.reshape(&format!("{x}_groups"), p, bt(&[g, n]))?;
        let p = b.op1(Norm { kind: NormKind::Rms, eps: 1e-5 }, &[p, scale], &format!("{x}_normed"))?;
        let bias = b.reshape(&format!("{x}_bias_groups"), bias, vec![Dim::Fixed(g), Dim::Fixed(n)])?;
        b.add(&format!("{x}_biased"), p, bias)
    }
}

impl Block for Mamba3Canonical {
    fn kind(&self) -> &'static str {
        "mamba3-canonical"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let (d, i, n) = (ctx.dims.model_dim, self.inner_dim, self.state_size);
        let p = n / 2;
        let h = kit::norm_with(b, "norm_scale", x, NormKind::Rms, 1e-5, true)?;
        let w_x = kit::matrix(b, ctx, "w_x", d, i, Role::In)?;
        let mut u = b.matmul("x_branch", h, w_x)?;
        if let Some(k) = self.conv_kernel {
            let bound = 1.0 / (k as f32).sqrt();
            let conv_w = b.weight("conv_w", &[k, i], Init::Uniform { bound }, ParamGroup::Matrix)?;
            let zero = b.op1(Full { shape: vec![Dim::Fixed(i)], value: 0.0 }, &[], "conv_bias")?;
            u = b.op1(CausalConv, &[u, conv_w, zero], "conv")?;
        }
        let dt = self.low_rank(b, ctx, u, "dt", i)?;
        let init = Init::MambaDtBias { dt_min: self.dt_min, dt_max: self.dt_max };
        let dt_bias = b.weight("dt_bias", &[i], init, ParamGroup::Scalar)?;
        let dt = b.add("dt_biased", dt, dt_bias)?;
        let delta = b.unary("delta", dt, UnaryKind::Softplus)?;
        let lam = self.low_rank(b, ctx, u, "lambda", i)?;
        let lam = b.unary("lambda", lam, UnaryKind::Sigmoid)?;
        let theta = self.low_rank(b, ctx, u, "theta", i * p)?;
        let bp = self.projected(b, ctx, u, "B")?;
        let cp = self.projected(b, ctx, u, "C")?;
        let a_log = b.weight("A_log", &[i, n], Init::MambaALog, ParamGroup::Scalar)?;
        let post = b.weight("post_norm", &[i], Init::Constant(1.0), ParamGroup::Scalar)?;
        let w_gate = kit::matrix(b, ctx, "w_gate", d, i, Role::In)?;
        let w_out = kit::matrix(b, ctx, "w_out", i, d, Role::Out)?;

        let theta = b.reshape("theta_pairs", theta, bt(&[i, p]))?;
        let scan = Mamba3Scan { chunk: ctx.dims.scan_chunk };
        let y = b.op1(scan, &[u, delta, lam, theta, bp, cp, a_log], "scan")?; // [B, T, I]
        let y = b.op1(Norm { kind: NormKind::Rms, eps: 1e-5 }, &[y, post], "y_norm")?;
        let z = b.matmul("gate_in", h, w_gate)?;
        let z = b.unary("gate", z, UnaryKind::Silu)?;
        let y = b.mul("gated", y, z)?;
        let out = b.matmul("out", y, w_out)?;
        b.add("residual", x, out)
    }
}
