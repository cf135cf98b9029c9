// mixsweep MLX shim: a C ABI over MLX's C++ API.
//
// Every entry point catches every C++ exception and turns it into a non-zero
// return code; the message is kept in a thread-local buffer that the Rust side
// reads with `msx_last_error`. Arrays cross the boundary as heap-allocated
// `mlx::core::array*` handles (opaque to Rust); a handle is released with
// `msx_array_free`. Vectors of arrays (`msx_vec`) carry the inputs and outputs
// of Rust callbacks used by `value_and_grad` and `compile`.

#include <csignal>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/compile.h"
#include "mlx/compile_impl.h"
#include "mlx/device.h"
#include "mlx/fast.h"
#include "mlx/graph_utils.h"
#include <fstream>
#include <sstream>
#include "mlx/memory.h"
#include "mlx/ops.h"
#include "mlx/random.h"
#include "mlx/scheduler.h"
#include "mlx/transforms.h"
#include "mlx/version.h"

namespace mx = mlx::core;

typedef mx::array msx_array;
typedef std::vector<mx::array> msx_vec;

static thread_local std::string g_last_error;

#define MSX_TRY try {
#define MSX_CATCH                          \
  return 0;                                \
  }                                        \
  catch (const std::exception& e) {        \
    g_last_error = e.what();               \
    return 1;                              \
  }                                        \
  catch (...) {                            \
    g_last_error = "unknown C++ exception"; \
    return 1;                              \
  }

// Dtype codes shared with Rust (runner/mlx/src/dtype.rs).
static mx::Dtype to_dtype(int code) {
  switch (code) {
    case 0: return mx::float32;
    case 1: return mx::bfloat16;
    case 2: return mx::float16;
    case 3: return mx::int32;
    case 4: return mx::uint32;
    case 5: return mx::uint16;
    case 6: return mx::bool_;
    case 7: return mx::int64;
    case 8: return mx::uint8;
    default: throw std::invalid_argument("mixsweep-mlx: unknown dtype code " + std::to_string(code));
  }
}

static int from_dtype(mx::Dtype d) {
  switch (d.val()) {
    case mx::Dtype::Val::float32: return 0;
    case mx::Dtype::Val::bfloat16: return 1;
    case mx::Dtype::Val::float16: return 2;
    case mx::Dtype::Val::int32: return 3;
    case mx::Dtype::Val::uint32: return 4;
    case mx::Dtype::Val::uint16: return 5;
    case mx::Dtype::Val::bool_: return 6;
    case mx::Dtype::Val::int64: return 7;
    case mx::Dtype::Val::uint8: return 8;
    default: return -1;
  }
}

static mx::Shape to_shape(const int32_t* dims, size_t n) {
  return mx::Shape(dims, dims + n);
}

static msx_array* box(mx::array a) { return new mx::array(std::move(a)); }

extern "C" {

const char* msx_last_error() { return g_last_error.c_str(); }
void msx_set_error(const char* msg) { g_last_error = msg ? msg : ""; }

int msx_version(const char** out) {
  MSX_TRY
  *out = mx::version();
  MSX_CATCH
}

// ---------------------------------------------------------------- devices
int msx_gpu_available(int* out) {
  MSX_TRY
  *out = mx::is_available(mx::Device(mx::Device::gpu)) ? 1 : 0;
  MSX_CATCH
}

int msx_set_default_device(int gpu) {
  MSX_TRY
  mx::set_default_device(mx::Device(gpu ? mx::Device::gpu : mx::Device::cpu));
  MSX_CATCH
}

int msx_default_device(int* gpu) {
  MSX_TRY
  *gpu = mx::default_device().type == mx::Device::gpu ? 1 : 0;
  MSX_CATCH
}

// Blocks `signals` on the CPU stream's worker thread, which MLX starts while the library loads (before
// main can block anything), and waits for it. Threads started later inherit their creator's mask.
int msx_block_signals_on_cpu_stream(const int* signals, size_t n) {
  MSX_TRY
  sigset_t set;
  sigemptyset(&set);
  for (size_t i = 0; i < n; ++i) sigaddset(&set, signals[i]);
  std::promise<int> done;
  auto rc = done.get_future();
  mx::scheduler::enqueue(mx::default_stream(mx::Device(mx::Device::cpu)),
                         [&] { done.set_value(pthread_sigmask(SIG_BLOCK, &set, nullptr)); });
  if (rc.get() != 0) throw std::runtime_error("pthread_sigmask failed on MLX's CPU stream thread");
  MSX_CATCH
}

// ---------------------------------------------------------------- memory
int msx_memory_stats(size_t* active, size_t* peak, size_t* cache) {
  MSX_TRY
  *active = mx::get_active_memory();
  *peak = mx::get_peak_memory();
  *cache = mx::get_cache_memory();
  MSX_CATCH
}
int msx_reset_peak_memory() {
  MSX_TRY
  mx::reset_peak_memory();
  MSX_CATCH
}
int msx_set_memory_limit(size_t limit, size_t* previous) {
  MSX_TRY
  *previous = mx::set_memory_limit(limit);
  MSX_CATCH
}
int msx_set_cache_limit(size_t limit, size_t* previous) {
  MSX_TRY
  *previous = mx::set_cache_limit(limit);
  MSX_CATCH
}
int msx_clear_cache() {
  MSX_TRY
  mx::clear_cache();
  MSX_CATCH
}

// ---------------------------------------------------------------- arrays
void msx_array_free(msx_array* a) { delete a; }

int msx_array_clone(const msx_array* a, msx_array** out) {
  MSX_TRY
  *out = box(*a);
  MSX_CATCH
}

int msx_array_from_data(const void* data, int dtype, const int32_t* dims, size_t ndim, msx_array** out) {
  MSX_TRY
  auto shape = to_shape(dims, ndim);
  switch (dtype) {
    case 0: *out = box(mx::array(static_cast<const float*>(data), shape, mx::float32)); break;
    case 3: *out = box(mx::array(static_cast<const int32_t*>(data), shape, mx::int32)); break;
    case 4: *out = box(mx::array(static_cast<const uint32_t*>(data), shape, mx::uint32)); break;
    case 5: *out = box(mx::array(static_cast<const uint16_t*>(data), shape, mx::uint16)); break;
    default: throw std::invalid_argument("msx_array_from_data: host data must be f32, i32, u32 or u16");
  }
  MSX_CATCH
}

int msx_array_scalar_f32(float v, int dtype, msx_array** out) {
  MSX_TRY
  *out = box(mx::array(v, to_dtype(dtype)));
  MSX_CATCH
}

int msx_array_scalar_i32(int32_t v, msx_array** out) {
  MSX_TRY
  *out = box(mx::array(v, mx::int32));
  MSX_CATCH
}

int msx_array_full(const int32_t* dims, size_t ndim, float v, int dtype, msx_array** out) {
  MSX_TRY
  *out = box(mx::full(to_shape(dims, ndim), mx::array(v), to_dtype(dtype)));
  MSX_CATCH
}

int msx_arange(double start, double stop, double step, int dtype, msx_array** out) {
  MSX_TRY
  *out = box(mx::arange(start, stop, step, to_dtype(dtype)));
  MSX_CATCH
}

size_t msx_array_ndim(const msx_array* a) { return a->ndim(); }
int32_t msx_array_dim(const msx_array* a, size_t i) { return a->shape()[i]; }
size_t msx_array_size(const msx_array* a) { return a->size(); }
int msx_array_dtype(const msx_array* a) { return from_dtype(a->dtype()); }

// Evaluates `a`, converts it to float32 (or int32) row-major and copies it out.
int msx_array_read_f32(const msx_array* a, float* dst, size_t n) {
  MSX_TRY
  auto c = mx::contiguous(mx::astype(*a, mx::float32));
  c.eval();
  if (c.size() != n) throw std::invalid_argument("msx_array_read_f32: size mismatch");
  std::memcpy(dst, c.data<float>(), n * sizeof(float));
  MSX_CATCH
}

int msx_array_read_i32(const msx_array* a, int32_t* dst, size_t n) {
  MSX_TRY
  auto c = mx::contiguous(mx::astype(*a, mx::int32));
  c.eval();
  if (c.size() != n) throw std::invalid_argument("msx_array_read_i32: size mismatch");
  std::memcpy(dst, c.data<int32_t>(), n * sizeof(int32_t));
  MSX_CATCH
}

// ---------------------------------------------------------------- vectors
msx_vec* msx_vec_new() { return new msx_vec(); }
void msx_vec_free(msx_vec* v) { delete v; }
size_t msx_vec_len(const msx_vec* v) { return v->size(); }
void msx_vec_push(msx_vec* v, const msx_array* a) { v->push_back(*a); }
msx_array* msx_vec_get(const msx_vec* v, size_t i) { return box((*v)[i]); }

// ---------------------------------------------------------------- evaluation
int msx_eval(const msx_vec* v) {
  MSX_TRY
  mx::eval(*v);
  MSX_CATCH
}
int msx_async_eval(const msx_vec* v) {
  MSX_TRY
  mx::async_eval(*v);
  MSX_CATCH
}

// ---------------------------------------------------------------- unary and binary ops
// Codes from op_codes.def, shared with Rust (build.rs generates ops.rs's enums from it). The table's
// function names are looked up in msx_fn: MLX's own, plus wrappers where MLX's signature differs.
namespace msx_fn {
using namespace mlx::core;
static array argmax_axes(const array& a, const std::vector<int>& ax, bool kd) {
  if (ax.size() != 1) throw std::invalid_argument("argmax takes exactly one axis");
  return argmax(a, ax[0], kd);
}
}  // namespace msx_fn

int msx_unary(int op, const msx_array* a, msx_array** out) {
  MSX_TRY
  const auto& x = *a;
  switch (op) {
#define UNARY(code, name, fn) \
  case code:                  \
    *out = box(msx_fn::fn(x)); \
    break;
#define BINARY(code, name, fn)
#define REDUCE(code, name, fn)
#include "op_codes.def"
#undef UNARY
#undef BINARY
#undef REDUCE
    default: throw std::invalid_argument("msx_unary: unknown op " + std::to_string(op));
  }
  MSX_CATCH
}

int msx_binary(int op, const msx_array* a, const msx_array* b, msx_array** out) {
  MSX_TRY
  const auto& x = *a;
  const auto& y = *b;
  switch (op) {
#define UNARY(code, name, fn)
#define BINARY(code, name, fn) \
  case code:                   \
    *out = box(msx_fn::fn(x, y)); \
    break;
#define REDUCE(code, name, fn)
#include "op_codes.def"
#undef UNARY
#undef BINARY
#undef REDUCE
    default: throw std::invalid_argument("msx_binary: unknown op " + std::to_string(op));
  }
  MSX_CATCH
}

int msx_where(const msx_array* c, const msx_array* a, const msx_array* b, msx_array** out) {
  MSX_TRY
  *out = box(mx::where(*c, *a, *b));
  MSX_CATCH
}

// ---------------------------------------------------------------- reductions
// Codes from op_codes.def.
int msx_reduce(int op, const msx_array* a, const int32_t* axes, size_t naxes, int keepdims, msx_array** out) {
  MSX_TRY
  std::vector<int> ax(axes, axes + naxes);
  bool kd = keepdims != 0;
  switch (op) {
#define UNARY(code, name, fn)
#define BINARY(code, name, fn)
#define REDUCE(code, name, fn)          \
  case code:                            \
    *out = box(msx_fn::fn(*a, ax, kd)); \
    break;
#include "op_codes.def"
#undef UNARY
#undef BINARY
#undef REDUCE
    default: throw std::invalid_argument("msx_reduce: unknown op " + std::to_string(op));
  }
  MSX_CATCH
}

int msx_cumsum(const msx_array* a, int axis, int reverse, int inclusive, msx_array** out) {
  MSX_TRY
  *out = box(mx::cumsum(*a, axis, reverse != 0, inclusive != 0));
  MSX_CATCH
}

int msx_softmax(const msx_array* a, int axis, int precise, msx_array** out) {
  MSX_TRY
  *out = box(mx::softmax(*a, std::vector<int>{axis}, precise != 0));
  MSX_CATCH
}

// ---------------------------------------------------------------- shape ops
int msx_astype(const msx_array* a, int dtype, msx_array** out) {
  MSX_TRY
  *out = box(mx::astype(*a, to_dtype(dtype)));
  MSX_CATCH
}

int msx_reshape(const msx_array* a, const int32_t* dims, size_t ndim, msx_array** out) {
  MSX_TRY
  *out = box(mx::reshape(*a, to_shape(dims, ndim)));
  MSX_CATCH
}

int msx_transpose(const msx_array* a, const int32_t* axes, size_t naxes, msx_array** out) {
  MSX_TRY
  *out = box(mx::transpose(*a, std::vector<int>(axes, axes + naxes)));
  MSX_CATCH
}

int msx_broadcast_to(const msx_array* a, const int32_t* dims, size_t ndim, msx_array** out) {
  MSX_TRY
  *out = box(mx::broadcast_to(*a, to_shape(dims, ndim)));
  MSX_CATCH
}

int msx_expand_dims(const msx_array* a, int axis, msx_array** out) {
  MSX_TRY
  *out = box(mx::expand_dims(*a, axis));
  MSX_CATCH
}

int msx_slice(const msx_array* a, const int32_t* start, const int32_t* stop, const int32_t* strides, size_t ndim,
              msx_array** out) {
  MSX_TRY
  *out = box(mx::slice(*a, to_shape(start, ndim), to_shape(stop, ndim), to_shape(strides, ndim)));
  MSX_CATCH
}

int msx_concatenate(const msx_vec* v, int axis, msx_array** out) {
  MSX_TRY
  *out = box(mx::concatenate(*v, axis));
  MSX_CATCH
}

int msx_split(const msx_array* a, const int* indices, size_t n, int axis, msx_vec* out) {
  MSX_TRY
  mx::Shape idx(indices, indices + n);
  *out = mx::split(*a, idx, axis);
  MSX_CATCH
}

int msx_take(const msx_array* a, const msx_array* idx, int axis, msx_array** out) {
  MSX_TRY
  *out = box(mx::take(*a, *idx, axis));
  MSX_CATCH
}

int msx_take_along_axis(const msx_array* a, const msx_array* idx, int axis, msx_array** out) {
  MSX_TRY
  *out = box(mx::take_along_axis(*a, *idx, axis));
  MSX_CATCH
}

int msx_clip(const msx_array* a, float lo, float hi, msx_array** out) {
  MSX_TRY
  *out = box(mx::clip(*a, mx::array(lo, a->dtype()), mx::array(hi, a->dtype())));
  MSX_CATCH
}

// ---------------------------------------------------------------- fast kernels
int msx_rms_norm(const msx_array* x, const msx_array* weight, float eps, msx_array** out) {
  MSX_TRY
  std::optional<mx::array> w;
  if (weight) w = *weight;
  *out = box(mx::fast::rms_norm(*x, w, eps));
  MSX_CATCH
}

int msx_layer_norm(const msx_array* x, const msx_array* weight, const msx_array* bias, float eps, msx_array** out) {
  MSX_TRY
  std::optional<mx::array> w, b;
  if (weight) w = *weight;
  if (bias) b = *bias;
  *out = box(mx::fast::layer_norm(*x, w, b, eps));
  MSX_CATCH
}

int msx_rope(const msx_array* x, int dims, int traditional, float base, float scale, int offset, msx_array** out) {
  MSX_TRY
  *out = box(mx::fast::rope(*x, dims, traditional != 0, base, scale, offset));
  MSX_CATCH
}

int msx_sdpa(const msx_array* q, const msx_array* k, const msx_array* v, float scale, int causal, msx_array** out) {
  MSX_TRY
  *out = box(mx::fast::scaled_dot_product_attention(*q, *k, *v, scale, causal ? "causal" : ""));
  MSX_CATCH
}

int msx_sdpa_masked(const msx_array* q, const msx_array* k, const msx_array* v, float scale, const msx_array* mask, msx_array** out) {
  MSX_TRY
  *out = box(mx::fast::scaled_dot_product_attention(*q, *k, *v, scale, "array", *mask));
  MSX_CATCH
}

// ---------------------------------------------------------------- random
int msx_random_key(uint64_t seed, msx_array** out) {
  MSX_TRY
  *out = box(mx::random::key(seed));
  MSX_CATCH
}

int msx_random_split(const msx_array* key, int num, msx_array** out) {
  MSX_TRY
  *out = box(mx::random::split(*key, num));
  MSX_CATCH
}

int msx_random_uniform(const int32_t* dims, size_t ndim, int dtype, const msx_array* key, msx_array** out) {
  MSX_TRY
  *out = box(mx::random::uniform(mx::array(0.0f), mx::array(1.0f), to_shape(dims, ndim), to_dtype(dtype), *key));
  MSX_CATCH
}

int msx_random_normal(const int32_t* dims, size_t ndim, int dtype, const msx_array* key, msx_array** out) {
  MSX_TRY
  *out = box(mx::random::normal(to_shape(dims, ndim), to_dtype(dtype), std::optional<mx::array>(*key)));
  MSX_CATCH
}

int msx_random_bernoulli(float p, const int32_t* dims, size_t ndim, const msx_array* key, msx_array** out) {
  MSX_TRY
  *out = box(mx::random::bernoulli(mx::array(p), to_shape(dims, ndim), *key));
  MSX_CATCH
}

int msx_random_categorical(const msx_array* logits, int axis, const msx_array* key, msx_array** out) {
  MSX_TRY
  *out = box(mx::random::categorical(*logits, axis, *key));
  MSX_CATCH
}

// ---------------------------------------------------------------- transforms
// A Rust closure seen from C++: `call(payload, inputs, outputs)` returns 0 on
// success; on failure it has set the error message with `msx_set_error`.
typedef int (*msx_callback)(void* payload, const msx_vec* inputs, msx_vec* outputs);

static std::function<std::vector<mx::array>(const std::vector<mx::array>&)> wrap_callback(msx_callback cb,
                                                                                           void* payload) {
  return [cb, payload](const std::vector<mx::array>& inputs) {
    std::vector<mx::array> outputs;
    if (cb(payload, &inputs, &outputs) != 0) {
      throw std::runtime_error(g_last_error);
    }
    return outputs;
  };
}

// value_and_grad over `argnums`: outputs = values ++ grads.
int msx_value_and_grad(msx_callback cb, void* payload, const msx_vec* inputs, const int32_t* argnums, size_t nargs,
                       msx_vec* out) {
  MSX_TRY
  auto fn = mx::value_and_grad(wrap_callback(cb, payload), std::vector<int>(argnums, argnums + nargs));
  auto [values, grads] = fn(*inputs);
  out->clear();
  out->insert(out->end(), values.begin(), values.end());
  out->insert(out->end(), grads.begin(), grads.end());
  MSX_CATCH
}

// vjp of the callback at `inputs` with cotangents: outputs = values ++ input-cotangents.
int msx_vjp(msx_callback cb, void* payload, const msx_vec* inputs, const msx_vec* cotangents, msx_vec* out) {
  MSX_TRY
  auto [values, vjps] = mx::vjp(wrap_callback(cb, payload), *inputs, *cotangents);
  out->clear();
  out->insert(out->end(), values.begin(), values.end());
  out->insert(out->end(), vjps.begin(), vjps.end());
  MSX_CATCH
}

struct msx_compiled {
  std::function<std::vector<mx::array>(const std::vector<mx::array>&)> fn;
  std::uintptr_t id;
};

// Compiles a callback. The id must be unique while the compiled function lives
// (Rust passes the address of the boxed closure).
int msx_compile(msx_callback cb, void* payload, int shapeless, msx_compiled** out) {
  MSX_TRY
  auto id = reinterpret_cast<std::uintptr_t>(payload);
  auto fn = mx::detail::compile(wrap_callback(cb, payload), id, shapeless != 0);
  *out = new msx_compiled{std::move(fn), id};
  MSX_CATCH
}

int msx_compiled_call(msx_compiled* c, const msx_vec* inputs, msx_vec* out) {
  MSX_TRY
  *out = c->fn(*inputs);
  MSX_CATCH
}

void msx_compiled_free(msx_compiled* c) {
  if (!c) return;
  try {
    mx::detail::compile_erase(mx::detail::compile_cache(), c->id);
  } catch (...) {
  }
  delete c;
}

// Writes the graph of `outputs` (primitives and their inputs) in Graphviz DOT form.
int msx_export_dot(const msx_vec* outputs, const char* path) {
  MSX_TRY
  std::ofstream f(path);
  if (!f) throw std::runtime_error(std::string("cannot open ") + path);
  mx::export_to_dot(f, *outputs);
  MSX_CATCH
}

int msx_set_compile_enabled(int enabled) {
  MSX_TRY
  if (enabled) {
    mx::enable_compile();
  } else {
    mx::disable_compile();
  }
  MSX_CATCH
}

}  // extern "C"
