// Fused causal depthwise convolution (Mamba's short convolution over time) for MLX's CUDA backend:
//
//   y[b, t, c] = bias[c] + sum_{j < K} w[j, c] * x[b, t - K + 1 + j, c]     (x before t = 0 is zero)
//
// with x [batch, seq, channels], w [K, channels], bias [channels]: the runner's `causal_conv1d`,
// which MLX otherwise runs as a pad, K shifted slices and multiply-adds, and differentiates into K
// slice updates and K reductions. One thread per (batch, time segment, channel) walks its segment
// with the last K inputs in registers; channels are adjacent in memory, so a warp's loads are
// coalesced. The backward kernel computes dx[t] = sum_j w[j] dy[t + K - 1 - j] the same way and
// writes dw and dbias as per-(batch, segment) partial sums, which MLX adds up (deterministic, no
// atomics). The pair is one `custom_vjp` function.
//
// The C entry point catches every exception and reports it through msx_set_error, like shim.cpp.

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/fast.h"
#include "mlx/ops.h"
#include "mlx/transforms.h"

#include "kernel_util.h"

namespace mx = mlx::core;

using mixsweep_kernels::as_f32;
using mixsweep_kernels::differentiable;
using mixsweep_kernels::Kernel;

namespace {

constexpr int kThreads = 256;

// Which (batch, segment, channel) this thread owns. Template constants (SEQ, CHANNELS, KSIZE, SEG,
// SEGS, THREADS) are injected at the top of each kernel; SEG is the segment length, SEGS their
// number.
const char* kHeader = R"(
#define MIXSWEEP_CONV_INDEX                                              \
  constexpr int GROUPS = (CHANNELS + THREADS - 1) / THREADS;             \
  const int group = blockIdx.x % GROUPS;                                 \
  const int seg = (blockIdx.x / GROUPS) % SEGS;                          \
  const int batch = blockIdx.x / (GROUPS * SEGS);                        \
  const int channel = group * THREADS + threadIdx.x;                     \
  const bool active = channel < CHANNELS;                                \
  const int c = active ? channel : CHANNELS - 1;                         \
  const int t0 = seg * SEG;                                              \
  const int t1 = min(SEQ, t0 + SEG);                                     \
  const size_t base = (size_t)batch * SEQ * CHANNELS + c;                \
  float wk[KSIZE];                                                       \
  for (int j = 0; j < KSIZE; ++j) wk[j] = w[j * CHANNELS + c];
)";

const char* kForward = R"(
  MIXSWEEP_CONV_INDEX
  float win[KSIZE];  // win[j] = x[t - KSIZE + 1 + j]
#pragma unroll
  for (int j = 0; j + 1 < KSIZE; ++j) {
    const int s = t0 - (KSIZE - 1) + j;
    win[j] = s >= 0 ? x[base + (size_t)s * CHANNELS] : 0.0f;
  }
  const float bias_c = bias[c];
  for (int t = t0; t < t1; ++t) {
    win[KSIZE - 1] = x[base + (size_t)t * CHANNELS];
    float acc = bias_c;
#pragma unroll
    for (int j = 0; j < KSIZE; ++j) acc += win[j] * wk[j];
    if (active) y[base + (size_t)t * CHANNELS] = acc;
#pragma unroll
    for (int j = 0; j + 1 < KSIZE; ++j) win[j] = win[j + 1];
  }
)";

const char* kBackward = R"(
  MIXSWEEP_CONV_INDEX
  float win[KSIZE];  // win[j] = x[t - KSIZE + 1 + j]
  float fut[KSIZE];  // fut[m] = dy[t + m] (zero past the end)
#pragma unroll
  for (int j = 0; j + 1 < KSIZE; ++j) {
    const int s = t0 - (KSIZE - 1) + j;
    win[j] = s >= 0 ? x[base + (size_t)s * CHANNELS] : 0.0f;
    fut[j] = t0 + j < SEQ ? dy[base + (size_t)(t0 + j) * CHANNELS] : 0.0f;
  }
  float dw[KSIZE];
#pragma unroll
  for (int j = 0; j < KSIZE; ++j) dw[j] = 0.0f;
  float db = 0.0f;
  for (int t = t0; t < t1; ++t) {
    win[KSIZE - 1] = x[base + (size_t)t * CHANNELS];
    const int ahead = t + KSIZE - 1;
    fut[KSIZE - 1] = ahead < SEQ ? dy[base + (size_t)ahead * CHANNELS] : 0.0f;
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < KSIZE; ++j) {
      acc += wk[j] * fut[KSIZE - 1 - j];
      dw[j] += fut[0] * win[j];
    }
    db += fut[0];
    if (active) dx[base + (size_t)t * CHANNELS] = acc;
#pragma unroll
    for (int j = 0; j + 1 < KSIZE; ++j) {
      win[j] = win[j + 1];
      fut[j] = fut[j + 1];
    }
  }
  if (active) {
    const size_t part = (size_t)batch * SEGS + seg;
#pragma unroll
    for (int j = 0; j < KSIZE; ++j) dw_part[(part * KSIZE + j) * CHANNELS + channel] = dw[j];
    db_part[part * CHANNELS + channel] = db;
  }
)";

struct Dims {
  int batch, seq, channels, ksize, seg;
  int segs() const { return (seq + seg - 1) / seg; }
  int groups() const { return (channels + kThreads - 1) / kThreads; }
  std::tuple<int, int, int> grid() const { return {batch * segs() * groups() * kThreads, 1, 1}; }
  std::vector<std::pair<std::string, mx::fast::TemplateArg>> template_args() const {
    return {{"SEQ", seq}, {"CHANNELS", channels}, {"KSIZE", ksize},
            {"SEG", seg}, {"SEGS", segs()},       {"THREADS", kThreads}};
  }
};

Dims dims_of(const std::vector<mx::array>& in, int seg) {
  const auto& x = in[0];
  const auto& w = in[1];
  if (x.ndim() != 3 || w.ndim() != 2 || w.shape(1) != x.shape(2) || in[2].ndim() != 1 ||
      in[2].shape(0) != x.shape(2) || w.shape(0) < 1) {
    throw std::invalid_argument(
        "fused causal conv: expected x [batch, seq, channels], w [kernel, channels], "
        "bias [channels]");
  }
  return Dims{x.shape(0), x.shape(1), x.shape(2), w.shape(0), seg};
}

std::vector<mx::array> forward(const std::vector<mx::array>& primals, int seg) {
  static const Kernel kernel("mixsweep_conv_forward", {"x", "w", "bias"}, {"y"}, kForward,
                             kHeader);
  const auto in = as_f32(primals);
  const Dims d = dims_of(in, seg);
  return kernel(in, {{d.batch, d.seq, d.channels}}, d.grid(), kThreads, d.template_args());
}

std::vector<mx::array> backward(const std::vector<mx::array>& primals,
                                const std::vector<mx::array>& cotangents,
                                const std::vector<mx::array>&, int seg) {
  static const Kernel kernel("mixsweep_conv_backward", {"x", "w", "dy"},
                             {"dx", "dw_part", "db_part"}, kBackward, kHeader);
  const auto in = as_f32(primals);
  const Dims d = dims_of(in, seg);
  const int parts = d.batch * d.segs();
  auto g = kernel({in[0], in[1], mx::astype(cotangents[0], mx::float32)},
                  {{d.batch, d.seq, d.channels}, {parts, d.ksize, d.channels}, {parts, d.channels}},
                  d.grid(), kThreads, d.template_args());
  auto cast = [&](const mx::array& v, int k) { return mx::astype(v, primals[k].dtype()); };
  return {cast(g[0], 0), cast(mx::sum(g[1], 0), 1), cast(mx::sum(g[2], 0), 2)};
}

}  // namespace

extern "C" {

// y = causal_conv(x, w, bias) as above (float32), differentiable in all three inputs; each thread
// walks `segment` time steps.
int msx_fused_causal_conv(const mx::array* x, const mx::array* w, const mx::array* bias,
                          int segment, mx::array** out) {
  return differentiable("fused causal conv", segment, forward, backward, {*x, *w, *bias}, out);
}

}  // extern "C"
