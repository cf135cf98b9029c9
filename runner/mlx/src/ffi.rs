//! Raw declarations of the C ABI exported by `shim.cpp`. Nothing here is safe to call directly;
//! the rest of the crate wraps each function.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct msx_array {
    _private: [u8; 0],
}
#[repr(C)]
pub struct msx_vec {
    _private: [u8; 0],
}
#[repr(C)]
pub struct msx_compiled {
    _private: [u8; 0],
}

pub type msx_callback = unsafe extern "C" fn(
    payload: *mut c_void,
    inputs: *const msx_vec,
    outputs: *mut msx_vec,
) -> c_int;

unsafe extern "C" {
    pub fn msx_last_error() -> *const c_char;
    pub fn msx_set_error(msg: *const c_char);
    pub fn msx_version(out: *mut *const c_char) -> c_int;

    pub fn msx_gpu_available(out: *mut c_int) -> c_int;
    pub fn msx_set_default_device(gpu: c_int) -> c_int;
    pub fn msx_default_device(gpu: *mut c_int) -> c_int;
    pub fn msx_block_signals_on_cpu_stream(signals: *const c_int, n: usize) -> c_int;

    pub fn msx_memory_stats(active: *mut usize, peak: *mut usize, cache: *mut usize) -> c_int;
    pub fn msx_reset_peak_memory() -> c_int;
    pub fn msx_set_memory_limit(limit: usize, previous: *mut usize) -> c_int;
    pub fn msx_set_cache_limit(limit: usize, previous: *mut usize) -> c_int;
    pub fn msx_clear_cache() -> c_int;

    pub fn msx_array_free(a: *mut msx_array);
    pub fn msx_array_clone(a: *const msx_array, out: *mut *mut msx_array) -> c_int;
    pub fn msx_array_from_data(
        data: *const c_void,
        dtype: c_int,
        dims: *const i32,
        ndim: usize,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_array_scalar_f32(v: f32, dtype: c_int, out: *mut *mut msx_array) -> c_int;
    pub fn msx_array_scalar_i32(v: i32, out: *mut *mut msx_array) -> c_int;
    pub fn msx_array_full(
        dims: *const i32,
        ndim: usize,
        v: f32,
        dtype: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_arange(
        start: f64,
        stop: f64,
        step: f64,
        dtype: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_array_ndim(a: *const msx_array) -> usize;
    pub fn msx_array_dim(a: *const msx_array, i: usize) -> i32;
    pub fn msx_array_size(a: *const msx_array) -> usize;
    pub fn msx_array_dtype(a: *const msx_array) -> c_int;
    pub fn msx_array_read_f32(a: *const msx_array, dst: *mut f32, n: usize) -> c_int;
    pub fn msx_array_read_i32(a: *const msx_array, dst: *mut i32, n: usize) -> c_int;

    pub fn msx_vec_new() -> *mut msx_vec;
    pub fn msx_vec_free(v: *mut msx_vec);
    pub fn msx_vec_len(v: *const msx_vec) -> usize;
    pub fn msx_vec_push(v: *mut msx_vec, a: *const msx_array);
    pub fn msx_vec_get(v: *const msx_vec, i: usize) -> *mut msx_array;

    pub fn msx_eval(v: *const msx_vec) -> c_int;
    pub fn msx_async_eval(v: *const msx_vec) -> c_int;

    pub fn msx_unary(op: c_int, a: *const msx_array, out: *mut *mut msx_array) -> c_int;
    pub fn msx_binary(
        op: c_int,
        a: *const msx_array,
        b: *const msx_array,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_where(
        c: *const msx_array,
        a: *const msx_array,
        b: *const msx_array,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_reduce(
        op: c_int,
        a: *const msx_array,
        axes: *const i32,
        naxes: usize,
        keepdims: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_cumsum(
        a: *const msx_array,
        axis: c_int,
        reverse: c_int,
        inclusive: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_softmax(
        a: *const msx_array,
        axis: c_int,
        precise: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;

    pub fn msx_astype(a: *const msx_array, dtype: c_int, out: *mut *mut msx_array) -> c_int;
    pub fn msx_reshape(
        a: *const msx_array,
        dims: *const i32,
        ndim: usize,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_transpose(
        a: *const msx_array,
        axes: *const i32,
        naxes: usize,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_broadcast_to(
        a: *const msx_array,
        dims: *const i32,
        ndim: usize,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_expand_dims(a: *const msx_array, axis: c_int, out: *mut *mut msx_array) -> c_int;
    pub fn msx_slice(
        a: *const msx_array,
        start: *const i32,
        stop: *const i32,
        strides: *const i32,
        ndim: usize,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_concatenate(v: *const msx_vec, axis: c_int, out: *mut *mut msx_array) -> c_int;
    pub fn msx_split(
        a: *const msx_array,
        indices: *const c_int,
        n: usize,
        axis: c_int,
        out: *mut msx_vec,
    ) -> c_int;
    pub fn msx_take(
        a: *const msx_array,
        idx: *const msx_array,
        axis: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_take_along_axis(
        a: *const msx_array,
        idx: *const msx_array,
        axis: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_clip(a: *const msx_array, lo: f32, hi: f32, out: *mut *mut msx_array) -> c_int;

    pub fn msx_rms_norm(
        x: *const msx_array,
        w: *const msx_array,
        eps: f32,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_layer_norm(
        x: *const msx_array,
        w: *const msx_array,
        b: *const msx_array,
        eps: f32,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_rope(
        x: *const msx_array,
        dims: c_int,
        traditional: c_int,
        base: f32,
        scale: f32,
        offset: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_sdpa(
        q: *const msx_array,
        k: *const msx_array,
        v: *const msx_array,
        scale: f32,
        causal: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_sdpa_masked(
        q: *const msx_array,
        k: *const msx_array,
        v: *const msx_array,
        scale: f32,
        mask: *const msx_array,
        out: *mut *mut msx_array,
    ) -> c_int;

    pub fn msx_random_key(seed: u64, out: *mut *mut msx_array) -> c_int;
    pub fn msx_random_split(key: *const msx_array, num: c_int, out: *mut *mut msx_array) -> c_int;
    pub fn msx_random_uniform(
        dims: *const i32,
        ndim: usize,
        dtype: c_int,
        key: *const msx_array,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_random_normal(
        dims: *const i32,
        ndim: usize,
        dtype: c_int,
        key: *const msx_array,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_random_bernoulli(
        p: f32,
        dims: *const i32,
        ndim: usize,
        key: *const msx_array,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_random_categorical(
        logits: *const msx_array,
        axis: c_int,
        key: *const msx_array,
        out: *mut *mut msx_array,
    ) -> c_int;

    pub fn msx_value_and_grad(
        cb: msx_callback,
        payload: *mut c_void,
        inputs: *const msx_vec,
        argnums: *const i32,
        nargs: usize,
        out: *mut msx_vec,
    ) -> c_int;
    pub fn msx_vjp(
        cb: msx_callback,
        payload: *mut c_void,
        inputs: *const msx_vec,
        cotangents: *const msx_vec,
        out: *mut msx_vec,
    ) -> c_int;
    pub fn msx_compile(
        cb: msx_callback,
        payload: *mut c_void,
        shapeless: c_int,
        out: *mut *mut msx_compiled,
    ) -> c_int;
    pub fn msx_compiled_call(
        c: *mut msx_compiled,
        inputs: *const msx_vec,
        out: *mut msx_vec,
    ) -> c_int;
    pub fn msx_compiled_free(c: *mut msx_compiled);
    pub fn msx_set_compile_enabled(enabled: c_int) -> c_int;
    pub fn msx_export_dot(outputs: *const msx_vec, path: *const c_char) -> c_int;
    pub fn msx_fused_scan_available() -> c_int;
    pub fn msx_kernels_precompiled() -> c_int;
    pub fn msx_is_whole_elf(data: *const c_char, len: usize) -> c_int;
    pub fn msx_gpu_arch(buf: *mut c_char, len: usize) -> c_int;
    pub fn msx_fused_selective_scan(
        x: *const msx_array,
        delta: *const msx_array,
        a: *const msx_array,
        b: *const msx_array,
        c: *const msx_array,
        chunk: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_fused_causal_conv(
        x: *const msx_array,
        w: *const msx_array,
        bias: *const msx_array,
        segment: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_fused_linear_scan(
        log_a: *const msx_array,
        u: *const msx_array,
        chunk: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_fused_delta_scan(
        q: *const msx_array,
        k: *const msx_array,
        v: *const msx_array,
        beta: *const msx_array,
        log_a: *const msx_array,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_fused_mamba3_scan(
        u: *const msx_array,
        delta: *const msx_array,
        lambda: *const msx_array,
        theta: *const msx_array,
        b: *const msx_array,
        c: *const msx_array,
        a: *const msx_array,
        chunk: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
    pub fn msx_fused_gla_scan(
        q: *const msx_array,
        k: *const msx_array,
        v: *const msx_array,
        g: *const msx_array,
        chunk: c_int,
        out: *mut *mut msx_array,
    ) -> c_int;
}
