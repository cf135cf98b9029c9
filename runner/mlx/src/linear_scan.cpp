// Fused diagonal linear recurrence (the runner's `linear_recurrence` in training: decay_scan,
// matrix_scan, scan, scan_tv) for MLX's CUDA backend:
//
//   h_t = exp(max(log_a_t, floor)) * h_{t-1} + u_t,   h_{-1} = 0,   floor = -64 / chunk
//
// with log_a, u [batch, seq, channels] and the same per-step log-decay floor as the chunked form (so
// both compute one function). One thread per (batch, channel) walks the sequence with h in a
// register; channels are adjacent in memory, so a warp's loads are coalesced. The backward kernel
// walks it in reverse with the adjoint g_t = dh_t + exp(max(log_a_{t+1}, floor)) g_{t+1}:
// du_t = g_t and d log_a_t = g_t exp(log_a_t) h_{t-1} where log_a_t > floor (the max passes no
// gradient below), reading h_{t-1} from the forward output. The pair is one `custom_vjp` function.
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

// Which (batch, channel) this thread owns. Template constants (SEQ, CHANNELS, CHUNK, TOTAL) are
// injected by MLX at the top of each kernel; TOTAL = batch * channels.
const char* kHeader = R"(
#define MIXSWEEP_LINEAR_INDEX                                          \
  const int id = blockIdx.x * blockDim.x + threadIdx.x;                \
  const bool active = id < TOTAL;                                      \
  const int batch = (active ? id : 0) / CHANNELS;                      \
  const int channel = (active ? id : 0) % CHANNELS;                    \
  const float floor_log = -64.0f / CHUNK;                              \
  const size_t base = (size_t)batch * SEQ * CHANNELS + channel;
)";

const char* kForward = R"(
  MIXSWEEP_LINEAR_INDEX
  if (active) {
    float h = 0.0f;
    for (int t = 0; t < SEQ; ++t) {
      const size_t i = base + (size_t)t * CHANNELS;
      h = expf(fmaxf(log_a[i], floor_log)) * h + u[i];
      out[i] = h;
    }
  }
)";

const char* kBackward = R"(
  MIXSWEEP_LINEAR_INDEX
  if (active) {
    float carry = 0.0f;  // exp(log_a_{t+1}) g_{t+1}
    for (int t = SEQ - 1; t >= 0; --t) {
      const size_t i = base + (size_t)t * CHANNELS;
      const float g = dh[i] + carry;
      const float la = log_a[i];
      const float e = expf(fmaxf(la, floor_log));
      const float prev = t > 0 ? h[i - CHANNELS] : 0.0f;
      du[i] = g;
      dlog_a[i] = la > floor_log ? g * e * prev : 0.0f;
      carry = e * g;
    }
  }
)";

struct Dims {
  int batch, seq, channels, chunk;
  int total() const { return batch * channels; }
  std::tuple<int, int, int> grid() const {
    return {(total() + kThreads - 1) / kThreads * kThreads, 1, 1};
  }
  std::vector<std::pair<std::string, mx::fast::TemplateArg>> template_args() const {
    return {{"SEQ", seq}, {"CHANNELS", channels}, {"CHUNK", chunk}, {"TOTAL", total()}};
  }
};

Dims dims_of(const std::vector<mx::array>& in, int chunk) {
  const auto& u = in[1];
  if (u.ndim() != 3 || in[0].shape() != u.shape()) {
    throw std::invalid_argument(
        "fused linear scan: expected log_a and u of one shape [batch, seq, channels]");
  }
  return Dims{u.shape(0), u.shape(1), u.shape(2), chunk};
}

std::vector<mx::array> forward(const std::vector<mx::array>& primals, int chunk) {
  static const Kernel kernel("mixsweep_linear_forward", {"log_a", "u"}, {"out"}, kForward, kHeader);
  const auto in = as_f32(primals);
  const Dims d = dims_of(in, chunk);
  return kernel(in, {{d.batch, d.seq, d.channels}}, d.grid(), kThreads, d.template_args());
}

std::vector<mx::array> backward(const std::vector<mx::array>& primals,
                                const std::vector<mx::array>& cotangents,
                                const std::vector<mx::array>& outputs, int chunk) {
  static const Kernel kernel("mixsweep_linear_backward", {"log_a", "h", "dh"}, {"dlog_a", "du"},
                             kBackward, kHeader);
  const auto in = as_f32(primals);
  const Dims d = dims_of(in, chunk);
  const mx::Shape shape = {d.batch, d.seq, d.channels};
  auto g = kernel({in[0], outputs[0], mx::astype(cotangents[0], mx::float32)}, {shape, shape},
                  d.grid(), kThreads, d.template_args());
  return {mx::astype(g[0], primals[0].dtype()), mx::astype(g[1], primals[1].dtype())};
}

}  // namespace

extern "C" {

// h = scan(log_a, u) as above (float32), differentiable in both inputs.
int msx_fused_linear_scan(const mx::array* log_a, const mx::array* u, int chunk, mx::array** out) {
  return differentiable("fused linear scan", chunk, forward, backward, {*log_a, *u}, out);
}

}  // extern "C"
