//! Function transforms over Rust closures: [`value_and_grad`], [`vjp`] and [`Compiled`] (MLX
//! `compile`). A closure crosses into C++ as a payload pointer plus one trampoline; an `Err` or a panic
//! inside it becomes a C++ exception in the shim, which unwinds MLX's frames and returns to Rust as
//! an [`Error`].

use crate::array::{Array, ArrayVec};
use crate::{Error, Result, check, ffi};
use std::ffi::{CString, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

type DynFn<'a> = dyn FnMut(&[Array]) -> Result<Vec<Array>> + 'a;

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    unsafe { ffi::msx_set_error(c.as_ptr()) }
}

unsafe extern "C" fn trampoline(
    payload: *mut c_void,
    inputs: *const ffi::msx_vec,
    outputs: *mut ffi::msx_vec,
) -> c_int {
    // SAFETY: payload is the `&mut Box<DynFn>` handed to the shim by this module, alive for the call.
    let f = unsafe { &mut *(payload as *mut Box<DynFn<'_>>) };
    let ins = ArrayVec::read(inputs);
    match catch_unwind(AssertUnwindSafe(|| f(&ins))) {
        Ok(Ok(outs)) => {
            for o in &outs {
                ArrayVec::push_to(outputs, o);
            }
            0
        }
        Ok(Err(e)) => {
            set_error(&e.message);
            1
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_error(&format!("panic inside a traced Rust function: {what}"));
            1
        }
    }
}

/// Evaluates `f(inputs)` and the gradient of its first output (a scalar) with respect to the inputs
/// at `argnums`. Returns `(outputs, gradients)`, gradients in `argnums` order.
pub fn value_and_grad<'a>(
    f: impl FnMut(&[Array]) -> Result<Vec<Array>> + 'a,
    inputs: &[Array],
    argnums: &[usize],
) -> Result<(Vec<Array>, Vec<Array>)> {
    let mut boxed: Box<DynFn<'a>> = Box::new(f);
    let ins = ArrayVec::from_slice(inputs);
    let argnums: Vec<i32> = argnums.iter().map(|&a| a as i32).collect();
    let mut out = ArrayVec::new();
    let payload = &mut boxed as *mut Box<DynFn<'a>> as *mut c_void;
    check(unsafe {
        ffi::msx_value_and_grad(
            trampoline,
            payload,
            ins.as_ptr(),
            argnums.as_ptr(),
            argnums.len(),
            out.as_mut_ptr(),
        )
    })?;
    let mut all = out.to_vec();
    let grads = all.split_off(all.len() - argnums.len());
    Ok((all, grads))
}

/// Vector-Jacobian product: returns `(f(inputs), cotangents · J)` with one result per input.
pub fn vjp<'a>(
    f: impl FnMut(&[Array]) -> Result<Vec<Array>> + 'a,
    inputs: &[Array],
    cotangents: &[Array],
) -> Result<(Vec<Array>, Vec<Array>)> {
    let mut boxed: Box<DynFn<'a>> = Box::new(f);
    let ins = ArrayVec::from_slice(inputs);
    let cots = ArrayVec::from_slice(cotangents);
    let mut out = ArrayVec::new();
    let payload = &mut boxed as *mut Box<DynFn<'a>> as *mut c_void;
    check(unsafe {
        ffi::msx_vjp(
            trampoline,
            payload,
            ins.as_ptr(),
            cots.as_ptr(),
            out.as_mut_ptr(),
        )
    })?;
    let mut all = out.to_vec();
    let grads = all.split_off(all.len() - inputs.len());
    Ok((all, grads))
}

/// A function compiled by MLX: traced on its first call (and again for new input shapes, unless
/// shapeless), then replayed as a fused graph with no Rust code running per call.
pub struct Compiled {
    // Order matters: the compiled function must be freed before the closure it calls.
    raw: *mut ffi::msx_compiled,
    _closure: Box<Box<DynFn<'static>>>,
}

impl Compiled {
    pub fn new(
        f: impl FnMut(&[Array]) -> Result<Vec<Array>> + 'static,
        shapeless: bool,
    ) -> Result<Compiled> {
        let mut closure: Box<Box<DynFn<'static>>> = Box::new(Box::new(f));
        let payload = &mut *closure as *mut Box<DynFn<'static>> as *mut c_void;
        let mut raw = std::ptr::null_mut();
        check(unsafe { ffi::msx_compile(trampoline, payload, shapeless as c_int, &mut raw) })?;
        if raw.is_null() {
            return Err(Error::new("compile returned null"));
        }
        Ok(Compiled {
            raw,
            _closure: closure,
        })
    }

    pub fn call(&mut self, inputs: &[Array]) -> Result<Vec<Array>> {
        let ins = ArrayVec::from_slice(inputs);
        let mut out = ArrayVec::new();
        check(unsafe { ffi::msx_compiled_call(self.raw, ins.as_ptr(), out.as_mut_ptr()) })?;
        Ok(out.to_vec())
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        unsafe { ffi::msx_compiled_free(self.raw) }
    }
}

/// Globally enables or disables `compile` (disabled: compiled functions run eagerly).
pub fn set_compile_enabled(enabled: bool) -> Result<()> {
    check(unsafe { ffi::msx_set_compile_enabled(enabled as c_int) })
}
