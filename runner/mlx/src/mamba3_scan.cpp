// Fused Mamba-3 scan (the exponential-trapezoidal recurrence with a rotating state of
// `mamba3-canonical`) for MLX's CUDA backend. Per batch b, channel i and state pair p (components
// n = 2p, 2p + 1):
//
//   φ_t  = φ_{t-1} + Δ_t θ_t                                  (phase, per (i, p))
//   B̃_t  = (B0 cos φ + B1 sin φ, B1 cos φ − B0 sin φ)         (the channel's group's B_t; C̃ likewise)
//   v_t  = B̃_t u_t
//   s_t  = e^{max(Δ_t A, floor)} s_{t-1} + (1 − λ_t) Δ_t e^{Δ_t A} v_{t-1} + λ_t Δ_t v_t
//   y_t  = Σ_n s_t C̃_t
//
// with u, Δ, λ [batch, seq, inner], θ [batch, seq, inner, pairs], B, C [batch, seq, groups, state],
// A [inner, state] (negative), floor = -64 / chunk (the chunked form's per-step decay floor, so both
// compute one function). Group g serves channels g·inner/groups ...
//
// One thread per (b, i, p) keeps s (two components), φ and v_{t-1} in registers, the pairs of a
// channel side by side in a warp (the sum over n is a warp shuffle); thread blocks never straddle a
// group, so dB and dC (sums over the group's channels) are reduced per block in shared memory and
// written as per-block partial sums that MLX adds (deterministic, no atomics); dA as per-batch
// partial sums. The forward kernel saves (s, φ) every `kCheckpoint` steps; the backward kernel walks
// the chunks in reverse, recomputes a chunk's states from its checkpoint and runs the adjoint:
//   g_t = dy_t C̃_t + d_{t+1} g_{t+1},   dv_t = λ_t Δ_t g_t + β_{t+1} g_{t+1},
//   dφ_t = Σ_{s≥t} (∂B̃_s, ∂C̃_s terms),  dθ_t = Δ_t dφ_t.
//
// The C entry point catches every exception and reports it through msx_set_error, like shim.cpp.

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

constexpr int kThreads = 128;
constexpr int kCheckpoint = 16;

// Shared by both kernels: which (batch, channel, pair) this thread owns. Template constants (SEQ,
// INNER, PAIRS, GROUPS, PER_GROUP, CBLOCKS, CKPT, CHUNK, THREADS) are injected by MLX.
const char* kHeader = R"(
#define MIXSWEEP_M3_INDEX                                                  \
  constexpr int STATE = 2 * PAIRS;                                         \
  constexpr int CPB = THREADS / PAIRS;                                     \
  constexpr int CHUNKS = (SEQ + CKPT - 1) / CKPT;                          \
  const int tid = threadIdx.x;                                             \
  const int p = tid % PAIRS;                                               \
  const int cblock = blockIdx.x % CBLOCKS;                                 \
  const int group = (blockIdx.x / CBLOCKS) % GROUPS;                       \
  const int batch = blockIdx.x / (CBLOCKS * GROUPS);                       \
  const int local = cblock * CPB + tid / PAIRS;                            \
  const bool active = local < PER_GROUP;                                   \
  const int channel = group * PER_GROUP + (active ? local : PER_GROUP - 1); \
  const float decay_floor = -64.0f / CHUNK;                                \
  const float a0 = a[channel * STATE + 2 * p];                             \
  const float a1 = a[channel * STATE + 2 * p + 1];

// The sum over the `width` pairs of a channel (adjacent lanes).
__device__ __forceinline__ float mixsweep_m3_sum(float v, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset, width);
  }
  return v;
}

// v = B̃ u at step row `bt` (batch·seq + t) and phase `phase`: the recurrence's input term, for
// B [.., groups, state] and u [.., inner].
__device__ __forceinline__ void mixsweep_m3_input(const float* bm, const float* u, size_t bt,
                                                  int groups, int state, int inner, int group,
                                                  int channel, int p, float phase, float& v0,
                                                  float& v1) {
  float sn, cs;
  sincosf(phase, &sn, &cs);
  const size_t gi = (bt * groups + group) * state + 2 * p;
  const float uv = u[bt * inner + channel];
  v0 = (bm[gi] * cs + bm[gi + 1] * sn) * uv;
  v1 = (bm[gi + 1] * cs - bm[gi] * sn) * uv;
}
)";

const char* kForward = R"(
  MIXSWEEP_M3_INDEX
  float s0 = 0.0f, s1 = 0.0f, phase = 0.0f, v0 = 0.0f, v1 = 0.0f;
  for (int t = 0; t < SEQ; ++t) {
    const size_t bt = (size_t)batch * SEQ + t;
    if (t % CKPT == 0 && active) {
      float* c = checkpoints + ((((size_t)batch * CHUNKS + t / CKPT) * INNER + channel) * PAIRS + p) * 3;
      c[0] = s0;
      c[1] = s1;
      c[2] = phase;
    }
    const size_t bi = bt * INNER + channel;
    const float dt = delta[bi];
    const float lam = lambda[bi];
    phase += dt * theta[bi * PAIRS + p];
    float w0, w1;
    mixsweep_m3_input(bm, u, bt, GROUPS, STATE, INNER, group, channel, p, phase, w0, w1);
    const float la0 = dt * a0, la1 = dt * a1;
    const float beta = (1.0f - lam) * dt, gamma = lam * dt;
    s0 = expf(fmaxf(la0, decay_floor)) * s0 + beta * expf(la0) * v0 + gamma * w0;
    s1 = expf(fmaxf(la1, decay_floor)) * s1 + beta * expf(la1) * v1 + gamma * w1;
    v0 = w0;
    v1 = w1;
    float sn, cs;
    sincosf(phase, &sn, &cs);
    const size_t gi = (bt * GROUPS + group) * STATE + 2 * p;
    const float c0 = cm[gi], c1 = cm[gi + 1];
    const float yp = mixsweep_m3_sum(s0 * (c0 * cs + c1 * sn) + s1 * (c1 * cs - c0 * sn), PAIRS);
    if (p == 0 && active) {
      y[bi] = yp;
    }
  }
)";

const char* kBackward = R"(
  MIXSWEEP_M3_INDEX
  __shared__ float part_b[CKPT][2 * THREADS];
  __shared__ float part_c[CKPT][2 * THREADS];
  float da0 = 0.0f, da1 = 0.0f;
  float gs0 = 0.0f, gs1 = 0.0f;  // d_{t+1} g_{t+1}: reaches s_t through the decay
  float gv0 = 0.0f, gv1 = 0.0f;  // β_{t+1} g_{t+1}: reaches v_t through the next step's input
  float dphase = 0.0f;           // Σ_{s≥t} of the phase's direct gradients
  for (int chunk = CHUNKS - 1; chunk >= 0; --chunk) {
    const int t0 = chunk * CKPT;
    const int len = min(CKPT, SEQ - t0);
    float hs0[CKPT + 1], hs1[CKPT + 1], ph[CKPT + 1], vs0[CKPT + 1], vs1[CKPT + 1];
    const float* c = checkpoints + ((((size_t)batch * CHUNKS + chunk) * INNER + channel) * PAIRS + p) * 3;
    hs0[0] = c[0];
    hs1[0] = c[1];
    ph[0] = c[2];
    vs0[0] = 0.0f;
    vs1[0] = 0.0f;
    if (t0 > 0) {
      mixsweep_m3_input(bm, u, (size_t)batch * SEQ + t0 - 1, GROUPS, STATE, INNER, group, channel, p,
                        ph[0], vs0[0], vs1[0]);
    }
#pragma unroll
    for (int k = 0; k < CKPT; ++k) {
      if (k < len) {
        const size_t bt = (size_t)batch * SEQ + t0 + k;
        const size_t bi = bt * INNER + channel;
        const float dt = delta[bi];
        const float lam = lambda[bi];
        ph[k + 1] = ph[k] + dt * theta[bi * PAIRS + p];
        mixsweep_m3_input(bm, u, bt, GROUPS, STATE, INNER, group, channel, p, ph[k + 1], vs0[k + 1], vs1[k + 1]);
        const float la0 = dt * a0, la1 = dt * a1;
        const float beta = (1.0f - lam) * dt, gamma = lam * dt;
        hs0[k + 1] = expf(fmaxf(la0, decay_floor)) * hs0[k] + beta * expf(la0) * vs0[k] + gamma * vs0[k + 1];
        hs1[k + 1] = expf(fmaxf(la1, decay_floor)) * hs1[k] + beta * expf(la1) * vs1[k] + gamma * vs1[k + 1];
      }
    }
#pragma unroll
    for (int k = CKPT - 1; k >= 0; --k) {
      if (k < len) {
        const size_t bt = (size_t)batch * SEQ + t0 + k;
        const size_t bi = bt * INNER + channel;
        const float uv = u[bi], dt = delta[bi], lam = lambda[bi], th = theta[bi * PAIRS + p];
        const float dyv = dy[bi];
        const size_t gi = (bt * GROUPS + group) * STATE + 2 * p;
        const float b0 = bm[gi], b1 = bm[gi + 1], c0 = cm[gi], c1 = cm[gi + 1];
        float sn, cs;
        sincosf(ph[k + 1], &sn, &cs);
        const float rb0 = b0 * cs + b1 * sn, rb1 = b1 * cs - b0 * sn;
        const float rc0 = c0 * cs + c1 * sn, rc1 = c1 * cs - c0 * sn;
        const float la0 = dt * a0, la1 = dt * a1;
        const float e0 = expf(la0), e1 = expf(la1);
        const float d0 = expf(fmaxf(la0, decay_floor)), d1 = expf(fmaxf(la1, decay_floor));
        const float beta = (1.0f - lam) * dt, gamma = lam * dt;
        const float g0 = dyv * rc0 + gs0, g1 = dyv * rc1 + gs1;
        // the decay (no gradient where the floor holds) and β's e^{ΔA}
        const float dbeta0 = g0 * vs0[k], dbeta1 = g1 * vs1[k];
        const float dla0 = (la0 > decay_floor ? g0 * hs0[k] * d0 : 0.0f) + dbeta0 * beta * e0;
        const float dla1 = (la1 > decay_floor ? g1 * hs1[k] * d1 : 0.0f) + dbeta1 * beta * e1;
        const float dbeta = dbeta0 * e0 + dbeta1 * e1;
        const float dgamma = g0 * vs0[k + 1] + g1 * vs1[k + 1];
        const float dw0 = g0 * gamma + gv0, dw1 = g1 * gamma + gv1;
        gv0 = g0 * beta * e0;
        gv1 = g1 * beta * e1;
        gs0 = d0 * g0;
        gs1 = d1 * g1;
        da0 += dla0 * dt;
        da1 += dla1 * dt;
        // rotations: B̃ = R(φ) B, C̃ = R(φ) C
        const float drb0 = dw0 * uv, drb1 = dw1 * uv;
        const float drc0 = dyv * hs0[k + 1], drc1 = dyv * hs1[k + 1];
        dphase += drb0 * rb1 - drb1 * rb0 + drc0 * rc1 - drc1 * rc0;
        dtheta[bi * PAIRS + p] = dphase * dt;
        const float ddt = mixsweep_m3_sum(dla0 * a0 + dla1 * a1 + dbeta * (1.0f - lam) +
                                          dgamma * lam + dphase * th, PAIRS);
        const float dlam = mixsweep_m3_sum((dgamma - dbeta) * dt, PAIRS);
        const float duv = mixsweep_m3_sum(dw0 * rb0 + dw1 * rb1, PAIRS);
        if (p == 0 && active) {
          ddelta[bi] = ddt;
          dlambda[bi] = dlam;
          du[bi] = duv;
        }
        part_b[k][2 * tid] = active ? drb0 * cs - drb1 * sn : 0.0f;
        part_b[k][2 * tid + 1] = active ? drb0 * sn + drb1 * cs : 0.0f;
        part_c[k][2 * tid] = active ? drc0 * cs - drc1 * sn : 0.0f;
        part_c[k][2 * tid + 1] = active ? drc0 * sn + drc1 * cs : 0.0f;
      }
    }
    __syncthreads();
    for (int j = tid; j < len * STATE; j += THREADS) {
      const int k = j / STATE;
      const int n = j % STATE;
      float sb = 0.0f;
      float sc = 0.0f;
      for (int r = 0; r < CPB; ++r) {
        sb += part_b[k][r * STATE + n];
        sc += part_c[k][r * STATE + n];
      }
      const size_t o = ((((size_t)batch * SEQ + t0 + k) * GROUPS + group) * CBLOCKS + cblock) * STATE + n;
      db_part[o] = sb;
      dc_part[o] = sc;
    }
    __syncthreads();
  }
  if (active) {
    da_part[((size_t)batch * INNER + channel) * STATE + 2 * p] = da0;
    da_part[((size_t)batch * INNER + channel) * STATE + 2 * p + 1] = da1;
  }
)";

struct Dims {
  int batch, seq, inner, pairs, groups, chunk;
  int per_group() const { return inner / groups; }
  int cblocks() const {
    const int cpb = kThreads / pairs;
    return (per_group() + cpb - 1) / cpb;
  }
  int state() const { return 2 * pairs; }
  int chunks() const { return (seq + kCheckpoint - 1) / kCheckpoint; }
  std::tuple<int, int, int> grid() const { return {batch * groups * cblocks() * kThreads, 1, 1}; }
  std::vector<std::pair<std::string, mx::fast::TemplateArg>> template_args() const {
    return {{"SEQ", seq},          {"INNER", inner},           {"PAIRS", pairs},
            {"GROUPS", groups},    {"PER_GROUP", per_group()}, {"CBLOCKS", cblocks()},
            {"CKPT", kCheckpoint}, {"CHUNK", chunk},           {"THREADS", kThreads}};
  }
};

// Inputs: u, delta, lambda [B, T, I], theta [B, T, I, P], b, c [B, T, G, 2P], a [I, 2P].
Dims dims_of(const std::vector<mx::array>& in, int chunk) {
  const auto& u = in[0];
  const auto& theta = in[3];
  const auto& b = in[4];
  const auto& a = in[6];
  const bool ok = u.ndim() == 3 && in[1].shape() == u.shape() && in[2].shape() == u.shape() &&
                  theta.ndim() == 4 && theta.shape(0) == u.shape(0) &&
                  theta.shape(1) == u.shape(1) && theta.shape(2) == u.shape(2) && b.ndim() == 4 &&
                  b.shape(0) == u.shape(0) && b.shape(1) == u.shape(1) &&
                  in[5].shape() == b.shape() && b.shape(3) == 2 * theta.shape(3) && a.ndim() == 2 &&
                  a.shape(0) == u.shape(2) && a.shape(1) == b.shape(3) && b.shape(2) > 0 &&
                  u.shape(2) % b.shape(2) == 0;
  if (!ok) {
    throw std::invalid_argument(
        "fused mamba3 scan: expected u, delta, lambda [batch, seq, inner], theta [batch, seq, "
        "inner, pairs], B, C [batch, seq, groups, 2*pairs] (groups dividing inner), "
        "A [inner, 2*pairs]");
  }
  const int pairs = theta.shape(3);
  if (pairs < 1 || pairs > 32 || (32 % pairs) != 0) {
    throw std::invalid_argument(
        "fused mamba3 scan: the number of state pairs must divide 32, got " +
        std::to_string(pairs));
  }
  return Dims{u.shape(0), u.shape(1), u.shape(2), pairs, b.shape(2), chunk};
}

std::vector<mx::array> forward(const std::vector<mx::array>& primals, int chunk) {
  static const Kernel kernel("mixsweep_mamba3_forward",
                             {"u", "delta", "lambda", "theta", "bm", "cm", "a"},
                             {"y", "checkpoints"}, kForward, kHeader);
  const auto in = as_f32(primals);
  const Dims d = dims_of(in, chunk);
  return kernel(in, {{d.batch, d.seq, d.inner}, {d.batch, d.chunks(), d.inner, d.pairs, 3}},
                d.grid(), kThreads, d.template_args());
}

std::vector<mx::array> backward(const std::vector<mx::array>& primals,
                                const std::vector<mx::array>& cotangents,
                                const std::vector<mx::array>& outputs, int chunk) {
  static const Kernel kernel(
      "mixsweep_mamba3_backward",
      {"u", "delta", "lambda", "theta", "bm", "cm", "a", "checkpoints", "dy"},
      {"du", "ddelta", "dlambda", "dtheta", "da_part", "db_part", "dc_part"}, kBackward, kHeader);
  auto in = as_f32(primals);
  const Dims d = dims_of(in, chunk);
  in.push_back(outputs[1]);
  in.push_back(mx::astype(cotangents[0], mx::float32));
  const mx::Shape bti = {d.batch, d.seq, d.inner};
  const mx::Shape part = {d.batch, d.seq, d.groups, d.cblocks(), d.state()};
  auto g = kernel(in,
                  {bti,
                   bti,
                   bti,
                   {d.batch, d.seq, d.inner, d.pairs},
                   {d.batch, d.inner, d.state()},
                   part,
                   part},
                  d.grid(), kThreads, d.template_args());
  auto cast = [&](const mx::array& v, int k) { return mx::astype(v, primals[k].dtype()); };
  return {cast(g[0], 0),
          cast(g[1], 1),
          cast(g[2], 2),
          cast(g[3], 3),
          cast(mx::sum(g[5], 3), 4),
          cast(mx::sum(g[6], 3), 5),
          cast(mx::sum(g[4], 0), 6)};
}

}  // namespace

extern "C" {

// y = mamba3_scan(u, delta, lambda, theta, B, C, A) as above (float32), differentiable in all seven.
int msx_fused_mamba3_scan(const mx::array* u, const mx::array* delta, const mx::array* lambda,
                          const mx::array* theta, const mx::array* b, const mx::array* c,
                          const mx::array* a, int chunk, mx::array** out) {
  return differentiable("fused mamba3 scan", chunk, forward, backward,
                        {*u, *delta, *lambda, *theta, *b, *c, *a}, out);
}

}  // extern "C"
