// Fused scans over a [DK, DV] matrix state per batch and head, for MLX's CUDA backend: gated linear
// attention (the runner's `gla_scan` op: hgrn2, mlstm) and the gated delta rule (`delta_scan`:
// gated_deltanet). Inputs q, k [batch, seq, heads, DK], v [batch, seq, heads, DV]; output
// o [batch, seq, heads, DV], o_t = S_t^T q_t, from S_0 = 0.
//
//   gla:    S_t = diag(e_t) S_{t-1} + k_t v_t^T,   e_t = max(g_t, exp(-64 / chunk))   (g [.., DK])
//   delta:  S_t = a_t S_{t-1} + k_t d_t^T,  d_t = beta_t (v_t - a_t S_{t-1}^T k_t),  a_t = exp(log_a_t)
//           (beta, log_a [batch, seq, heads]; the same as a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T)
//
// gla's floor is the per-step log-decay floor of the runner's chunked form, so both compute one
// function (exp(max(log g, floor)) = max(g, exp(floor))); the delta rule's chunked form has none.
//
// One thread per (batch, head, value column j, key row i): the key rows of a column are lanes of one
// warp (LANES = min(DK, 32); a thread holds PER = DK / LANES rows), so sums over rows (S^T q, S^T k)
// are warp shuffles. The forward kernels keep S in registers and save it every CKPT steps. The
// backward kernels walk the checkpoint chunks in reverse, recompute a chunk's states from its
// checkpoint, and run the adjoint G_t = dL/dS_t = q_t do_t^T + (dL/dS_t through step t+1):
//   gla:    dv_t[j] = sum_i G k_t[i];  dq_t[i] = sum_j S_t do_t[j];  dk_t[i] = sum_j G v_t[j];
//           dg_t[i] = sum_j G S_{t-1} where g_t > exp(floor) (the max passes no gradient below);
//           through step t: diag(e_t) G
//   delta:  with c_j = sum_i G k_t[i] and dw_j = -a beta c_j:  dv_t[j] = beta c_j;
//           dq_t[i] = sum_j S_t do_t[j];  dk_t[i] = sum_j (G d_t[j] + dw_j S_{t-1});
//           d a_t = sum_ij G S_{t-1} - beta sum_j w_j c_j;  d beta_t = sum_j (v_t[j] - a w_j) c_j;
//           through step t: a G + k_t dw^T
// Sums over columns are reduced per block in shared memory and written as per-block partial sums
// that MLX adds up (deterministic, no atomics). Each forward/backward pair is one `custom_vjp`
// function, so it traces into `compile` like any op.
//
// The C entry points catch every exception and report it through msx_set_error, like shim.cpp.

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/backend/cuda/cuda.h"
#include "mlx/fast.h"
#include "mlx/ops.h"
#include "mlx/transforms.h"

#include "kernel_util.h"

namespace mx = mlx::core;

using mixsweep_kernels::as_f32;
using mixsweep_kernels::differentiable;
using mixsweep_kernels::guarded;
using mixsweep_kernels::Kernel;

namespace {

// State elements per block (THREADS = kElements / PER) and steps per checkpoint: a backward
// kernel's shared partial-sum arrays take up to 4 * kCheckpoint * kElements floats (32 KiB).
constexpr int kElements = 128;
constexpr int kCheckpoint = 16;

// Which (batch, head, column, rows) this thread owns. Template constants (SEQ, HEADS, DK, DV,
// LANES, PER, CKPT, THREADS, and gla's CHUNK) are injected by MLX at the top of each kernel.
const char* kHeader = R"(
#define MIXSWEEP_MATRIX_INDEX                                             \
  constexpr int COLUMNS = THREADS / LANES;                             \
  constexpr int ELEMENTS = COLUMNS * DK;                               \
  constexpr int GROUPS = (DV + COLUMNS - 1) / COLUMNS;                 \
  constexpr int CHUNKS = (SEQ + CKPT - 1) / CKPT;                      \
  const int tid = threadIdx.x;                                         \
  const int lane = tid % LANES;                                        \
  const int column = tid / LANES;                                      \
  const int bh = blockIdx.x / GROUPS;                                  \
  const int group = blockIdx.x % GROUPS;                               \
  const int batch = bh / HEADS;                                        \
  const int head = bh % HEADS;                                         \
  const int j = group * COLUMNS + column;                              \
  const bool active = j < DV;                                          \
  const int jc = active ? j : DV - 1;

// The (batch, t, head) row of q, k, g, v and the outputs, in row-major order.
#define MIXSWEEP_MATRIX_ROW(t) (((size_t)batch * SEQ + (t)) * HEADS + head)

__device__ __forceinline__ float mixsweep_matrix_sum(float v, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset, width);
  }
  return v;
}
)";

const char* kGlaForward = R"(
  MIXSWEEP_MATRIX_INDEX
  const float min_decay = expf(-64.0f / CHUNK);
  float s[PER];
  for (int r = 0; r < PER; ++r) s[r] = 0.0f;
  for (int t = 0; t < SEQ; ++t) {
    const size_t row = MIXSWEEP_MATRIX_ROW(t);
    if (t % CKPT == 0 && active) {
      for (int r = 0; r < PER; ++r) {
        checkpoints[(((size_t)bh * CHUNKS + t / CKPT) * DV + j) * DK + lane + LANES * r] = s[r];
      }
    }
    const float vv = v[row * DV + jc];
    float p = 0.0f;
    for (int r = 0; r < PER; ++r) {
      const size_t i = row * DK + lane + LANES * r;
      s[r] = fmaxf(g[i], min_decay) * s[r] + k[i] * vv;
      p += s[r] * q[i];
    }
    p = mixsweep_matrix_sum(p, LANES);
    if (lane == 0 && active) {
      o[row * DV + j] = p;
    }
  }
)";

const char* kGlaBackward = R"(
  MIXSWEEP_MATRIX_INDEX
  const float min_decay = expf(-64.0f / CHUNK);
  __shared__ float part_q[CKPT][ELEMENTS];
  __shared__ float part_k[CKPT][ELEMENTS];
  __shared__ float part_g[CKPT][ELEMENTS];
  float carry[PER];  // e_{t+1} G_{t+1}
  for (int r = 0; r < PER; ++r) carry[r] = 0.0f;
  for (int chunk = CHUNKS - 1; chunk >= 0; --chunk) {
    const int t0 = chunk * CKPT;
    const int len = min(CKPT, SEQ - t0);
    float hs[CKPT + 1][PER];
    for (int r = 0; r < PER; ++r) {
      hs[0][r] = checkpoints[(((size_t)bh * CHUNKS + chunk) * DV + jc) * DK + lane + LANES * r];
    }
#pragma unroll
    for (int u = 0; u < CKPT; ++u) {
      if (u < len) {
        const size_t row = MIXSWEEP_MATRIX_ROW(t0 + u);
        const float vv = v[row * DV + jc];
        for (int r = 0; r < PER; ++r) {
          const size_t i = row * DK + lane + LANES * r;
          hs[u + 1][r] = fmaxf(g[i], min_decay) * hs[u][r] + k[i] * vv;
        }
      }
    }
#pragma unroll
    for (int u = CKPT - 1; u >= 0; --u) {
      if (u < len) {
        const size_t row = MIXSWEEP_MATRIX_ROW(t0 + u);
        const float vv = v[row * DV + jc];
        const float dov = dout[row * DV + jc];
        float dvs = 0.0f;
        for (int r = 0; r < PER; ++r) {
          const size_t i = row * DK + lane + LANES * r;
          const float gv = g[i];
          const float grad = q[i] * dov + carry[r];
          const int e = column * DK + lane + LANES * r;
          part_q[u][e] = active ? hs[u + 1][r] * dov : 0.0f;
          part_k[u][e] = active ? grad * vv : 0.0f;
          part_g[u][e] = active && gv > min_decay ? grad * hs[u][r] : 0.0f;
          dvs += grad * k[i];
          carry[r] = fmaxf(gv, min_decay) * grad;
        }
        dvs = mixsweep_matrix_sum(dvs, LANES);
        if (lane == 0 && active) {
          dv[row * DV + j] = dvs;
        }
      }
    }
    __syncthreads();
    for (int x = tid; x < len * DK; x += THREADS) {
      const int u = x / DK;
      const int d = x % DK;
      float sq = 0.0f;
      float sk = 0.0f;
      float sg = 0.0f;
      for (int c = 0; c < COLUMNS; ++c) {
        sq += part_q[u][c * DK + d];
        sk += part_k[u][c * DK + d];
        sg += part_g[u][c * DK + d];
      }
      const size_t out = (MIXSWEEP_MATRIX_ROW(t0 + u) * GROUPS + group) * DK + d;
      dq_part[out] = sq;
      dk_part[out] = sk;
      dg_part[out] = sg;
    }
    __syncthreads();
  }
)";

const char* kDeltaForward = R"(
  MIXSWEEP_MATRIX_INDEX
  float s[PER];
  for (int r = 0; r < PER; ++r) s[r] = 0.0f;
  for (int t = 0; t < SEQ; ++t) {
    const size_t row = MIXSWEEP_MATRIX_ROW(t);
    if (t % CKPT == 0 && active) {
      for (int r = 0; r < PER; ++r) {
        checkpoints[(((size_t)bh * CHUNKS + t / CKPT) * DV + j) * DK + lane + LANES * r] = s[r];
      }
    }
    const float a = expf(log_a[row]);
    float w = 0.0f;
    for (int r = 0; r < PER; ++r) w += k[row * DK + lane + LANES * r] * s[r];
    w = mixsweep_matrix_sum(w, LANES);
    const float d = beta[row] * (v[row * DV + jc] - a * w);
    float p = 0.0f;
    for (int r = 0; r < PER; ++r) {
      const size_t i = row * DK + lane + LANES * r;
      s[r] = a * s[r] + k[i] * d;
      p += s[r] * q[i];
    }
    p = mixsweep_matrix_sum(p, LANES);
    if (lane == 0 && active) {
      o[row * DV + j] = p;
    }
  }
)";

const char* kDeltaBackward = R"(
  MIXSWEEP_MATRIX_INDEX
  __shared__ float part_q[CKPT][ELEMENTS];
  __shared__ float part_k[CKPT][ELEMENTS];
  __shared__ float part_a[CKPT][ELEMENTS];
  __shared__ float part_b[CKPT][ELEMENTS];
  float carry[PER];  // dL/dS_t through step t+1
  for (int r = 0; r < PER; ++r) carry[r] = 0.0f;
  for (int chunk = CHUNKS - 1; chunk >= 0; --chunk) {
    const int t0 = chunk * CKPT;
    const int len = min(CKPT, SEQ - t0);
    float hs[CKPT + 1][PER];
    float ws[CKPT];  // w_t = S_{t-1}^T k_t for this column
    for (int r = 0; r < PER; ++r) {
      hs[0][r] = checkpoints[(((size_t)bh * CHUNKS + chunk) * DV + jc) * DK + lane + LANES * r];
    }
#pragma unroll
    for (int u = 0; u < CKPT; ++u) {
      if (u < len) {
        const size_t row = MIXSWEEP_MATRIX_ROW(t0 + u);
        const float a = expf(log_a[row]);
        float w = 0.0f;
        for (int r = 0; r < PER; ++r) w += k[row * DK + lane + LANES * r] * hs[u][r];
        w = mixsweep_matrix_sum(w, LANES);
        ws[u] = w;
        const float d = beta[row] * (v[row * DV + jc] - a * w);
        for (int r = 0; r < PER; ++r) {
          hs[u + 1][r] = a * hs[u][r] + k[row * DK + lane + LANES * r] * d;
        }
      }
    }
#pragma unroll
    for (int u = CKPT - 1; u >= 0; --u) {
      if (u < len) {
        const size_t row = MIXSWEEP_MATRIX_ROW(t0 + u);
        const float a = expf(log_a[row]);
        const float bt = beta[row];
        const float dov = dout[row * DV + jc];
        const float resid = v[row * DV + jc] - a * ws[u];
        float grad[PER];
        float c = 0.0f;
        for (int r = 0; r < PER; ++r) {
          const size_t i = row * DK + lane + LANES * r;
          grad[r] = q[i] * dov + carry[r];
          c += grad[r] * k[i];
        }
        c = mixsweep_matrix_sum(c, LANES);
        const float dw = -a * bt * c;
        const bool first = lane == 0;
        for (int r = 0; r < PER; ++r) {
          const float kv = k[row * DK + lane + LANES * r];
          const int e = column * DK + lane + LANES * r;
          const bool head_term = first && r == 0;
          part_q[u][e] = active ? hs[u + 1][r] * dov : 0.0f;
          part_k[u][e] = active ? grad[r] * bt * resid + dw * hs[u][r] : 0.0f;
          part_a[u][e] = active ? grad[r] * hs[u][r] - (head_term ? bt * ws[u] * c : 0.0f) : 0.0f;
          part_b[u][e] = active && head_term ? resid * c : 0.0f;
          carry[r] = a * grad[r] + kv * dw;
        }
        if (first && active) {
          dv[row * DV + j] = bt * c;
        }
      }
    }
    __syncthreads();
    for (int x = tid; x < len * DK; x += THREADS) {
      const int u = x / DK;
      const int d = x % DK;
      float sq = 0.0f;
      float sk = 0.0f;
      for (int c = 0; c < COLUMNS; ++c) {
        sq += part_q[u][c * DK + d];
        sk += part_k[u][c * DK + d];
      }
      const size_t out = (MIXSWEEP_MATRIX_ROW(t0 + u) * GROUPS + group) * DK + d;
      dq_part[out] = sq;
      dk_part[out] = sk;
    }
    for (int u = tid; u < len; u += THREADS) {
      float sa = 0.0f;
      float sb = 0.0f;
      for (int e = 0; e < ELEMENTS; ++e) {
        sa += part_a[u][e];
        sb += part_b[u][e];
      }
      const size_t out = MIXSWEEP_MATRIX_ROW(t0 + u) * GROUPS + group;
      da_part[out] = sa;
      db_part[out] = sb;
    }
    __syncthreads();
  }
)";

struct Dims {
  int batch, seq, heads, dk, dv, chunk;
  int lanes() const { return dk < 32 ? dk : 32; }
  int per() const { return dk / lanes(); }
  int threads() const { return kElements / per(); }
  int groups() const {
    const int columns = threads() / lanes();
    return (dv + columns - 1) / columns;
  }
  int chunks() const { return (seq + kCheckpoint - 1) / kCheckpoint; }
  std::tuple<int, int, int> grid() const { return {batch * heads * groups() * threads(), 1, 1}; }
  std::vector<std::pair<std::string, mx::fast::TemplateArg>> template_args() const {
    return {{"SEQ", seq},
            {"HEADS", heads},
            {"DK", dk},
            {"DV", dv},
            {"LANES", lanes()},
            {"PER", per()},
            {"CKPT", kCheckpoint},
            {"CHUNK", chunk},
            {"THREADS", threads()}};
  }
};

// q, k [batch, seq, heads, d_k] and v [batch, seq, heads, d_v], with a key size the kernels take.
Dims dims_of(const char* what, const std::vector<mx::array>& in, int chunk) {
  const auto& q = in[0];
  const auto& v = in[2];
  if (q.ndim() != 4 || in[1].shape() != q.shape() || v.ndim() != 4 || v.shape(0) != q.shape(0) ||
      v.shape(1) != q.shape(1) || v.shape(2) != q.shape(2)) {
    throw std::invalid_argument(
        std::string(what) +
        ": expected q, k [batch, seq, heads, d_k] and v [batch, seq, heads, d_v]");
  }
  const int dk = q.shape(3);
  const bool fits = dk >= 1 && (dk <= 32 ? 32 % dk == 0 : (dk % 32 == 0 && dk <= kElements));
  if (!fits) {
    throw std::invalid_argument(std::string(what) +
                                ": d_k must divide 32 or be a multiple of 32 up to 128, got " +
                                std::to_string(dk));
  }
  return Dims{q.shape(0), q.shape(1), q.shape(2), dk, v.shape(3), chunk};
}

// The forward kernels' outputs: o and the checkpoints.
std::vector<mx::array> run_forward(const Kernel& kernel, const std::vector<mx::array>& in,
                                   const Dims& d) {
  return kernel(in, {{d.batch, d.seq, d.heads, d.dv}, {d.batch * d.heads, d.chunks(), d.dv, d.dk}},
                d.grid(), d.threads(), d.template_args());
}

std::vector<mx::array> gla_forward(const std::vector<mx::array>& primals, int chunk) {
  static const Kernel kernel("mixsweep_gla_forward", {"q", "k", "v", "g"}, {"o", "checkpoints"},
                             kGlaForward, kHeader);
  const auto in = as_f32(primals);
  const Dims d = dims_of("fused gla scan", in, chunk);
  if (in[3].shape() != in[0].shape()) {
    throw std::invalid_argument("fused gla scan: the decay g must have q's shape");
  }
  return run_forward(kernel, in, d);
}

std::vector<mx::array> gla_backward(const std::vector<mx::array>& primals,
                                    const std::vector<mx::array>& cotangents,
                                    const std::vector<mx::array>& outputs, int chunk) {
  static const Kernel kernel("mixsweep_gla_backward", {"q", "k", "v", "g", "checkpoints", "dout"},
                             {"dv", "dq_part", "dk_part", "dg_part"}, kGlaBackward, kHeader);
  auto in = as_f32(primals);
  const Dims d = dims_of("fused gla scan", in, chunk);
  in.push_back(outputs[1]);
  in.push_back(mx::astype(cotangents[0], mx::float32));
  const mx::Shape part = {d.batch, d.seq, d.heads, d.groups(), d.dk};
  auto g = kernel(in, {{d.batch, d.seq, d.heads, d.dv}, part, part, part}, d.grid(), d.threads(),
                  d.template_args());
  auto cast = [&](const mx::array& v, int k) { return mx::astype(v, primals[k].dtype()); };
  return {cast(mx::sum(g[1], 3), 0), cast(mx::sum(g[2], 3), 1), cast(g[0], 2),
          cast(mx::sum(g[3], 3), 3)};
}

// beta and log_a [batch, seq, heads].
void check_gates(const std::vector<mx::array>& in) {
  const mx::Shape gate = {in[0].shape(0), in[0].shape(1), in[0].shape(2)};
  if (in[3].shape() != gate || in[4].shape() != gate) {
    throw std::invalid_argument("fused delta scan: beta and log_a must be [batch, seq, heads]");
  }
}

std::vector<mx::array> delta_forward(const std::vector<mx::array>& primals) {
  static const Kernel kernel("mixsweep_delta_forward", {"q", "k", "v", "beta", "log_a"},
                             {"o", "checkpoints"}, kDeltaForward, kHeader);
  const auto in = as_f32(primals);
  const Dims d = dims_of("fused delta scan", in, 1);
  check_gates(in);
  return run_forward(kernel, in, d);
}

std::vector<mx::array> delta_backward(const std::vector<mx::array>& primals,
                                      const std::vector<mx::array>& cotangents,
                                      const std::vector<mx::array>& outputs) {
  static const Kernel kernel(
      "mixsweep_delta_backward", {"q", "k", "v", "beta", "log_a", "checkpoints", "dout"},
      {"dv", "dq_part", "dk_part", "da_part", "db_part"}, kDeltaBackward, kHeader);
  auto in = as_f32(primals);
  const Dims d = dims_of("fused delta scan", in, 1);
  in.push_back(outputs[1]);
  in.push_back(mx::astype(cotangents[0], mx::float32));
  const mx::Shape part = {d.batch, d.seq, d.heads, d.groups(), d.dk};
  const mx::Shape gate_part = {d.batch, d.seq, d.heads, d.groups()};
  auto g = kernel(in, {{d.batch, d.seq, d.heads, d.dv}, part, part, gate_part, gate_part}, d.grid(),
                  d.threads(), d.template_args());
  auto cast = [&](const mx::array& v, int k) { return mx::astype(v, primals[k].dtype()); };
  // d log_a = a * d a
  const auto dlog_a = mx::multiply(mx::sum(g[3], 3), mx::exp(in[4]));
  return {cast(mx::sum(g[1], 3), 0), cast(mx::sum(g[2], 3), 1), cast(g[0], 2),
          cast(mx::sum(g[4], 3), 3), cast(dlog_a, 4)};
}

}  // namespace

extern "C" {

// o = gla(q, k, v, g) as above (float32), differentiable in all four inputs.
int msx_fused_gla_scan(const mx::array* q, const mx::array* k, const mx::array* v,
                       const mx::array* g, int chunk, mx::array** out) {
  return differentiable("fused gla scan", chunk, gla_forward, gla_backward, {*q, *k, *v, *g}, out);
}

// o = delta(q, k, v, beta, log_a) as above (float32), differentiable in all five inputs.
int msx_fused_delta_scan(const mx::array* q, const mx::array* k, const mx::array* v,
                         const mx::array* beta, const mx::array* log_a, mx::array** out) {
  return guarded([&] {
    auto fun = mx::custom_vjp(
        [](const std::vector<mx::array>& primals) { return delta_forward(primals); },
        [](const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
           const std::vector<mx::array>& outputs) {
          return delta_backward(primals, cotangents, outputs);
        });
    *out = new mx::array(fun({*q, *k, *v, *beta, *log_a})[0]);
  });
}

}  // extern "C"
