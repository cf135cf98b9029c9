//! Operations on [`Array`]: elementwise math, reductions, shape manipulation, indexing, and MLX's
//! fused `fast::` kernels (RMSNorm, LayerNorm, RoPE, scaled dot-product attention).
//! Negative axes count from the end, as in MLX.

use crate::array::{Array, ArrayVec, Dtype};
use crate::ffi;
use crate::{Error, Result};

// `Unary`, `Binary` and `Reduce`: the op codes of src/op_codes.def, which shim.cpp includes too.
include!(concat!(env!("OUT_DIR"), "/op_codes.rs"));

fn dims(shape: &[usize]) -> Result<Vec<i32>> {
    shape
        .iter()
        .map(|&d| i32::try_from(d).map_err(|_| Error::new(format!("dimension {d} too large"))))
        .collect()
}

impl Array {
    fn unary(&self, op: Unary) -> Result<Array> {
        Array::build(|out| unsafe { ffi::msx_unary(op as i32, self.as_ptr(), out) })
    }

    fn binary(&self, other: &Array, op: Binary) -> Result<Array> {
        Array::build(|out| unsafe {
            ffi::msx_binary(op as i32, self.as_ptr(), other.as_ptr(), out)
        })
    }

    fn reduce(&self, op: Reduce, axes: &[i32], keepdims: bool) -> Result<Array> {
        Array::build(|out| unsafe {
            ffi::msx_reduce(
                op as i32,
                self.as_ptr(),
                axes.as_ptr(),
                axes.len(),
                keepdims as i32,
                out,
            )
        })
    }

    /// A scalar of this array's dtype (so that scalar math keeps bf16 in bf16).
    fn scalar_like(&self, v: f32) -> Result<Array> {
        Array::scalar(v, self.dtype()?)
    }

    pub fn neg(&self) -> Result<Array> {
        self.unary(Unary::Negative)
    }
    pub fn exp(&self) -> Result<Array> {
        self.unary(Unary::Exp)
    }
    pub fn log(&self) -> Result<Array> {
        self.unary(Unary::Log)
    }
    pub fn log1p(&self) -> Result<Array> {
        self.unary(Unary::Log1p)
    }
    pub fn sqrt(&self) -> Result<Array> {
        self.unary(Unary::Sqrt)
    }
    pub fn rsqrt(&self) -> Result<Array> {
        self.unary(Unary::Rsqrt)
    }
    pub fn square(&self) -> Result<Array> {
        self.unary(Unary::Square)
    }
    pub fn tanh(&self) -> Result<Array> {
        self.unary(Unary::Tanh)
    }
    pub fn sigmoid(&self) -> Result<Array> {
        self.unary(Unary::Sigmoid)
    }
    pub fn erf(&self) -> Result<Array> {
        self.unary(Unary::Erf)
    }
    pub fn abs(&self) -> Result<Array> {
        self.unary(Unary::Abs)
    }
    pub fn sin(&self) -> Result<Array> {
        self.unary(Unary::Sin)
    }
    pub fn cos(&self) -> Result<Array> {
        self.unary(Unary::Cos)
    }
    /// Round half to even (MLX's `round`); its gradient is zero.
    pub fn round(&self) -> Result<Array> {
        self.unary(Unary::Round)
    }
    pub fn stop_gradient(&self) -> Result<Array> {
        self.unary(Unary::StopGradient)
    }
    pub fn is_nan(&self) -> Result<Array> {
        self.unary(Unary::IsNan)
    }
    pub fn is_inf(&self) -> Result<Array> {
        self.unary(Unary::IsInf)
    }
    pub fn logical_not(&self) -> Result<Array> {
        self.unary(Unary::LogicalNot)
    }
    /// A row-major copy when the array is a strided view (e.g. after a transpose).
    pub fn contiguous(&self) -> Result<Array> {
        self.unary(Unary::Contiguous)
    }
    pub fn copy(&self) -> Result<Array> {
        self.unary(Unary::Copy)
    }

    pub fn add(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Add)
    }
    pub fn sub(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Subtract)
    }
    pub fn mul(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Multiply)
    }
    pub fn div(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Divide)
    }
    pub fn maximum(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Maximum)
    }
    pub fn minimum(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Minimum)
    }
    pub fn power(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Power)
    }
    pub fn matmul(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Matmul)
    }
    pub fn greater(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Greater)
    }
    pub fn less_equal(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::LessEqual)
    }
    pub fn greater_equal(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::GreaterEqual)
    }
    /// Bitwise exclusive or of integer arrays.
    pub fn bitwise_xor(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::BitwiseXor)
    }
    /// The remainder of integer or float division (the sign of the divisor, as NumPy's `%`).
    pub fn remainder(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Remainder)
    }
    pub fn less(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Less)
    }
    pub fn equal(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::Equal)
    }
    pub fn logaddexp(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::LogAddExp)
    }
    pub fn logical_and(&self, other: &Array) -> Result<Array> {
        self.binary(other, Binary::LogicalAnd)
    }

    pub fn add_scalar(&self, v: f32) -> Result<Array> {
        self.add(&self.scalar_like(v)?)
    }
    pub fn mul_scalar(&self, v: f32) -> Result<Array> {
        self.mul(&self.scalar_like(v)?)
    }
    pub fn maximum_scalar(&self, v: f32) -> Result<Array> {
        self.maximum(&self.scalar_like(v)?)
    }

    pub fn sum(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        self.reduce(Reduce::Sum, axes, keepdims)
    }
    /// Sum of all elements (0-d result).
    pub fn sum_all(&self) -> Result<Array> {
        let axes: Vec<i32> = (0..self.ndim() as i32).collect();
        self.reduce(Reduce::Sum, &axes, false)
    }
    pub fn mean(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        self.reduce(Reduce::Mean, axes, keepdims)
    }
    /// Mean of all elements (0-d result).
    pub fn mean_all(&self) -> Result<Array> {
        let axes: Vec<i32> = (0..self.ndim() as i32).collect();
        self.reduce(Reduce::Mean, &axes, false)
    }
    pub fn max(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        self.reduce(Reduce::Max, axes, keepdims)
    }
    pub fn min(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        self.reduce(Reduce::Min, axes, keepdims)
    }
    pub fn logsumexp(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        self.reduce(Reduce::LogSumExp, axes, keepdims)
    }
    pub fn argmax(&self, axis: i32, keepdims: bool) -> Result<Array> {
        self.reduce(Reduce::ArgMax, &[axis], keepdims)
    }
    pub fn all(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        self.reduce(Reduce::All, axes, keepdims)
    }
    pub fn any(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
        self.reduce(Reduce::Any, axes, keepdims)
    }

    /// Cumulative sum along `axis`.
    pub fn cumsum(&self, axis: i32, reverse: bool, inclusive: bool) -> Result<Array> {
        Array::build(|out| unsafe {
            ffi::msx_cumsum(self.as_ptr(), axis, reverse as i32, inclusive as i32, out)
        })
    }

    /// Softmax along `axis`; `precise` accumulates low-precision inputs in float32.
    pub fn softmax(&self, axis: i32, precise: bool) -> Result<Array> {
        Array::build(|out| unsafe { ffi::msx_softmax(self.as_ptr(), axis, precise as i32, out) })
    }

    pub fn astype(&self, dtype: Dtype) -> Result<Array> {
        Array::build(|out| unsafe { ffi::msx_astype(self.as_ptr(), dtype as i32, out) })
    }

    /// Reshape; one dimension may be `-1`.
    pub fn reshape(&self, shape: &[i32]) -> Result<Array> {
        Array::build(|out| unsafe {
            ffi::msx_reshape(self.as_ptr(), shape.as_ptr(), shape.len(), out)
        })
    }

    pub fn transpose(&self, axes: &[i32]) -> Result<Array> {
        Array::build(|out| unsafe {
            ffi::msx_transpose(self.as_ptr(), axes.as_ptr(), axes.len(), out)
        })
    }

    /// Swaps the last two axes.
    pub fn t(&self) -> Result<Array> {
        let n = self.ndim() as i32;
        let mut axes: Vec<i32> = (0..n).collect();
        axes.swap((n - 1) as usize, (n - 2) as usize);
        self.transpose(&axes)
    }

    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Array> {
        let d = dims(shape)?;
        Array::build(|out| unsafe {
            ffi::msx_broadcast_to(self.as_ptr(), d.as_ptr(), d.len(), out)
        })
    }

    pub fn expand_dims(&self, axis: i32) -> Result<Array> {
        Array::build(|out| unsafe { ffi::msx_expand_dims(self.as_ptr(), axis, out) })
    }

    /// General strided slice: `start`, `stop`, `strides` have one entry per axis.
    pub fn slice(&self, start: &[i32], stop: &[i32], strides: &[i32]) -> Result<Array> {
        let n = self.ndim();
        if start.len() != n || stop.len() != n || strides.len() != n {
            return Err(Error::new(format!(
                "slice of a {n}-d array needs {n} starts, stops and strides"
            )));
        }
        Array::build(|out| unsafe {
            ffi::msx_slice(
                self.as_ptr(),
                start.as_ptr(),
                stop.as_ptr(),
                strides.as_ptr(),
                n,
                out,
            )
        })
    }

    /// `self[..., start:stop, ...]` along one axis.
    pub fn slice_axis(&self, axis: i32, start: usize, stop: usize) -> Result<Array> {
        let shape = self.shape();
        let n = shape.len() as i32;
        let ax = if axis < 0 { n + axis } else { axis } as usize;
        if ax >= shape.len() || start > stop || stop > shape[ax] {
            return Err(Error::new(format!(
                "slice {start}..{stop} of axis {axis} in shape {shape:?}"
            )));
        }
        let mut lo = vec![0i32; shape.len()];
        let mut hi: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
        lo[ax] = start as i32;
        hi[ax] = stop as i32;
        self.slice(&lo, &hi, &vec![1; shape.len()])
    }

    /// Pads one axis with `before`/`after` copies of `value` (built from `concatenate`, whose
    /// gradient is a plain slice).
    pub fn pad_axis(&self, axis: i32, before: usize, after: usize, value: f32) -> Result<Array> {
        let shape = self.shape();
        let n = shape.len() as i32;
        let ax = if axis < 0 { n + axis } else { axis };
        if ax < 0 || ax >= n {
            return Err(Error::new(format!(
                "pad axis {axis} out of range for shape {shape:?}"
            )));
        }
        let dtype = self.dtype()?;
        let filler = |len: usize| {
            let mut s = shape.clone();
            s[ax as usize] = len;
            Array::full(&s, value, dtype)
        };
        let (lo, hi) = (filler(before)?, filler(after)?);
        let mut parts: Vec<&Array> = Vec::with_capacity(3);
        if before > 0 {
            parts.push(&lo);
        }
        parts.push(self);
        if after > 0 {
            parts.push(&hi);
        }
        if parts.len() == 1 {
            return Ok(self.clone());
        }
        concatenate(&parts, ax)
    }

    /// Gathers slices along `axis` at `indices` (e.g. embedding rows).
    pub fn take(&self, indices: &Array, axis: i32) -> Result<Array> {
        Array::build(|out| unsafe { ffi::msx_take(self.as_ptr(), indices.as_ptr(), axis, out) })
    }

    pub fn take_along_axis(&self, indices: &Array, axis: i32) -> Result<Array> {
        Array::build(|out| unsafe {
            ffi::msx_take_along_axis(self.as_ptr(), indices.as_ptr(), axis, out)
        })
    }

    pub fn clip(&self, lo: f32, hi: f32) -> Result<Array> {
        Array::build(|out| unsafe { ffi::msx_clip(self.as_ptr(), lo, hi, out) })
    }

    /// `fast::rms_norm` over the last axis: `x * rsqrt(mean(x^2) + eps) * weight`.
    pub fn rms_norm(&self, weight: Option<&Array>, eps: f32) -> Result<Array> {
        let w = weight.map_or(std::ptr::null(), |w| w.as_ptr());
        Array::build(|out| unsafe { ffi::msx_rms_norm(self.as_ptr(), w, eps, out) })
    }

    /// `fast::layer_norm` over the last axis.
    pub fn layer_norm(
        &self,
        weight: Option<&Array>,
        bias: Option<&Array>,
        eps: f32,
    ) -> Result<Array> {
        let w = weight.map_or(std::ptr::null(), |w| w.as_ptr());
        let b = bias.map_or(std::ptr::null(), |b| b.as_ptr());
        Array::build(|out| unsafe { ffi::msx_layer_norm(self.as_ptr(), w, b, eps, out) })
    }

    /// `fast::rope` on `[..., T, head_dim]`, rotating the first `dims` features. `traditional` rotates
    /// adjacent pairs (x[2i], x[2i+1]); otherwise halves (x[i], x[i + dims/2]).
    ///
    /// MLX 0.32.2's CUDA kernel reads out of bounds on non-contiguous input, so the input is made
    /// contiguous first (a no-op copy when it already is).
    pub fn rope(&self, dims: usize, traditional: bool, base: f32, offset: usize) -> Result<Array> {
        let x = self.contiguous()?;
        Array::build(|out| unsafe {
            ffi::msx_rope(
                x.as_ptr(),
                dims as i32,
                traditional as i32,
                base,
                1.0,
                offset as i32,
                out,
            )
        })
    }

    /// `fast::scaled_dot_product_attention` on `[B, H, T, hd]` queries and `[B, H_kv, S, hd]` keys and
    /// values (grouped-query attention when `H_kv` divides `H`).
    pub fn scaled_dot_product_attention(
        &self,
        keys: &Array,
        values: &Array,
        scale: f32,
        causal: bool,
    ) -> Result<Array> {
        Array::build(|out| unsafe {
            ffi::msx_sdpa(
                self.as_ptr(),
                keys.as_ptr(),
                values.as_ptr(),
                scale,
                causal as i32,
                out,
            )
        })
    }
}

impl Array {
    /// [`Array::scaled_dot_product_attention`] with an explicit boolean mask (true = attend),
    /// broadcastable to `[B, H, T, S]`.
    pub fn scaled_dot_product_attention_masked(
        &self,
        keys: &Array,
        values: &Array,
        scale: f32,
        mask: &Array,
    ) -> Result<Array> {
        Array::build(|out| unsafe {
            ffi::msx_sdpa_masked(
                self.as_ptr(),
                keys.as_ptr(),
                values.as_ptr(),
                scale,
                mask.as_ptr(),
                out,
            )
        })
    }
}

/// Joins arrays along `axis`.
pub fn concatenate(arrays: &[&Array], axis: i32) -> Result<Array> {
    let v = ArrayVec::from_refs(arrays);
    Array::build(|out| unsafe { ffi::msx_concatenate(v.as_ptr(), axis, out) })
}

/// Splits `a` along `axis` at `indices` (one primitive: its gradient is one concatenation).
pub fn split(a: &Array, indices: &[i32], axis: i32) -> Result<Vec<Array>> {
    let mut v = ArrayVec::new();
    crate::check(unsafe {
        ffi::msx_split(
            a.as_ptr(),
            indices.as_ptr(),
            indices.len(),
            axis,
            v.as_mut_ptr(),
        )
    })?;
    Ok(v.to_vec())
}

/// Elementwise `condition ? a : b`.
pub fn where_(condition: &Array, a: &Array, b: &Array) -> Result<Array> {
    Array::build(|out| unsafe { ffi::msx_where(condition.as_ptr(), a.as_ptr(), b.as_ptr(), out) })
}
