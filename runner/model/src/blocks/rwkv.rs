//! `rwkv`: RWKV-4-style time mixing and channel mixing (mixlab's `rwkv`), no norms, width `D`.
//!
//! ```text
//! S(x, μ) = x + σ(μ) ⊙ (x_{t-1} − x)                  token shift (x_{-1} = 0 in every row)
//! time mix:    s = S(x, mu);  r = σ(s·wr), k = s·wk, v = s·wv              ([D, D] each)
//!              w = exp(−exp(w_decay))                                      (per channel)
//!              num_t = w ⊙ num_{t-1} + e^{k_t} ⊙ v_t,   den_t = w ⊙ den_{t-1} + e^{k_t}
//!              x = x + (r ⊙ num / (den + 1e-6)) · wo
//! channel mix: s = S(x, mu2);  x = x + σ(s·wr2) ⊙ (ReLU(s·wk2)² · wv2)
//! ```
//! Weights `mu, wr, wk, wv, w_decay, wo, mu2, wr2, wk2, wv2` (mixlab's names and order). Both scans
//! run as chunked parallel recurrences; generation keeps the two scan states and the two shifted
//! tokens (constant size per token).
//!
//! **Differs from mixlab**: (1) mixlab's generic `Scan` applies `σ` to the decay again, so its
//! effective decay is `σ(w) ∈ (0.5, 0.73)` whatever `w_decay` learns; here the decay is `w` itself,
//! as in RWKV. (2) `w_decay` starts spread over channels from −5 (γ ≈ 0.993) to 2 (γ ≈ 6e-4) as in
//! RWKV-4 instead of 0 for every channel. (3) `k` is clamped to `[-60, 30]` before `e^k` (mixlab's
//! is unbounded and overflows float32 when a key grows past 88).

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{Binary, BinaryKind, Clamp, DecayScan, ScalarKind, TokenShift, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "rwkv",
    parse,
    fields: &[],
    summary: "RWKV time mixing (decayed e^k-weighted average of values) and channel mixing",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Rwkv;

fn parse(_f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    Ok(Box::new(Rwkv))
}

type R<T> = Result<T, BuildError>;

/// `x + σ(μ) ⊙ (x_{t-1} − x)` with a learned `μ [D]` named `mu`.
fn shift_mix(b: &mut Builder, x: ValueId, mu: &str) -> R<ValueId> {
    let d = b.width(x);
    let m = b.weight(mu, &[d], Init::Constant(0.0), ParamGroup::Scalar)?;
    let m = b.unary(&format!("{mu}_gate"), m, UnaryKind::Sigmoid)?;
    let prev = b.op1(TokenShift, &[x], &format!("{mu}_previous"))?;
    let delta = b.op1(Binary(BinaryKind::Sub), &[prev, x], &format!("{mu}_delta"))?;
    let step = b.mul(&format!("{mu}_step"), m, delta)?;
    b.add(&format!("{mu}_mixed"), x, step)
}

impl Rwkv {
    fn time_mix(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let d = ctx.dims.model_dim;
        let s = shift_mix(b, x, "mu")?;
        let wr = kit::matrix(b, ctx, "wr", d, d, Role::In)?;
        let wk = kit::matrix(b, ctx, "wk", d, d, Role::In)?;
        let wv = kit::matrix(b, ctx, "wv", d, d, Role::In)?;
        let w_decay = b.weight(
            "w_decay",
            &[d],
            Init::Ramp {
                from: -5.0,
                to: 2.0,
                power: 0.7,
            },
            ParamGroup::Scalar,
        )?;
        let wo = kit::matrix(b, ctx, "wo", d, d, Role::Out)?;
        let r = b.matmul("r_in", s, wr)?;
        let r = b.unary("receptance", r, UnaryKind::Sigmoid)?;
        let k = b.matmul("key", s, wk)?;
        let k = b.op1(Clamp { min: -60.0, max: 30.0 }, &[k], "key_clamped")?;
        let ek = b.unary("key_weight", k, UnaryKind::Exp)?;
        let v = b.matmul("value", s, wv)?;
        let w = b.unary("decay_speed", w_decay, UnaryKind::Exp)?;
        let w = b.unary("decay_log", w, UnaryKind::Neg)?;
        let w = b.unary("decay", w, UnaryKind::Exp)?;
        let kv = b.mul("weighted_value", ek, v)?;
        let chunk = ctx.dims.scan_chunk;
        let num = b.op1(DecayScan { chunk }, &[kv, w], "numerator")?;
        let den = b.op1(DecayScan { chunk }, &[ek, w], "denominator")?;
        let den = b.scalar("denominator_eps", den, ScalarKind::Add, 1e-6)?;
        let avg = b.op1(Binary(BinaryKind::Div), &[num, den], "wkv")?;
        let y = b.mul("gated_wkv", r, avg)?;
        let y = b.matmul("time_mix_out", y, wo)?;
        b.add("time_mix_residual", x, y)
    }

    fn channel_mix(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let d = ctx.dims.model_dim;
        let s = shift_mix(b, x, "mu2")?;
        let wr = kit::matrix(b, ctx, "wr2", d, d, Role::In)?;
        let wk = kit::matrix(b, ctx, "wk2", d, d, Role::In)?;
        let wv = kit::matrix(b, ctx, "wv2", d, d, Role::Out)?;
        let r = b.matmul("r2_in", s, wr)?;
        let r = b.unary("receptance2", r, UnaryKind::Sigmoid)?;
        let k = b.matmul("key2", s, wk)?;
        let k = b.unary("key2_relu", k, UnaryKind::Relu)?;
        let k = b.unary("key2_sq", k, UnaryKind::Square)?;
        let v = b.matmul("value2", k, wv)?;
        let y = b.mul("channel_mix_out", r, v)?;
        b.add("channel_mix_residual", x, y)
    }
}

impl Block for Rwkv {
    fn kind(&self) -> &'static str {
        "rwkv"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let x = self.time_mix(b, x, ctx)?;
        self.channel_mix(b, x, ctx)
    }
}
