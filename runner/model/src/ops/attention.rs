//! Attention: rotary embeddings, scaled dot-product attention (causal, windowed or full; grouped-query
//! when k/v have fewer heads), XSA's value projection, and mixlab's explicit causal mask for custom
//! blocks.

use super::{Rule, arity, numel};
use crate::ir::{Dim, Shape, show};
use serde::Serialize;

/// Rotary embedding of the first `dims` features of `x [B, H, T, hd]` at positions `offset..offset+T`
/// (offset: the decode position). `adjacent_pairs`: rotate (x[2i], x[2i+1]) (mixlab's default); else
/// (x[i], x[i + dims/2]). Frequencies `base^(-2i/dims)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rope {
    pub dims: usize,
    pub base: f32,
    pub adjacent_pairs: bool,
}

impl Rule for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        let x = inputs[0];
        let hd = x.last().and_then(|d| d.fixed());
        if x.len() != 4
            || hd.is_none_or(|hd| self.dims > hd)
            || !self.dims.is_multiple_of(2)
            || self.dims == 0
        {
            return Err(format!(
                "rotates an even number (<= head dim) of features of [B, H, T, hd]; got dims={} for {}",
                self.dims,
                show(x)
            ));
        }
        Ok(vec![x.clone()])
    }
}

/// Which keys a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AttentionMask {
    /// Every key at or before the query's position.
    Causal,
    /// The last `window` keys up to the query's position (sliding window).
    Window(usize),
    /// Every key (no mask).
    Full,
    /// Latents reading tokens causally: query `j` (latent) sees key `t` (token) when `t <= e_j`,
    /// `e_j = (j + 1)·segment − 1`, the end of its segment of the sequence.
    SegmentPrefix { segment: usize },
    /// Tokens reading latents causally: query `t` sees key `j` (latent) when `e_j <= t`; a query
    /// that sees no latent (before the end of the first segment) gets zeros.
    SegmentEnds { segment: usize },
}

impl AttentionMask {
    /// Whether decoding can cache keys and values for this mask (segment masks need the whole
    /// sequence each call).
    pub fn caches(&self) -> bool {
        !matches!(
            self,
            AttentionMask::SegmentPrefix { .. } | AttentionMask::SegmentEnds { .. }
        )
    }
}

/// `dropout(softmax(q·kᵀ·scale - slope_h·(i - j) + mask)) · v` over `q [B, H, T, d]`,
/// `k [B, Hk, S, d]`, `v [B, Hk, S, dv]`; query head `h` reads key/value head `h / (H / Hk)`. The
/// optional fourth input `slopes [H]` is a per-head linear distance penalty (ALiBi; mixlab's RetNet
/// decay), `i - j` the query's distance to the key. Dropout on the attention probabilities
/// (`rate` > 0, training only) uses dropout key `ordinal`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attention {
    pub scale: f32,
    pub mask: AttentionMask,
    pub dropout: f32,
    pub ordinal: usize,
}

impl Rule for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 3, 4)?;
        let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
        let slopes_ok = inputs
            .get(3)
            .is_none_or(|s| s.len() == 1 && q.len() == 4 && s[0] == q[1]);
        let ok = slopes_ok
            && q.len() == 4
            && k.len() == 4
            && v.len() == 4
            && q[0] == k[0]
            && k[..3] == v[..3]
            && q[3] == k[3]
            && matches!((q[1], k[1]), (Dim::Fixed(h), Dim::Fixed(hk)) if hk > 0 && h % hk == 0);
        if !ok {
            return Err(format!(
                "needs q [B, H, T, d], k [B, Hk, S, d], v [B, Hk, S, dv] with Hk dividing H (and slopes [H]); got {}",
                inputs
                    .iter()
                    .map(|s| show(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(vec![vec![q[0], q[1], q[2], v[3]]])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        let (q, v) = (&inputs[0], &inputs[2]);
        let (h, t, d, s, dv) = (q[1], q[2], q[3], inputs[1][2], v[3]);
        let keys = match self.mask {
            AttentionMask::Window(w) => w.min(s),
            // mixlab's convention: the full T x S, causal or not
            _ => s,
        };
        let pairs = (q[0] * h * t * keys) as f64;
        2.0 * pairs * (d + dv) as f64
    }
    /// Keys and values of every position so far (not trimmed to a window); masks that cannot cache
    /// (segment masks) keep nothing and recompute the prefix instead.
    fn decode_state(&self, inputs: &[Vec<usize>], context: usize) -> usize {
        if !self.mask.caches() {
            return 0;
        }
        let (k, v) = (&inputs[1], &inputs[2]);
        (k[1] * k[3] + v[1] * v[3]) * context
    }
}

/// XSA: removes from each head's output its component along that position's value vector,
/// `c - (<c, v> / (<v, v> + 1e-8)) · v` (value heads repeated for grouped-query attention).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Xsa;

impl Rule for Xsa {
    fn name(&self) -> &'static str {
        "xsa"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        let (c, v) = (inputs[0], inputs[1]);
        if c.len() != 4 || v.len() != 4 || c[2] != v[2] || c[3] != v[3] {
            return Err(format!(
                "needs c [B, H, T, d] and v [B, Hk, T, d], got {} and {}",
                show(c),
                show(v)
            ));
        }
        Ok(vec![c.clone()])
    }
    fn flops(&self, _inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> f64 {
        4.0 * numel(&outputs[0])
    }
}

/// mixlab's `causal_mask` for custom blocks: scores `[..., T, T]` with every future key (and, with a
/// window, every key older than `window`) set to -1e9.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalMask {
    pub window: usize,
}

impl Rule for CausalMask {
    fn name(&self) -> &'static str {
        "causal_mask"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        let s = inputs[0];
        if s.len() < 2 {
            return Err(format!("needs scores [..., T, T], got {}", show(s)));
        }
        Ok(vec![s.clone()])
    }
}
