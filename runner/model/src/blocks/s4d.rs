//! `s4d`: the diagonal linear time-invariant state-space mixer S4D (Gu et al. 2022) with S4D-Lin
//! initialisation and zero-order-hold discretisation, as mixlab's default `s4d`.
//!
//! ```text
//! h   = Norm(x)                                   (the model's norm, weights s4d_norm)
//! per channel d and state pair n (P = state_size / 2):
//!   Δ = exp(s4d_log_dt [D]),   A = −exp(s4d_log_A_real) + i·s4d_A_imag     ([G, P], channel d uses
//!                                                                        group d mod G, G = n_ssm)
//!   λ = exp(Δ A),   C' = C · (λ − 1) / A           (C = s4d_C_real + i·s4d_C_imag [D, P]; B = 1)
//!   s_t = λ s_{t−1} + h_t                          (complex state)
//!   y_t = 2·Re(Σ_n C'_n s_t,n) + s4d_D ⊙ h_t
//! out = GELU_tanh(y)                 (output_transform "none", the default), or with "glu":
//! out = GLU(dropout(GELU(y)) · s4d_out_proj [D, 2D] + s4d_out_bias)
//! x   = x + out                      (the model's placement, block scales and residual dropout)
//! ```
//! Init (S4D-Lin): `log_dt ~ U[log dt_min, log dt_max]`, `log_A_real = log ½`, `A_imag = freq_scale·π·n`,
//! `C ~ N(0, ½)` per component, `D ~ N(0, 1)`. Fields: `state_size` (64, even), `n_ssm` (D, divides D),
//! `dt_min`/`dt_max` (0.001/0.1), `freq_scale` (1), `init` ("s4d-lin" only), `output_transform`
//! ("none" | "glu"). The SSM parameters are in the scalar group (AdamW, no decay), as mixlab's.
//!
//! The SSM is one `lti_conv` op (the same function as mixlab's FFT convolution): training runs it as
//! a causal convolution with the kernel `K[d, k] = 2·Re(Σ_n C'_n λ_n^k)` computed once per step (a
//! Toeplitz matmul, `2·D·T²` multiply-adds per sequence; nothing of size `B·T·D·P`), and cached
//! generation continues the complex state `[B, D, P]` (constant size per sequence). Until 2026-12-02
//! it ran as three real decay scans over `B·T·D·P` (0.04x GQA's tokens/s on an H200).
//! Not supported (refused with a message): `bidirectional`, `discretization: "bilinear"`,
//! `trainable_b`, `sobolev_filter`, `state_lr`.

use super::kit::{self, ResidualNames};
use super::{Block, BlockCtx, BlockType, ModelDims, Role};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{Binary, BinaryKind, Concat, LtiConv, ScalarKind, Split, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "s4d",
    parse,
    fields: &[
        "state_size",
        "n_ssm",
        "dt_min",
        "dt_max",
        "freq_scale",
        "init",
        "output_transform",
        "discretization",
        "bidirectional",
        "trainable_b",
        "sobolev_filter",
        "state_lr",
    ],
    summary: "S4D: diagonal linear time-invariant SSM (S4D-Lin, zero-order hold)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct S4d {
    pub pairs: usize,
    pub groups: usize,
    pub dt_min: f32,
    pub dt_max: f32,
    pub freq_scale: f32,
    pub glu: bool,
}

fn refuse(f: &Fields<'_>, key: &str, why: &str) -> ConfigError {
    f.error(key, format!("{why} is not supported by mixsweep's s4d"))
        .with_hint("remove the field (mixsweep's s4d is the causal S4D-Lin, zero-order hold, B = 1)")
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let state_size = f.positive("state_size", 64)?;
    if !state_size.is_multiple_of(2) {
        return Err(f
            .error("state_size", format!("state_size={state_size} must be even"))
            .with_hint("S4D keeps conjugate pairs of poles; use e.g. 64"));
    }
    let groups = f.positive("n_ssm", dims.model_dim)?;
    if !dims.model_dim.is_multiple_of(groups) {
        return Err(f
            .error("n_ssm", format!("n_ssm={groups} does not divide model_dim={}", dims.model_dim))
            .with_hint("use a divisor of model_dim (default: model_dim, one SSM per channel)"));
    }
    let dt_min = f.f64("dt_min")?.unwrap_or(0.001);
    let dt_max = f.f64("dt_max")?.unwrap_or(0.1);
    if !(dt_min > 0.0 && dt_max > dt_min) {
        return Err(f.error(
            "dt_min",
            format!("need 0 < dt_min < dt_max (got dt_min={dt_min}, dt_max={dt_max})"),
        ));
    }
    let freq_scale = f.f64("freq_scale")?.unwrap_or(1.0);
    if let Some(init) = f.string("init")?
        && init.trim().to_lowercase() != "s4d-lin"
    {
        return Err(f
            .error("init", format!("init \"{init}\" is not supported"))
            .with_hint("use \"s4d-lin\" (the default)"));
    }
    let glu = match f.string("output_transform")?.as_deref().map(str::trim) {
        None | Some("") | Some("none") => false,
        Some("glu") => true,
        Some(other) => {
            return Err(f
                .error("output_transform", format!("unknown output_transform \"{other}\""))
                .with_hint("use \"none\" (GELU) or \"glu\""));
        }
    };
    if let Some(d) = f.string("discretization")?
        && d.trim().to_lowercase() != "zoh"
    {
        return Err(refuse(f, "discretization", &format!("discretization \"{d}\"")));
    }
    if f.bool("bidirectional")?.unwrap_or(false) {
        return Err(refuse(f, "bidirectional", "a bidirectional (non-causal) s4d"));
    }
    if f.bool("trainable_b")?.unwrap_or(false) {
        return Err(refuse(f, "trainable_b", "a trainable B"));
    }
    for key in ["sobolev_filter", "state_lr"] {
        if f.raw(key).is_some() {
            return Err(refuse(f, key, &format!("`{key}`")));
        }
    }
    Ok(Box::new(S4d {
        pairs: state_size / 2,
        groups,
        dt_min: dt_min as f32,
        dt_max: dt_max as f32,
        freq_scale: freq_scale as f32,
        glu,
    }))
}

type R<T> = Result<T, BuildError>;


/// The SSM's per-channel constants: `|λ|`, `θ = Δ·Im(A)` and `C'` (real, imaginary), all `[D, P]`.
struct Constants {
    decay: ValueId,
    theta: ValueId,
    c_re: ValueId,
    c_im: ValueId,
}

impl S4d {
    /// `[G, P]` -> `[D, P]`, channel d reading group d mod G.
    fn per_channel(&self, b: &mut Builder, d: usize, v: ValueId, name: &str) -> R<ValueId> {
        if self.groups == d {
            return Ok(v);
        }
        let copies = vec![v; d / self.groups];
        b.op1(Concat { axis: 0 }, &copies, name)
    }

    fn constants(&self, b: &mut Builder, d: usize) -> R<Constants> {
        let (g, p) = (self.groups, self.pairs);
        let lo = self.dt_min.ln();
        let hi = self.dt_max.ln();
        let log_dt = b.weight("s4d_log_dt", &[d], Init::UniformRange { lo, hi }, ParamGroup::Scalar)?;
        let half = Init::Constant(0.5f32.ln());
        let log_a_re = b.weight("s4d_log_A_real", &[g, p], half, ParamGroup::Scalar)?;
        let top = std::f32::consts::PI * self.freq_scale * (p.max(2) - 1) as f32;
        let a_im = b.weight("s4d_A_imag", &[g, p], Init::Ramp { from: 0.0, to: top, power: 1.0 }, ParamGroup::Scalar)?;
        let c_std = Init::Normal { std: 0.5f32.sqrt() };
        let c_re = b.weight("s4d_C_real", &[d, p], c_std, ParamGroup::Scalar)?;
        let c_im = b.weight("s4d_C_imag", &[d, p], c_std, ParamGroup::Scalar)?;
        let dt = b.unary("dt", log_dt, UnaryKind::Exp)?;
        let dt = b.reshape("dt_col", dt, vec![Dim::Fixed(d), Dim::Fixed(1)])?;
        let a_re = b.unary("a_re_pos", log_a_re, UnaryKind::Exp)?;
        let a_re = b.scalar("a_re_g", a_re, ScalarKind::Mul, -1.0)?;
        let a_re = self.per_channel(b, d, a_re, "a_re")?;
        let a_im = self.per_channel(b, d, a_im, "a_im")?;
        let log_decay = b.mul("dt_a_re", dt, a_re)?;
        let decay = b.unary("decay", log_decay, UnaryKind::Exp)?; // |λ|
        let theta = b.mul("theta", dt, a_im)?;
        // (λ − 1) / A = num · conj(A) / |A|², num = |λ|cos θ − 1 + i |λ| sin θ
        let cos = b.unary("theta_cos", theta, UnaryKind::Cos)?;
        let sin = b.unary("theta_sin", theta, UnaryKind::Sin)?;
        let n_re = b.mul("lambda_re", decay, cos)?;
        let n_re = b.scalar("num_re", n_re, ScalarKind::Add, -1.0)?;
        let n_im = b.mul("num_im", decay, sin)?;
        let a2 = b.mul("a_re_sq", a_re, a_re)?;
        let b2 = b.mul("a_im_sq", a_im, a_im)?;
        let norm = b.add("a_abs_sq", a2, b2)?;
        let (t1, t2) = (b.mul("q_re_1", n_re, a_re)?, b.mul("q_re_2", n_im, a_im)?);
        let q_re = b.add("q_re_num", t1, t2)?;
        let q_re = b.op1(Binary(BinaryKind::Div), &[q_re, norm], "q_re")?;
        let (t3, t4) = (b.mul("q_im_1", n_im, a_re)?, b.mul("q_im_2", n_re, a_im)?);
        let q_im = b.op1(Binary(BinaryKind::Sub), &[t3, t4], "q_im_num")?;
        let q_im = b.op1(Binary(BinaryKind::Div), &[q_im, norm], "q_im")?;
        let (u1, u2) = (b.mul("c_re_1", c_re, q_re)?, b.mul("c_re_2", c_im, q_im)?);
        let cp_re = b.op1(Binary(BinaryKind::Sub), &[u1, u2], "c_prime_re")?;
        let (v1, v2) = (b.mul("c_im_1", c_re, q_im)?, b.mul("c_im_2", c_im, q_re)?);
        let cp_im = b.add("c_prime_im", v1, v2)?;
        Ok(Constants { decay, theta, c_re: cp_re, c_im: cp_im })
    }

    /// `y = 2·Re(Σ_n C'_n s_t,n) + D ⊙ h` for `h [B, T, D]`.
    fn ssm(&self, b: &mut Builder, ctx: &BlockCtx<'_>, h: ValueId) -> R<ValueId> {
        let d = ctx.dims.model_dim;
        let k = self.constants(b, d)?;
        let skip = b.weight("s4d_D", &[d], Init::Normal { std: 1.0 }, ParamGroup::Scalar)?;
        let y = b.op1(
            LtiConv,
            &[h, k.decay, k.theta, k.c_re, k.c_im],
            "ssm",
        )?;
        let direct = b.mul("direct", h, skip)?;
        let y = b.add("y", y, direct)?;
        if !self.glu {
            return b.unary("gelu", y, UnaryKind::GeluTanh);
        }
        let y = b.unary("gelu", y, UnaryKind::Gelu)?;
        let y = b.dropout("glu_dropout", y, ctx.dims.dropout)?;
        let proj = kit::matrix(b, ctx, "s4d_out_proj", d, 2 * d, Role::Out)?;
        let bias = b.weight("s4d_out_bias", &[2 * d], Init::Constant(0.0), ParamGroup::Scalar)?;
        let y = b.matmul("glu_in", y, proj)?;
        let y = b.add("glu_biased", y, bias)?;
        let parts = b.op(Split { sizes: vec![d, d] }, &[y], "glu_parts")?;
        let gate = b.unary("glu_gate", parts[1], UnaryKind::Sigmoid)?;
        b.mul("glu", parts[0], gate)
    }
}

impl Block for S4d {
    fn kind(&self) -> &'static str {
        "s4d"
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let names = ResidualNames {
            norm: "s4d_norm",
            post_norm: "s4d_post_norm",
            scale: "s4d_scale",
            label: "s4d",
        };
        kit::residual(b, ctx, x, names, |b, h| self.ssm(b, ctx, h))
    }
}
