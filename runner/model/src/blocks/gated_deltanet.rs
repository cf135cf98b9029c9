//! `gated_deltanet`: Gated DeltaNet (Yang et al. 2025), mixlab's built-in block.
//!
//! ```text
//! h   = RMSNorm(x)                                   (norm_scale [D], eps 1e-5)
//! q   = SiLU(conv(h · wq [D, H·d_k]; q_conv))         conv: causal depthwise, 4 taps, no bias
//! kv_share (default): p = h · w_kv [D, H·d_v];  k = SiLU(conv(p[head, :d_k]; k_conv)),
//!                     v = SiLU(conv(p; v_conv))      (else k, v from wk [D, H·d_k], wv [D, H·d_v])
//! q, k = L2-normalised per head; q also scaled by 1/√d_k
//! α   = exp(−softplus(h · w_a [D, H] + dt_bias [H]) · exp(A_log [H])),   β = σ(h · w_beta [D, H])
//! S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t          ([d_k, d_v] per head)
//! y   = (RMSNorm_{d_v}(o; o_norm_scale) ⊙ SiLU(h · w_out_gate [D, H·d_v])) · wo [H·d_v, D]
//! x   = x + y                                        (gated_deltanet_scale with block scales)
//! ```
//! Fields as mixlab: `heads`, `d_k` (required), `d_v` (2·d_k), `kv_share` (true; needs d_v ≥ d_k),
//! `scan_chunk_size` (accepted, ignored: it tunes mixlab's kernel; ours runs the `delta_scan` op as a
//! fused CUDA kernel when training on an NVIDIA GPU, else in its chunkwise WY form in chunks of 16). Same math as mixlab. Differences: `A_log` starts as a ramp
//! `log 1 … log 16` over heads (mixlab draws `log U(0, 16)`); the projections use the model's init;
//! the conv weights are stored `[4, C]` oldest tap first (ours) and `bidirectional` is refused.
//! Generation keeps each head's `[d_k, d_v]` state and the convolutions' last three inputs.

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{CausalConv, DeltaScan, Full, Norm, NormKind, ScalarKind, Slice, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "gated_deltanet",
    parse,
    fields: &["heads", "d_k", "d_v", "kv_share", "scan_chunk_size", "bidirectional"],
    summary: "Gated DeltaNet: gated delta-rule matrix state per head (chunkwise WY form)",
};

/// Taps of the short causal convolutions (mixlab's constant).
const CONV: usize = 4;
/// Steps per chunk of the chunkwise delta rule.
const CHUNK: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct GatedDeltaNet {
    pub heads: usize,
    pub d_k: usize,
    pub d_v: usize,
    pub kv_share: bool,
}

fn parse(f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let Some(heads) = f.usize("heads")?.filter(|&h| h > 0) else {
        return Err(f
            .error("heads", "gated_deltanet needs heads > 0")
            .with_hint("add e.g. \"heads\": 4"));
    };
    let Some(d_k) = f.usize("d_k")?.filter(|&k| k > 0) else {
        return Err(f
            .error("d_k", "gated_deltanet needs d_k > 0 (the key size per head)")
            .with_hint("add e.g. \"d_k\": 32"));
    };
    let d_v = f.positive("d_v", 2 * d_k)?;
    let kv_share = f.bool("kv_share")?.unwrap_or(true);
    if kv_share && d_v < d_k {
        return Err(f
            .error("d_v", format!("kv_share needs d_v >= d_k (got d_v={d_v}, d_k={d_k})"))
            .with_hint("raise d_v or set \"kv_share\": false"));
    }
    let _ = f.usize("scan_chunk_size")?; // mixlab's kernel tuning; see the module docs
    if f.bool("bidirectional")?.unwrap_or(false) {
        return Err(f
            .error("bidirectional", "a bidirectional gated_deltanet is not supported")
            .with_hint("mixsweep trains causal language models; remove the field"));
    }
    Ok(Box::new(GatedDeltaNet {
        heads,
        d_k,
        d_v,
        kv_share,
    }))
}

type R<T> = Result<T, BuildError>;

fn bt(rest: &[usize]) -> Vec<Dim> {
    let mut s = vec![Dim::Batch, Dim::Seq];
    s.extend(rest.iter().map(|&n| Dim::Fixed(n)));
    s
}

impl GatedDeltaNet {
    /// `SiLU(conv(x; name))` over `x [B, T, C]`.
    fn short_conv(&self, b: &mut Builder, x: ValueId, name: &str) -> R<ValueId> {
        let c = b.width(x);
        let bound = 1.0 / (CONV as f32).sqrt();
        let w = b.weight(name, &[CONV, c], Init::Uniform { bound }, ParamGroup::Matrix)?;
        let zero = b.op1(Full { shape: vec![Dim::Fixed(c)], value: 0.0 }, &[], &format!("{name}_bias"))?;
        let y = b.op1(CausalConv, &[x, w, zero], &format!("{name}_out"))?;
        b.unary(&format!("{name}_act"), y, UnaryKind::Silu)
    }

    /// `[B, T, H·n]` -> L2-normalised `[B, T, H, n]` times `scale`.
    fn unit_heads(&self, b: &mut Builder, x: ValueId, name: &str, scale: f32) -> R<ValueId> {
        let n = self.d_k;
        let x = b.reshape(&format!("{name}_heads"), x, bt(&[self.heads, n]))?;
        let x = b.op1(Norm { kind: NormKind::Rms, eps: 1e-6 }, &[x], &format!("{name}_unit"))?;
        b.scalar(&format!("{name}_scaled"), x, ScalarKind::Mul, scale / (n as f32).sqrt())
    }

    /// `(k [B, T, H·d_k], v [B, T, H·d_v])` after their convolutions.
    fn keys_values(&self, b: &mut Builder, ctx: &BlockCtx<'_>, h: ValueId) -> R<(ValueId, ValueId)> {
        let (d, hk, hv) = (ctx.dims.model_dim, self.heads * self.d_k, self.heads * self.d_v);
        if !self.kv_share {
            let wk = kit::matrix(b, ctx, "wk", d, hk, Role::In)?;
            let k = b.matmul("k_proj", h, wk)?;
            let k = self.short_conv(b, k, "k_conv")?;
            let wv = kit::matrix(b, ctx, "wv", d, hv, Role::In)?;
            let v = b.matmul("v_proj", h, wv)?;
            return Ok((k, self.short_conv(b, v, "v_conv")?));
        }
        let w_kv = kit::matrix(b, ctx, "w_kv", d, hv, Role::In)?;
        let p = b.matmul("kv_proj", h, w_kv)?;
        let p4 = b.reshape("kv_heads", p, bt(&[self.heads, self.d_v]))?;
        let slice = Slice { axis: 3, start: 0, end: self.d_k, step: 1 };
        let k = b.op1(slice, &[p4], "k_shared")?;
        let k = b.reshape("k_proj", k, bt(&[hk]))?;
        let k = self.short_conv(b, k, "k_conv")?;
        Ok((k, self.short_conv(b, p, "v_conv")?))
    }
}

impl Block for GatedDeltaNet {
    fn kind(&self) -> &'static str {
        "gated_deltanet"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let (d, h, dk, dv) = (ctx.dims.model_dim, self.heads, self.d_k, self.d_v);
        let n = kit::norm_with(b, "norm_scale", x, NormKind::Rms, 1e-5, true)?;
        let wq = kit::matrix(b, ctx, "wq", d, h * dk, Role::In)?;
        let q = b.matmul("q_proj", n, wq)?;
        let q = self.short_conv(b, q, "q_conv")?;
        let (k, v) = self.keys_values(b, ctx, n)?;
        let w_a = kit::matrix(b, ctx, "w_a", d, h, Role::In)?;
        let ramp = Init::Ramp { from: 0.0, to: 16f32.ln(), power: 1.0 };
        let a_log = b.weight("A_log", &[h], ramp, ParamGroup::Scalar)?;
        let dt_init = Init::MambaDtBias { dt_min: 0.001, dt_max: 0.1 };
        let dt_bias = b.weight("dt_bias", &[h], dt_init, ParamGroup::Scalar)?;
        let w_beta = kit::matrix(b, ctx, "w_beta", d, h, Role::In)?;
        let o_norm = b.weight("o_norm_scale", &[dv], Init::Constant(1.0), ParamGroup::Scalar)?;
        let w_gate = kit::matrix(b, ctx, "w_out_gate", d, h * dv, Role::In)?;
        let wo = kit::matrix(b, ctx, "wo", h * dv, d, Role::Out)?;

        let q = self.unit_heads(b, q, "q", 1.0 / (dk as f32).sqrt())?;
        let k = self.unit_heads(b, k, "k", 1.0)?;
        let v = b.reshape("v_heads", v, bt(&[h, dv]))?;
        let dt = b.matmul("gate_raw", n, w_a)?;
        let dt = b.add("gate_shifted", dt, dt_bias)?;
        let dt = b.unary("dt", dt, UnaryKind::Softplus)?;
        let a = b.unary("a", a_log, UnaryKind::Exp)?;
        let rate = b.mul("decay_rate", dt, a)?;
        let log_decay = b.scalar("log_decay", rate, ScalarKind::Mul, -1.0)?;
        let beta = b.matmul("beta_raw", n, w_beta)?;
        let beta = b.unary("beta", beta, UnaryKind::Sigmoid)?;
        let o = b.op1(DeltaScan { chunk: CHUNK }, &[q, k, v, beta, log_decay], "delta")?;
        let o = b.op1(Norm { kind: NormKind::Rms, eps: 1e-5 }, &[o, o_norm], "o_norm")?;
        let gate = b.matmul("out_gate_raw", n, w_gate)?;
        let gate = b.unary("out_gate", gate, UnaryKind::Silu)?;
        let gate = b.reshape("out_gate_heads", gate, bt(&[h, dv]))?;
        let y = b.mul("gated", o, gate)?;
        let y = b.reshape("merged", y, bt(&[h * dv]))?;
        let y = b.matmul("out", y, wo)?;
        kit::add_branch(b, ctx, x, y, "gated_deltanet_scale", "gated_deltanet")
    }
}
