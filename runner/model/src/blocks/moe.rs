//! `moe`: a mixture-of-experts feed-forward block with top-k routing (mixlab's `moe`).
//!
//! ```text
//! h = RMSNorm(x)                          (moe_norm_scale [D], eps 1e-5)
//! p = softmax(h · router_w [D, E])        (float32)
//! m = top-k(p)                            (the k most probable experts of each token)
//! g = p ⊙ m / Σ_e (p ⊙ m)                 (selected probabilities renormalised)
//! x = x + Σ_e g_e ⊙ FFN_e(h)              (× moe_scale [D] with block_scales)
//! aux = load_balance_loss_weight · E · Σ_e mean_t(p_e) · mean_t(m_e) / k     (added to the loss)
//! ```
//! Fields (mixlab's): `num_experts` (required), `top_k` (default min(2, E)), `expert_block`
//! (`{"type": "swiglu"}` by default; `geglu`, or `mlp` with its `activation`), `router` (`"linear"`),
//! `load_balance_loss_weight` (0.01; 0 keeps the statistic out of the loss). Experts' weights are
//! `expert_{e}_w_gate`, `expert_{e}_w_up`, `expert_{e}_w_down` (`[D, F]`, `[D, F]`, `[F, D]`).
//! The load-balancing term is logged as `aux.<block>.load_balance` in the training metrics.
//!
//! As in mixlab, every expert is evaluated on every token and the unselected ones are weighted 0
//! (no tokens dropped, no capacity factor); `count`'s FLOPs count that dense work (mixlab counts
//! only the k active experts), so MFU reflects what the hardware did.

use super::{Block, BlockCtx, BlockType, ModelDims, Role, kit};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, ValueId};
use crate::json::Fields;
use crate::ops::{LoadBalance, NormKind, Slice, Softmax, TopK, UnaryKind};

pub const TYPE: BlockType = BlockType {
    name: "moe",
    parse,
    fields: &[
        "num_experts",
        "top_k",
        "expert_block",
        "router",
        "load_balance_loss_weight",
    ],
    summary: "mixture of feed-forward experts with top-k routing and a load-balancing loss",
};

/// One expert's feed-forward network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expert {
    /// `(act(h·w_gate) ⊙ h·w_up) · w_down` (swiglu: sigmoid, geglu: tanh-GELU).
    Gated(UnaryKind),
    /// `act(h·w_up) · w_down`.
    Plain(UnaryKind),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Moe {
    pub experts: usize,
    pub top_k: usize,
    pub expert: Expert,
    pub balance_weight: f32,
}

fn parse(f: &mut Fields<'_>, _dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let experts = f.usize("num_experts")?.ok_or_else(|| {
        f.error("num_experts", "a moe block needs `num_experts`")
            .with_hint("add e.g. \"num_experts\": 4")
    })?;
    if !(1..=64).contains(&experts) {
        return Err(f.error(
            "num_experts",
            format!("num_experts={experts} must be in 1..=64"),
        ));
    }
    let top_k = f.positive("top_k", experts.min(2))?;
    if top_k > experts {
        return Err(f.error(
            "top_k",
            format!("top_k={top_k} must be <= num_experts={experts}"),
        ));
    }
    f.choice("router", &["linear"], "linear")?;
    let balance_weight = f.f64_in("load_balance_loss_weight", 0.0, 1e3, false, 0.01)? as f32;
    let expert = match f.raw("expert_block") {
        None => Expert::Gated(UnaryKind::Sigmoid),
        Some(v) => expert(f.path_of("expert_block"), v)?,
    };
    Ok(Box::new(Moe {
        experts,
        top_k,
        expert,
        balance_weight,
    }))
}

fn expert(path: String, v: &serde_json::Value) -> Result<Expert, ConfigError> {
    let mut e = Fields::new(path, v)?;
    let kind = e.choice("type", &["swiglu", "geglu", "mlp"], "swiglu")?;
    let expert = match kind {
        "swiglu" => Expert::Gated(UnaryKind::Sigmoid),
        "geglu" => Expert::Gated(UnaryKind::GeluTanh),
        _ => Expert::Plain(super::mlp::activation(&mut e)?),
    };
    let valid: &[&str] = match kind {
        "mlp" => &["type", "activation", "leaky_slope"],
        _ => &["type"],
    };
    e.finish(valid)?;
    Ok(expert)
}

type R<T> = Result<T, BuildError>;

impl Moe {
    fn expert(&self, b: &mut Builder, ctx: &BlockCtx<'_>, h: ValueId) -> R<ValueId> {
        let (d, f) = (ctx.dims.model_dim, ctx.dims.ffn_dim);
        match self.expert {
            Expert::Gated(act) => {
                let w_gate = kit::matrix(b, ctx, "w_gate", d, f, Role::In)?;
                let w_up = kit::matrix(b, ctx, "w_up", d, f, Role::In)?;
                let w_down = kit::matrix(b, ctx, "w_down", f, d, Role::Out)?;
                let g = b.matmul("gate", h, w_gate)?;
                let g = b.unary("gate_act", g, act)?;
                let u = b.matmul("up", h, w_up)?;
                let gu = b.mul("gated", g, u)?;
                b.matmul("down", gu, w_down)
            }
            Expert::Plain(act) => {
                let w_up = kit::matrix(b, ctx, "w_up", d, f, Role::In)?;
                let w_down = kit::matrix(b, ctx, "w_down", f, d, Role::Out)?;
                let u = b.matmul("up", h, w_up)?;
                let a = b.unary("act", u, act)?;
                b.matmul("down", a, w_down)
            }
        }
    }
}

impl Block for Moe {
    fn kind(&self) -> &'static str {
        "moe"
    }

    fn routed_experts(&self) -> Option<(usize, usize)> {
        Some((self.experts, self.top_k))
    }

    fn lower(&self, b: &mut Builder, x: ValueId, ctx: &BlockCtx<'_>) -> R<ValueId> {
        let (d, e) = (ctx.dims.model_dim, self.experts);
        let h = kit::norm_with(b, "moe_norm_scale", x, NormKind::Rms, 1e-5, true)?;
        let router = kit::matrix(b, ctx, "router_w", d, e, Role::In)?;
        let logits = b.matmul("router_logits", h, router)?;
        let p = b.op1(Softmax { axis: -1 }, &[logits], "router_probs")?;
        let routed = b.op(TopK { k: self.top_k }, &[p], "routing")?;
        let (gates, selected) = (routed[0], routed[1]);
        let mut y: Option<ValueId> = None;
        for i in 0..e {
            let out = b.nested(&format!("expert_{i}_"), |b| self.expert(b, ctx, h))?;
            let slice = Slice {
                axis: -1,
                start: i,
                end: i + 1,
                step: 1,
            };
            let g = b.op1(slice, &[gates], &format!("gate_{i}"))?;
            let out = b.mul(&format!("expert_{i}_weighted"), out, g)?;
            y = Some(match y {
                Some(acc) => b.add(&format!("experts_{i}"), acc, out)?,
                None => out,
            });
        }
        let y = y.expect("at least one expert");
        if self.balance_weight > 0.0 {
            let lb = LoadBalance {
                weight: self.balance_weight,
                k: self.top_k,
            };
            let aux = b.op1(lb, &[p, selected], "load_balance")?;
            b.aux_loss("load_balance", aux);
        }
        kit::add_branch(b, ctx, x, y, "moe_scale", "moe")
    }
}
