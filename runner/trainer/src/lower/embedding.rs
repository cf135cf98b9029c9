//! Table lookups: token embeddings (a one-hot matmul for small vocabularies), embedding bags,
//! learned positions, hashed n-gram ids.

use super::{Ctx, State};
use mixsweep_mlx::{Array, Dtype, Result};
use mixsweep_model::ops::NgramHash;

/// Vocabularies up to this size embed tokens with a one-hot matmul instead of a gather.
/// `MIXSWEEP_EMBEDDING=gather|matmul` overrides the choice (for benchmarks).
pub const EMBEDDING_MATMUL_MAX_VOCAB: usize = 1024;

fn embedding_as_matmul(vocab: usize) -> bool {
    match std::env::var("MIXSWEEP_EMBEDDING").as_deref() {
        Ok("gather") => false,
        Ok("matmul") => true,
        _ => vocab <= EMBEDDING_MATMUL_MAX_VOCAB,
    }
}

fn int_ids(ids: &Array) -> Result<Array> {
    if ids.dtype()?.is_float() {
        ids.astype(Dtype::I32)
    } else {
        Ok(ids.clone())
    }
}

/// `table[ids]`. A float table that is a weight: for a small vocabulary a one-hot matmul (its
/// backward is a dense matmul instead of a scatter-add whose atomics serialise on the few ids that
/// dominate real text), else a gather from the float32 master cast to the compute dtype (so the
/// backward pass is a float32 scatter-add). Integer tables (character maps) are plain gathers.
pub fn embedding(inputs: &[Array], ctx: &Ctx<'_>) -> Result<Array> {
    let (table, ids) = (&inputs[0], int_ids(&inputs[1])?);
    if !table.dtype()?.is_float() {
        return table.take(&ids, 0);
    }
    let vocab = table.dim(0);
    if embedding_as_matmul(vocab) {
        let classes = Array::arange(0.0, vocab as f64, 1.0, Dtype::I32)?;
        let one_hot = ids.expand_dims(-1)?.equal(&classes)?.astype(ctx.dtype)?;
        return one_hot.matmul(table);
    }
    let master = ctx.masters.get(&ctx.input_ids[0]).unwrap_or(table);
    let rows = master.take(&ids, 0)?;
    if rows.dtype()? == ctx.dtype {
        Ok(rows)
    } else {
        rows.astype(ctx.dtype)
    }
}

/// `Σ_k [ids_k > 0] · table[ids_k]` over the last axis of `ids`.
pub fn bag(inputs: &[Array], ctx: &Ctx<'_>) -> Result<Array> {
    let (table, ids) = (&inputs[0], int_ids(&inputs[1])?);
    let rows = table.take(&ids, 0)?; // [..., K, D]
    let keep = ids
        .greater(&Array::scalar_i32(0)?)?
        .astype(rows.dtype()?)?
        .expand_dims(-1)?;
    rows.mul(&keep)?.sum(&[-2], false)?.astype(ctx.dtype)
}

/// Rows `offset..offset + T` of the position table, `[1, T, D]`.
pub fn positions(inputs: &[Array], ctx: &Ctx<'_>) -> Result<Array> {
    let (table, t) = (&inputs[0], inputs[1].dim(1));
    let start = ctx.offset();
    if start + t > table.dim(0) {
        return Err(mixsweep_mlx::Error::new(format!(
            "position {} is past max_positions={}",
            start + t,
            table.dim(0)
        )));
    }
    table.slice_axis(0, start, start + t)?.expand_dims(0)
}

/// mixlab's hashed bigram/trigram ids within each row (see `NgramHash`). When decoding, the last
/// `n - 1` tokens of the previous call stand before this call's tokens.
pub fn ngram_hash(op: &NgramHash, inputs: &[Array], ctx: &mut Ctx<'_>) -> Result<Array> {
    let tokens = inputs[0].astype(Dtype::I64)?;
    let (b, t) = (tokens.dim(0), tokens.dim(1));
    let ctx_len = op.n - 1;
    let history = match ctx.state() {
        Some(State::Tail(h)) => h.clone(),
        _ => Array::zeros(&[b, ctx_len], Dtype::I64)?,
    };
    let ext = mixsweep_mlx::concatenate(&[&history, &tokens], 1)?; // [B, n-1 + T]
    if ctx.decoding() {
        let total = ext.dim(1);
        ctx.save(State::Tail(ext.slice_axis(1, total - ctx_len, total)?));
    }
    let at = |back: usize| ext.slice_axis(1, ctx_len - back, ctx_len - back + t);
    let size = op.size as i64;
    let i64s = |v: i64| Array::scalar(v as f32, Dtype::F32)?.astype(Dtype::I64);
    let modulus = i64s(size - 1)?;
    let hashed = if op.n == 2 {
        let a = at(0)?.mul(&i64s(36313)?)?;
        let p = at(1)?.mul(&i64s(27191)?)?;
        a.bitwise_xor(&p)?.remainder(&modulus)?
    } else {
        let s = i64s(size)?;
        at(2)?
            .mul(&s)?
            .add(&at(1)?)?
            .mul(&s)?
            .add(&at(0)?)?
            .remainder(&modulus)?
            .add(&i64s(1)?)?
    };
    // positions before the n-gram fits in the row get the sentinel
    let sentinel = if op.n == 2 { size - 1 } else { 0 };
    let pos = Array::arange(
        ctx.offset() as f64,
        (ctx.offset() + t) as f64,
        1.0,
        Dtype::I32,
    )?;
    let early = pos
        .less(&Array::scalar_i32(ctx_len as i32)?)?
        .reshape(&[1, t as i32])?;
    mixsweep_mlx::where_(&early, &i64s(sentinel)?, &hashed)?.astype(Dtype::I32)
}
