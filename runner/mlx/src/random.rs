//! Random numbers with explicit keys (MLX's counter-based threefry PRNG): the same key gives the same
//! numbers on every device, and nothing depends on global RNG state.

use crate::array::{Array, Dtype};
use crate::{Result, ffi};

fn dims(shape: &[usize]) -> Vec<i32> {
    shape.iter().map(|&d| d as i32).collect()
}

/// A PRNG key from a seed.
pub fn key(seed: u64) -> Result<Array> {
    Array::build(|out| unsafe { ffi::msx_random_key(seed, out) })
}

/// Splits a key into `num` keys (shape `[num, 2]`).
pub fn split(key: &Array, num: usize) -> Result<Array> {
    Array::build(|out| unsafe { ffi::msx_random_split(key.as_ptr(), num as i32, out) })
}

/// Uniform samples in `[0, 1)`.
pub fn uniform(shape: &[usize], dtype: Dtype, key: &Array) -> Result<Array> {
    let d = dims(shape);
    Array::build(|out| unsafe {
        ffi::msx_random_uniform(d.as_ptr(), d.len(), dtype as i32, key.as_ptr(), out)
    })
}

/// Standard normal samples.
pub fn normal(shape: &[usize], dtype: Dtype, key: &Array) -> Result<Array> {
    let d = dims(shape);
    Array::build(|out| unsafe {
        ffi::msx_random_normal(d.as_ptr(), d.len(), dtype as i32, key.as_ptr(), out)
    })
}

/// Boolean samples that are true with probability `p`.
pub fn bernoulli(p: f32, shape: &[usize], key: &Array) -> Result<Array> {
    let d = dims(shape);
    Array::build(|out| unsafe {
        ffi::msx_random_bernoulli(p, d.as_ptr(), d.len(), key.as_ptr(), out)
    })
}

/// Samples indices from unnormalised log-probabilities along `axis`.
pub fn categorical(logits: &Array, axis: i32, key: &Array) -> Result<Array> {
    Array::build(|out| unsafe {
        ffi::msx_random_categorical(logits.as_ptr(), axis, key.as_ptr(), out)
    })
}
