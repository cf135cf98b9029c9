//! `mlp`: pre-norm feed-forward `x += act(Norm(x)·w_up)·w_down` with `activation` one of `silu`
//! (default), `gelu` (tanh approximation, as mixlab), `relu`, `leaky_relu_sq` (`LeakyReLU(z, s)²`,
//! `leaky_slope` s, default 0.5).
//! As in mixlab, this block has no dropout and no block scale.

use super::kit;
use super::{Block, BlockCtx, BlockType, ModelDims, Placement, Role};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, ValueId};
use crate::json::Fields;
use crate::ops::UnaryKind;

pub const TYPE: BlockType = BlockType {
    name: "mlp",
    parse,
    fields: &["activation", "leaky_slope"],
    summary: "pre-norm FFN (silu, gelu, relu, leaky_relu_sq)",
};

#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    pub activation: UnaryKind,
}

fn parse(f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    Ok(Box::new(Mlp {
        activation: activation(f)?,
    }))
}

/// The `activation` (and `leaky_slope`) fields of an `mlp` (also a mixture's `mlp` experts).
pub(super) fn activation(f: &mut Fields<'_>) -> Result<UnaryKind, ConfigError> {
    let activation = f.choice("activation", &["silu", "gelu", "relu", "leaky_relu_sq"], "silu")?;
    let slope = match f.f64("leaky_slope")? {
        None => 0.5,
        Some(s) if (0.0..=1.0).contains(&s) => s,
        Some(s) => return Err(f.error("leaky_slope", format!("leaky_slope={s} must be in [0, 1]"))),
    };
    if activation != "leaky_relu_sq" && f.has("leaky_slope") {
        return Err(f
            .error("leaky_slope", "leaky_slope applies to activation \"leaky_relu_sq\" only")
            .with_hint("set \"activation\": \"leaky_relu_sq\" or remove leaky_slope"));
    }
    Ok(match activation {
        "silu" => UnaryKind::Silu,
        "gelu" => UnaryKind::GeluTanh,
        "relu" => UnaryKind::Relu,
        _ => UnaryKind::LeakyReluSquared { slope: slope as f32 },
    })
}

impl Mlp {
    fn ffn(&self, b: &mut Builder, ctx: &BlockCtx<'_>, h: ValueId) -> Result<ValueId, BuildError> {
        let (d, f) = (ctx.dims.model_dim, ctx.dims.ffn_dim);
        let w_up = kit::matrix(b, ctx, "w_up", d, f, Role::In)?;
        let w_down = kit::matrix(b, ctx, "w_down", f, d, Role::Out)?;
        let u = b.matmul("up", h, w_up)?;
        let a = b.unary("act", u, self.activation)?;
        let a = kit::ffn_internal_norm(b, ctx, a)?;
        b.matmul("down", a, w_down)
    }
}

impl Block for Mlp {
    fn kind(&self) -> &'static str {
        "mlp"
    }

    fn lower(
        &self,
        b: &mut Builder,
        x: ValueId,
        ctx: &BlockCtx<'_>,
    ) -> Result<ValueId, BuildError> {
        let placement = ctx.dims.norm.placement;
        let h = match placement {
            Placement::Pre | Placement::Sandwich => kit::norm(b, ctx, "ffn_norm_scale", x)?,
            Placement::Post => x,
        };
        let y = self.ffn(b, ctx, h)?;
        let y = match placement {
            Placement::Post | Placement::Sandwich => kit::norm(b, ctx, "post_ffn_norm", y)?,
            Placement::Pre => y,
        };
        b.add("ffn_residual", x, y)
    }

    fn can_join_parallel_pair(&self) -> bool {
        true
    }

    fn delta(
        &self,
        b: &mut Builder,
        h: ValueId,
        ctx: &BlockCtx<'_>,
    ) -> Option<Result<ValueId, BuildError>> {
        Some(self.ffn(b, ctx, h))
    }
}
