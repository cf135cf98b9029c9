// Fused selective scan (Mamba's recurrence) for MLX's CUDA backend.
//
//   h_t = exp(max(dt_t * A, floor)) * h_{t-1} + dt_t * x_t * B_t      (per batch b, channel i, state n)
//   y_t = sum_n h_t * C_t
//
// with x, dt [batch, seq, inner], A [inner, state], B, C [batch, seq, state], floor = -64 / chunk
// (the same per-step decay floor as the runner's chunked scan, so both compute one function).
//
// The forward kernel runs the recurrence in registers, one thread per (b, i, n), the `state` lanes of
// one channel side by side in a warp (the sum over n is a warp shuffle), and saves the state every
// `kCheckpoint` steps. The backward kernel walks the chunks in reverse: it recomputes a chunk's
// states from its checkpoint, then runs the adjoint recurrence g_t = dy_t C_t + e_{t+1} g_{t+1}.
// dB and dC (sums over channels) are reduced per block in shared memory and written as per-block
// partial sums, dA as per-batch partial sums; MLX sums the partials (deterministic, no atomics).
// The pair is one `custom_vjp` function, so it traces into `compile` like any other op.
//
// The C entry points catch every exception and report it through msx_set_error, like shim.cpp.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/backend/cuda/cuda.h"
#include "mlx/device.h"
#include "mlx/fast.h"
#include "mlx/ops.h"
#include "mlx/transforms.h"

#include "kernel_util.h"

namespace mx = mlx::core;

using mixsweep_kernels::as_f32;
using mixsweep_kernels::differentiable;
using mixsweep_kernels::Kernel;

namespace {

// Launch shape: threads per block of each kernel and the steps between saved states. 128 threads
// per backward block (8 channels) beat 256 on the H200 (1.60-1.69 vs 1.81-1.87 ms forward + backward
// at [64, 256, 768, 16], BENCHMARKS.md); the forward is indifferent. `MIXSWEEP_SCAN_TUNE=
// FWD_THREADS:BWD_THREADS:CHECKPOINT` overrides them (`examples/bench_scan.rs` compares shapes).
constexpr int kForwardThreads = 256;
constexpr int kBackwardThreads = 128;
constexpr int kCheckpoint = 16;

struct Tune {
  int forward_threads = kForwardThreads;
  int backward_threads = kBackwardThreads;
  int checkpoint = kCheckpoint;
};

const Tune& tune() {
  static const Tune t = [] {
    Tune t;
    if (const char* v = std::getenv("MIXSWEEP_SCAN_TUNE")) {
      int f = 0, b = 0, c = 0;
      if (std::sscanf(v, "%d:%d:%d", &f, &b, &c) == 3 && f >= 32 && f <= 1024 && b >= 32 &&
          b <= 1024 && c >= 1 && c <= 64 && f % 32 == 0 && b % 32 == 0 &&
          2 * c * b * 4 <= 48 * 1024) {  // the backward's per-block sums live in shared memory
        t = Tune{f, b, c};
      } else {
        std::fprintf(stderr, "warning: MIXSWEEP_SCAN_TUNE=%s ignored (FWD:BWD:CKPT)\n", v);
      }
    }
    return t;
  }();
  return t;
}

// Shared by both kernels: which (batch, channel, state) this thread owns. Template constants
// (BATCH, SEQ, INNER, STATE, CKPT, CHUNK, THREADS) are injected by MLX at the top of each kernel.
const char* kHeader = R"(
#define MIXSWEEP_SCAN_INDEX                                            \
  constexpr int CHANNELS_PER_BLOCK = THREADS / STATE;                  \
  constexpr int GROUPS = (INNER + CHANNELS_PER_BLOCK - 1) / CHANNELS_PER_BLOCK; \
  constexpr int CHUNKS = (SEQ + CKPT - 1) / CKPT;                      \
  const int tid = threadIdx.x;                                         \
  const int n = tid % STATE;                                           \
  const int batch = blockIdx.x / GROUPS;                               \
  const int group = blockIdx.x % GROUPS;                               \
  const int channel = group * CHANNELS_PER_BLOCK + tid / STATE;        \
  const bool active = channel < INNER;                                 \
  const int ic = active ? channel : INNER - 1;                         \
  const float decay_floor = -64.0f / CHUNK;                            \
  const float a_value = a[ic * STATE + n];

__device__ __forceinline__ float mixsweep_sum_state(float v, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset, width);
  }
  return v;
}
)";

const char* kForward = R"(
  MIXSWEEP_SCAN_INDEX
  float h = 0.0f;
#pragma unroll 4
  for (int t = 0; t < SEQ; ++t) {
    if (t % CKPT == 0 && active) {
      checkpoints[(((size_t)batch * CHUNKS + t / CKPT) * INNER + channel) * STATE + n] = h;
    }
    const size_t bt = (size_t)batch * SEQ + t;
    const float dt = delta[bt * INNER + ic];
    const float xv = x[bt * INNER + ic];
    const float e = expf(fmaxf(dt * a_value, decay_floor));
    h = e * h + dt * xv * bm[bt * STATE + n];
    const float p = mixsweep_sum_state(h * cm[bt * STATE + n], STATE);
    if (n == 0 && active) {
      y[bt * INNER + channel] = p;
    }
  }
)";

const char* kBackward = R"(
  MIXSWEEP_SCAN_INDEX
  __shared__ float part_b[CKPT][THREADS];
  __shared__ float part_c[CKPT][THREADS];
  float da_sum = 0.0f;
  float carry = 0.0f;  // e_{t+1} * g_{t+1}
  for (int chunk = CHUNKS - 1; chunk >= 0; --chunk) {
    const int t0 = chunk * CKPT;
    const int len = min(CKPT, SEQ - t0);
    float hs[CKPT + 1];
    hs[0] = checkpoints[(((size_t)batch * CHUNKS + chunk) * INNER + ic) * STATE + n];
#pragma unroll
    for (int k = 0; k < CKPT; ++k) {
      if (k < len) {
        const size_t bt = (size_t)batch * SEQ + t0 + k;
        const float dt = delta[bt * INNER + ic];
        const float e = expf(fmaxf(dt * a_value, decay_floor));
        hs[k + 1] = e * hs[k] + dt * x[bt * INNER + ic] * bm[bt * STATE + n];
      }
    }
#pragma unroll
    for (int k = CKPT - 1; k >= 0; --k) {
      if (k < len) {
        const size_t bt = (size_t)batch * SEQ + t0 + k;
        const float dt = delta[bt * INNER + ic];
        const float xv = x[bt * INNER + ic];
        const float bv = bm[bt * STATE + n];
        const float cv = cm[bt * STATE + n];
        const float dyv = dy[bt * INNER + ic];
        const float g = dyv * cv + carry;
        const float log_decay = dt * a_value;
        const float e = expf(fmaxf(log_decay, decay_floor));
        // d(loss)/d(log_decay): zero where the floor holds (the max passes no gradient there)
        const float dlog = log_decay > decay_floor ? g * hs[k] * e : 0.0f;
        da_sum += dlog * dt;
        const float ddt = mixsweep_sum_state(dlog * a_value + g * xv * bv, STATE);
        const float dxv = mixsweep_sum_state(g * dt * bv, STATE);
        if (n == 0 && active) {
          ddelta[bt * INNER + channel] = ddt;
          dx[bt * INNER + channel] = dxv;
        }
        part_b[k][tid] = active ? g * dt * xv : 0.0f;
        part_c[k][tid] = active ? dyv * hs[k + 1] : 0.0f;
        carry = e * g;
      }
    }
    __syncthreads();
    for (int j = tid; j < len * STATE; j += THREADS) {
      const int k = j / STATE;
      const int s = j % STATE;
      float sb = 0.0f;
      float sc = 0.0f;
      for (int r = 0; r < CHANNELS_PER_BLOCK; ++r) {
        sb += part_b[k][r * STATE + s];
        sc += part_c[k][r * STATE + s];
      }
      const size_t o = (((size_t)batch * SEQ + t0 + k) * GROUPS + group) * STATE + s;
      db_part[o] = sb;
      dc_part[o] = sc;
    }
    __syncthreads();
  }
  if (active) {
    da_part[((size_t)batch * INNER + channel) * STATE + n] = da_sum;
  }
)";

struct Dims {
  int batch, seq, inner, state, chunk;
  // blocks of `threads` threads along the channels
  int groups(int threads) const { return (inner + threads / state - 1) / (threads / state); }
  int chunks() const { return (seq + tune().checkpoint - 1) / tune().checkpoint; }
  std::tuple<int, int, int> grid(int threads) const { return {batch * groups(threads) * threads, 1, 1}; }
  std::vector<std::pair<std::string, mx::fast::TemplateArg>> template_args(int threads) const {
    return {{"BATCH", batch},
            {"SEQ", seq},
            {"INNER", inner},
            {"STATE", state},
            {"CKPT", tune().checkpoint},
            {"CHUNK", chunk},
            {"THREADS", threads}};
  }
};

Dims dims_of(const std::vector<mx::array>& in, int chunk) {
  const auto& x = in[0];
  const auto& a = in[2];
  const auto& b = in[3];
  if (x.ndim() != 3 || in[1].shape() != x.shape() || a.ndim() != 2 || a.shape(0) != x.shape(2) ||
      b.ndim() != 3 || b.shape(0) != x.shape(0) || b.shape(1) != x.shape(1) ||
      in[4].shape() != b.shape()) {
    throw std::invalid_argument(
        "fused selective scan: expected x, delta [batch, seq, inner], A [inner, state], "
        "B, C [batch, seq, state]");
  }
  const int state = a.shape(1);
  if (state < 1 || state > 32 || (32 % state) != 0) {
    throw std::invalid_argument("fused selective scan: the state size must divide 32, got " +
                                std::to_string(state));
  }
  return Dims{x.shape(0), x.shape(1), x.shape(2), state, chunk};
}

std::vector<mx::array> forward(const std::vector<mx::array>& primals, int chunk) {
  static const Kernel kernel("mixsweep_scan_forward", {"x", "delta", "a", "bm", "cm"},
                             {"y", "checkpoints"}, kForward, kHeader);
  const auto in = as_f32(primals);
  const Dims d = dims_of(in, chunk);
  const int threads = tune().forward_threads;
  return kernel(in, {{d.batch, d.seq, d.inner}, {d.batch, d.chunks(), d.inner, d.state}},
                d.grid(threads), threads, d.template_args(threads));
}

std::vector<mx::array> backward(const std::vector<mx::array>& primals,
                                const std::vector<mx::array>& cotangents,
                                const std::vector<mx::array>& outputs, int chunk) {
  static const Kernel kernel("mixsweep_scan_backward",
                             {"x", "delta", "a", "bm", "cm", "checkpoints", "dy"},
                             {"dx", "ddelta", "da_part", "db_part", "dc_part"}, kBackward, kHeader);
  auto in = as_f32(primals);
  const Dims d = dims_of(in, chunk);
  in.push_back(outputs[1]);
  in.push_back(mx::astype(cotangents[0], mx::float32));
  const int threads = tune().backward_threads;
  auto g = kernel(in,
                  {{d.batch, d.seq, d.inner},
                   {d.batch, d.seq, d.inner},
                   {d.batch, d.inner, d.state},
                   {d.batch, d.seq, d.groups(threads), d.state},
                   {d.batch, d.seq, d.groups(threads), d.state}},
                  d.grid(threads), threads, d.template_args(threads));
  auto cast = [&](const mx::array& v, int k) { return mx::astype(v, primals[k].dtype()); };
  return {cast(g[0], 0), cast(g[1], 1), cast(mx::sum(g[2], 0), 2), cast(mx::sum(g[3], 2), 3),
          cast(mx::sum(g[4], 2), 4)};
}

}  // namespace

extern "C" {

// 1 when the fused scan can run: the CUDA backend is present and the default device is the GPU.
int msx_fused_scan_available() {
  try {
    return mx::cu::is_available() && mx::default_device() == mx::Device::gpu ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// y = scan(x, delta, A, B, C) as above (float32), differentiable in all five inputs.
int msx_fused_selective_scan(const mx::array* x, const mx::array* delta, const mx::array* a,
                             const mx::array* b, const mx::array* c, int chunk, mx::array** out) {
  return differentiable("fused selective scan", chunk, forward, backward, {*x, *delta, *a, *b, *c},
                        out);
}

}  // extern "C"
