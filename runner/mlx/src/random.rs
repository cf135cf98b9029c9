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

/// Boolean samples that are true with probability `p` (to 2⁻³²), from a hash of each element's
/// position and the key: murmur3's 32-bit finaliser applied to `position ^ key[0]`, then again to
/// the result `^ key[1]`. Unlike [`bernoulli`] (threefry bits, one 32-bit word per element, written
/// out) it is elementwise arithmetic on small inputs (one `arange` per axis), so `compile` fuses it
/// into its consumer: a dropout mask costs no random-number pass and no memory traffic of its own.
/// Elements more than 2³² apart share positions modulo 2³²; the hash is not for cryptography.
pub fn hashed_bernoulli(p: f32, shape: &[usize], key: &Array) -> Result<Array> {
    let rank = shape.len();
    let mut position: Option<Array> = None;
    let mut stride: u64 = 1;
    for axis in (0..rank).rev() {
        let mut dims = vec![1_i32; rank];
        dims[axis] = shape[axis] as i32;
        let along = Array::arange(0.0, shape[axis] as f64, 1.0, Dtype::U32)?.reshape(&dims)?;
        let term = along.mul(&u32_scalar(stride as u32)?)?;
        position = Some(match position {
            Some(sum) => sum.add(&term)?,
            None => term,
        });
        stride = stride.wrapping_mul(shape[axis] as u64);
    }
    let position = match position {
        Some(p) => p,
        None => Array::from_u32(&[0], &[])?,
    };
    let key = key.astype(Dtype::U32)?.reshape(&[2])?;
    let word = |i: usize| key.slice_axis(0, i, i + 1)?.reshape(&[]);
    let h = fmix32(&position.bitwise_xor(&word(0)?)?)?;
    let h = fmix32(&h.bitwise_xor(&word(1)?)?)?;
    let threshold = (f64::from(p.clamp(0.0, 1.0)) * 4_294_967_296.0).round();
    if threshold >= 4_294_967_296.0 {
        return h.greater_equal(&u32_scalar(0)?);
    }
    h.less(&u32_scalar(threshold as u32)?)?.broadcast_to(shape)
}

/// The probability [`hashed_bernoulli`] keeps an element with: `p` rounded to a multiple of 2⁻³².
pub fn hashed_bernoulli_rate(p: f32) -> f64 {
    (f64::from(p.clamp(0.0, 1.0)) * 4_294_967_296.0).round() / 4_294_967_296.0
}

fn u32_scalar(v: u32) -> Result<Array> {
    Array::from_u32(&[v], &[])
}

/// murmur3's 32-bit finaliser: a bijection of `u32` whose every output bit depends on every input bit.
fn fmix32(h: &Array) -> Result<Array> {
    let h = h.bitwise_xor(&h.right_shift(&u32_scalar(16)?)?)?;
    let h = h.mul(&u32_scalar(0x85eb_ca6b)?)?;
    let h = h.bitwise_xor(&h.right_shift(&u32_scalar(13)?)?)?;
    let h = h.mul(&u32_scalar(0xc2b2_ae35)?)?;
    h.bitwise_xor(&h.right_shift(&u32_scalar(16)?)?)
}

/// Samples indices from unnormalised log-probabilities along `axis`.
pub fn categorical(logits: &Array, axis: i32, key: &Array) -> Result<Array> {
    Array::build(|out| unsafe {
        ffi::msx_random_categorical(logits.as_ptr(), axis, key.as_ptr(), out)
    })
}
