//! Differential attention (DIFF Transformer, Ye et al. 2024) for `plain` blocks with
//! `differential_attention: true`: mixlab's field names, defaults and validation.
//!
//! ```text
//! per head (hd = model_dim / heads, s = hd / 2):
//!   q1, q2 = q[..., :s], q[..., s:]    k1, k2 likewise     (RoPE on each sub-map: rope_dims <= s)
//!   A_i = softmax(q_i·k_iᵀ / sqrt(s) + causal/window mask)
//!   λ = exp(clamp(λq1·λk1, ±5)) − exp(clamp(λq2·λk2, ±5)) + λ_init   (λq/λk [s], init N(0, 0.1);
//!                                                                  one λ per layer, all heads)
//!   c = RMSNorm_hd((A_1 − λ·A_2) · v) · (1 − λ_init)      (subln_scale [hd], eps 1e-3)
//! λ_init = differential_lambda_init, default 0.8 − 0.6·exp(−0.3·depth), depth = block index + 1
//! ```
//! `heads` counts differential heads: a baseline of N ordinary heads matches at N/2. The difference
//! is computed as `A_1·v − λ·(A_2·v)` (two attention ops, which keeps the fused kernel and the KV
//! cache); with attention dropout each map gets its own mask, where mixlab drops the difference with
//! one mask (same expectation). As in mixlab it does not combine with `kv_heads`, `qk_norm`,
//! `qk_gain`, `xsa` or `kv_source`, and no later block may share its keys.

use super::{BlockCtx, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, Init, ParamGroup, ValueId};
use crate::json::Fields;
use crate::ops::{
    Attention, AttentionMask, Binary, BinaryKind, Mean, NormKind, ScalarKind, Split, UnaryKind,
};

type R<T> = Result<T, BuildError>;

/// A `plain` block's differential-attention settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Differential {
    /// `differential_lambda_init`; `None`: the depth schedule.
    pub lambda_init: Option<f32>,
}

/// The clamp on each λ dot product before `exp` (mixlab's).
const LAMBDA_DOT_CLAMP: f32 = 5.0;
const SUBLN_EPS: f32 = 1e-3;

impl Differential {
    /// Reads `differential_attention` and `differential_lambda_init` and checks the head width.
    pub fn parse(f: &mut Fields<'_>, head_dim: usize) -> Result<Option<Self>, ConfigError> {
        let init = f.f64("differential_lambda_init")?;
        if !f.bool("differential_attention")?.unwrap_or(false) {
            if init.is_some() {
                return Err(f
                    .error(
                        "differential_lambda_init",
                        "differential_lambda_init only applies with differential_attention",
                    )
                    .with_hint(
                        "add \"differential_attention\": true, or remove differential_lambda_init",
                    ));
            }
            return Ok(None);
        }
        if !head_dim.is_multiple_of(2) {
            return Err(f
                .error("heads", format!("differential attention splits each head in two sub-maps: model_dim / heads = {head_dim} must be even"))
                .with_hint("`heads` counts differential heads: for a baseline with N heads, use N/2"));
        }
        let lambda_init = match init {
            Some(v) if v.is_finite() => Some(v as f32),
            Some(v) => {
                return Err(f.error(
                    "differential_lambda_init",
                    format!("differential_lambda_init={v} must be finite"),
                ));
            }
            None => None,
        };
        Ok(Some(Differential { lambda_init }))
    }

    /// Errors on the first of `(field, is set)` that is set: what differential attention does not
    /// combine with (mixlab's v1 list).
    pub fn check_conflicts(f: &Fields<'_>, conflicts: &[(&str, bool)]) -> Result<(), ConfigError> {
        match conflicts.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(f
                .error(
                    key,
                    format!("differential_attention cannot be combined with {key} (as in mixlab)"),
                )
                .with_hint(format!(
                    "remove {key} from this block, or differential_attention"
                ))),
            None => Ok(()),
        }
    }

    /// λ_init of the block at 0-based `index` in the config.
    pub fn lambda_init(&self, index: usize) -> f32 {
        self.lambda_init
            .unwrap_or_else(|| (0.8 - 0.6 * (-0.3 * (index + 1) as f64).exp()) as f32)
    }

    /// The attention output `[B, H, T, hd]` from un-rotated `q`, `k` and `v` `[B, H, T, hd]`;
    /// `rope` rotates a sub-map.
    pub fn attend(
        &self,
        b: &mut Builder,
        ctx: &BlockCtx<'_>,
        (q, k, v): (ValueId, ValueId, ValueId),
        mask: AttentionMask,
        rope: &dyn Fn(&mut Builder, ValueId, &str) -> R<ValueId>,
    ) -> R<ValueId> {
        let hd = b.width(q);
        let s = hd / 2;
        let halves = |b: &mut Builder, x: ValueId, name: &str| -> R<(ValueId, ValueId)> {
            let parts = b.op(Split { sizes: vec![s, s] }, &[x], &format!("{name}_halves"))?;
            Ok((
                rope(b, parts[0], &format!("{name}1_rope"))?,
                rope(b, parts[1], &format!("{name}2_rope"))?,
            ))
        };
        let (q1, q2) = halves(b, q, "q")?;
        let (k1, k2) = halves(b, k, "k")?;
        let map = |b: &mut Builder, q: ValueId, k: ValueId, name: &str| {
            let attn = Attention {
                scale: 1.0 / (s as f32).sqrt(),
                mask,
                dropout: ctx.dims.attn_dropout,
                ordinal: b.reserve_dropout(ctx.dims.attn_dropout),
            };
            b.op1(attn, &[q, k, v], name)
        };
        let c1 = map(b, q1, k1, "attention_1")?;
        let c2 = map(b, q2, k2, "attention_2")?;
        let lambda_init = self.lambda_init(ctx.config_index);
        let lambda = lambda(b, s, lambda_init)?;
        let c2 = b.mul("attention_2_weighted", c2, lambda)?;
        let c = b.op1(Binary(BinaryKind::Sub), &[c1, c2], "differential")?;
        let c = kit::norm_with(b, "subln_scale", c, NormKind::Rms, SUBLN_EPS, true)?;
        b.scalar("differential_scaled", c, ScalarKind::Mul, 1.0 - lambda_init)
    }
}

/// `λ [1]` from the four learned vectors `lambda_{q,k}{1,2} [s]`.
fn lambda(b: &mut Builder, s: usize, lambda_init: f32) -> R<ValueId> {
    let exp_dot = |b: &mut Builder, i: usize| -> R<ValueId> {
        let init = Init::Normal { std: 0.1 };
        let lq = b.weight(&format!("lambda_q{i}"), &[s], init, ParamGroup::Scalar)?;
        let lk = b.weight(&format!("lambda_k{i}"), &[s], init, ParamGroup::Scalar)?;
        let prod = b.mul(&format!("lambda_prod{i}"), lq, lk)?;
        let one = b.reshape(
            &format!("lambda_row{i}"),
            prod,
            vec![Dim::Fixed(1), Dim::Fixed(s)],
        )?;
        let mean = b.op1(Mean { axis: 1 }, &[one], &format!("lambda_mean{i}"))?;
        let dot = b.scalar(&format!("lambda_dot{i}"), mean, ScalarKind::Mul, s as f32)?;
        let lo = b.scalar(
            &format!("lambda_dot{i}_lo"),
            dot,
            ScalarKind::Max,
            -LAMBDA_DOT_CLAMP,
        )?;
        let clamped = b.scalar(
            &format!("lambda_dot{i}_clamped"),
            lo,
            ScalarKind::Min,
            LAMBDA_DOT_CLAMP,
        )?;
        b.unary(&format!("lambda_exp{i}"), clamped, UnaryKind::Exp)
    };
    let e1 = exp_dot(b, 1)?;
    let e2 = exp_dot(b, 2)?;
    let diff = b.op1(Binary(BinaryKind::Sub), &[e1, e2], "lambda_diff")?;
    b.scalar("lambda", diff, ScalarKind::Add, lambda_init)
}
