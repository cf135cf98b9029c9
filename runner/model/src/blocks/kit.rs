//! The block authoring kit: what most blocks need besides their own math.
//!
//! * [`norm`]: a norm with the model's settings (RMSNorm or LayerNorm, affine or not), its weights
//!   named `name` (scale, init 1) and `name_bias` (init 0).
//! * [`residual`]: `x + scale ⊙ dropout(F(·))` with the model's norm placement (pre, post, sandwich)
//!   and block scales.
//! * [`ffn_weights`]: the `[D, F]` / `[F, D]` matrices of a feed-forward block, with the model's init.
//! * Field readers for the common shapes of block options are on [`crate::json::Fields`].

use super::{BlockCtx, Placement, Role};
use crate::ir::{BuildError, Builder, Init, ParamGroup, ValueId};
use crate::ops::{Norm, NormKind};

type R<T> = Result<T, BuildError>;

/// A norm over the last axis with the model's settings; weights `name` (scale) and `name_bias`.
pub fn norm(b: &mut Builder, ctx: &BlockCtx<'_>, name: &str, x: ValueId) -> R<ValueId> {
    let s = ctx.dims.norm;
    norm_with(b, name, x, s.kind, s.eps, s.affine)
}

/// A norm of a given kind (for blocks whose math fixes it, e.g. qk-norm's RMSNorm with eps 1e-5).
pub fn norm_with(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    kind: NormKind,
    eps: f32,
    affine: bool,
) -> R<ValueId> {
    let d = b.width(x);
    let mut inputs = vec![x];
    if affine {
        inputs.push(b.weight(name, &[d], Init::Constant(1.0), ParamGroup::Scalar)?);
        if kind == NormKind::Layer {
            inputs.push(b.weight(
                &format!("{name}_bias"),
                &[d],
                Init::Constant(0.0),
                ParamGroup::Scalar,
            )?);
        }
    }
    b.op1(Norm { kind, eps }, &inputs, &format!("{name}_out"))
}

/// Names of a residual branch's weights and values.
pub struct ResidualNames<'a> {
    /// The input norm's weight (pre and sandwich placements).
    pub norm: &'a str,
    /// The output norm's weight (post and sandwich placements).
    pub post_norm: &'a str,
    /// The per-channel scale (`block_scales`), e.g. `attn_scale`.
    pub scale: &'a str,
    /// Prefix of the value names (`ffn`, `attention`).
    pub label: &'a str,
}

/// `x + scale ⊙ dropout(F(h))` with `h` and the output normalised as the model's placement says.
pub fn residual(
    b: &mut Builder,
    ctx: &BlockCtx<'_>,
    x: ValueId,
    names: ResidualNames<'_>,
    f: impl FnOnce(&mut Builder, ValueId) -> R<ValueId>,
) -> R<ValueId> {
    let placement = ctx.dims.norm.placement;
    let h = match placement {
        Placement::Pre | Placement::Sandwich => norm(b, ctx, names.norm, x)?,
        Placement::Post => x,
    };
    let y = f(b, h)?;
    let y = match placement {
        Placement::Post | Placement::Sandwich => norm(b, ctx, names.post_norm, y)?,
        Placement::Pre => y,
    };
    add_branch(b, ctx, x, y, names.scale, names.label)
}

/// `x + scale ⊙ dropout(y)`: the end of every residual branch.
pub fn add_branch(
    b: &mut Builder,
    ctx: &BlockCtx<'_>,
    x: ValueId,
    y: ValueId,
    scale: &str,
    label: &str,
) -> R<ValueId> {
    let y = b.dropout(&format!("{label}_dropout"), y, ctx.dims.dropout)?;
    let y = block_scale(b, ctx, y, scale)?;
    b.add(&format!("{label}_residual"), x, y)
}

/// `y ⊙ scale` with a learned per-channel `scale` when the model has `block_scales`; its init is the
/// block's `residual_scale_init` (default 1).
pub fn block_scale(b: &mut Builder, ctx: &BlockCtx<'_>, y: ValueId, name: &str) -> R<ValueId> {
    if !ctx.dims.block_scales {
        return Ok(y);
    }
    let d = b.width(y);
    let init = ctx.residual_scale_init.unwrap_or(1.0);
    let s = b.weight(name, &[d], Init::Constant(init), ParamGroup::Scalar)?;
    b.mul(&format!("{name}_out"), y, s)
}

/// A `[fan_in, fan_out]` matrix with the model's init for its role.
pub fn matrix(
    b: &mut Builder,
    ctx: &BlockCtx<'_>,
    name: &str,
    fan_in: usize,
    fan_out: usize,
    role: Role,
) -> R<ValueId> {
    b.matrix(name, fan_in, fan_out, ctx.init(role, fan_in))
}

/// The norm before a feed-forward down-projection, when the model has `ffn_internal_norm`.
pub fn ffn_internal_norm(b: &mut Builder, ctx: &BlockCtx<'_>, a: ValueId) -> R<ValueId> {
    if ctx.dims.norm.ffn_internal {
        norm(b, ctx, "ffn_internal_norm", a)
    } else {
        Ok(a)
    }
}

/// The `heads` field of a block that splits `model_dim` into heads: required unless `default` is
/// given, > 0 and a divisor of `model_dim`.
pub fn heads(
    f: &mut crate::json::Fields<'_>,
    model_dim: usize,
    kind: &str,
    default: Option<usize>,
) -> Result<usize, crate::error::ConfigError> {
    let heads = match (f.usize("heads")?, default) {
        (Some(h), _) => h,
        (None, Some(d)) => d,
        (None, None) => {
            return Err(f
                .error("heads", format!("a {kind} block needs `heads`"))
                .with_hint("add e.g. \"heads\": 4 (model_dim must be divisible by it)"));
        }
    };
    if heads == 0 || !model_dim.is_multiple_of(heads) {
        return Err(f.error(
            "heads",
            format!("heads={heads} must be > 0 and divide model_dim={model_dim}"),
        ));
    }
    Ok(heads)
}

/// `x + SiLU(x · ff1 [D, 2D]) · ff2 [2D, D]`: the un-normalised FFN tail of mixlab's retnet,
/// perceiver and cross-attention blocks.
pub fn silu_tail(b: &mut Builder, ctx: &BlockCtx<'_>, x: ValueId) -> R<ValueId> {
    let d = ctx.dims.model_dim;
    let ff1 = matrix(b, ctx, "ff1", d, 2 * d, Role::In)?;
    let ff2 = matrix(b, ctx, "ff2", 2 * d, d, Role::Out)?;
    let u = b.matmul("ff1_out", x, ff1)?;
    let a = b.unary("ff_act", u, crate::ops::UnaryKind::Silu)?;
    let y = b.matmul("ff2_out", a, ff2)?;
    b.add("ffn_residual", x, y)
}

/// The `dt_min`, `dt_max` fields of an SSM block (Mamba's defaults 0.001 and 0.1), checked
/// `0 < dt_min <= dt_max`.
pub fn dt_range(f: &mut crate::json::Fields<'_>) -> Result<(f32, f32), crate::error::ConfigError> {
    let dt_min = f.f64("dt_min")?.unwrap_or(0.001);
    let dt_max = f.f64("dt_max")?.unwrap_or(0.1);
    if !(dt_min > 0.0 && dt_min <= dt_max) {
        return Err(f.error(
            "dt_min",
            format!("need 0 < dt_min <= dt_max (got dt_min={dt_min}, dt_max={dt_max})"),
        ));
    }
    Ok((dt_min as f32, dt_max as f32))
}
