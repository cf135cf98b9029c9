//! Shape ops with symbolic dimensions resolved from this call's batch size and length.

use super::Ctx;
use mixsweep_mlx::{Array, Dtype, Result};
use mixsweep_model::ops::{Concat, Full, Reshape, Slice, Split};

pub fn reshape(r: &Reshape, x: &Array, ctx: &Ctx<'_>) -> Result<Array> {
    let shape: Vec<i32> = r
        .shape
        .iter()
        .map(|d| d.resolve(ctx.batch, ctx.seq) as i32)
        .collect();
    x.reshape(&shape)
}

pub fn concat(c: &Concat, inputs: &[Array]) -> Result<Array> {
    let refs: Vec<&Array> = inputs.iter().collect();
    mixsweep_mlx::concatenate(&refs, c.axis as i32)
}

pub fn split(s: &Split, x: &Array) -> Result<Vec<Array>> {
    let mut at = vec![];
    let mut end = 0;
    for n in &s.sizes[..s.sizes.len() - 1] {
        end += *n as i32;
        at.push(end);
    }
    mixsweep_mlx::split(x, &at, -1)
}

pub fn slice(s: &Slice, x: &Array) -> Result<Array> {
    let n = x.ndim();
    let axis = if s.axis < 0 {
        n as i64 + s.axis
    } else {
        s.axis
    } as usize;
    let mut start = vec![0i32; n];
    let mut stop: Vec<i32> = x.shape().iter().map(|&d| d as i32).collect();
    let mut step = vec![1i32; n];
    start[axis] = s.start as i32;
    stop[axis] = s.end as i32;
    step[axis] = s.step as i32;
    x.slice(&start, &stop, &step)
}

pub fn full(f: &Full, ctx: &Ctx<'_>) -> Result<Array> {
    let shape: Vec<usize> = f
        .shape
        .iter()
        .map(|d| d.resolve(ctx.batch, ctx.seq))
        .collect();
    Array::full(&shape, f.value, Dtype::F32)?.astype(ctx.dtype)
}
