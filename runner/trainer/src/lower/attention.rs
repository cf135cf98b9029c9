//! Attention. The fused `scaled_dot_product_attention` kernel unless attention probabilities are
//! dropped in training (then scores, mask, softmax and dropout are written out). When decoding, keys
//! and values are cached and each new query sees every cached position (or the last `window`).

use super::{Ctx, State, dropout};
use mixsweep_mlx::{Array, Dtype, Result, where_};
use mixsweep_model::ops::{Attention, AttentionMask, CausalMask};

/// `keep[i, j]` (bool `[T, S]`): query `i` (at position `offset + i`, keys start at `offset + T - S`)
/// may see key `j`.
fn mask(mask: AttentionMask, t: usize, s: usize) -> Result<Option<Array>> {
    let window = match mask {
        AttentionMask::Full => return Ok(None),
        AttentionMask::SegmentPrefix { segment } => {
            let ends = segment_ends(segment, t)?.reshape(&[t as i32, 1])?;
            let k = Array::arange(0.0, s as f64, 1.0, Dtype::I32)?.reshape(&[1, s as i32])?;
            return Ok(Some(k.less_equal(&ends)?));
        }
        AttentionMask::SegmentEnds { segment } => {
            let ends = segment_ends(segment, s)?.reshape(&[1, s as i32])?;
            let q = Array::arange(0.0, t as f64, 1.0, Dtype::I32)?.reshape(&[t as i32, 1])?;
            return Ok(Some(ends.less_equal(&q)?));
        }
        AttentionMask::Causal => None,
        AttentionMask::Window(w) => Some(w),
    };
    // absolute positions: keys 0..S, queries S-T..S
    let q = Array::arange((s - t) as f64, s as f64, 1.0, Dtype::I32)?.reshape(&[t as i32, 1])?;
    let k = Array::arange(0.0, s as f64, 1.0, Dtype::I32)?.reshape(&[1, s as i32])?;
    let mut keep = k.less_equal(&q)?;
    if let Some(w) = window {
        let lo = q.sub(&Array::scalar_i32(w as i32 - 1)?)?;
        keep = keep.logical_and(&k.greater_equal(&lo)?)?;
    }
    Ok(Some(keep))
}

/// `e_j = (j + 1)·segment − 1` for `n` latents (int32 `[n]`).
fn segment_ends(segment: usize, n: usize) -> Result<Array> {
    let seg = segment as f64;
    Array::arange(seg - 1.0, seg * n as f64 - 0.5, seg, Dtype::I32)
}

/// `[B, Hk, S, d]` -> `[B, Hk·G, S, d]`, each key/value head repeated for its `G` query heads.
fn repeat_heads(x: &Array, groups: usize) -> Result<Array> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let s = x.shape();
    let (b, hk, len, d) = (s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32);
    x.expand_dims(2)?
        .broadcast_to(&[b as usize, hk as usize, groups, len as usize, d as usize])?
        .reshape(&[b, hk * groups as i32, len, d])
}

pub fn attention(a: &Attention, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let (q, mut k, mut v) = (inputs[0].clone(), inputs[1].clone(), inputs[2].clone());
    if ctx.decoding() {
        if let Some(State::Kv(pk, pv)) = ctx.state() {
            k = mixsweep_mlx::concatenate(&[pk, &k], 2)?;
            v = mixsweep_mlx::concatenate(&[pv, &v], 2)?;
        }
        ctx.save(State::Kv(k.clone(), v.clone()));
    }
    let (t, s) = (q.dim(2), k.dim(2));
    let drop_key = if a.dropout > 0.0 {
        ctx.dropout_key(a.ordinal)?
    } else {
        None
    };
    // written out: distance slopes and segment masks change the scores, and dropout acts on the
    // probabilities; the fused kernel shows neither
    let slopes = inputs.get(3);
    if slopes.is_some() || !a.mask.caches() || drop_key.is_some() || unfused() {
        return written_out(a, &q, &k, &v, slopes, drop_key.as_ref());
    }
    match (a.mask, t) {
        // one query sees every cached key
        (AttentionMask::Causal, 1) | (AttentionMask::Full, _) => {
            q.scaled_dot_product_attention(&k, &v, a.scale, false)
        }
        (AttentionMask::Causal, _) if t == s => {
            q.scaled_dot_product_attention(&k, &v, a.scale, true)
        }
        _ => {
            let keep = mask(a.mask, t, s)?.expect("causal and windowed masks exist");
            q.scaled_dot_product_attention_masked(&k, &v, a.scale, &keep)
        }
    }
}

/// `MIXSWEEP_ATTENTION=unfused` writes every attention out (for start-up and speed comparisons).
fn unfused() -> bool {
    static UNFUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNFUSED.get_or_init(|| std::env::var("MIXSWEEP_ATTENTION").is_ok_and(|v| v == "unfused"))
}

/// `dropout(softmax(q·kᵀ·scale − slope_h·(i − j) + mask)) · v` as matmuls (scores in the compute
/// dtype, float32 for float16 and slopes; softmax in float32; positions as in [`mask`]). Under a
/// segment mask a query that sees no key gets zeros, not a uniform average over keys it must not see.
fn written_out(
    a: &Attention,
    q: &Array,
    k: &Array,
    v: &Array,
    slopes: Option<&Array>,
    drop_key: Option<&Array>,
) -> Result<Array> {
    let (t, s) = (q.dim(2), k.dim(2));
    let groups = q.dim(1) / k.dim(1);
    let (k, v) = (repeat_heads(k, groups)?, repeat_heads(v, groups)?);
    // scores stay in bfloat16 (the matmul's precision; softmax computes in float32 and rounds once,
    // as float32 scores rounded afterwards did), but not in float16 (its range ends at 65504) nor
    // under distance slopes (a penalty of hundreds would lose its units digit)
    let scores_dtype = match q.dtype()? {
        Dtype::F16 => Dtype::F32,
        _ if slopes.is_some() => Dtype::F32,
        dt => dt,
    };
    let mut scores = q
        .matmul(&k.transpose(&[0, 1, 3, 2])?)?
        .mul_scalar(a.scale)?
        .astype(scores_dtype)?;
    if let Some(slopes) = slopes {
        let qpos =
            Array::arange((s - t) as f64, s as f64, 1.0, Dtype::F32)?.reshape(&[t as i32, 1])?;
        let kpos = Array::arange(0.0, s as f64, 1.0, Dtype::F32)?.reshape(&[1, s as i32])?;
        let distance = qpos.sub(&kpos)?; // [T, S]
        let penalty = slopes
            .astype(Dtype::F32)?
            .reshape(&[-1, 1, 1])?
            .mul(&distance)?; // [H, T, S]
        scores = scores.sub(&penalty.astype(scores_dtype)?)?;
    }
    let keep = mask(a.mask, t, s)?;
    if let Some(keep) = &keep {
        scores = where_(keep, &scores, &Array::scalar(-1e9, scores_dtype)?)?;
    }
    let mut p = scores.softmax(-1, true)?;
    if let (Some(keep), false) = (&keep, a.mask.caches()) {
        let sees_any = keep
            .astype(scores_dtype)?
            .sum(&[-1], true)?
            .minimum(&Array::scalar(1.0, scores_dtype)?)?;
        p = p.mul(&sees_any)?;
    }
    let p = p.astype(q.dtype()?)?;
    let p = match drop_key {
        Some(key) => dropout(&p, a.dropout, key)?,
        None => p,
    };
    p.matmul(&v)
}

/// `c - (<c, v> / (<v, v> + 1e-8)) · v` per position and head (value heads repeated).
pub fn xsa(c: &Array, v: &Array) -> Result<Array> {
    let v = repeat_heads(v, c.dim(1) / v.dim(1))?;
    let dot = c.mul(&v)?.sum(&[-1], true)?;
    let norm = v.mul(&v)?.sum(&[-1], true)?.add_scalar(1e-8)?;
    c.sub(&dot.div(&norm)?.mul(&v)?)
}

/// mixlab's explicit mask: future keys (and, with a window, keys older than it) get -1e9.
pub fn causal_mask(m: &CausalMask, scores: &Array) -> Result<Array> {
    let (t, s) = (scores.dim(-2), scores.dim(-1));
    let window = if m.window > 0 {
        AttentionMask::Window(m.window)
    } else {
        AttentionMask::Causal
    };
    let keep = mask(window, t, s)?.expect("causal masks exist");
    where_(&keep, scores, &Array::scalar(-1e9, scores.dtype()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_see_the_past_and_the_window() {
        let keep = mask(AttentionMask::Window(2), 3, 3).unwrap().unwrap();
        let v: Vec<f32> = keep.astype(Dtype::F32).unwrap().to_vec_f32().unwrap();
        assert_eq!(v, vec![1., 0., 0., 1., 1., 0., 0., 1., 1.]);
        // one query at position 4 after 4 cached keys sees the last two
        let keep = mask(AttentionMask::Window(2), 1, 5).unwrap().unwrap();
        let v: Vec<f32> = keep.astype(Dtype::F32).unwrap().to_vec_f32().unwrap();
        assert_eq!(v, vec![0., 0., 0., 1., 1.]);
    }

    /// The written-out form in each compute dtype against the fused kernel in float32 (grouped heads).
    #[test]
    fn written_out_attention_matches_the_fused_kernel_in_every_dtype() {
        use mixsweep_mlx::random;
        let keys = random::split(&random::key(5).unwrap(), 3).unwrap();
        let draw = |i: usize, heads: usize| {
            let key = keys.slice_axis(0, i, i + 1).unwrap().reshape(&[2]).unwrap();
            random::normal(&[2, heads, 24, 16], Dtype::F32, &key).unwrap()
        };
        let (q, k, v) = (draw(0, 4), draw(1, 2), draw(2, 2));
        let a = Attention {
            scale: 0.25,
            mask: AttentionMask::Causal,
            dropout: 0.0,
            ordinal: 0,
        };
        let (kr, vr) = (repeat_heads(&k, 2).unwrap(), repeat_heads(&v, 2).unwrap());
        let want = q
            .scaled_dot_product_attention(&kr, &vr, 0.25, true)
            .unwrap();
        let want = want.to_vec_f32().unwrap();
        for (dt, tol) in [(Dtype::F32, 1e-5), (Dtype::Bf16, 3e-2), (Dtype::F16, 4e-3)] {
            let cast = |x: &Array| x.astype(dt).unwrap();
            let got = written_out(&a, &cast(&q), &cast(&k), &cast(&v), None, None).unwrap();
            assert_eq!(got.dtype().unwrap(), dt);
            let got = got.astype(Dtype::F32).unwrap().to_vec_f32().unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0_f32, f32::max);
            assert!(worst < tol, "{dt:?}: largest difference {worst}");
        }
    }
}
