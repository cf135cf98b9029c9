//! `mlstm`: xLSTM's matrix-memory LSTM with exponential gates and a stabiliser (mixlab's `mlstm`).
//!
//! ```text
//! h = RMSNorm(x)                                     (norm_scale [D], eps 1e-5)
//! q, k = h·wq, h·wk [D, H·dk];  v = h·wv [D, H·dv]
//! ĩ = h·w_i + b_i,  f̃ = h·w_f + b_f                 ([D, H] and [H]: gate pre-activations)
//! m_t = max(f̃_t + m_{t−1}, ĩ_t),  m_{−1} = 0        (stabiliser)
//! C_t = e^{f̃_t + m_{t−1} − m_t} C_{t−1} + e^{ĩ_t − m_t} k_t v_tᵀ        ([dk, dv] per head)
//! n_t = e^{f̃_t + m_{t−1} − m_t} n_{t−1} + e^{ĩ_t − m_t} k_t             ([dk] per head)
//! o_t = (q̂_tᵀ C_t) / max(|q̂_tᵀ n_t|, 1),  q̂ = q / √dk
//! x = x + (RMSNorm_dv(o) ⊙ σ(h · w_out_gate [D, H·dv])) · wo [H·dv, D]
//! ```
//! Fields: `heads`, `d_k`, `d_v` (all required, as in mixlab). Weights in mixlab's order
//! `norm_scale, wq, wk, wv, w_i, b_i, w_f, b_f, o_norm_scale, w_out_gate, wo`; same math as mixlab.
//! The stabiliser is a log-depth max-plus scan, the normaliser a chunked scan and the memory with its
//! read by `q̂` the `gla_scan` op (a fused CUDA kernel when training on an NVIDIA GPU, else chunkwise:
//! states only at chunk boundaries); generation keeps `m`, `C` and `n` (constant size per token).

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{
    Binary, BinaryKind, DecayScan, Full, GlaScan, MaxPlusScan, Mean, Norm, NormKind, ScalarKind,
    TokenShift, UnaryKind,
};

pub const TYPE: BlockType = BlockType {
    name: "mlstm",
    parse,
    fields: &["heads", "d_k", "d_v"],
    summary: "xLSTM's mLSTM: exponentially gated matrix memory with a stabiliser",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Mlstm {
    pub heads: usize,
    pub d_k: usize,
    pub d_v: usize,
}

fn parse(f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let mut required = |key: &str| -> Result<usize, ConfigError> {
        match f.usize(key)? {
            Some(n) if n > 0 => Ok(n),
            _ => Err(f
                .error(key, format!("an mlstm block needs `{key}` > 0"))
                .with_hint("e.g. {\"type\": \"mlstm\", \"heads\": 4, \"d_k\": 16, \"d_v\": 16}")),
        }
    };
    let (heads, d_k, d_v) = (required("heads")?, required("d_k")?, required("d_v")?);
    Ok(Box::new(Mlstm { heads, d_k, d_v }))
}

type R<T> = Result<T, BuildError>;

impl Mlstm {
    fn split(&self, b: &mut Builder, name: &str, x: ValueId, n: usize, last: usize) -> R<ValueId> {
        let mut shape = vec![Dim::Batch, Dim::Seq, Dim::Fixed(self.heads), Dim::Fixed(n)];
        if last > 0 {
            shape.push(Dim::Fixed(last));
        }
        b.reshape(name, x, shape)
    }

    /// `Σ_dk q̂ ⊙ s` over a state `[B, T, H·dk, w]` -> `[B, T, H, w]`.
    fn read(&self, b: &mut Builder, name: &str, state: ValueId, q: ValueId, w: usize) -> R<ValueId> {
        let s = self.split(b, &format!("{name}_heads"), state, self.d_k, w)?;
        let r = b.mul(&format!("{name}_q"), s, q)?;
        let r = b.op1(Mean { axis: 3 }, &[r], &format!("{name}_mean"))?;
        b.scalar(name, r, ScalarKind::Mul, self.d_k as f32)
    }

    /// The stabilised forget and input factors `[B, T, H·dk]` (each head's repeated over dk).
    fn gates(&self, b: &mut Builder, ctx: &BlockCtx<'_>, n: ValueId) -> R<(ValueId, ValueId)> {
        let (d, h) = (ctx.dims.model_dim, self.heads);
        let w_i = kit::matrix(b, ctx, "w_i", d, h, Role::In)?;
        let b_i = b.weight("b_i", &[h], Init::Constant(0.0), ParamGroup::Scalar)?;
        let w_f = kit::matrix(b, ctx, "w_f", d, h, Role::In)?;
        let b_f = b.weight("b_f", &[h], Init::Constant(0.0), ParamGroup::Scalar)?;
        let i = b.matmul("input_in", n, w_i)?;
        let i = b.add("input_pre", i, b_i)?;
        let f = b.matmul("forget_in", n, w_f)?;
        let f = b.add("forget_pre", f, b_f)?;
        let m = b.op1(MaxPlusScan, &[f, i], "stabiliser")?;
        let m_prev = b.op1(TokenShift, &[m], "stabiliser_prev")?;
        let fm = b.add("forget_shifted", f, m_prev)?;
        let fm = b.op1(Binary(BinaryKind::Sub), &[fm, m], "forget_log")?;
        let forget = b.unary("forget", fm, UnaryKind::Exp)?;
        let im = b.op1(Binary(BinaryKind::Sub), &[i, m], "input_log")?;
        let input = b.unary("input", im, UnaryKind::Exp)?;
        let ones = b.op1(Full { shape: vec![Dim::Fixed(self.d_k)], value: 1.0 }, &[], "dk_ones")?;
        let per_key = |b: &mut Builder, name: &str, g: ValueId| -> R<ValueId> {
            let g4 = self.split(b, &format!("{name}_heads"), g, 1, 0)?;
            let g4 = b.mul(&format!("{name}_keys"), g4, ones)?;
            let flat = vec![Dim::Batch, Dim::Seq, Dim::Fixed(self.heads * self.d_k)];
            b.reshape(&format!("{name}_flat"), g4, flat)
        };
        Ok((per_key(b, "forget", forget)?, per_key(b, "input", input)?))
    }
}

impl Block for Mlstm {
    fn kind(&self) -> &'static str {
        "mlstm"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let (d, h, dk, dv) = (ctx.dims.model_dim, self.heads, self.d_k, self.d_v);
        let n = kit::norm_with(b, "norm_scale", x, NormKind::Rms, 1e-5, true)?;
        let wq = kit::matrix(b, ctx, "wq", d, h * dk, Role::In)?;
        let wk = kit::matrix(b, ctx, "wk", d, h * dk, Role::In)?;
        let wv = kit::matrix(b, ctx, "wv", d, h * dv, Role::In)?;
        let q = b.matmul("q", n, wq)?;
        let k = b.matmul("k", n, wk)?;
        let v = b.matmul("v", n, wv)?;
        let (forget, input) = self.gates(b, ctx, n)?;
        let o_norm = b.weight("o_norm_scale", &[dv], Init::Constant(1.0), ParamGroup::Scalar)?;
        let w_gate = kit::matrix(b, ctx, "w_out_gate", d, h * dv, Role::In)?;
        let wo = kit::matrix(b, ctx, "wo", h * dv, d, Role::Out)?;
        let chunk = ctx.dims.scan_chunk;
        let ik = b.mul("input_key", input, k)?; // [B, T, H·dk]
        let normaliser = b.op1(DecayScan { chunk }, &[ik, forget], "normaliser")?;
        let q = b.scalar("q_scaled", q, ScalarKind::Mul, 1.0 / (dk as f32).sqrt())?;
        let (ikh, vh) = (self.split(b, "ik_heads", ik, dk, 0)?, self.split(b, "v_heads", v, dv, 0)?);
        let (qh, fh) = (self.split(b, "q_keys", q, dk, 0)?, self.split(b, "forget_keys", forget, dk, 0)?);
        let num = b.op1(GlaScan { chunk }, &[qh, ikh, vh, fh], "numerator")?; // [B, T, H, dv]
        let q5 = self.split(b, "q_heads", q, dk, 1)?;
        let den = self.read(b, "denominator", normaliser, q5, 1)?; // [B, T, H, 1]
        let den = b.unary("denominator_abs", den, UnaryKind::Abs)?;
        let den = b.scalar("denominator_clamped", den, ScalarKind::Max, 1.0)?;
        let o = b.op1(Binary(BinaryKind::Div), &[num, den], "memory_out")?;
        let o = b.op1(Norm { kind: NormKind::Rms, eps: 1e-5 }, &[o, o_norm], "o_norm")?;
        let o = b.reshape("o_merged", o, vec![Dim::Batch, Dim::Seq, Dim::Fixed(h * dv)])?;
        let g = b.matmul("out_gate_in", n, w_gate)?;
        let g = b.unary("out_gate", g, UnaryKind::Sigmoid)?;
        let o = b.mul("gated", o, g)?;
        let o = b.matmul("out", o, wo)?;
        b.add("residual", x, o)
    }
}
