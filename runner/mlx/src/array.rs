//! [`Array`] (the RAII handle over `mlx::core::array`), [`Dtype`], host <-> device copies, and the
//! internal `ArrayVec` that carries vectors of arrays across the C ABI.

use crate::ffi;
use crate::{Error, Result, check};
use std::ptr::NonNull;

/// Element types understood by the binding. The discriminants are the codes of `shim.cpp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32 = 0,
    Bf16 = 1,
    F16 = 2,
    I32 = 3,
    U32 = 4,
    U16 = 5,
    Bool = 6,
    I64 = 7,
    U8 = 8,
}

impl Dtype {
    fn from_code(code: i32) -> Result<Dtype> {
        Ok(match code {
            0 => Dtype::F32,
            1 => Dtype::Bf16,
            2 => Dtype::F16,
            3 => Dtype::I32,
            4 => Dtype::U32,
            5 => Dtype::U16,
            6 => Dtype::Bool,
            7 => Dtype::I64,
            8 => Dtype::U8,
            other => {
                return Err(Error::new(format!(
                    "array has a dtype the binding does not map (code {other})"
                )));
            }
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::Bf16 | Dtype::F16)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 => 1,
            Dtype::Bf16 | Dtype::F16 | Dtype::U16 => 2,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::I64 => 8,
        }
    }
}

/// An MLX array. Operations build a lazy graph; [`crate::eval`] or a read computes it.
pub struct Array {
    ptr: NonNull<ffi::msx_array>,
}

impl Array {
    /// Wraps a handle returned by the shim (takes ownership).
    pub(crate) fn from_raw(ptr: *mut ffi::msx_array) -> Result<Array> {
        NonNull::new(ptr)
            .map(|ptr| Array { ptr })
            .ok_or_else(|| Error::new("shim returned a null array"))
    }

    pub(crate) fn as_ptr(&self) -> *const ffi::msx_array {
        self.ptr.as_ptr()
    }

    /// Calls a shim constructor with an out-pointer and wraps the result.
    pub(crate) fn build(
        f: impl FnOnce(*mut *mut ffi::msx_array) -> std::ffi::c_int,
    ) -> Result<Array> {
        let mut out = std::ptr::null_mut();
        check(f(&mut out))?;
        Array::from_raw(out)
    }

    fn dims_i32(shape: &[usize]) -> Result<Vec<i32>> {
        shape
            .iter()
            .map(|&d| {
                i32::try_from(d)
                    .map_err(|_| Error::new(format!("dimension {d} does not fit in i32")))
            })
            .collect()
    }

    fn check_len(len: usize, shape: &[usize]) -> Result<()> {
        let n: usize = shape.iter().product();
        if n != len {
            return Err(Error::new(format!(
                "{len} host values do not fill shape {shape:?} ({n} elements)"
            )));
        }
        Ok(())
    }

    /// A float32 array copied from host memory.
    pub fn from_f32(data: &[f32], shape: &[usize]) -> Result<Array> {
        Self::check_len(data.len(), shape)?;
        let dims = Self::dims_i32(shape)?;
        Self::build(|out| unsafe {
            ffi::msx_array_from_data(
                data.as_ptr().cast(),
                Dtype::F32 as i32,
                dims.as_ptr(),
                dims.len(),
                out,
            )
        })
    }

    /// An int32 array copied from host memory.
    pub fn from_i32(data: &[i32], shape: &[usize]) -> Result<Array> {
        Self::check_len(data.len(), shape)?;
        let dims = Self::dims_i32(shape)?;
        Self::build(|out| unsafe {
            ffi::msx_array_from_data(
                data.as_ptr().cast(),
                Dtype::I32 as i32,
                dims.as_ptr(),
                dims.len(),
                out,
            )
        })
    }

    /// A uint32 array copied from host memory.
    pub fn from_u32(data: &[u32], shape: &[usize]) -> Result<Array> {
        Self::check_len(data.len(), shape)?;
        let dims = Self::dims_i32(shape)?;
        Self::build(|out| unsafe {
            ffi::msx_array_from_data(
                data.as_ptr().cast(),
                Dtype::U32 as i32,
                dims.as_ptr(),
                dims.len(),
                out,
            )
        })
    }

    /// A uint16 array copied from host memory.
    pub fn from_u16(data: &[u16], shape: &[usize]) -> Result<Array> {
        Self::check_len(data.len(), shape)?;
        let dims = Self::dims_i32(shape)?;
        Self::build(|out| unsafe {
            ffi::msx_array_from_data(
                data.as_ptr().cast(),
                Dtype::U16 as i32,
                dims.as_ptr(),
                dims.len(),
                out,
            )
        })
    }

    /// A 0-d array holding `v` converted to `dtype`.
    pub fn scalar(v: f32, dtype: Dtype) -> Result<Array> {
        Self::build(|out| unsafe { ffi::msx_array_scalar_f32(v, dtype as i32, out) })
    }

    /// A 0-d int32 array.
    pub fn scalar_i32(v: i32) -> Result<Array> {
        Self::build(|out| unsafe { ffi::msx_array_scalar_i32(v, out) })
    }

    /// An array of `shape` filled with `v`.
    pub fn full(shape: &[usize], v: f32, dtype: Dtype) -> Result<Array> {
        let dims = Self::dims_i32(shape)?;
        Self::build(|out| unsafe {
            ffi::msx_array_full(dims.as_ptr(), dims.len(), v, dtype as i32, out)
        })
    }

    pub fn zeros(shape: &[usize], dtype: Dtype) -> Result<Array> {
        Self::full(shape, 0.0, dtype)
    }

    pub fn ones(shape: &[usize], dtype: Dtype) -> Result<Array> {
        Self::full(shape, 1.0, dtype)
    }

    /// `[start, stop)` with `step`.
    pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
        Self::build(|out| unsafe { ffi::msx_arange(start, stop, step, dtype as i32, out) })
    }

    pub fn ndim(&self) -> usize {
        unsafe { ffi::msx_array_ndim(self.as_ptr()) }
    }

    pub fn shape(&self) -> Vec<usize> {
        (0..self.ndim())
            .map(|i| unsafe { ffi::msx_array_dim(self.as_ptr(), i) } as usize)
            .collect()
    }

    /// Size of axis `axis` (negative counts from the end).
    /// The size of `axis` (negative counts from the end). Panics when the array has no such
    /// axis, like slice indexing (the index is checked before it reaches C++).
    pub fn dim(&self, axis: isize) -> usize {
        let n = self.ndim() as isize;
        let i = if axis < 0 { n + axis } else { axis };
        assert!(
            (0..n).contains(&i),
            "axis {axis} out of range for an array of {n} dimensions"
        );
        // SAFETY: 0 <= i < ndim, checked above.
        unsafe { ffi::msx_array_dim(self.as_ptr(), i as usize) as usize }
    }

    pub fn size(&self) -> usize {
        unsafe { ffi::msx_array_size(self.as_ptr()) }
    }

    pub fn dtype(&self) -> Result<Dtype> {
        Dtype::from_code(unsafe { ffi::msx_array_dtype(self.as_ptr()) })
    }

    /// Evaluates the array and copies it to the host as float32 (row-major).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        let n = self.size();
        let mut out = vec![0f32; n];
        check(unsafe { ffi::msx_array_read_f32(self.as_ptr(), out.as_mut_ptr(), n) })?;
        Ok(out)
    }

    /// Evaluates the array and copies it to the host as int32 (row-major).
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        let n = self.size();
        let mut out = vec![0i32; n];
        check(unsafe { ffi::msx_array_read_i32(self.as_ptr(), out.as_mut_ptr(), n) })?;
        Ok(out)
    }

    /// The value of a one-element array as f32.
    pub fn item_f32(&self) -> Result<f32> {
        if self.size() != 1 {
            return Err(Error::new(format!(
                "item of an array of shape {:?}",
                self.shape()
            )));
        }
        Ok(self.to_vec_f32()?[0])
    }

    /// Evaluates this array (blocking).
    pub fn eval(&self) -> Result<()> {
        crate::eval(&[self])
    }
}

impl Clone for Array {
    fn clone(&self) -> Self {
        let mut out = std::ptr::null_mut();
        // Copying an array handle only bumps a shared_ptr; it cannot fail short of out-of-memory.
        let code = unsafe { ffi::msx_array_clone(self.as_ptr(), &mut out) };
        assert!(code == 0 && !out.is_null(), "MLX array handle copy failed");
        Array {
            ptr: NonNull::new(out).expect("non-null"),
        }
    }
}

impl Drop for Array {
    fn drop(&mut self) {
        unsafe { ffi::msx_array_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Array(shape={:?}, dtype={:?})",
            self.shape(),
            self.dtype()
        )
    }
}

/// A `std::vector<array>` owned by Rust.
pub(crate) struct ArrayVec {
    ptr: NonNull<ffi::msx_vec>,
}

impl ArrayVec {
    pub fn new() -> ArrayVec {
        ArrayVec {
            ptr: NonNull::new(unsafe { ffi::msx_vec_new() }).expect("msx_vec_new"),
        }
    }

    pub fn from_refs(arrays: &[&Array]) -> ArrayVec {
        let v = ArrayVec::new();
        for a in arrays {
            unsafe { ffi::msx_vec_push(v.ptr.as_ptr(), a.as_ptr()) };
        }
        v
    }

    pub fn from_slice(arrays: &[Array]) -> ArrayVec {
        let v = ArrayVec::new();
        for a in arrays {
            unsafe { ffi::msx_vec_push(v.ptr.as_ptr(), a.as_ptr()) };
        }
        v
    }

    pub fn as_ptr(&self) -> *const ffi::msx_vec {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut ffi::msx_vec {
        self.ptr.as_ptr()
    }

    /// Copies the handles out of a vector owned by C++.
    pub fn read(v: *const ffi::msx_vec) -> Vec<Array> {
        let n = unsafe { ffi::msx_vec_len(v) };
        (0..n)
            .map(|i| Array {
                ptr: NonNull::new(unsafe { ffi::msx_vec_get(v, i) }).expect("msx_vec_get"),
            })
            .collect()
    }

    pub fn to_vec(&self) -> Vec<Array> {
        Self::read(self.as_ptr())
    }

    pub fn push_to(v: *mut ffi::msx_vec, a: &Array) {
        unsafe { ffi::msx_vec_push(v, a.as_ptr()) }
    }
}

impl Drop for ArrayVec {
    fn drop(&mut self) {
        unsafe { ffi::msx_vec_free(self.ptr.as_ptr()) }
    }
}
